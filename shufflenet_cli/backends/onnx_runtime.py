"""ONNX Runtime inference: the loaded torchvision model, exported once to ONNX, cached and checked.

The export runs offline from the model already in memory (dynamic batch axis), with torch.onnx's
TorchScript exporter where this torch has it (about 0.5 s; the dynamo exporter, the fallback, takes
about 8 s and needs onnxscript). The .onnx file is cached next to a --weights file, or in torch's
checkpoints folder next to torchvision's downloaded weights, or (where that folder is not writable)
in $XDG_CACHE_HOME/shufflenet-cli; its name is keyed by a hash of the state dict and of the exporter
(torch version, exporter kind, opset, onnxruntime version). A file is written to its final name only
after its logits matched torch's (see `allowed_difference`), so an existing cache file has been
checked; a later run only opens it.

A checked export of torchvision's cached weights file also gets a small JSON sidecar keyed by the
sha256 of that file (`write_sidecar`): a later run finds the .onnx from the file's hash alone and opens
it without importing torch or building the model (`find_checked_export`, `OnnxBackend(onnx_file=...)`).

Normalisation is the torch backend's arithmetic (`normalize_numpy`, bit for bit) and softmax is the
torch backend's own code, so the two backends differ only in the network's arithmetic.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shufflenet_cli.errors import ModelLoadError, UsageError

PARITY_ATOL = 1e-4  # max abs difference of logits, ONNX Runtime vs torch fp32, on the check batch ...
LOGIT_SCALE = 10.0  # ... for logits up to this size (ImageNet weights: about 10); relative beyond it
OPSET = 17
FORMAT = 1  # bump when the export arguments change: old cache files are then ignored
INPUT, OUTPUT = "input", "logits"
SIDECAR_FORMAT = 1
# CPU: a slice is run this many images at a time. On 2 cores (1 MiB L2 each, 32 MiB L3 shared with
# the decode threads) runs of 4 against one run of 16: forward-only x1_0 386 vs 361 images/s, the
# first batch 11,405 vs 30,302 page faults, 47 vs 183 MiB kept by onnxruntime; end to end faster in
# every round of an interleaved A/B (docs/benchmarks.md, "onnxruntime: runs of 4 images").
CPU_RUN_IMAGES = 4


class CpuDevice:
    """What the backend needs of torch.device("cpu") (`type`, `index`, str), without torch."""

    type = "cpu"
    index = None

    def __str__(self) -> str:
        return "cpu"


def available() -> bool:
    """True when onnxruntime can be imported (the `onnx` extra is installed)."""
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):  # a broken install, or a test that hid the module
        return False


def require() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(
            "--backend onnxruntime needs the onnxruntime package, which is not installed",
            hint="pip install 'shufflenet-cli[onnx]', or use --backend torch",
        ) from None
    return onnxruntime


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


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shufflenet-cli"


def cache_dirs(weights_path: Path | None) -> list[Path]:
    """Where the .onnx may go, first choice first: next to a --weights file, else torch's checkpoints
    folder (next to torchvision's downloaded weights); then a user cache folder."""
    from shufflenet_cli.weights import cache_dir

    first = Path(weights_path).resolve().parent if weights_path is not None else cache_dir()
    return [first, _user_cache_dir()]


def cache_name(stem: str, weights_hash: str, key: str) -> str:
    digest = hashlib.sha256(f"{weights_hash}|{key}".encode()).hexdigest()[:16]
    return f"{stem}.{digest}.onnx"


def _stale_siblings(path: Path, stem: str) -> list[Path]:
    pattern = re.compile(re.escape(stem) + r"\.[0-9a-f]{16}\.onnx")
    try:
        return [p for p in path.parent.iterdir() if p != path and pattern.fullmatch(p.name)]
    except OSError:
        return []


@contextlib.contextmanager
def _one_torch_thread():  # type: ignore[no-untyped-def]
    """Export and check on one intra-op thread: a tiny batch gains nothing from more, and on a busy
    machine torch's threads waiting on each other made the check 100x slower (measured: 2.5 s)."""
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
    f.write(program.model_proto.SerializeToString())


def exporter_name() -> str:
    """`torchscript` (torch.onnx's legacy tracer: about 10x quicker to export, the same graph speed)
    where this torch still has it, else `dynamo` (needs onnxscript)."""
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
        raise ModelLoadError(
            f"cannot export the model to ONNX: {exc}",
            hint="pip install 'shufflenet-cli[onnx]' (it brings onnxscript), or use --backend torch",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any exporter failure is one clear message
        raise ModelLoadError(
            f"cannot export the model to ONNX ({exporter} exporter): {type(exc).__name__}: {exc}",
            hint="use --backend torch",
        ) from exc
    return buf.getvalue()


def check_batch(crop: int, mean: Any, std: Any) -> Any:
    """A fixed, normalised float batch (2 images of uniform random pixels) for the parity check;
    mean and std as (1, 3, 1, 1) tensors."""
    import torch

    from shufflenet_cli.backends.torch_backend import normalize

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


class OnnxBackend:
    """`topk(batch_uint8_nhwc, k)` through an ONNX Runtime session of the exported model.

    On CPU, `threads` is the number of single-threaded slices of the batch run at once, each in runs
    of `CPU_RUN_IMAGES`: for a network of many small layers that is faster than splitting every
    layer across threads (x1_0, 2 cores, forward only: 342-391 vs 256-287 images/s at batch 16-128),
    and a slice delayed by a decode thread costs one join per batch instead of one stall per layer.
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
    ) -> None:
        """onnx_file: open this checked export (see `find_checked_export`) instead of exporting
        `model` (then None): nothing here imports torch, so `threads` must be given."""
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
        self.exported = False  # True when this run exported (and checked) the model
        self.cache_path: Path | None = None
        self.parity: tuple[float, float] | None = None  # (difference, allowed) when this run checked
        if onnx_file is not None:
            self.exporter = ""
            self._session = self._new_session(ort, str(onnx_file))
            self.cache_path = Path(onnx_file)
        else:
            self.exporter = exporter or exporter_name()
            self._session = self._open(ort, model, crop, weights_path)

    @staticmethod
    def _providers(ort: Any, device: Any) -> list[str]:
        if device.type == "cpu":
            return ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]  # type: ignore[list-item]
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

    def _open(self, ort: Any, model: Any, crop: int, weights_path: Path | None) -> Any:
        stem = _stem(model, weights_path)
        name = cache_name(stem, state_dict_hash(model), exporter_key(self.exporter))
        for folder in cache_dirs(weights_path):
            path = folder / name
            if path.is_file():
                try:
                    session = self._new_session(ort, str(path))
                    self.cache_path = path
                    return session
                except Exception:  # noqa: BLE001 - a damaged cache file is exported again
                    _unlink(path)
        data = export_bytes(model, crop, self.exporter)
        self.exported = True
        session = self._new_session(ort, data)
        diff, largest = max_logit_difference(model, session, check_batch(crop, self._mean, self._std))
        self.parity = (diff, allowed_difference(largest))
        if not np.isfinite(largest):
            raise ModelLoadError(
                "the model's own outputs are not numbers (NaN or infinity) on a test image: "
                "the weights are probably damaged",
                hint="check or download the weights again",
            )
        if not diff < self.parity[1]:
            raise ModelLoadError(
                f"the ONNX export does not match torch: max abs logit difference {diff:.3g} "
                f"(allowed {self.parity[1]:.3g}); it is not used",
                hint="use --backend torch",
            )
        for folder in cache_dirs(weights_path):
            path = folder / name
            if _write_atomic(path, data):
                self.cache_path = path
                if weights_path is not None and folder == cache_dirs(weights_path)[0]:
                    for stale in _stale_siblings(path, stem):
                        _unlink(stale)
                break
        return session

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Normalise (numpy, the torch backend's arithmetic) and run one slice, on CPU
        `CPU_RUN_IMAGES` images at a time; releases the GIL."""
        from shufflenet_cli.backends.torch_backend import normalize_numpy

        step = CPU_RUN_IMAGES if self.device.type == "cpu" else max(1, len(batch))
        runs = [batch[i : i + step] for i in range(0, max(1, len(batch)), step)]  # an empty batch: one empty run
        parts = [self._session.run([OUTPUT], {INPUT: normalize_numpy(r, self._mean_np, self._std_np)})[0] for r in runs]
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

        from shufflenet_cli.backends.torch_backend import topk_to_numpy

        with torch.inference_mode():
            return topk_to_numpy(torch.from_numpy(logits), k)

    def describe(self) -> str:
        runs = f", {CPU_RUN_IMAGES} images per run" if self.device.type == "cpu" else ""
        if self.streams > 1 or self.threads == 1:
            return f"onnxruntime {self.device} {self.precision} ({self.streams} x 1-thread slices per batch{runs})"
        return f"onnxruntime {self.device} {self.precision} ({self.threads} threads per layer{runs})"


def topk_numpy(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`topk_to_numpy` in numpy (float32 softmax, largest first; ties: lower index first). The
    probabilities may differ from torch's softmax in the last float32 bits."""
    x = logits.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf logits: the record says so (pipeline.py)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True, dtype=np.float32)
    k = min(k, probs.shape[1])
    indices = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(probs, indices, axis=1), indices.astype(np.int64)


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
    if _write_atomic(path, (json.dumps(data, indent=1) + "\n").encode()):
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


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _write_atomic(path: Path, data: bytes) -> bool:
    """Write via a temporary file and rename; False where the folder is not writable."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError:
        _unlink(tmp)
        return False
