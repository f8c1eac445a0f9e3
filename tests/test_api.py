"""The Python API (`from shufflenet_cli import Classifier, classify`): its public surface, pinned; the
same records as the CLI for paths; in-memory images (PIL, NumPy, bytes) classified as the files they
came from; bad images as error records in place; and docs/api.md's examples, run."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

import shufflenet_cli
from shufflenet_cli import Classifier, Record, classify

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = [
    "Classifier",
    "ImageLike",
    "ModelLoadError",
    "Prediction",
    "Record",
    "ShufflenetError",
    "UsageError",
    "__version__",
    "classify",
]
CLASSIFIER_PUBLIC = {"batch_size", "classify", "describe", "device", "labels", "model"}
CLASSIFIER_INIT = [
    "self",
    "model",
    "weights",
    "device",
    "labels",
    "backend",
    "precision",
    "batch_size",
    "workers",
    "threads",
    "decode",
    "timeout",
    "max_download",
]
CLASSIFY = ["paths", "model", "topk", "threshold", "recursive", "hidden", "ext", "options"]


# ------------------------------------------------------------------------------ the surface


def test_public_names_are_pinned():
    assert sorted(shufflenet_cli.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(shufflenet_cli, name) is not None
    with pytest.raises(AttributeError):
        _ = shufflenet_cli.runner_predict  # not public: no such name at the top


def test_classifier_surface_is_pinned():
    public = {name for name in vars(Classifier) if not name.startswith("_")}
    assert public == CLASSIFIER_PUBLIC
    assert list(inspect.signature(Classifier.__init__).parameters) == CLASSIFIER_INIT
    assert list(inspect.signature(Classifier.classify).parameters) == ["self", "images", "topk", "threshold"]
    assert list(inspect.signature(classify).parameters) == CLASSIFY
    assert [f.name for f in dataclasses.fields(Record)] == ["path", "predictions", "error", "thumbnail"]
    assert [f.name for f in dataclasses.fields(shufflenet_cli.Prediction)] == ["rank", "index", "label", "probability"]
    assert {"ok", "to_dict"} <= set(vars(Record))


def test_import_is_light():
    """`import shufflenet_cli` loads neither torch nor numpy nor the API's modules until a name is used."""
    heavy = "('torch', 'numpy', 'shufflenet_cli.api')"
    code = f"import sys, shufflenet_cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------- paths, as the CLI does


@pytest.fixture(scope="module")
def clf(random_weights):
    return Classifier("x0_5", weights=random_weights, workers=2, threads=1, batch_size=4)


@pytest.fixture
def mixed(tmp_path):
    """Good pictures with a broken one and a text file between them, in sorted order."""
    d = tmp_path / "mixed"
    make_image(d / "a.jpg", size=(90, 70), seed=1)
    (d / "b.jpg").write_bytes(b"\xff\xd8\xff broken")
    make_image(d / "c.png", size=(70, 90), seed=2)
    (d / "d.jpg").write_text("not a picture")
    make_image(d / "e.jpg", size=(64, 64), seed=3)
    return d


def test_classify_gives_the_clis_records(run, random_weights, mixed):
    cli = run(str(mixed))
    assert cli.exit_code == 1
    expected = cli.jsonl()
    got = [r.to_dict() for r in classify(mixed, "x0_5", topk=2, weights=random_weights, workers=1, threads=1)]
    assert got == expected
    assert [r["path"] for r in got] == [str(mixed / n) for n in ("a.jpg", "b.jpg", "c.png", "d.jpg", "e.jpg")]
    assert ["error" in r for r in got] == [False, True, False, True, False]


def test_classify_checks_options_before_reading_anything(random_weights, tmp_path):
    with pytest.raises(shufflenet_cli.UsageError, match="--topk"):
        classify(tmp_path, "x0_5", topk=0, weights=random_weights)
    with pytest.raises(TypeError, match="colour"):
        classify(tmp_path, "x0_5", weights=random_weights, colour=True)
    with pytest.raises(shufflenet_cli.UsageError):
        Classifier("x9_9")


def test_a_missing_path_is_an_error_record(clf, tmp_path, random_weights):
    good = make_image(tmp_path / "ok.jpg")
    records = list(classify([tmp_path / "gone.jpg", good], "x0_5", weights=random_weights, workers=0))
    assert [r.ok for r in records] == [False, True]
    assert records[0].path == str(tmp_path / "gone.jpg")


