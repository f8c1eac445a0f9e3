"""Decode workers as processes (the CUDA default) give the same records as threads, in order, and a
worker that dies costs only the file that killed it."""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pytest
from conftest import make_image

from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.decode.processes import CRASHED, PROCESS_GROUP
from shufflenet_cli.decode.workers import Decoded, decode_in_order
from shufflenet_cli.inputs.paths import Input


def _folder(tmp_path, n=21):
    paths = [str(make_image(tmp_path / f"{i:02d}.jpg", size=(60 + i, 50), seed=i)) for i in range(n)]
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths.insert(5, str(tmp_path / "bad.jpg"))
    return [Input(p) for p in paths] + [Input(str(tmp_path / "dir"), error="is a directory")]


@pytest.mark.parametrize("window", [1, 8, 64])
def test_processes_match_threads_in_order(tmp_path, prep, window):
    inputs = _folder(tmp_path)
    threads = list(decode_in_order(inputs, prep, workers=2, window=window))
    processes = list(decode_in_order(inputs, prep, workers=2, window=window, processes=True))
    assert [d.input.path for d in processes] == [i.path for i in inputs]
    assert [d.error for d in processes] == [d.error for d in threads]
    assert processes[5].error and processes[-1].error == "is a directory"
    for p, t in zip(processes, threads, strict=True):
        if t.array is not None:
            np.testing.assert_array_equal(p.array, t.array)


class DiesOn:
    """A decoder that kills its worker process on one file (like a segfault in a C decoder)."""

    def __init__(self, prep: Preprocess, fatal: str) -> None:
        self.prep, self.fatal = prep, fatal

    def __call__(self, path: str):
        if path == self.fatal:
            os._exit(1)
        return self.prep(path)


def test_a_worker_that_dies_costs_only_its_file(tmp_path, prep):
    inputs = _folder(tmp_path, n=3 * PROCESS_GROUP)
    fatal = inputs[PROCESS_GROUP + 2].path
    out = list(decode_in_order(inputs, DiesOn(prep, fatal), workers=2, window=64, processes=True))
    assert [d.input.path for d in out] == [i.path for i in inputs]
    assert [d.input.path for d in out if d.error == CRASHED] == [fatal]
    assert sum(d.array is not None for d in out) == len(inputs) - 3  # the fatal, the bad and the folder


def test_cli_decode_in_processes(cli, tmp_path, random_weights):
    paths = [make_image(tmp_path / f"{i}.jpg", size=(90, 70), seed=i) for i in range(10)]
    args = ("predict", *paths, "-m", "x0_5", "--weights", random_weights, "--device", "cpu", "-f", "json", "-b", "4")
    threads = cli(*args, "--decode-in", "threads")
    processes = cli(*args, "--decode-in", "processes", "--timings")
    assert processes.exit_code == threads.exit_code == 0
    assert processes.json() == threads.json()
    assert "(processes)" in processes.stderr


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


@pytest.mark.parametrize("started", [False, True])
def test_decode_worker_processes_keep_pillows_warnings_off_stderr(started):
    """As the main process does: a Pillow warning (DecompressionBombWarning, bad metadata) in a worker
    process printed a raw `warnings.warn(` traceback line to stderr."""
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "from shufflenet_cli.decode.processes import _worker_start\n"
        + ("_worker_start(None)\n" if started else "")
        + "warnings.warn_explicit('big picture', UserWarning, 'Image.py', 1, module='PIL.Image')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ("big picture" in proc.stderr) is not started


def test_ctrl_c_while_the_worker_processes_start(tmp_path):
    """Ctrl-C reaches the whole process group; a new interpreter that gets it while it imports used
    to die (the forkserver: the parent then failed with EOFError, exit 70, and a traceback)."""
    import subprocess
    import sys

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
        timeout=60,
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
    import subprocess
    import sys

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
        out, err = proc.communicate(timeout=30)
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


def test_every_worker_process_gets_work_even_with_a_small_window():
    from shufflenet_cli.decode.processes import groups_in_flight

    assert groups_in_flight(workers=16, window=64) == 16  # -b 1 -j 16: 8 groups would idle 8 workers
    assert groups_in_flight(workers=16, window=256) == 256 // PROCESS_GROUP
    assert groups_in_flight(workers=0, window=1) == 1


