"""Hostile inputs, generated: random bytes, real encodings cut short or with bytes changed, odd modes,
huge sizes declared in tiny files, through the decode entry point; hostile path lists through
read_path_list and iter_inputs. Nothing escapes as an exception (every failure is an error record),
nothing hangs (each call runs under a hang guard), and memory stays bounded.

Derandomized, with no example database: a CI run is reproducible and writes nothing into the repo.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from conftest import HANG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from shufflenet_cli.decode.decoded import Decoded, decode_one
from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.inputs.paths import STALL, Input, WalkOptions, iter_inputs, read_path_list

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # Pillow on bad files

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=20),  # far above any one example: a hang guard, not a speed bound
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PREP = Preprocess(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def within_hang_guard(fn: Callable[[], Any]) -> Any:
    """fn() in a thread; the test fails (instead of hanging) if it has not returned after HANG seconds."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=HANG)
    if worker.is_alive():
        pytest.fail(f"still running after {HANG} s")
    if errors:
        raise errors[0]
    return out[0]


class Peak:
    """How far this process's resident memory rises during a call above where it was before (Linux:
    the peak is reset through /proc/self/clear_refs; elsewhere nothing is measured)."""

    def __init__(self) -> None:
        self.rise: int | None = None

    def __enter__(self) -> Peak:
        self._start = _reset_peak_kib()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is not None:
            self.rise = (_status_kib("VmHWM") - self._start) * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s*(\d+)", f.read())[1])  # type: ignore[index]


def _reset_peak_kib() -> int | None:
    """The resident size now, with the peak reset to it; None where Linux's /proc is not there."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS")
    except OSError:
        return None


# --- images -------------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _samples() -> dict[str, bytes]:
    """Small real encodings in each format and an odd mode or two of each."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    deep = Image.fromarray(rng.integers(0, 65536, (24, 32), dtype=np.uint16))
    floats = Image.fromarray(rng.normal(size=(24, 32)).astype(np.float32))
    out = {
        "png": _encode(rgb, "PNG"),
        "png_rgba": _encode(rgb.convert("RGBA"), "PNG"),
        "png_p": _encode(rgb.convert("P"), "PNG", transparency=3),
        "png_16": _encode(deep, "PNG"),
        "png_1": _encode(rgb.convert("1"), "PNG"),
        "jpeg": _encode(rgb, "JPEG", quality=80),
        "jpeg_progressive": _encode(rgb, "JPEG", progressive=True),
        "jpeg_cmyk": _encode(rgb.convert("CMYK"), "JPEG"),
        "gif": _encode(rgb.convert("P"), "GIF"),
        "tiff": _encode(rgb, "TIFF"),
        "tiff_deflate_16": _encode(deep, "TIFF", compression="tiff_deflate"),
        "tiff_float": _encode(floats, "TIFF"),
        "tiff_la": _encode(rgb.convert("LA"), "TIFF"),
        "bmp": _encode(rgb, "BMP"),
        "ppm": _encode(rgb, "PPM"),
        "ico": _encode(rgb, "ICO"),
    }
    try:
        out["webp"] = _encode(rgb, "WEBP")
        out["webp_lossless_rgba"] = _encode(rgb.convert("RGBA"), "WEBP", lossless=True)
    except (KeyError, OSError):  # a Pillow built without WebP
        pass
    return out


SAMPLES = _samples()


def _png_declaring(w: int, h: int, depth: int, colour: int) -> bytes:
    """A tiny PNG whose header declares w x h (a decompression bomb's shape), with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _with_size(data: bytes, fmt: str, w: int, h: int) -> bytes:
    """A real encoding whose header is rewritten to declare w x h (GIF's screen, BMP's DIB header)."""
    if fmt == "gif":
        return data[:6] + struct.pack("<HH", w & 0xFFFF, h & 0xFFFF) + data[10:]
    return data[:18] + struct.pack("<ii", w & 0x7FFFFFFF, h & 0x7FFFFFFF) + data[26:]  # BMP


def _mutated(data: bytes, changes: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data[: max(cut, 0)] if cut < len(data) else data)
    for at, value in changes:
        if buf:
            buf[at % len(buf)] = value
    return bytes(buf)


sizes = st.integers(min_value=0, max_value=2**31 - 1)
hostile_images = st.one_of(
    st.binary(max_size=4096).map(lambda b: ("bin", b)),
    st.builds(
        lambda name, changes, cut: (name, _mutated(SAMPLES[name], changes, cut)),
        st.sampled_from(sorted(SAMPLES)),
        st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=4),
        st.integers(0, 2**16),
    ),
    st.builds(
        lambda w, h, mode: ("png", _png_declaring(w, h, *mode)),
        sizes,
        sizes,
        st.sampled_from([(8, 0), (16, 0), (8, 2), (16, 2), (8, 3), (8, 4), (16, 6), (1, 0)]),
    ),
    st.builds(
        lambda fmt, w, h: (fmt, _with_size(SAMPLES[fmt], fmt, w, h)), st.sampled_from(["gif", "bmp"]), sizes, sizes
    ),
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture
def bomb_limit(monkeypatch):
    """Pillow's bomb limit lowered for the run (the refusal comes at twice it): a declared size under it
    is allocated before its data turns out missing, and a few hundred of those would be slow, not wrong."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2**22)


