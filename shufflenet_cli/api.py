"""The Python API: `Classifier`, a model loaded once that classifies files, URLs and in-memory images
in batches, and `classify`, which yields what `shufflenet predict PATHS` prints, as records.

One code path: the CLI's runner makes a `Classifier` for its run and drives `_batches` (the batched
loop of pipeline.py, decoding read ahead in workers); `Classifier.classify` and the Ray engine's actors
hand batches they decoded to `_classify_decoded`, the same batch step (pipeline.classify_chunk).
The public names are those `shufflenet_cli/__init__.py` exports; everything else is private
(docs/api.md).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
from PIL import Image

from shufflenet_cli import device as devices
from shufflenet_cli import pipeline, weights
from shufflenet_cli.backends.base import Backend
from shufflenet_cli.decode import near_ties
from shufflenet_cli.decode.decoded import Decoded, decode_one
from shufflenet_cli.decode.fetch import MB, Remote, fetch_workers
from shufflenet_cli.decode.gpu import JpegBatchDecoder, JpegReader
from shufflenet_cli.decode.memory import crop_in_memory
from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.decode.workers import Prepare
from shufflenet_cli.engine import ready
from shufflenet_cli.errors import UsageError
from shufflenet_cli.image_formats import image_extensions, parse_extensions
from shufflenet_cli.inputs.paths import Input, WalkOptions, iter_inputs
from shufflenet_cli.models import ModelSpec
from shufflenet_cli.options import PredictOptions, validate
from shufflenet_cli.outcome import Stats
from shufflenet_cli.records import Record
from shufflenet_cli.tuning import default_tuning
from shufflenet_cli.urls import is_remote_url

# What `Classifier.classify` takes: an image file's path or URL, a PIL image, an H x W or H x W x 3/4
# NumPy array (docs/api.md says which dtypes), or an image file's bytes.
ImageLike = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, bytes, bytearray, memoryview]
PathLike = Union[str, "os.PathLike[str]"]
# The one image a bare argument is, rather than a collection of them (an array is iterable by rows)
_ONE = (str, bytes, bytearray, memoryview, os.PathLike, Image.Image, np.ndarray)


class Classifier:
    """ShuffleNet v2 with its weights and their preprocessing, loaded once.

    model: x0_5, x1_0, x1_5 or x2_0 (None: the width of `weights`, else x1_0).
    weights: a .pth file of your own (None: torchvision's ImageNet weights, from the cache).
    device: auto, cpu, cuda or cuda:N. The other options are `shufflenet predict`'s (docs/options.md).
    Raises ShufflenetError (UsageError, ModelLoadError) where the options or the weights are wrong.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        weights: PathLike | None = None,
        device: str = "auto",
        labels: PathLike | None = None,
        backend: str = "auto",
        precision: str = "fp32",
        batch_size: int | None = None,
        workers: int | None = None,
        threads: int | None = None,
        decode: str = "checked",
        timeout: float = 30.0,
        max_download: float = 100.0,
    ) -> None:
        opts = PredictOptions(
            paths=[],
            model=model,
            weights=_path(weights),
            labels=_path(labels),
            device=device,
            backend=backend,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            decode=decode,
            timeout=timeout,
            max_download=max_download,
        )
        validate(opts)
        self._load(opts, _spec(opts))

    @classmethod
    def _for_run(cls, opts: PredictOptions, spec: ModelSpec, thumbnail_size: int | None = None) -> Classifier:
        """The runner's way in: options already validated, and report thumbnails where asked for."""
        self = cls.__new__(cls)
        self._load(opts, spec, thumbnail_size)
        return self

    def _load(self, opts: PredictOptions, spec: ModelSpec, thumbnail_size: int | None = None) -> None:
        prep = preprocess_for(opts, spec, thumbnail_size)
        device = devices.resolve(opts.device)  # once: the backend has it, the GPU decoder takes it from there
        tuning = default_tuning(device.type, opts)
        if opts.workers is None:  # URLs: more fetches in flight than cores (decode/fetch.py)
            tuning.workers = fetch_workers(tuning.workers, opts.paths, tuning.processes)
        run = ready(spec, opts, prep, device, tuning)
        self._spec, self._prep, self._tuning = spec, prep, tuning
        self._backend: Backend = run.backend
        self._labels = run.labels
        self._decoders = make_decoders(opts, prep, run.backend)

    # ------------------------------------------------------------------------------- public

    @property
    def model(self) -> str:
        """The width, as `--model` names it (x0_5, x1_0, x1_5, x2_0)."""
        return self._spec.key

    @property
    def labels(self) -> list[str]:
        """The class names, in the model's output order."""
        return list(self._labels)

    @property
    def device(self) -> str:
        return str(self._backend.device)

    @property
    def batch_size(self) -> int:
        return self._tuning.batch_size

    def describe(self) -> str:
        """The backend in words, as `--timings` prints it."""
        gpu = "; JPEG decode: nvJPEG on the GPU" if self._decoders.gpu is not None else ""
        return self._backend.describe() + gpu

    def classify(
        self, images: ImageLike | Iterable[ImageLike], *, topk: int = 5, threshold: float = 0.0
    ) -> Iterator[Record]:
        """One record per image, in order, `batch_size` images at a time: an image that cannot be
        read or decoded is an error record in its place, never an exception. A path or URL (of one
        file: `classify()` walks folders) keeps its name as the record's `path`; an in-memory image is
        named `<image N>`, N its position. A single image (not in a list) gives one record.
        The images are read as the records are taken: a PIL image must stay open until then."""
        _check(topk, threshold)
        if isinstance(images, _ONE) or _is_array(images) or not isinstance(images, Iterable):
            images = [images]  # type: ignore[list-item]
        return self._classify(iter(images), topk, threshold)

    # ------------------------------------------------------------------ for the runner and Ray

    def _classify(self, images: Iterator[Any], topk: int, threshold: float) -> Iterator[Record]:
        """Each batch decoded on the workers' threads, then classified. A PIL image is converted on
        this thread: one open image given twice must not be loaded by two threads at once."""
        position = itertools.count()
        with ThreadPoolExecutor(max(self._tuning.workers, 1), thread_name_prefix="classify") as pool:
            while chunk := list(itertools.islice(images, self._tuning.batch_size)):
                work = [(next(position), image) for image in chunk]
                pil = [self._decode(*pair) if isinstance(pair[1], Image.Image) else None for pair in work]
                rest = pool.map(
                    lambda pair: self._decode(*pair), [p for p, d in zip(work, pil, strict=True) if d is None]
                )
                decoded = [d if d is not None else next(rest) for d in pil]
                yield from self._classify_decoded(decoded, topk=topk, threshold=threshold)

    def _decode(self, position: int, image: Any) -> Decoded:
        """One image as the batch loop's workers hand it on: its crop, or its error."""
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            if is_remote_url(path) or (os.path.lexists(path) and not os.path.isdir(path)):
                return decode_one(self._decoders.prepare, Input(path))
            return Decoded(Input(path), error=_not_a_file(path))
        return crop_in_memory(self._prep, Input(f"<image {position}>"), image)

    def _classify_decoded(self, decoded: list[Decoded], *, topk: int = 5, threshold: float = 0.0) -> list[Record]:
        """Decoded inputs through the model at once: their records, in order; drafted near-ties
        decoded again exactly first (near_ties.py), as the batch loop does."""
        recheck = self._decoders.recheck
        rechecks = near_ties.Rechecks(recheck, 1) if recheck is not None and any(d.drafted for d in decoded) else None
        try:
            return pipeline.classify_chunk(
                decoded, self._backend, self._labels, self._topk(topk), threshold, Stats(), rechecks
            )
        finally:
            if rechecks is not None:
                rechecks.close()

    def _batches(
        self,
        inputs: Iterable[Input],
        *,
        topk: int,
        threshold: float,
        stats: Stats,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[list[Record]]:
        """The batch loop over `inputs` (read ahead by the decode workers): each batch's records, in order."""
        return pipeline.run(
            inputs,
            self._decoders.prepare,
            self._backend,
            self._labels,
            batch_size=self._tuning.batch_size,
            workers=self._tuning.workers,
            processes=self._tuning.processes,
            topk=self._topk(topk),
            threshold=threshold,
            stats=stats,
            should_stop=should_stop,
            gpu=self._decoders.gpu,
            recheck=self._decoders.recheck,
        )

    def _topk(self, topk: int) -> int:
        return min(max(topk, 1), len(self._labels))


def classify(
    paths: PathLike | Iterable[PathLike],
    model: str | None = None,
    *,
    topk: int = 5,
    threshold: float = 0.0,
    recursive: bool = True,
    hidden: bool = False,
    ext: str | None = None,
    **options: Any,
) -> Iterator[Record]:
    """The records `shufflenet predict PATHS` would print, in input order: folders walked in sorted
    order, globs expanded, URLs and s3:// read, unreadable inputs as error records in their place.
    `options` are Classifier's (weights, device, labels, backend, precision, batch_size, workers,
    threads, decode, timeout, max_download). The model loads before this returns (bad options raise
    here); the inputs are read as the records are taken."""
    given = _paths(paths)
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"classify() got unexpected keyword argument(s): {', '.join(unknown)}")
    for key in ("weights", "labels"):
        options[key] = _path(options.get(key))
    opts = PredictOptions(
        paths=given, model=model, topk=topk, threshold=threshold, recursive=recursive, hidden=hidden, ext=ext, **options
    )
    validate(opts)
    classifier = Classifier._for_run(opts, _spec(opts))
    walk = WalkOptions(recursive, hidden, parse_extensions(ext) if ext else image_extensions())
    batches = classifier._batches(iter_inputs(given, walk), topk=topk, threshold=threshold, stats=Stats())
    return (record for batch in batches for record in batch)