# -------------------------------------------------------------------------- in-memory images


def _predictions(record: Record) -> list[tuple[int, float]]:
    assert record.ok, record.error
    return [(p.index, round(p.probability, 6)) for p in record.predictions]


def test_in_memory_images_match_their_files(clf, tmp_path):
    """A PIL image, an array of its pixels, and the file's bytes: each classified as the file is."""
    path = make_image(tmp_path / "p.png", size=(120, 90), seed=5)
    with Image.open(path) as im:
        im.load()
        pil = im.copy()
    array = np.asarray(pil)
    from_file, from_pil, from_array, from_bytes = clf.classify([path, pil, array, path.read_bytes()])
    assert from_file.path == str(path)
    assert [from_pil.path, from_array.path, from_bytes.path] == ["<image 1>", "<image 2>", "<image 3>"]
    expected = _predictions(from_file)
    assert _predictions(from_pil) == expected
    assert _predictions(from_array) == expected
    assert _predictions(from_bytes) == expected
    assert pil.size == (120, 90)  # the caller's image is left as it was


def test_exif_orientation_applies_to_an_open_image(clf, tmp_path):
    upright = make_image(tmp_path / "upright.jpg", size=(96, 64), seed=7, quality=95)
    with Image.open(upright) as im:
        turned = im.transpose(Image.Transpose.ROTATE_90)  # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with the tag that says to turn it back
    sideways = tmp_path / "sideways.jpg"
    turned.save(sideways, exif=exif, quality=95)
    with Image.open(sideways) as im:
        from_open, from_file, stored = clf.classify([im, sideways, turned])
    assert _predictions(from_open) == _predictions(from_file)
    assert _predictions(stored) != _predictions(from_file)  # the same pixels without the tag stay sideways


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((40, 50), np.uint8) + 90,
        np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16),
        np.random.default_rng(0).random((40, 50, 3)),
        np.zeros((40, 50, 4), np.uint8),
        np.ones((40, 50, 1), np.uint8),
        np.zeros((40, 50), bool),
    ],
    ids=["grey", "grey16", "float-rgb", "rgba", "one-channel", "bool"],
)
def test_array_modes_are_classified(clf, array):
    (record,) = clf.classify([array])
    assert record.ok, record.error
    assert len(record.predictions) == 5


def test_float_array_is_scaled_as_0_to_1(clf):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    as_bytes, as_floats = clf.classify([pixels, pixels / 255.0])
    assert _predictions(as_bytes) == _predictions(as_floats)


def test_bad_items_are_error_records_in_place(clf):
    good = np.random.default_rng(1).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    items = [good, 42, np.zeros((5, 5, 7), np.uint8), b"not an image", np.zeros((4, 4), np.complex64), good]
    records = list(clf.classify(items))
    assert [r.ok for r in records] == [True, False, False, False, False, True]
    assert "not an image: a int" in records[1].error
    assert "shape (5, 5, 7)" in records[2].error
    assert records[3].error  # the file-decoder's own message
    assert "complex64" in records[4].error
    assert _predictions(records[0]) == _predictions(records[5])


def test_one_image_gives_one_record_and_a_generator_streams(clf):
    pixels = np.random.default_rng(2).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    single = list(clf.classify(pixels))
    assert len(single) == 1 and single[0].path == "<image 0>"
    taken = []

    def endless():
        for i in range(10**9):
            taken.append(i)
            yield pixels

    stream = clf.classify(endless(), topk=1)
    first = [next(stream) for _ in range(5)]
    assert [r.path for r in first] == [f"<image {i}>" for i in range(5)]
    assert len(taken) <= 2 * clf.batch_size  # one batch read ahead at most, not the whole generator
    assert all(len(r.predictions) == 1 for r in first)


def test_properties(clf):
    assert clf.model == "x0_5"
    assert clf.device == "cpu"
    assert len(clf.labels) == 1000 and clf.labels[0] == "tench"
    assert clf.batch_size == 4
    assert clf.describe()


