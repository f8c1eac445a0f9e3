"""The torch-free path: a checked ONNX export of torchvision's cached weights file runs without torch.

Its facts (file names, transform constants, the hub folder, the crop) are proven equal to torch's and
torchvision's here; the subprocess tests prove torch is not imported and the results do not change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, random_state_dict

# ------------------------------------------------------------------ constants == torchvision's


@pytest.mark.parametrize("key", ["x0_5", "x1_0", "x1_5", "x2_0"])
def test_spec_constants_equal_torchvisions(key):
    from shufflenet_cli.models import resolve_model

    spec = resolve_model(key)
    weights = spec.weights()
    t = weights.transforms()
    assert spec.weights_file == os.path.basename(weights.url)
    assert [spec.resize] == list(t.resize_size)
    assert [spec.crop] == list(t.crop_size)
    assert list(spec.mean) == list(t.mean)
    assert list(spec.std) == list(t.std)
    assert str(t.interpolation) == "InterpolationMode.BILINEAR"
    assert t.antialias is True


def test_hub_dir_without_torch_equals_torch_hub(monkeypatch, tmp_path):
    import torch.hub

    from shufflenet_cli.weights import hub_dir_without_torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub_dir_without_torch() == Path(torch.hub.get_dir())
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_dir_without_torch() == Path(torch.hub.get_dir())
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub_dir_without_torch() == Path(torch.hub.get_dir())


# ---------------------------------------------------------------------- crop == torchvision's

SIZES = [
    (1, 1),
    (2, 3),
    (7, 5),
    (97, 61),
    (223, 223),
    (224, 224),
    (225, 224),
    (231, 240),
    (232, 232),
    (255, 256),
    (256, 256),
    (257, 256),
    (256, 1000),
    (1000, 256),
    (301, 1003),
    (500, 375),
    (375, 500),
    (641, 427),
    (1200, 900),
    (3000, 17),
    (17, 3000),
]


@pytest.mark.parametrize("size", SIZES)
def test_crop_array_is_torchvisions_resize_and_center_crop_byte_for_byte(size):
    import torchvision.transforms.functional as F
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.models import MODELS

    w, h = size
    rng = np.random.default_rng(w * 7919 + h)
    img = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), "RGB")
    for spec in (MODELS["x0_5"], MODELS["x2_0"]):  # resize 256 and 232
        prep = Preprocess.from_spec(spec)
        ref = F.center_crop(F.resize(img, [spec.resize], InterpolationMode.BILINEAR, antialias=True), [spec.crop])
        expected = np.asarray(ref, dtype=np.uint8)
        got = prep.crop_array(img)
        assert got.shape == expected.shape == (spec.crop, spec.crop, 3)
        assert got.tobytes() == expected.tobytes()


def test_from_spec_equals_from_weights():
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.models import MODELS

    for spec in MODELS.values():
        a, b = Preprocess.from_spec(spec), Preprocess.from_weights(spec.weights())
        assert (a.resize, a.crop, a.mean, a.std) == (b.resize, b.crop, b.mean, b.std)


def test_topk_numpy_matches_torch():
    from shufflenet_cli.backends.ops import topk_numpy, topk_to_numpy

    logits = np.random.default_rng(0).normal(0, 5, size=(6, 1000)).astype(np.float32)
    p1, i1 = topk_numpy(logits, 5)
    p2, i2 = topk_to_numpy(torch.from_numpy(logits), 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(p1, p2, rtol=0, atol=1e-6)


# -------------------------------------------------------------------------- device rule


def test_auto_takes_the_torch_free_path_only_where_no_gpu_can_be_visible(monkeypatch):
    from shufflenet_cli import device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device.gpu_may_be_visible() is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert device.gpu_may_be_visible() is False
    monkeypatch.setattr(sys, "modules", {k: v for k, v in sys.modules.items() if k != "torch"})
    monkeypatch.setattr(device, "gpu_may_be_visible", lambda: True)
    monkeypatch.setattr(device, "_torch_device", lambda name: ("torch", name))  # where torch would decide
    assert device.resolve("auto") == ("torch", "auto")
    assert device.resolve("cuda") == ("torch", "cuda")
    assert device.resolve(" CPU ") is device.CPU
    monkeypatch.setattr(device, "gpu_may_be_visible", lambda: False)
    assert device.resolve("auto") is device.CPU


# ------------------------------------------------------------- hashing the weights file, in-process


def _ready():
    """engine.ready for x0_5 on the CPU, as `predict -m x0_5 --device cpu --threads 1` gets it."""
    from shufflenet_cli import engine
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.device import CPU
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.tuning import default_tuning

    spec = resolve_model("x0_5")
    opts = PredictOptions(paths=[], model="x0_5", device="cpu", threads=1)
    return engine.ready(spec, opts, Preprocess.from_spec(spec), CPU, default_tuning("cpu", opts))


@pytest.fixture
def hashed(monkeypatch, tmp_path) -> list[Path]:
    """The files weights.sha256_file hashes, in order (and no user cache folder from outside the test)."""
    from shufflenet_cli import weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    calls: list[Path] = []
    real = weights.sha256_file

    def counting(path):
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(weights, "sha256_file", counting)
    return calls


def test_weights_file_is_hashed_once_per_run(cached_weights, hashed):
    import hashlib

    from shufflenet_cli.backends.onnx_cache import find_checked_export

    backend, _ = _ready()  # the run that exports, checks and writes the sidecar
    assert backend.name == "onnxruntime" and backend.exported and not backend.torch_free
    assert hashed == [cached_weights]  # the torch-free lookup's hash, reused for the sidecar
    digest = hashlib.sha256(cached_weights.read_bytes()).hexdigest()
    assert find_checked_export("shufflenet_v2_x0_5", digest, [cached_weights.parent]) is not None
    hashed.clear()
    backend, _ = _ready()  # the torch-free run
    assert backend.torch_free
    assert hashed == [cached_weights]


def test_weights_file_replaced_while_loading_gets_no_sidecar(cached_weights, hashed, monkeypatch):
    from shufflenet_cli import weights

    real_load = weights.load_model

    def load_after_replacing(spec, weights_path=None):
        tmp = cached_weights.with_name("replacement.tmp")
        torch.save(random_state_dict("x0_5", seed=1), tmp)
        os.replace(tmp, cached_weights)  # as a download or `install` puts a file in place
        return real_load(spec, weights_path)

    monkeypatch.setattr(weights, "load_model", load_after_replacing)
    backend, _ = _ready()
    assert backend.name == "onnxruntime" and backend.exported  # of the new file's weights
    assert hashed == [cached_weights]
    # the digest is the old file's: a sidecar would name the new weights' export under it
    assert not list(cached_weights.parent.glob("shufflenet_v2_x0_5.weights-*.json"))
    monkeypatch.setattr(weights, "load_model", real_load)
    hashed.clear()
    backend, _ = _ready()  # the next run opens the cached export and records it under the right digest
    assert not backend.exported and not backend.torch_free
    assert hashed == [cached_weights]
    assert len(list(cached_weights.parent.glob("shufflenet_v2_x0_5.weights-*.json"))) == 1
    backend, _ = _ready()
    assert backend.torch_free


# ------------------------------------------------------------------- end to end, subprocesses


def _predict(image: Path, *extra: str, env: dict | None = None) -> tuple[list, set[str]]:
    """`python -X importtime -m shufflenet_cli predict IMAGE -m x0_5 -f json`: (records, modules imported)."""
    cmd = [sys.executable, "-X", "importtime", "-m", "shufflenet_cli", "predict", str(image), "-m", "x0_5"]
    cmd += ["-f", "json", "-q", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    modules.discard("package")  # the header line
    return json.loads(proc.stdout), modules


def _uses_torch(modules: set[str]) -> bool:
    return any(m.split(".")[0] in ("torch", "torchvision") for m in modules)


def _same(a: list, b: list) -> None:
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert [p["index"] for p in ra["predictions"]] == [p["index"] for p in rb["predictions"]]
        for pa, pb in zip(ra["predictions"], rb["predictions"], strict=True):
            assert abs(pa["probability"] - pb["probability"]) <= 1e-6 + 1e-9  # printed to 6 decimals


def test_second_run_never_imports_torch_and_gives_the_same_results(cached_weights, tmp_path):
    image = make_image(tmp_path / "img.jpg", size=(300, 200), seed=3, quality=90)
    first, modules = _predict(image, "--device", "cpu")
    assert _uses_torch(modules)  # the export (and its check) needs torch
    sidecars = list(cached_weights.parent.glob("shufflenet_v2_x0_5.weights-*.json"))
    assert len(sidecars) == 1
    second, modules = _predict(image, "--device", "cpu")
    assert "onnxruntime" in modules
    assert not _uses_torch(modules), sorted(m for m in modules if m.startswith("torch"))
    _same(first, second)
    # auto, where no GPU can be visible, is the CPU: torch-free too
    third, modules = _predict(image, env={"CUDA_VISIBLE_DEVICES": ""})
    assert not _uses_torch(modules)
    _same(first, third)
    # everything else keeps the usual path
    _, modules = _predict(image, "--device", "cpu", "--backend", "torch")
    assert _uses_torch(modules)


def test_changed_weights_file_misses_and_exports_again(cached_weights, tmp_path):
    image = make_image(tmp_path / "img.jpg", size=(300, 200), seed=4, quality=90)
    first, _ = _predict(image, "--device", "cpu")
    second, modules = _predict(image, "--device", "cpu")
    assert not _uses_torch(modules)
    torch.save(random_state_dict("x0_5", seed=1), cached_weights)  # other weights, same file name
    third, modules = _predict(image, "--device", "cpu")
    assert _uses_torch(modules)  # a miss: loaded, exported and checked again
    assert len(list(cached_weights.parent.glob("shufflenet_v2_x0_5.*.onnx"))) == 2
    assert len(list(cached_weights.parent.glob("shufflenet_v2_x0_5.weights-*.json"))) == 2
    assert [p["index"] for p in third[0]["predictions"]] != [p["index"] for p in first[0]["predictions"]] or [
        p["probability"] for p in third[0]["predictions"]
    ] != [p["probability"] for p in first[0]["predictions"]]
    fourth, modules = _predict(image, "--device", "cpu")
    assert not _uses_torch(modules)
    _same(third, fourth)


def test_sidecar_from_other_versions_is_not_used(cached_weights, tmp_path):
    from shufflenet_cli.backends.onnx_cache import find_checked_export
    from shufflenet_cli.weights import sha256_file

    image = make_image(tmp_path / "img.jpg", size=(300, 200), seed=5, quality=90)
    _predict(image, "--device", "cpu")
    digest = sha256_file(cached_weights)
    folder = cached_weights.parent
    found = find_checked_export("shufflenet_v2_x0_5", digest, [folder])
    assert found is not None and found[1] == 1000
    (sidecar,) = folder.glob("shufflenet_v2_x0_5.weights-*.json")
    data = json.loads(sidecar.read_text())
    data["versions"]["torch"] = "0.0.1"
    sidecar.write_text(json.dumps(data))
    assert find_checked_export("shufflenet_v2_x0_5", digest, [folder]) is None
    _, modules = _predict(image, "--device", "cpu")
    assert _uses_torch(modules)  # the usual path, which writes a current sidecar again
    assert find_checked_export("shufflenet_v2_x0_5", digest, [folder]) is not None
