"""The batched loop: inputs -> decoded crops (workers) -> batches -> records, in input order.

Decoding runs ahead of inference in worker threads or processes (decoding.py), with a bounded window
so memory does not grow with the number of files. Each input gets exactly one record at its own
position: a file that fails is an error record, never skipped. When stdin stalls (inputs.STALL), the
inputs decoded so far are finished as a short batch at once, as the last batch of a run is.
With `recheck` (the default decode), a JPEG decoded at a reduced DCT scale whose top two classes come
out close is decoded again exactly on threads of its own and classified again before its batch's
records leave (near_ties.py); meanwhile up to MAX_HELD later batches are classified, their records
held back behind it.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from shufflenet_cli.backends.base import Backend
from shufflenet_cli.decode import near_ties
from shufflenet_cli.decode.gpu import JpegBatchDecoder
from shufflenet_cli.decode.workers import Decoded, Prepare, decode_in_order
from shufflenet_cli.inputs.paths import STALL, Input
from shufflenet_cli.outcome import Stats
from shufflenet_cli.records import Record, make_record

# What a record says where the model's scores for an image are NaN or infinite (damaged weights)
NOT_FINITE = "the model's output for this image is not a number (NaN or infinity): the weights are probably damaged"


def run(
    inputs: Iterable[Input],
    prep: Prepare,
    backend: Backend,
    labels: list[str],
    *,
    batch_size: int = 32,
    workers: int = 2,
    processes: bool = False,
    topk: int = 5,
    threshold: float = 0.0,
    stats: Stats | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    gpu: JpegBatchDecoder | None = None,
    recheck: Prepare | None = None,
) -> Iterator[list[Record]]:
    """Yield the records of each chunk of `batch_size` inputs (failed ones in their place), in input order.

    A chunk closes after `batch_size` inputs, failed ones included, so records stream and memory stays
    flat even through a long run of unreadable files; and early at a STALL, so none waits on inputs.
    processes: decode in worker processes instead of threads (decoding.py says when that pays).
    gpu: a gpu_decode.JpegBatchDecoder (--gpu-decode), which decodes each chunk's JPEGs at once.
    recheck: the exact decode that drafted near-ties are redone with (near_ties.py); None: no check.
    """
    stats = stats if stats is not None else Stats()
    rechecks = near_ties.Rechecks(recheck, workers) if recheck is not None else None
    if rechecks is not None:
        stats.rechecked = 0
    batches = _InFlight(
        backend, labels, topk, threshold, stats, gpu.stack if gpu is not None else Stacker(), gpu, rechecks
    )
    decoded_in_order = decode_in_order(inputs, prep, workers, max(batch_size * 2, workers * 4), processes)
    try:
        try:
            while (decoded := _next(decoded_in_order, stats)) is not None:
                if should_stop():  # the classified batches go out whole; the chunk being filled does not
                    yield from batches.ready(everything=True)
                    return
                if decoded.input is STALL:
                    batches.classify()
                    yield from batches.ready(everything=True)
                    continue
                batches.add(decoded, batch_size)
                yield from batches.ready(
                    everything=False
                )  # at every input: records leave once their near-ties are done
            if not should_stop():
                batches.classify()
            yield from batches.ready(everything=True)
            stats.end()  # before the workers stop
        finally:
            # Closed here, not when garbage-collected: an exception while its workers stop (a second
            # Ctrl-C) then reaches the caller instead of printing "Exception ignored" and a traceback.
            decoded_in_order.close()
    finally:
        if rechecks is not None:
            rechecks.close()


def classify_chunk(
    chunk: list[Decoded],
    backend: Backend,
    labels: list[str],
    topk: int,
    threshold: float,
    stats: Stats,
    rechecks: near_ties.Rechecks | None = None,
) -> list[Record]:
    """Inputs decoded elsewhere (the Python API's in-memory images, a Ray engine actor's batch) through
    the model at once, as `run` does with each of its chunks: their records, in order."""
    batch = _classify(chunk, backend, max(topk, 1), stats, Stacker(), None, rechecks)
    return _finish(batch, backend, labels, max(topk, 1), threshold, stats)


def _next(decoded_in_order: Iterator[Decoded], stats: Stats) -> Decoded | None:
    """The next decoded input, the wait for it counted (a stall is a wait for inputs, not for the workers)."""
    t0 = time.perf_counter()
    decoded = next(decoded_in_order, None)
    if decoded is None or decoded.input is not STALL:
        stats.wait_s += time.perf_counter() - t0
    return decoded


class _InFlight:
    """The chunk being filled, and the classified batches whose records have not left yet."""

    def __init__(
        self,
        backend: Backend,
        labels: list[str],
        topk: int,
        threshold: float,
        stats: Stats,
        stack: Callable[[list[Any]], Any],
        gpu: JpegBatchDecoder | None,
        rechecks: near_ties.Rechecks | None,
    ) -> None:
        self.backend, self.labels, self.topk, self.threshold = backend, labels, topk, threshold
        self.stats, self.stack, self.gpu, self.rechecks = stats, stack, gpu, rechecks
        self.chunk: list[Decoded] = []
        self.held: deque[_Batch] = deque()  # classified, in order; the oldest may wait for its near-ties

    def add(self, decoded: Decoded, batch_size: int) -> None:
        self.chunk.append(decoded)
        self.stats.decode_s += decoded.decode_s
        self.stats.preprocess_s += decoded.preprocess_s
        self.stats.fetch_s += decoded.fetch_s
        self.stats.fetched += decoded.fetched
        if len(self.chunk) >= batch_size:
            self.classify()

    def classify(self) -> None:
        """The chunk so far through the model (nothing where it is empty)."""
        if self.chunk:
            self.held.append(
                _classify(self.chunk, self.backend, self.topk, self.stats, self.stack, self.gpu, self.rechecks)
            )
            self.chunk = []

    def ready(self, everything: bool) -> Iterator[list[Record]]:
        while self.held and (everything or self.held[0].ready() or len(self.held) > MAX_HELD):
            yield _finish(self.held.popleft(), self.backend, self.labels, self.topk, self.threshold, self.stats)


# Batches whose records may wait for their near-ties' second decodes while later ones are classified;
# one more and the main loop waits for the oldest.
MAX_HELD = 2


@dataclass
class _Batch:
    """A classified chunk, its records not yet made: they may wait for its near-ties' second decodes."""

    chunk: list[Decoded]
    probs: np.ndarray  # own copies (a backend may reuse its buffers), top max(topk, 2) where checked
    indices: np.ndarray
    rows: list[int] = field(default_factory=list)  # rows of probs decoded again, in `pending`
    pending: list[Future[tuple[np.ndarray | None, float]]] = field(default_factory=list)

    def ready(self) -> bool:
        return all(f.done() for f in self.pending)

    @property
    def forward(self) -> bool:
        """The chunk went through the model (not failed inputs only)."""
        return len(self.probs) > 0


