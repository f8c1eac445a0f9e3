"""The weights' own eval transform, split so that the per-image part runs in decode workers.

Per image (worker thread): decode -> resize (shorter side) -> center crop -> HWC uint8 array.
Per batch (backend): uint8 -> float / 255 -> normalize with the weights' mean and std.
The arithmetic is the same as `weights.transforms()` (tests prove the outputs are identical); the
resize and crop are Pillow calls made exactly as torchvision makes them on PIL images, so a run
needs no torchvision.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shufflenet_cli.decode.fetch import Remote, fetch
from shufflenet_cli.decode.images import decode_rgb
from shufflenet_cli.urls import is_remote_url

# How large JPEGs are decoded (docs/decoding.md, "Draft decoding (the default for big JPEGs)"):
#   exact    (--exact-decode) full size, always: byte for byte weights.transforms()
#   checked  (the default) JPEG DCT scaling while the shorter side stays >= 4x the resize size; the
#            images whose top two classes then come out close are decoded again exactly (near_ties.py)
#   fast     (--fast-decode) DCT scaling down to >= 2x the resize size, never checked
# A JPEG whose shorter side is under twice the draft size (fast 1,024 px, checked 2,048 px: all of
# ImageNet's) is decoded exactly in every mode. The CLI's default is checked; Preprocess's is exact.
DRAFT_FACTOR = {"exact": None, "checked": 4, "fast": 2}  # the modes, and how far each drafts
# The exact path resizes the whole picture before it crops: 256 px on the shorter side. A picture far
# longer than it is wide (10000 x 1 would become 2,560,000 x 256 pixels) is resized over the crop's
# region only, as a drafted one is (pixels may come out 1 apart): memory stays bounded whatever the
# shape (docs/decoding.md, "Extreme aspect ratios").
MAX_RESIZED_PIXELS = 2**25  # 128 MiB at Pillow's 4 bytes a pixel; a 512:1 panorama still fits


@dataclass(frozen=True)
class Crop:
    array: np.ndarray | None  # H, W, 3 uint8, ready to batch; None while `jpeg` waits for the GPU
    decode_s: float
    preprocess_s: float
    thumbnail: bytes | None = None  # small JPEG of the whole upright image, when asked for
    jpeg: Any = None  # --gpu-decode: the still-compressed file (gpu_decode.EncodedJpeg)
    drafted: bool = False  # decoded at a reduced JPEG DCT scale (not byte for byte the reference)
    fetch_s: float = 0.0  # getting a remote input's bytes (http(s), object storage); in decode_s no more
    fetched: bool = False  # the bytes came over the network: --timings shows a fetch stage


@dataclass(frozen=True)
class Preprocess:
    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    decode: str = "exact"
    thumbnail_size: int | None = None  # for --report: a JPEG thumbnail this many pixels on its longer side
    remote: Remote = Remote()  # how an http(s) input is fetched (--timeout, --max-download)

    @classmethod
    def from_weights(cls, weights: Any, decode: str = "exact", thumbnail_size: int | None = None) -> Preprocess:
        t = weights.transforms()
        return cls(
            resize=int(t.resize_size[0]),
            crop=int(t.crop_size[0]),
            mean=tuple(t.mean),
            std=tuple(t.std),
            decode=decode,
            thumbnail_size=thumbnail_size,
        )

    @classmethod
    def from_spec(cls, spec: Any, decode: str = "exact", thumbnail_size: int | None = None) -> Preprocess:
        """From the ModelSpec's constants (equal to `weights.transforms()`'s, tests prove it): no torch."""
        return cls(
            resize=spec.resize,
            crop=spec.crop,
            mean=spec.mean,
            std=spec.std,
            decode=decode,
            thumbnail_size=thumbnail_size,
        )

    @property
    def draft_min(self) -> int | None:
        factor = DRAFT_FACTOR[self.decode]
        return factor * self.resize if factor else None

    def exact(self, thumbnail: bool = False) -> Preprocess:
        """The same transform with the exact decode: without the thumbnail, what a near-tie is redone
        with (its first decode made one); with it, what --gpu-decode leaves to Pillow."""
        return dataclasses.replace(self, decode="exact", thumbnail_size=self.thumbnail_size if thumbnail else None)

    def __call__(self, path: str) -> Crop:
        """Decode, resize and crop one file (in a worker thread); raises ImageError."""
        t0 = time.perf_counter()
        # a URL's bytes are decoded as a pipe's; a local file named like one (`https:/host/x`) stays a file
        remote = is_remote_url(path) and not os.path.lexists(path)
        data = fetch(path, self.remote) if remote else None
        fetched = time.perf_counter()
        # checked: a pipe's (or URL's) bytes are not read again for the exact decode, so they get it at once
        img, drafted = decode_rgb(path, self.draft_min, draft_pipes=self.decode != "checked", data=data)
        t1 = time.perf_counter()
        array = self.crop_array(img, approximate=drafted)
        thumb = make_thumbnail(img, self.thumbnail_size) if self.thumbnail_size else None
        return Crop(
            array, t1 - fetched, time.perf_counter() - t1, thumb, drafted=drafted, fetch_s=fetched - t0, fetched=remote
        )

    def resized_size(self, w: int, h: int) -> tuple[int, int]:
        """The size torchvision's F.resize(img, [resize]) gives a w x h PIL image (shorter side = resize)."""
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)
        return (new_short, new_long) if w <= h else (new_long, new_short)

    def too_long(self, w: int, h: int) -> bool:
        """Resized whole, a picture this long for its width would exceed MAX_RESIZED_PIXELS."""
        new_w, new_h = self.resized_size(w, h)
        return new_w * new_h > MAX_RESIZED_PIXELS

    def crop_array(self, img: Any, approximate: bool = False, reducing_gap: float | None = None) -> np.ndarray:
        """torchvision's F.resize(img, [resize], BILINEAR) then F.center_crop(img, [crop]) on a PIL
        image, in Pillow alone: the same sizes, the same rounding, the same Pillow calls (except for a
        picture whose resize would exceed MAX_RESIZED_PIXELS: it is made as an approximate one).

        approximate (a drafted image, not the reference's pixels anyway): resize only the crop's own
        region (Pillow's `box`), the same filter at positions that differ in float rounding, so some
        pixels come out 1 apart; far less work than resizing the whole drafted picture
        (docs/performance.md, "Defaults").
        reducing_gap: Pillow's, for the approximate resize; only benchmarks/studies/draft_agreement.py
        sets it (the CLI does not: measured on real photos it flips more images, docs/performance.md,
        "Where a 12-MP JPEG's time goes").
        """
        from PIL import Image

        w, h = img.size
        new_w, new_h = self.resized_size(w, h)
        top = int(round((new_h - self.crop) / 2.0))
        left = int(round((new_w - self.crop) / 2.0))
        fits = self.crop <= new_w and self.crop <= new_h
        approximate = approximate or self.too_long(w, h)
        if approximate and fits and (new_w, new_h) != (w, h):
            sx, sy = w / new_w, h / new_h
            box = (left * sx, top * sy, (left + self.crop) * sx, (top + self.crop) * sy)
            small = img.resize((self.crop, self.crop), Image.Resampling.BILINEAR, box=box, reducing_gap=reducing_gap)
            return np.asarray(small, dtype=np.uint8)
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        if not fits:  # torchvision pads first; never with resize >= crop
            import torchvision.transforms.functional as F

            return np.asarray(F.center_crop(img, [self.crop]), dtype=np.uint8)
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
