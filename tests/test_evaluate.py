"""`shufflenet evaluate`: labelled folders whose answers are known, the arithmetic pinned, every layout,
the usage errors; the real x0_5 weights on the dog where ../shared is here.

Most tests swap the runner's backend for one that answers from the picture itself: a solid PNG whose
red value is r gets top-5 classes r, r+1, ..., r+4. Everything else (inputs, decoding, batching,
records, sinks) is the real pipeline that `predict` runs.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DOG, ReportPage, random_state_dict

PUBLISHED_X0_5 = (0.60552, 0.81746)  # torchvision's ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1 metadata


def solid(path: Path, red: int) -> Path:
    """A PNG the fake backend answers `red` (0..255) for (PNG: the value survives decoding exactly)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (red, 0, 0)).save(path)
    return path


class RedBackend:
    """Top-5: the centre pixel's red value and the four classes after it, with falling probabilities."""

    name, precision, device = "red", "fp32", "cpu"

    def topk(self, batch, k: int, one_off: bool = False):
        import numpy as np

        red = batch[:, batch.shape[1] // 2, batch.shape[2] // 2, 0].astype(np.int64)
        indices = red[:, None] + np.arange(k)[None, :]
        probs = np.tile(np.linspace(0.5, 0.1, k), (len(batch), 1))
        return probs, indices

    def describe(self) -> str:
        return "red (test)"


@pytest.fixture
def red(monkeypatch):
    """The runner gets RedBackend instead of a model; labels as the run would have them."""
    from shufflenet_cli import api
    from shufflenet_cli.engine import Ready
    from shufflenet_cli.labels import imagenet_labels, read_labels

    def ready(spec, opts, prep, device, tuning):
        return Ready(RedBackend(), read_labels(opts.labels) if opts.labels else imagenet_labels())

    monkeypatch.setattr(api, "ready", ready)


@pytest.fixture
def evaluate(cli, red):
    """`shufflenet evaluate ARGS -m x0_5 -j 1 --threads 1 -q` with the red backend; JSON by default."""

    def run(*args, fmt: str = "json"):
        return cli("evaluate", "-m", "x0_5", "-j", "1", "--threads", "1", "-q", "-f", fmt, *map(str, args))

    return run


@pytest.fixture
def by_index(tmp_path) -> Path:
    """Classes 3, 7 and 10: 3 is right twice and right at top-5 once (answer 1); 7 is wrong twice
    (answer 20) and has a file that is not an image; 10 is right."""
    d = tmp_path / "val"
    for name, red_ in (("a", 3), ("b", 3), ("c", 1)):
        solid(d / "3" / f"{name}.png", red_)
    solid(d / "7" / "a.png", 20)
    solid(d / "7" / "b.png", 20)
    (d / "7" / "c.png").write_text("not a picture")
    solid(d / "10" / "a.png", 10)
    return d


def test_index_folders_pin_the_arithmetic(evaluate, by_index):
    r = evaluate(by_index)
    assert r.exit_code == 1  # a file failed, as predict
    out = r.json()
    assert (out["images"], out["failed"], out["classes"]) == (6, 1, 3)
    assert out["top1"] == pytest.approx(3 / 6) and out["top5"] == pytest.approx(4 / 6)
    assert out["top1_error"] == pytest.approx(0.5) and out["top5_error"] == pytest.approx(2 / 6)
    per = {c["index"]: c for c in out["per_class"]}
    assert [c["index"] for c in out["per_class"]] == [3, 7, 10]
    assert (per[3]["images"], per[3]["failed"], per[3]["top1"], per[3]["top5"]) == (3, 0, pytest.approx(2 / 3), 1.0)
    assert (per[7]["images"], per[7]["failed"], per[7]["top1"], per[7]["top5"]) == (2, 1, 0.0, 0.0)
    assert (per[10]["images"], per[10]["top1"], per[10]["top5"]) == (1, 1.0, 1.0)
    assert per[3]["label"] == "tiger shark"
    assert [(c["true"], c["predicted"], c["count"]) for c in out["confusions"]] == [(7, 20, 2), (3, 1, 1)]
    assert (out["confusions"][0]["true_label"], out["confusions"][0]["predicted_label"]) == ("cock", "water ouzel")
    assert out["published"] == {
        "top1": pytest.approx(PUBLISHED_X0_5[0]),
        "top5": pytest.approx(PUBLISHED_X0_5[1]),
        "source": "torchvision shufflenet_v2_x0_5 IMAGENET1K_V1",
    }
    assert out["interrupted"] is False


def test_wordnet_id_folders_name_imagenets_classes(evaluate, tmp_path):
    """ImageNet's validation layout: n01440764 is class 0 (tench), n02111889 class 258 (Samoyed)."""
    d = tmp_path / "val"
    solid(d / "n01440764" / "a.png", 0)
    solid(d / "n02111889" / "a.png", 258 - 255)  # answered 3: wrong, and not in the top-5 either
    r = evaluate(d)
    assert r.exit_code == 0, r.stderr
    per = {c["index"]: c for c in r.json()["per_class"]}
    assert set(per) == {0, 258}
    assert (per[0]["label"], per[0]["top1"]) == ("tench", 1.0)
    assert (per[258]["label"], per[258]["top1"]) == ("Samoyed", 0.0)


def test_the_wordnet_ids_are_imagenets_1000_in_class_order():
    """The ILSVRC class order is the wnids sorted; the labels' own order must agree with it."""
    from shufflenet_cli.labels import imagenet_labels, imagenet_wnids

    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == len(imagenet_labels()) == 1000
    assert wnids == sorted(wnids)
    assert (wnids[0], wnids[258], wnids[999]) == ("n01440764", "n02111889", "n15075141")


def test_all_right_is_exit_0(evaluate, tmp_path):
    solid(tmp_path / "d" / "5" / "x.png", 5)
    r = evaluate(tmp_path / "d")
    assert r.exit_code == 0 and r.json()["top1"] == 1.0


def test_table_shows_measured_and_published_figures_and_the_seed_error_rates(evaluate, by_index):
    r = evaluate(by_index, fmt="table")
    assert r.exit_code == 1
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 3}
    cells = {name: line.split("│")[2:-1] for name, line in rows.items()}
    assert [c.strip() for c in cells["images"]] == ["6", ""]
    assert [c.strip() for c in cells["failed files"]] == ["1", ""]
    assert [c.strip() for c in cells["top-1 accuracy %"]] == ["50.00", "60.55"]  # measured, published
    assert [c.strip() for c in cells["top-5 accuracy %"]] == ["66.67", "81.75"]
    assert [c.strip() for c in cells["top-1 error %"]] == ["50.00", "39.45"]  # 100 - top-1 %
    assert [c.strip() for c in cells["top-5 error %"]] == ["33.33", "18.25"]
    pair = next(line for line in r.stdout.splitlines() if "7 cock" in line and "20 water ouzel" in line)
    assert pair.split("│")[3].strip() == "2"
    assert r.stderr == ""  # -q


