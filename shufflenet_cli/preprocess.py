"""The weights' own eval transform, split so that the per-image part runs in decode workers.

Per image (worker thread): decode -> resize (shorter side) -> center crop -> HWC uint8 array.
Per batch (backend): uint8 -> float / 255 -> normalize with the weights' mean and std.
The arithmetic is the same as `weights.transforms()` (tests prove the outputs are identical); the
resize and crop are Pillow calls made exactly as torchvision makes them on PIL images, so a run
needs no torchvision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shufflenet_cli.images import load_rgb

# --fast-decode (exact_decode=False): JPEG DCT scaling keeps the shorter side at >= 2x the resize size.
# Not the default: on 319 real photos its top-1 differed from the exact decode's on 13 (docs/benchmarks.md).
DRAFT_FACTOR = 2


@dataclass(frozen=True)
class Crop:
    array: np.ndarray | None  # H, W, 3 uint8, ready to batch; None while `jpeg` waits for the GPU
    decode_s: float
    preprocess_s: float
    thumbnail: bytes | None = None  # small JPEG of the whole upright image, when asked for
    jpeg: Any = None  # --gpu-decode: the still-compressed file (gpu_decode.EncodedJpeg)


@dataclass(frozen=True)
class Preprocess:
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    exact_decode: bool = True
    thumbnail_size: int | None = None  # for --report: a JPEG thumbnail this many pixels on its longer side

    @classmethod
    def from_weights(cls, weights: Any, exact_decode: bool = True, thumbnail_size: int | None = None) -> Preprocess:
        t = weights.transforms()
        return cls(
            resize=int(t.resize_size[0]),
            crop=int(t.crop_size[0]),
            mean=tuple(t.mean),
            std=tuple(t.std),
            exact_decode=exact_decode,
            thumbnail_size=thumbnail_size,
        )

    @classmethod
    def from_spec(cls, spec: Any, exact_decode: bool = True, thumbnail_size: int | None = None) -> Preprocess:
        """From the ModelSpec's constants (equal to `weights.transforms()`'s, tests prove it): no torch."""
        return cls(
            resize=spec.resize,
            crop=spec.crop,
            mean=spec.mean,
            std=spec.std,
            exact_decode=exact_decode,
            thumbnail_size=thumbnail_size,
        )

    @property
    def draft_min(self) -> int | None:
        return None if self.exact_decode else DRAFT_FACTOR * self.resize

    def __call__(self, path: str) -> Crop:
        """Decode, resize and crop one file (in a worker thread); raises ImageError."""
        t0 = time.perf_counter()
        img = load_rgb(path, self.draft_min)
        t1 = time.perf_counter()
        array = self.crop_array(img)
        thumb = make_thumbnail(img, self.thumbnail_size) if self.thumbnail_size else None
        return Crop(array, t1 - t0, time.perf_counter() - t1, thumb)

    def crop_array(self, img: Any) -> np.ndarray:
        """torchvision's F.resize(img, [resize], BILINEAR) then F.center_crop(img, [crop]) on a PIL
        image, in Pillow alone: the same sizes, the same rounding, the same Pillow calls."""
        from PIL import Image

        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BILINEAR)
        if self.crop > new_w or self.crop > new_h:  # torchvision pads first; never with resize >= crop
            import torchvision.transforms.functional as F

            return np.asarray(F.center_crop(img, [self.crop]), dtype=np.uint8)
        top = int(round((new_h - self.crop) / 2.0))
        left = int(round((new_w - self.crop) / 2.0))
        img = img.crop((left, top, left + self.crop, top + self.crop))
        return np.asarray(img, dtype=np.uint8)


def make_thumbnail(img: Any, size: int) -> bytes:
    """A small JPEG of the upright image (for the HTML report). Shrinks `img` in place: the caller is
    done with it, and a 12-megapixel photo is not copied for every image."""
    import io

    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return buf.getvalue()
