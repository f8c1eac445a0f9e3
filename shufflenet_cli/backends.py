"""Inference backends: a batch of HWC uint8 crops in, top-k probabilities and class indices out.

Normalisation happens here, per batch, on the device (the same float arithmetic as torchvision's
`convert_image_dtype` then `normalize`). Softmax is always computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16")


class Backend(Protocol):
    name: str
    precision: str

    def topk(self, batch: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class TorchBackend:
    model: Any
    device: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    precision: str = "fp32"
    channels_last: bool = True
    name: str = "torch"

    def __post_init__(self) -> None:
        import torch

        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(self.device, memory_format=memory_format).eval()
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.std, device=self.device).view(shape)
        self._cuda = self.device.type == "cuda"
        self._autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)

    def topk(self, batch: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch)  # N,H,W,C uint8
            if self._cuda:
                x = x.pin_memory().to(self.device, non_blocking=True)
            # NHWC memory viewed as NCHW is channels_last already: no copy.
            x = x.permute(0, 3, 1, 2)
            if not self.channels_last:
                x = x.contiguous()
            x = x.float().div_(255).sub_(self._mean).div_(self._std)
            if self._autocast is not None:
                with torch.autocast(device_type=self.device.type, dtype=self._autocast):
                    logits = self.model(x)
            else:
                logits = self.model(x)
            probs = logits.float().softmax(dim=1)
            k = min(k, probs.shape[1])
            values, indices = probs.topk(k, dim=1)
            # one device-to-host copy per batch (indices < 2**24 are exact in float32)
            both = torch.cat([values, indices.to(values.dtype)], dim=1).cpu().numpy()
        return both[:, :k], both[:, k:].astype(np.int64)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"torch {self.device} {self.precision} {layout}"


BACKENDS = ("auto", "torch", "onnxruntime")


def make_backend(name: str, model: Any, device: Any, prep: Any, precision: str) -> Backend:
    """The backend asked for; `auto` picks the fastest one available for the device."""
    from shufflenet_cli.errors import UsageError

    if name == "onnxruntime":
        raise UsageError("the onnxruntime backend is not available yet", hint="use --backend torch")
    if name not in ("auto", "torch"):
        raise UsageError(f"unknown backend {name!r}", hint="use auto, torch or onnxruntime")
    return TorchBackend(model, device, prep.mean, prep.std, precision=precision)
