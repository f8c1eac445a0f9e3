"""One picture of any mode as 8-bit RGB, in memory near the 8-bit result's whatever its bit depth:
transparency composited onto white, grey deeper than 8 bits scaled to 0..255 tile by tile."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from PIL import Image

WHITE = (255, 255, 255)


def to_rgb(im: Image.Image, full_scale: int | None = None) -> Image.Image:
    """8-bit RGB; any transparency composited onto white. full_scale: the white point of mode I data."""
    pic = eight_bit(im, full_scale)
    return pic if pic.mode == "RGB" else pic.convert("RGB")


def eight_bit(im: Image.Image, full_scale: int | None = None) -> Image.Image:
    """8-bit RGB, or 8-bit grey (L) for grey deeper than 8 bits; transparency composited onto white."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_gray(im, full_scale)
    if "transparency" in im.info or mode in ("RGBA", "LA", "PA", "RGBa"):
        return _over_white(im if mode == "RGBA" else im.convert("RGBA"))  # RGBA as it is: no copy
    if mode == "RGB":
        return im
    return im.convert("RGB")  # L, 1, P, CMYK (and YCCK, which libjpeg hands over as CMYK), LAB, ...


def _over_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


# Deep pixels are converted tile by tile, each tile at most this many pixels, so that the float64
# arithmetic never holds more than a few tiles' worth: memory stays near the 8-bit result's, whatever
# the picture's size (a whole-picture float64 copy is 8 bytes a pixel, and numpy makes several).
TILE_PIXELS = 2**18


def tiles(size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """(left, top, right, bottom) boxes of at most TILE_PIXELS pixels covering a w x h picture, row by row."""
    w, h = size
    tile_w = min(w, TILE_PIXELS)
    tile_h = max(1, TILE_PIXELS // max(tile_w, 1))
    for top in range(0, h, tile_h):
        for left in range(0, w, tile_w):
            yield left, top, min(left + tile_w, w), min(top + tile_h, h)


def _high_bit_depth_to_gray(im: Image.Image, full_scale: int | None) -> Image.Image:
    """Grey deeper than 8 bits, scaled to 0..255 and never clipped, as 8-bit grey (mode L):

    - 16-bit data (modes I;16*, and 16-bit PNG/PGM opened as mode I): x * 255 / 65535, so a dark
      16-bit picture stays dark and a 0..65535 gradient spans 0..255.
    - Other 32-bit integers (I) and floats (F) declare no range: the data's own min..max maps to
      0..255, except integers already within 0..255 and floats within 0..1, taken as they are.
    NaN becomes 0 and infinities are left out of the range. A colour-key transparent value is white.
    Tile by tile (TILE_PIXELS), each tile with the same arithmetic as the whole picture would get.
    """
    import numpy as np

    def tile(box: tuple[int, int, int, int]) -> np.ndarray:
        return np.asarray(im.crop(box)).astype(np.float64)

    boxes = list(tiles(im.size))
    scale, offset, mode = (255.0 / full_scale, 0.0, "scale") if full_scale else _range_of(im.mode, map(tile, boxes))
    key = im.info.get("transparency")
    gray = np.empty((im.size[1], im.size[0]), dtype=np.uint8)
    for box in boxes:
        arr = tile(box)
        if mode == "zero":
            scaled = np.zeros_like(arr)
        elif mode == "as is":
            scaled = arr
        elif mode == "shift":
            scaled = (arr - offset) * scale
        else:
            scaled = arr * scale
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
        out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        if isinstance(key, int):
            out[arr == key] = 255
        gray[box[1] : box[3], box[0] : box[2]] = out
    return Image.fromarray(gray)


def _range_of(mode: str, tiles: Iterable[Any]) -> tuple[float, float, str]:
    """(scale, offset, how) for data that declares no range, from its finite min..max over all tiles."""
    import numpy as np

    lo, hi, seen = math.inf, -math.inf, False
    for arr in tiles:
        finite = arr[np.isfinite(arr)]
        if finite.size:
            lo, hi, seen = min(lo, float(finite.min())), max(hi, float(finite.max())), True
    if not seen:
        lo = hi = 0.0
    if mode != "F" and 0.0 <= lo and hi <= 255.0:
        return 1.0, 0.0, "as is"  # 8-bit values stored wide
    if mode == "F" and 0.0 <= lo and hi <= 1.0:
        return 255.0, 0.0, "scale"
    if hi > lo:
        return 255.0 / (hi - lo), lo, "shift"
    return 0.0, 0.0, "zero"
