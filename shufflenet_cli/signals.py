"""Ctrl-C and SIGTERM, in one place: how a run stops so that every record written is whole.

- While the run starts, SIGTERM stops it as Ctrl-C does (`sigterm_as_ctrl_c`): outputs opened so far
  are removed and the exit is 130, instead of death by signal with an empty file left behind.
- During the batch loop both signals set a flag (`StopFlag`); the loop stops between batches. A second
  signal raises KeyboardInterrupt at once.
- While a batch is written both are held (`held_while_writing`) and delivered after its last byte.
- Decode worker processes ignore Ctrl-C (`ignore_in_worker`): it goes to the whole process group and the
  parent decides; while they start, SIGINT is blocked (`sigint_blocked_while_starting`).
- Once an interrupted run's results are safe, further signals are ignored (`ignore_further`).
- Code that falls back on a failure first calls `reraise_interrupt`, so a Ctrl-C that an extension's
  import turned into an ImportError still ends the run with 130.

Every function leaves handlers alone where it is not on the main thread (an embedding caller's thread).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Union

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Union[Any, int, None]  # what signal.signal returns: a callable, SIG_DFL/SIG_IGN, or None


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop stops between batches, so every record written is whole."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Handler] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopFlag:
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while the run starts (until `StopFlag` takes over both
    signals); the caller's handler is put back afterwards."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedding caller): leave its handlers alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def ignore_further() -> None:
    """The run was interrupted and its results are safe: only the summary and the exit (130) are left.
    A second Ctrl-C now would only turn exit 130 into death by signal, with tracebacks from exit hooks."""
    for sig in STOP_SIGNALS:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread (an embedding caller): leave its handlers alone
            pass


@contextmanager
def held_while_writing() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a batch is written, then pass them on to the handlers they were for.

    A second Ctrl-C makes the loop raise KeyboardInterrupt; held, it lands after the last byte of
    the batch, never between two halves of a line. (A signal mask would not do: the kernel hands a
    process-wide signal to any thread that does not block it, such as a decode worker.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old: dict[int, Handler] = {
        sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        for signum in held:
            _deliver(signum, old[signum])


def _deliver(signum: int, handler: Handler) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)


def ignore_in_worker() -> None:
    """Ctrl-C goes to the whole process group: the parent stops between batches; workers ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def sigint_blocked_while_starting() -> Iterator[None]:
    """SIGINT blocked in this thread while it starts processes: a new interpreter (the forkserver,
    or a spawned worker) inherits the mask, so a Ctrl-C in its first milliseconds stays pending
    instead of killing it mid-import (the parent would then fail with EOFError, exit 70). The
    forkserver never unblocks it, so its workers start with SIGINT blocked too, until
    `ignore_in_worker` ignores it. Here the signal is delivered when the block ends (the resource
    tracker does the same)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def reraise_interrupt(exc: BaseException) -> None:
    """Raise KeyboardInterrupt where `exc` came of one: an extension module's start-up (onnxruntime's,
    an exporter's) turns Ctrl-C into an ImportError raised while the KeyboardInterrupt was handled.
    Code that falls back on a failure calls this first, so an interrupt is never taken for a failure
    and the run still ends with exit 130."""
    seen: set[int] = set()
    chain: list[BaseException | None] = [exc]
    while chain:
        link = chain.pop()
        if link is None or id(link) in seen:
            continue
        if isinstance(link, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        seen.add(id(link))
        chain += [link.__cause__, link.__context__]
