"""Paths on stdin: one per line or NUL-separated, folders walked, missing paths as records; read
lazily, and from a producer that stalls (`tail -f`, `inotifywait`) what has arrived is classified and
written at once, not when a batch fills or stdin closes. (Ctrl-C while waiting: test_interrupts.py.)"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import HANG, CountingBackend, Producer, make_image, parse_records, printed_paths, put

from shufflenet_cli import pipeline
from shufflenet_cli.inputs.paths import STALL, Input, WalkOptions, iter_inputs, read_path_list

# --- path lists -------------------------------------------------------------------------------


def test_stdin_one_path_per_line(run, odd_dir):
    d, expected = odd_dir
    listed = [p for p in expected if "\n" not in p]
    data = b"".join(os.fsencode(p) + b"\n" for p in listed) + b"\n"  # a blank line is ignored
    r = run("-", input=data)
    assert r.exit_code == 0, r.stderr
    assert printed_paths(r) == listed


def test_stdin_null_separated(run, odd_dir):
    d, expected = odd_dir
    order = expected[::-1]  # the order given, not sorted
    data = b"\0".join(os.fsencode(p) for p in order) + b"\0"
    r = run("-", "--null", input=data, fmt="csv")
    assert r.exit_code == 0, r.stderr
    assert printed_paths(r, "csv") == order


def test_stdin_directory_and_missing_path(run, tmp_path):
    a = put(tmp_path / "dir" / "a.jpg")
    data = f"{tmp_path / 'dir'}\r\n{tmp_path / 'gone.jpg'}\r\n".encode()
    r = run("-", input=data)
    assert r.exit_code == 1, r.stderr
    records = parse_records(r)
    assert [rec["path"] for rec in records] == [a, str(tmp_path / "gone.jpg")]
    assert "predictions" in records[0] and "error" in records[1]


def test_a_nul_byte_in_a_newline_list_is_that_paths_error_record(run, tmp_path):
    """`find -print0 | shufflenet predict -` without --null: the NUL-separated paths arrive as one line
    with NULs in it, which crashed the run (exit 70, some records missing). That line is one error
    record, with a hint about --null; the paths on the other lines are classified as usual."""
    a, b = put(tmp_path / "a.jpg", seed=1), put(tmp_path / "b.jpg", seed=2)
    printed0 = os.fsencode(a) + b"\0" + os.fsencode(b) + b"\0"
    data = os.fsencode(a) + b"\n" + printed0 + b"\n" + b"bad\0name.jpg\n" + os.fsencode(b) + b"\n"
    r = run("-", input=data)
    assert r.exit_code == 1, r.stderr
    records = parse_records(r)
    assert [rec["path"] for rec in records] == [a, os.fsdecode(printed0), "bad\0name.jpg", b]
    assert "predictions" in records[0] and "predictions" in records[3]
    assert records[1]["error"].startswith("the path contains a NUL byte")
    assert "--null" in records[1]["error"]  # it looks NUL-separated
    assert records[2]["error"] == "the path contains a NUL byte, which no file name can"  # one stray NUL


@pytest.mark.parametrize("listed", [True, False])
def test_a_nul_byte_in_a_path_never_raises(listed):
    """The same for a path handed to iter_inputs directly (an embedding caller): an error Input."""
    stdin = io.BytesIO(b"x\0y.jpg\n") if listed else None
    got = list(iter_inputs(["-"] if listed else ["x\0y.jpg"], WalkOptions(), stdin=stdin))
    assert [(i.path, i.error) for i in got] == [("x\0y.jpg", "the path contains a NUL byte, which no file name can")]


class Endless(io.RawIOBase):
    """`cat video.bin | shufflenet predict -`: megabytes without a newline, then one real line."""

    def __init__(self, size: int, then: bytes) -> None:
        self.left, self.then = size, then

    def readable(self) -> bool:
        return True

    def read1(self, n: int = -1) -> bytes:
        if self.left <= 0:
            out, self.then = self.then, b""
            return out
        self.left -= 65536
        return b"x" * 65536


def test_a_line_longer_than_any_path_is_cut_not_held():
    """A line is held to MAX_LINE bytes, whatever its length: a whole binary file piped in was held
    in memory (and copied again for every 64 KiB read), before its one error record."""
    import tracemalloc

    from shufflenet_cli.inputs import paths as paths_mod

    tracemalloc.start()
    try:
        got = list(read_path_list(Endless(16 * 2**20, b"\nnext.jpg\n")))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == ["x" * paths_mod.MAX_LINE, "next.jpg"]
    assert peak < 16 * paths_mod.MAX_LINE, f"{peak >> 20} MiB held for a 16 MiB line"
    item = next(iter_inputs(["-"], WalkOptions(), stdin=Endless(2**20, b"")))  # type: ignore[arg-type]
    assert item.error == "file name too long"


def test_read_path_list_yields_before_the_pipe_closes():
    """`find | shufflenet predict -`: the first path is used while the producer is still writing."""
    r, w = os.pipe()
    got: list[str] = []
    with open(r, "rb") as reader, open(w, "wb", buffering=0) as writer:
        writer.write(b"first.jpg\n")
        t = threading.Thread(target=lambda: got.append(next(read_path_list(reader))), daemon=True)
        t.start()
        t.join(timeout=HANG)
        writer.write(b"second.jpg\n")
        assert got == ["first.jpg"], "read_path_list waited for more input than one line"
    t.join(timeout=HANG)


# --- a producer that stalls -------------------------------------------------------------------


def test_read_path_list_says_when_the_pipe_is_quiet():
    r, w = os.pipe()
    with open(r, "rb") as reader, open(w, "wb", buffering=0) as writer:
        writer.write(b"a.jpg\0b")
        paths = read_path_list(reader, null=True, stall_after=0.1)
        assert next(paths) == "a.jpg"
        got: list[tuple[str | None, float]] = []

        def wait_for_the_next() -> None:
            t0 = time.monotonic()
            got.append((next(paths), time.monotonic() - t0))

        waiting = threading.Thread(target=wait_for_the_next, daemon=True)
        waiting.start()
        waiting.join(timeout=HANG)  # a hang guard: while the pipe stays quiet, only a stall ends the wait
        assert [path for path, _ in got] == [None]  # half a name is not a path
        assert got[0][1] >= 0.09  # not before stall_after
        writer.write(b".jpg\0")
        assert next(paths) == "b.jpg"
        writer.close()
        assert list(paths) == []


def test_stdin_stalls_only_after_a_real_input(tmp_path):
    """runner.first_found reads to the first input without an error: a STALL before it would start a
    run that may never see an image (exit 0 instead of "no image found", exit 2)."""
    real = str(make_image(tmp_path / "a.jpg"))
    r, w = os.pipe()
    stalled = threading.Event()

    def produce() -> None:
        with open(w, "wb", buffering=0) as writer:
            writer.write(b"missing.jpg\n")
            time.sleep(0.7)  # quiet before the first real input: no STALL may come of it
            writer.write(real.encode() + b"\n")
            stalled.wait(timeout=HANG)  # quiet after it, until a STALL has come out

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    got = []
    with open(r, "rb") as reader:
        for item in iter_inputs(["-"], WalkOptions(extensions=frozenset({"jpg"})), stdin=reader):
            got.append(item)
            if item is STALL:
                stalled.set()
    producer.join(timeout=HANG)
    assert [i.path for i in got if i is not STALL] == ["missing.jpg", real]
    assert got[0].error and got[1] == Input(real)
    assert got[2:] and all(i is STALL for i in got[2:])


@pytest.mark.parametrize(
    ("workers", "processes"), [(0, False), (2, False), (2, True)], ids=["inline", "threads", "processes"]
)
@pytest.mark.parametrize("stalls", [True, False], ids=["stalls", "no-stalls"])
def test_a_stall_finishes_the_partial_batch(tmp_path, prep, workers, processes, stalls):
    images = [Input(str(make_image(tmp_path / f"{i}.jpg", seed=i))) for i in range(5)]
    missing = Input(str(tmp_path / "gone.jpg"), error="no such file or directory")
    a, b, c, d, e = images
    order = [a, missing, b, d, c, e]
    written: list[str] = []
    asked_after_stall: list[list[str]] = []  # what was written when the input was asked for again

    def inputs():
        script = [STALL, a, missing, b, STALL, d, c, STALL, STALL, e] if stalls else order
        for item in script:
            yield item
            if item is STALL:
                asked_after_stall.append(list(written))

    backend = CountingBackend()
    for records in pipeline.run(
        inputs(), prep, backend, ["only"], batch_size=4, workers=workers, processes=processes, topk=1
    ):
        written += [r.path for r in records]
    assert written == [i.path for i in order]  # one record each, in order, the failed one in its place
    if stalls:
        assert asked_after_stall == [[], written[:3], written[:5], written[:5]]
        assert backend.batches == [2, 2, 1]  # images only: the failed input is in the first chunk
    else:
        assert backend.batches == [3, 2]  # chunks of 4 inputs, as ever


@pytest.mark.parametrize(
    ("null", "decode_in"), [(False, "threads"), (True, "processes")], ids=["lines-threads", "null-processes"]
)
def test_each_path_is_written_while_stdin_stays_open(tmp_path, random_weights, null, decode_in):
    paths = [str(make_image(tmp_path / "first.jpg", seed=1))]
    paths.append(os.fsdecode(make_image(Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jpg")), seed=2)))
    paths.append(str(make_image(tmp_path / "third.jpg", seed=3)))
    run = Producer(random_weights, "--decode-in", decode_in, null=null)
    try:
        run.send(paths[0])  # then nothing: a batch of 8 will not fill
        assert run.record()["path"] == paths[0]
        assert run.proc.poll() is None
        run.send(paths[1])
        assert run.record()["path"] == paths[1]  # a name that is not UTF-8 comes back intact
        run.send(paths[2])
        run.proc.stdin.close()  # type: ignore[union-attr]
        code = run.proc.wait(timeout=HANG)
        done = [paths[0], paths[1]] + [r["path"] for r in run.rest()]
    finally:
        stderr = run.stderr()
    assert code == 0, stderr
    assert done == paths  # one record each, in order
