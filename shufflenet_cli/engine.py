"""A ready backend for a run: `ready(spec, opts, prep)` gives (backend, labels, tuning).

Either a checked ONNX export of torchvision's cached weights file, found by the file's sha256
without importing torch or torchvision, or the usual path: the model loaded with torch, its backend
made (exported and checked as needed), and a sidecar written so that the next run finds the export
without torch. Nothing here imports torch at module level (tests/test_torch_free.py checks that the
torch-free path never imports it).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shufflenet_cli.errors import ModelLoadError
from shufflenet_cli.models import ModelSpec

if TYPE_CHECKING:
    from shufflenet_cli.backends.torch_backend import Backend
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.runner import PredictOptions


@dataclass
class Tuning:
    batch_size: int
    workers: int
    threads: int
    processes: bool = False  # decode workers are processes, not threads


def default_tuning(device_type: str, opts: PredictOptions) -> Tuning:
    """Defaults chosen by measurement (docs/benchmarks.md); every one can be overridden.

    CPU: one decode worker and one inference thread per core. Inference cuts each batch into
    `threads` slices run at once on one intra-op thread each (onnxruntime and torch alike), so the
    decode threads and the inference threads share the cores a batch at a time, never spinning or
    waiting on each other inside a layer; decode workers stop when the read-ahead window is full.
    On 2 cores, x1_0: 2 inference threads (as slices) beat 1, 214 vs 163 images/s; batch 32 (16 per
    slice): with onnxruntime's runs of 4 images, 32, 64 and 128 tie (233-244 images/s) and 16 is
    slower (212), so 32, whose first records come soonest of those; 1 to 3 workers tie on
    ImageNet-size JPEGs, and 12-megapixel ones need every core to decode (their decode costs 5x the
    forward pass).
    CUDA (one H200, 16 cores, x1_0, 4,000 ImageNet-size JPEGs): batch 128; 16 decode workers as
    processes, 758-906 images/s against 736 for 16 threads (529 in an earlier run); with threads,
    8 workers beat 16 and 24 (616, 529, 512); batch 64, 128 and 256 tied (608, 529, 607). One torch
    thread in the main process (its host-side work is copying batches): 1,330 images/s against 1,051
    and 1,307 with 4 and 1,217 with 16 (8,000 JPEGs, benchmarks/profile_cuda.py): within the spread,
    so the cheapest, which leaves the cores to the decode workers.
    """
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    cores = max(1, cores)
    if device_type == "cuda":  # many cores feeding a fast device: threads stop scaling (decoding.py)
        batch, workers, threads, processes = 128, min(16, cores), 1, True
    else:
        threads = min(cores, 16)
        workers = min(cores, 16)
        batch = min(256, max(32, 16 * threads))
        processes = False
    return Tuning(
        batch_size=opts.batch_size or batch,
        workers=workers if opts.workers is None else opts.workers,
        threads=opts.threads or threads,
        processes=processes if opts.decode_in == "auto" else opts.decode_in == "processes",
    )


def load_labels(spec: ModelSpec, labels_path: Path | None, num_classes: int) -> list[str]:
    from shufflenet_cli.labels import imagenet_labels, read_labels

    labels = read_labels(labels_path) if labels_path else imagenet_labels()
    if len(labels) != num_classes:
        source = str(labels_path) if labels_path else "the ImageNet labels"
        raise ModelLoadError(
            f"the weights have {num_classes} classes but {source} has {len(labels)} names",
            hint="pass --labels FILE with one class name per line, one per class",
        )
    return labels


def ready(spec: ModelSpec, opts: PredictOptions, prep: Preprocess) -> tuple[Backend, list[str], Tuning]:
    """(backend, labels, tuning) for a run: the torch-free path where it applies and finds a checked
    export, else the usual one. torchvision's cached weights file is hashed at most once per run."""
    source = _torch_free_source(spec, opts)
    if source is not None:
        fast = _torch_free_backend(spec, opts, prep, source)
        if fast is not None:
            return fast
    model, device, labels, source = _load(spec, opts, source)
    tuning = default_tuning(device.type, opts)
    backend = _backend(model, device, prep, opts, tuning)
    _record_checked_export(spec, backend, source, model)
    return backend, labels, tuning


# ------------------------------------------------------------------ the weights file's identity


@dataclass(frozen=True)
class _Hashed:
    """torchvision's cached weights file as it was hashed: its path, its sha256, and its stat stamp
    taken just before hashing. An unchanged stamp later means the same file, not hashed again."""

    path: Path
    sha256: str
    stamp: tuple[int, ...]


def _stamp(path: Path) -> tuple[int, ...]:
    """Changes when the file is replaced (a new inode: download and install rename into place) or
    written in place (size, mtime, ctime). OSError where the file is not there."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _hash(path: Path, known: _Hashed | None = None) -> _Hashed:
    """The file's `_Hashed`; `known` again, unhashed, where it is this path with the same stamp."""
    stamp = _stamp(path)
    if known is not None and known.path == path and known.stamp == stamp:
        return known
    from shufflenet_cli.weights import sha256_file

    return _Hashed(path, sha256_file(path), stamp)


# ------------------------------------------------------------------------ the torch-free path


