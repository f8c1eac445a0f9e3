"""The core `predict` path: parity with the reference code, formats, order, exit codes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import torch
from conftest import DOG, make_image

ARGS = ("-m", "x0_5")


def reference_top5(model: torch.nn.Module, path) -> tuple[list[int], list[float]]:
    """The seed's own example, one image at a time."""
    from PIL import Image
    from torchvision import transforms

    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    img = Image.open(path).convert("RGB")
    with torch.no_grad():
        probabilities = torch.nn.functional.softmax(model(preprocess(img).unsqueeze(0))[0], dim=0)
    top5_prob, top5_catid = torch.topk(probabilities, 5)
    return top5_catid.tolist(), top5_prob.tolist()


@pytest.fixture
def parity_images(tmp_path):
    sizes = [(500, 375), (375, 500), (640, 480), (224, 224), (300, 1000), (97, 61)]
    return [make_image(tmp_path / f"p{i}.jpg", size=s, seed=10 + i, quality=90) for i, s in enumerate(sizes)]


def _model(weights):
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import build_model, read_checkpoint

    return build_model(resolve_model("x0_5"), read_checkpoint(weights), "test")


def assert_parity(records, paths, model, tol=1e-4):
    for record, path in zip(records, paths, strict=True):
        ids, probs = reference_top5(model, path)
        assert [p["index"] for p in record["predictions"]] == ids, path
        assert [p["probability"] for p in record["predictions"]] == pytest.approx(probs, abs=tol), path


def test_default_path_matches_the_reference_code(cli, parity_images, random_weights):
    """JPEGs under 2,048 px on the shorter side (most photos on the web, all of ImageNet) decode exactly."""
    r = cli("predict", *parity_images, *ARGS, "--weights", random_weights, "-f", "json", "-b", "4")
    assert r.exit_code == 0, r.stderr
    assert_parity(r.json(), parity_images, _model(random_weights))


def test_default_matches_the_reference_on_large_jpegs_and_fast_decode_does_not(cli, tmp_path, random_weights):
    big = [make_image(tmp_path / "big.jpg", size=(1600, 1200), seed=3, quality=92)]
    if DOG.is_file():
        big.append(DOG)  # 1546x1213
    base = ("predict", *big, *ARGS, "--weights", random_weights, "-f", "json")
    default = cli(*base)
    assert_parity(default.json(), big, _model(random_weights))
    assert cli(*base, "--exact-decode").json() == default.json()  # the default, said out loud
    # --fast-decode decodes these at half scale (DCT scaling), then resizes exactly: not identical
    # (top-1 differs on 4-6% of real photos, all near-ties: docs/decoding.md).
    drafted = cli(*base, "--fast-decode").json()
    for a, b in zip(default.json(), drafted, strict=True):
        assert a["predictions"] != b["predictions"]


def test_real_weights_call_the_dog_a_samoyed_in_every_format(cli, real_weights):
    if not DOG.is_file():
        pytest.skip("../shared/images/dog.jpg is not here")
    base = ("predict", DOG, *ARGS, "--weights", real_weights)
    exact = cli(*base, "-f", "json", "--exact-decode").json()[0]
    assert exact["predictions"][0]["label"] == "Samoyed"
    rec = cli(*base, "-f", "json").json()[0]
    assert rec["predictions"][0]["label"] == "Samoyed" and rec["predictions"][0]["index"] == 258
    assert cli(*base, "-f", "json", "--fast-decode").json()[0]["predictions"][0]["label"] == "Samoyed"
    assert rec["predictions"][0]["probability"] > 0.9
    assert cli(*base, "-f", "jsonl").jsonl()[0]["predictions"][0]["label"] == "Samoyed"
    rows = list(csv.DictReader(io.StringIO(cli(*base, "-f", "csv").stdout)))
    assert rows[0]["label"] == "Samoyed" and rows[0]["rank"] == "1"
    table = cli(*base).stdout
    first_row = next(line for line in table.splitlines() if " 1 " in line)
    assert "Samoyed" in first_row


