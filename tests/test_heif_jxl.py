"""HEIC/HEIF and JPEG XL: decoded like any photo where the extras ([heif], [jxl]) are installed, EXIF
orientation included; named with the extra to install where they are not; listed by `info`.

The files are made here with the plugins themselves (both encode). The test extra installs them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import imagegen as gen
import numpy as np
import pytest
from conftest import HANG
from PIL import Image

from shufflenet_cli.decode.images import ImageError, load_rgb
from shufflenet_cli.image_formats import PLUGIN_EXTRAS, register_plugins

pillow_heif = pytest.importorskip("pillow_heif")
pillow_jxl = pytest.importorskip("pillow_jxl")

# lossy settings, as a phone or an export would write them
SAVE = {".heic": {"quality": 90}, ".heif": {"quality": 90}, ".jxl": {"quality": 90}}
MARKER = (0, 0, 24, 24)  # a red square in the upright picture's top-left corner


def upright() -> Image.Image:
    """A landscape picture (96 x 64) with smooth content and a red marker in its top-left corner."""
    x = np.linspace(0, 160, 96)[None, :, None]
    y = np.linspace(0, 96, 64)[:, None, None]
    pixels = np.broadcast_to(x + y, (64, 96, 3)).astype(np.uint8).copy()
    pixels[..., 2] = 200
    img = Image.fromarray(pixels)
    img.paste((255, 0, 0), MARKER)
    return img


def save(path: Path, orientation: int = 1) -> Path:
    """upright() stored turned, with the EXIF orientation that turns it back (as a phone stores it)."""
    register_plugins()
    stored = upright().transpose(gen.STORE_FOR_ORIENTATION[orientation]) if orientation != 1 else upright()
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, exif=gen.exif_bytes(orientation), **SAVE.get(path.suffix.lower(), {}))
    return path


def assert_upright(img: Image.Image) -> None:
    """Turned exactly once: the long side across, the marker top-left, and close to the original
    (the lossy codecs move pixels a little, never a picture's worth)."""
    assert img.size == (96, 64)
    marker = np.asarray(img.crop(MARKER), dtype=float).mean(axis=(0, 1))
    assert marker[0] > 200 and marker[1] < 60 and marker[2] < 60, marker
    diff = np.abs(np.asarray(img, dtype=float) - np.asarray(upright(), dtype=float)).mean()
    assert diff < 8, diff


@pytest.fixture
def without_plugins(monkeypatch):
    """This process as if pillow-heif and pillow-jxl-plugin were not installed: their formats out of
    Pillow's registry for the test (registered first, so that they come back afterwards)."""
    register_plugins()
    Image.init()
    ids = {pillow_id for _, pillow_id, _ in PLUGIN_EXTRAS}
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if k not in ids})
    monkeypatch.setattr(Image, "ID", [k for k in Image.ID if k not in ids])


# --- decoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".heic", ".heif", ".jxl"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_decodes_upright_whatever_the_exif_orientation(tmp_path, suffix, orientation):
    """Sideways (6, 8) and upside-down (3) photos come out upright, turned once: pillow-heif turns a
    HEIC itself (irot/imir) and resets its EXIF orientation; a JPEG XL's EXIF is applied here."""
    assert_upright(load_rgb(str(save(tmp_path / f"photo{suffix}", orientation))))


@pytest.mark.parametrize("suffix", [".heic", ".jxl"])
def test_the_crop_is_the_same_pictures_png_crop(tmp_path, prep, suffix):
    """Orientation 6 on a non-square photo: the model's crop is the upright PNG's, within the codec's loss."""
    photo = save(tmp_path / f"photo{suffix}", 6)
    png = tmp_path / "upright.png"
    upright().save(png)
    crop, reference = prep(str(photo)), prep(str(png))
    a, b = np.asarray(crop.array, dtype=float), np.asarray(reference.array, dtype=float)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 8


def test_a_folder_picks_up_heic_heif_and_jxl(run, tmp_path):
    folder = tmp_path / "phone"
    for name in ("a.heic", "b.HEIC", "c.heif", "d.jxl"):
        save(folder / name, 6)
    upright().save(folder / "e.png")

    r = run(folder)

    assert r.exit_code == 0, r.stderr
    records = r.jsonl()
    assert [Path(rec["path"]).name for rec in records] == ["a.heic", "b.HEIC", "c.heif", "d.jxl", "e.png"]
    assert all(rec.get("predictions") for rec in records), records


