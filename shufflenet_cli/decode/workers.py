"""Decoding ahead of inference, in input order, with a bounded window: one `Decoded` per input.

Two kinds of workers, the same results:
- threads (the CPU default): Pillow releases the GIL while it decodes and resizes, and on a few cores
  threads cost nothing to start or to hand results back from.
- processes (the CUDA default): with many cores, the Python work around each decode (opening, EXIF,
  cropping) holds the GIL, so threads stop scaling (measured on 16 cores: 8 threads 1,661 images/s,
  16 threads 1,397) and starve the inference thread. Processes hand back groups of crops; a worker
  that dies (a crashing decoder) costs the files it held, which become error records, not the run
  (decode_processes.py).
A `STALL` among the inputs (stdin has gone quiet, inputs.py) is passed on as `Decoded(STALL)` once
every input before it has been decoded and handed on: nothing waits for inputs that may never come.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from shufflenet_cli.decode.images import ImageError
from shufflenet_cli.decode.preprocess import Crop
from shufflenet_cli.inputs.paths import STALL, Input

Prepare = Callable[[str], Crop]  # a path -> its crop (Preprocess), or its JPEG bytes (gpu_decode.JpegReader)


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
    drafted: bool = False  # decoded at a reduced JPEG DCT scale (preprocess.py): a near-tie is redone


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
    return Decoded(
        item, crop.array, None, crop.decode_s, crop.preprocess_s, crop.thumbnail, crop.jpeg, drafted=crop.drafted
    )


def decode_many(prep: Prepare, items: list[Input], slots: list[int] | None = None) -> list[Decoded]:
    """In a worker process: each crop goes into its input's shared-memory slot where one was given."""
    out = [decode_one(prep, item) for item in items]
    if slots is not None:
        from shufflenet_cli.decode import crop_slots

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
            yield Decoded(STALL) if item is STALL else decode_one(prep, item)
        return
    if processes:  # imported here: the process machinery costs start-up time that threads do not need
        from shufflenet_cli.decode.processes import in_processes

        yield from in_processes(inputs, prep, workers, window)
        return
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