def test_the_main_loop_counts_its_wait_for_slow_decoding(monkeypatch):
    """--timings' "waiting for decoded images": the time the main loop spends on the next decoded
    input, which says the workers are the bottleneck, and nothing else. Here each input takes 50 ms
    to arrive (0.2 s in all) and each batch of two 150 ms to classify (0.3 s), which is not waiting."""
    import time

    from shufflenet_cli import pipeline
    from shufflenet_cli.outcome import Stats

    def slow(*args):
        for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
            time.sleep(0.05)
            yield Decoded(Input(name), np.zeros((2, 2, 3), np.uint8))

    class SlowBackend:
        def topk(self, batch, k):
            time.sleep(0.15)
            return np.full((len(batch), 1), 1.0, np.float32), np.zeros((len(batch), 1), np.int64)

    monkeypatch.setattr(pipeline, "decode_in_order", slow)
    stats = Stats()
    chunks = pipeline.run([], None, SlowBackend(), ["only"], batch_size=2, topk=1, stats=stats)
    records = [r for chunk in chunks for r in chunk]
    assert [r.path for r in records] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert stats.inference_s >= 0.29
    assert 0.19 <= stats.wait_s < 0.45  # the inference (0.3 s) is not counted as waiting


def _cannot_start_in_a_worker(prep):
    if multiprocessing.parent_process() is not None:  # unpickled in a worker process
        os._exit(1)  # as a worker re-running a script without a __main__ guard dies
    return CannotStartInWorkers(prep)


class CannotStartInWorkers:
    """A decoder that kills every worker process it is sent to, even with an empty task."""

    def __init__(self, prep: Preprocess) -> None:
        self.prep, self.crop = prep, prep.crop

    def __call__(self, path: str):
        return self.prep(path)

    def __reduce__(self):
        return (_cannot_start_in_a_worker, (self.prep,))


@pytest.mark.parametrize("window", [8, 64])
def test_workers_that_cannot_start_hand_the_run_to_threads(tmp_path, prep, window):
    """Where no worker process can run at all, every input is still decoded, in order, in threads,
    with one warning; no input becomes a "decoder crashed" record."""
    import warnings

    from shufflenet_cli.errors import ShufflenetWarning

    inputs = _folder(tmp_path, n=3 * PROCESS_GROUP + 3)
    threads = list(decode_in_order(inputs, prep, workers=2, window=window))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = list(decode_in_order(inputs, CannotStartInWorkers(prep), workers=2, window=window, processes=True))
    ours = [w for w in caught if issubclass(w.category, ShufflenetWarning)]
    assert len(ours) == 1 and "decoding in threads instead" in str(ours[0].message)
    assert [d.input.path for d in got] == [i.path for i in inputs]
    assert [d.error for d in got] == [d.error for d in threads] and CRASHED not in [d.error for d in got]
    for g, t in zip(got, threads, strict=True):
        assert (g.array is None and t.array is None) or np.array_equal(g.array, t.array)


def test_the_cli_prints_its_own_warnings_as_one_line(cli, tmp_path, random_weights, monkeypatch):
    import warnings

    from shufflenet_cli import pipeline
    from shufflenet_cli.errors import ShufflenetWarning

    real = pipeline.decode_in_order

    def warns_first(inputs, prep, workers, window, processes=False):
        message = "decode worker processes cannot start here; decoding in threads instead"
        warnings.warn(message, ShufflenetWarning, stacklevel=2)
        yield from real(inputs, prep, workers, window, False)

    monkeypatch.setattr(pipeline, "decode_in_order", warns_first)
    paths = [make_image(tmp_path / f"{i}.jpg", size=(90, 70), seed=i) for i in range(3)]
    r = cli("predict", *paths, "-m", "x0_5", "--weights", random_weights, "--device", "cpu", "-f", "json")
    assert r.exit_code == 0 and len(r.json()) == 3
    assert "warning: decode worker processes cannot start here; decoding in threads instead\n" in r.stderr
    assert "ShufflenetWarning" not in r.stderr and "warnings.warn" not in r.stderr


def test_once_a_worker_has_run_a_crash_is_the_files_fault(tmp_path, prep, monkeypatch):
    """After a task has come back, a crash never sends the run to threads (the file that killed a
    worker would kill the main process there): no probe, the file alone is a "crashed" record."""
    from shufflenet_cli.decode.processes import _Pool

    def no_probe(self):
        raise AssertionError("probed whether workers can start after one had run a task")

    monkeypatch.setattr(_Pool, "starts", no_probe)
    inputs = _folder(tmp_path, n=3 * PROCESS_GROUP)
    fatal = inputs[PROCESS_GROUP + 2].path
    out = list(decode_in_order(inputs, DiesOn(prep, fatal), workers=1, window=8, processes=True))
    assert [d.input.path for d in out if d.error == CRASHED] == [fatal]
