"""The CUDA inference step captured once per batch shape as a CUDA graph, then replayed: one launch per
batch instead of one per operation (normalise, every layer, softmax, top-k).

Why: in a CUDA run the main process is short of CPU, not the GPU of work. Queuing the eager step's
kernels costs CPU time for every operation of every batch, and far more while the decode workers keep
the CPU busy; replaying a graph costs a fraction of that (measured with `python -m
benchmarks.studies.forward_cuda`: docs/performance.md, "Defaults", CUDA). The kernels are the same
ones, so the results are too (tests/test_backends.py compares them bit for bit).

A shape is captured the second time it is seen: a run's last, smaller batch is not worth a capture.
At most MAX_SHAPES shapes are kept. A capture that fails turns graphs off for the rest of the run, and
the eager step goes on; `failed` says why (the backend's description shows it). Known limit: a capture
that CUDA itself invalidates (a synchronising call inside it; the step has none) can leave torch's
caching allocator with a capture still open, which only costs memory reuse for the rest of the run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import numpy as np

MAX_SHAPES = 2

# (batch on the device, k) -> (probabilities, class indices) as one device tensor, [values | indices]
DeviceStep = Callable[[Any, int], Any]


class GraphedSteps:
    def __init__(self, device: Any, step: DeviceStep) -> None:
        self.device, self.step = device, step
        self.captured: dict[tuple, Captured] = {}
        self.seen: Counter[tuple] = Counter()
        self.failed: str | None = None
        self.replayed = 0  # batches

    def topk(self, batch: Any, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The step replayed from a graph; None where this batch runs eagerly (a shape seen once, too
        many shapes, or graphs off after a failed capture)."""
        if self.failed is not None or str(batch.dtype) not in ("uint8", "torch.uint8"):
            return None
        key = (tuple(batch.shape), k, isinstance(batch, np.ndarray), str(getattr(batch, "device", "cpu")))
        captured = self.captured.get(key)
        if captured is None:
            self.seen[key] += 1
            if self.seen[key] < 2 or len(self.captured) >= MAX_SHAPES:
                return None
            try:
                captured = Captured(self.device, self.step, batch, k)
            except Exception as exc:  # noqa: BLE001 - a graph is an optimisation: eager still runs
                self.failed = f"{type(exc).__name__}: {exc}"
                return None
            self.captured[key] = captured
        self.replayed += 1
        return captured.run(batch)


class Captured:
    """One shape: a fixed input buffer on the device (and a pinned one in host memory, for numpy
    batches), the graph, and its output."""

    def __init__(self, device: Any, step: DeviceStep, batch: Any, k: int) -> None:
        import torch

        self.staging = None
        if isinstance(batch, np.ndarray):
            self.staging = torch.empty(tuple(batch.shape), dtype=torch.uint8, pin_memory=True)
            self.staging_np = self.staging.numpy()
        self.device = device
        # On the backend's device (torch.cuda.graph captures on the current device's stream: with
        # cuda:1 it would record nothing), and the caller's stream restored whatever happens (a
        # capture that breaks leaves torch's capture stream current otherwise).
        previous = torch.cuda.current_stream(device)
        try:
            with torch.cuda.device(device), torch.inference_mode():
                self.input = torch.zeros(tuple(batch.shape), dtype=torch.uint8, device=device)
                # warm-up on a side stream, as torch.cuda.graph asks (lazy set-up stays out of the graph)
                side = torch.cuda.Stream(device)
                side.wait_stream(previous)
                with torch.cuda.stream(side):
                    for _ in range(2):
                        step(self.input, k)
                previous.wait_stream(side)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph, stream=torch.cuda.Stream(device)):
                    self.output = step(self.input, k)
        finally:
            if torch.cuda.current_stream(device) != previous:
                torch.cuda.set_stream(previous)

    def run(self, batch: Any) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from shufflenet_cli.backends.ops import split_topk

        with torch.cuda.device(self.device), torch.inference_mode():
            if self.staging is None:
                self.input.copy_(batch)
            else:
                # The pinned buffer is free again: the previous batch's .cpu() waited for its copy.
                np.copyto(self.staging_np, batch)
                self.input.copy_(self.staging, non_blocking=True)
            self.graph.replay()
            return split_topk(self.output.cpu().numpy())
