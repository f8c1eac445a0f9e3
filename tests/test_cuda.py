"""The CLI end to end on CUDA; every test here skips where no CUDA device is visible.

Tolerances (the backends' own are in test_backends.py):
- `--device cuda` fp32 vs `--device cpu`: the same top-1 for every image, probabilities within 1e-3
  (fp32 turns TF32 off; with it on, an H200 was 2.6e-3 off).
- `--precision fp16` / `bf16` vs CPU fp32: the same top-1 for all but one image in eight, top-1
  probabilities within 0.01 / 0.05.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import make_image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")

ARGS = ("-m", "x0_5", "-f", "json", "-k", "3")
LOW_PRECISION = {"fp16": 0.01, "bf16": 0.05}


@pytest.fixture
def photos(tmp_path):
    sizes = [(500, 375), (375, 500), (640, 480), (224, 224), (300, 1000), (97, 61), (1600, 1200), (500, 333)]
    return [make_image(tmp_path / f"p{i}.jpg", size=s, seed=30 + i, quality=90) for i, s in enumerate(sizes)]


def _top1(records):
    return [(r["predictions"][0]["index"], r["predictions"][0]["probability"]) for r in records]


def _run(cli, photos, weights, *extra):
    r = cli("predict", *photos, *ARGS, "--weights", weights, *extra)
    assert r.exit_code == 0, r.stderr
    records = r.json()
    assert [rec["path"] for rec in records] == [str(p) for p in photos]
    return records


def test_cuda_matches_cpu(cli, photos, random_weights):
    cpu = _top1(_run(cli, photos, random_weights, "--device", "cpu"))
    gpu = _top1(_run(cli, photos, random_weights, "--device", "cuda", "-b", "3"))
    assert [i for i, _ in gpu] == [i for i, _ in cpu]
    assert max(abs(g - c) for (_, g), (_, c) in zip(gpu, cpu, strict=True)) < 1e-3


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_low_precision_keeps_top1(cli, photos, random_weights, precision):
    cpu = _top1(_run(cli, photos, random_weights, "--device", "cpu"))
    gpu = _top1(_run(cli, photos, random_weights, "--device", "cuda", "--precision", precision))
    same = [c[0] == g[0] for c, g in zip(cpu, gpu, strict=True)]
    assert sum(same) >= len(photos) - 1
    assert max(abs(g[1] - c[1]) for c, g, s in zip(cpu, gpu, same, strict=True) if s) <= LOW_PRECISION[precision]


def test_auto_device_is_cuda_and_timings_say_so(cli, photos, random_weights):
    r = cli("predict", *photos, *ARGS, "--weights", random_weights, "--timings", "-q")
    assert r.exit_code == 0, r.stderr
    assert "backend torch cuda" in r.stderr


def test_gpu_decode_cli_in_order_with_bad_files(cli, tmp_path, photos, random_weights):
    bad = tmp_path / "zz_bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    png = make_image(tmp_path / "q.png", size=(300, 200), seed=99)
    inputs = [photos[0], bad, png, *photos[1:]]
    r = cli("predict", *inputs, *ARGS, "--weights", random_weights, "--device", "cuda", "--gpu-decode", "-b", "4")
    assert r.exit_code == 1  # one input failed
    records = r.json()
    assert [rec["path"] for rec in records] == [str(p) for p in inputs]
    assert "error" in records[1] and all("predictions" in rec for i, rec in enumerate(records) if i != 1)
    default = _top1(_run(cli, photos, random_weights, "--device", "cuda"))
    gpu = [(rec["predictions"][0]["index"]) for rec in records if rec["path"] in {str(p) for p in photos}]
    assert sum(g == d for g, (d, _) in zip(gpu, default, strict=True)) >= len(photos) - 1


def test_cuda_graphs_give_the_eager_results(cli, photos, random_weights):
    """-b 2 over eight photos: four batches of one shape, replayed from a CUDA graph from the second
    on; --no-cuda-graphs runs them all eagerly. Same kernels, so the same JSON."""
    r = cli("predict", *photos, *ARGS, "--weights", random_weights, "--device", "cuda", "-b", "2", "--timings")
    assert r.exit_code == 0, r.stderr
    assert re.search(r"CUDA graphs \(3 batches replayed\)", r.stderr), r.stderr
    assert "failed capture" not in r.stderr and re.search(r"threads 1\b", r.stderr)
    eager = _run(cli, photos, random_weights, "--device", "cuda", "-b", "2", "--no-cuda-graphs")
    assert r.json() == eager
