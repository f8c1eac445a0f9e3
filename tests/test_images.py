"""Every real-world image file decodes upright to 8-bit RGB: EXIF orientation, modes and transparency,
CMYK/YCCK/LAB, 16- and 32-bit, several frames, broken metadata, huge or far-too-long pictures, the
formats of this Pillow build. (Files that cannot be decoded: test_image_errors.py.)

Each test generates its own file in tmp_path (see imagegen.py). Tolerances are stated where a lossy
codec sits between the source pixels and the decoded ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import imagegen as gen
import numpy as np
import pytest
from conftest import HANG, make_image
from PIL import Image, ImageCms, JpegImagePlugin, features

from shufflenet_cli.decode import images, near_ties, preprocess
from shufflenet_cli.decode.images import load_rgb
from shufflenet_cli.decode.preprocess import Preprocess


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def opened(path, load: bool = False) -> Image.Image:
    """The picture at `path` with its file closed again: its header (mode, size, info), or with load its pixels too."""
    with Image.open(path) as im:
        if load:
            im.load()
        return im


def max_diff(a: Image.Image, b: Image.Image) -> int:
    assert a.size == b.size
    return int(np.abs(pixels(a.convert("RGB")) - pixels(b.convert("RGB"))).max())


def predict_json(cli, random_weights, *paths) -> tuple[int, list[dict], str]:
    r = cli("predict", *paths, "-m", "x0_5", "--weights", random_weights, "--backend", "torch", "-f", "json", "-k", "5")
    return r.exit_code, json.loads(r.stdout), r.stderr


# --- EXIF orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, suffix, orientation):
    upright = gen.blocks((64, 48))
    path = gen.rotated(tmp_path / f"o{orientation}{suffix}", upright, orientation)
    with Image.open(path) as stored:
        assert stored.getexif()[0x0112] == orientation
        if orientation >= 5:
            assert stored.size == (48, 64)  # stored sideways

    img = load_rgb(str(path))

    assert img.mode == "RGB" and img.size == (64, 48)
    # block-aligned flat colours: quality-100 4:4:4 JPEG and lossless WebP are exact up to 1 level
    assert max_diff(img, upright) <= 1


def test_rotated_copies_predict_like_the_upright_image(tmp_path, cli, random_weights):
    upright = gen.blocks((64, 48), seed=3)
    groups = [  # an upright file, then turned copies in the same format
        [gen.rotated(tmp_path / f"t{o}.jpg", upright, o) for o in (1, 3, 6, 8)],
        [gen.rotated(tmp_path / f"t{o}.webp", upright, o) for o in (1, 2, 5, 7)],
    ]
    # the sideways copies are stored 48x64, so an unrotated decode would not even give the same crop
    assert opened(groups[0][2]).size == (48, 64)

    code, records, stderr = predict_json(cli, random_weights, *groups[0], *groups[1])

    assert code == 0, stderr
    for group in (records[:4], records[4:]):
        reference = group[0]["predictions"]
        for rec in group[1:]:
            preds = rec["predictions"]
            assert [p["index"] for p in preds] == [p["index"] for p in reference], rec["path"]
            for p, q in zip(preds, reference, strict=True):
                assert p["probability"] == pytest.approx(q["probability"], abs=1e-6)


def test_orientation_survives_the_metadata_repair(tmp_path):
    """A JPEG whose broken APP0 makes Pillow give up is retried without it, and keeps its EXIF."""
    upright = gen.blocks((64, 48))
    stored = upright.transpose(gen.STORE_FOR_ORIENTATION[6])
    path = gen.jpeg_with_segment(
        tmp_path / "short_jfif.jpg",
        stored,
        gen.jpeg_segment(0xE0, b"JFIF\x00\x01"),
        quality=100,
        subsampling=0,
        exif=gen.exif_bytes(6),
    )
    with pytest.raises((OSError, SyntaxError, ValueError)):
        Image.open(path).load()  # Pillow alone cannot read it

    img = load_rgb(str(path))

    assert img.size == (64, 48)
    assert max_diff(img, upright) <= 1


# --- modes and transparency ---------------------------------------------------------------------


def _transparent_corner(mode: str) -> tuple[Image.Image, dict]:
    """A 4x4 image in `mode` whose pixel (0, 0) is fully transparent and (3, 3) opaque; save options."""
    if mode == "RGBA":
        img = Image.new("RGBA", (4, 4), (200, 30, 60, 255))
        img.putpixel((0, 0), (10, 20, 30, 0))
        return img, {}
    if mode == "LA":
        img = Image.new("LA", (4, 4), (90, 255))
        img.putpixel((0, 0), (10, 0))
        return img, {}
    if mode == "PA":  # palette with per-entry alpha (tRNS)
        img = Image.new("P", (4, 4), 1)
        img.putpalette([10, 20, 30, 200, 30, 60])
        img.putpixel((0, 0), 0)
        return img, {"transparency": bytes([0, 255])}
    if mode == "P":  # palette with one transparent index
        img = Image.new("P", (4, 4), 1)
        img.putpalette([10, 20, 30, 200, 30, 60])
        img.putpixel((0, 0), 0)
        return img, {"transparency": 0}
    if mode == "RGB":  # colour key
        img = Image.new("RGB", (4, 4), (200, 30, 60))
        img.putpixel((0, 0), (7, 8, 9))
        return img, {"transparency": (7, 8, 9)}
    if mode == "L":  # grey key
        img = Image.new("L", (4, 4), 90)
        img.putpixel((0, 0), 7)
        return img, {"transparency": 7}
    if mode == "I;16":  # 16-bit grey key
        img = Image.fromarray(np.full((4, 4), 30000, dtype=np.uint16))
        img.putpixel((0, 0), 1000)
        return img, {"transparency": 1000}
    raise AssertionError(mode)


OPAQUE = {
    "RGBA": (200, 30, 60),
    "LA": (90, 90, 90),
    "PA": (200, 30, 60),
    "P": (200, 30, 60),
    "RGB": (200, 30, 60),
    "L": (90, 90, 90),
    "I;16": (117, 117, 117),
}  # 30000 * 255 / 65535


@pytest.mark.parametrize(
    "mode, suffix",
    [
        ("RGBA", ".png"),
        ("RGBA", ".webp"),
        ("LA", ".png"),
        ("PA", ".png"),
        ("P", ".png"),
        ("P", ".gif"),
        ("RGB", ".png"),
        ("L", ".png"),
        ("I;16", ".png"),
    ],
)
def test_transparency_is_composited_onto_white(tmp_path, mode, suffix):
    img, options = _transparent_corner(mode)
    path = gen.save(img, tmp_path / f"alpha_{mode.replace(';', '')}{suffix}", **options)

    out = load_rgb(str(path))

    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((3, 3)) == OPAQUE[mode]


def test_half_transparent_pixel_is_blended_with_white(tmp_path):
    path = gen.save(Image.new("RGBA", (2, 2), (0, 0, 0, 128)), tmp_path / "half.png")
    r, g, b = load_rgb(str(path)).getpixel((0, 0))
    assert r == g == b and 125 <= r <= 129  # black at 50% over white, not black


@pytest.mark.parametrize("mode", ["L", "1", "P"])
def test_grey_bilevel_and_palette_images(tmp_path, mode):
    source = gen.blocks((16, 16), seed=5)
    img = source.convert(mode)
    path = gen.save(img, tmp_path / f"{mode}.png")

    out = load_rgb(str(path))

    assert out.mode == "RGB"
    assert max_diff(out, img.convert("RGB")) == 0
    if mode == "1":
        assert set(np.unique(pixels(out))) <= {0, 255}


# --- CMYK, YCCK and LAB -------------------------------------------------------------------------


def test_cmyk_jpeg_matches_pillows_conversion(tmp_path):
    cmyk = gen.cmyk_source()
    path = gen.save(cmyk, tmp_path / "cmyk.jpg")
    assert opened(path).mode == "CMYK"
    # tolerance: 2 levels for quality-100 JPEG rounding
    assert max_diff(load_rgb(str(path)), cmyk.convert("RGB")) <= 2


def test_ycck_jpeg_matches_pillows_conversion(tmp_path):
    cmyk = gen.cmyk_source()
    path = gen.ycck_jpeg(tmp_path / "ycck.jpg", cmyk)
    assert opened(path).info["adobe_transform"] == 2  # really YCCK
    # tolerance: 3 levels (JPEG rounding plus the YCC round trip)
    assert max_diff(load_rgb(str(path)), cmyk.convert("RGB")) <= 3


def test_cmyk_tiff_matches_pillows_conversion(tmp_path):
    cmyk = gen.cmyk_source()
    path = gen.save(cmyk, tmp_path / "cmyk.tif")
    assert max_diff(load_rgb(str(path)), cmyk.convert("RGB")) == 0  # lossless


def test_lab_tiff_comes_back_as_its_srgb_colours(tmp_path):
    rgb = gen.blocks((16, 16), seed=7)
    path = gen.lab_tiff(tmp_path / "lab.tif", rgb)
    assert opened(path).mode == "LAB"

    out = load_rgb(str(path))

    to_rgb = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    assert max_diff(out, ImageCms.applyTransform(opened(path, load=True), to_rgb)) == 0  # Pillow's own conversion
    # and the original colours, up to 8-bit LAB quantisation (worst near the gamut edge, where a dark
    # channel moves by ~13 levels per LAB step)
    diff = np.abs(pixels(out) - pixels(rgb))
    assert diff.mean() <= 5 and diff.max() <= 16


# --- 16-bit and 32-bit --------------------------------------------------------------------------


def _ramp_ok(out: Image.Image) -> np.ndarray:
    row = pixels(out)[0, :, 0]
    assert out.mode == "RGB"
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)  # monotonic: nothing wrapped or clipped
    assert 120 <= row.mean() <= 135  # a full-range ramp, not white
    return row


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_gradient_is_scaled_not_clipped(tmp_path, suffix):
    path = gen.save(Image.fromarray(gen.gradient16()), tmp_path / f"ramp16{suffix}")
    assert opened(path).mode == "I;16"
    row = _ramp_ok(load_rgb(str(path)))
    assert len(np.unique(row)) == 256


def test_16_bit_pgm_gradient(tmp_path):
    path = gen.pgm16(tmp_path / "ramp.pgm", gen.gradient16())
    _ramp_ok(load_rgb(str(path)))


def test_16_bit_pgm_uses_its_maxval(tmp_path):
    path = gen.pgm16(tmp_path / "max1000.pgm", np.array([[0, 250, 500, 1000]]), maxval=1000)
    assert list(pixels(load_rgb(str(path)))[0, :, 0]) == [0, 64, 128, 255]


def test_dark_16_bit_image_stays_dark(tmp_path):
    """Scaled by the type's range (x * 255 / 65535), not stretched: 16-bit 0..2000 is nearly black."""
    path = gen.save(Image.fromarray(gen.gradient16(top=2000)), tmp_path / "dark16.png")
    row = pixels(load_rgb(str(path)))[0, :, 0]
    assert row.max() == round(2000 * 255 / 65535)