def test_label_folders_exact_or_loose(evaluate, tmp_path):
    d = tmp_path / "val"
    solid(d / "hen" / "a.png", 8)
    solid(d / "golden_retriever" / "a.png", 207)  # loose: case and `_` for a space
    solid(d / "GOLDFISH" / "a.png", 9)
    r = evaluate(d)
    out = r.json()
    assert r.exit_code == 0
    assert [(c["index"], c["top1"]) for c in out["per_class"]] == [(1, 0.0), (8, 1.0), (207, 1.0)]


def test_labels_from_csv_for_a_flat_folder(evaluate, tmp_path):
    d = tmp_path / "flat"
    solid(d / "one.png", 8)
    solid(d / "two.png", 8)
    solid(d / "three.png", 100)
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows(
            [
                ["path", "label"],
                ["one.png", "hen"],
                ["two.png", "9"],
                ["three.png", "black swan"],
                ["gone.png", "1"],
            ]
        )
    r = evaluate(d, "--labels-from", table)
    out = r.json()
    assert r.exit_code == 1  # gone.png: failed, not wrong
    assert (out["images"], out["failed"]) == (3, 1)
    assert out["top1"] == pytest.approx(2 / 3)
    assert out["top5"] == 1.0  # two.png's answers are 8..12: its true 9 is among them
    assert [(c["true"], c["predicted"]) for c in out["confusions"]] == [(9, 8)]


def test_custom_labels_and_no_published_figure(evaluate, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i}" for i in range(1000)) + "\n")
    solid(tmp_path / "d" / "thing 4" / "a.png", 4)
    out = evaluate(tmp_path / "d", "--labels", labels).json()
    assert out["published"] is None and out["per_class"][0]["label"] == "thing 4" and out["top1"] == 1.0