def test_real_weights_see_a_dog(real_weights):
    from conftest import DOG

    if not DOG.is_file():
        pytest.skip("../shared/images is not here")
    clf = Classifier("x0_5", weights=real_weights)
    with Image.open(DOG) as im:
        (record,) = clf.classify([im])
    assert "dog" in record.predictions[0].label.lower() or record.predictions[0].index in range(151, 269)


# ---------------------------------------------------------------------------- docs/api.md


def _examples() -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_docs_examples_run(tmp_path, cached_weights, monkeypatch):
    """Each example in docs/api.md runs as written, in a folder with the files it names (random
    weights in the torch cache stand in for torchvision's)."""
    blocks = _examples()
    assert len(blocks) >= 3
    make_image(tmp_path / "dog.jpg", size=(120, 100), seed=1)
    for i in range(3):
        make_image(tmp_path / "photos" / f"{i}.jpg", size=(80, 60), seed=i)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a picture")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), {"__name__": "__docs__"})
    printed = out.getvalue()
    assert "photos/broken.jpg" in printed
    assert "photos/broken.jpg: error:" in printed
    lines = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == ["<image 0>", "<image 1>", "photos/broken.jpg", "<image 3>"]
    assert ["error" in line for line in lines] == [False, False, True, True]


# ------------------------------------------------------------------ what users get wrong


def test_one_buffer_of_any_kind_is_one_image(clf, tmp_path):
    data = make_image(tmp_path / "one.jpg").read_bytes()
    for one in (data, bytearray(data), memoryview(data), np.ma.masked_array(np.zeros((30, 40, 3), np.uint8))):
        records = list(clf.classify(one))
        assert len(records) == 1 and records[0].ok, type(one)


def test_one_open_image_given_twice_is_read_once_at_a_time(clf, tmp_path):
    path = make_image(tmp_path / "twice.jpg", size=(300, 200), seed=4)
    (expected,) = clf.classify([path])
    with Image.open(path) as im:  # not loaded yet: each worker would load it
        records = list(clf.classify([im] * 8))
    assert [_predictions(r) for r in records] == [_predictions(expected)] * 8


def test_a_closed_image_says_so(clf, tmp_path):
    path = make_image(tmp_path / "closed.jpg")
    with Image.open(path) as im:
        records = clf.classify(im)
    (record,) = records
    assert "closed" in record.error


def test_classify_arguments_are_checked_at_the_call(clf, random_weights, tmp_path):
    for topk in (0, -1):
        with pytest.raises(shufflenet_cli.UsageError, match="topk"):
            clf.classify([], topk=topk)
    with pytest.raises(TypeError, match="topk"):
        clf.classify([], topk=2.5)
    for threshold in (2.0, float("nan")):
        with pytest.raises(shufflenet_cli.UsageError, match="threshold"):
            clf.classify([], threshold=threshold)
    for not_an_option in ("engine", "report", "fmt", "output"):
        with pytest.raises(TypeError, match=not_an_option):
            classify(tmp_path, "x0_5", weights=random_weights, **{not_an_option: None})
    for not_paths in (b"/tmp/x.jpg", Image.new("RGB", (8, 8)), [Image.new("RGB", (8, 8))]):
        with pytest.raises(TypeError, match="takes paths"):
            classify(not_paths, "x0_5", weights=random_weights)


def test_paths_given_to_a_classifier_are_files(clf, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    gone, folder_record = clf.classify([tmp_path / "gone.jpg", folder])
    assert gone.error == "no such file or directory"
    assert "classify() walks folders" in folder_record.error


def test_arrays_out_of_their_range_are_errors_not_white(clf):
    rng = np.random.default_rng(9)
    pixels = rng.integers(0, 256, (40, 40, 3))  # int64, as np.array of Python ints gives
    as_int64, as_uint8, floats_0_255, negative = clf.classify(
        [pixels, pixels.astype(np.uint8), pixels.astype(float), pixels - 300]
    )
    assert _predictions(as_int64) == _predictions(as_uint8)
    assert "within 0..1" in floats_0_255.error and "divide by 255" in floats_0_255.error
    assert "within 0..255" in negative.error


def test_types_resolve_at_run_time():
    import typing

    hints = typing.get_type_hints(Classifier.classify)
    assert "images" in hints
    assert (ROOT / "shufflenet_cli" / "py.typed").is_file()
    assert dir(shufflenet_cli) == sorted(PUBLIC)
