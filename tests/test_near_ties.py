"""The default decode of large JPEGs: DCT-scaled, with near-ties decoded again exactly (near_ties.py)."""

from __future__ import annotations

import os
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import DOG, HANG
from PIL import Image

from shufflenet_cli.decode import near_ties
from shufflenet_cli.decode.images import ImageError
from shufflenet_cli.decode.preprocess import Crop, Preprocess


def probs_of(*rows: tuple[float, float]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


def test_close_calls_are_the_drafted_rows_whose_top_two_logits_are_within_the_margin():
    probs = probs_of((0.50, 0.45), (0.60, 0.30), (0.50, 0.45), (0.2, 0.2), (0.001, 0.001))
    drafted = [True, True, False, True, True]
    # log(0.50 / 0.45) = 0.105 < 0.2; log(0.6 / 0.3) = 0.69; row 2 was decoded exactly already
    assert near_ties.close_calls(probs, drafted) == [0, 3, 4]
    assert near_ties.close_calls(probs, drafted, margin=1.0) == [0, 1, 3, 4]
    assert near_ties.close_calls(probs, drafted, margin=0.1) == [3, 4]
    assert near_ties.close_calls(probs[:, :1], drafted) == []  # one class: no near-ties


def test_the_margin_is_read_when_called(monkeypatch):
    probs, drafted = probs_of((0.50, 0.45)), [True]
    assert near_ties.close_calls(probs, drafted) == [0]
    monkeypatch.setattr(near_ties, "LOGIT_MARGIN", 0.05)
    assert near_ties.close_calls(probs, drafted) == []


def test_rechecks_decode_again_and_apply_classifies_the_rows_in_one_batch_keeping_an_unreadable_file():
    paths = ["a.jpg", "b.jpg", "gone.jpg", "d.jpg"]
    probs = probs_of((0.5, 0.45), (0.9, 0.05), (0.5, 0.49), (0.4, 0.39))
    indices = np.array([[1, 2], [3, 4], [5, 6], [7, 8]])
    before = probs.copy(), indices.copy()
    decoded, batches = [], []

    def exact(path: str) -> Crop:
        decoded.append(path)
        if path == "gone.jpg":
            raise OSError("vanished")
        return Crop(np.full((2, 2, 3), ord(path[0]), np.uint8), 0.0, 0.0)

    def topk(batch: np.ndarray, k: int):
        batches.append((batch[:, 0, 0, 0].tolist(), k))
        n = len(batch)
        return np.tile([[0.7, 0.2]], (n, 1)), np.tile([[9, 10]], (n, 1)) + np.arange(n)[:, None]

    rechecks = near_ties.Rechecks(exact, threads=2)
    try:
        futures = rechecks.submit([paths[r] for r in (0, 2, 3)])
        arrays = [f.result(timeout=HANG)[0] for f in futures]
    finally:
        rechecks.close()
    assert sorted(decoded) == ["a.jpg", "d.jpg", "gone.jpg"]
    assert arrays[1] is None  # the vanished file
    assert near_ties.apply([0, 2, 3], arrays, topk, probs, indices) == 2
    assert batches == [([ord("a"), ord("d")], 2)]  # one batch, the top two asked for
    assert indices.tolist() == [[9, 10], [3, 4], [5, 6], [10, 11]]
    np.testing.assert_allclose(probs[[0, 3]], [[0.7, 0.2], [0.7, 0.2]], rtol=1e-6)
    np.testing.assert_array_equal(probs[[1, 2]], before[0][[1, 2]])  # untouched, the vanished file too
    assert near_ties.apply([], [], topk, probs, indices) == 0


def big_jpeg(path: Path, size=(2600, 2100)) -> Path:
    """Large enough for the default's DCT scaling (shorter side >= 2,048 px), smooth like a photo.
    A .mpo path gets a phone-style MPO: the JPEG and a second, small picture after it."""
    img = Image.radial_gradient("L").resize(size).convert("RGB")
    if path.suffix == ".mpo":
        img.save(path, save_all=True, append_images=[img.resize((64, 48))], quality=90)
        with Image.open(path) as im:
            assert im.format == "MPO" and im.n_frames == 2
    else:
        img.save(path, quality=90)
    return path


@pytest.mark.parametrize("name", ["big.jpg", "phone.mpo"])
def test_default_decodes_a_close_call_again_and_keeps_a_clear_one(cli, tmp_path, random_weights, monkeypatch, name):
    path = big_jpeg(tmp_path / name)
    base = ("predict", path, "-m", "x0_5", "--weights", random_weights, "--backend", "torch", "-f", "json", "-k", "3")
    exact = cli(*base, "--exact-decode", "--timings")
    assert exact.exit_code == 0, exact.stderr
    assert "reduced scale" not in exact.stderr
    monkeypatch.setattr(near_ties, "LOGIT_MARGIN", 100.0)  # every result is a close call
    checked = cli(*base, "--timings")
    assert checked.exit_code == 0, checked.stderr
    assert "1 image(s) decoded at a reduced scale, 1 of them decoded again at full size" in checked.stderr
    assert checked.json() == exact.json()  # the result of the exact decode, to the last digit
    monkeypatch.setattr(near_ties, "LOGIT_MARGIN", 0.0)  # no result is a close call
    unchecked = cli(*base, "--timings")
    assert unchecked.exit_code == 0, unchecked.stderr
    assert "1 image(s) decoded at a reduced scale, 0 of them decoded again" in unchecked.stderr
    assert unchecked.json()[0]["predictions"] != exact.json()[0]["predictions"]  # the drafted decode's


def test_a_draft_that_libjpeg_cannot_scale_counts_as_exact(tmp_path):
    from shufflenet_cli.decode.images import decode_rgb

    path = big_jpeg(tmp_path / "odd.jpg", size=(3001, 2048))  # Pillow's draft settles on scale 1 here
    img, drafted = decode_rgb(str(path), 1024)
    assert img.size == (3001, 2048) and not drafted
    img, drafted = decode_rgb(str(big_jpeg(tmp_path / "even.jpg", size=(4096, 2048))), 1024)
    assert img.size == (2048, 1024) and drafted


@pytest.mark.parametrize("size", [(2000, 1500), (1500, 2000), (1366, 1024), (300, 256)])
def test_a_drafted_image_is_cropped_from_its_own_region_within_one_step_of_the_full_resize(prep, size):
    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    exact, approximate = prep.crop_array(img), prep.crop_array(img, approximate=True)
    assert approximate.shape == exact.shape == (prep.crop, prep.crop, 3)
    assert np.abs(approximate.astype(np.int16) - exact).max() <= 1
    gapped = prep.crop_array(img, approximate=True, reducing_gap=1.5)  # draft_agreement.py's variant
    assert gapped.shape == exact.shape
    if size == (300, 256):  # no resize at all: nothing to approximate
        np.testing.assert_array_equal(approximate, exact)
        np.testing.assert_array_equal(gapped, exact)
    elif min(size) >= 2 * 1.5 * prep.resize:  # Pillow reduces by int(short / resize / gap) >= 2 first: other pixels
        assert np.abs(gapped.astype(np.int16) - exact).max() > 1


def test_exact_and_fast_decode_together_are_a_usage_error(cli, tmp_path, random_weights):
    r = cli("predict", big_jpeg(tmp_path / "big.jpg"), "--weights", random_weights, "--exact-decode", "--fast-decode")
    assert r.exit_code == 2
    assert "not both" in r.stderr


@pytest.mark.parametrize(("mode", "drafted"), [("checked", False), ("fast", True)])
def test_a_named_pipe_is_drafted_only_where_it_need_not_be_read_again(tmp_path, prep, mode, drafted):
    data = big_jpeg(tmp_path / "big.jpg").read_bytes()
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    # Opened for writing before the reader comes (O_RDWR does not wait for one): the reader finds a
    # writer whenever the thread gets to run, and reads to the end when the thread closes it.
    fd = os.open(fifo, os.O_RDWR)

    def write() -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    writer = threading.Thread(target=write, daemon=True)  # never keeps pytest from exiting
    writer.start()
    try:
        crop = Preprocess(prep.resize, prep.crop, prep.mean, prep.std, decode=mode)(str(fifo))
    finally:
        writer.join(timeout=HANG)
    assert crop.drafted is drafted
    file_crop = Preprocess(prep.resize, prep.crop, prep.mean, prep.std, decode=mode)(str(tmp_path / "big.jpg"))
    assert file_crop.drafted  # the same bytes from a file are drafted in both modes


def test_real_weights_keep_a_confident_top1_on_a_large_photo(cli, tmp_path, real_weights):
    if not DOG.is_file():
        pytest.skip("../shared/images/dog.jpg is not here")
    path = tmp_path / "dog-12mp.jpg"
    with Image.open(DOG) as im:
        im.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=92)
    base = ("predict", path, "-m", "x0_5", "--weights", real_weights, "-f", "json", "-k", "2")
    checked, exact = cli(*base, "--timings"), cli(*base, "--exact-decode")
    assert "0 of them decoded again" in checked.stderr  # Samoyed by a wide margin: the drafted result
    a, b = checked.json()[0]["predictions"], exact.json()[0]["predictions"]
    assert a[0]["label"] == b[0]["label"] == "Samoyed"
    assert a != b and a[0]["probability"] == pytest.approx(b[0]["probability"], abs=0.02)


