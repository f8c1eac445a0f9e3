"""Decode workers as threads: Pillow releases the GIL while it decodes and resizes, and on a few
cores threads cost nothing to start or to hand results back from."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from shufflenet_cli.decode.decoded import Decoded, Prepare, decode_one
from shufflenet_cli.inputs.paths import STALL, Input


def in_threads(inputs: Iterable[Input], prep: Prepare, workers: int, window: int) -> Iterator[Decoded]:
    """Decode ahead in `workers` threads, about `window` inputs in flight, yielding in input order."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    pending: deque[Future[Decoded]] = deque()
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
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
