"""Writing results: records reach stdout or --output batch by batch; json to a file only whole, and
atomically; a failed run keeps the earlier file; results are never written over a picture; a full
disk, a closed stdout and a reader that goes away (`| head`) follow the README's exit codes, in every
format, the table too."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
from typing import IO

import pytest
from conftest import HANG, csv_records, folder_of, make_image, put, sample_records, spy_batches

from shufflenet_cli import pipeline
from shufflenet_cli.errors import WriteError
from shufflenet_cli.output.sinks import Sink
from shufflenet_cli.records import Prediction, Record

# --- records appear as each batch finishes ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_each_batch_reaches_a_pipe_before_the_next(fmt):
    r, w = os.pipe()
    os.set_blocking(r, False)
    with open(w, "wb") as pipe:  # buffered, like a real stdout
        sink = Sink(fmt, stdout=pipe)
        sink.write(sample_records("a.jpg"))
        first = os.read(r, 1 << 16).decode()
        sink.write(sample_records("b.jpg"))
        second = os.read(r, 1 << 16).decode()
        sink.close()
    os.close(r)
    if fmt == "jsonl":
        assert [json.loads(line)["path"] for line in first.splitlines()] == ["a.jpg"]
        assert [json.loads(line)["path"] for line in second.splitlines()] == ["b.jpg"]
    else:
        assert csv_records(first) == [("a.jpg", 2)]
        assert list(csv.reader(io.StringIO(second)))[0][0] == "b.jpg"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_output_file_grows_batch_by_batch(run, tmp_path, monkeypatch, fmt):
    d, paths = folder_of(tmp_path, 4)
    out = tmp_path / f"out.{fmt}"
    seen: list[int] = []  # records already on disk each time a new batch comes out of the pipeline

    def count_on_disk(batch):
        text = out.read_text()
        seen.append(len(text.splitlines()) if fmt == "jsonl" else len(csv_records(text)) if text else 0)

    spy_batches(monkeypatch, count_on_disk)
    r = run(d, "-b", "1", "-o", out, fmt=fmt)
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == b""
    assert seen == [0, 1, 2, 3]  # each batch is on disk before the next one is classified
    text = out.read_text()
    got = (
        [json.loads(line)["path"] for line in text.splitlines()]
        if fmt == "jsonl"
        else [p for p, _ in csv_records(text)]
    )
    assert got == paths


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_output_replaces_an_earlier_file_only_once_results_come(run, tmp_path, fmt):
    d, paths = folder_of(tmp_path, 2)
    out = tmp_path / f"out.{fmt}"
    out.write_text("earlier results\n")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    failed = run(d, "-o", out, "--force", "--weights", bad, fmt=fmt)  # the model never loads
    assert failed.exit_code == 3, failed.stderr
    assert out.read_text() == "earlier results\n"
    never = tmp_path / f"never.{fmt}"
    assert run(d, "-o", never, "--weights", bad, fmt=fmt).exit_code == 3
    assert sorted(os.listdir(tmp_path)) == sorted(["imgs", "bad.pth", out.name])  # no empty file, no temp file

    r = run(d, "-o", out, "--force", fmt=fmt)
    assert r.exit_code == 0, r.stderr
    text = out.read_text()
    if fmt == "csv":
        assert [p for p, _ in csv_records(text)] == paths
    else:
        got = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
        assert [rec["path"] for rec in got] == paths


# --- --output FILE for json: atomic -----------------------------------------------------------


def test_json_output_appears_only_at_the_end(run, tmp_path, monkeypatch):
    d, paths = folder_of(tmp_path, 3)
    out = tmp_path / "results.json"
    present: list[bool] = []
    spy_batches(monkeypatch, lambda batch: present.append(out.exists()))
    r = run(d, "-b", "1", "-o", out, fmt="json")
    assert r.exit_code == 0, r.stderr
    assert present == [False, False, False]
    assert [rec["path"] for rec in json.loads(out.read_text())] == paths
    assert sorted(os.listdir(tmp_path)) == ["imgs", "results.json"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_failed_run_leaves_the_previous_json_untouched(run, tmp_path, monkeypatch):
    d, _ = folder_of(tmp_path, 4)
    out = tmp_path / "results.json"
    out.write_text('["previous"]\n')
    real_run = pipeline.run

    def fails_at_the_third_batch(*args, **kwargs):
        for n, batch in enumerate(real_run(*args, **kwargs)):
            if n == 2:
                raise RuntimeError("backend blew up")
            yield batch

    monkeypatch.setattr(pipeline, "run", fails_at_the_third_batch)
    r = run(d, "-b", "1", "-o", out, "--force", fmt="json")
    assert r.exit_code == 70  # an unexpected failure
    assert "backend blew up" in r.stderr
    assert out.read_text() == '["previous"]\n'
    assert sorted(os.listdir(tmp_path)) == ["imgs", "results.json"]


def test_interrupted_json_output_keeps_the_old_file_and_leaves_a_partial(tmp_path):
    out = tmp_path / "results.json"
    out.write_text('["previous"]\n')
    sink = Sink("json", out)
    sink.write([Record("a.jpg", (Prediction(1, 3, "x", 0.5),))])
    partial = sink.close(complete=False)
    assert out.read_text() == '["previous"]\n'
    assert partial == out.resolve().with_name("results.json.partial")
    assert [r["path"] for r in json.loads(partial.read_text())] == ["a.jpg"]

    again = Sink("json", out)  # the run done again, to the end: the partial file is stale, and goes
    again.write([Record("a.jpg", (Prediction(1, 3, "x", 0.5),))])
    assert again.close() is None
    assert [r["path"] for r in json.loads(out.read_text())] == ["a.jpg"] and not partial.exists()


# --- results that cannot be written -----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
@pytest.mark.parametrize("where", ["missing_dir", "is_dir"])
def test_unwritable_output_is_a_clear_error(run, tmp_path, fmt, where):
    img = put(tmp_path / "a.jpg")
    out = tmp_path / "no" / "such" / "dir" / f"out.{fmt}" if where == "missing_dir" else tmp_path
    r = run(img, "-o", out, fmt=fmt)
    assert r.exit_code == 2
    assert r.stdout_bytes == b""
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"Error: cannot write --output {out}"), r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.jpg"]


@pytest.mark.parametrize(
    "args, said",
    [
        (("-o", "{d}/first.jpg"), "--output {d}/first.jpg: its name says it is an image (.jpg)"),
        (("--report", "{d}/r.PNG"), "--report {d}/r.PNG: its name says it is an image (.png)"),
        (("-o", "{d}/same.jsonl", "--report", "{d}/./same.jsonl"), "--output and --report name the same file"),
    ],
)
def test_results_are_not_written_over_a_picture_or_over_each_other(cli, random_weights, tmp_path, args, said):
    """`shufflenet predict -o *.jpg` in a shell makes the first photo FILE: refused, the photo kept."""
    photo = make_image(tmp_path / "first.jpg", size=(80, 60))
    before = photo.read_bytes()
    args = [a.format(d=tmp_path) for a in args]
    r = cli("predict", photo, "-m", "x0_5", "--weights", random_weights, "-f", "jsonl", *args)
    assert r.exit_code == 2 and r.stdout == ""
    assert said.format(d=tmp_path) in r.stderr and "Traceback" not in r.stderr
    assert photo.read_bytes() == before and not (tmp_path / "same.jsonl").exists()


# --- a full disk, a closed stdout -------------------------------------------------------------


def _shufflenet(random_weights, *args: object) -> list[str]:
    cmd = [sys.executable, "-m", "shufflenet_cli", "predict", "-m", "x0_5", "--weights", random_weights, "-j", "1"]
    return [str(a) for a in [*cmd, "--threads", "1", *args]]


def _buffered() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED: stdout buffered, as users run it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def _dead_stdout(where: str) -> tuple[IO[str], type[BaseException]]:
    """A stream on /dev/full, or on a pipe whose reader is gone, buffered as Python opens stdout;
    and the error the sink raises for it."""
    if where == "full disk":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        return open("/dev/full", "w", encoding="utf-8"), WriteError
    r, w = os.pipe()
    os.close(r)
    return open(w, "w", encoding="utf-8"), BrokenPipeError


@pytest.mark.parametrize("where", ["full disk", "closed pipe"])
@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_results_that_stdout_refuses_are_not_left_in_its_buffer(monkeypatch, fmt, where):
    stream, error = _dead_stdout(where)
    with stream:
        monkeypatch.setattr(sys, "stdout", stream)  # here, not in a fixture: pytest sets its own for the test
        sink = Sink(fmt)
        with pytest.raises(error) as raised:
            sink.write(sample_records("a.jpg"))
            sink.close()
        sink.abort()  # does not raise: the error being handled stays the one reported
        monkeypatch.undo()
        if error is WriteError:
            assert raised.value.message == "cannot write results: No space left on device"  # type: ignore[attr-defined]


def test_a_write_failure_mid_run_is_exit_74(run, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    d, _ = folder_of(tmp_path, 2)
    r = run(d, "-o", "/dev/full")
    assert r.exit_code == 74
    assert "cannot write" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_a_full_disk_on_stdout_is_exit_74(random_weights, tmp_path, fmt):
    """`shufflenet predict ... > /dev/full` with stdout buffered, as Python has it unless PYTHONUNBUFFERED."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    d, _ = folder_of(tmp_path, 2)
    with open("/dev/full", "wb") as full:
        cmd = _shufflenet(random_weights, d, "-q", "-f", fmt)
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, env=_buffered(), timeout=HANG)
    assert proc.returncode == 74, proc.stderr.decode()
    assert proc.stderr.decode().splitlines() == ["Error: cannot write results: No space left on device"]