def test_32_bit_integer_tiff_uses_the_datas_range(tmp_path):
    ramp = gen.gradient16().astype(np.int32) * 1000 - 5_000_000
    path = gen.save(Image.fromarray(ramp), tmp_path / "int32.tif")
    assert opened(path).mode == "I"
    _ramp_ok(load_rgb(str(path)))


def test_32_bit_integers_within_0_255_are_kept(tmp_path):
    values = np.array([[0, 10, 100, 200]], dtype=np.int32)
    path = gen.save(Image.fromarray(values), tmp_path / "int32_small.tif")
    assert list(pixels(load_rgb(str(path)))[0, :, 0]) == [0, 10, 100, 200]


def test_float_tiff_uses_the_datas_range(tmp_path):
    ramp = gen.gradient16().astype(np.float32) / 65535 * 7.5 - 2.0
    path = gen.save(Image.fromarray(ramp), tmp_path / "float.tif")
    assert opened(path).mode == "F"
    _ramp_ok(load_rgb(str(path)))


def test_float_tiff_in_0_1_is_scaled_by_255(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    path = gen.save(Image.fromarray(values), tmp_path / "float01.tif")
    assert list(pixels(load_rgb(str(path)))[0, :, 0]) == [0, 64, 128, 255]


def test_float_tiff_with_nan_and_infinity(tmp_path):
    values = np.array([[np.nan, 0.0, 5.0, 10.0, np.inf]], dtype=np.float32)
    path = gen.save(Image.fromarray(values), tmp_path / "float_nan.tif")
    assert list(pixels(load_rgb(str(path)))[0, :, 0]) == [0, 0, 128, 255, 255]


# --- first frame --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, tolerance", [(".gif", 0), (".webp", 0), (".png", 0), (".tif", 0), (".mpo", 2)])
def test_multi_frame_files_give_the_first_frame(tmp_path, suffix, tolerance):
    path = gen.animated(tmp_path / f"anim{suffix}")
    with Image.open(path) as im:
        assert getattr(im, "n_frames", 1) == 3

    out = load_rgb(str(path))

    assert max_diff(out, gen.frames()[0]) <= tolerance  # tolerance: MPO frames are JPEGs


# --- broken metadata, decodable pixels ----------------------------------------------------------


def test_progressive_jpeg(tmp_path):
    img = gen.blocks((64, 48))
    path = gen.save(img, tmp_path / "progressive.jpg", progressive=True)
    assert opened(path).info.get("progressive")
    assert max_diff(load_rgb(str(path)), img) <= 1


BROKEN_JPEG_SEGMENTS = {
    "junk_exif": gen.jpeg_segment(0xE1, b"Exif\x00\x00" + b"\x00\x01\x02"),
    "exif_ifd_past_end": gen.jpeg_segment(0xE1, b"Exif\x00\x00II*\x00\xff\xff\x00\x00"),
    "exif_huge_count": gen.jpeg_segment(0xE1, b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 20),
    "exif_bad_orientation": gen.jpeg_segment(0xE1, gen.exif_bytes(9)),
    "not_exif_app1": gen.jpeg_segment(0xE1, b"junkjunkjunk"),
    "short_jfif_app0": gen.jpeg_segment(0xE0, b"JFIF\x00\x01"),
    "short_adobe_app14": gen.jpeg_segment(0xEE, b"Adobe\x00"),
    "garbage_mpf_app2": gen.jpeg_segment(0xE2, b"MPF\x00II*\x00\x08\x00\x00\x00\xff\xff\x00\x00"),
    "bad_icc_app2": gen.jpeg_segment(0xE2, b"ICC_PROFILE\x00\x05\x02garbage"),
    "photoshop_app13": gen.jpeg_segment(0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\xff\xff\xff\xff"),
    "binary_comment": gen.jpeg_segment(0xFE, b"\xff\xfe\x00\x80"),
}


@pytest.mark.parametrize("case", BROKEN_JPEG_SEGMENTS)
def test_jpeg_with_broken_metadata_is_decoded(tmp_path, case):
    img = gen.blocks((64, 48))
    path = gen.jpeg_with_segment(tmp_path / f"{case}.jpg", img, BROKEN_JPEG_SEGMENTS[case], quality=100, subsampling=0)
    out = load_rgb(str(path))
    assert out.size == (64, 48)
    assert max_diff(out, img) <= 1


BROKEN_PNG_CHUNKS = {
    "bad_crc_text": gen.png_chunk(b"tEXt", b"key\x00value", crc=1),
    "short_phys": gen.png_chunk(b"pHYs", b"\x00"),
    "empty_gama": gen.png_chunk(b"gAMA", b""),
    "bad_ztxt": gen.png_chunk(b"zTXt", b"key\x00\x00not zlib"),
    "bad_itxt": gen.png_chunk(b"iTXt", b"key\x00\x01\x00\x00\x00not zlib"),
    "bad_iccp": gen.png_chunk(b"iCCP", b"icc\x00\x00garbage"),
    "bad_exif": gen.png_chunk(b"eXIf", b"MM\x00*\x00\x00\x00\x08\xff\xff"),
    "unknown_chunk": gen.png_chunk(b"abCd", b"whatever"),
}


@pytest.mark.parametrize("case", BROKEN_PNG_CHUNKS)
def test_png_with_broken_metadata_is_decoded(tmp_path, case):
    img = gen.blocks((64, 48))
    path = gen.png_with_chunk(tmp_path / f"{case}.png", img, BROKEN_PNG_CHUNKS[case])
    assert max_diff(load_rgb(str(path)), img) == 0


def test_png_repair_keeps_transparency(tmp_path):
    img, options = _transparent_corner("P")
    broken = gen.png_with_chunk(tmp_path / "broken.png", img, BROKEN_PNG_CHUNKS["bad_crc_text"], **options)
    with pytest.raises((OSError, SyntaxError, ValueError)):
        Image.open(broken).load()

    assert load_rgb(str(broken)).getpixel((0, 0)) == (255, 255, 255)


def test_odd_but_valid_files_are_classified_through_the_cli(tmp_path, cli, random_weights):
    """Broken metadata, progressive and 1x1 files: all classified, and Pillow's warnings stay off stdout."""
    img = gen.blocks((64, 48))
    paths = [
        gen.jpeg_with_segment(tmp_path / "junk_exif.jpg", img, BROKEN_JPEG_SEGMENTS["exif_huge_count"]),
        gen.jpeg_with_segment(tmp_path / "bad_mpf.jpg", img, BROKEN_JPEG_SEGMENTS["garbage_mpf_app2"]),
        gen.jpeg_with_segment(tmp_path / "short_app0.jpg", img, BROKEN_JPEG_SEGMENTS["short_jfif_app0"]),
        gen.png_with_chunk(tmp_path / "bad_crc.png", img, BROKEN_PNG_CHUNKS["bad_crc_text"]),
        gen.save(img, tmp_path / "progressive.jpg", progressive=True),
    ]
    dots = [gen.save(Image.new("RGB", (1, 1), (30, 120, 200)), tmp_path / f"dot{s}") for s in (".png", ".jpg", ".gif")]
    assert all(load_rgb(str(p)).size == (1, 1) for p in dots)

    code, records, stderr = predict_json(cli, random_weights, *paths, *dots)  # stdout must parse as JSON

    assert code == 0, stderr
    assert [rec["path"] for rec in records] == [str(p) for p in paths + dots]
    assert all(len(rec["predictions"]) == 5 for rec in records)
    assert "Traceback" not in stderr


# --- sizes --------------------------------------------------------------------------------------


def test_huge_jpeg_is_decoded_at_a_reduced_dct_scale_unless_exact_decode(tmp_path, cli, random_weights, monkeypatch):
    path = tmp_path / "huge.jpg"  # 5000 x 4000 = 20 megapixels
    Image.linear_gradient("L").resize((5000, 4000)).convert("RGB").save(path, quality=60)
    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        drafts.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)

    img = load_rgb(str(path), draft_min=512)
    assert img.size == (1250, 1000)  # libjpeg's 1/4 scale: the shorter side stays >= 512
    assert drafts == [((640, 512), (1250, 1000))]
    assert load_rgb(str(path), draft_min=2000).size == (2500, 2000)  # only a 1/2 scale fits

    monkeypatch.setattr(near_ties, "LOGIT_MARGIN", 100.0)  # every result counts as a near-tie
    runs = {}
    for flag in ("--exact-decode", None, "--fast-decode"):
        drafts.clear()
        code, records, stderr = predict_json(cli, random_weights, path, *([flag] if flag else []))
        assert code == 0, stderr
        assert len(records[0]["predictions"]) == 5
        runs[flag] = (records, [decoded for _, decoded in drafts])
    assert runs["--exact-decode"][1] == []  # full size
    assert runs[None][1] == [(2500, 2000)]  # the default: the shorter side stays >= 4 x 256
    assert runs["--fast-decode"][1] == [(1250, 1000)]  # >= 2 x 256
    # The default's check decodes a near-tie again at full size (without a draft) and keeps that
    # result, the exact decode's.
    assert runs[None][0] == runs["--exact-decode"][0]
    assert runs["--fast-decode"][0] != runs["--exact-decode"][0]


@pytest.mark.parametrize("size", [(10000, 1), (1, 10000)])
def test_a_picture_far_longer_than_wide_is_classified_without_a_giant_resize(
    tmp_path, cli, random_weights, size, monkeypatch
):
    """10000 x 1 resized to 256 px on its shorter side would be 2,560,000 x 256 (2.6 GB): it is resized
    over the crop's region only, and every resize stays within preprocess.MAX_RESIZED_PIXELS."""
    path = gen.save(Image.fromarray(np.random.default_rng(0).integers(0, 256, size[::-1] + (3,), dtype=np.uint8)),
                    tmp_path / "line.png")  # fmt: skip
    made: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        made.append(tuple(size))
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    crop = Preprocess(256, 224, (0.5,) * 3, (0.5,) * 3)(str(path))
    assert crop.array.shape == (224, 224, 3) and not crop.drafted  # not "drafted": no second, full decode
    assert made and all(w * h <= preprocess.MAX_RESIZED_PIXELS for w, h in made)

    monkeypatch.setattr(Image.Image, "resize", resize)
    r = cli("predict", path, "-m", "x0_5", "--weights", random_weights, "--backend", "torch", "-f", "jsonl", "-k", "1")
    assert r.stdout.endswith("\n"), r.stdout[-200:]
    records = r.jsonl()
    assert len(records) == 1 and "error" not in records[0] and records[0]["predictions"]


def _deep(mode: str, side: int) -> Image.Image:
    """A side x side picture in a deep mode: a ramp across, with NaN and infinities in the float one."""
    ramp = np.tile(np.arange(side, dtype=np.int64) * 65535 // max(side - 1, 1), (side, 1))
    if mode == "I;16":
        return Image.fromarray(ramp.astype(np.uint16))
    if mode == "I":
        return Image.fromarray((ramp * 1000 - 5_000_000).astype(np.int32))
    values = ramp.astype(np.float32) / 65535 * 7.5 - 2.0
    values[0, :3] = [np.nan, np.inf, -np.inf]
    return Image.fromarray(values)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_pictures_convert_tile_by_tile_to_the_same_pixels(mode, monkeypatch):
    """Tiles (a few pixels each here, across row ends) give what one whole-picture conversion gives."""
    img = _deep(mode, 37)
    from shufflenet_cli.decode import modes

    whole = pixels(modes.to_rgb(img, 65535 if mode == "I;16" else None))
    monkeypatch.setattr(modes, "TILE_PIXELS", 5)
    assert np.array_equal(pixels(modes.to_rgb(img, 65535 if mode == "I;16" else None)), whole)
    assert len(list(modes.tiles((37, 37)))) > 37  # really in tiles


# VmHWM: this process's own peak (ru_maxrss would carry pytest's over the exec), in KiB
_PEAK = """import re, sys
import numpy
from PIL import Image
from shufflenet_cli.decode.images import load_rgb
from shufflenet_cli.image_formats import register_plugins
def peak():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s*(\\d+)", f.read())[1])
register_plugins(); Image.init()
before = peak()
size = load_rgb(sys.argv[1]).size
print(before, peak(), *size)
"""


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("I", ".tif"), ("F", ".tif")])
def test_a_deep_picture_decodes_in_a_small_multiple_of_its_8_bit_size(tmp_path, mode, suffix):
    """A 16-bit, 32-bit or float picture's decode (in a child process: its peak memory over what it
    held before) stays within 4x the picture's 8-bit RGB size; float64 copies of the whole took 10x."""
    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads its peak memory from Linux's /proc")
    side = 4000
    path = gen.save(_deep(mode, side), tmp_path / f"deep{suffix}")
    assert opened(path).mode == mode
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, timeout=HANG, check=False
    )
    assert out.returncode == 0, out.stderr
    before, peak, w, h = map(int, out.stdout.split())
    assert (w, h) == (side, side)
    rgb_bytes = side * side * 3
    assert (peak - before) * 1024 <= 4 * rgb_bytes, f"{(peak - before) * 1024 / rgb_bytes:.1f}x the 8-bit RGB size"


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix, feature, tolerance",
    [(".avif", "avif", 40), (".jp2", "jpg_2000", 0), (".j2k", "jpg_2000", 0)],
)
def test_formats_in_this_pillow_build(tmp_path, suffix, feature, tolerance):
    if not features.check(feature):
        pytest.skip(f"this Pillow has no {feature}")
    img = gen.blocks((64, 48))
    options = {"quality": 100, "subsampling": "4:4:4"} if suffix == ".avif" else {"irreversible": False}
    path = gen.save(img, tmp_path / f"img{suffix}", **options)
    out = load_rgb(str(path))
    assert out.size == (64, 48)
    # tolerance: AVIF is lossy even at quality 100 4:4:4; JPEG 2000's 5/3 wavelet is lossless
    assert max_diff(out, img) <= tolerance


def test_an_installed_heif_plugin_is_registered(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("pillow_heif")
    fake.register_heif_opener = lambda: calls.append("registered")
    monkeypatch.setitem(sys.modules, "pillow_heif", fake)
    images.register_plugins.cache_clear()
    try:
        path = make_image(tmp_path / "ok.png")
        load_rgb(str(path))
        load_rgb(str(path))
    finally:
        images.register_plugins.cache_clear()
    assert calls == ["registered"]  # once, before the first decode
