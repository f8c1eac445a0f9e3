"""Ctrl-C and SIGTERM at every stage: during start-up, mid-run (whole records, in order, exit 130),
while waiting on a quiet stdin, while the decode worker processes start or stop, and after the run
(a second Ctrl-C is ignored; an in-process run gives the caller's handlers back).

The time limits here are hang guards (conftest.HANG), never bounds on how fast a stop is."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import HANG, Producer, folder_of, make_image, sample_records

from shufflenet_cli.decode.workers import Decoded
from shufflenet_cli.inputs.paths import Input
from shufflenet_cli.output.sinks import Sink

# --- a run on the command line ----------------------------------------------------------------


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
        deadline = time.monotonic() + HANG
        while len(got) < 3 and time.monotonic() < deadline:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, proc.stderr.read().decode()  # type: ignore[union-attr]
            got.append(line)
        assert proc.poll() is None  # records arrive while the run is still going
        proc.send_signal(signum)
        code = proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=HANG)
    while (line := lines.get(timeout=HANG)) is not None:
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
        deadline = time.monotonic() + HANG
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the output opens after the handler is in place, before torch is imported
        assert out.exists() and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert not out.exists() or out.stat().st_size > 0  # removed, or (signal after start-up) whole records


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_waiting_for_stdin_stops_at_once(tmp_path, random_weights, signum):
    """Stdin stays open and quiet all along: nothing but the signal can end the run, so a run that
    ends (with stdin still open) was stopped by it; one that kept waiting fails after HANG seconds."""
    path = str(make_image(tmp_path / "dog.jpg"))
    run = Producer(random_weights)
    try:
        run.send(path)
        assert run.record()["path"] == path
        time.sleep(0.5)  # waiting for the next path
        run.proc.send_signal(signum)
        code = run.proc.wait(timeout=HANG)
        assert not run.proc.stdin.closed  # type: ignore[union-attr]  # the end of input did not stop it
        assert run.rest() == []
    finally:
        stderr = run.stderr()
        with contextlib.suppress(BrokenPipeError):
            run.proc.stdin.close()  # type: ignore[union-attr]
    assert code == 130, stderr
    assert "Traceback" not in stderr and "Fatal" not in stderr, stderr
    assert "interrupted: 1 classified, 0 failed" in stderr


# --- a second Ctrl-C --------------------------------------------------------------------------


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
            sink.write(sample_records("a.jpg", "b.jpg", "c.jpg"))
    finally:
        signal.signal(signal.SIGINT, old)
    text = pipe.data.decode()
    assert text.endswith("\n")
    assert [json.loads(line)["path"] for line in text.splitlines()] == ["a.jpg", "b.jpg", "c.jpg"]


# The CLI with a read of a silent pipe that never gives up (PIPE_TIMEOUT an hour): only a signal can end it
_NEVER_GIVES_UP = """import sys
from shufflenet_cli.decode import images
images.PIPE_TIMEOUT = 3600.0
from shufflenet_cli.cli import main
sys.argv[0] = "shufflenet"
main()
"""


def test_a_second_ctrl_c_ends_the_run_while_a_decode_worker_is_blocked(tmp_path, random_weights):
    """A FIFO whose writer holds it open and never writes blocks its decode worker. The first Ctrl-C asks
    for a stop between batches, which cannot come; the second must end the run at once, exit 130, with
    the records done so far whole, and the blocked worker thread must not keep the process alive."""
    first = str(make_image(tmp_path / "a.jpg"))
    fifo = tmp_path / "b.jpg"
    os.mkfifo(fifo)
    holder = os.open(fifo, os.O_RDWR)  # a writer that never writes and never closes
    cmd = [sys.executable, "-c", _NEVER_GIVES_UP, "predict", first, str(fifo), "-m", "x0_5"]
    cmd += ["--weights", str(random_weights), "-f", "jsonl", "-b", "1", "-j", "1", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _line_within(proc, HANG)
        assert line is not None and json.loads(line)["path"] == first, proc.stderr.read().decode()  # type: ignore[union-attr]
        time.sleep(0.5)  # the worker is now in the silent pipe's read
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # the first Ctrl-C waits for the batch in hand
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("still running after the second Ctrl-C")
    finally:
        os.close(holder)
        if proc.poll() is None:
            proc.kill()
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert out == b""  # the first record came before; nothing torn after it
    assert "interrupted: 1 classified, 0 failed" in stderr


def _line_within(proc: subprocess.Popen, seconds: float) -> bytes | None:
    """The child's next stdout line, or None if none comes within `seconds` (a hang guard)."""
    got: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: got.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        return got.get(timeout=seconds) or None
    except queue.Empty:
        return None


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