def test_formats_carry_the_same_records(cli, images, random_weights):
    base = ("predict", *images, *ARGS, "--weights", random_weights, "-k", "3")
    as_json = cli(*base, "-f", "json")
    assert as_json.exit_code == 0
    records = as_json.json()
    assert cli(*base, "--json").json() == records
    assert cli(*base, "-f", "jsonl").jsonl() == records
    rows = list(csv.DictReader(io.StringIO(cli(*base, "-f", "csv").stdout)))
    assert list(rows[0]) == ["path", "rank", "index", "label", "probability", "error"]
    assert len(rows) == 3 * len(images)
    for row in rows:
        rec = records[[str(p) for p in images].index(row["path"])]
        pred = rec["predictions"][int(row["rank"]) - 1]
        assert int(row["index"]) == pred["index"] and row["label"] == pred["label"]
        assert float(row["probability"]) == pytest.approx(pred["probability"], abs=1e-6)
    for rec in records:
        assert [p["rank"] for p in rec["predictions"]] == [1, 2, 3]
        probs = [p["probability"] for p in rec["predictions"]]
        assert probs == sorted(probs, reverse=True)


def test_table_fits_80_columns_and_shows_each_path_once(cli, images, random_weights):
    r = cli("predict", *images, *ARGS, "--weights", random_weights)
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "\x1b[" not in r.stdout  # no colour codes when not a terminal
    for path in images:
        assert sum(path.name in line for line in lines) == 1
    assert sum(" 5 " in line for line in lines) == len(images)


def test_results_on_stdout_summary_on_stderr(cli, images, random_weights):
    r = cli("predict", *images, *ARGS, "--weights", random_weights, "-f", "jsonl")
    assert len(r.jsonl()) == len(images)
    assert "3 classified, 0 failed" in r.stderr
    quiet = cli("predict", *images, *ARGS, "--weights", random_weights, "-f", "jsonl", "-q")
    assert quiet.stderr == ""


