"""Inference backends: a batch of HWC uint8 crops in, top-k probabilities and class indices out.

Normalisation happens here, per batch, on the device (the same float arithmetic as torchvision's
`convert_image_dtype` then `normalize`). Softmax is always computed in float32.

`torch` runs the torchvision model eagerly (CPU: channels_last, measured faster; CUDA: pinned
uint8 batches normalised on the GPU, contiguous at fp32 and channels_last under fp16/bf16 autocast,
each batch shape after the first replayed from a CUDA graph, cuda_graphs.py). `onnxruntime` (the `onnx` extra)
runs the same model exported to ONNX; see onnx_backend.py. `auto` takes onnxruntime on CPU at fp32
where it is installed (measured faster there, docs/benchmarks.md), torch otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16")
BACKENDS = ("auto", "torch", "onnxruntime")


class Backend(Protocol):
    name: str
    precision: str

    def topk(self, batch: np.ndarray, k: int, one_off: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Must be done with `batch` when it returns: the caller stacks the next batch into its memory.
        one_off: a batch outside the run's rhythm (near_ties.py's second pass): nothing is kept for it."""
        ...

    def describe(self) -> str: ...


def as_tensor(batch: np.ndarray) -> Any:
    """The uint8 batch as a CPU tensor sharing its memory (copied only when numpy marks it read-only)."""
    import torch

    return torch.from_numpy(batch if batch.flags.writeable else batch.copy())


def normalize(x: Any, mean: Any, std: Any, channels_last: bool) -> Any:
    """N,H,W,C uint8 tensor -> N,C,H,W float32, `(x / 255 - mean) / std` (torchvision's arithmetic).

    NHWC memory viewed as NCHW is channels_last already; `channels_last=False` makes it contiguous.
    """
    x = x.permute(0, 3, 1, 2)
    if not channels_last:
        x = x.contiguous()  # on uint8: a quarter of the bytes of a float copy
    return x.float().div_(255).sub_(mean).div_(std)


def normalize_numpy(batch: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """`normalize` in numpy, bit for bit (the same float32 operations in the same order), into a
    contiguous N,C,H,W array; numpy releases the GIL, so slices normalise in parallel threads.
    mean, std: float32 arrays of shape (1, 3, 1, 1)."""
    n, h, w, c = batch.shape
    x = np.empty((n, c, h, w), dtype=np.float32)
    np.copyto(x, batch.transpose(0, 3, 1, 2), casting="unsafe")
    x /= np.float32(255)
    x -= mean
    x /= std
    return x


def topk_on_device(logits: Any, k: int) -> Any:
    """Softmax in float32, top-k: one N x 2k tensor on the logits' device, [probabilities | indices]."""
    import torch

    probs = logits.float().softmax(dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return torch.cat([values, indices.to(values.dtype)], dim=1)  # indices < 2**24 are exact in float32


def split_topk(both: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`topk_on_device`'s result, copied to the host, as (probabilities, int64 class indices)."""
    k = both.shape[1] // 2
    return both[:, :k], both[:, k:].astype(np.int64)


def topk_to_numpy(logits: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax in float32, top-k, and one device-to-host copy per batch."""
    return split_topk(topk_on_device(logits, k).cpu().numpy())


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
            # CPU: channels_last, measured faster. CUDA fp32 (H200, benchmarks/forward_cuda.py, x1_0,
            # batch 128): contiguous ran 19,804 images/s against 17,564, and its first batch took
            # 0.32 s against 2.23 s (cuDNN's set-up for channels_last). fp16/bf16 keep channels_last.
            self.channels_last = not (self._cuda and self.precision == "fp32")
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(self.device, memory_format=memory_format).eval()
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.std, device=self.device).view(shape)
        if self._cuda and self.precision == "fp32":
            # fp32 means fp32: TF32 convolutions moved probabilities by up to 2.6e-3 from the CPU's
            # (H200, random weights); ShuffleNet is not compute-bound, so the cost is small.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        # CPU: a batch is cut into `streams` slices run at once, each on one intra-op thread. A slice
        # delayed by a decode thread costs one join per batch instead of a stall at every layer:
        # x1_0, batch 32, 2 cores, measured 225-280 images/s vs 185-220 with 2 threads per layer,
        # and about 140 vs 15 while other processes loaded the machine (docs/benchmarks.md).
        self.streams = 1 if self._cuda else max(1, int(self.threads or torch.get_num_threads()))
        self._graphs = None
        if self._cuda and self.cuda_graphs:
            from shufflenet_cli.backends.cuda_graphs import GraphedSteps

            self._graphs = GraphedSteps(self.device, self.device_topk)
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
            x = normalize(x, self._mean, self._std, self.channels_last)
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

        if self._graphs is not None and not one_off:
            replayed = self._graphs.topk(batch, k)
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
        if self._graphs is not None:
            failed, replayed = self._graphs.failed, self._graphs.replayed
            runs = f", CUDA graphs ({replayed} batch{'es' if replayed != 1 else ''} replayed)"
            if failed:
                runs = f", CUDA graphs off after a failed capture ({failed}); {replayed} replayed before"
        note = f" [{self.note}]" if self.note else ""
        return f"torch {self.device} {self.precision} {layout}{runs}{note}"


def prefers_onnxruntime(device: Any, precision: str) -> bool:
    """auto's choice: onnxruntime on CPU at fp32 where it is installed (measured faster there)."""
    from shufflenet_cli.backends import onnx_runtime as onnx_backend

    return device.type == "cpu" and precision == "fp32" and onnx_backend.available()


def make_backend(
    name: str,
    model: Any,
    device: Any,
    prep: Any,
    precision: str,
    *,
    threads: int | None = None,
    weights_path: Path | None = None,
    cuda_graphs: bool = True,
) -> Backend:
    """The backend asked for; `auto` picks the fastest one available for the device.

    threads: CPU inference threads; each batch is cut into this many slices run at once, one
        intra-op thread each (default: torch's current setting, which the runner sets from --threads).
    weights_path: a --weights file, next to which onnxruntime caches its export (default: torch's
        checkpoints folder, where torchvision keeps the downloaded weights).
    cuda_graphs: on CUDA, torch replays each repeated batch shape from a captured graph (cuda_graphs.py).
    """
    from shufflenet_cli.errors import ShufflenetError, UsageError

    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}", hint="use auto, torch or onnxruntime")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}", hint="use fp32, fp16 or bf16")
    note = ""
    if name == "onnxruntime" or (name == "auto" and prefers_onnxruntime(device, precision)):
        from shufflenet_cli.backends.onnx_runtime import OnnxBackend

        try:
            return OnnxBackend(
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
            if name == "onnxruntime":
                raise
            note = f"auto: onnxruntime not used: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - auto must still classify with torch
            if name == "onnxruntime":
                raise
            note = f"auto: onnxruntime not used: {type(exc).__name__}: {exc}"
    return TorchBackend(
        model, device, prep.mean, prep.std, precision=precision, note=note, threads=threads, cuda_graphs=cuda_graphs
    )
