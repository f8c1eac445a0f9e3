"""From inputs to batches: decode workers as threads or processes (the CUDA default) give the same
records, in order; a worker that dies costs only the file that killed it; where no worker process can
start the run goes on in threads; crops come back through shared-memory slots; the batch loop closes a
chunk after -b inputs, failed ones included, and stacks each batch into one reused buffer.

(Ctrl-C while the worker processes start or stop: test_interrupts.py. The time waiting for them:
test_timings.py.)"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import HANG, CountingBackend, make_image

from shufflenet_cli import pipeline
from shufflenet_cli.decode import crop_slots
from shufflenet_cli.decode.crop_slots import CropSlots
from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.decode.processes import CRASHED, PROCESS_GROUP
from shufflenet_cli.decode.workers import decode_in_order
from shufflenet_cli.inputs.paths import Input

# --- threads and processes --------------------------------------------------------------------


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


def test_cli_decode_in_processes(cli, tmp_path, random_weights):
    paths = [make_image(tmp_path / f"{i}.jpg", size=(90, 70), seed=i) for i in range(10)]
    args = ("predict", *paths, "-m", "x0_5", "--weights", random_weights, "--device", "cpu", "-f", "json", "-b", "4")
    threads = cli(*args, "--decode-in", "threads")
    processes = cli(*args, "--decode-in", "processes", "--timings")
    assert processes.exit_code == threads.exit_code == 0
    assert processes.json() == threads.json()
    assert "(processes)" in processes.stderr


def test_every_worker_process_gets_work_even_with_a_small_window():
    from shufflenet_cli.decode.processes import groups_in_flight

    assert groups_in_flight(workers=16, window=64) == 16  # -b 1 -j 16: 8 groups would idle 8 workers
    assert groups_in_flight(workers=16, window=256) == 256 // PROCESS_GROUP
    assert groups_in_flight(workers=0, window=1) == 1


@pytest.mark.parametrize("started", [False, True])
def test_decode_worker_processes_keep_pillows_warnings_off_stderr(started):
    """As the main process does: a Pillow warning (DecompressionBombWarning, bad metadata) in a worker
    process printed a raw `warnings.warn(` traceback line to stderr."""
    code = (
        "import warnings\n"
        "from shufflenet_cli.decode.processes import worker_start\n"
        + ("worker_start(None)\n" if started else "")
        + "warnings.warn_explicit('big picture', UserWarning, 'Image.py', 1, module='PIL.Image')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr
    assert ("big picture" in proc.stderr) is not started


# --- a worker that dies, workers that cannot start --------------------------------------------


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


def test_once_a_worker_has_run_a_crash_is_the_files_fault(tmp_path, prep, monkeypatch):
    """After a task has come back, a crash never sends the run to threads (the file that killed a
    worker would kill the main process there): no probe, the file alone is a "crashed" record."""
    from shufflenet_cli.decode.processes import WorkerPool

    def no_probe(self):
        raise AssertionError("probed whether workers can start after one had run a task")

    monkeypatch.setattr(WorkerPool, "starts", no_probe)
    inputs = _folder(tmp_path, n=3 * PROCESS_GROUP)
    fatal = inputs[PROCESS_GROUP + 2].path
    out = list(decode_in_order(inputs, DiesOn(prep, fatal), workers=1, window=8, processes=True))
    assert [d.input.path for d in out if d.error == CRASHED] == [fatal]


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


# --- shared-memory crop slots -----------------------------------------------------------------


SHAPE = (6, 5, 3)


def _child_writes(name: str, count: int, slot: int, value: int) -> bool:
    crop_slots.attach(name, count, SHAPE)
    return crop_slots.put(slot, np.full(SHAPE, value, np.uint8)) and not crop_slots.put(
        slot, np.zeros((2, 2, 3), np.uint8)
    )


def test_a_worker_process_writes_and_the_main_process_reads():
    slots = CropSlots(4, SHAPE)
    try:
        ids = slots.take(3)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            assert pool.apply(_child_writes, (slots.name, 4, ids[1], 77))
        got = slots.read(ids[1])
        assert got.shape == SHAPE and (got == 77).all()
        got[:] = 0  # a copy: the slot can be reused at once
        assert (slots.read(ids[1]) == 77).all()
        slots.release(ids)
        assert sorted(slots.take(4)) == [0, 1, 2, 3]
        with pytest.raises(RuntimeError):
            slots.take(1)
    finally:
        slots.close()


def test_close_unlinks_the_block():
    from multiprocessing import shared_memory

    slots = CropSlots(2, SHAPE)
    name = slots.name
    slots.close()
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=name)


def test_decode_many_puts_crops_in_their_slots(tmp_path):
    """The worker side, run in this process: crops go into the slots, errors stay records."""
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.decode.workers import decode_many, decode_one
    from shufflenet_cli.inputs.paths import Input
    from shufflenet_cli.models import resolve_model

    prep = Preprocess.from_spec(resolve_model("x0_5"))
    items = [Input(str(make_image(tmp_path / f"{i}.jpg", size=(90, 70), seed=i))) for i in range(2)]
    items.insert(1, Input(str(tmp_path / "missing.jpg")))
    slots = CropSlots(4, (prep.crop, prep.crop, 3))
    try:
        crop_slots.attach(slots.name, slots.count, slots.shape)
        ids = slots.take(3)
        out = decode_many(prep, items, ids)
        assert [d.slot for d in out] == [ids[0], None, ids[2]]
        assert out[0].array is None and out[1].error and out[2].array is None
        np.testing.assert_array_equal(slots.read(ids[2]), decode_one(prep, items[2]).array)
    finally:
        crop_slots.detach()
        slots.close()


# --- into batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_many_failing_inputs_still_stream(tmp_path, workers):
    """10 unreadable files then 1 good one, -b 2: a chunk closes after 2 inputs, failed ones included,
    so the first records come out before the last input is even listed."""
    bad = []
    for i in range(10):
        path = tmp_path / f"bad{i:02d}.jpg"
        path.write_bytes(b"")
        bad.append(str(path))
    good = str(make_image(tmp_path / "good.jpg", size=(16, 16)))
    listed: list[str] = []

    def inputs():
        for path in [*bad, good]:
            listed.append(path)
            yield Input(path)

    prep = Preprocess(8, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    backend = CountingBackend()
    labels = [f"class{i}" for i in range(3)]
    chunks, listed_at_first_chunk = [], None
    for records in pipeline.run(inputs(), prep, backend, labels, batch_size=2, workers=workers, topk=3):
        if listed_at_first_chunk is None:
            listed_at_first_chunk = len(listed)
        chunks.append(records)

    assert [len(c) for c in chunks] == [2, 2, 2, 2, 2, 1]  # never more than batch_size records
    assert [r.path for c in chunks for r in c] == [*bad, good]
    assert all(r.error and "empty" in r.error for c in chunks[:5] for r in c)
    assert chunks[-1][0].ok and len(chunks[-1][0].predictions) == 3
    assert backend.batches == [1]  # only the good image reaches the model
    assert good not in listed[:listed_at_first_chunk]  # the first records came before the end of the input


def test_batches_are_stacked_into_one_reused_buffer():
    """pipeline.Stacker: np.stack's result, in memory kept from batch to batch (a smaller last
    batch uses the front of it; another crop shape gets a new buffer)."""
    from shufflenet_cli.pipeline import Stacker

    rng = np.random.default_rng(0)
    stack = Stacker()
    first = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(5)]
    a = stack(first)
    np.testing.assert_array_equal(a, np.stack(first))
    second = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3)]
    b = stack(second)
    np.testing.assert_array_equal(b, np.stack(second))
    assert np.shares_memory(a, b) and b.shape == (3, 4, 4, 3)
    other = [rng.integers(0, 256, (2, 2, 3), dtype=np.uint8) for _ in range(5)]
    c = stack(other)
    np.testing.assert_array_equal(c, np.stack(other))
    assert not np.shares_memory(a, c)
