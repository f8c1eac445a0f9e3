"""Shared fixtures: no network, a private torch cache, random-weight checkpoints, generated images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_WEIGHTS = SHARED / "weights" / "shufflenetv2_x0_5-imagenet-fp16.pth"
DOG = SHARED / "images" / "dog.jpg"


@pytest.fixture(autouse=True)
def _offline_private_cache(tmp_path_factory, monkeypatch):
    """Every test: nothing is downloaded, and torch's cache is a fresh temporary folder."""
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("SHUFFLENET_OFFLINE", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield home


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights")


def random_state_dict(arch: str = "x0_5", num_classes: int = 1000, seed: int = 0) -> dict:
    """Random weights whose batch-norm statistics are calibrated on random pictures.

    Plain random init shrinks activations layer by layer until the logits are ~1e-6 whatever the image:
    every picture would get the same prediction, and a record moved to its neighbour's place, or a
    sideways decode, would go unseen. Calibrated, different pictures give different top-5s.
    """
    import torch

    from shufflenet_cli.models import resolve_model

    torch.manual_seed(seed)
    model = resolve_model(arch).builder()(weights=None, num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running stats = the average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 96, 96))
    return model.eval().state_dict()


@pytest.fixture(scope="session")
def random_weights(weights_dir) -> Path:
    """A plain state dict of a random x0_5 with 1000 classes, saved like any user checkpoint."""
    import torch

    path = weights_dir / "random_x0_5.pth"
    torch.save(random_state_dict("x0_5"), path)
    return path


@pytest.fixture
def cached_weights(_offline_private_cache) -> Path:
    """Random x0_5 weights placed in $TORCH_HOME/hub/checkpoints under torchvision's own file name."""
    import torch

    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import cache_path

    path = cache_path(resolve_model("x0_5"))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict("x0_5"), path)
    return path


@pytest.fixture(scope="session")
def real_weights(weights_dir) -> Path:
    """The real ImageNet x0_5 weights from ../shared (upcast to fp32), or skip."""
    if not REAL_WEIGHTS.is_file():
        pytest.skip("../shared/weights is not here")
    return REAL_WEIGHTS


@pytest.fixture(scope="module")
def prep():
    """x0_5's preprocessing from its ModelSpec constants (test_backends has its own, from torchvision)."""
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.models import resolve_model

    return Preprocess.from_spec(resolve_model("x0_5"))


def make_image(path: Path, size=(64, 48), mode: str = "RGB", seed: int = 0, **save) -> Path:
    """A small noisy picture (deterministic per seed) saved with Pillow."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(base, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save)
    return path


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Three small JPEGs with different content, in sorted name order."""
    return [make_image(tmp_path / "photos" / f"img{i}.jpg", size=(80 + 8 * i, 60), seed=i) for i in range(3)]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes  # stdout as written, e.g. for file names that are not UTF-8

    def json(self):
        return json.loads(self.stdout)

    def jsonl(self) -> list:
        return [json.loads(line) for line in self.stdout.splitlines()]


@pytest.fixture
def cli():
    """Run `shufflenet ARGS` in-process; stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from shufflenet_cli.cli import app

    def run(*args: str, input: str | bytes | None = None) -> CliResult:
        runner = CliRunner()
        result = runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr, result.stdout_bytes)

    return run
