"""--resume: what an earlier run's --output already holds is skipped, a record cut by a kill is done
again, earlier errors keep their exit code, a file this tool did not write is never appended to, and
--report counts what was skipped."""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter

import pytest
from conftest import ReportPage, csv_records, folder_of, leftovers, make_image, spy_batches

from shufflenet_cli.output.resume import completed_paths

TOPK = 2  # conftest's `run` asks for -k 2


# --- a run cut short --------------------------------------------------------------------------


def test_resume_jsonl_after_a_cut_mid_line(run, tmp_path):
    d, paths = folder_of(tmp_path, 5)
    out = tmp_path / "out.jsonl"
    assert run(d, "-b", "2", "-o", out).exit_code == 0
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write

    r = run(d, "--resume", "-o", out)
    assert r.exit_code == 0, r.stderr
    got = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert got == paths  # each exactly once, none lost, in order


def test_resume_jsonl_cut_just_before_the_newline(run, tmp_path):
    """The last record parses but its newline never made it: it must be redone, not lost."""
    d, paths = folder_of(tmp_path, 3)
    out = tmp_path / "out.jsonl"
    assert run(d, "-o", out).exit_code == 0
    out.write_bytes(out.read_bytes()[:-1])
    assert completed_paths(out, "jsonl").records == Counter(paths[:2])
    assert run(d, "--resume", "-o", out).exit_code == 0
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == paths


def test_resume_csv_after_a_cut_inside_a_record(run, tmp_path):
    """A csv record is one row per prediction: a kill between two rows leaves a short record."""
    d, paths = folder_of(tmp_path, 5)
    out = tmp_path / "out.csv"
    assert run(d, "-b", "2", "-o", out, fmt="csv").exit_code == 0
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 1 + 5 * TOPK
    out.write_bytes(b"".join(lines[: 1 + 2 * TOPK + 1]) + lines[1 + 2 * TOPK + 1][:5])  # 2.5 records + a bit

    r = run(d, "--resume", "-o", out, fmt="csv")
    assert r.exit_code == 0, r.stderr
    assert csv_records(out.read_text()) == [(p, TOPK) for p in paths]


def test_resume_csv_recognises_names_with_carriage_returns(run, tmp_path, monkeypatch):
    d = tmp_path / "imgs"
    names = ["a.jpg", "b\rc.jpg", "d\r\ne.jpg", "f\ng.jpg", "\rh.jpg", "i.jpg"]
    data = make_image(d / "x.jpg", size=(16, 16)).read_bytes()
    (d / "x.jpg").unlink()
    for name in names:
        (d / name).write_bytes(data)
    paths = sorted(str(d / name) for name in names)
    out = tmp_path / "out.csv"
    assert run(d, "-o", out, fmt="csv").exit_code == 0

    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert [row[0] for row in rows[::2]] == paths  # two rows (-k 2) per record, none split
    assert all(len(row) == 6 for row in rows)

    assert completed_paths(out, "csv").records == Counter(paths[:-1])  # csv: the last record is always redone
    classified: list[str] = []
    spy_batches(monkeypatch, lambda batch: classified.extend(rec.path for rec in batch))
    before = out.read_bytes()
    assert run(d, "--resume", "-o", out, fmt="csv").exit_code == 0
    assert classified == paths[-1:]
    assert out.read_bytes() == before


# --- what is skipped --------------------------------------------------------------------------


def test_resume_skips_what_is_done(run, tmp_path, monkeypatch):
    d, paths = folder_of(tmp_path, 4)
    out = tmp_path / "out.jsonl"
    assert run(d, "-o", out).exit_code == 0
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:3]))
    classified: list[str] = []
    spy_batches(monkeypatch, lambda batch: classified.extend(rec.path for rec in batch))
    assert run(d, "--resume", "-o", out).exit_code == 0
    assert classified == paths[3:]


def test_resume_with_everything_done_is_a_quiet_success(run, tmp_path):
    d, paths = folder_of(tmp_path, 3)
    out = tmp_path / "out.jsonl"
    assert run(d, "-o", out).exit_code == 0
    before = out.read_bytes()
    r = run(d, "--resume", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes() == before


def test_resume_finds_the_records_of_a_folder_given_another_way(run, tmp_path, monkeypatch):
    """`./imgs` then `imgs/`: the same files, so nothing is classified twice."""
    folder_of(tmp_path, 3)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run("./imgs", "-o", out).exit_code == 0
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]))
    classified: list[str] = []
    spy_batches(monkeypatch, lambda batch: classified.extend(rec.path for rec in batch))
    assert run("imgs/", "--resume", "-o", out).exit_code == 0
    assert len(classified) == 1 and len(out.read_bytes().splitlines()) == 3