def test_a_bad_file_in_the_middle_shifts_nothing(cli, tmp_path, random_weights):
    good = [make_image(tmp_path / f"g{i}.png", size=(90, 70), seed=20 + i) for i in range(5)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    order = [good[0], good[1], bad, good[2], good[3], bad, good[4]]
    base = (*ARGS, "--weights", random_weights, "-f", "json")
    r = cli("predict", *order, *base, "-b", "2", "-j", "2")
    assert r.exit_code == 1
    records = r.json()
    assert [rec["path"] for rec in records] == [str(p) for p in order]
    for rec, path in zip(records, order, strict=True):
        if path == bad:
            assert "cannot identify image file" in rec["error"] and "predictions" not in rec
        else:
            alone = cli("predict", path, *base).json()[0]
            assert rec["predictions"] == alone["predictions"]


def test_batch_size_and_workers_do_not_change_results(cli, images, random_weights):
    base = ("predict", *images, *images, *ARGS, "--weights", random_weights, "-f", "json")
    ref = cli(*base, "-b", "1", "-j", "0").json()
    for b, j in [(2, 1), (4, 3), (64, 2)]:
        got = cli(*base, "-b", str(b), "-j", str(j)).json()
        assert [r["path"] for r in got] == [r["path"] for r in ref]
        for a, c in zip(ref, got, strict=True):
            assert [p["index"] for p in a["predictions"]] == [p["index"] for p in c["predictions"]]
            assert [p["probability"] for p in a["predictions"]] == pytest.approx(
                [p["probability"] for p in c["predictions"]], abs=1e-5
            )


@pytest.mark.parametrize("k, expected", [("1", 1), ("7", 7), ("5000", 1000)])  # under 1: tests/test_cli.py
def test_topk_is_clamped(cli, images, random_weights, k, expected):
    r = cli("predict", images[0], *ARGS, "--weights", random_weights, "-f", "json", "-k", k)
    assert len(r.json()[0]["predictions"]) == expected


def test_threshold_drops_low_predictions_but_keeps_the_record(cli, images, random_weights, tmp_path):
    sd = torch.load(random_weights, weights_only=True)
    sd["fc.bias"] = torch.linspace(0.0, 12.0, 1000)[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    peaked = tmp_path / "peaked.pth"
    torch.save(sd, peaked)
    base = ("predict", *images, *ARGS, "--weights", peaked, "-f", "json", "-k", "10")
    full = cli(*base).json()
    probs = [p["probability"] for p in full[0]["predictions"]]
    cut = (probs[2] + probs[3]) / 2
    assert probs[2] - probs[3] > 1e-4, "test needs distinct probabilities"
    kept = cli(*base, "--threshold", str(cut)).json()
    assert kept[0]["predictions"] == full[0]["predictions"][:3]
    for a, b in zip(full, kept, strict=True):
        assert b["predictions"] == [p for p in a["predictions"] if p["probability"] >= cut]
    none = cli(*base, "--threshold", "1.0").json()
    assert all(rec["predictions"] == [] and rec["path"] for rec in none)


@pytest.mark.parametrize("name", ["x0_5", "shufflenet_v2_x0_5", "0.5", "X0.5"])
def test_model_name_spellings(cli, images, random_weights, name):
    r = cli("predict", images[0], "-m", name, "--weights", random_weights, "-f", "json")
    assert r.exit_code == 0, r.stderr


def test_unknown_model_suggests_the_closest(cli, images):
    r = cli("predict", images[0], "-m", "x1_1")
    assert r.exit_code == 2
    assert "unknown model 'x1_1'" in r.stderr and "x1_0" in r.stderr


@pytest.mark.parametrize(
    "args",
    [("-f", "yaml"), ("--batch-size", "0"), ("--threshold", "2"), ("--precision", "fp8"), ("--bogus",)],
)
def test_usage_errors_are_exit_2(cli, images, random_weights, args):
    r = cli("predict", images[0], *ARGS, "--weights", random_weights, *args)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x"])
def test_a_device_name_that_is_not_cpu_or_cuda_is_exit_2(cli, images, random_weights, device):
    r = cli("predict", images[0], *ARGS, "--weights", random_weights, "--device", device)
    assert r.exit_code == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith("Error: ") and "use auto, cpu, cuda or cuda:N" in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
def test_cuda_where_there_is_none_is_exit_3(cli, images, random_weights):
    r = cli("predict", images[0], *ARGS, "--weights", random_weights, "--device", "cuda")
    assert r.exit_code == 3, r.stderr
    assert "no CUDA device is available here" in r.stderr and "Traceback" not in r.stderr


def test_no_image_found_is_exit_2(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("predict", tmp_path / "empty", "-f", "json")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "no image" in r.stderr


def test_labels_file_agrees_with_torchvision():
    from torchvision.models import ShuffleNet_V2_X1_0_Weights

    from shufflenet_cli.labels import imagenet_labels
    from shufflenet_cli.models import MODELS

    labels = imagenet_labels()
    assert len(labels) == 1000
    for spec in MODELS.values():
        assert labels == list(spec.weights().meta["categories"])
    assert labels[258] == "Samoyed" == ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1.meta["categories"][258]


def test_packaged_labels_are_the_top_level_file():
    from pathlib import Path

    from shufflenet_cli.labels import imagenet_labels

    top = Path(__file__).resolve().parents[1] / "imagenet_classes.txt"
    assert top.read_text("utf-8").splitlines() == imagenet_labels()


def test_python_dash_m_and_help_without_torch():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, shufflenet_cli.cli; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
    helped = subprocess.run(
        [sys.executable, "-m", "shufflenet_cli", "predict", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0
    for option in ("--model", "--weights", "--device", "--batch-size", "--workers", "--topk", "--format", "--json"):
        assert option in helped.stdout


def test_output_extension_picks_the_format(cli, images, random_weights, tmp_path):
    out = tmp_path / "results.jsonl"
    r = cli("predict", *images, *ARGS, "--weights", random_weights, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == [str(p) for p in images]


def test_output_dash_is_stdout(cli, images, random_weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("predict", *images, *ARGS, "--weights", random_weights, "-o", "-", "-f", "jsonl")
    assert r.exit_code == 0, r.stderr
    assert [json.loads(line)["path"] for line in r.stdout.splitlines()] == [str(p) for p in images]
    assert not (tmp_path / "-").exists()
    r = cli("predict", *images, *ARGS, "--weights", random_weights, "-o", "./-", "-f", "jsonl")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and len((tmp_path / "-").read_text().splitlines()) == len(images)  # a file named '-'


@pytest.mark.parametrize("args", [("--threads", "0"), ("--workers", "-1"), ("--json", "-f", "csv")])
def test_more_usage_errors(cli, images, random_weights, args):
    r = cli("predict", images[0], *ARGS, "--weights", random_weights, *args)
    assert r.exit_code == 2
    assert r.stdout == "" and "Traceback" not in r.stderr


def test_timings_on_stderr(cli, images, random_weights):
    r = cli("predict", *images, *ARGS, "--weights", random_weights, "-f", "json", "--timings", "-q")
    assert r.exit_code == 0
    assert len(r.json()) == len(images)
    assert "images/s end-to-end" in r.stderr
    stages = ("read+decode", "preprocess", "inference", "output", "waiting for decoded images", "backend", "batch size")
    for stage in (*stages, "workers", "threads"):
        assert stage in r.stderr