def test_limit_takes_the_first_classes_by_index(evaluate, by_index):
    out = evaluate(by_index, "--limit", "2").json()
    assert [c["index"] for c in out["per_class"]] == [3, 7]
    assert (out["images"], out["failed"]) == (5, 1)


@pytest.mark.parametrize(
    ("folder", "labels", "words"),
    [
        ("crane", ["bird", "crane", "crane"], ["fits more than one class", "1 (crane), 2 (crane)", "index"]),
        ("CARDIGAN", None, ["fits more than one class", "264 (Cardigan)", "474 (cardigan)"]),
        ("not_a_class", None, ["not_a_class", "is not a class index or a label"]),
        ("1000", None, ["class index 1000 is out of range (0..999)"]),
        ("n01440764", ["a", "b"], ["n01440764", "WordNet id", "ImageNet's classes, not one of --labels'"]),
        ("n00000001", None, ["n00000001", "WordNet id, but of none of ImageNet's classes"]),
    ],
)
def test_folder_names_that_are_usage_errors(evaluate, tmp_path, folder, labels, words):
    d = tmp_path / "val"
    solid(d / folder / "a.png", 0)
    args = [d]
    if labels:
        (tmp_path / "labels.txt").write_text("\n".join(labels))
        args += ["--labels", tmp_path / "labels.txt"]
    r = evaluate(*args)
    assert r.exit_code == 2, r.stderr
    assert r.stdout == ""
    for word in words:
        assert word in r.stderr
    assert str(d / folder) in r.stderr


def test_two_folders_for_one_class_and_an_empty_folder_are_usage_errors(evaluate, tmp_path):
    solid(tmp_path / "d" / "258" / "a.png", 258)
    solid(tmp_path / "d" / "Samoyed" / "a.png", 258)
    r = evaluate(tmp_path / "d")
    assert r.exit_code == 2 and "both class 258" in r.stderr
    (tmp_path / "e").mkdir()
    r = evaluate(tmp_path / "e")
    assert r.exit_code == 2 and "no labelled image found" in r.stderr


def test_predictions_file_keeps_every_record_and_stdout_only_the_evaluation(evaluate, by_index, tmp_path):
    keep = tmp_path / "records.jsonl"
    r = evaluate(by_index, "--predictions", keep)
    out = r.json()  # stdout parses as one object: no record went there
    records = [json.loads(line) for line in keep.read_text().splitlines()]
    assert len(records) == out["images"] + out["failed"] == 7
    assert [Path(rec["path"]).parent.name for rec in records] == ["3"] * 3 + ["7"] * 3 + ["10"]
    assert [p["index"] for p in records[0]["predictions"]] == [3, 4, 5, 6, 7]  # top-5, as predict writes it
    assert "error" in records[5]


