"""Opening one image file as an upright 8-bit RGB picture, whatever its format and mode.

Every failure is an `ImageError` whose message becomes that input's error record.
"""

from __future__ import annotations

import io
import math
import os
import stat
from typing import IO

from PIL import Image, ImageFile, UnidentifiedImageError

from shufflenet_cli.decode.modes import eight_bit
from shufflenet_cli.image_formats import register_plugins, sniff

ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSE = {  # EXIF orientation -> the transpose that makes the stored pixels upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
JPEG_FORMATS = ("JPEG", "MPO")  # what libjpeg decodes; MPO: a phone's JPEG with more pictures (a gain map) after it
_MAX_REPAIR_BYTES = 256 * 2**20  # the second try without metadata reads at most this much of a file
# A named pipe whose writer holds it open but sends nothing this long is that input's error: long
# enough for any producer that is producing (a decoder, a network copy), short enough not to stall a run.
PIPE_TIMEOUT = 30.0


class ImageError(Exception):
    """This input cannot be classified; the message says why."""


def load_rgb(path: str, draft_min: int | None = None) -> Image.Image:
    """Decode `path` (first frame), apply EXIF orientation, and convert to RGB (see decode_rgb)."""
    return decode_rgb(path, draft_min)[0]


def decode_rgb(
    path: str, draft_min: int | None = None, draft_pipes: bool = True, data: bytes | None = None
) -> tuple[Image.Image, bool]:
    """(the upright RGB picture of `path`'s first frame, whether it was decoded at a reduced DCT scale).

    draft_min: for JPEGs (and an MPO's first picture), let libjpeg decode at a reduced DCT scale as
    long as the shorter side stays at or above this many pixels (None decodes at full size).
    draft_pipes=False decodes a named pipe's bytes at full size: they cannot be read again exactly.
    data: the file's bytes, where the caller has read them already (errors still name `path`).

    When Pillow trips over a PNG's or JPEG's optional metadata (a bad checksum on a text chunk, a
    short APP segment), the file is tried once more with that metadata dropped: broken metadata
    never costs the pixels.
    """
    register_plugins()
    source: str | bytes = path if data is None else data
    try:
        if data is None:
            source = _read_pipe(path) or path
        if isinstance(source, bytes) and not draft_pipes:
            draft_min = None
        return _decode(source, draft_min)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused (over Pillow's Image.MAX_IMAGE_PIXELS limit): {exc}") from None
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(f"broken symbolic link: its target {os.readlink(path)!r} does not exist") from None
        raise ImageError("file not found (it vanished after it was listed)") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not an image file") from None
    except PermissionError:
        raise ImageError("permission denied: cannot read this file") from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data; each is this file's error
        error = exc
    repaired = _without_metadata(source)
    if repaired is not None:
        try:
            return _decode(repaired, draft_min)
        except Exception:  # noqa: BLE001 - report the original error, not the retry's
            pass
    raise ImageError(_describe(path, source, error)) from None


def _read_pipe(path: str) -> bytes | None:
    """A named pipe's bytes, read whole; None for anything else (Pillow opens those itself).

    Opened without waiting for a writer: a FIFO that no process has open for writing (one left in a
    photo folder) reads as empty and becomes an error record, instead of blocking its decode worker,
    and with it the whole run, for ever. A pipe being written (`cat photo.jpg | ... /dev/stdin`) is
    read; one whose writer sends nothing for PIPE_TIMEOUT seconds is given up on, an error record too.
    """
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            return None
    except OSError:
        return None  # Image.open says what is wrong
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks, size = [], 0
        while size <= _MAX_REPAIR_BYTES:
            chunk = _read_some(fd)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if not chunks:
        raise ImageError("a named pipe (FIFO) that nothing is writing to: not an image file")
    if size > _MAX_REPAIR_BYTES:
        raise ImageError(f"a named pipe (FIFO) carrying over {_MAX_REPAIR_BYTES >> 20} MiB: not read")
    return b"".join(chunks)


def _read_some(fd: int) -> bytes:
    """Up to 1 MiB from a non-blocking pipe, b"" at its end; ImageError after PIPE_TIMEOUT seconds of nothing.
    The wait is a poll() with a timeout, not a blocked read, so no worker waits on a silent writer for ever."""
    import select

    while True:
        try:
            return os.read(fd, 1 << 20)
        except BlockingIOError:  # a writer holds it open, nothing to read yet
            pass
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(PIPE_TIMEOUT * 1000):
            raise ImageError(f"a named pipe (FIFO) whose writer sent nothing for {PIPE_TIMEOUT:g} s: given up on")


def _open(source: str | bytes) -> IO[bytes]:
    """A file's path, or the bytes already read from a named pipe, as an open binary file."""
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _decode(source: str | bytes, draft_min: int | None) -> tuple[Image.Image, bool]:
    pic, orientation, drafted = _eight_bit_of(source, draft_min)
    return _upright(pic, orientation), drafted


def upright_rgb(im: Image.Image) -> Image.Image:
    """An image already open (the Python API's in-memory images) as a file's decode makes it: 8-bit,
    EXIF orientation applied, RGB. A new image: `im` itself is never changed."""
    im.load()
    pic = eight_bit(im, full_scale=_full_scale(im))
    return _upright(pic if pic is not im else im.copy(), orientation_of(im))


def _upright(pic: Image.Image, orientation: int) -> Image.Image:
    # deep grey comes out as 8-bit L: turned and widened to RGB only now that the wide source is freed
    if orientation in _TRANSPOSE:
        pic = pic.transpose(_TRANSPOSE[orientation])
    return pic if pic.mode == "RGB" else pic.convert("RGB")


def _eight_bit_of(source: str | bytes, draft_min: int | None) -> tuple[Image.Image, int, bool]:
    """(the first frame in 8 bits, its EXIF orientation, whether drafted); the decoded source is
    freed on return (closing it alone leaves its pixels held while `im` is in scope)."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:  # Pillow closes a path
        drafted = draft_min is not None and draft_min > 0 and im.format in JPEG_FORMATS and _draft(im, draft_min)
        im.load()
        return eight_bit(im, full_scale=_full_scale(im)), orientation_of(im), drafted


def orientation_of(im: Image.Image) -> int:
    """EXIF (or XMP) orientation, 1 when absent or unreadable: broken EXIF never costs the image."""
    try:
        return int(im.getexif().get(ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - any metadata error: keep the pixels as stored
        return 1


def _draft(im: Image.Image, draft_min: int) -> bool:
    """Ask libjpeg for the smallest DCT scale that keeps the shorter side >= draft_min; True if one applies."""
    w, h = im.size
    short = min(w, h)
    if short < 2 * draft_min:
        return False  # no DCT scaling would apply; decode exactly
    factor = draft_min / short
    im.draft(None, (math.ceil(w * factor), math.ceil(h * factor)))
    return im.size != (w, h)  # draft() may settle on scale 1 (a 3001 x 2048 JPEG), which is exact


def _full_scale(im: Image.Image) -> int | None:
    """65535 for 16-bit data (Pillow opens a 16-bit PGM, whatever its maxval, as mode I over 0..65535)."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.format in ("PNG", "PPM")):
        return 65535
    return None


def _without_metadata(source: str | bytes) -> bytes | None:
    """The file's bytes minus its optional metadata, for PNG and JPEG; None for anything else.

    PNG keeps its critical chunks plus tRNS and eXIf with good checksums; JPEG drops APPn and COM
    segments before the scan, except EXIF (orientation) and a well-formed Adobe marker (colour transform).
    """
    try:
        with _open(source) as f:
            head = f.read(8)
            if not head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8")):
                return None
            data = head + f.read(_MAX_REPAIR_BYTES)
    except OSError:
        return None
    return _png_essential_chunks(data) if data.startswith(b"\x89PNG") else _jpeg_without_app_segments(data)


def _png_essential_chunks(data: bytes) -> bytes:
    import zlib

    out, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos : pos + 12 + length]
        crc_ok = zlib.crc32(chunk[4:-4]) == int.from_bytes(chunk[-4:], "big")
        if kind[:1].isupper() or (kind in (b"tRNS", b"eXIf") and crc_ok):
            out.append(chunk)
        pos += 12 + length
        if kind == b"IEND":
            break
    return b"".join(out)


def _jpeg_without_app_segments(data: bytes) -> bytes:
    out, pos = [data[:2]], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is pixel data
            break
        segment = data[pos : pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")]
        exif = marker == 0xE1 and segment[4:10] == b"Exif\0\0"
        adobe = marker == 0xEE and segment[4:9] == b"Adobe" and len(segment) >= 16
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE) or exif or adobe:
            out.append(segment)
        pos += len(segment)
    out.append(data[pos:])
    return b"".join(out)


def _describe(path: str, source: str | bytes, exc: Exception) -> str:
    try:
        with _open(source) as f:
            head = f.read(256)
    except OSError:
        head = b""
    found = sniff(head)
    Image.init()
    if isinstance(exc, UnidentifiedImageError):
        if not head:
            return "cannot identify image file: the file is empty (0 bytes)"
        if found and found[1] in Image.OPEN:
            return f"looks like a {found[0]}, but its header is truncated or corrupt"
        if found:
            what, _, hint = found
            return f"{what}: this Pillow cannot open it" + (f" ({hint})" if hint else "")
        if _looks_like_text(head):
            return "cannot identify image file: it is a text file, not an image"
        ext = os.path.splitext(path)[1].lower() or "no extension"
        return f"cannot identify image file: not an image, or a format this Pillow cannot open ({ext})"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError):
        text = f"the file ends early ({text})"
    return f"cannot decode {found[0] if found else 'image'}: {text}"


def _looks_like_text(head: bytes) -> bool:
    import codecs

    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at the end is fine
    except UnicodeDecodeError:
        return False
    return b"\0" not in head


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error record, not a half-grey guess