def test_a_table_to_a_full_disk_is_exit_74(run, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    d, _ = folder_of(tmp_path, 2)
    r = run(d, "-o", "/dev/full", fmt="table")
    assert r.exit_code == 74, r.stderr
    assert r.stderr.splitlines() == ["Error: cannot write results: No space left on device"]


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_a_closed_stdout_is_exit_74(random_weights, tmp_path, fmt):
    d, _ = folder_of(tmp_path, 2)
    cmd = ["sh", "-c", 'exec "$0" "$@" >&-', *_shufflenet(random_weights, d, "-f", fmt)]  # stdout closed
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_buffered(), timeout=HANG)
    assert proc.returncode == 74, proc.stderr.decode()
    assert proc.stderr.decode().splitlines() == [
        "Error: cannot write results: standard output is closed",
        "Hint: leave stdout open, or pass --output FILE",
    ]


# --- the reader goes away (`| head`) ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_a_reader_that_goes_away_stops_the_run_quietly_with_0(random_weights, tmp_path, fmt):
    """`shufflenet predict ... | head -1`: the README promises a quiet stop with code 0."""
    d, _ = folder_of(tmp_path, 200)  # five predictions each: far more than a pipe holds (64 KiB)
    cmd = _shufflenet(random_weights, d, "-f", fmt, "-b", "1", "-k", "5")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_buffered()) as proc:
        try:
            assert proc.stdout.readline()  # type: ignore[union-attr]
            proc.stdout.close()  # type: ignore[union-attr]
            code = proc.wait(timeout=HANG)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert code == 0, stderr
    assert stderr == ""  # no traceback, no "Exception ignored", and no summary: the run stopped early


