"""An evaluation for people (rich tables) and for scripts (one JSON object). Pure: data in, text out."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

from shufflenet_cli.evaluation.metrics import fraction
from shufflenet_cli.evaluation.run import Evaluation
from shufflenet_cli.output.display import clean_text

SHOWN = 10  # per-class rows and confused pairs in the table; JSON and the report have them all


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}"


def error_pct(value: float | None) -> str:
    """An error rate as the seed's table gives it: 100 - accuracy in percent."""
    return "-" if value is None else f"{100.0 - 100.0 * value:.2f}"


def render_evaluation(ev: Evaluation) -> RenderableType:
    parts: list[RenderableType] = [summary_table(ev), class_table(ev)]
    if ev.tally.pairs:
        parts.append(confusion_table(ev))
    return Group(*parts)


def summary_table(ev: Evaluation) -> Table:
    """Counts, then accuracy and the seed's error rates in percent, beside torchvision's own figures."""
    t, published = ev.tally, ev.published
    classes = len(t.classes)
    table = Table(
        title=f"{ev.model}, {classes} {'class' if classes == 1 else 'classes'}",
        header_style="bold",
        caption="failed files are not counted as wrong" if t.failed else None,
    )
    table.add_column("")
    table.add_column("measured", justify="right")
    if published is not None:
        table.add_column("published", justify="right")
    rows = [
        ("images", str(t.images), ""),
        ("failed files", str(t.failed), ""),
        ("top-1 accuracy %", pct(t.top1), published and pct(published.top1)),
        ("top-5 accuracy %", pct(t.top5), published and pct(published.top5)),
        ("top-1 error %", error_pct(t.top1), published and error_pct(published.top1)),
        ("top-5 error %", error_pct(t.top5), published and error_pct(published.top5)),
    ]
    for name, measured, theirs in rows:
        table.add_row(name, measured, *([theirs or ""] if published is not None else []))
    return table


def class_table(ev: Evaluation) -> Table:
    t = ev.tally
    shown = t.worst_classes(None if len(t.classes) <= 2 * SHOWN else SHOWN)
    caption = None
    if len(shown) < len(t.classes):
        caption = f"the {len(shown)} lowest of {len(t.classes)} classes; all in --format json and --report"
    table = Table(title="per class (top-1, lowest first)", header_style="bold", caption=caption)
    for name, justify in (("#", "right"), ("class", "left"), ("images", "right"), ("failed", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("top-1 %", justify="right")
    table.add_column("top-5 %", justify="right")
    for index in shown:
        c = t.per_class[index]
        table.add_row(
            str(index),
            clean_text(ev.names[index]),
            str(c.images),
            str(c.failed),
            pct(fraction(c.top1, c.images)),
            pct(fraction(c.top5, c.images)),
        )
    return table


def confusion_table(ev: Evaluation) -> Table:
    pairs = ev.tally.confusions(SHOWN)
    table = Table(title="most confused (true -> predicted top-1)", header_style="bold")
    table.add_column("true")
    table.add_column("predicted")
    table.add_column("images", justify="right")
    for c in pairs:
        table.add_row(_named(ev, c.truth), _named(ev, c.predicted), str(c.count))
    return table


def _named(ev: Evaluation, index: int) -> str:
    return f"{index} {clean_text(ev.names[index])}"


def evaluation_dict(ev: Evaluation) -> dict[str, Any]:
    """Every figure, unrounded; accuracies and error rates as fractions (null where no image was classified)."""
    t = ev.tally
    published = ev.published
    return {
        "model": ev.model,
        "images": t.images,
        "failed": t.failed,
        "classes": len(t.classes),
        "top1": t.top1,
        "top5": t.top5,
        "top1_error": None if t.top1 is None else 1.0 - t.top1,
        "top5_error": None if t.top5 is None else 1.0 - t.top5,
        "published": None
        if published is None
        else {"top1": published.top1, "top5": published.top5, "source": published.source},
        "per_class": [
            {
                "index": index,
                "label": ev.names[index],
                "images": c.images,
                "failed": c.failed,
                "top1": fraction(c.top1, c.images),
                "top5": fraction(c.top5, c.images),
            }
            for index, c in sorted(t.per_class.items())
        ],
        "confusions": [
            {
                "true": c.truth,
                "true_label": ev.names[c.truth],
                "predicted": c.predicted,
                "predicted_label": ev.names[c.predicted],
                "count": c.count,
            }
            for c in t.confusions()
        ],
        "interrupted": ev.outcome.interrupted,
    }


def evaluation_json(ev: Evaluation) -> str:
    return json.dumps(evaluation_dict(ev), indent=2, ensure_ascii=False)
