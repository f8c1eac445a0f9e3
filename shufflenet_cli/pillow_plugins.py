"""What Pillow can open in this installation: optional plugins registered once, and the file
extensions folders are searched for. A leaf: both finding inputs and decoding them need it.
"""

from __future__ import annotations

import functools

# Taken from directories even where this Pillow cannot open them (HEIC, JPEG XL without a plugin):
# such a photo becomes an error record that names its format, never a silent skip.
DEFAULT_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "mpo", "heic", "heif", "avif", "jxl"}
)



@functools.cache
def register_plugins() -> None:
    """Once per process: let Pillow open HEIF/HEIC and JPEG XL where their plugins are installed.

    (pillow-heif, pillow-jxl-plugin; without them such files are error records naming the format.)
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


def parse_extensions(text: str) -> frozenset[str]:
    return frozenset(e.strip().lstrip(".").lower() for e in text.split(",") if e.strip())