class MarkingBackend:
    """Answers each image with its crop's first pixel as the class (a near-tie with class + 1), so a
    result shows which decode it came from; remembers each call's batch and one_off."""

    name, precision = "marking", "fp32"

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], bool]] = []

    def topk(self, batch: np.ndarray, k: int, one_off: bool = False):
        firsts = batch[:, 0, 0, 0].astype(np.int64)
        self.calls.append((firsts.tolist(), one_off))
        n = len(batch)
        probs = np.tile(np.linspace(0.3, 0.29, k, dtype=np.float32), (n, 1))
        return probs, firsts[:, None] + np.arange(k)[None, :]

    def describe(self) -> str:
        return self.name


@pytest.mark.parametrize(("workers", "batch_size"), [(0, 7), (2, 7), (2, 2), (1, 1)])
def test_pipeline_redoes_each_drafted_near_tie_in_place_among_failed_inputs(workers, batch_size):
    from shufflenet_cli import pipeline
    from shufflenet_cli.inputs.paths import Input

    # first pixel 10 + i when drafted, 100 + i exactly; "bad" inputs fail; "small" ones are exact at once
    names = ["big0", "bad1", "big2", "small3", "bad4", "big5", "small6"]

    def prepare(path: str, exact: bool = False) -> Crop:
        i = names.index(path)
        if path.startswith("bad"):
            raise ImageError("broken")
        drafted = path.startswith("big") and not exact
        return Crop(np.full((2, 2, 3), (10 if drafted else 100) + i, np.uint8), 0.0, 0.0, drafted=drafted)

    backend = MarkingBackend()
    stats = pipeline.Stats()
    batches = list(
        pipeline.run(
            [Input(n) for n in names],
            prepare,
            backend,
            [str(i) for i in range(1000)],
            batch_size=batch_size,
            workers=workers,
            topk=1,
            stats=stats,
            recheck=lambda path: prepare(path, exact=True),
        )
    )
    records = [r for batch in batches for r in batch]
    assert [r.path for r in records] == names
    by_name = {r.path: r for r in records}
    for n in names:
        i = names.index(n)
        if n.startswith("bad"):
            assert by_name[n].error == "broken" and not by_name[n].predictions
        else:  # each its own exact decode's class (100 + i), the drafted ones after their second decode
            assert [p.index for p in by_name[n].predictions] == [100 + i], n
    if batch_size == 7:
        assert backend.calls == [([10, 12, 103, 15, 106], False), ([100, 102, 105], True)]
    assert sorted(first for firsts, once in backend.calls if once for first in firsts) == [100, 102, 105]
    assert (stats.drafted, stats.rechecked, stats.classified, stats.failed) == (3, 3, 5, 2)


