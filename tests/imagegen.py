"""Generators for real-world image files (rotated, transparent, CMYK/YCCK, 16-bit, animated, broken, ...).

Each writes one small file with Pillow (or raw bytes) and returns its path, so that tests never depend
on files checked into the repository.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

# Stored pixels for each EXIF orientation, from the upright picture (the inverse of what a viewer does).
STORE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # a viewer turns it 90 degrees clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # a viewer turns it 90 degrees counter-clockwise
}
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def blocks(size=(64, 48), seed: int = 0, block: int = 8) -> Image.Image:
    """Random flat colour blocks aligned to JPEG's 8x8 grid: a quality-100, 4:4:4 JPEG of it decodes
    to the same pixels whichever way it is turned, so rotated copies can be compared exactly."""
    rng = np.random.default_rng(seed)
    w, h = size
    cells = rng.integers(0, 256, size=(h // block, w // block, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(cells, np.ones((block, block, 1), dtype=np.uint8)))


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def rotated(path: Path, upright: Image.Image, orientation: int) -> Path:
    """`upright` stored turned, with the EXIF orientation that tells a viewer how to turn it back."""
    stored = upright.transpose(STORE_FOR_ORIENTATION[orientation]) if orientation != 1 else upright
    save(stored, path, exif=exif_bytes(orientation))
    return path


def save(img: Image.Image, path: Path, **options) -> Path:
    """Save with lossless or near-lossless settings for the format chosen by the suffix."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        options = {"quality": 100, "subsampling": 0, **options}
    elif suffix == ".webp":
        options = {"lossless": True, **options}
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **options)
    return path


def gradient16(width: int = 256, height: int = 4, top: int = 65535) -> np.ndarray:
    """A left-to-right 16-bit grey ramp 0..top."""
    return np.tile(np.linspace(0, top, width).round().astype(np.uint16), (height, 1))


def pgm16(path: Path, values: np.ndarray, maxval: int = 65535) -> Path:
    """A binary 16-bit PGM (P5, big-endian samples), written by hand so that maxval is ours."""
    h, w = values.shape
    path.write_bytes(b"P5\n%d %d\n%d\n" % (w, h, maxval) + values.astype(">u2").tobytes())
    return path


def frames(size=(16, 16)) -> list[Image.Image]:
    return [Image.new("RGB", size, c) for c in (RED, GREEN, BLUE)]


def animated(path: Path) -> Path:
    """Three frames, red then green then blue (GIF, WebP, APNG, TIFF or MPO by suffix)."""
    first, *rest = frames()
    options = {"save_all": True, "append_images": rest, "duration": 100}
    if path.suffix == ".mpo":
        options.pop("duration")
    return save(first, path, **options)


def cmyk_source(seed: int = 1) -> Image.Image:
    """A CMYK picture with all four inks in use."""
    c, m, y, _ = blocks((32, 32), seed).convert("CMYK").split()
    k = Image.new("L", c.size, 40)
    return Image.merge("CMYK", (c, m, y, k))


def ycck_jpeg(path: Path, cmyk: Image.Image) -> Path:
    """A real YCCK JPEG (Adobe transform 2) holding `cmyk`.

    Pillow writes only plain CMYK JPEGs, so: store the YCbCr of the C, M, Y planes (inverted, as
    Pillow and Adobe store CMYK) in a CMYK JPEG, then flip the Adobe marker's transform byte to 2.
    libjpeg then turns the YCC back into CMY when decoding.
    """
    c, m, y, k = cmyk.split()
    ycc = Image.merge("RGB", (c, m, y)).convert("YCbCr").split()
    inverted = [band.point(lambda v: 255 - v) for band in ycc]
    buf = io.BytesIO()
    Image.merge("CMYK", (*inverted, k)).save(buf, "JPEG", quality=100, subsampling=0)
    data = bytearray(buf.getvalue())
    adobe = data.index(b"Adobe")
    data[adobe + 11] = 2  # "Adobe", version(2), flags0(2), flags1(2), transform(1)
    path.write_bytes(bytes(data))
    return path


def lab_tiff(path: Path, rgb: Image.Image) -> Path:
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    ImageCms.applyTransform(rgb, to_lab).save(path)
    return path


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_chunk(path: Path, img: Image.Image, chunk: bytes, **options) -> Path:
    """A PNG of `img` with one extra chunk inserted before the pixel data."""
    buf = io.BytesIO()
    img.save(buf, "PNG", **options)
    data = buf.getvalue()
    at = data.index(b"IDAT") - 4
    path.write_bytes(data[:at] + chunk + data[at:])
    return path


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with_segment(path: Path, img: Image.Image, segment: bytes, **options) -> Path:
    """A JPEG of `img` with one extra marker segment right after SOI."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    data = buf.getvalue()
    path.write_bytes(data[:2] + segment + data[2:])
    return path


def truncated(path: Path, source: Path, keep: float | int) -> Path:
    data = source.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    return path


# First bytes of formats this Pillow cannot open; each is enough for a sniffer to name the format.
HEIC = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 40
JPEG_XL_CODESTREAM = b"\xff\x0a" + b"\xfa\x7f\x01\x90\x08" + b"\x00" * 40
JPEG_XL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\x00\x00\x00\x14ftypjxl " + b"\x00" * 40
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>\n'