def test_an_in_process_run_gives_the_callers_sigterm_handler_back(cli, images, random_weights):
    before = signal.getsignal(signal.SIGTERM)
    r = cli("predict", images[0], "-m", "x0_5", "--weights", random_weights, "-q")
    assert r.exit_code == 0, r.stderr
    assert signal.getsignal(signal.SIGTERM) is before


# --- decode worker processes ------------------------------------------------------------------


CTRL_C_WHILE_STARTING = """
import signal, sys
import multiprocessing.forkserver
from shufflenet_cli.decode.workers import decode_in_order
from shufflenet_cli.inputs.paths import Input
from shufflenet_cli.models import resolve_model
from shufflenet_cli.decode.preprocess import Preprocess

stopped = []
signal.signal(signal.SIGINT, lambda *_: stopped.append(1))  # the CLI's StopFlag does the same
multiprocessing.forkserver.set_forkserver_preload(["ctrl_c_on_import"])  # Ctrl-C while the forkserver starts
prep = Preprocess.from_spec(resolve_model("x0_5"))
out = list(decode_in_order([Input(p) for p in sys.argv[1:]], prep, workers=2, window=8, processes=True))
print(len(out), sum(d.array is not None for d in out), len(stopped))
"""


def test_ctrl_c_while_the_worker_processes_start(tmp_path):
    """Ctrl-C reaches the whole process group; a new interpreter that gets it while it imports used
    to die (the forkserver: the parent then failed with EOFError, exit 70, and a traceback)."""
    (tmp_path / "ctrl_c_on_import.py").write_text(
        "import os, signal, time\nos.killpg(os.getpgid(0), signal.SIGINT)\ntime.sleep(0.2)\n"
    )
    paths = [str(make_image(tmp_path / f"{i}.jpg", size=(60, 50), seed=i)) for i in range(10)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    r = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_STARTING, *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.split() == ["10", "10", "1"]  # every file decoded; the parent saw the Ctrl-C once


SLOW_DECODER = """
import time

import numpy as np

from shufflenet_cli.decode.preprocess import Crop


def slow(path):
    time.sleep(0.2)
    return Crop(np.zeros((4, 4, 3), np.uint8), 0.0, 0.0)
"""


CTRL_C_WHILE_STOPPING = """
import os, signal, threading
from shufflenet_cli.decode.workers import decode_in_order
from shufflenet_cli.inputs.paths import Input
from slow_decoder import slow

signal.signal(signal.SIGINT, signal.default_int_handler)
decoded = decode_in_order([Input(str(i)) for i in range(64)], slow, workers=2, window=32, processes=True)
next(decoded)  # the first two groups are done; the next two are running
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # the second Ctrl-C, while they finish
try:
    decoded.close()
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c_while_the_worker_processes_stop(tmp_path):
    """A second Ctrl-C while closing waits for the running groups: the process exits (it used to hang
    at exit, joining workers that never got their stop signal)."""
    (tmp_path / "slow_decoder.py").write_text(SLOW_DECODER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_WHILE_STOPPING],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # with its forkserver and workers
        proc.communicate()
        pytest.fail("hung after the second Ctrl-C")
    assert proc.returncode == 0 and out.split() == ["interrupted"], err


def test_an_exception_while_decoding_stops_reaches_the_caller(monkeypatch):
    """pipeline.run closes the decoder itself: a KeyboardInterrupt raised while the workers stop (a
    second Ctrl-C) reaches the caller, instead of "Exception ignored" and a traceback on stderr."""
    from shufflenet_cli import pipeline

    def decoded(*args):
        try:
            yield Decoded(Input("a.jpg"), error="unreadable")
            yield Decoded(Input("b.jpg"), error="unreadable")
        finally:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "decode_in_order", decoded)
    checks = []
    stop_at_the_second = lambda: checks.append(1) or len(checks) > 1  # noqa: E731 - the first Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        list(pipeline.run([], None, None, [], batch_size=4, should_stop=stop_at_the_second))
