"""Results that cannot be written as they should: odd file names in CSV, a full disk, a closed stdout,
a reader that goes away (`| head`). Every format, the table too, follows the README's exit codes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from typing import IO

import pytest
from conftest import make_image
from test_inputs import run  # noqa: F401  (run is a fixture)
from test_streaming import folder_of, records, spy_batches

from shufflenet_cli.errors import WriteError
from shufflenet_cli.output.resume import completed_paths
from shufflenet_cli.output.sinks import Sink


def test_resume_csv_recognises_names_with_carriage_returns(run, tmp_path, monkeypatch):  # noqa: F811
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


# --- a full disk, a closed stdout ---------------------------------------------------------------


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
            sink.write(records("a.jpg"))
            sink.close()
        sink.abort()  # does not raise: the error being handled stays the one reported
        monkeypatch.undo()
        if error is WriteError:
            assert raised.value.message == "cannot write results: No space left on device"  # type: ignore[attr-defined]
    # Closed (as Python flushes and closes stdout at exit) without an error: nothing of the sink's was left in it.


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_a_full_disk_on_stdout_is_exit_74(random_weights, tmp_path, fmt):
    """`shufflenet predict ... > /dev/full` with stdout buffered, as Python has it unless PYTHONUNBUFFERED."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    d, _ = folder_of(tmp_path, 2)
    with open("/dev/full", "wb") as full:
        cmd = _shufflenet(random_weights, d, "-q", "-f", fmt)
        proc = subprocess.run(cmd, stdout=full, stderr=subprocess.PIPE, env=_buffered(), timeout=120)
    assert proc.returncode == 74, proc.stderr.decode()
    assert proc.stderr.decode().splitlines() == ["Error: cannot write results: No space left on device"]


def test_a_table_to_a_full_disk_is_exit_74(run, tmp_path):  # noqa: F811
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
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_buffered(), timeout=120)
    assert proc.returncode == 74, proc.stderr.decode()
    assert proc.stderr.decode().splitlines() == [
        "Error: cannot write results: standard output is closed",
        "Hint: leave stdout open, or pass --output FILE",
    ]


# --- the reader goes away (`| head`) ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_a_reader_that_goes_away_stops_the_run_quietly_with_0(random_weights, tmp_path, fmt):
    """`shufflenet predict ... | head -1`: the README promises a quiet stop with code 0."""
    d, _ = folder_of(tmp_path, 200)  # five predictions each: far more than a pipe holds (64 KiB)
    cmd = _shufflenet(random_weights, d, "-f", fmt, "-b", "1", "-k", "5")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_buffered()) as proc:
        try:
            assert proc.stdout.readline()  # type: ignore[union-attr]
            proc.stdout.close()  # type: ignore[union-attr]
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert code == 0, stderr
    assert stderr == ""  # no traceback, no "Exception ignored", and no summary: the run stopped early


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
