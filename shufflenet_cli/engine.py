"""A ready backend for a run: `ready(spec, opts, prep, device)` gives the backend, labels and tuning.

Either a checked ONNX export of torchvision's cached weights file, found by the file's sha256
without importing torch or torchvision (the torch-free path: on the CPU, fp32, no --weights and no
weights of your own installed), or the usual path: the model loaded with torch, its backend made
(exported and checked as needed), and a sidecar written so that the next run finds the export
without torch. Nothing here imports torch at module level (tests/test_torch_free.py checks that the
torch-free path never imports it).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from shufflenet_cli import device as devices
from shufflenet_cli import weights
from shufflenet_cli.backends import onnx_cache, onnx_runtime
from shufflenet_cli.backends.base import Backend
from shufflenet_cli.backends.factory import make_backend
from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.labels import labels_for
from shufflenet_cli.models import ModelSpec
from shufflenet_cli.options import PredictOptions
from shufflenet_cli.signals import reraise_interrupt
from shufflenet_cli.tuning import Tuning


class Ready(NamedTuple):
    backend: Backend
    labels: list[str]


def ready(spec: ModelSpec, opts: PredictOptions, prep: Preprocess, device: Any, tuning: Tuning) -> Ready:
    """The backend on `device` (as `device.resolve` gave it) with `tuning.threads`, and its labels:
    the torch-free path where it applies and finds a checked export, else the usual one.
    torchvision's cached weights file is hashed at most once per run. Your own default weights for
    the width (`download --from FILE --force`), where installed, run as --weights would."""
    if opts.weights is None and (own := weights.own_weights(spec)) is not None:
        opts = replace(opts, weights=own)
    source = _torch_free_source(spec, opts, device)
    if source is not None:
        fast = _torch_free_backend(spec, opts, prep, source, tuning)
        if fast is not None:
            return fast
    return _load(spec, opts, prep, devices.as_torch(device), tuning, source)


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
    return _Hashed(path, weights.sha256_file(path), stamp)


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


def _weights_file_without_torch(spec: ModelSpec) -> Path:
    if "torch" in sys.modules:  # a library caller may have moved the hub folder (torch.hub.set_dir)
        return weights.cache_path(spec)
    return weights.cached_file_without_torch(spec)


def _torch_free_source(spec: ModelSpec, opts: PredictOptions, device: Any) -> _Hashed | None:
    """torchvision's cached weights file, hashed without importing torch, where the torch-free path
    applies (onnxruntime installed, the options it serves, the CPU); None otherwise."""
    if not _onnx_candidate(opts) or device.type != "cpu" or not onnx_runtime.available():
        return None
    try:
        return _hash(_weights_file_without_torch(spec))
    except OSError:
        return None


def _torch_free_backend(
    spec: ModelSpec, opts: PredictOptions, prep: Preprocess, source: _Hashed, tuning: Tuning
) -> Ready | None:
    """The backend of a checked ONNX export of torchvision's cached weights file, found by the file's
    sha256, without importing torch or torchvision; None where there is none (then the usual path
    runs: it loads the model, exports and checks as needed)."""
    folders = [source.path.parent, onnx_cache.user_cache_dir()]
    found = onnx_cache.find_checked_export(spec.arch, source.sha256, folders)
    if found is None:
        return None
    labels = labels_for(opts.labels, found.num_classes)
    try:
        backend = onnx_runtime.OnnxBackend(
            None,
            devices.CPU,
            prep.mean,
            prep.std,
            prep.crop,
            threads=tuning.threads,
            onnx_file=found.path,
            onnx_sha256=found.sha256,
        )
    except Exception as exc:  # noqa: BLE001 - a damaged or changed file: the usual path exports it again
        reraise_interrupt(exc)  # Ctrl-C in onnxruntime's import is not a damaged file
        return None
    return Ready(backend, labels)


# ------------------------------------------------------------------------------ the usual path


def _load(
    spec: ModelSpec, opts: PredictOptions, prep: Preprocess, device: Any, tuning: Tuning, known: _Hashed | None
) -> Ready:
    """The model loaded with torch on `device` (a torch.device) and its backend made. torchvision's
    cached weights file is hashed only where onnxruntime may run it on the CPU; `known` (the
    torch-free lookup's hash) is reused where it is the same file, unchanged since."""
    import torch

    if opts.gpu_decode:  # before the model loads: a wrong device fails at once
        from shufflenet_cli.decode.gpu import check_available

        check_available(device)
    source = None
    if _onnx_candidate(opts) and device.type == "cpu":  # hashed before loading: the sidecar names its source
        source = _hash(weights.download(spec, progress=False), known)
    model = weights.load_model(spec, opts.weights)
    labels = labels_for(opts.labels, int(model.fc.out_features))
    # CPU: the inference threads. CUDA: torch's CPU threads in this process (the batch's host-side
    # copies), which would otherwise be one per core and contend with the decode workers for them.
    torch.set_num_threads(tuning.threads)
    backend = make_backend(
        opts.backend,
        model,
        device,
        prep,
        opts.precision,
        threads=tuning.threads,
        weights_path=opts.weights,
        cuda_graphs=opts.cuda_graphs,
    )
    _record_checked_export(spec, backend, source, model)
    return Ready(backend, labels)


def _record_checked_export(spec: ModelSpec, backend: Any, source: _Hashed | None, model: Any) -> None:
    """After the usual path opened or exported (and checked) an ONNX file for torchvision's cached
    weights, write the sidecar that lets the next run find it without torch. Not where the weights
    file's stamp changed since it was hashed (replaced while it was loading): the export may then
    be of other weights than the sha256 says."""
    if (
        source is None
        or not isinstance(backend, onnx_runtime.OnnxBackend)
        or backend.cache_path is None
        or backend.onnx_sha256 is None
    ):
        return
    try:
        if _stamp(source.path) != source.stamp:  # replaced while it was loading
            return
    except OSError:
        return
    onnx_cache.write_sidecar(
        backend.cache_path, spec.arch, source.sha256, int(model.fc.out_features), backend.onnx_sha256
    )
