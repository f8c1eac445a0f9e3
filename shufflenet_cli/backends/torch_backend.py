"""The torch backend: the torchvision model run eagerly, a batch of HWC uint8 crops in, top-k out.

CPU: channels_last, each batch cut into single-threaded slices run at once. CUDA: pinned uint8
batches normalised on the GPU, contiguous at fp32 and channels_last under fp16/bf16 autocast, each
batch shape after the first replayed from a CUDA graph (cuda_graphs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shufflenet_cli.backends.ops import as_tensor, normalize, topk_on_device, topk_to_numpy


@dataclass
class TorchBackend:
    model: Any
    device: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    precision: str = "fp32"
    channels_last: bool | None = None  # None: the layout measured faster for the device and precision
    name: str = "torch"
    note: str = ""  # why auto did not pick another backend, shown by describe()
    threads: int | None = None  # CPU: slices run at once, one intra-op thread each (default: torch's threads)
    cuda_graphs: bool = True  # CUDA: replay each repeated batch shape from a captured graph (cuda_graphs.py)

    def __post_init__(self) -> None:
        import torch

        self._cuda = self.device.type == "cuda"
        if self.channels_last is None:
            # CPU: channels_last, measured faster. CUDA fp32: contiguous, measured faster per batch and
            # far quicker to set up its first batch (cuDNN's set-up for channels_last is slow; `python
            # -m benchmarks.studies.forward_cuda`, docs/performance.md, "Defaults"). fp16/bf16 keep
            # channels_last.
            self.channels_last = not (self._cuda and self.precision == "fp32")
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(self.device, memory_format=memory_format).eval()
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.std, device=self.device).view(shape)
        if self._cuda and self.precision == "fp32":
            # fp32 means fp32: TF32 convolutions move probabilities beyond the CPU parity tolerance
            # (docs/performance.md, "Earlier sessions"); ShuffleNet is not compute-bound, so the cost
            # is small.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        # CPU: a batch is cut into `streams` slices run at once, each on one intra-op thread. A slice
        # delayed by a decode thread costs one join per batch instead of a stall at every layer:
        # measured faster than splitting every layer across the threads, and far faster while other
        # processes load the machine (docs/performance.md, "How the CPU defaults were chosen").
        self.streams = 1 if self._cuda else max(1, int(self.threads or torch.get_num_threads()))
        self.graphs = None
        if self._cuda and self.cuda_graphs:
            from shufflenet_cli.backends.cuda_graphs import GraphedSteps

            self.graphs = GraphedSteps(self.device, self.device_topk)
        self._pool = None
        if self.streams > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(
                self.streams, thread_name_prefix="torch-slice", initializer=torch.set_num_threads, initargs=(1,)
            )

    def logits(self, batch: np.ndarray) -> Any:
        """Float32 logits of one batch or slice, computed on the calling thread."""
        import torch

        with torch.inference_mode():
            x = batch if isinstance(batch, torch.Tensor) else as_tensor(batch)  # N,H,W,C uint8
            if self._cuda and x.device.type == "cpu":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = normalize(x, self._mean, self._std, bool(self.channels_last))
            if self._autocast is not None:
                # no weight-cast cache: it cannot be captured in a CUDA graph, and each weight is
                # used once per forward anyway
                with torch.autocast(device_type=self.device.type, dtype=self._autocast, cache_enabled=False):
                    return self.model(x).float()
            return self.model(x).float()

    def device_topk(self, x: Any, k: int) -> Any:
        """The whole step on the device, as a graph captures it: topk_on_device(logits(x), k)."""
        import torch

        with torch.inference_mode():
            return topk_on_device(self.logits(x), k)

    def topk(self, batch: Any, k: int, one_off: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """batch: N,H,W,C uint8, a numpy array or (--gpu-decode) a tensor already on the device.
        one_off: runs eagerly, and its shape is not counted towards a CUDA graph capture."""
        import torch

        if self.graphs is not None and not one_off:
            replayed = self.graphs.topk(batch, k)
            if replayed is not None:
                return replayed
        parts = min(self.streams, len(batch))
        if parts <= 1 or self._pool is None:
            logits = self.logits(batch)
        else:
            futures = [self._pool.submit(self.logits, s) for s in np.array_split(batch, parts)]
            logits = torch.cat([f.result() for f in futures])
        with torch.inference_mode():
            return topk_to_numpy(logits, k)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        runs = f" ({self.streams} x 1-thread runs per batch)" if not self._cuda else ""
        if self.graphs is not None:
            failed, replayed = self.graphs.failed, self.graphs.replayed
            runs = f", CUDA graphs ({replayed} batch{'es' if replayed != 1 else ''} replayed)"
            if failed:
                runs = f", CUDA graphs off after a failed capture ({failed}); {replayed} replayed before"
        note = f" [{self.note}]" if self.note else ""
        return f"torch {self.device} {self.precision} {layout}{runs}{note}"
