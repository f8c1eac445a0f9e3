"""The onnxruntime backend (the `onnx` extra): a checked ONNX export of the model, run on the CPU
in single-threaded slices, or with onnxruntime's CUDA provider.

Normalisation is the torch backend's arithmetic (`normalize_numpy`, bit for bit) and softmax is the
torch backend's own code, so the two backends differ only in the network's arithmetic. Where the
export was found by `onnx_cache.find_checked_export` (`onnx_file=`), nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shufflenet_cli.backends import onnx_cache, onnx_export
from shufflenet_cli.backends.onnx_export import INPUT, OUTPUT
from shufflenet_cli.backends.ops import normalize_numpy, topk_numpy, topk_to_numpy
from shufflenet_cli.device import CPU, CpuDevice  # noqa: F401 - CpuDevice: re-exported for callers
from shufflenet_cli.errors import ModelLoadError, UsageError
from shufflenet_cli.signals import reraise_interrupt

# CPU: a slice is run this many images at a time: fewer page faults and less memory kept by
# onnxruntime than one run per slice, and faster end to end (docs/performance.md, "onnxruntime: runs
# of 4 images").
CPU_RUN_IMAGES = 4


def available() -> bool:
    """True when onnxruntime can be imported (the `onnx` extra is installed)."""
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError) as exc:  # a broken install, or a test that hid the module
        reraise_interrupt(exc)
        return False


def require() -> Any:
    """onnxruntime, imported; UsageError where it is not installed, KeyboardInterrupt where Ctrl-C
    landed in its import (which onnxruntime's extension reports as an ImportError)."""
    try:
        import onnxruntime
    except ImportError as exc:
        reraise_interrupt(exc)
        raise UsageError(
            "--backend onnxruntime needs the onnxruntime package, which is not installed",
            hint="pip install 'shufflenet-cli[onnx]', or use --backend torch",
        ) from None
    return onnxruntime


class OnnxBackend:
    """`topk(batch_uint8_nhwc, k)` through an ONNX Runtime session of the exported model.

    On CPU, `threads` is the number of single-threaded slices of the batch run at once, each in runs
    of `CPU_RUN_IMAGES`: for a network of many small layers that is faster than splitting every
    layer across threads (docs/performance.md, "How the CPU defaults were chosen"), and a slice
    delayed by a decode thread costs one join per batch instead of one stall per layer.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model: Any,
        device: Any,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        crop: int,
        *,
        threads: int | None = None,
        weights_path: Path | None = None,
        precision: str = "fp32",
        exporter: str | None = None,
        split: bool = True,
        onnx_file: Path | None = None,
        onnx_sha256: str | None = None,
    ) -> None:
        """onnx_file: open this checked export (see `find_checked_export`) instead of exporting
        `model` (then None): nothing here imports torch, so `threads` must be given. It is opened
        only where its bytes have the sha256 `onnx_sha256` (the one its sidecar records); else
        ModelLoadError."""
        ort = require()
        if precision != "fp32":
            raise UsageError(
                f"the onnxruntime backend runs fp32 only, not {precision}",
                hint="use --backend torch for --precision fp16/bf16",
            )
        self.precision = precision
        self.device = device
        self.torch_free = onnx_file is not None
        self._mean_np = np.array(mean, dtype=np.float32).reshape(1, 3, 1, 1)  # == torch.tensor(mean)
        self._std_np = np.array(std, dtype=np.float32).reshape(1, 3, 1, 1)
        if self.torch_free:
            self.threads = max(1, int(threads or 1))
        else:
            import torch

            self.threads = max(1, int(threads or torch.get_num_threads()))
            self._mean = torch.from_numpy(self._mean_np)
            self._std = torch.from_numpy(self._std_np)
        self.providers = self._providers(ort, device)
        self.streams = self.threads if device.type == "cpu" and split else 1
        self._pool: ThreadPoolExecutor | None = None
        if self.streams > 1:
            self._pool = ThreadPoolExecutor(self.streams - 1, thread_name_prefix="onnxruntime")
        self.exporter = "" if onnx_file is not None else exporter or onnx_export.exporter_name()
        opened = self._open(ort, model, crop, weights_path, onnx_file, onnx_sha256)
        self.session = opened.session
        self.cache_path = opened.cache_path  # the .onnx file in use (None: not saved anywhere)
        self.exported = opened.exported  # True when this run exported (and checked) the model
        self.parity = opened.parity  # (difference, allowed) when this run checked
        self.onnx_sha256 = opened.sha256  # the sha256 of the export in use

    def _open(
        self,
        ort: Any,
        model: Any,
        crop: int,
        weights_path: Path | None,
        onnx_file: Path | None,
        onnx_sha256: str | None,
    ) -> onnx_cache.Opened:
        """A session of `onnx_file` (found checked by its sidecar) where its bytes are still the
        ones recorded, or of the model's checked export."""
        if onnx_file is not None:
            data = onnx_cache.read_verified(Path(onnx_file), onnx_sha256)
            if data is None:
                raise ModelLoadError(f"the cached ONNX export {onnx_file} is not the one its sidecar records")
            return onnx_cache.Opened(self._new_session(ort, data), Path(onnx_file), False, None, onnx_sha256)
        return onnx_cache.open_checked(
            lambda source: self._new_session(ort, source),
            model,
            crop,
            weights_path,
            self.exporter,
            self._mean,
            self._std,
        )

    @staticmethod
    def _providers(ort: Any, device: Any) -> list[Any]:
        if device.type == "cpu":
            return ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        raise UsageError(
            f"this onnxruntime has no execution provider for {device}",
            hint="use --backend torch (or --device cpu)",
        )

    def _session_options(self, ort: Any) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads // self.streams
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Decode workers share the cores: idle inference threads (CUDA) must sleep, not spin.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        return so

    def _new_session(self, ort: Any, source: str | bytes) -> Any:
        return ort.InferenceSession(source, self._session_options(ort), providers=self.providers)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Normalise (numpy, the torch backend's arithmetic) and run one slice, on CPU
        `CPU_RUN_IMAGES` images at a time; releases the GIL."""
        step = CPU_RUN_IMAGES if self.device.type == "cpu" else max(1, len(batch))
        runs = [batch[i : i + step] for i in range(0, max(1, len(batch)), step)]  # an empty batch: one empty run
        parts = [self.session.run([OUTPUT], {INPUT: normalize_numpy(r, self._mean_np, self._std_np)})[0] for r in runs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def topk(self, batch: np.ndarray, k: int, one_off: bool = False) -> tuple[np.ndarray, np.ndarray]:
        del one_off  # nothing is kept per batch shape here
        parts = min(self.streams, len(batch))
        if parts <= 1 or self._pool is None:
            logits = self.logits(batch)
        else:
            slices = np.array_split(batch, parts)
            futures = [self._pool.submit(self.logits, s) for s in slices[1:]]
            first = self.logits(slices[0])
            logits = np.concatenate([first] + [f.result() for f in futures])
        if self.torch_free:
            return topk_numpy(logits, k)
        import torch

        with torch.inference_mode():
            return topk_to_numpy(torch.from_numpy(logits), k)

    def describe(self) -> str:
        runs = f", {CPU_RUN_IMAGES} images per run" if self.device.type == "cpu" else ""
        if self.streams > 1 or self.threads == 1:
            return f"onnxruntime {self.device} {self.precision} ({self.streams} x 1-thread slices per batch{runs})"
        return f"onnxruntime {self.device} {self.precision} ({self.threads} threads per layer{runs})"