def test_resume_counts_a_file_named_twice(run, tmp_path):
    """One occurrence done before the kill: the second is still classified."""
    d, paths = folder_of(tmp_path, 2)
    out = tmp_path / "out.jsonl"
    args = [paths[0], paths[0], paths[1]]
    assert run(*args, "-o", out).exit_code == 0
    out.write_bytes(out.read_bytes().splitlines(keepends=True)[0])
    assert run(*args, "--resume", "-o", out).exit_code == 0
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == args


def test_resume_csv_keeps_a_file_named_twice_in_a_row_as_two_records(run, tmp_path):
    d, paths = folder_of(tmp_path, 2)
    out = tmp_path / "out.csv"
    args = [paths[0], paths[0], paths[1]]
    assert run(*args, "-o", out, fmt="csv").exit_code == 0
    assert completed_paths(out, "csv").records == Counter([paths[0], paths[0]])  # the last record is always redone


def test_resume_passes_a_stdin_pause_on_even_where_an_error_record_has_an_empty_path():
    from shufflenet_cli.inputs.paths import STALL, Input
    from shufflenet_cli.output.resume import skip_done

    tally: Counter[str] = Counter()
    done, failed = Counter({"": 1, "a.jpg": 1}), Counter({"": 1})  # `predict ""` leaves an error record for ""
    inputs = [Input("a.jpg"), STALL, Input("b.jpg"), STALL]
    assert list(skip_done(inputs, done, failed, tally)) == [STALL, Input("b.jpg"), STALL]
    assert tally["failed"] == 0
    assert list(skip_done([Input("")], done, failed, tally)) == [] and tally["failed"] == 1  # the path "" itself


# --- earlier errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_keeps_earlier_errors_and_their_exit_code(run, cli, random_weights, tmp_path, fmt):
    """An input whose record in FILE is an error is not tried again, but the run still says some
    inputs failed (exit 1): a script that checks the code after --resume is not told all is well."""
    d, paths = folder_of(tmp_path, 2)
    out = tmp_path / f"out.{fmt}"
    missing = str(tmp_path / "missing.jpg")
    args = [paths[0], missing, paths[1]]  # the error is not the last record (csv always redoes the last)
    assert run(*args, "-o", out, fmt=fmt).exit_code == 1
    assert completed_paths(out, fmt).failed == Counter([missing])
    before = out.read_bytes()
    r = run(*args, "--resume", "-o", out, fmt=fmt)
    assert r.exit_code == 1, r.stderr
    if fmt == "jsonl":  # csv classifies its last record again and appends it
        assert out.read_bytes() == before
    out.write_bytes(before)
    assert run(paths[0], paths[1], "--resume", "-o", out, fmt=fmt).exit_code == 0  # the failed file not asked for
    out.write_bytes(before)
    r = cli("predict", *args, "-m", "x0_5", "--weights", random_weights, "-f", fmt, "-k", "2", "--resume", "-o", out)
    assert r.exit_code == 1
    assert "1 of them errors; --resume does not try those again" in r.stderr
    skipped = 3 if fmt == "jsonl" else 2  # csv redoes its last record
    said = f"{skipped} input(s) skipped, already in the output (--resume): 1 of them failed in an earlier run"
    assert said in r.stderr


def test_resume_with_only_failures_left_writes_their_records(run, tmp_path):
    d, paths = folder_of(tmp_path, 1)
    out = tmp_path / "out.jsonl"
    assert run(paths[0], "-o", out).exit_code == 0
    missing = str(tmp_path / "missing.jpg")
    r = run(paths[0], missing, "--resume", "-o", out)
    assert r.exit_code == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [rec["path"] for rec in records] == [paths[0], missing]
    assert "no such file" in records[1]["error"]


# --- a file this tool did not write -----------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, content, said",
    [
        ("jsonl", b"precious notes\nline2\n", "line 1 is not a record of this tool"),
        ("csv", b"a,b\n1,2\n", "its first row is not the header path,rank,index,label,probability,error"),
        ("csv", b"path,rank,index,label,probability,error\nx,1,2\n", "a row has 3 columns, not 6"),
        ("jsonl", b'{"path": 5}\n', "line 1 is not a record of this tool"),
    ],
)
def test_resume_never_appends_to_a_file_this_tool_did_not_write(run, tmp_path, fmt, content, said):
    d, _ = folder_of(tmp_path, 2)
    out = tmp_path / f"notes.{fmt}"
    out.write_bytes(content)
    r = run(d, "--resume", "-o", out, fmt=fmt)
    assert r.exit_code == 2 and said in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == content


