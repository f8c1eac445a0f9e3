"""Results a user could lose or mix up without a word: a resumed file whose records were made with
other settings (provenance beside FILE), a resume whose inputs match none of FILE's records, a file
whose name says another format, a results file replaced by accident, and --topk below 1."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from conftest import folder_of, sample_records, spy_batches
from rich.console import Console

from shufflenet_cli import __version__
from shufflenet_cli.errors import UsageError
from shufflenet_cli.inputs.paths import WalkOptions
from shufflenet_cli.models import resolve_model
from shufflenet_cli.options import PredictOptions, validate
from shufflenet_cli.output.resume import (
    Completed,
    check_inputs_match,
    check_provenance,
    provenance,
    read_provenance,
    sidecar_of,
)
from shufflenet_cli.output.sinks import Sink
from shufflenet_cli.weights import own_path


def _opts(out: Path, **kw) -> PredictOptions:
    return PredictOptions(paths=["imgs"], fmt=kw.pop("fmt", "jsonl"), output=out, **kw)


# --- provenance -------------------------------------------------------------------------------


def test_provenance_names_the_model_weights_labels_topk_threshold_and_version(tmp_path):
    weights = tmp_path / "mine.pth"
    weights.write_bytes(b"tensors")
    got = provenance(_opts(tmp_path / "out.jsonl", model="x0_5", weights=weights, topk=3, threshold=0.25))
    assert got == {
        "tool": "shufflenet predict",
        "version": __version__,
        "model": "shufflenet_v2_x0_5",
        "weights": "sha256:" + hashlib.sha256(b"tensors").hexdigest(),
        "labels": "imagenet",
        "topk": 3,
        "threshold": 0.25,
    }
    official = provenance(_opts(tmp_path / "out.csv", fmt="csv"))
    assert official is not None and official["weights"] == resolve_model("x1_0").weights_file  # not hashed
    own = own_path(resolve_model("x1_0"))  # your own default weights (`download --from FILE --force`)
    own.parent.mkdir(parents=True)
    own.write_bytes(b"own")
    assert (
        provenance(_opts(tmp_path / "out.csv", fmt="csv"))["weights"] == "sha256:" + hashlib.sha256(b"own").hexdigest()
    )  # type: ignore[index]
    width_of_the_file = provenance(_opts(tmp_path / "out.jsonl", model=None, weights=weights))
    assert width_of_the_file is not None and width_of_the_file["model"] is None  # the digest says it


@pytest.mark.parametrize("where", ["stdout", "/dev/null", "json"])
def test_streams_and_json_have_no_provenance(tmp_path, where):
    out = {"stdout": None, "/dev/null": Path("/dev/null"), "json": tmp_path / "out.json"}[where]
    assert provenance(PredictOptions(paths=["x"], fmt="json" if where == "json" else "jsonl", output=out)) is None


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_file_this_run_starts_gets_its_provenance_beside_it_and_stays_valid(tmp_path, fmt):
    out = tmp_path / f"out.{fmt}"
    out.write_text("earlier\n")
    sidecar_of(out).write_text('{"model": "earlier"}')
    made = {"model": "shufflenet_v2_x0_5", "topk": 2}
    sink = Sink(fmt, out, provenance=made)
    assert read_provenance(out) == {"model": "earlier"}  # nothing changes before the first records
    sink.write(sample_records("a.jpg"))
    sink.close()
    assert json.loads(sidecar_of(out).read_text()) == made
    assert out.name + ".shufflenet.json" == sidecar_of(out).name
    text = out.read_text()
    assert text.startswith("path,") if fmt == "csv" else json.loads(text)["path"] == "a.jpg"  # records only


def test_a_resumed_file_keeps_the_provenance_of_its_records(tmp_path):
    out = tmp_path / "out.jsonl"
    first = Sink("jsonl", out, provenance={"topk": 2})
    first.write(sample_records("a.jpg"))
    first.close()
    sink = Sink("jsonl", out, resume=True, provenance={"topk": 9})
    sink.write(sample_records("b.jpg"))
    sink.close()
    assert read_provenance(out) == {"topk": 2}


def test_stdout_gets_no_provenance(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sink = Sink("jsonl", None, stdout=io.BytesIO(), provenance={"topk": 2})
    sink.write(sample_records("a.jpg"))
    sink.close()
    assert os.listdir(tmp_path) == []


def _made_with(out: Path, **settings) -> Completed:
    """FILE with one record, and the provenance of a run with `settings`."""
    opts = _opts(out, **settings)
    out.write_text(json.dumps({"path": "a.jpg", "predictions": []}) + "\n")
    sidecar_of(out).write_text(json.dumps(provenance(opts)))
    return Completed(Counter({"a.jpg": 1}), Counter(), size=out.stat().st_size)


@pytest.mark.parametrize(
    "then, now, said",
    [
        ({"topk": 5}, {"topk": 2}, "was made with --topk 5, not --topk 2"),
        ({"model": "x1_0"}, {"model": "x0_5"}, "--model shufflenet_v2_x1_0 and torchvision's weights shufflenetv2_x1-"),
        ({"threshold": 0.0}, {"threshold": 0.5}, "--threshold 0.0, not --threshold 0.5"),
        ({}, {"weights": "W"}, "torchvision's weights shufflenetv2_x1-5666bf0f80.pth, not --weights of sha256:"),
        ({"topk": 5, "model": "x1_0"}, {"topk": 2, "model": "x0_5"}, "and --topk 5, not --model"),
    ],
)
def test_resume_refuses_a_file_made_with_other_settings(tmp_path, then, now, said):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"w")
    now = {k: weights if v == "W" else v for k, v in now.items()}
    out = tmp_path / "out.jsonl"
    completed = _made_with(out, **then)
    with pytest.raises(UsageError) as caught:
        check_provenance(_opts(out, resume=True, **now), completed)
    assert said in caught.value.message and "nothing was appended" in caught.value.message
    assert "out.jsonl.shufflenet.json" in (caught.value.hint or "")
    check_provenance(_opts(out, resume=True, **then), completed)  # the same settings: resumed


def test_a_setting_not_known_on_one_side_is_not_compared(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"w")
    out = tmp_path / "out.jsonl"
    completed = _made_with(out, model="x0_5", weights=weights)
    check_provenance(_opts(out, resume=True, model=None, weights=weights), completed)  # the width is the file's


def test_resume_of_a_file_without_provenance_warns_and_goes_on(tmp_path):
    out = tmp_path / "out.jsonl"
    completed = _made_with(out)
    sidecar_of(out).unlink()  # written by an older version, or copied alone
    err = Console(file=io.StringIO(), width=400)
    check_provenance(_opts(out, resume=True, topk=3), completed, err)
    said = err.file.getvalue()  # type: ignore[attr-defined]
    assert said.startswith("warning: ") and "does not say what made its records" in said
    check_provenance(_opts(out, resume=True, topk=3), Completed.unread(), err)  # a new FILE: nothing to mix
    assert err.file.getvalue() == said  # type: ignore[attr-defined]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_cli_resume_with_another_topk_is_exit_2_and_appends_nothing(run, tmp_path, fmt):
    d, _ = folder_of(tmp_path, 3)
    out = tmp_path / f"out.{fmt}"
    assert run(d, "-o", out, fmt=fmt).exit_code == 0
    assert read_provenance(out)["topk"] == 2  # type: ignore[index]
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:3]))
    before = out.read_bytes()
    r = run(d, "--resume", "-o", out, "-k", "3", fmt=fmt)
    assert r.exit_code == 2 and "was made with --topk 2, not --topk 3" in r.stderr
    assert out.read_bytes() == before


# --- resume whose inputs match no record --------------------------------------------------------


def test_resume_matches_relative_records_to_absolute_inputs(run, tmp_path, monkeypatch):
    """The first run was given `imgs`, this one the same folder by its absolute path."""
    d, paths = folder_of(tmp_path, 3)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run("imgs", "-o", out).exit_code == 0
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:2]))
    classified: list[str] = []
    spy_batches(monkeypatch, lambda batch: classified.extend(rec.path for rec in batch))
    r = run(d.resolve(), "--resume", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert classified == [str(d.resolve() / "0002.jpg")] and len(out.read_bytes().splitlines()) == 3


def _first(paths: list[str]):
    from shufflenet_cli.inputs.paths import iter_inputs

    return next(iter_inputs(paths, WalkOptions()))


def test_inputs_that_match_no_record_stop_before_anything_is_classified(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder_of(tmp_path, 2, "new")
    old, _ = folder_of(tmp_path, 2, "old")
    opts = _opts(tmp_path / "out.jsonl", resume=True)
    done = Counter({"elsewhere/0000.jpg": 1, "elsewhere/0001.jpg": 1})
    opts.paths = ["new"]
    with pytest.raises(UsageError) as caught:
        check_inputs_match(opts, WalkOptions(), _first(opts.paths), 0, done)
    said = caught.value.message
    assert "none of the inputs has a record" in said and "which holds 2" in said
    assert "'elsewhere/0000.jpg'" in said and "'new/0000.jpg'" in said and "nothing was classified" in said

    opts.paths = ["new", "old"]  # a folder put in front of the one FILE was made from: resumed
    check_inputs_match(opts, WalkOptions(), _first(opts.paths), 0, Counter({str(old / "0000.jpg"): 1}))
    check_inputs_match(opts, WalkOptions(), _first(opts.paths), 1, done)  # inputs before it were done
    check_inputs_match(opts, WalkOptions(), None, 0, done)  # nothing left
    opts.paths = ["-"]  # stdin is read once: not looked ahead into
    check_inputs_match(opts, WalkOptions(), _first(["new"]), 0, done)


def test_cli_resume_of_other_files_stops_with_exit_2(run, tmp_path, monkeypatch):
    """FILE holds `imgs/...` of the folder the first run was in; this run, elsewhere, names its own."""
    for where in ("first", "second"):
        (tmp_path / where).mkdir()
        folder_of(tmp_path / where, 2)
    out = tmp_path / "out.jsonl"
    monkeypatch.chdir(tmp_path / "first")
    assert run("imgs", "-o", out).exit_code == 0
    before = out.read_bytes()
    classified: list[str] = []
    spy_batches(monkeypatch, lambda batch: classified.extend(rec.path for rec in batch))
    r = run(tmp_path / "second" / "imgs", "--resume", "-o", out)
    assert r.exit_code == 2 and "none of the inputs has a record" in r.stderr
    assert "'imgs/0000.jpg'" in r.stderr
    assert classified == [] and out.read_bytes() == before


# --- the format and the file's name -------------------------------------------------------------


@pytest.mark.parametrize(
    "args, said, hint",
    [
        (["-o", "report.html"], "a table is for the terminal, and .html names no results format", "--report"),
        (["-o", "results"], "a name without an extension names no results format", "--format jsonl"),
        (["-f", "jsonl", "-o", "x.csv"], "x.csv is named .csv, but --format is jsonl", "give --format csv"),
        (["-f", "csv", "-o", "x.ndjson"], "is named .ndjson, but --format is csv", "name it .csv"),
        (["-f", "table", "-o", "t.csv"], "--format table is for the terminal, not for --output", "(.csv writes csv)"),
        (["-f", "json", "-o", "r.html"], "r.html is named .html, but --format is json", "--report FILE.html"),
    ],
)
def test_a_file_named_for_another_format_is_a_usage_error(cli, random_weights, tmp_path, monkeypatch, args, said, hint):
    d, _ = folder_of(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    r = cli("predict", d, "-m", "x0_5", "--weights", random_weights, "-q", *args)
    assert r.exit_code == 2 and said in r.stderr and hint in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["imgs"]


@pytest.mark.parametrize(
    "fmt, output",
    [("table", "/dev/null"), ("table", "/dev/stdout"), ("table", "-"), ("jsonl", "x.jsonl"), ("jsonl", "x.txt")],
)
def test_streams_take_any_format_and_files_their_own(fmt, output):
    validate(PredictOptions(paths=["x"], fmt=fmt, output=Path(output)))


def test_no_format_with_a_known_extension_picks_it(cli, random_weights, tmp_path):
    d, paths = folder_of(tmp_path, 1)
    out = tmp_path / "x.ndjson"
    assert cli("predict", d, "-m", "x0_5", "--weights", random_weights, "-q", "-o", out).exit_code == 0
    assert json.loads(out.read_text())["path"] == paths[0]


# --- no results replaced by accident ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_results_are_not_replaced_without_force(run, tmp_path, fmt):
    d, paths = folder_of(tmp_path, 2)
    out = tmp_path / f"results.{fmt}"
    assert run(d, "-o", out, fmt=fmt).exit_code == 0
    before = out.read_bytes()
    r = run(paths[0], "-o", out, fmt=fmt)
    assert r.exit_code == 2 and f"--output {out} already exists" in r.stderr
    assert "--force" in r.stderr and "--resume" in r.stderr
    assert out.read_bytes() == before
    assert run(paths[0], "-o", out, "--force", fmt=fmt).exit_code == 0
    assert out.read_bytes() != before


def test_an_empty_file_or_a_stream_is_not_results(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    validate(_opts(empty))
    validate(_opts(Path("/dev/null")))
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    validate(_opts(fifo))
    full = tmp_path / "full.jsonl"
    full.write_text("x\n")
    validate(_opts(full, force=True))
    validate(_opts(full, resume=True))
    with pytest.raises(UsageError, match="already exists"):
        validate(_opts(full))


# --- --topk ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("topk", [0, -3])
def test_topk_below_one_is_a_usage_error(topk):
    with pytest.raises(UsageError, match="--topk must be at least 1"):
        validate(PredictOptions(paths=["x"], topk=topk))
    validate(PredictOptions(paths=["x"], topk=5000))  # above the class count: that many, as documented
