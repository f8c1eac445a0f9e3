"""A producer on a thread of its own, read by the driver with a deadline: "no progress for N seconds"
becomes EngineError (exit 3) instead of a run that hangs without a word (a deadlocked plan, an actor
that never returns, a cluster that never finds room for an actor).

The driver waits in short slices, so it also sees Ctrl-C's stop flag at once rather than when the next
batch happens to arrive. Only time spent waiting on Ray counts: while the producer waits for inputs
(a slow `find`, stdin between paths) the clock does not run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from shufflenet_cli.errors import EngineError

T = TypeVar("T")

POLL_S = 0.1  # how often the waiting driver looks at the stop flag and the clock
AHEAD = 8  # items the producer may be ahead of the driver: it waits (and Ray backs off) beyond that

STALLED = "the Ray engine made no progress for {seconds:g} s"
STALLED_HINT = (
    "the cluster may lack room for the inference actors or the decode tasks (`ray status` shows what "
    "is asked for and free), or a worker is stuck; Ray's logs are in /tmp/ray/session_latest/logs on "
    "each node. A slow start (GPU nodes still joining) needs a longer timeout"
)


class _Done:
    pass


class Feed(Generic[T]):
    """`produce(feed)` runs on a thread, handing items over with `feed.put`; `items()` yields them."""

    def __init__(self, produce: Callable[[Feed[T]], None], timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.cancelled = threading.Event()
        self._queue: queue.Queue[T | _Done | BaseException] = queue.Queue(AHEAD)
        self._watching = False
        self._thread = threading.Thread(target=self._run, args=(produce,), name="ray-engine", daemon=True)

    def put(self, item: T) -> bool:
        """Hand `item` to the driver; False once the driver has stopped reading (the producer then stops)."""
        while not self.cancelled.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    @contextmanager
    def waiting_on_ray(self) -> Iterator[None]:
        """The clock runs inside this block only."""
        self._watching = True
        try:
            yield
        finally:
            self._watching = False

    def items(self, should_stop: Callable[[], bool], waited: Callable[[float], None]) -> Iterator[T]:
        """The producer's items, until it is done or `should_stop()`; its exception raised here.
        EngineError where it spends `timeout_s` waiting on Ray without handing anything over.
        `waited(seconds)` hears of each wait."""
        self._thread.start()
        last = time.monotonic()
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    item = self._queue.get(timeout=POLL_S)
                except queue.Empty:
                    waited(time.perf_counter() - t0)
                    if should_stop():
                        return
                    now = time.monotonic()
                    if not self._watching:
                        last = now
                    elif now - last >= self.timeout_s:
                        raise EngineError(STALLED.format(seconds=self.timeout_s), hint=STALLED_HINT) from None
                    continue
                waited(time.perf_counter() - t0)
                last = time.monotonic()
                if isinstance(item, _Done):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancelled.set()  # the producer stops at its next item (a stuck one is a daemon thread)

    def close(self, grace_s: float) -> None:
        """Stop the producer and wait up to `grace_s` for it to finish: Ray must not be shut down
        under it, where a Ray call it makes afterwards would start (or attach to) another instance."""
        self.cancelled.set()
        if self._thread.is_alive():
            self._thread.join(grace_s)

    def _run(self, produce: Callable[[Feed[T]], None]) -> None:
        try:
            produce(self)
            end: _Done | BaseException = _Done()
        except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread, raised there
            end = exc
        while not self.cancelled.is_set():
            try:
                self._queue.put(end, timeout=POLL_S)
                return
            except queue.Full:
                continue
