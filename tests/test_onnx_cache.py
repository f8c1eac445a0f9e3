"""The ONNX cache as an attacker or an accident finds it: a cached export edited, its records
deleted, a --weights file in a shared folder, a user's own file named like an export, and an
interrupt while onnxruntime is imported. Each case failed on the cache that trusted its files."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, random_state_dict

onnxruntime = pytest.importorskip("onnxruntime")
onnx_lib = pytest.importorskip("onnx")

CHANGED = "changed since it was written"  # the warning's words


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """$XDG_CACHE_HOME/shufflenet-cli, private to the test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "shufflenet-cli"


@pytest.fixture(scope="module")
def prep():
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.models import resolve_model

    return Preprocess.from_spec(resolve_model("x0_5"))


@pytest.fixture(scope="module")
def batch(prep, tmp_path_factory) -> np.ndarray:
    folder = tmp_path_factory.mktemp("pictures")
    paths = [make_image(folder / f"p{i}.jpg", size=(300, 200), seed=60 + i, quality=90) for i in range(4)]
    return np.stack([prep(str(p)).array for p in paths])


def model(seed: int = 0):
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import build_model

    return build_model(resolve_model("x0_5"), random_state_dict("x0_5", seed=seed), "test")


def onnx(m, prep, weights_path=None):
    from shufflenet_cli.backends.onnx_runtime import OnnxBackend

    return OnnxBackend(m, torch.device("cpu"), prep.mean, prep.std, prep.crop, threads=1, weights_path=weights_path)


def tamper(path: Path, index: int = 1) -> None:
    """One bias changed, as in the report: class `index` then wins on every picture."""
    m = onnx_lib.load(str(path))
    for init in m.graph.initializer:
        if init.name.endswith("fc.bias"):
            values = onnx_lib.numpy_helper.to_array(init).copy()
            values[index] = 1e4
            init.CopyFrom(onnx_lib.numpy_helper.from_array(values, init.name))
            break
    else:
        raise AssertionError("no fc.bias initializer in the export")
    path.write_bytes(m.SerializeToString())


def top1(backend, batch) -> list[int]:
    return backend.topk(batch, 1)[1][:, 0].tolist()


# ------------------------------------------------------------------- item 1: the export, verified


def test_an_edited_export_is_noticed_and_exported_again(tmp_path, prep, batch):
    weights = tmp_path / "w.pth"
    first = onnx(model(), prep, weights)
    expected = top1(first, batch)
    tamper(first.cache_path)
    assert expected != [1] * len(batch)
    with pytest.warns(UserWarning, match=CHANGED) as caught:
        again = onnx(model(), prep, weights)
    assert any(w.category.__name__ == "ShufflenetWarning" for w in caught)
    assert again.exported and top1(again, batch) == expected
    assert not onnx(model(), prep, weights).exported  # the new file is trusted again


def test_an_edited_export_whose_record_is_gone_is_not_vouched_for(tmp_path, prep, batch):
    from shufflenet_cli.backends import onnx_cache

    weights = tmp_path / "w.pth"
    first = onnx(model(), prep, weights)
    expected = top1(first, batch)
    tamper(first.cache_path)
    onnx_cache.record_path(first.cache_path).unlink()
    again = onnx(model(), prep, weights)
    assert again.exported and top1(again, batch) == expected


def _ready():
    from shufflenet_cli import engine
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.device import CPU
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.tuning import default_tuning

    spec = resolve_model("x0_5")
    opts = PredictOptions(paths=[], model="x0_5", device="cpu", threads=1)
    return engine.ready(spec, opts, Preprocess.from_spec(spec), CPU, default_tuning("cpu", opts))


@pytest.mark.parametrize("also", ["nothing", "sidecar", "record", "both"])
def test_the_torch_free_path_verifies_the_export_it_finds(cached_weights, batch, also):
    from shufflenet_cli.backends import onnx_cache

    first, _ = _ready()  # exports, checks, records and writes the sidecar
    expected = top1(first, batch)
    assert _ready()[0].torch_free
    tamper(first.cache_path)
    if also in ("sidecar", "both"):
        (sidecar,) = cached_weights.parent.glob("shufflenet_v2_x0_5.weights-*.json")
        sidecar.unlink()
    if also in ("record", "both"):
        onnx_cache.record_path(first.cache_path).unlink()
    if also == "both":  # nothing left to say it changed: it is not trusted, so exported again
        again, _ = _ready()
    else:
        with pytest.warns(UserWarning, match=CHANGED):
            again, _ = _ready()
    assert again.exported and not again.torch_free
    assert top1(again, batch) == expected
    last, _ = _ready()
    assert last.torch_free and top1(last, batch) == expected


def test_a_sidecar_without_the_exports_digest_is_a_miss(cached_weights):
    import json

    from shufflenet_cli.backends import onnx_cache
    from shufflenet_cli.weights import sha256_file

    _ready()
    (sidecar,) = cached_weights.parent.glob("shufflenet_v2_x0_5.weights-*.json")
    data = json.loads(sidecar.read_text())
    del data["onnx_sha256"]  # as an older version wrote it, or an editor left it
    sidecar.write_text(json.dumps(data))
    assert onnx_cache.find_checked_export("shufflenet_v2_x0_5", sha256_file(cached_weights), [sidecar.parent]) is None


# ------------------------------------------------------------------ item 2: where exports go


