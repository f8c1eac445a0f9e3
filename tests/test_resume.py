"""Any number of files: records flushed per batch, clean stop on SIGINT/SIGTERM, --output and --resume."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_image
from test_inputs import put, run  # noqa: F401  (run is a fixture)

from shufflenet_cli import pipeline
from shufflenet_cli.output.resume import completed_paths
from shufflenet_cli.output.sinks import Sink
from shufflenet_cli.records import Prediction, Record

TOPK = 2


def records(*paths: str) -> list[Record]:
    return [Record(p, (Prediction(1, 7, "cock", 0.75), Prediction(2, 8, "hen", 0.25))) for p in paths]


def folder_of(tmp_path: Path, n: int, name: str = "imgs") -> tuple[Path, list[str]]:
    d = tmp_path / name
    d.mkdir()
    data = make_image(d / "0000.jpg", size=(16, 16)).read_bytes()  # every caller has n >= 1
    for i in range(n):
        (d / f"{i:04d}.jpg").write_bytes(data)
    return d, [str(d / f"{i:04d}.jpg") for i in range(n)]


def csv_records(text: str) -> list[tuple[str, int]]:
    """(path, number of rows) per record, in file order."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][0] == "path"
    return [(p, len(list(g))) for p, g in itertools.groupby(row[0] for row in rows[1:])]


# --- records appear as each batch finishes ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_each_batch_reaches_a_pipe_before_the_next(fmt):
    r, w = os.pipe()
    os.set_blocking(r, False)
    with open(w, "wb") as pipe:  # buffered, like a real stdout
        sink = Sink(fmt, stdout=pipe)
        sink.write(records("a.jpg"))
        first = os.read(r, 1 << 16).decode()
        sink.write(records("b.jpg"))
        second = os.read(r, 1 << 16).decode()
        sink.close()
    os.close(r)
    if fmt == "jsonl":
        assert [json.loads(line)["path"] for line in first.splitlines()] == ["a.jpg"]
        assert [json.loads(line)["path"] for line in second.splitlines()] == ["b.jpg"]
    else:
        assert csv_records(first) == [("a.jpg", 2)]
        assert list(csv.reader(io.StringIO(second)))[0][0] == "b.jpg"


def spy_batches(monkeypatch, on_batch):
    """Call on_batch(records) each time the pipeline hands a batch to the sink."""
    real_run = pipeline.run

    def spied(*args, **kwargs):
        for batch in real_run(*args, **kwargs):
            on_batch(batch)
            yield batch

    monkeypatch.setattr(pipeline, "run", spied)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_output_file_grows_batch_by_batch(run, tmp_path, monkeypatch, fmt):  # noqa: F811
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
def test_output_replaces_an_earlier_file_only_once_results_come(run, tmp_path, fmt):  # noqa: F811
    d, paths = folder_of(tmp_path, 2)
    out = tmp_path / f"out.{fmt}"
    out.write_text("earlier results\n")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    failed = run(d, "-o", out, "--weights", bad, fmt=fmt)  # the model never loads
    assert failed.exit_code == 3, failed.stderr
    assert out.read_text() == "earlier results\n"
    never = tmp_path / f"never.{fmt}"
    assert run(d, "-o", never, "--weights", bad, fmt=fmt).exit_code == 3
    assert sorted(os.listdir(tmp_path)) == sorted(["imgs", "bad.pth", out.name])  # no empty file, no temp file

    r = run(d, "-o", out, fmt=fmt)
    assert r.exit_code == 0, r.stderr
    text = out.read_text()
    if fmt == "csv":
        assert [p for p, _ in csv_records(text)] == paths
    else:
        got = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
        assert [rec["path"] for rec in got] == paths


# --- --output FILE for json: atomic -------------------------------------------------------------


def test_json_output_appears_only_at_the_end(run, tmp_path, monkeypatch):  # noqa: F811
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


def test_failed_run_leaves_the_previous_json_untouched(run, tmp_path, monkeypatch):  # noqa: F811
    d, _ = folder_of(tmp_path, 4)
    out = tmp_path / "results.json"
    out.write_text('["previous"]\n')
    real_finish = pipeline._finish
    calls = itertools.count()

    def failing_finish(*args, **kwargs):
        if next(calls) == 2:
            raise RuntimeError("backend blew up")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_finish", failing_finish)
    r = run(d, "-b", "1", "-o", out, fmt="json")
    assert r.exit_code == 70  # an unexpected failure
    assert "backend blew up" in r.stderr
    assert out.read_text() == '["previous"]\n'
    assert sorted(os.listdir(tmp_path)) == ["imgs", "results.json"]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
@pytest.mark.parametrize("where", ["missing_dir", "is_dir"])
def test_unwritable_output_is_a_clear_error(run, tmp_path, fmt, where):  # noqa: F811
    img = put(tmp_path / "a.jpg")
    out = tmp_path / "no" / "such" / "dir" / f"out.{fmt}" if where == "missing_dir" else tmp_path
    r = run(img, "-o", out, fmt=fmt)
    assert r.exit_code == 2
    assert r.stdout_bytes == b""
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"Error: cannot write --output {out}"), r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.jpg"]