def _names_prepare(names: list[str], slow_exact=None):
    def prepare(path: str, exact: bool = False) -> Crop:
        if exact and slow_exact is not None:
            slow_exact()
        drafted = path.startswith("big") and not exact
        first = (10 if drafted else 100) + names.index(path)
        return Crop(np.full((2, 2, 3), first, np.uint8), 0.0, 0.0, drafted=drafted)

    return prepare


def _run(names, prepare, backend, **kwargs):
    from shufflenet_cli import pipeline
    from shufflenet_cli.inputs.paths import Input

    return pipeline.run(
        [Input(n) for n in names],
        prepare,
        backend,
        [str(i) for i in range(1000)],
        batch_size=1,
        workers=1,
        topk=1,
        recheck=lambda path: prepare(path, exact=True),
        **kwargs,
    )


def test_later_batches_are_classified_while_a_near_tie_is_decoded_again():
    from shufflenet_cli import pipeline

    names = ["big0", "small1", "small2", "small3"]
    later_classified = threading.Event()

    class Backend(MarkingBackend):
        def topk(self, batch, k, one_off=False):
            if batch[0, 0, 0, 0] == 102:
                later_classified.set()
            return super().topk(batch, k, one_off)

    waited = []
    prepare = _names_prepare(names, lambda: waited.append(later_classified.wait(timeout=HANG)))
    backend = Backend()
    records = [r for batch in _run(names, prepare, backend) for r in batch]
    assert waited == [True]  # big0's second decode ended only after small2 had been classified
    assert [r.path for r in records] == names
    assert [r.predictions[0].index for r in records] == [100, 101, 102, 103]
    assert pipeline.MAX_HELD == 2  # big0, small1, small2 classified; small3 waits for big0's records
    assert backend.calls == [([10], False), ([101], False), ([102], False), ([100], True), ([103], False)]


