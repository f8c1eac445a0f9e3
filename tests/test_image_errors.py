"""Never lose an image: a file that is not a decodable picture (empty, text, truncated, a bomb, a
format this Pillow cannot open, unreadable, a FIFO, a folder), one that changes between listing and
reading, or a decoder that crashes, gives one error record that says what is wrong, in its place,
and costs no other input anything. A folder of every real-world case gives one record per file.

Every file is generated here (see imagegen.py); nothing depends on files checked into the repository.
"""

from __future__ import annotations

import builtins
import itertools
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import imagegen as gen
import numpy as np
import pytest
from conftest import HANG, make_image
from PIL import Image, features

from shufflenet_cli.decode import images, preprocess
from shufflenet_cli.decode.decoded import Decoded, decode_one
from shufflenet_cli.decode.images import ImageError, load_rgb
from shufflenet_cli.inputs.paths import Input

# --- files that are not a decodable picture ---------------------------------------------------


def _jpeg(tmp_path) -> Path:
    return make_image(tmp_path / "source.jpg", size=(64, 48), quality=90)


def _png(tmp_path) -> Path:
    return make_image(tmp_path / "source.png", size=(64, 48))


ERROR_CASES = {  # name: (make the file in tmp_path, what the message must say)
    "empty": (lambda t: _write(t / "empty.jpg", b""), r"empty \(0 bytes\)"),
    "text_named_jpg": (lambda t: _write(t / "notes.jpg", b"shopping list:\n- milk\n"), r"a text file, not an image"),
    "jpeg_cut_in_the_scan": (
        lambda t: gen.truncated(t / "cut.jpg", _jpeg(t), 0.5),
        r"^cannot decode JPEG image: image file is truncated",
    ),
    "jpeg_cut_in_the_header": (lambda t: gen.truncated(t / "cut.jpg", _jpeg(t), 100), r"JPEG image.*[Tt]runcated"),
    "jpeg_only_magic": (
        lambda t: gen.truncated(t / "cut.jpg", _jpeg(t), 3),
        r"^looks like a JPEG image, but its header is truncated or corrupt$",
    ),
    "png_cut_in_the_data": (
        lambda t: gen.truncated(t / "cut.png", _png(t), 0.5),
        r"^cannot decode PNG image: image file is truncated",
    ),
    "png_cut_in_the_header": (lambda t: gen.truncated(t / "cut.png", _png(t), 20), r"PNG image.*[Tt]runcated"),
    "random_bytes": (lambda t: _write(t / "noise.png", bytes(range(256)) * 4), r"not an image.*\(\.png\)"),
    "directory": (lambda t: _mkdir(t / "folder.jpg"), r"^is a directory, not an image file$"),
    "vanished": (lambda t: t / "gone.jpg", r"^file not found \(it vanished"),
    "broken_symlink": (lambda t: _symlink(t / "link.jpg", "missing.jpg"), r"^broken symbolic link: .*'missing.jpg'"),
    "fifo_nobody_writes": (lambda t: _mkfifo(t / "pipe.jpg"), r"^a named pipe \(FIFO\) that nothing is writing to"),
}