def _onnx_candidate(opts: PredictOptions) -> bool:
    """Options under which onnxruntime may run torchvision's cached weights file: those the
    torch-free path serves (fp32, no --weights; auto or onnxruntime)."""
    return (
        opts.weights is None
        and opts.precision == "fp32"
        and opts.backend in ("auto", "onnxruntime")
        and not opts.gpu_decode
    )


def gpu_may_be_visible() -> bool:
    """Whether a GPU that torch could use as `cuda` may be here, decided without importing torch:
    False only when CUDA_VISIBLE_DEVICES hides every device ("" or "-1"), or when there is no NVIDIA
    device node (/dev/nvidia0...), no NVIDIA driver (/proc/driver/nvidia), no ROCm (/dev/kfd) and no
    WSL GPU (/dev/dxg). Errs towards True: then torch decides, as it always did."""
    import glob

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


def _weights_file_without_torch(spec: ModelSpec) -> Path:
    if "torch" in sys.modules:  # a library caller may have moved the hub folder (torch.hub.set_dir)
        from shufflenet_cli.weights import cache_path

        return cache_path(spec)
    from shufflenet_cli.weights import cached_file_without_torch

    return cached_file_without_torch(spec)


def _torch_free_source(spec: ModelSpec, opts: PredictOptions) -> _Hashed | None:
    """torchvision's cached weights file, hashed without importing torch, where the torch-free path
    applies (onnxruntime installed, the options and device it serves); None otherwise."""
    if not _onnx_candidate(opts) or not _cpu_without_torch(opts.device):
        return None
    from shufflenet_cli.backends import onnx_runtime as onnx_backend

    if not onnx_backend.available():
        return None
    try:
        return _hash(_weights_file_without_torch(spec))
    except OSError:
        return None


def _torch_free_backend(
    spec: ModelSpec, opts: PredictOptions, prep: Preprocess, source: _Hashed
) -> tuple[Backend, list[str], Tuning] | None:
    """(backend, labels, tuning) from a checked ONNX export of torchvision's cached weights file,
    found by the file's sha256, without importing torch or torchvision; None where there is none
    (then the usual path runs: it loads the model, exports and checks as needed)."""
    from shufflenet_cli.backends import onnx_runtime as onnx_backend

    folders = [source.path.parent, onnx_backend._user_cache_dir()]
    found = onnx_backend.find_checked_export(spec.arch, source.sha256, folders)
    if found is None:
        return None
    onnx_file, num_classes = found
    labels = load_labels(spec, opts.labels, num_classes)
    tuning = default_tuning("cpu", opts)
    try:
        backend = onnx_backend.OnnxBackend(
            None, onnx_backend.CpuDevice(), prep.mean, prep.std, prep.crop, threads=tuning.threads, onnx_file=onnx_file
        )
    except Exception:  # noqa: BLE001 - a damaged file: the usual path exports it again
        return None
    return backend, labels, tuning


# ------------------------------------------------------------------------------ the usual path


def _load(spec: ModelSpec, opts: PredictOptions, known: _Hashed | None):  # type: ignore[no-untyped-def]
    """(model, device, labels, torchvision's cached weights file as hashed, or None). The file is
    hashed only where onnxruntime may run it on the CPU; `known` (the torch-free lookup's hash) is
    reused where it is the same file, unchanged since."""
    from shufflenet_cli.weights import download, load_model, resolve_device

    device = resolve_device(opts.device)
    if opts.gpu_decode:  # before the model loads: a wrong device fails at once
        from shufflenet_cli.decode.gpu import check_available

        check_available(device)
    source = None
    if _onnx_candidate(opts) and device.type == "cpu":  # hashed before loading: the sidecar names its source
        source = _hash(download(spec, progress=False), known)
    model = load_model(spec, opts.weights)
    labels = load_labels(spec, opts.labels, int(model.fc.out_features))
    return model, device, labels, source


def _backend(model, device, prep, opts: PredictOptions, tuning: Tuning):  # type: ignore[no-untyped-def]
    import torch

    from shufflenet_cli.backends.torch_backend import make_backend

    # CPU: the inference threads. CUDA: torch's CPU threads in this process (the batch's host-side
    # copies), which would otherwise be one per core and contend with the decode workers for them.
    torch.set_num_threads(tuning.threads)
    return make_backend(
        opts.backend,
        model,
        device,
        prep,
        opts.precision,
        threads=tuning.threads,
        weights_path=opts.weights,
        cuda_graphs=opts.cuda_graphs,
    )


def _record_checked_export(spec: ModelSpec, backend: Any, source: _Hashed | None, model: Any) -> None:
    """After the usual path opened or exported (and checked) an ONNX file for torchvision's cached
    weights, write the sidecar that lets the next run find it without torch. Not where the weights
    file's stamp changed since it was hashed (replaced while it was loading): the export may then
    be of other weights than the sha256 says."""
    from shufflenet_cli.backends.onnx_runtime import OnnxBackend, write_sidecar

    if source is None or not isinstance(backend, OnnxBackend) or backend.cache_path is None:
        return
    try:
        if _stamp(source.path) != source.stamp:  # replaced while it was loading
            return
    except OSError:
        return
    write_sidecar(backend.cache_path, spec.arch, source.sha256, int(model.fc.out_features))
