"""The four widths as data: torchvision's published figures and whether the weights are cached.

`model_rows()` reads torch (through torchvision's weights metadata); the renderers are pure.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Iterable

from rich.table import Table

from shufflenet_cli.models import DEFAULT_MODEL, MODELS, ModelSpec


@dataclass(frozen=True)
class ModelRow:
    name: str  # "x1_0"
    arch: str  # "shufflenet_v2_x1_0"
    default: bool
    num_params: int
    gflops: float
    acc1: float  # ImageNet-1K top-1, percent
    acc5: float
    file_size_mb: float
    cached: bool
    path: str  # where the weights are (or would be) in the cache
    url: str
    own: str | None = None  # your own default weights for the width, which predict uses instead


def model_row(spec: ModelSpec) -> ModelRow:
    """One width, every figure straight from torchvision's IMAGENET1K_V1 metadata."""
    from shufflenet_cli import weights

    entry = spec.weights()
    meta = entry.meta
    metrics = meta["_metrics"]["ImageNet-1K"]
    return ModelRow(
        name=spec.key,
        arch=spec.arch,
        default=spec.key == DEFAULT_MODEL,
        num_params=int(meta["num_params"]),
        gflops=float(meta["_ops"]),
        acc1=float(metrics["acc@1"]),
        acc5=float(metrics["acc@5"]),
        file_size_mb=float(meta["_file_size"]),
        cached=weights.is_cached(spec),
        path=str(weights.cache_path(spec)),
        url=entry.url,
        own=str(own) if (own := weights.own_weights(spec)) is not None else None,
    )


def model_rows() -> list[ModelRow]:
    return [model_row(spec) for spec in MODELS.values()]


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def render_models_table(rows: Iterable[ModelRow]) -> Table:
    """A table that fits 80 columns; the default width is marked in the name column, and a width
    with your own default weights says "own" where the others say whether torchvision's are cached."""
    rows = list(rows)
    caption = "acc: ImageNet-1K top-1 / top-5, percent"
    if any(row.own for row in rows):
        caption += "\nown: your own default weights; figures are torchvision's"
    table = Table(header_style="bold", caption=caption)
    table.add_column("model", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("acc@1", justify="right")
    table.add_column("acc@5", justify="right")
    table.add_column("size", justify="right")
    table.add_column("cached")
    for row in rows:
        table.add_row(
            f"{row.name} (default)" if row.default else row.name,
            _millions(row.num_params),
            f"{row.gflops:g}",
            f"{row.acc1:.2f}",
            f"{row.acc5:.2f}",
            f"{row.file_size_mb:.1f} MB",
            "own" if row.own else "yes" if row.cached else "no",
        )
    return table


def models_json(rows: Iterable[ModelRow]) -> str:
    """A JSON array, one object per width, numbers unrounded."""
    return json.dumps([asdict(row) for row in rows], indent=2)
