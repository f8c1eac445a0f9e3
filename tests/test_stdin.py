"""Paths on stdin from a producer that stalls (`tail -f`, `inotifywait`): what has arrived is classified
and written at once, not when a batch fills or stdin closes, and Ctrl-C stops the wait."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image

from shufflenet_cli import pipeline
from shufflenet_cli.inputs.paths import STALL, Input, WalkOptions, iter_inputs, read_path_list

START_UP = 60  # seconds for the first record: imports and the model, on a busy 2-core machine
SOON = 10  # seconds for a record, or the exit, once the CLI is running: the stall timeout is 0.25 s


# --- the CLI with a producer that stalls ---------------------------------------------------------


class Producer:
    """`shufflenet predict -` with its stdin a pipe that the test writes to, line by line."""

    def __init__(self, random_weights: Path, *args: str, null: bool = False) -> None:
        cmd = [sys.executable, "-m", "shufflenet_cli", "predict", "-", "-m", "x0_5", "--weights", str(random_weights)]
        cmd += ["-f", "jsonl", "-k", "1", "-b", "8", *args] + (["--null"] if null else [])
        self.sep = b"\0" if null else b"\n"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def send(self, path: str) -> None:
        self.proc.stdin.write(os.fsencode(path) + self.sep)  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def record(self, timeout: float) -> dict:
        """The next record on stdout; fails (instead of hanging) if none comes in `timeout` seconds."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no record within {timeout} s while stdin was open and quiet")
        assert line is not None, self.stderr()
        assert line.endswith(b"\n")
        return json.loads(line)

    def rest(self) -> list[dict]:
        self.pump.join(timeout=SOON)
        out = []
        while (line := self.lines.get(timeout=SOON)) is not None:
            assert line.endswith(b"\n")
            out.append(json.loads(line))
        return out

    def stderr(self) -> str:
        self.kill()
        return self.proc.stderr.read().decode()  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=SOON)


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
        assert run.record(START_UP)["path"] == paths[0]
        assert run.proc.poll() is None
        run.send(paths[1])
        assert run.record(SOON)["path"] == paths[1]  # a name that is not UTF-8 comes back intact
        run.send(paths[2])
        run.proc.stdin.close()  # type: ignore[union-attr]
        code = run.proc.wait(timeout=SOON * 3)
        done = [paths[0], paths[1]] + [r["path"] for r in run.rest()]
    finally:
        stderr = run.stderr()
    assert code == 0, stderr
    assert done == paths  # one record each, in order


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_waiting_for_stdin_stops_at_once(tmp_path, random_weights, signum):
    path = str(make_image(tmp_path / "dog.jpg"))
    run = Producer(random_weights)
    try:
        run.send(path)
        assert run.record(START_UP)["path"] == path
        time.sleep(0.5)  # waiting for the next path
        sent = time.monotonic()
        run.proc.send_signal(signum)
        code = run.proc.wait(timeout=SOON)
        took = time.monotonic() - sent
        assert run.rest() == []
    finally:
        stderr = run.stderr()
        with contextlib.suppress(BrokenPipeError):
            run.proc.stdin.close()  # type: ignore[union-attr]
    assert code == 130, stderr
    assert took < 5, f"the signal took {took:.1f} s to stop the run"
    assert "Traceback" not in stderr and "Fatal" not in stderr, stderr
    assert "interrupted: 1 classified, 0 failed" in stderr


# --- reading stdin -------------------------------------------------------------------------------


def test_read_path_list_says_when_the_pipe_is_quiet():
    r, w = os.pipe()
    with open(r, "rb") as reader, open(w, "wb", buffering=0) as writer:
        writer.write(b"a.jpg\0b")
        paths = read_path_list(reader, null=True, stall_after=0.1)
        assert next(paths) == "a.jpg"
        t0 = time.monotonic()
        assert next(paths) is None  # half a name is not a path
        assert 0.09 <= time.monotonic() - t0 < 5
        writer.write(b".jpg\0")
        assert next(paths) == "b.jpg"
        writer.close()
        assert list(paths) == []


def test_stdin_stalls_only_after_a_real_input(tmp_path):
    """runner.first_found reads to the first input without an error: a STALL before it would start a
    run that may never see an image (exit 0 instead of "no image found", exit 2)."""
    real = str(make_image(tmp_path / "a.jpg"))
    r, w = os.pipe()

    def produce() -> None:
        with open(w, "wb", buffering=0) as writer:
            writer.write(b"missing.jpg\n")
            time.sleep(0.7)
            writer.write(real.encode() + b"\n")
            time.sleep(0.7)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    with open(r, "rb") as reader:
        got = list(iter_inputs(["-"], WalkOptions(extensions=frozenset({"jpg"})), stdin=reader))
    producer.join(timeout=SOON)
    assert [i.path for i in got if i is not STALL] == ["missing.jpg", real]
    assert got[0].error and got[1] == Input(real)
    assert got[2:] and all(i is STALL for i in got[2:])


# --- the batch loop at a stall -------------------------------------------------------------------


class CountingBackend:
    def __init__(self) -> None:
        self.batches: list[int] = []

    def topk(self, batch: np.ndarray, k: int):
        self.batches.append(len(batch))
        return np.full((len(batch), k), 1.0 / k), np.tile(np.arange(k), (len(batch), 1))


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
