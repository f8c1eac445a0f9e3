"""Decode workers as processes (`decoding.decode_in_order(..., processes=True)`): ordered, bounded,
crops handed back through shared-memory slots (crop_slots.py), and a worker that dies costs only the
file that killed it. Where no worker has ever run a task and none can (a library caller's script
without an `if __name__ == "__main__":` guard, which the forkserver re-runs and dies on), the run goes on
in threads with a warning, instead of every input becoming a "decoder crashed" record. Imported only
when processes are asked for.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import warnings
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

from shufflenet_cli.decode import crop_slots
from shufflenet_cli.decode.crop_slots import CropSlots
from shufflenet_cli.decode.decoded import Decoded, Prepare, decode_many
from shufflenet_cli.decode.threads import in_threads
from shufflenet_cli.errors import ShufflenetWarning
from shufflenet_cli.inputs.paths import STALL, Input
from shufflenet_cli.signals import ignore_in_worker, sigint_blocked_while_starting

PROCESS_GROUP = 8  # inputs per task handed to a worker process: amortises the hand-over
CRASHED = "the decoder crashed on this file (its worker process died)"


def worker_start(slots: tuple[str, int, tuple[int, ...]] | None) -> None:
    ignore_in_worker()
    warnings.filterwarnings("ignore", module="PIL")  # as in the main process (runner.py): a metadata or
    # size warning is not for stderr; the image still counts, or its error record says what is wrong
    if slots is not None:
        crop_slots.attach(*slots)


def _process_pool(workers: int, slots: CropSlots | None) -> Executor:
    # Never fork a process that holds CUDA state and threads: forkserver (Linux), else spawn.
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    shared = (slots.name, slots.count, slots.shape) if slots is not None else None
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context(method), initializer=worker_start, initargs=(shared,)
    )


class WorkerPool:
    """A process pool that starts again after a worker dies; `submit(items, slots)` -> a future of
    their Decoded list. Crops come back through `slots` (shared memory) where the crop size is known."""

    def __init__(self, prep: Prepare, workers: int, slots: CropSlots | None) -> None:
        self.prep, self.workers, self.slots = prep, workers, slots
        self.pool = _process_pool(workers, slots)
        self.ever_ran = False  # a task came back: workers can run, so a crash is a file's fault

    def submit(self, items: list[Input], ids: list[int] | None) -> Future[list[Decoded]]:
        try:
            return self._submit(items, ids)
        except BrokenProcessPool:
            self.restart()
            return self._submit(items, ids)

    def _submit(self, items: list[Input], ids: list[int] | None) -> Future[list[Decoded]]:
        with sigint_blocked_while_starting():  # workers (and the forkserver) start here, on demand
            return self.pool.submit(decode_many, self.prep, items, ids)

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = _process_pool(self.workers, self.slots)

    def starts(self) -> bool:
        """Whether a worker can run anything at all: an empty task (which still carries the decoder).
        After it fails, the pool is a fresh one again."""
        try:
            self._submit([], None).result()
            self.ever_ran = True
            return True
        except BrokenProcessPool:
            self.restart()
            return False

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
        self.ever_ran = True
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


class WorkersCannotStart(Exception):
    """No worker process can run even an empty task; `left` holds the inputs not yet decoded, in order."""

    def __init__(self, left: list[Input]) -> None:
        super().__init__(f"{len(left)} inputs left")
        self.left = left


def in_processes(inputs: Iterable[Input], prep: Prepare, workers: int, window: int) -> Iterator[Decoded]:

    limit = groups_in_flight(workers, window)
    crop = getattr(prep, "crop", None)
    slots = CropSlots(limit * PROCESS_GROUP, (int(crop), int(crop), 3)) if crop else None
    inputs = iter(inputs)
    left: list[Input] | None = None
    try:
        yield from _run_groups(inputs, WorkerPool(prep, workers, slots), limit)
    except WorkersCannotStart as exc:
        left = exc.left
    finally:
        if slots is not None:
            slots.close()
    if left is None:
        return
    warnings.warn(
        "decode worker processes exit as soon as they start (in a script, usually a missing "
        "`if __name__ == '__main__':` guard); decoding in threads instead",
        ShufflenetWarning,
        stacklevel=2,
    )
    yield from in_threads(itertools.chain(left, inputs), prep, workers, window)


def _run_groups(inputs: Iterator[Input], pool: WorkerPool, limit: int) -> Iterator[Decoded]:
    """Raises WorkersCannotStart (having taken from `inputs` only what it lists) where no worker can run."""
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
            if not pool.ever_ran and not pool.starts():  # not one file's fault: no worker can run at all
                raise WorkersCannotStart(items + [i for g, _ in rest for i in g] + group) from None
            salvaged = pool.salvage(items, ids)
            pending.extend((g, g_ids, pool.submit(g, g_ids)) for g, g_ids in rest)
            return pool.receive(salvaged, ids)

    try:
        for item in inputs:
            if item is STALL:  # the partial group goes now, and everything in flight comes back first
                if group:
                    send(group)
                    group = []
                while pending:
                    yield from take()
                yield Decoded(STALL)
                continue
            group.append(item)
            if len(group) >= PROCESS_GROUP:
                send(group)
                group = []
            while pending and (len(pending) >= limit or pending[0][2].done()):
                yield from take()
        if group:
            send(group)
            group = []  # sent: WorkersCannotStart must not list it twice
        while pending:
            yield from take()
    finally:
        for _, _, fut in pending:
            fut.cancel()
        pool.close()