def _symlink(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


def _mkfifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_files_are_error_records(tmp_path, case):
    make, message = ERROR_CASES[case]
    path = make(tmp_path)
    with pytest.raises(ImageError, match=message):
        load_rgb(str(path))


def test_decompression_bomb_is_refused_with_a_clear_message(tmp_path, monkeypatch):
    path = make_image(tmp_path / "bomb.png", size=(64, 48))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # refused above twice this: 3072 pixels is
    with pytest.raises(ImageError, match=r"decompression bomb.*Pillow's Image.MAX_IMAGE_PIXELS limit.*3072 pixels"):
        load_rgb(str(path))


def test_unreadable_file_is_an_error_record(tmp_path, monkeypatch):
    path = make_image(tmp_path / "secret.jpg")
    path.chmod(0)
    _deny(monkeypatch, path)  # root reads anyway: make the open itself fail as it would for a user
    with pytest.raises(ImageError, match=r"permission denied"):
        load_rgb(str(path))


def _deny(monkeypatch, path: Path) -> None:
    if os.geteuid() != 0:
        return
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.fsdecode(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)


# HEIC and JPEG XL, with and without their extras: test_heif_jxl.py
UNSUPPORTED = {
    "scan.pdf": (gen.PDF, r"^PDF document: this Pillow cannot open it$"),
    "logo.svg": (gen.SVG, r"^SVG drawing: this Pillow cannot open it$"),
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_a_format_pillow_cannot_open_is_named(tmp_path, name):
    data, message = UNSUPPORTED[name]
    path = _write(tmp_path / name, data)
    with pytest.raises(ImageError, match=message):
        load_rgb(str(path))


def test_sniff_names_formats_from_their_first_bytes():
    assert images.sniff(gen.HEIC)[0] == "HEIF/HEIC image"
    avif = (24).to_bytes(4, "big") + b"ftypavif\x00\x00\x00\x00mif1avif"
    assert images.sniff(avif)[:2] == ("AVIF image", "AVIF")
    assert images.sniff(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")[0] == "MP4/QuickTime video"
    assert images.sniff(b"\xff\xd8\xff\xe0")[0] == "JPEG image"
    assert images.sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ")[0] == "WebP image"
    assert images.sniff(b"hello") is None


# --- named pipes ------------------------------------------------------------------------------


def test_a_named_pipe_being_written_is_read(tmp_path):
    """`cat photo.jpg | shufflenet predict /dev/stdin`: a FIFO with a writer is an image like any other."""
    data = make_image(tmp_path / "small.jpg", size=(64, 48), quality=90).read_bytes()
    assert len(data) < 60_000  # fits in the pipe's buffer, so the writer can be done before the read
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    keep = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # holds the written bytes in the pipe
    try:
        writer = os.open(fifo, os.O_WRONLY)
        os.write(writer, data)
        os.close(writer)
        img = load_rgb(str(fifo))
    finally:
        os.close(keep)
    assert img.size == (64, 48)
    assert np.array_equal(np.asarray(img), np.asarray(load_rgb(str(tmp_path / "small.jpg"))))


@pytest.mark.parametrize("decode_in", ["threads", "processes"])
def test_a_named_pipe_in_a_folder_is_an_error_record_not_a_hang(weights, tmp_path, decode_in):
    """A FIFO among the photos used to block its decode worker for ever: no output, SIGTERM ignored.
    Run in a child process with a time limit, so that a regression fails instead of hanging the suite."""
    folder = tmp_path / "photos"
    a, c = make_image(folder / "a.jpg", seed=1), make_image(folder / "c.jpg", seed=2)
    os.mkfifo(folder / "b.jpg")
    argv = ["predict", str(folder), "-m", "x0_5", "--weights", str(weights), "--backend", "torch", "-f", "jsonl"]
    proc = subprocess.run(
        [sys.executable, "-m", "shufflenet_cli", *argv, "-k", "1", "-q", "--decode-in", decode_in, "-j", "2"],
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert proc.returncode == 1, proc.stderr
    records = parse_jsonl(proc.stdout)
    assert [rec["path"] for rec in records] == [str(a), str(folder / "b.jpg"), str(c)]
    assert records[1]["error"].startswith("a named pipe (FIFO)")
    assert records[0]["predictions"] and records[2]["predictions"]


@pytest.mark.parametrize("sent", [b"", b"\x89PNG\r\n"], ids=["nothing", "a few bytes"])
def test_a_named_pipe_whose_writer_goes_quiet_is_given_up_on(tmp_path, monkeypatch, sent):
    """A writer that holds the FIFO open and sends nothing (more) blocked its decode worker for ever:
    after PIPE_TIMEOUT seconds without a byte, the input is an error record. (In a thread with a hang
    guard, so that a regression fails instead of hanging the suite.)"""
    monkeypatch.setattr(images, "PIPE_TIMEOUT", 0.2)
    fifo = tmp_path / "quiet.png"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # a writer (and a reader) that never closes: no end of file
    os.write(writer, sent)
    done: list[Decoded] = []
    try:
        worker = threading.Thread(target=lambda: done.append(decode_one(prep_of_x0_5(), Input(str(fifo)))), daemon=True)
        worker.start()
        worker.join(timeout=HANG)
    finally:
        os.close(writer)
    assert done, "the read of a silent pipe never ended"
    assert done[0].error == "a named pipe (FIFO) whose writer sent nothing for 0.2 s: given up on"


def prep_of_x0_5() -> preprocess.Preprocess:
    from shufflenet_cli.models import resolve_model

    return preprocess.Preprocess.from_spec(resolve_model("x0_5"))


# --- files that change under us, a decoder that crashes ---------------------------------------


def test_a_file_that_vanishes_while_being_read(tmp_path, monkeypatch):
    path = make_image(tmp_path / "racing.jpg")
    real_open = Image.open

    def open_after_delete(fp, *args, **kwargs):
        path.unlink()
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_after_delete)
    with pytest.raises(ImageError, match=r"file not found"):
        load_rgb(str(path))


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


# --- a folder of good and bad files -----------------------------------------------------------


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


def test_folder_of_good_and_bad_files_gives_one_record_each(tmp_path, cli, random_weights):
    folder = tmp_path / "dump"
    folder.mkdir()
    good = make_image(folder / "a_good.jpg", size=(64, 48), quality=90)
    _write(folder / "b_empty.jpg", b"")
    _write(folder / "c_text.jpg", b"not really a picture\n")
    gen.truncated(folder / "d_truncated.png", _png(tmp_path), 0.5)
    _write(folder / "e_phone.jpg", gen.HEIC)
    gen.truncated(folder / "f_truncated.jpg", _jpeg(tmp_path), 0.5)
    gen.rotated(folder / "g_rotated.webp", gen.blocks(), 6)

    r = cli("predict", folder, "-m", "x0_5", "--weights", random_weights, "--backend", "torch", "-f", "jsonl")

    assert r.exit_code == 1
    assert "Traceback" not in r.stderr
    records = r.jsonl()
    names = [
        "a_good.jpg",
        "b_empty.jpg",
        "c_text.jpg",
        "d_truncated.png",
        "e_phone.jpg",
        "f_truncated.jpg",
        "g_rotated.webp",
    ]
    assert [Path(rec["path"]).name for rec in records] == names
    assert records[0]["path"] == str(good) and records[0]["predictions"]
    assert records[-1]["predictions"]
    errors = [rec["error"] for rec in records[1:-1]]
    assert "empty" in errors[0]
    assert "text file" in errors[1]
    assert "PNG" in errors[2] and "truncated" in errors[2]
    assert "HEIF/HEIC" in errors[3]
    assert "JPEG" in errors[4] and "truncated" in errors[4]
