"""The torchvision model as an ONNX file, and the check that it computes what torch computes.

The export runs offline from the model already in memory (dynamic batch axis), with torch.onnx's
TorchScript exporter where this torch has it, else the dynamo exporter (slower, and it needs
onnxscript). `max_logit_difference` compares onnxruntime's logits with torch's on a fixed batch;
`allowed_difference` says how close is close enough. Where exports are kept: onnx_cache.py.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from shufflenet_cli.errors import ModelLoadError
from shufflenet_cli.signals import reraise_interrupt

PARITY_ATOL = 1e-4  # max abs difference of logits, ONNX Runtime vs torch fp32, on the check batch ...
LOGIT_SCALE = 10.0  # ... for logits up to this size (ImageNet weights: about 10); relative beyond it
OPSET = 17
FORMAT = 1  # bump when the export arguments change: old cache files are then ignored
INPUT, OUTPUT = "input", "logits"


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Export and check on one intra-op thread: a tiny batch gains nothing from more, and on a busy
    machine torch's threads wait on each other at every layer, which slows the check many times over
    (docs/performance.md, "Defaults")."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _export_legacy(model: Any, example: Any, f: Any) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            f,
            dynamo=False,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _export_dynamo(model: Any, example: Any, f: Any) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            opset_version=OPSET,
            optimize=True,
            verbose=False,  # else it prints progress on stdout, where the results go
        )
    if program is None:  # only where torch.onnx.export writes to a file it was given
        raise RuntimeError("the dynamo exporter returned no program")
    f.write(program.model_proto.SerializeToString())


def exporter_name() -> str:
    """`torchscript` (torch.onnx's legacy tracer: much quicker to export, the same graph speed;
    docs/performance.md, "Defaults") where this torch still has it, else `dynamo` (needs onnxscript)."""
    import inspect

    import torch

    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" in params and "dynamic_axes" in params:
        return "torchscript"
    return "dynamo"


def export_bytes(model: Any, crop: int, exporter: str | None = None) -> bytes:
    """The model as an ONNX file (bytes), batch axis dynamic. Runs offline on a CPU copy of the model."""
    import copy
    import io

    import torch

    exporter = exporter or exporter_name()
    cpu_model = model
    if any(p.device.type != "cpu" for p in model.parameters()) or any(
        p.dtype != torch.float32 for p in model.parameters()
    ):
        cpu_model = copy.deepcopy(model).to("cpu", torch.float32)
    cpu_model = cpu_model.eval()
    example = torch.zeros(2, 3, crop, crop)
    buf = io.BytesIO()
    try:
        with torch.no_grad(), _one_torch_thread(), contextlib.redirect_stdout(sys.stderr):  # stdout: results only
            if exporter == "torchscript":
                _export_legacy(cpu_model, example, buf)
            else:
                _export_dynamo(cpu_model, example, buf)
    except ImportError as exc:
        reraise_interrupt(exc)
        raise ModelLoadError(
            f"cannot export the model to ONNX: {exc}",
            hint="pip install 'shufflenet-cli[onnx]' (it brings onnxscript), or use --backend torch",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any exporter failure is one clear message
        reraise_interrupt(exc)
        raise ModelLoadError(
            f"cannot export the model to ONNX ({exporter} exporter): {type(exc).__name__}: {exc}",
            hint="use --backend torch",
        ) from exc
    return buf.getvalue()


def check_batch(crop: int, mean: Any, std: Any) -> Any:
    """A fixed, normalised float batch (2 images of uniform random pixels) for the parity check;
    mean and std as (1, 3, 1, 1) tensors."""
    import torch

    from shufflenet_cli.backends.ops import normalize

    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, crop, crop, 3), dtype=torch.uint8, generator=gen)
    return normalize(pixels, mean, std, channels_last=False)


def allowed_difference(largest_logit: float) -> float:
    """1e-4 for logits of ImageNet size; for larger logits (random weights can reach thousands, where
    one float32 step is already above 1e-4) the same bound relative to the largest: 1e-5 of it."""
    return PARITY_ATOL * max(1.0, abs(largest_logit) / LOGIT_SCALE)


def max_logit_difference(model: Any, session: Any, x: Any) -> tuple[float, float]:
    """(max abs difference of ONNX Runtime's logits from torch's, largest abs torch logit)."""
    import copy

    import torch

    with torch.inference_mode(), _one_torch_thread():
        params = list(model.parameters())
        ref_model = model
        if params and (params[0].device.type != "cpu" or params[0].dtype != torch.float32):
            ref_model = copy.deepcopy(model).to("cpu", torch.float32)
        ref = ref_model(x.contiguous()).float().numpy()
    got = session.run([OUTPUT], {INPUT: np.ascontiguousarray(x.numpy())})[0]
    largest = float(np.max(np.abs(ref)))
    if got.shape != ref.shape:
        return float("inf"), largest
    with np.errstate(invalid="ignore"):  # inf - inf: damaged weights, which the caller names
        return float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))), largest
