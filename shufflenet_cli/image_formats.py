"""Image file formats: the optional Pillow plugins (registered once), the file extensions folders are
searched for, and a format named from a file's first bytes. A leaf: finding inputs, decoding them and
checking a --weights file all need it.
"""

from __future__ import annotations

import functools
from typing import Any

# Taken from directories even where this Pillow cannot open them (HEIC, JPEG XL without a plugin):
# such a photo becomes an error record that names its format, never a silent skip.
DEFAULT_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "mpo", "heic", "heif", "avif", "jxl"}
)


# The extras that teach Pillow a format: (extra, Pillow's format id, what the format is called).
PLUGIN_EXTRAS = (("heif", "HEIF", "HEIF/HEIC"), ("jxl", "JXL", "JPEG XL"))


def install_hint(extra: str) -> str:
    """The command that adds an extra: users install the CLI's extra, not a plugin by its own name,
    so that the version the CLI was tested with comes along."""
    return f"pip install 'shufflenet-cli[{extra}]'"


@functools.cache
def register_plugins() -> None:
    """Once per process: let Pillow open HEIF/HEIC and JPEG XL where their plugins are installed.

    (pillow-heif, pillow-jxl-plugin: the extras [heif] and [jxl]; without them such files are error
    records naming the format and the extra.)
    """
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except Exception:  # noqa: BLE001 - not installed, or broken: those files become error records
        pass
    try:
        import pillow_jxl  # noqa: F401 - registers itself on import
    except Exception:  # noqa: BLE001
        pass


def image_extensions() -> frozenset[str]:
    """The default list plus every extension Pillow can open in this installation."""
    from PIL import Image

    register_plugins()
    Image.init()
    pillow = {ext.lstrip(".").lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return DEFAULT_EXTENSIONS | frozenset(pillow)


def readable_formats() -> dict[str, Any]:
    """What this installation decodes: Pillow's format ids, and each extra with whether it is there."""
    from PIL import Image

    register_plugins()
    Image.init()
    extras = {
        extra: {"formats": what, "installed": pillow_id in Image.OPEN, "install": install_hint(extra)}
        for extra, pillow_id, what in PLUGIN_EXTRAS
    }
    return {"readable": sorted(Image.OPEN), "extras": extras}


def parse_extensions(text: str) -> frozenset[str]:
    return frozenset(e.strip().lstrip(".").lower() for e in text.split(",") if e.strip())


_MAGIC = [
    (0, b"\xff\xd8\xff", "JPEG image", "JPEG", ""),
    (0, b"\x89PNG\r\n\x1a\n", "PNG image", "PNG", ""),
    (0, b"GIF8", "GIF image", "GIF", ""),
    (8, b"WEBP", "WebP image", "WEBP", ""),
    (0, b"II*\x00", "TIFF image", "TIFF", ""),
    (0, b"MM\x00*", "TIFF image", "TIFF", ""),
    (0, b"BM", "BMP image", "BMP", ""),
    (0, b"8BPS", "Photoshop PSD image", "PSD", ""),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 image", "JPEG2000", ""),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000 image", "JPEG2000", ""),
    (0, b"\xff\x0a", "JPEG XL image", "JXL", install_hint("jxl")),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL image", "JXL", install_hint("jxl")),
    (0, b"II\xbc", "JPEG XR image", None, ""),
    (0, b"v/1\x01", "OpenEXR image", None, ""),
    (0, b"FUJIFILMCCD-RAW", "Fujifilm RAF raw photo", None, ""),
    (0, b"%PDF", "PDF document", None, ""),
]
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"heif"}


def sniff(head: bytes) -> tuple[str, str | None, str] | None:
    """(what it is, Pillow's format id or None, install hint) for the format `head` announces, else None."""
    if head[4:8] == b"ftyp":  # ISO base media: HEIF, AVIF, camera raw, video
        size = int.from_bytes(head[:4], "big")
        brands = {head[i : i + 4] for i in range(8, min(size, len(head)), 4)} - {head[12:16]}
        if brands & {b"avif", b"avis"}:
            return "AVIF image", "AVIF", "a Pillow built with AVIF support"
        if brands & _HEIF_BRANDS:
            return "HEIF/HEIC image", "HEIF", install_hint("heif")
        if b"crx " in brands:
            return "Canon CR3 raw photo", None, ""
        return "MP4/QuickTime video", None, ""
    for offset, magic, what, pillow_id, hint in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return what, pillow_id, hint
    if b"<svg" in head.lower():
        return "SVG drawing", None, ""
    return None
