"""`--device`, resolved once per run: the device the backend runs on, which the GPU decoder then
takes from the backend.

`resolve` parses the name once. Where the device is the CPU and that is known without importing torch
(`cpu`, or `auto` where no GPU can be visible), it gives `CPU`, a torch-free stand-in for
`torch.device("cpu")`, so that the torch-free onnxruntime path can run; `as_torch` turns it into the
real one where torch runs the model.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any

from shufflenet_cli.errors import ModelLoadError, UsageError
from shufflenet_cli.options import DEVICE_HINT


class CpuDevice:
    """What a backend needs of torch.device("cpu") (`type`, `index`, str), without torch."""

    type = "cpu"
    index = None

    def __str__(self) -> str:
        return "cpu"


CPU = CpuDevice()


def resolve(name: str) -> Any:
    """`auto`, `cpu`, `cuda`, `cuda:N` -> `CPU` or a torch.device. A name that is none of these is a
    usage error (exit 2); CUDA asked for where it is missing is a load error (exit 3)."""
    name = name.strip().lower()
    if name == "cpu" or (name == "auto" and "torch" not in sys.modules and not gpu_may_be_visible()):
        return CPU
    return _torch_device(name)


def as_torch(device: Any) -> Any:
    """The torch.device for a resolved device (`CPU` becomes torch.device("cpu"))."""
    if isinstance(device, CpuDevice):
        import torch

        return torch.device("cpu")
    return device


def _torch_device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {name!r}", hint=DEVICE_HINT) from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise UsageError(f"unsupported device {name!r}", hint=DEVICE_HINT)
    if not torch.cuda.is_available():
        raise ModelLoadError(
            f"--device {name} was asked for, but no CUDA device is available here",
            hint="use --device cpu (or auto)",
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ModelLoadError(
            f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)",
            hint=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}",
        )
    return device


def gpu_may_be_visible() -> bool:
    """Whether a GPU that torch could use as `cuda` may be here, decided without importing torch:
    False only when CUDA_VISIBLE_DEVICES hides every device ("" or "-1"), or when there is no NVIDIA
    device node (/dev/nvidia0...), no NVIDIA driver (/proc/driver/nvidia), no ROCm (/dev/kfd) and no
    WSL GPU (/dev/dxg). Errs towards True: then torch decides, as it always did."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(
        glob.glob("/dev/nvidia[0-9]*")
        or os.path.exists("/proc/driver/nvidia")
        or os.path.exists("/dev/kfd")
        or os.path.exists("/dev/dxg")
    )


def _cpu_without_torch(device: str) -> bool:
    """The device is the CPU, known without importing torch: `--device cpu`, or `auto` where no GPU can
    be visible (`gpu_may_be_visible`; where torch is already imported, torch.cuda decides). `auto`
    with a GPU present never takes the torch-free path, so it never runs on the CPU by mistake."""
    name = device.strip().lower()
    if name == "cpu":
        return True
    if name != "auto":
        return False
    if "torch" in sys.modules:
        import torch

        return not torch.cuda.is_available()
    return not gpu_may_be_visible()
