"""Decoding ahead of inference, in input order, with a bounded window: one `Decoded` per input.

Two kinds of workers, the same results:
- threads (the CPU default): Pillow releases the GIL while it decodes and resizes, and on a few cores
  threads cost nothing to start or to hand results back from.
- processes (the CUDA default): with many cores, the Python work around each decode (opening, EXIF,
  cropping) holds the GIL, so threads stop scaling (measured on 16 cores: 8 threads 1,661 images/s,
  16 threads 1,397) and starve the inference thread. Processes hand back groups of crops; a worker
  that dies (a crashing decoder) costs the files it held, which become error records, not the run.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from shufflenet_cli import crop_slots
from shufflenet_cli.crop_slots import CropSlots
from shufflenet_cli.images import ImageError
from shufflenet_cli.inputs import Input
from shufflenet_cli.preprocess import Crop

Prepare = Callable[[str], Crop]  # a path -> its crop (Preprocess), or its JPEG bytes (gpu_decode.JpegReader)
PROCESS_GROUP = 8  # inputs per task handed to a worker process: amortises the hand-over
CRASHED = "the decoder crashed on this file (its worker process died)"


@dataclass
class Decoded:
    input: Input
    array: Any = None  # H,W,3 uint8: a numpy array, or a device tensor from --gpu-decode
    error: str | None = None
    decode_s: float = 0.0
    preprocess_s: float = 0.0
    thumbnail: bytes | None = None
    jpeg: Any = None  # --gpu-decode: decoded with its batch, on the GPU
    slot: int | None = None  # processes: the crop waits in this shared-memory slot (crop_slots.py)


def decode_one(prep: Prepare, item: Input) -> Decoded:
    if item.error is not None:
        return Decoded(item, error=item.error)
    try:
        crop = prep(item.path)
    except ImageError as exc:
        return Decoded(item, error=str(exc))
    except MemoryError:
        return Decoded(item, error="out of memory while decoding this image")
    except Exception as exc:  # noqa: BLE001 - a decoder bug must cost one record, not the run
        return Decoded(item, error=f"decoder failed: {type(exc).__name__}: {exc}")
    return Decoded(item, crop.array, None, crop.decode_s, crop.preprocess_s, crop.thumbnail, crop.jpeg)


def decode_many(prep: Prepare, items: list[Input], slots: list[int] | None = None) -> list[Decoded]:
    """In a worker process: each crop goes into its input's shared-memory slot where one was given."""
    out = [decode_one(prep, item) for item in items]
    if slots is not None:
        for d, slot in zip(out, slots, strict=True):
            if isinstance(d.array, np.ndarray) and crop_slots.put(slot, d.array):
                d.array, d.slot = None, slot
    return out


