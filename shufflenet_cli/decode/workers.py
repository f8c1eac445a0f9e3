"""Decoding ahead of inference, in input order, with a bounded window: one `Decoded` per input.

Two kinds of workers, the same results:
- threads (the CPU default): Pillow releases the GIL while it decodes and resizes, and on a few cores
  threads cost nothing to start or to hand results back from.
- processes (the CUDA default): with many cores, the Python work around each decode (opening, EXIF,
  cropping) holds the GIL, so threads stop scaling and starve the inference thread (docs/performance.md,
  "Earlier sessions"). Processes hand back groups of crops; a worker
  that dies (a crashing decoder) costs the files it held, which become error records, not the run
  (decode_processes.py).
A `STALL` among the inputs (stdin has gone quiet, inputs.py) is passed on as `Decoded(STALL)` once
every input before it has been decoded and handed on: nothing waits for inputs that may never come.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable

from shufflenet_cli.decode.decoded import Decoded, Prepare, decode_many, decode_one
from shufflenet_cli.decode.threads import in_threads
from shufflenet_cli.inputs.paths import STALL, Input

__all__ = ["Decoded", "Prepare", "decode_in_order", "decode_many", "decode_one"]


def decode_in_order(
    inputs: Iterable[Input], prep: Prepare, workers: int, window: int, processes: bool = False
) -> Generator[Decoded, None, None]:
    """Decode ahead in `workers` threads (or processes), about `window` inputs in flight, yielding in
    input order. `workers` 0 decodes inline."""
    if workers <= 0:
        for item in inputs:
            yield Decoded(STALL) if item is STALL else decode_one(prep, item)
        return
    if processes:  # imported here: the process machinery costs start-up time that threads do not need
        from shufflenet_cli.decode.processes import in_processes

        yield from in_processes(inputs, prep, workers, window)
    else:
        yield from in_threads(inputs, prep, workers, window)