# --- one run at a time on one file (locks.py) -------------------------------------------------

_HOLD = """
import fcntl, sys
f = open(sys.argv[1], "ab")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_second_run_on_an_output_another_process_holds_stops_with_exit_2(run, tmp_path, fmt):
    """Two `-o FILE --resume` runs at once once wrote every record twice: the second now stops at once."""
    d, _ = folder_of(tmp_path, 2)
    out = tmp_path / f"out.{fmt}"
    assert run(d, "-o", out, fmt=fmt).exit_code == 0
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:-1]))  # one record left to do
    before = out.read_bytes()
    hold = [sys.executable, "-c", _HOLD, str(out)]
    with subprocess.Popen(hold, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as holder:
        try:
            assert holder.stdout.readline() == b"locked\n"  # type: ignore[union-attr]
            r = run(d, "-o", out, "--resume", fmt=fmt)
            again = run(d, "-o", out, fmt=fmt)  # not even emptied by a run that would replace it
        finally:
            holder.communicate(b"", timeout=HANG)
    assert r.exit_code == again.exit_code == 2, r.stderr
    assert r.stderr.splitlines() == [
        f"Error: --output {out} is in use by another run",
        "Hint: wait for that run to finish, or give this one another file",
    ]
    assert out.read_bytes() == before
    assert run(d, "-o", out, "--resume", fmt=fmt).exit_code == 0  # the lock went with the other process


def test_a_json_output_or_report_being_written_by_another_run_is_not_written_over(run, tmp_path):
    from shufflenet_cli.output.report import HtmlReport

    d, _ = folder_of(tmp_path, 1)
    out, page = tmp_path / "out.json", tmp_path / "page.html"
    first = Sink("json", out)  # a run in progress: its records are not in out.json until it ends
    r = run(d, "-o", out, fmt="json")
    assert r.exit_code == 2 and "Error: --output" in r.stderr and "in use by another run" in r.stderr
    first.close()
    report = HtmlReport(page, "shufflenet")
    r = run(d, "-o", tmp_path / "other.json", "--report", page, fmt="json")
    assert r.exit_code == 2 and f"Error: --report {page} is in use by another run" in r.stderr
    report.close("done")
    assert run(d, "-o", out, "--force", "--report", page, fmt="json").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no lock file left


def test_resume_stops_where_another_run_wrote_to_the_file_after_it_was_read(tmp_path):
    """The window between reading FILE (--resume) and locking it: a run that finished in it is seen."""
    from shufflenet_cli.errors import OutputError
    from shufflenet_cli.output.resume import completed_paths

    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"path": "a.jpg", "predictions": []}) + "\n")
    seen = completed_paths(out, "jsonl")
    with open(out, "a") as other:
        other.write(json.dumps({"path": "b.jpg", "predictions": []}) + "\n")
    before = out.read_bytes()
    with pytest.raises(OutputError, match="changed by another run"):
        Sink("jsonl", out, resume=True, completed=seen)
    assert out.read_bytes() == before


def test_streams_are_not_locked(tmp_path):
    first, second = Sink("jsonl", __import__("pathlib").Path("/dev/null")), Sink("json", tmp_path / "x.json")
    also = Sink("jsonl", __import__("pathlib").Path("/dev/null"))
    for sink in (first, second, also):
        sink.write(sample_records("a.jpg"))
        sink.close()


# --- a full disk part-way through a batch -----------------------------------------------------

_FILL_UP = """
import resource, signal, sys
from pathlib import Path
from shufflenet_cli.errors import WriteError
from shufflenet_cli.output.sinks import Sink
from shufflenet_cli.records import Prediction, Record

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: EFBIG, as a full disk gives ENOSPC
fmt, where = sys.argv[1], sys.argv[2]
sink = Sink(fmt) if where == "-" else Sink(fmt, Path(where))
def batch(tag):
    return [Record(f"{tag}{i}.jpg", (Prediction(1, 7, "cock", 0.75), Prediction(2, 8, "hen", 0.25))) for i in range(50)]
