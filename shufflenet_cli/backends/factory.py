"""The backend a run asked for: `torch`, `onnxruntime`, or `auto` (onnxruntime on CPU at fp32 where it
is installed, measured faster there: docs/performance.md, "How the CPU defaults were chosen"; torch
otherwise, and wherever onnxruntime
fails to take the model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shufflenet_cli.backends import onnx_runtime
from shufflenet_cli.backends.base import Backend, Normalisation
from shufflenet_cli.backends.torch_backend import TorchBackend
from shufflenet_cli.errors import ShufflenetError, UsageError
from shufflenet_cli.options import BACKENDS, PRECISIONS
from shufflenet_cli.signals import reraise_interrupt


def prefers_onnxruntime(device: Any, precision: str) -> bool:
    """auto's choice: onnxruntime on CPU at fp32 where it is installed (measured faster there)."""
    return device.type == "cpu" and precision == "fp32" and onnx_runtime.available()


def make_backend(
    name: str,
    model: Any,
    device: Any,
    prep: Normalisation,
    precision: str,
    *,
    threads: int | None = None,
    weights_path: Path | None = None,
    cuda_graphs: bool = True,
) -> Backend:
    """The backend asked for; `auto` picks the fastest one available for the device.

    threads: CPU inference threads; each batch is cut into this many slices run at once, one
        intra-op thread each (default: torch's current setting, which the runner sets from --threads).
    weights_path: a --weights file, whose export onnxruntime caches in the user's cache folder
        (default: torchvision's weights, whose export goes to torch's checkpoints folder).
    cuda_graphs: on CUDA, torch replays each repeated batch shape from a captured graph (cuda_graphs.py).
    """
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}", hint="use " + ", ".join(BACKENDS))
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}", hint="use " + ", ".join(PRECISIONS))
    note = ""
    if name == "onnxruntime" or (name == "auto" and prefers_onnxruntime(device, precision)):
        try:
            return onnx_runtime.OnnxBackend(
                model,
                device,
                prep.mean,
                prep.std,
                int(prep.crop),
                threads=threads,
                weights_path=weights_path,
                precision=precision,
            )
        except ShufflenetError as exc:
            reraise_interrupt(exc)
            if name == "onnxruntime":
                raise
            note = f"auto: onnxruntime not used: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - auto must still classify with torch
            reraise_interrupt(exc)  # Ctrl-C is never a reason to fall back
            if name == "onnxruntime":
                raise
            note = f"auto: onnxruntime not used: {type(exc).__name__}: {exc}"
    return TorchBackend(
        model, device, prep.mean, prep.std, precision=precision, note=note, threads=threads, cuda_graphs=cuda_graphs
    )
