"""--timings' rate after the first batch: the one-time costs (workers starting, the first forward
pass's set-up) kept apart from the rate a long run settles at."""

from __future__ import annotations

import re
import time

import numpy as np

from shufflenet_cli import pipeline
from shufflenet_cli.decode.workers import Decoded
from shufflenet_cli.inputs.paths import Input
from shufflenet_cli.outcome import Stats
from shufflenet_cli.output.summary import timings_lines


class SlowFirstBatch:
    """A backend whose first batch takes 0.4 s (as cuDNN's set-up does) and the others 10 ms."""

    name, precision = "fake", "fp32"

    def __init__(self) -> None:
        self.calls = 0

    def topk(self, batch, k):
        self.calls += 1
        time.sleep(0.4 if self.calls == 1 else 0.01)
        n = len(batch)
        return np.full((n, k), 1.0 / k, np.float32), np.tile(np.arange(k), (n, 1))

    def describe(self) -> str:
        return self.name


def _decoded(*args):
    for i in range(40):
        yield Decoded(Input(f"{i}.jpg"), np.zeros((2, 2, 3), np.uint8))


class Outcome:
    def __init__(self, stats):
        self.stats = stats
        self.tuning = type("T", (), {"batch_size": 4, "workers": 1, "threads": 1, "processes": False})()
        self.backend = "fake"


def test_the_rate_after_the_first_batch_leaves_the_slow_start_out(monkeypatch):
    monkeypatch.setattr(pipeline, "decode_in_order", _decoded)
    stats = Stats()
    records = [
        r
        for chunk in pipeline.run([], None, SlowFirstBatch(), ["a", "b"], batch_size=4, topk=2, stats=stats)
        for r in chunk
    ]
    assert len(records) == 40 and stats.first_batch is not None
    seconds, done = stats.first_batch
    assert seconds >= 0.4 and done == 4
    overall = stats.done / stats.elapsed
    assert stats.after_first_batch > 2 * overall  # 36 images in about 0.09 s vs 40 in about 0.5 s
    text = "\n".join(timings_lines(Outcome(stats)))
    assert f"first batch done after {seconds:.2f} s" in text
    shown = float(re.search(r"; ([0-9.]+) images/s after it", text).group(1))
    assert shown > 2 * overall


def test_a_single_batch_has_no_rate_after_it(monkeypatch):
    monkeypatch.setattr(pipeline, "decode_in_order", lambda *a: (d for d in list(_decoded())[:3]))
    stats = Stats()
    list(pipeline.run([], None, SlowFirstBatch(), ["a", "b"], batch_size=4, topk=2, stats=stats))
    assert stats.first_batch is not None and stats.after_first_batch is None
    assert "the only batch" in "\n".join(timings_lines(Outcome(stats)))


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


def test_the_first_batch_is_the_first_forward_pass_not_a_chunk_of_failures(monkeypatch):
    def failures_then_images(*args):
        for i in range(4):
            yield Decoded(Input(f"bad{i}.jpg"), error="unreadable")
        for i in range(8):
            yield Decoded(Input(f"{i}.jpg"), np.zeros((2, 2, 3), np.uint8))

    monkeypatch.setattr(pipeline, "decode_in_order", failures_then_images)
    stats = Stats()
    list(pipeline.run([], None, SlowFirstBatch(), ["a", "b"], batch_size=4, topk=2, stats=stats))
    assert stats.first_batch is not None and stats.first_batch[1] == 8  # 4 failed, then 4 classified
    assert stats.first_batch[0] >= 0.4  # the slow first forward pass is inside it
    assert stats.ended is not None and stats.elapsed == stats.ended - stats.started