sink.write(batch("a"))
size = sys.stdout.tell() if where == "-" else Path(where).stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))  # room for part of a record
try:
    sink.write(batch("b"))
except WriteError as exc:
    sink.abort()
    print(exc.message, file=sys.stderr)
"""


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("where", ["--output", "stdout redirected to a file"])
def test_a_batch_cut_short_by_a_full_disk_leaves_only_whole_records(tmp_path, fmt, where):
    out = tmp_path / f"out.{fmt}"
    cmd = [sys.executable, "-c", _FILL_UP, fmt, str(out) if where == "--output" else "-"]
    with open(out, "wb") as stdout:
        proc = subprocess.run(cmd, stdout=stdout if where != "--output" else None, stderr=subprocess.PIPE, timeout=HANG)
    assert proc.returncode == 0 and proc.stderr.decode() == "cannot write results: File too large\n"
    text = out.read_text()
    if fmt == "jsonl":
        assert [json.loads(line)["path"] for line in text.splitlines()] == [f"a{i}.jpg" for i in range(50)]
        assert text.endswith("\n")
    else:
        assert csv_records(text) == [(f"a{i}.jpg", 2) for i in range(50)]
        assert text.endswith("\n") and len(text.splitlines()) == 1 + 100


# --- temporary files of a killed run (atomic.py) ----------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=HANG)  # reaped: its pid belongs to no process now
    return child.pid


def test_temporary_files_of_a_killed_run_go_with_the_next_run_on_the_same_file(tmp_path):
    from shufflenet_cli.atomic import temp_prefix

    out = tmp_path / "out.json"
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as live:
        dead = tmp_path / (temp_prefix("out.json", _dead_pid()) + "k9x_abcd.tmp")  # kill -9 during `-o out.json`
        running = tmp_path / (temp_prefix("out.json", live.pid) + "abcdefgh.tmp")  # a run still writing
        other = tmp_path / (temp_prefix("other.json", _dead_pid()) + "abcdefgh.tmp")  # another file's
        unmarked = tmp_path / ".out.json.abcdefgh.tmp"  # no marker: nothing says this tool made it
        link = tmp_path / (temp_prefix("out.json", _dead_pid()) + "linkxxxx.tmp")
        for path in (dead, running, other, unmarked):
            path.write_text("[\n")
        link.symlink_to(unmarked)
        sink = Sink("json", out)
        sink.write(sample_records("a.jpg"))
        sink.close()
        live.communicate(b"", timeout=HANG)
    assert json.loads(out.read_text())[0]["path"] == "a.jpg"
    assert not dead.exists()
    assert running.exists() and other.exists() and unmarked.exists() and link.is_symlink()
