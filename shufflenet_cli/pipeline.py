"""The batched loop: inputs -> decoded crops (workers) -> batches -> records, in input order.

Decoding runs ahead of inference in worker threads or processes (decoding.py), with a bounded window
so memory does not grow with the number of files. Each input gets exactly one record at its own
position: a file that fails is an error record, never skipped. When stdin stalls (inputs.STALL), the
inputs decoded so far are finished as a short batch at once, as the last batch of a run is.
With `recheck` (the default decode), a JPEG decoded at a reduced DCT scale whose top two classes come
out close is decoded exactly and classified again before its batch's records leave (near_ties.py).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from shufflenet_cli.backends import Backend
from shufflenet_cli.decoding import Decoded, Prepare, decode_in_order
from shufflenet_cli.inputs import STALL, Input
from shufflenet_cli.records import Record, make_record


@dataclass
class Stats:
    """Counts and per-stage seconds, for the summary and --timings."""

    classified: int = 0
    failed: int = 0
    batches: int = 0
    decode_s: float = 0.0  # summed over workers
    preprocess_s: float = 0.0  # summed over workers
    inference_s: float = 0.0
    output_s: float = 0.0
    wait_s: float = 0.0  # the main loop waiting for the next decoded input: the workers are behind
    drafted: int = 0  # JPEGs decoded at a reduced DCT scale
    rechecked: int | None = None  # of those, near-ties decoded and classified again exactly; None: no check
    recheck_s: float = 0.0  # that second decode and forward pass, in the main process
    started: float = field(default_factory=time.perf_counter)
    first_batch: tuple[float, int] | None = None  # (seconds since start, inputs done) when it finished
    ended: float | None = None  # set by end(): the rates leave out closing the output afterwards

    @property
    def after_first_batch(self) -> float | None:
        """Images/s since the first batch finished: the rate without the one-time costs (workers
        starting, the first forward pass's set-up); None until a later batch has finished."""
        if self.first_batch is None:
            return None
        seconds, done = self.first_batch
        if self.done <= done or self.elapsed <= seconds:
            return None
        return (self.done - done) / (self.elapsed - seconds)

    @property
    def done(self) -> int:
        return self.classified + self.failed

    @property
    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    def end(self) -> None:
        """The last record is out: elapsed stops here (the first call counts)."""
        if self.ended is None:
            self.ended = time.perf_counter()


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
    gpu: Any = None,
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
    if recheck is not None:
        stats.rechecked = 0
    window = max(batch_size * 2, workers * 4)
    chunk: list[Decoded] = []
    stack = gpu.stack if gpu is not None else Stacker()
    decoded_in_order = decode_in_order(inputs, prep, workers, window, processes)
    try:
        while True:
            t0 = time.perf_counter()
            decoded = next(decoded_in_order, None)
            stalled = decoded is not None and decoded.input is STALL
            if not stalled:  # a stall is a wait for inputs, not for the workers
                stats.wait_s += time.perf_counter() - t0
            if decoded is None:
                break
            if should_stop():
                return
            if stalled:
                if chunk:
                    yield _finish(chunk, backend, labels, topk, threshold, stats, stack, gpu, recheck, workers)
                    chunk = []
                continue
            chunk.append(decoded)
            stats.decode_s += decoded.decode_s
            stats.preprocess_s += decoded.preprocess_s
            if len(chunk) >= batch_size:
                yield _finish(chunk, backend, labels, topk, threshold, stats, stack, gpu, recheck, workers)
                chunk = []
        if chunk and not should_stop():
            yield _finish(chunk, backend, labels, topk, threshold, stats, stack, gpu, recheck, workers)
        stats.end()  # before the workers stop
    finally:
        # Closed here, not when garbage-collected: an exception while its workers stop (a second
        # Ctrl-C) then reaches the caller instead of printing "Exception ignored" and a traceback.
        decoded_in_order.close()


def _finish(
    chunk: list[Decoded],
    backend: Backend,
    labels: list[str],
    topk: int,
    threshold: float,
    stats: Stats,
    stack: Callable[[list[Any]], Any],
    gpu: Any = None,
    recheck: Prepare | None = None,
    workers: int = 1,
) -> list[Record]:
    if gpu is not None:
        t0 = time.perf_counter()
        gpu.decode_chunk(chunk)
        stats.decode_s += time.perf_counter() - t0
    classified = [d for d in chunk if d.array is not None]
    probs = indices = np.empty((0, 0))
    if classified:
        t0 = time.perf_counter()
        k = max(topk, 2) if recheck is not None else topk  # the check compares the top two
        probs, indices = backend.topk(stack([d.array for d in classified]), k)
        stats.inference_s += time.perf_counter() - t0
        stats.batches += 1
        drafted = [d.drafted for d in classified]
        stats.drafted += sum(drafted)
        if recheck is not None and any(drafted):
            probs, indices = _recheck(classified, drafted, probs, indices, backend, recheck, stats, workers)
        probs, indices = probs[:, :topk], indices[:, :topk]
    probs, indices = probs.tolist(), indices.tolist()  # Python numbers once per batch, not per value
    records: list[Record] = []
    row = 0
    for d in chunk:
        if d.array is None:
            records.append(Record(path=d.input.path, error=d.error, thumbnail=d.thumbnail))
            stats.failed += 1
        else:
            records.append(make_record(d.input.path, probs[row], indices[row], labels, threshold, d.thumbnail))
            row += 1
            stats.classified += 1
    if classified and stats.batches == 1:  # the first forward pass (not a chunk of failed inputs only)
        stats.first_batch = (stats.elapsed, stats.done)
    return records


def _recheck(
    classified: list[Decoded],
    drafted: list[bool],
    probs: Any,
    indices: Any,
    backend: Backend,
    exact: Prepare,
    stats: Stats,
    workers: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The batch's results with its drafted near-ties decoded (on `workers` threads) and classified
    again exactly. Their batch is a one-off: it takes no CUDA graph slot (cuda_graphs.py)."""
    from shufflenet_cli import near_ties

    probs, indices = np.array(probs), np.array(indices)  # writable copies, on the host
    rows = near_ties.close_calls(probs, drafted)
    if rows:
        t0 = time.perf_counter()
        paths = [d.input.path for d in classified]
        once = functools.partial(backend.topk, one_off=True)
        redone = near_ties.redo_exactly(rows, paths, exact, once, probs, indices, max(workers, 1))
        stats.rechecked = (stats.rechecked or 0) + redone
        stats.recheck_s += time.perf_counter() - t0
    return probs, indices


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