@settings(FUZZ, max_examples=300)
@given(case=hostile_images)
def test_a_hostile_image_is_a_record_never_an_exception(fuzz_dir, bomb_limit, case):
    """Also in bounded memory: no decode takes more than four times the largest 8-bit RGB picture the
    bomb limit lets through (twice MAX_IMAGE_PIXELS), whatever the file declares."""
    name, data = case
    path = fuzz_dir / f"input.{name.split('_')[0]}"
    path.write_bytes(data)
    with Peak() as peak:
        got = within_hang_guard(lambda: decode_one(PREP, Input(str(path))))
    assert isinstance(got, Decoded) and got.input.path == str(path)
    if got.error is None:
        assert got.array.shape == (224, 224, 3) and got.array.dtype == np.uint8
    else:
        assert isinstance(got.error, str) and got.error
        assert not got.error.startswith("decoder failed"), got.error  # a bug's catch-all, not an expected error
    if peak.rise is not None:
        assert peak.rise <= 4 * (2 * Image.MAX_IMAGE_PIXELS) * 3, f"memory rose by {peak.rise >> 20} MiB"


# --- path lists ---------------------------------------------------------------------------------


class Trickle(io.RawIOBase):
    """A stream that hands its bytes over in the given chunk sizes, as a pipe may."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes = data, sizes or [len(data) or 1]

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        size = self.sizes[0]
        self.sizes = self.sizes[1:] + self.sizes[:1]
        piece, self.data = self.data[: min(size, n)], self.data[min(size, n) :]
        return piece

    read = read1  # type: ignore[assignment]


name_bytes = st.one_of(
    st.sampled_from([b"a.jpg", b"sub", b"sub/b.png", b"missing.jpg", b"-", b".", b"..", b"*.jpg", b"[", b"**"]),
    st.binary(max_size=40),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(250, 5000).map(lambda n: b"x" * n),  # past NAME_MAX and PATH_MAX
)
path_lists = st.lists(name_bytes, max_size=12)
separators = st.sampled_from([b"\n", b"\r\n", b"\0"])


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    (root / "sub").mkdir()
    for name in ("a.jpg", "sub/b.png", "sub/c.txt"):
        (root / name).write_bytes(b"")
    return root


@settings(FUZZ, max_examples=150)
@given(names=path_lists, sep=separators, chunks=st.lists(st.integers(1, 64), max_size=5))
def test_a_path_list_splits_as_its_separator_says_whatever_the_chunks(names, sep, chunks):
    data = sep.join(names) + (sep if names else b"")
    null = sep == b"\0"
    got = within_hang_guard(lambda: list(read_path_list(Trickle(data, chunks), null=null)))  # type: ignore[arg-type]
    lines = data.split(b"\0") if null else [line.rstrip(b"\r") for line in data.split(b"\n")]
    assert got == [os.fsdecode(line) for line in lines if line]


@settings(FUZZ, max_examples=150)
@given(names=path_lists, sep=separators, args=st.lists(name_bytes, max_size=3))
def test_a_hostile_path_list_gives_inputs_never_an_exception(tree, names, sep, args):
    """Lines and arguments of any bytes (NULs, non-UTF-8, too long, glob characters, folders) become
    inputs, each a path or an error, in order: nothing raises."""
    data = sep.join(names) + sep
    argv = [os.fsdecode(a) for a in args] + ["-"]
    cwd = os.getcwd()
    os.chdir(tree)
    try:
        got = within_hang_guard(
            lambda: list(iter_inputs(argv, WalkOptions(), stdin=io.BytesIO(data), null=sep == b"\0"))
        )
    finally:
        os.chdir(cwd)
    assert all(isinstance(i, Input) and i is not STALL for i in got)
    assert all(isinstance(i.path, str) and (i.error is None or i.error) for i in got)