def _classify(
    chunk: list[Decoded],
    backend: Backend,
    topk: int,
    stats: Stats,
    stack: Callable[[list[Any]], Any],
    gpu: JpegBatchDecoder | None = None,
    rechecks: near_ties.Rechecks | None = None,
) -> _Batch:
    """The chunk through the model; its drafted near-ties handed to `rechecks` (near_ties.Rechecks)."""
    if gpu is not None:
        t0 = time.perf_counter()
        gpu.decode_chunk(chunk)
        stats.decode_s += time.perf_counter() - t0
    classified = [d for d in chunk if d.array is not None]
    if not classified:
        return _Batch(chunk, np.empty((0, 0)), np.empty((0, 0), np.int64))
    t0 = time.perf_counter()
    k = max(topk, 2) if rechecks is not None else topk  # the check compares the top two
    probs, indices = backend.topk(stack([d.array for d in classified]), k)
    stats.inference_s += time.perf_counter() - t0
    stats.batches += 1
    batch = _Batch(chunk, np.array(probs), np.array(indices))
    drafted = [d.drafted for d in classified]
    stats.drafted += sum(drafted)
    if rechecks is not None and any(drafted):
        batch.rows = near_ties.close_calls(batch.probs, drafted)
        batch.pending = rechecks.submit([classified[r].input.path for r in batch.rows])
    return batch


def _finish(
    batch: _Batch, backend: Backend, labels: list[str], topk: int, threshold: float, stats: Stats
) -> list[Record]:
    """The batch's records, its near-ties (if any) classified again from their exact decodes, as a
    one-off batch that takes no CUDA graph slot (cuda_graphs.py). Counted in `stats` here, as they leave."""
    if batch.rows:
        done = [f.result() for f in batch.pending]
        t0 = time.perf_counter()
        once = functools.partial(backend.topk, one_off=True)
        redone = near_ties.apply(batch.rows, [array for array, _ in done], once, batch.probs, batch.indices)
        stats.rechecked = (stats.rechecked or 0) + redone
        stats.recheck_s += time.perf_counter() - t0 + sum(seconds for _, seconds in done)
    records = _records(batch.chunk, batch.probs, batch.indices, labels, topk, threshold, stats)
    if batch.forward and stats.first_batch is None:  # the first forward pass's records are out
        stats.first_batch = (stats.elapsed, stats.done)
    return records


def _records(
    chunk: list[Decoded], probs: Any, indices: Any, labels: list[str], topk: int, threshold: float, stats: Stats
) -> list[Record]:
    finite = np.isfinite(probs).all(axis=1).tolist() if len(probs) else []  # NaN/inf scores: damaged weights
    probs, indices = probs[:, :topk].tolist(), indices[:, :topk].tolist()  # Python numbers, once per batch
    records: list[Record] = []
    row = 0
    for d in chunk:
        if d.array is None:
            records.append(Record(path=d.input.path, error=d.error, thumbnail=d.thumbnail))
            stats.failed += 1
        elif not finite[row]:
            records.append(Record(path=d.input.path, error=NOT_FINITE, thumbnail=d.thumbnail))
            row += 1
            stats.failed += 1
        else:
            records.append(make_record(d.input.path, probs[row], indices[row], labels, threshold, d.thumbnail))
            row += 1
            stats.classified += 1
    return records


class Stacker:
    """`np.stack` into one buffer kept from batch to batch: no fresh array (19 MB at batch 128), and
    no page faults on it, per batch. Safe because a backend is done with a batch when `topk` returns."""

    def __init__(self) -> None:
        self.buffer: np.ndarray | None = None

    def __call__(self, arrays: list[np.ndarray]) -> np.ndarray:
        first = arrays[0]
        b = self.buffer
        if b is None or b.shape[1:] != first.shape or b.dtype != first.dtype or len(b) < len(arrays):
            self.buffer = b = np.empty((len(arrays), *first.shape), first.dtype)
        return np.stack(arrays, out=b[: len(arrays)])