# --- --resume -----------------------------------------------------------------------------------


def test_resume_jsonl_after_a_cut_mid_line(run, tmp_path):  # noqa: F811
    d, paths = folder_of(tmp_path, 5)
    out = tmp_path / "out.jsonl"
    assert run(d, "-b", "2", "-o", out).exit_code == 0
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write

    r = run(d, "--resume", "-o", out)
    assert r.exit_code == 0, r.stderr
    got = [json.loads(line)["path"] for line in out.read_text().splitlines()]
    assert got == paths  # each exactly once, none lost, in order


def test_resume_jsonl_cut_just_before_the_newline(run, tmp_path):  # noqa: F811
    """The last record parses but its newline never made it: it must be redone, not lost."""
    d, paths = folder_of(tmp_path, 3)
    out = tmp_path / "out.jsonl"
    assert run(d, "-o", out).exit_code == 0
    out.write_bytes(out.read_bytes()[:-1])
    assert completed_paths(out, "jsonl").records == Counter(paths[:2])
    assert run(d, "--resume", "-o", out).exit_code == 0
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == paths


def test_resume_csv_after_a_cut_inside_a_record(run, tmp_path):  # noqa: F811
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


def test_resume_skips_what_is_done(run, tmp_path, monkeypatch):  # noqa: F811
    d, paths = folder_of(tmp_path, 4)
    out = tmp_path / "out.jsonl"
    assert run(d, "-o", out).exit_code == 0
    out.write_bytes(b"".join(out.read_bytes().splitlines(keepends=True)[:3]))
    classified: list[str] = []
    spy_batches(monkeypatch, lambda batch: classified.extend(rec.path for rec in batch))
    assert run(d, "--resume", "-o", out).exit_code == 0
    assert classified == paths[3:]


