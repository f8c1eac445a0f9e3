"""Never lose an image (issue 3): one folder of every real-world case, crashing and vanishing files, and
records that keep streaming through a long run of failures.

Every file is generated here (see imagegen.py); nothing depends on files checked into the repository.
"""

from __future__ import annotations

import builtins
import itertools
import json
import os
import struct
import zlib
from pathlib import Path

import imagegen as gen
import numpy as np
import pytest
from conftest import make_image
from PIL import Image, features

from shufflenet_cli import pipeline
from shufflenet_cli.decode import preprocess
from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.inputs.paths import Input


@pytest.fixture
def weights(random_weights) -> Path:
    """conftest's random weights (batch-norm calibrated, so different pictures predict differently)."""
    return random_weights


def predict(cli, weights, *args, k: int = 1):
    return cli("predict", *args, "-m", "x0_5", "--weights", weights, "--backend", "torch", "-f", "jsonl", "-k", str(k))


def parse_jsonl(stdout: str) -> list[dict]:
    """Every line of stdout is one complete JSON record (no warning, no half line, nothing else)."""
    assert stdout.endswith("\n"), stdout[-200:]
    return [json.loads(line) for line in stdout.splitlines()]


def png_bytes(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height RGB (the pixel data is a few bytes, not a valid image)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + gen.png_chunk(b"IHDR", ihdr)
        + gen.png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + gen.png_chunk(b"IEND", b"")
    )


def _transparent_palette(path: Path) -> Path:
    img = Image.new("P", (16, 16), 1)
    img.putpalette([10, 20, 30, 200, 30, 60])
    img.paste(0, (0, 0, 8, 8))
    return gen.save(img, path, transparency=0)


# --- one folder, every case ---------------------------------------------------------------------