def test_a_damaged_heic_or_jxl_is_an_error_record_not_a_hint(tmp_path):
    """With the plugin installed, a broken file is said to be broken, not unsupported."""
    for name, data in (("bad.heic", gen.HEIC), ("bad.jxl", gen.JPEG_XL_CODESTREAM)):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError) as caught:
            load_rgb(str(path))
        assert "shufflenet-cli[" not in str(caught.value)
        assert ("HEIF/HEIC" if name.endswith("heic") else "JPEG XL") in str(caught.value)


# --- without the extras -------------------------------------------------------------------------


def _cannot(what: str, extra: str) -> str:
    return "^" + re.escape(f"{what}: this Pillow cannot open it (pip install 'shufflenet-cli[{extra}]')") + "$"


WITHOUT = {
    "photo.heic": (gen.HEIC, _cannot("HEIF/HEIC image", "heif")),
    "photo.jxl": (gen.JPEG_XL_CODESTREAM, _cannot("JPEG XL image", "jxl")),
    "boxed.jxl": (gen.JPEG_XL_CONTAINER, _cannot("JPEG XL image", "jxl")),
    "heic_named.jpg": (gen.HEIC, _cannot("HEIF/HEIC image", "heif")),  # the bytes decide, not the name
}


@pytest.mark.parametrize("name", WITHOUT)
def test_without_the_extra_the_error_names_it(tmp_path, without_plugins, name):
    data, message = WITHOUT[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError, match=message):
        load_rgb(str(path))


def test_without_the_extra_a_real_photo_is_an_error_record_naming_it(run, tmp_path, without_plugins):
    folder = tmp_path / "phone"
    save(folder / "a.heic", 6)
    save(folder / "b.jxl", 6)
    upright().save(folder / "c.png")

    r = run(folder)

    assert r.exit_code == 1
    assert "Traceback" not in r.stderr
    heic, jxl, png = r.jsonl()
    assert "pip install 'shufflenet-cli[heif]'" in heic["error"]
    assert "pip install 'shufflenet-cli[jxl]'" in jxl["error"]
    assert png["predictions"]


# A child Python in which the plugins cannot be imported at all, as on an installation without them.
_NO_PLUGINS = """
import sys
sys.modules["pillow_heif"] = None
sys.modules["pillow_jxl"] = None
from shufflenet_cli.decode.images import ImageError, load_rgb
for path in sys.argv[1:]:
    try:
        load_rgb(path)
        print("decoded")
    except ImageError as exc:
        print(exc)
"""


def test_with_the_plugins_not_importable_the_error_names_the_extra(tmp_path):
    heic, jxl = save(tmp_path / "a.heic", 6), save(tmp_path / "b.jxl")
    out = subprocess.run(
        [sys.executable, "-c", _NO_PLUGINS, str(heic), str(jxl)],
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "HEIF/HEIC image: this Pillow cannot open it (pip install 'shufflenet-cli[heif]')",
        "JPEG XL image: this Pillow cannot open it (pip install 'shufflenet-cli[jxl]')",
    ]


# --- shufflenet info ----------------------------------------------------------------------------


def test_info_json_lists_the_formats(cli):
    r = cli("info", "--format", "json")
    assert r.exit_code == 0, r.stderr
    formats = r.json()["formats"]
    assert {"JPEG", "PNG", "WEBP", "HEIF", "JXL"} <= set(formats["readable"])
    assert formats["extras"] == {
        "heif": {"formats": "HEIF/HEIC", "installed": True, "install": "pip install 'shufflenet-cli[heif]'"},
        "jxl": {"formats": "JPEG XL", "installed": True, "install": "pip install 'shufflenet-cli[jxl]'"},
    }


def test_info_says_which_extra_would_add_a_format(cli, without_plugins):
    data = cli("info", "--format", "json").json()["formats"]
    assert "HEIF" not in data["readable"] and "JXL" not in data["readable"]
    assert not data["extras"]["heif"]["installed"] and not data["extras"]["jxl"]["installed"]

    table = cli("info").stdout
    assert "image formats" in [line.strip() for line in table.splitlines()]
    heif = next(line for line in table.splitlines() if "│ heif " in line)
    assert "no: pip install 'shufflenet-cli[heif]'" in heif


def test_help_does_not_import_the_plugins():
    code = (
        "import sys\nsys.argv = ['shufflenet', '--help']\nfrom shufflenet_cli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('pillow_heif', 'pillow_jxl', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG, check=False)
    assert out.stdout.splitlines()[-1] == "[]", out.stdout + out.stderr