def test_resume_with_everything_done_is_a_quiet_success(run, tmp_path):  # noqa: F811
    d, paths = folder_of(tmp_path, 3)
    out = tmp_path / "out.jsonl"
    assert run(d, "-o", out).exit_code == 0
    before = out.read_bytes()
    r = run(d, "--resume", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert out.read_bytes() == before


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_resume_keeps_earlier_errors_and_their_exit_code(run, cli, random_weights, tmp_path, fmt):  # noqa: F811
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
    r = cli("predict", *args, "-m", "x0_5", "--weights", random_weights, "-f", fmt, "--resume", "-o", out)
    assert r.exit_code == 1
    assert "1 of them errors; --resume does not try those again" in r.stderr
    skipped = 3 if fmt == "jsonl" else 2  # csv redoes its last record
    said = f"{skipped} input(s) skipped, already in the output (--resume): 1 of them failed in an earlier run"
    assert said in r.stderr


def test_resume_passes_a_stdin_pause_on_even_where_an_error_record_has_an_empty_path():
    from shufflenet_cli.inputs.paths import STALL, Input
    from shufflenet_cli.output.resume import skip_done

    tally: Counter[str] = Counter()
    done, failed = Counter({"": 1, "a.jpg": 1}), Counter({"": 1})  # `predict ""` leaves an error record for ""
    inputs = [Input("a.jpg"), STALL, Input("b.jpg"), STALL]
    assert list(skip_done(inputs, done, failed, tally)) == [STALL, Input("b.jpg"), STALL]
    assert tally["failed"] == 0
    assert list(skip_done([Input("")], done, failed, tally)) == [] and tally["failed"] == 1  # the path "" itself


def test_resume_counts_a_file_named_twice(run, tmp_path):  # noqa: F811
    """One occurrence done before the kill: the second is still classified."""
    d, paths = folder_of(tmp_path, 2)
    out = tmp_path / "out.jsonl"
    args = [paths[0], paths[0], paths[1]]
    assert run(*args, "-o", out).exit_code == 0
    out.write_bytes(out.read_bytes().splitlines(keepends=True)[0])
    assert run(*args, "--resume", "-o", out).exit_code == 0
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == args


def test_resume_csv_keeps_a_file_named_twice_in_a_row_as_two_records(run, tmp_path):  # noqa: F811
    d, paths = folder_of(tmp_path, 2)
    out = tmp_path / "out.csv"
    args = [paths[0], paths[0], paths[1]]
    assert run(*args, "-o", out, fmt="csv").exit_code == 0
    assert completed_paths(out, "csv").records == Counter([paths[0], paths[0]])  # the last record is always redone


def test_resume_with_only_failures_left_writes_their_records(run, tmp_path):  # noqa: F811
    d, paths = folder_of(tmp_path, 1)
    out = tmp_path / "out.jsonl"
    assert run(paths[0], "-o", out).exit_code == 0
    missing = str(tmp_path / "missing.jpg")
    r = run(paths[0], missing, "--resume", "-o", out)
    assert r.exit_code == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [rec["path"] for rec in records] == [paths[0], missing]
    assert "no such file" in records[1]["error"]


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


def test_a_write_failure_mid_run_is_exit_74(run, tmp_path):  # noqa: F811
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    d, _ = folder_of(tmp_path, 2)
    r = run(d, "-o", "/dev/full")
    assert r.exit_code == 74
    assert "cannot write" in r.stderr and "Traceback" not in r.stderr


# --- Ctrl-C and SIGTERM -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_with_whole_records(tmp_path, random_weights, signum):
    d, paths = folder_of(tmp_path, 200)
    cmd = [sys.executable, "-m", "shufflenet_cli", "predict", str(d), "-m", "x0_5", "--weights", str(random_weights)]
    cmd += ["-f", "jsonl", "-b", "2", "-j", "1", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, proc.stderr.read().decode()  # type: ignore[union-attr]
            got.append(line)
        assert proc.poll() is None  # records arrive while the run is still going
        proc.send_signal(signum)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    while (line := lines.get(timeout=5)) is not None:
        got.append(line)
    stderr = proc.stderr.read().decode()  # type: ignore[union-attr]

    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert all(line.endswith(b"\n") for line in got)
    done = [json.loads(line)["path"] for line in got]
    assert 3 <= len(done) < len(paths)
    assert done == paths[: len(done)]  # whole records, in order, none skipped
    summary = re.search(r"interrupted: (\d+) classified, (\d+) failed", stderr)
    assert summary, stderr
    assert (int(summary[1]), int(summary[2])) == (len(done), 0)


def test_sigterm_during_start_up_is_exit_130_and_leaves_no_empty_output(tmp_path, random_weights):
    """Before the loop's own handlers, SIGTERM killed the process (143) and left a 0-byte --output."""
    d, _ = folder_of(tmp_path, 5)
    out = tmp_path / "results.jsonl"
    cmd = [sys.executable, "-m", "shufflenet_cli", "predict", str(d), "-m", "x0_5", "--weights", str(random_weights)]
    cmd += ["--backend", "torch", "-o", str(out)]  # torch: seconds of imports and model building first
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the output opens after the handler is in place, before torch is imported
        assert out.exists() and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert not out.exists() or out.stat().st_size > 0  # removed, or (signal after start-up) whole records


def test_an_in_process_run_gives_the_callers_sigterm_handler_back(cli, images, random_weights):
    before = signal.getsignal(signal.SIGTERM)
    r = cli("predict", images[0], "-m", "x0_5", "--weights", random_weights, "-q")
    assert r.exit_code == 0, r.stderr
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_never_splits_a_batch():
    """The second signal raises KeyboardInterrupt; it must land after the batch, not inside it."""

    class SlowPipe(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # half, then a signal, then the rest
            b = bytes(b)
            self.data += b[: len(b) // 2]
            os.kill(os.getpid(), signal.SIGINT)
            self.data += b[len(b) // 2 :]
            return len(b)

    def stop_now(signum, frame):
        raise KeyboardInterrupt

    pipe = SlowPipe()
    old = signal.signal(signal.SIGINT, stop_now)
    try:
        sink = Sink("jsonl", stdout=pipe)  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            sink.write(records("a.jpg", "b.jpg", "c.jpg"))
    finally:
        signal.signal(signal.SIGINT, old)
    text = pipe.data.decode()
    assert text.endswith("\n")
    assert [json.loads(line)["path"] for line in text.splitlines()] == ["a.jpg", "b.jpg", "c.jpg"]


@pytest.mark.parametrize("interrupted", [True, False])
def test_after_an_interrupted_run_a_second_ctrl_c_is_ignored(cli, images, random_weights, monkeypatch, interrupted):
    """Once the loop has stopped on Ctrl-C, another one must not turn exit 130 into death by signal."""
    from shufflenet_cli import runner
    from shufflenet_cli.outcome import Stats

    code = 130 if interrupted else 0
    monkeypatch.setattr(runner, "predict", lambda *a, **k: runner.Outcome(code, Stats(), interrupted=interrupted))
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        r = cli("predict", images[0], "-m", "x0_5", "--weights", random_weights, "-q")
        assert r.exit_code == code
        ignored = (
            signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        )
        assert ignored == interrupted
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize(
    "fmt, content, said",
    [
        ("jsonl", b"precious notes\nline2\n", "line 1 is not a record of this tool"),
        ("csv", b"a,b\n1,2\n", "its first row is not the header path,rank,index,label,probability,error"),
        ("csv", b"path,rank,index,label,probability,error\nx,1,2\n", "a row has 3 columns, not 6"),
        ("jsonl", b'{"path": 5}\n', "line 1 is not a record of this tool"),
    ],
)
def test_resume_never_appends_to_a_file_this_tool_did_not_write(run, tmp_path, fmt, content, said):  # noqa: F811
    d, _ = folder_of(tmp_path, 2)
    out = tmp_path / f"notes.{fmt}"
    out.write_bytes(content)
    r = run(d, "--resume", "-o", out, fmt=fmt)
    assert r.exit_code == 2 and said in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == content


def test_resume_finds_the_records_of_a_folder_given_another_way(run, tmp_path, monkeypatch):  # noqa: F811
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