def test_a_weights_files_export_goes_to_the_user_cache_not_its_folder(tmp_path, prep, user_cache):
    shared = tmp_path / "shared"
    shared.mkdir()
    weights = shared / "team.pth"
    weights.write_bytes(b"")  # only its name and folder could matter
    backend = onnx(model(), prep, weights)
    assert backend.cache_path.parent == user_cache
    assert backend.cache_path.name.startswith("team.")
    assert sorted(p.name for p in shared.iterdir()) == ["team.pth"]  # not even a temporary file


def test_a_link_planted_at_the_exports_name_is_replaced_not_followed(tmp_path, prep, user_cache):
    from shufflenet_cli.backends import onnx_cache

    weights = tmp_path / "w.pth"
    name = onnx(model(), prep, weights).cache_path.name
    for f in user_cache.iterdir():
        f.unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (user_cache / name).symlink_to(victim)
    onnx_cache.record_path(user_cache / name).symlink_to(victim)
    backend = onnx(model(), prep, weights)
    assert backend.exported and not backend.cache_path.is_symlink()
    assert not onnx_cache.record_path(backend.cache_path).is_symlink()
    assert victim.read_text() == "keep me"


# ---------------------------------------------------------- item 3: only the tool's own files go


def test_a_users_file_named_like_an_export_survives(tmp_path, prep, user_cache):
    weights = tmp_path / "mine.pth"
    beside = tmp_path / "mine.0123456789abcdef.onnx"  # the user's own, beside --weights
    beside.write_bytes(b"the user's model")
    user_cache.mkdir(parents=True)
    cached = user_cache / "mine.fedcba9876543210.onnx"  # unrecorded, in the cache folder
    cached.write_bytes(b"another")
    first = onnx(model(0), prep, weights)
    second = onnx(model(1), prep, weights)  # new weights: the first export is stale
    assert second.cache_path != first.cache_path and second.cache_path.is_file()
    assert not first.cache_path.exists()  # recorded as the tool's, for this weights file: removed
    assert beside.read_bytes() == b"the user's model"
    assert cached.read_bytes() == b"another"


def test_a_stale_export_of_another_weights_file_of_the_same_name_is_kept(tmp_path, prep):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = onnx(model(0), prep, tmp_path / "a" / "w.pth")
    second = onnx(model(1), prep, tmp_path / "b" / "w.pth")
    assert first.cache_path.is_file() and second.cache_path.is_file()


def test_a_recorded_export_that_was_changed_is_not_removed_as_stale(tmp_path, prep):
    weights = tmp_path / "w.pth"
    first = onnx(model(0), prep, weights)
    first.cache_path.write_bytes(b"now the user's")
    onnx(model(1), prep, weights)
    assert first.cache_path.read_bytes() == b"now the user's"


# -------------------------------------------------------------- item 4: interrupts in start-up


@pytest.fixture
def interrupted_import(monkeypatch):
    """`import onnxruntime` fails as it does when Ctrl-C lands in its extension's start-up: an
    ImportError raised while the KeyboardInterrupt was being handled."""
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "onnxruntime":
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise ImportError("onnxruntime: initialization failed") from None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_ctrl_c_while_onnxruntime_is_imported_is_exit_130(cli, images, cached_weights, interrupted_import):
    r = cli("predict", images[0], "-m", "x0_5", "--device", "cpu", "-q")
    assert r.exit_code == 130, r.stderr


def test_ctrl_c_while_onnxruntime_is_imported_on_the_torch_free_path(cli, images, cached_weights, monkeypatch):
    first = cli("predict", images[0], "-m", "x0_5", "--device", "cpu", "-q")  # writes the sidecar
    assert first.exit_code == 0, first.stderr
    monkeypatch.setattr(builtins, "__import__", _interrupting(builtins.__import__))
    r = cli("predict", images[0], "-m", "x0_5", "--device", "cpu", "-q")
    assert r.exit_code == 130, r.stderr


def _interrupting(real):
    def fake(name, *args, **kwargs):
        if name == "onnxruntime":
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as exc:
                raise ImportError("onnxruntime: initialization failed") from exc
        return real(name, *args, **kwargs)

    return fake


def test_an_interrupt_during_the_export_is_not_a_fallback_to_torch(prep, monkeypatch):
    from shufflenet_cli.backends import onnx_export
    from shufflenet_cli.backends.factory import make_backend

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("onnxscript: initialization failed") from None

    monkeypatch.setattr(onnx_export, "_export_legacy", interrupted)
    monkeypatch.setattr(onnx_export, "_export_dynamo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_backend("auto", model(), torch.device("cpu"), prep, "fp32", threads=1)


def test_a_plain_import_error_still_falls_back_to_torch(monkeypatch, cached_weights):
    real = builtins.__import__

    def missing(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing)
    backend, _ = _ready()
    assert backend.name == "torch"


def test_a_changed_export_is_one_warning_line_on_stderr(cli, images, tmp_path, user_cache):
    """The engine's warning goes out as the run's other warnings do: `warning: ...`, one line."""
    weights = tmp_path / "w.pth"
    torch.save(random_state_dict("x0_5", seed=3), weights)
    args = ("predict", images[0], "-m", "x0_5", "--weights", weights, "--device", "cpu", "-q", "-f", "jsonl")
    assert cli(*args).exit_code == 0  # exports, checks and caches
    (export,) = user_cache.glob("*.onnx")
    tamper(export)
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if CHANGED in line]
    assert len(lines) == 1 and lines[0].startswith("warning: the cached ONNX export"), r.stderr
    assert "Warning" not in r.stderr  # not Python's "file:line: ShufflenetWarning" form
