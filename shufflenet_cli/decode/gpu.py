"""--gpu-decode: JPEGs decoded in batches by nvJPEG on the GPU, then resized and cropped there.

Data flow, one way:
  worker thread   `JpegReader(path)`: reads the file's bytes and its EXIF orientation, where the file is
                  a JPEG that nvJPEG takes (8-bit RGB or grayscale); anything else gets the CPU path
                  (`Preprocess`, Pillow) there and then, so every file still gets a record.
  batch (main)    `JpegBatchDecoder.decode(chunk)`: one `torchvision.io.decode_jpeg(list, device=cuda)`
                  call per batch, EXIF orientation as flips/transposes, then the weights' eval
                  transform on tensors exactly as `weights.transforms()` runs it on a tensor image:
                  `resize([resize], bilinear, antialias=True)` then `center_crop([crop])`, batched
                  over images of one size. A batch nvJPEG refuses is retried one image at a time, and
                  an image it still refuses is decoded by Pillow on the CPU.

Results differ slightly from the default (Pillow) path, since the decoder and the resize
arithmetic differ; tests/test_gpu_decode.py states the tolerance. The transform half runs on any
torch device, so the CPU tests check the same code that CUDA runs.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from shufflenet_cli.decode.preprocess import Crop, Preprocess

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"  # EOI
NVJPEG_MODES = ("RGB", "L")  # CMYK/YCCK and 12-bit JPEGs take the Pillow path
RESIZE_PIXELS = 3 * 2**26  # uint8 values per resize call: 128 ImageNet-size photos at once, 5 of 12 MP


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG file's bytes, still compressed, and what the GPU needs to make it upright."""

    data: bytes
    orientation: int = 1  # EXIF orientation, 1..8


class JpegReader:
    """The worker-thread half: a `Crop` whose `jpeg` is set (decoded later, on the GPU, with its
    batch), or the Pillow path's ready `Crop` for files nvJPEG does not take. Raises ImageError."""

    def __init__(self, prep: Preprocess) -> None:
        self.prep = prep

    @property
    def crop(self) -> int:
        """The size of the crops the Pillow path makes (for decode processes' shared-memory slots)."""
        return self.prep.crop

    def __call__(self, path: str) -> Crop:
        t0 = time.perf_counter()
        jpeg = read_jpeg(path)
        if jpeg is None:
            return self.prep(path)
        thumb = None
        if size := self.prep.thumbnail_size:  # for --report: Pillow decodes a small DCT-scaled copy of the bytes read
            from shufflenet_cli.decode.images import decode_rgb
            from shufflenet_cli.decode.preprocess import make_thumbnail

            thumb = make_thumbnail(decode_rgb(path, size, data=jpeg.data)[0], size)
        return Crop(None, time.perf_counter() - t0, 0.0, thumb, jpeg=jpeg)


def read_jpeg(path: str) -> EncodedJpeg | None:
    """The file's bytes where it is a JPEG that nvJPEG decodes (of an MPO, its first picture's); None
    for anything else (and for any file Pillow cannot even open: the Pillow path then says why, as for
    every other input)."""
    import io

    from PIL import Image

    from shufflenet_cli.decode.images import JPEG_FORMATS, orientation_of

    if not os.path.isfile(path):  # a named pipe, a device: the Pillow path reads it without blocking
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(3)
            if head != JPEG_MAGIC:
                return None
            data = head + f.read()
        with Image.open(io.BytesIO(data)) as im:  # the header only: format, mode, EXIF
            if im.format not in JPEG_FORMATS or im.mode not in NVJPEG_MODES:
                return None
            if im.format == "MPO":
                data = _first_picture(im, data)
            orientation = orientation_of(im)
        if not data.rstrip(b"\x00").endswith(JPEG_END):  # cut short (or data after the end): nvJPEG
            return None  # would fill in what is missing; Pillow says what is wrong or decodes it
        return EncodedJpeg(data, orientation)
    except Exception:  # noqa: BLE001 - unreadable here: the Pillow path turns it into a clear error record
        return None


def _first_picture(im: Any, data: bytes) -> bytes:
    """An MPO's first picture (the photo; a phone's gain map or a second view follows it): a whole
    JPEG of the size its MP index gives. An index that does not fit leaves an empty result, and the
    file to Pillow."""
    size = int(im.mpinfo[0xB002][0]["Size"])
    return data[:size] if 0 < size <= len(data) else b""


# EXIF orientation -> the same transpose as Pillow's (images._TRANSPOSE), on a C,H,W tensor
_UPRIGHT: dict[int, Callable[[Any], Any]] = {
    2: lambda t: t.flip(-1),  # FLIP_LEFT_RIGHT
    3: lambda t: t.flip(-2, -1),  # ROTATE_180
    4: lambda t: t.flip(-2),  # FLIP_TOP_BOTTOM
    5: lambda t: t.transpose(-2, -1),  # TRANSPOSE
    6: lambda t: t.transpose(-2, -1).flip(-1),  # ROTATE_270 (90 degrees clockwise)
    7: lambda t: t.transpose(-2, -1).flip(-2, -1),  # TRANSVERSE
    8: lambda t: t.transpose(-2, -1).flip(-2),  # ROTATE_90 (counter-clockwise)
}