# --- with --report ----------------------------------------------------------------------------


def test_cli_report_with_resume_counts_the_skipped_and_is_written_when_nothing_is_left(cli, random_weights, tmp_path):
    """--resume: the page shows this run's images and says how many inputs the output already had;
    with none left, the page still appears (replacing an earlier run's), empty but for that summary."""
    folder = tmp_path / "in"
    for i in range(3):
        make_image(folder / f"{i}.jpg", size=(80, 60), seed=i)
    out, target = tmp_path / "out.jsonl", tmp_path / "report.html"
    base = ("predict", folder, "-m", "x0_5", "--weights", random_weights, "-o", out)
    assert cli(*base).exit_code == 0
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:2]))  # the last record lost

    r = cli(*base, "--resume", "--report", target)
    assert r.exit_code == 0, r.stderr
    page = ReportPage(target.read_text(encoding="utf-8"))
    assert [os.path.basename(p) for p in page.by_class["path"]] == ["2.jpg"]
    summary = page.by_class["summary"][0]
    assert re.fullmatch(
        r"1 classified, 0 failed in .*; 2 input\(s\) skipped, already in the output \(--resume\)",
        summary,
    )
    assert summary in r.stderr

    target.write_text("an earlier run's page")
    r = cli(*base, "--resume", "--report", target)
    assert r.exit_code == 0, r.stderr
    assert "nothing left to do" in r.stderr
    page = ReportPage(target.read_text(encoding="utf-8"))
    assert page.imgs == [] and "path" not in page.by_class
    assert page.by_class["summary"][0].startswith("0 classified, 0 failed")
    assert "3 input(s) skipped, already in the output (--resume)" in page.by_class["summary"][0]
    assert leftovers(tmp_path) == []


# --- --csv-safe -------------------------------------------------------------------------------


def test_resume_csv_safe_reads_quoted_paths_back_as_the_paths_they_are(run, tmp_path, monkeypatch):
    names = ["=cmd.jpg", "+x.jpg", "-y.jpg", "@z.jpg", "'q.jpg", "plain.jpg"]
    data = make_image(tmp_path / "src.jpg", size=(16, 16)).read_bytes()
    for name in names:
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.csv"
    assert run("-o", out, "--csv-safe", "--", *names, fmt="csv").exit_code == 0
    with open(out, newline="", encoding="utf-8") as f:
        cells = [row[0] for row in list(csv.reader(f))[1::TOPK]]
    assert cells == ["'=cmd.jpg", "'+x.jpg", "'-y.jpg", "'@z.jpg", "''q.jpg", "plain.jpg"]
    assert completed_paths(out, "csv", csv_safe=True).records == Counter(names[:-1])  # the last is redone

    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[: 1 + 3 * TOPK]))  # three records done
    classified: list[str] = []
    spy_batches(monkeypatch, lambda batch: classified.extend(rec.path for rec in batch))
    r = run("-o", out, "--csv-safe", "--resume", "--", *names, fmt="csv")
    assert r.exit_code == 0, r.stderr
    assert classified == names[2:]  # the last of the three, and those after it
    assert csv_records(out.read_text()) == [(c, TOPK) for c in cells]


def test_resume_csv_safe_refuses_a_file_written_without_it(run, tmp_path, monkeypatch):
    (tmp_path / "=a.jpg").write_bytes(make_image(tmp_path / "src.jpg", size=(16, 16)).read_bytes())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.csv"
    assert run("-o", out, "=a.jpg", "src.jpg", fmt="csv").exit_code == 0
    before = out.read_bytes()
    r = run("-o", out, "--csv-safe", "--resume", "=a.jpg", "src.jpg", fmt="csv")
    assert r.exit_code == 2
    assert "was written without --csv-safe" in r.stderr
    assert out.read_bytes() == before


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl"])
def test_csv_safe_is_for_csv_only(run, tmp_path, fmt):
    d, _ = folder_of(tmp_path, 1)
    r = run(d, "--csv-safe", fmt=fmt)
    assert r.exit_code == 2 and r.stderr.splitlines()[0] == "Error: --csv-safe is for --format csv"
