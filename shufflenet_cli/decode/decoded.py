"""One input decoded: what a decode worker hands back (`Decoded`), and the decode itself, which turns
every failure into that input's error, never an exception that could stop the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from shufflenet_cli.decode import crop_slots
from shufflenet_cli.decode.images import ImageError
from shufflenet_cli.decode.preprocess import Crop
from shufflenet_cli.inputs.paths import Input

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
    fetch_s: float = 0.0  # a remote input's bytes fetched (decode/fetch.py); not in decode_s
    fetched: bool = False  # its bytes came over the network


def decode_one(prep: Prepare, item: Input) -> Decoded:
    if item.error is not None:
        return Decoded(item, error=item.error)
    return decoded_from(item, lambda: prep(item.path))


def decoded_from(item: Input, make: Callable[[], Crop]) -> Decoded:
    """`item` decoded by `make`, each failure its error: the one place where a decode's exception
    becomes a record (files here, the Python API's in-memory images in memory.py)."""
    try:
        crop = make()
    except ImageError as exc:
        return Decoded(item, error=str(exc))
    except MemoryError:
        return Decoded(item, error="out of memory while decoding this image")
    except Exception as exc:  # noqa: BLE001 - a decoder bug must cost one record, not the run
        return Decoded(item, error=f"decoder failed: {type(exc).__name__}: {exc}")
    return Decoded(
        item,
        crop.array,
        None,
        crop.decode_s,
        crop.preprocess_s,
        crop.thumbnail,
        crop.jpeg,
        drafted=crop.drafted,
        fetch_s=crop.fetch_s,
        fetched=crop.fetched,
    )


def decode_many(prep: Prepare, items: list[Input], slots: list[int] | None = None) -> list[Decoded]:
    """In a worker process: each crop goes into its input's shared-memory slot where one was given."""
    out = [decode_one(prep, item) for item in items]
    if slots is not None:
        for d, slot in zip(out, slots, strict=True):
            if isinstance(d.array, np.ndarray) and crop_slots.put(slot, d.array):
                d.array, d.slot = None, slot
    return out
