"""Decode workers as threads: Pillow releases the GIL while it decodes and resizes, and on a few
cores threads cost nothing to start or to hand results back from."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Callable

from shufflenet_cli.decode.decoded import Decoded, Prepare, decode_one
from shufflenet_cli.inputs.paths import STALL, Input


def in_threads(inputs: Iterable[Input], prep: Prepare, workers: int, window: int) -> Iterator[Decoded]:
    """Decode ahead in `workers` threads, about `window` inputs in flight, yielding in input order."""
    pool = DaemonPool(workers)
    pending: deque[Future[Decoded]] = deque()
    finished = False
    try:
        for item in inputs:
            if item is STALL:  # hand on everything in flight, then the stall
                while pending:
                    yield pending.popleft().result()
                yield Decoded(STALL)
                continue
            pending.append(pool.submit(decode_one, prep, item))
            # full window: wait for the oldest; otherwise pass on whatever is already done (slow producers)
            while pending and (len(pending) >= window or pending[0].done()):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        finished = True
    finally:
        for fut in pending:
            fut.cancel()
        # stopped early (a second Ctrl-C, a closed consumer): a worker may be stuck in a read, and
        # waiting for it would undo the stop
        pool.shutdown(wait=finished)


Job = tuple[Future, Callable[..., Any], tuple]


class DaemonPool:
    """A thread pool whose threads never keep the process alive: concurrent.futures' own joins every
    worker at exit, so one blocked in a read (a pipe's silent writer, a hung network share) would hold
    an interrupted run open after its records are safe, until a third signal."""

    def __init__(self, workers: int) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"decode_{i}", daemon=True) for i in range(max(workers, 1))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        self._jobs.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                fut.set_exception(exc)

    def shutdown(self, wait: bool = True) -> None:
        """No more jobs; with `wait`, the threads finish what they hold first."""
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
