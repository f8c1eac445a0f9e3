"""Opening one image file as an upright 8-bit RGB picture, whatever its format and mode.

Every failure is an `ImageError` whose message becomes that input's error record.
"""

from __future__ import annotations

import errno
import math
import os

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

WHITE = (255, 255, 255)


class ImageError(Exception):
    """This input cannot be classified; the message says why."""


def load_rgb(path: str, draft_min: int | None = None) -> Image.Image:
    """Decode `path` (first frame), apply EXIF orientation, and convert to RGB.

    draft_min: for JPEGs, let libjpeg decode at a reduced DCT scale as long as the shorter side
    stays at or above this many pixels (None decodes at full size).
    """
    try:
        with Image.open(path) as im:
            if draft_min and im.format == "JPEG":
                _draft(im, draft_min)
            im.load()
            return to_rgb(_upright(im))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified(path)) from None
    except FileNotFoundError:
        raise ImageError("file not found (it vanished after it was listed)") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not an image file") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise ImageError("is a directory, not an image file") from None
        raise ImageError(f"cannot decode image: {exc}") from None
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, struct_error) as exc:
        raise ImageError(f"cannot decode image: {exc}") from None


try:
    from struct import error as struct_error
except ImportError:  # pragma: no cover
    struct_error = ValueError  # type: ignore[misc,assignment]


def _unidentified(path: str) -> str:
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    if size == 0:
        return "cannot identify image file: the file is empty (0 bytes)"
    ext = os.path.splitext(path)[1].lower()
    return f"cannot identify image file: not an image, or a format this Pillow cannot open ({ext or 'no extension'})"


def _draft(im: Image.Image, draft_min: int) -> None:
    w, h = im.size
    short = min(w, h)
    if short < 2 * draft_min:
        return  # no DCT scaling would apply; decode exactly
    factor = draft_min / short
    im.draft(None, (math.ceil(w * factor), math.ceil(h * factor)))


def _upright(im: Image.Image) -> Image.Image:
    """EXIF orientation applied; broken EXIF never costs the image."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - any metadata error: keep the pixels as stored
        return im


def to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_bit_depth_to_rgb(im)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        return _over_white(im.convert("RGBA"))
    if mode == "L" and "transparency" in im.info:
        return _over_white(im.convert("RGBA"))
    if mode == "LAB":
        return _lab_to_rgb(im)
    return im.convert("RGB")


def _over_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _high_bit_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit: scaled by the type's range (65535 -> 255). 32-bit int and float: by the data's own range."""
    import numpy as np

    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        scaled = arr.astype(np.float32) * (255.0 / 65535.0)
    else:
        arr = arr.astype(np.float64)
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if 0.0 <= lo and hi <= 255.0 and im.mode == "I":
            scaled = arr  # already 8-bit values stored wide
        elif 0.0 <= lo and hi <= 1.0 and im.mode == "F":
            scaled = arr * 255.0
        elif hi > lo:
            scaled = (arr - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(arr)
        scaled = np.nan_to_num(scaled, nan=0.0)
    gray = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    return gray.convert("RGB")


def _lab_to_rgb(im: Image.Image) -> Image.Image:
    from PIL import ImageCms

    try:
        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(im, transform)
    except Exception:  # noqa: BLE001 - no LittleCMS: Pillow's own conversion
        return im.convert("RGB")


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error record, not a half-grey guess