def build_every_case(folder: Path, scratch: Path, monkeypatch) -> tuple[dict[str, Path], dict[str, str]]:
    """Write every case of issue 3 into `folder`. Returns (good files by name, bad name -> required words)."""
    folder.mkdir()
    blocks = gen.blocks((64, 48), seed=3)
    good: dict[str, Path] = {}

    def ok(name: str, make) -> None:
        good[name] = make(folder / name)

    # EXIF orientation: a sideways JPEG and WebP, each next to the upright picture in its format
    ok("exif_upright.jpg", lambda p: gen.save(blocks, p))
    ok("exif_rotated6.jpg", lambda p: gen.rotated(p, blocks, 6))
    ok("exif_upright.webp", lambda p: gen.save(blocks, p))
    ok("exif_rotated8.webp", lambda p: gen.rotated(p, blocks, 8))
    # modes
    ok("mode_L.png", lambda p: gen.save(blocks.convert("L"), p))
    ok("mode_1.png", lambda p: gen.save(blocks.convert("1"), p))
    ok("mode_P.png", lambda p: gen.save(blocks.convert("P"), p))
    ok("mode_P_transparent.gif", _transparent_palette)
    ok("mode_P_transparent.png", _transparent_palette)
    ok("mode_RGBA.png", lambda p: gen.save(Image.new("RGBA", (16, 16), (200, 30, 60, 100)), p))
    ok("mode_LA.png", lambda p: gen.save(Image.new("LA", (16, 16), (90, 100)), p))
    # CMYK, YCCK, LAB
    ok("cmyk.jpg", lambda p: gen.save(gen.cmyk_source(), p))
    ok("ycck.jpg", lambda p: gen.ycck_jpeg(p, gen.cmyk_source()))
    ok("cmyk.tif", lambda p: gen.save(gen.cmyk_source(), p))
    ok("lab.tif", lambda p: gen.lab_tiff(p, gen.blocks((16, 16), seed=7)))
    # 16- and 32-bit
    ok("deep_16.png", lambda p: gen.save(Image.fromarray(gen.gradient16()), p))
    ok("deep_16.tif", lambda p: gen.save(Image.fromarray(gen.gradient16()), p))
    ok("deep_I.tif", lambda p: gen.save(Image.fromarray(gen.gradient16().astype(np.int32) * 1000 - 5_000_000), p))
    ok("deep_F.tif", lambda p: gen.save(Image.fromarray(gen.gradient16().astype(np.float32) / 9000 - 2), p))
    ok("deep_16.pgm", lambda p: gen.pgm16(p, gen.gradient16()))
    # several frames
    ok("anim.gif", gen.animated)
    ok("anim.webp", gen.animated)
    ok("anim_apng.png", gen.animated)
    ok("anim.tif", gen.animated)
    ok("anim.mpo", gen.animated)  # the extension MPO cameras (Fujifilm, Nintendo 3DS) write
    ok("anim_mpo_named.jpg", lambda p: gen.animated(p.with_suffix(".mpo")).rename(p) or p)
    # odd but decodable
    ok("progressive.jpg", lambda p: gen.save(blocks, p, progressive=True))
    corrupt_exif = gen.jpeg_segment(0xE1, b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 20)
    ok("corrupt_exif.jpg", lambda p: gen.jpeg_with_segment(p, blocks, corrupt_exif))
    ok("tiny_1x1.png", lambda p: gen.save(Image.new("RGB", (1, 1), (30, 120, 200)), p))
    # 5000 x 4000 = 20 MP: one flat colour compresses to a few hundred kB and decodes fast with draft
    ok("large_20mp.jpg", lambda p: gen.save(Image.new("RGB", (5000, 4000), (40, 120, 200)), p, quality=75))
    if features.check("avif"):
        ok("modern.avif", lambda p: gen.save(blocks, p, quality=90))
    if features.check("jpg_2000"):
        ok("modern.jp2", lambda p: gen.save(blocks, p, irreversible=False))

    # the error cases; each message must say what is wrong
    bad: dict[str, str] = {}
    (folder / "err_empty.jpg").write_bytes(b"")
    bad["err_empty.jpg"] = "empty"
    (folder / "err_text.jpg").write_text("shopping list:\n- milk\n")
    bad["err_text.jpg"] = "text file"
    jpeg = make_image(scratch / "whole.jpg", size=(64, 48), quality=90)
    png = make_image(scratch / "whole.png", size=(64, 48))
    gen.truncated(folder / "err_truncated.jpg", jpeg, 0.5)
    bad["err_truncated.jpg"] = "truncated"
    gen.truncated(folder / "err_truncated.png", png, 0.5)
    bad["err_truncated.png"] = "truncated"
    # 100000 x 100000 declared: over twice Pillow's default MAX_IMAGE_PIXELS, refused at open
    (folder / "err_bomb.png").write_bytes(png_bytes(100_000, 100_000))
    bad["err_bomb.png"] = "decompression bomb"
    (folder / "err_phone.heic").write_bytes(gen.HEIC)
    Image.init()
    bad["err_phone.heic"] = "" if "HEIF" in Image.OPEN else "HEIF"  # with a plugin: garbage HEIF, any error
    secret = make_image(folder / "err_secret.jpg", size=(32, 32), seed=9)
    secret.chmod(0)
    bad["err_secret.jpg"] = "permission"
    _deny(monkeypatch, secret)  # root reads a chmod-0 file anyway: make opening it fail as for a user

    # a directory named like an image is walked like any directory: empty, it adds no input
    (folder / "dir.jpg").mkdir()
    return good, bad


def _deny(monkeypatch, path: Path) -> None:
    if os.geteuid() != 0:
        return
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.fsdecode(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)


def test_a_folder_of_every_case_gives_one_record_per_input(tmp_path, cli, weights, monkeypatch):
    folder = tmp_path / "everything"
    good, bad = build_every_case(folder, tmp_path, monkeypatch)
    assert Image.open(good["large_20mp.jpg"]).size == (5000, 4000)
    assert Image.open(good["anim.mpo"]).format == "MPO"
    assert getattr(Image.open(good["anim_apng.png"]), "n_frames", 1) == 3

    r = predict(cli, weights, folder)

    assert "Traceback" not in r.stderr, r.stderr
    assert r.exit_code == 1, r.stderr
    records = parse_jsonl(r.stdout)
    names = sorted([*good, *bad])
    got = [Path(rec["path"]).name for rec in records]
    assert not set(names) - set(got), f"inputs with no record: {sorted(set(names) - set(got))}"
    assert got == names  # one each, in sorted order; nothing for the empty dir.jpg/
    assert all(Path(rec["path"]).parent == folder for rec in records)
    by_name = {Path(rec["path"]).name: rec for rec in records}
    for name in good:
        rec = by_name[name]
        assert "error" not in rec, rec
        assert len(rec["predictions"]) == 1, rec
    for name, words in bad.items():
        rec = by_name[name]
        assert "predictions" not in rec, rec
        assert words.lower() in rec["error"].lower(), rec
    assert "JPEG" in by_name["err_truncated.jpg"]["error"]
    assert "PNG" in by_name["err_truncated.png"]["error"]
    # decoded upright: the sideways copies classify exactly like the upright picture
    for suffix, orientation in ((".jpg", 6), (".webp", 8)):
        name = f"exif_rotated{orientation}{suffix}"
        upright = by_name[f"exif_upright{suffix}"]["predictions"][0]
        pred = by_name[name]["predictions"][0]
        assert pred["index"] == upright["index"], name
        assert pred["probability"] == pytest.approx(upright["probability"], abs=1e-5), name