# -------------------------------------------------------------------------------- decoders


class Decoders(NamedTuple):
    """What the decode workers run per file; the batch half (--gpu-decode's nvJPEG) or None; the
    exact decode that drafted near-ties are redone with, or None where nothing is checked."""

    prepare: Prepare
    gpu: JpegBatchDecoder | None
    recheck: Prepare | None


def make_decoders(opts: PredictOptions, prep: Preprocess, backend: Backend) -> Decoders:
    """`prep` itself, or for --gpu-decode a JpegReader and its JpegBatchDecoder on the backend's
    device (the one `device.resolve` gave, checked by `engine.ready`)."""
    if not opts.gpu_decode:
        return Decoders(prep, None, prep.exact() if prep.decode == "checked" else None)
    if prep.decode == "checked":  # the JPEGs that nvJPEG leaves to Pillow: exact, as nvJPEG's are
        prep = prep.exact(thumbnail=True)
    return Decoders(JpegReader(prep), JpegBatchDecoder(prep, backend.device), None)


def preprocess_for(opts: PredictOptions, spec: ModelSpec, thumbnail_size: int | None = None) -> Preprocess:
    """The weights' own preprocessing, with the run's decode mode and its remote reads' limits."""
    prep = Preprocess.from_spec(spec, decode=opts.decode, thumbnail_size=thumbnail_size)
    return dataclasses.replace(prep, remote=Remote(opts.timeout, int(opts.max_download * MB)))