def upright(t: Any, orientation: int) -> Any:
    fix = _UPRIGHT.get(orientation)
    return t if fix is None else fix(t)


class JpegBatchDecoder:
    """The batch half, on the main thread: `decode(jpegs)` -> one H,W,3 uint8 crop per JPEG on
    `device`, or None where even Pillow must be asked (the caller then runs the CPU path)."""

    def __init__(self, prep: Preprocess, device: Any) -> None:
        self.prep = prep
        self.device = device

    def decode_chunk(self, chunk: list[Any]) -> None:
        """A chunk's waiting JPEGs (decoding.Decoded with `jpeg` set), decoded in one batch; any the GPU
        refuses, or all of them where the GPU fails otherwise (out of memory, say), take the Pillow path."""
        from shufflenet_cli.decode.decoded import decode_one

        waiting = [d for d in chunk if d.jpeg is not None]
        if not waiting:
            return
        try:
            crops = self.decode([d.jpeg for d in waiting])
        except Exception:  # noqa: BLE001 - costs this chunk the GPU's speed, never its records
            crops = [None] * len(waiting)
        for d, crop in zip(waiting, crops, strict=True):
            if crop is None:
                again = decode_one(self.prep, d.input)
                d.array, d.error, d.thumbnail = again.array, again.error, d.thumbnail or again.thumbnail
            else:
                d.array = crop
            d.jpeg = None

    def stack(self, crops: list[Any]) -> Any:
        """One N,H,W,3 uint8 batch on the device from crops that are device tensors or host arrays (the
        files that took the Pillow path)."""
        import torch

        from shufflenet_cli.backends.ops import as_tensor

        return torch.stack([c if isinstance(c, torch.Tensor) else as_tensor(c).to(self.device) for c in crops])

    def decode(self, jpegs: list[EncodedJpeg]) -> list[Any | None]:
        images = self._decode_all(jpegs)
        upright_images = [
            None if im is None else upright(im, j.orientation) for im, j in zip(images, jpegs, strict=True)
        ]
        return self.transform(upright_images)

    def transform(self, images: list[Any | None]) -> list[Any | None]:
        """weights.transforms()' resize and centre crop on C,H,W uint8 tensors, batched by size;
        returns H,W,C crops (the layout the backends take), None for a picture too long for its width
        to resize whole (the Pillow path crops it from its region)."""
        import torch
        from torchvision.transforms import functional as F

        out: list[Any | None] = [None] * len(images)
        by_size: dict[tuple[int, ...], list[Any]] = {}  # C,H,W -> the images of that size (and their positions)
        for i, im in enumerate(images):
            if im is not None and not self.prep.too_long(im.shape[-1], im.shape[-2]):  # too long: Pillow's region
                by_size.setdefault(tuple(im.shape), []).append((i, im))
        for (c, h, w), same_size in by_size.items():
            # the resize works in float32 on the whole stack, several times the uint8 pixels' memory
            # (docs/performance.md, "Defaults"), so a batch of phone photos is resized a few at a time
            step = max(1, RESIZE_PIXELS // (c * h * w))
            for start in range(0, len(same_size), step):
                rows = [i for i, _ in same_size[start : start + step]]
                batch = torch.stack([im for _, im in same_size[start : start + step]])
                batch = F.resize(batch, [self.prep.resize], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
                batch = F.center_crop(batch, [self.prep.crop]).permute(0, 2, 3, 1)
                for i, crop in zip(rows, batch, strict=True):
                    out[i] = crop
        return out

    def _decode_all(self, jpegs: list[EncodedJpeg]) -> list[Any | None]:
        """nvJPEG on the whole batch; where it refuses the batch, one image at a time."""
        if not jpegs:
            return []
        try:
            return list(self._nvjpeg([j.data for j in jpegs]))
        except Exception:  # noqa: BLE001 - one bad file fails the whole batched call
            pass
        images: list[Any | None] = []
        for j in jpegs:
            try:
                images.append(self._nvjpeg([j.data])[0])
            except Exception:  # noqa: BLE001 - this one goes to Pillow, which says what is wrong
                images.append(None)
        return images

    def _nvjpeg(self, blobs: list[bytes]) -> list[Any]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision >= 0.29 marks its decoders deprecated
            return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device)


def check_available(device: Any) -> None:
    """UsageError unless --gpu-decode can run here: a CUDA device and torchvision's decode_jpeg."""
    from shufflenet_cli.errors import UsageError

    if getattr(device, "type", str(device)) != "cuda":
        raise UsageError(
            f"--gpu-decode needs a CUDA device, and this run uses {device}",
            hint="pass --device cuda on a machine with an NVIDIA GPU, or leave --gpu-decode out",
        )
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"--gpu-decode needs torchvision.io.decode_jpeg, which this torchvision lacks: {exc}",
            hint="leave --gpu-decode out; Pillow decodes on the CPU",
        ) from None