def test_report_shows_the_figures_classes_and_wrong_answers(evaluate, by_index, tmp_path):
    page_path = tmp_path / "report.html"
    r = evaluate(by_index, "--report", page_path)
    assert r.exit_code == 1
    text = page_path.read_text()
    page = ReportPage(text)
    assert len(page.imgs) == 3 and all(src.startswith("data:image/jpeg;base64,") for src in page.imgs)
    assert page.by_class["truth"] == ["true: 3 tiger shark", "true: 7 cock", "true: 7 cock"]
    assert page.by_class["wrong"] == [
        "predicted: 1 goldfish (50.0%)",
        "predicted: 20 water ouzel (50.0%)",
        "predicted: 20 water ouzel (50.0%)",
    ]
    assert ["top-1 error", "50.00", "39.45"] in page.rows  # measured, published
    assert [row for row in page.rows if row[-1:] in (["2"], ["1"])] == [
        ["7 cock", "20 water ouzel", "2"],
        ["3 tiger shark", "1 goldfish", "1"],
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_report_fails_before_any_work(evaluate, by_index, tmp_path):
    r = evaluate(by_index, "--report", tmp_path / "no" / "such" / "report.html")
    assert r.exit_code == 2 and "cannot write --report" in r.stderr and r.stdout == ""


def test_records_reach_the_hook_in_input_order(red, tmp_path):
    from rich.console import Console

    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.runner import predict

    paths = [str(solid(tmp_path / f"{i:02d}.png", i)) for i in range(12)]
    seen: list[list[str]] = []
    opts = PredictOptions(paths=paths, fmt="jsonl", output=tmp_path / "out.jsonl", batch_size=5, workers=1, quiet=True)
    outcome = predict(opts, stderr=Console(stderr=True), on_records=lambda rs: seen.append([r.path for r in rs]))
    assert outcome.exit_code == 0
    assert [len(batch) for batch in seen] == [5, 5, 2]
    assert sum(seen, []) == paths


def test_a_model_with_a_constant_answer_through_the_real_backend(cli, tmp_path):
    """No fake: random x0_5 weights whose classifier ignores the picture (weights 0, a bias ranking
    classes 100 > 200 > 300 > 400 > 500 above the rest), loaded with --weights like any checkpoint."""
    import torch

    sd = random_state_dict("x0_5")
    sd["fc.weight"] = torch.zeros_like(sd["fc.weight"])
    bias = torch.zeros_like(sd["fc.bias"])
    for rank, index in enumerate((100, 200, 300, 400, 500)):
        bias[index] = 10.0 - rank
    sd["fc.bias"] = bias
    weights = tmp_path / "constant.pth"
    torch.save(sd, weights)
    for folder, n in (("100", 2), ("300", 1), ("600", 1)):
        for i in range(n):
            solid(tmp_path / "d" / folder / f"{i}.png", i * 40)
    r = cli(
        "evaluate", tmp_path / "d", "-m", "x0_5", "--weights", weights, "-j", "1", "--threads", "1", "-q", "-f", "json"
    )
    out = r.json()
    assert r.exit_code == 0
    assert out["images"] == 4 and out["top1"] == pytest.approx(2 / 4) and out["top5"] == pytest.approx(3 / 4)
    assert [(c["true"], c["predicted"], c["count"]) for c in out["confusions"]] == [(300, 100, 1), (600, 100, 1)]


def test_real_weights_on_the_dog(cli, real_weights, tmp_path):
    """The dog is a Samoyed (258) and the real model's second guess is an Arctic fox (279): filed under
    both, top-1 is right once and top-5 twice."""
    if not DOG.is_file():
        pytest.skip("../shared/images/dog.jpg is not here")
    d = tmp_path / "val"
    (d / "258").mkdir(parents=True)
    (d / "Arctic fox").mkdir()
    (d / "258" / "dog.jpg").write_bytes(DOG.read_bytes())
    (d / "Arctic fox" / "dog.jpg").write_bytes(DOG.read_bytes())
    r = cli("evaluate", d, "-m", "x0_5", "--weights", real_weights, "-q", "-f", "json")
    out = r.json()
    assert r.exit_code == 0, r.stderr
    assert (out["images"], out["failed"], out["top1"], out["top5"]) == (2, 0, 0.5, 1.0)
    assert [(c["true_label"], c["predicted_label"]) for c in out["confusions"]] == [("Arctic fox", "Samoyed")]


def test_help_does_not_import_torch():
    code = "import sys; from shufflenet_cli.cli import evaluate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    helped = subprocess.run(
        [sys.executable, "-m", "shufflenet_cli", "evaluate", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0
    for option in ("--labels-from", "--limit", "--predictions", "--report", "--format"):
        assert option in helped.stdout


def test_options_reach_the_runner_as_predict_options(cli, monkeypatch, by_index):
    from shufflenet_cli.evaluation import run

    seen = {}

    def fake(source, opts, predictions=None, stderr=None):
        seen.update(source=source, opts=opts)
        raise RuntimeError("stop here: the options are what this test is about")

    monkeypatch.setattr(run, "evaluate", fake)
    args = ["-b", "7", "--backend", "torch", "--precision", "bf16", "--device", "cpu", "--exact-decode"]
    r = cli("evaluate", by_index, "--limit", "2", "--ext", "png", "-f", "json", "--hidden", *args)
    assert r.exit_code == 70 and "stop here" in r.stderr
    opts = seen["opts"]
    assert (opts.batch_size, opts.backend, opts.precision, opts.device, opts.decode) == (
        7,
        "torch",
        "bf16",
        "cpu",
        "exact",
    )
    assert (opts.ext, opts.hidden, opts.fmt, opts.report) == ("png", True, "table", None)  # -f json is evaluate's own
    assert (seen["source"].root, seen["source"].limit) == (by_index, 2)
    assert cli("evaluate", by_index, "--exact-decode", "--fast-decode").exit_code == 2