def test_a_stop_still_sends_every_classified_batch_whole_and_counts_only_what_was_sent():
    from shufflenet_cli import pipeline

    names = ["big0", "small1", "small2", "small3", "small4"]
    backend = MarkingBackend()
    stats = pipeline.Stats()
    stop = lambda: sum(not once for _, once in backend.calls) >= 2  # noqa: E731 - after two batches
    batches = list(_run(names, _names_prepare(names), backend, stats=stats, should_stop=stop))
    records = [r for batch in batches for r in batch]
    assert [r.path for r in records] == names[:2]  # big0 (held for its second decode) and small1
    assert [r.predictions[0].index for r in records] == [100, 101]
    assert (stats.classified, stats.failed, stats.rechecked) == (2, 0, 1)
    assert stats.first_batch is not None and stats.first_batch[1] == 1


@pytest.mark.parametrize("gpu_decode", [False, True])
def test_the_exact_decode_of_checked_mode_keeps_the_thumbnail_only_where_it_is_the_first_decode(prep, gpu_decode):
    from shufflenet_cli.api import make_decoders
    from shufflenet_cli.options import PredictOptions

    checked = Preprocess(prep.resize, prep.crop, prep.mean, prep.std, decode="checked", thumbnail_size=96)
    per_file, batch_half, recheck = make_decoders(
        PredictOptions([], gpu_decode=gpu_decode), checked, types.SimpleNamespace(device="cuda")
    )
    if gpu_decode:  # the files nvJPEG leaves to Pillow are decoded once, exactly, and need the report's thumbnail
        assert recheck is None
        assert per_file.prep == batch_half.prep == checked.exact(thumbnail=True)
        assert (per_file.prep.decode, per_file.prep.thumbnail_size) == ("exact", 96)
    else:  # a near-tie's second decode: its first made the thumbnail
        assert per_file is checked
        assert (recheck.decode, recheck.thumbnail_size) == ("exact", None)
