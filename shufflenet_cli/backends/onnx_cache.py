"""Where checked ONNX exports are kept, and how a run finds one again.

The .onnx file is cached next to a --weights file, or in torch's checkpoints folder next to
torchvision's downloaded weights, or (where that folder is not writable) in
$XDG_CACHE_HOME/shufflenet-cli; its name is keyed by a hash of the state dict and of the exporter
(torch version, exporter kind, opset, onnxruntime version). A file is written to its final name only
after its logits matched torch's (`onnx_export.allowed_difference`), so an existing cache file has been
checked; a later run only opens it (`open_checked`).

A checked export of torchvision's cached weights file also gets a small JSON sidecar keyed by the
sha256 of that file (`write_sidecar`): a later run finds the .onnx from the file's hash alone and opens
it without importing torch or building the model (`find_checked_export`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shufflenet_cli.atomic import write_atomic
from shufflenet_cli.backends import onnx_export
from shufflenet_cli.backends.onnx_export import FORMAT, OPSET
from shufflenet_cli.errors import ModelLoadError

SIDECAR_FORMAT = 1


def state_dict_hash(model: Any) -> str:
    """sha256 over every tensor of the state dict: names, dtypes, shapes and bytes."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def exporter_key(exporter: str) -> str:
    import onnxruntime
    import torch

    return f"torch-{torch.__version__}|{exporter}|opset{OPSET}|format{FORMAT}|ort-{onnxruntime.__version__}"


def _stem(model: Any, weights_path: Path | None) -> str:
    if weights_path is not None:
        return Path(weights_path).stem
    from shufflenet_cli.models import spec_for_conv5

    try:
        spec = spec_for_conv5(int(model.conv5[0].in_channels))
    except (AttributeError, TypeError, IndexError):
        spec = None
    return spec.arch if spec is not None else type(model).__name__.lower()


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shufflenet-cli"


def cache_dirs(weights_path: Path | None) -> list[Path]:
    """Where the .onnx may go, first choice first: next to a --weights file, else torch's checkpoints
    folder (next to torchvision's downloaded weights); then a user cache folder."""
    from shufflenet_cli.weights import cache_dir

    first = Path(weights_path).resolve().parent if weights_path is not None else cache_dir()
    return [first, user_cache_dir()]


def cache_name(stem: str, weights_hash: str, key: str) -> str:
    digest = hashlib.sha256(f"{weights_hash}|{key}".encode()).hexdigest()[:16]
    return f"{stem}.{digest}.onnx"


def _stale_siblings(path: Path, stem: str) -> list[Path]:
    pattern = re.compile(re.escape(stem) + r"\.[0-9a-f]{16}\.onnx")
    try:
        return [p for p in path.parent.iterdir() if p != path and pattern.fullmatch(p.name)]
    except OSError:
        return []


def _versions() -> dict[str, str]:
    """What an export depends on besides the weights, read without importing torch."""
    from importlib.metadata import version

    return {
        "torch": version("torch"),
        "onnxruntime": version("onnxruntime"),
        "opset": str(OPSET),
        "format": str(FORMAT),
    }


def sidecar_name(arch: str, file_sha256: str) -> str:
    return f"{arch}.weights-{file_sha256[:16]}.json"


def write_sidecar(onnx_path: Path, arch: str, file_sha256: str, num_classes: int) -> Path | None:
    """Record, next to a checked export, the sha256 of the weights FILE it was made from; call only
    with an export that passed the parity check (this run's, or a cache file, written only after it)."""
    import json

    data = {
        "sidecar_format": SIDECAR_FORMAT,
        "weights_sha256": file_sha256,
        "onnx": onnx_path.name,
        "num_classes": int(num_classes),
        "versions": _versions(),
    }
    path = onnx_path.with_name(sidecar_name(arch, file_sha256))
    if save(path, (json.dumps(data, indent=1) + "\n").encode()):
        return path
    return None


def find_checked_export(arch: str, file_sha256: str, folders: list[Path]) -> tuple[Path, int] | None:
    """(the .onnx, its class count) for a weights file of this sha256 whose export passed the torch
    check under the torch and onnxruntime installed now; None otherwise."""
    import json

    for folder in folders:
        path = folder / sidecar_name(arch, file_sha256)
        try:
            data = json.loads(path.read_text("utf-8"))
            onnx = folder / str(data["onnx"])
            if (
                data["sidecar_format"] == SIDECAR_FORMAT
                and data["weights_sha256"] == file_sha256
                and data["versions"] == _versions()
                and "/" not in str(data["onnx"])
                and onnx.is_file()
            ):
                return onnx, int(data["num_classes"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


@dataclass
class Opened:
    """An onnxruntime session of a checked export, and how it was had."""

    session: Any
    cache_path: Path | None  # the .onnx file it came from or was saved to (None: not saved)
    exported: bool  # this run exported and checked the model
    parity: tuple[float, float] | None  # (difference, allowed) where this run checked


def open_checked(
    new_session: Callable[[str | bytes], Any],
    model: Any,
    crop: int,
    weights_path: Path | None,
    exporter: str,
    mean: Any,
    std: Any,
) -> Opened:
    """A session of the cached export of `model`, or of a new export that passed the parity check
    (then saved to the first cache folder that takes it). ModelLoadError where the export does not
    match torch or the weights give no numbers."""
    stem = _stem(model, weights_path)
    name = cache_name(stem, state_dict_hash(model), exporter_key(exporter))
    for folder in cache_dirs(weights_path):
        path = folder / name
        if path.is_file():
            try:
                return Opened(new_session(str(path)), path, False, None)
            except Exception:  # noqa: BLE001 - a damaged cache file is exported again
                _unlink(path)
    data = onnx_export.export_bytes(model, crop, exporter)
    session = new_session(data)
    diff, largest = onnx_export.max_logit_difference(model, session, onnx_export.check_batch(crop, mean, std))
    parity = (diff, onnx_export.allowed_difference(largest))
    if not np.isfinite(largest):
        raise ModelLoadError(
            "the model's own outputs are not numbers (NaN or infinity) on a test image: "
            "the weights are probably damaged",
            hint="check or download the weights again",
        )
    if not diff < parity[1]:
        raise ModelLoadError(
            f"the ONNX export does not match torch: max abs logit difference {diff:.3g} "
            f"(allowed {parity[1]:.3g}); it is not used",
            hint="use --backend torch",
        )
    saved = None
    for folder in cache_dirs(weights_path):
        path = folder / name
        if save(path, data):
            saved = path
            if weights_path is not None and folder == cache_dirs(weights_path)[0]:
                for stale in _stale_siblings(path, stem):
                    _unlink(stale)
            break
    return Opened(session, saved, True, parity)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def save(path: Path, data: bytes) -> bool:
    """Write a cache file atomically (a link in its place is replaced, not followed); False where
    its folder cannot be made or written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, follow_links=False)
        return True
    except OSError:
        return False