def decode_in_order(
    inputs: Iterable[Input], prep: Prepare, workers: int, window: int, processes: bool = False
) -> Iterator[Decoded]:
    """Decode ahead in `workers` threads (or processes), about `window` inputs in flight, yielding in
    input order. `workers` 0 decodes inline."""
    if workers <= 0:
        for item in inputs:
            yield decode_one(prep, item)
        return
    if processes:
        yield from _in_processes(inputs, prep, workers, window)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    pending: deque[Future[Decoded]] = deque()
    try:
        for item in inputs:
            pending.append(pool.submit(decode_one, prep, item))
            # full window: wait for the oldest; otherwise pass on whatever is already done (slow producers)
            while pending and (len(pending) >= window or pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _quiet_worker() -> None:
    """Ctrl-C goes to the whole process group: the parent stops between batches; workers ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT blocked in this thread while it starts processes: a new interpreter (the forkserver,
    or a spawned worker) inherits the mask, so a Ctrl-C in its first milliseconds stays pending
    instead of killing it mid-import (the parent then failed with EOFError, exit 70). The forkserver
    never unblocks it, so its workers start with SIGINT blocked too, until `_quiet_worker` ignores
    it. Here the signal is delivered when the block ends (the resource tracker does the same)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _worker_start(slots: tuple[str, int, tuple[int, ...]] | None) -> None:
    _quiet_worker()
    if slots is not None:
        crop_slots.attach(*slots)


def _process_pool(workers: int, slots: CropSlots | None) -> Executor:
    # Never fork a process that holds CUDA state and threads: forkserver (Linux), else spawn.
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    shared = (slots.name, slots.count, slots.shape) if slots is not None else None
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=_worker_start, initargs=(shared,)
    )


class _Pool:
    """A process pool that starts again after a worker dies; `submit(items, slots)` -> a future of
    their Decoded list. Crops come back through `slots` (shared memory) where the crop size is known."""

    def __init__(self, prep: Prepare, workers: int, slots: CropSlots | None) -> None:
        self.prep, self.workers, self.slots = prep, workers, slots
        self.pool = _process_pool(workers, slots)

    def submit(self, items: list[Input], ids: list[int] | None) -> Future[list[Decoded]]:
        try:
            return self._submit(items, ids)
        except BrokenProcessPool:
            self.restart()
            return self._submit(items, ids)

    def _submit(self, items: list[Input], ids: list[int] | None) -> Future[list[Decoded]]:
        with _sigint_held():  # workers (and the forkserver) start here, on demand
            return self.pool.submit(decode_many, self.prep, items, ids)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = _process_pool(self.workers, self.slots)

    def salvage(self, items: list[Input], ids: list[int] | None) -> list[Decoded]:
        """After a crash: each input of the lost group alone, in a fresh pool; the one that kills its
        worker again is an error record."""
        out: list[Decoded] = []
        for i, item in enumerate(items):
            try:
                out.extend(self.submit([item], None if ids is None else ids[i : i + 1]).result())
            except BrokenProcessPool:
                self.restart()
                out.append(Decoded(item, error=CRASHED))
        return out

    def receive(self, decoded: list[Decoded], ids: list[int] | None) -> list[Decoded]:
        """Crops copied out of their slots, and the group's slots free again."""
        if self.slots is None or ids is None:
            return decoded
        for d in decoded:
            if d.slot is not None:
                d.array, d.slot = self.slots.read(d.slot), None
        self.slots.release(ids)
        return decoded

    def close(self) -> None:
        try:
            self.pool.shutdown(wait=True, cancel_futures=True)
        except BaseException:
            # A second Ctrl-C while waiting for the running groups: stop now. The workers are killed:
            # the interrupted join leaves the pool's manager thread marked as stopped (Python 3.11),
            # so at exit nothing waits for it to send the workers their stop signal, and the
            # process hung in multiprocessing's exit handler, joining workers that never got it.
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                proc.kill()
            raise


def groups_in_flight(workers: int, window: int) -> int:
    """About `window` inputs in flight, in groups, and never fewer groups than workers (with a small
    window, say `-b 1 -j 16`, half the workers would otherwise sit idle)."""
    return max(1, workers, window // PROCESS_GROUP)


def _in_processes(inputs: Iterable[Input], prep: Prepare, workers: int, window: int) -> Iterator[Decoded]:
    limit = groups_in_flight(workers, window)
    crop = getattr(prep, "crop", None)
    slots = CropSlots(limit * PROCESS_GROUP, (int(crop), int(crop), 3)) if crop else None
    try:
        yield from _run_groups(inputs, _Pool(prep, workers, slots), limit)
    finally:
        if slots is not None:
            slots.close()


def _run_groups(inputs: Iterable[Input], pool: _Pool, limit: int) -> Iterator[Decoded]:
    pending: deque[tuple[list[Input], list[int] | None, Future[list[Decoded]]]] = deque()
    group: list[Input] = []

    def send(items: list[Input]) -> None:
        ids = pool.slots.take(len(items)) if pool.slots is not None else None
        pending.append((items, ids, pool.submit(items, ids)))

    def take() -> list[Decoded]:
        items, ids, fut = pending.popleft()
        try:
            return pool.receive(fut.result(), ids)
        except BrokenProcessPool:
            # every group in flight is lost with the pool: the oldest is salvaged one input at a time,
            # the others are handed to the new pool as they were (each keeps its slots)
            pool.restart()
            rest = [(g, g_ids) for g, g_ids, _ in pending]
            pending.clear()
            salvaged = pool.salvage(items, ids)
            pending.extend((g, g_ids, pool.submit(g, g_ids)) for g, g_ids in rest)
            return pool.receive(salvaged, ids)

    try:
        for item in inputs:
            group.append(item)
            if len(group) >= PROCESS_GROUP:
                send(group)
                group = []
            while pending and (len(pending) >= limit or pending[0][2].done()):
                yield from take()
        if group:
            send(group)
        while pending:
            yield from take()
    finally:
        for _, _, fut in pending:
            fut.cancel()
        pool.close()