# --- a crashing decoder ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc, message",
    [
        (RuntimeError("libfoo exploded"), "decoder failed: RuntimeError: libfoo exploded"),
        (MemoryError(), "out of memory"),
    ],
)
def test_a_decoder_crash_costs_one_record(tmp_path, cli, weights, monkeypatch, exc, message):
    folder = tmp_path / "five"
    paths = [make_image(folder / f"img{i}.png", size=(40 + 8 * i, 40), seed=i) for i in range(5)]
    victim = str(paths[2])
    # one batch of five, the crash in the middle: a failed input that took (or gave away) a row of the
    # batch would hand its neighbours each other's predictions
    baseline = predict(cli, weights, folder, k=5)
    assert baseline.exit_code == 0, baseline.stderr
    before = {rec["path"]: rec["predictions"] for rec in parse_jsonl(baseline.stdout)}
    # the neighbours differ from each other, so a shift by one would show
    for a, b in itertools.pairwise(paths):
        assert before[str(a)] != before[str(b)]

    real_decode = preprocess.decode_rgb
    calls = []

    def decode_rgb(path, *args, **kwargs):
        calls.append(path)
        if path == victim:
            raise exc
        return real_decode(path, *args, **kwargs)

    monkeypatch.setattr(preprocess, "decode_rgb", decode_rgb)
    r = predict(cli, weights, folder, k=5)

    assert victim in calls  # the patch is where the pipeline looks the name up
    assert r.exit_code == 1, r.stderr
    assert "Traceback" not in r.stderr
    records = parse_jsonl(r.stdout)
    assert [rec["path"] for rec in records] == [str(p) for p in paths]
    assert message in records[2]["error"]
    assert "predictions" not in records[2]
    for rec in records[:2] + records[3:]:
        assert "error" not in rec, rec
        want = before[rec["path"]]
        assert [p["index"] for p in rec["predictions"]] == [p["index"] for p in want], rec["path"]
        for got, exp in zip(rec["predictions"], want, strict=True):
            assert got["probability"] == pytest.approx(exp["probability"], abs=1e-5), rec["path"]


# --- a file that changes between listing and reading -------------------------------------------


def test_a_path_that_vanishes_between_listing_and_reading(tmp_path, cli, weights, monkeypatch):
    """One listed file is deleted before it is read, another is replaced by a directory (a directory
    where a file was expected: a directory on the command line or on stdin is walked, never read)."""
    from shufflenet_cli import runner

    folder = tmp_path / "racy"
    paths = [make_image(folder / f"img{i}.jpg", seed=i) for i in range(4)]
    gone, swapped = str(paths[1]), str(paths[2])
    real_iter_inputs = runner.iter_inputs
    listed = []

    def iter_inputs(*args, **kwargs):
        for item in real_iter_inputs(*args, **kwargs):
            if item.path in (gone, swapped) and item.path not in listed:  # listed: it existed then
                listed.append(item.path)
                os.unlink(item.path)
                if item.path == swapped:
                    os.mkdir(item.path)
            yield item

    monkeypatch.setattr(runner, "iter_inputs", iter_inputs)
    r = predict(cli, weights, folder)

    assert listed == [gone, swapped]
    assert r.exit_code == 1, r.stderr
    assert "Traceback" not in r.stderr
    records = parse_jsonl(r.stdout)
    assert [rec["path"] for rec in records] == [str(p) for p in paths]
    assert "vanished" in records[1]["error"] and "not found" in records[1]["error"]
    assert "is a directory" in records[2]["error"]
    assert records[0]["predictions"] and records[3]["predictions"]


