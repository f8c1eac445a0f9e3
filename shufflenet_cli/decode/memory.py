"""In-memory images (the Python API's `Classifier.classify`): a PIL image, a NumPy array or an encoded
file's bytes, made upright 8-bit RGB and cropped exactly as a file with the same pixels is. Every
failure is that image's error, as for files (decoded.py)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from PIL import Image

from shufflenet_cli.decode.decoded import Decoded, decoded_from
from shufflenet_cli.decode.images import ImageError, decode_rgb, upright_rgb
from shufflenet_cli.decode.preprocess import Crop, Preprocess, make_thumbnail
from shufflenet_cli.inputs.paths import Input

TAKEN = "a path, a URL, a PIL image, a NumPy array (H x W, H x W x 3 RGB or H x W x 4 RGBA) or an image file's bytes"


def crop_in_memory(prep: Preprocess, item: Input, image: Any) -> Decoded:
    """`image` decoded and cropped as `prep` crops a file (at full size: nothing is drafted)."""
    return decoded_from(item, lambda: _crop(prep, image, item.path))


def _crop(prep: Preprocess, image: Any, name: str) -> Crop:
    t0 = time.perf_counter()
    picture = _picture(image, name)
    t1 = time.perf_counter()
    array = prep.crop_array(picture)
    thumbnail = make_thumbnail(picture, prep.thumbnail_size) if prep.thumbnail_size else None
    return Crop(array, t1 - t0, time.perf_counter() - t1, thumbnail)


def _picture(image: Any, name: str) -> Image.Image:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_rgb(name, None, data=bytes(image))[0]
    if isinstance(image, Image.Image):
        if getattr(image, "tile", None) and getattr(image, "fp", True) is None:
            raise ImageError("the PIL image was closed before it was read: take its records inside the `with`")
        return upright_rgb(image)
    if isinstance(image, np.ndarray):
        return upright_rgb(_from_array(image))
    raise ImageError(f"not an image: a {type(image).__name__}; give {TAKEN}")


def _from_array(a: np.ndarray) -> Image.Image:
    """RGB order (an OpenCV BGR array needs `a[..., ::-1]` first); uint8 as it is, uint16 grey as
    16-bit data, other integers within 0..255 as uint8, floats as 0..1 (NaN black), bool as black and
    white. Values out of their range are the image's error, never clipped: floats in 0..255 would
    otherwise come out white."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or 0 in a.shape:
        raise ImageError(
            f"a NumPy array of shape {a.shape} is no image: give H x W, H x W x 3 (RGB) or H x W x 4 (RGBA)"
        )
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind == "f":
        a = np.nan_to_num(a, nan=0.0)
        if a.min() < 0.0 or a.max() > 1.0:
            raise ImageError(f"float pixels must be within 0..1, these span {a.min():g}..{a.max():g}: divide by 255")
        a = np.rint(a * 255.0).astype(np.uint8)
    elif a.dtype == np.uint16 and a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a))  # mode I;16: scaled as 16-bit data
    elif a.dtype.kind in "iu" and a.dtype != np.uint8:
        if a.min() < 0 or a.max() > 255:
            raise ImageError(f"{a.dtype} pixels must be within 0..255, these span {a.min()}..{a.max()}")
        a = a.astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageError(f"a NumPy array of {a.dtype} is no image: give integers, bool or floats in 0..1")
    return Image.fromarray(np.ascontiguousarray(a))