# classify()'s keyword options: Classifier's own (the first of its parameters is the model)
_OPTIONS = tuple(inspect.signature(Classifier.__init__).parameters)[2:]


def _paths(paths: PathLike | Iterable[PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    if isinstance(paths, _ONE) or not isinstance(paths, Iterable):
        raise TypeError(f"classify() takes paths, not a {type(paths).__name__}; Classifier.classify takes images")
    given = list(paths)
    wrong = [p for p in given if not isinstance(p, (str, os.PathLike))]
    if wrong:
        raise TypeError(f"classify() takes paths, not a {type(wrong[0]).__name__}; Classifier.classify takes images")
    return [os.fspath(p) for p in given]


def _check(topk: int, threshold: float) -> None:
    """Classifier.classify's own arguments, checked before any image is read."""
    if isinstance(topk, bool) or not isinstance(topk, int):
        raise TypeError(f"topk must be an int, not {type(topk).__name__}")
    if topk < 1:
        raise UsageError(f"topk must be at least 1, not {topk}")
    if not 0.0 <= threshold <= 1.0:  # NaN too
        raise UsageError(f"threshold must be between 0 and 1, not {threshold}")


def _not_a_file(path: str) -> str:
    if os.path.isdir(path):
        return "a folder: Classifier.classify takes image files; classify() walks folders"
    return "no such file or directory"


def _spec(opts: PredictOptions) -> ModelSpec:
    """No model named: the width of the weights file, else the default."""
    return weights.spec_for(opts.model, opts.weights)


def _path(value: PathLike | None) -> Path | None:
    return None if value is None else Path(value)


def _is_array(value: object) -> bool:
    """An array of any library (a tensor too) is iterable by rows, but is one image."""
    return hasattr(value, "__array_interface__") or hasattr(value, "__array__")


__all__ = ["Classifier", "ImageLike", "classify"]