@pytest.mark.parametrize("decode_in", ["threads", "processes"])
def test_a_named_pipe_in_a_folder_is_an_error_record_not_a_hang(weights, tmp_path, decode_in):
    """A FIFO among the photos used to block its decode worker for ever: no output, SIGTERM ignored.
    Run in a child process with a time limit, so that a regression fails instead of hanging the suite."""
    import subprocess
    import sys

    folder = tmp_path / "photos"
    a, c = make_image(folder / "a.jpg", seed=1), make_image(folder / "c.jpg", seed=2)
    os.mkfifo(folder / "b.jpg")
    argv = ["predict", str(folder), "-m", "x0_5", "--weights", str(weights), "--backend", "torch", "-f", "jsonl"]
    proc = subprocess.run(
        [sys.executable, "-m", "shufflenet_cli", *argv, "-k", "1", "-q", "--decode-in", decode_in, "-j", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    records = parse_jsonl(proc.stdout)
    assert [rec["path"] for rec in records] == [str(a), str(folder / "b.jpg"), str(c)]
    assert records[1]["error"].startswith("a named pipe (FIFO)")
    assert records[0]["predictions"] and records[2]["predictions"]


# --- failures stream -----------------------------------------------------------------------------


class CountingBackend:
    """Top-k of nothing in particular; remembers the size of each batch it was given."""

    def __init__(self):
        self.batches: list[int] = []

    def topk(self, batch: np.ndarray, k: int):
        self.batches.append(len(batch))
        n = len(batch)
        return np.full((n, k), 1.0 / k), np.tile(np.arange(k), (n, 1))

    def describe(self) -> str:
        return "counting"


@pytest.mark.parametrize("workers", [0, 2])
def test_many_failing_inputs_still_stream(tmp_path, workers):
    """10 unreadable files then 1 good one, -b 2: a chunk closes after 2 inputs, failed ones included,
    so the first records come out before the last input is even listed."""
    bad = []
    for i in range(10):
        path = tmp_path / f"bad{i:02d}.jpg"
        path.write_bytes(b"")
        bad.append(str(path))
    good = str(make_image(tmp_path / "good.jpg", size=(16, 16)))
    listed: list[str] = []

    def inputs():
        for path in [*bad, good]:
            listed.append(path)
            yield Input(path)

    prep = Preprocess(8, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    backend = CountingBackend()
    labels = [f"class{i}" for i in range(3)]
    chunks, listed_at_first_chunk = [], None
    for records in pipeline.run(inputs(), prep, backend, labels, batch_size=2, workers=workers, topk=3):
        if listed_at_first_chunk is None:
            listed_at_first_chunk = len(listed)
        chunks.append(records)

    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2, 1]  # never more than batch_size records
    assert [r.path for c in chunks for r in c] == [*bad, good]
    assert all(r.error and "empty" in r.error for c in chunks[:5] for r in c)
    assert chunks[-1][0].ok and len(chunks[-1][0].predictions) == 3
    assert backend.batches == [1]  # only the good image reaches the model
    assert good not in listed[:listed_at_first_chunk]  # the first records came before the end of the input


@pytest.mark.parametrize("size", [(10000, 1), (1, 10000)])
def test_a_picture_far_longer_than_wide_is_classified_without_a_giant_resize(tmp_path, cli, weights, size, monkeypatch):
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
    records = parse_jsonl(predict(cli, weights, str(path)).stdout)
    assert len(records) == 1 and "error" not in records[0] and records[0]["predictions"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_weights_that_give_nan_or_inf_are_named_never_an_empty_success(tmp_path, cli, images, bad, backend):
    """A damaged weights file whose scores are NaN or infinite: each image gets an error record that
    says so (exit 1) with torch; onnxruntime's export check refuses the model (exit 3). Never an empty
    list of predictions counted as classified, and no numpy warning on stderr."""
    import torch
    from conftest import random_state_dict

    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    state = random_state_dict("x0_5")
    state["fc.bias"][5] = bad
    path = tmp_path / "damaged.pth"
    torch.save(state, path)
    r = cli("predict", *images[:2], "-m", "x0_5", "--weights", path, "--backend", backend, "-f", "jsonl")
    assert "Traceback" not in r.stderr and "RuntimeWarning" not in r.stderr
    if backend == "torch":
        assert r.exit_code == 1, r.stderr
        records = parse_jsonl(r.stdout)
        assert len(records) == 2 and all("not a number (NaN or infinity)" in rec["error"] for rec in records)
        assert "0 classified, 2 failed" in r.stderr
    else:
        assert r.exit_code == 3, r.stderr
        assert "not numbers (NaN or infinity)" in r.stderr and r.stdout == ""
