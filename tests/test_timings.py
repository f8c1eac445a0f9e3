"""--timings: the rate after the first batch (the one-time costs, workers starting and the first
forward pass's set-up, kept apart from the rate a long run settles at) and the time the main loop
waits for decoded images.

Time here is a fake clock that moves only when a fake decoder or backend "works": the numbers are
exact on any machine, however busy, and still show a second counted in the wrong place."""

from __future__ import annotations

import re

import numpy as np
import pytest

from shufflenet_cli import outcome, pipeline
from shufflenet_cli.decode.workers import Decoded
from shufflenet_cli.inputs.paths import Input
from shufflenet_cli.outcome import Stats
from shufflenet_cli.output.summary import timings_lines


class FakeClock:
    """time.perf_counter for the pipeline and Stats; `work(s)` moves it on by s seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def work(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(pipeline, "time", fake)
    monkeypatch.setattr(outcome, "time", fake)
    return fake


def new_stats(clock: FakeClock) -> Stats:
    return Stats(started=clock.perf_counter())  # the field's default reads the real clock


class SlowFirstBatch:
    """A backend whose first batch takes 0.4 s (as cuDNN's set-up does) and the others 10 ms."""

    name, precision = "fake", "fp32"

    def __init__(self, clock: FakeClock) -> None:
        self.calls = 0
        self.clock = clock

    def topk(self, batch, k):
        self.calls += 1
        self.clock.work(0.4 if self.calls == 1 else 0.01)
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


def test_the_rate_after_the_first_batch_leaves_the_slow_start_out(monkeypatch, clock):
    monkeypatch.setattr(pipeline, "decode_in_order", _decoded)
    stats = new_stats(clock)
    records = [
        r
        for chunk in pipeline.run([], None, SlowFirstBatch(clock), ["a", "b"], batch_size=4, topk=2, stats=stats)
        for r in chunk
    ]
    assert len(records) == 40 and stats.first_batch is not None
    seconds, done = stats.first_batch
    assert seconds >= 0.4 and done == 4
    overall = stats.done / stats.elapsed
    assert stats.after_first_batch > 2 * overall  # 36 images in 0.09 s vs 40 in 0.49 s
    text = "\n".join(timings_lines(Outcome(stats)))
    assert f"first batch done after {seconds:.2f} s" in text
    shown = float(re.search(r"; ([0-9.]+) images/s after it", text).group(1))
    assert shown > 2 * overall


def test_a_single_batch_has_no_rate_after_it(monkeypatch, clock):
    monkeypatch.setattr(pipeline, "decode_in_order", lambda *a: (d for d in list(_decoded())[:3]))
    stats = new_stats(clock)
    list(pipeline.run([], None, SlowFirstBatch(clock), ["a", "b"], batch_size=4, topk=2, stats=stats))
    assert stats.first_batch is not None and stats.after_first_batch is None
    assert "the only batch" in "\n".join(timings_lines(Outcome(stats)))


def test_the_first_batch_is_the_first_forward_pass_not_a_chunk_of_failures(monkeypatch, clock):
    def failures_then_images(*args):
        for i in range(4):
            yield Decoded(Input(f"bad{i}.jpg"), error="unreadable")
        for i in range(8):
            yield Decoded(Input(f"{i}.jpg"), np.zeros((2, 2, 3), np.uint8))

    monkeypatch.setattr(pipeline, "decode_in_order", failures_then_images)
    stats = new_stats(clock)
    list(pipeline.run([], None, SlowFirstBatch(clock), ["a", "b"], batch_size=4, topk=2, stats=stats))
    assert stats.first_batch is not None and stats.first_batch[1] == 8  # 4 failed, then 4 classified
    assert stats.first_batch[0] >= 0.4  # the slow first forward pass is inside it
    assert stats.ended is not None and stats.elapsed == stats.ended - stats.started


def test_the_main_loop_counts_its_wait_for_slow_decoding(monkeypatch, clock):
    """--timings' "waiting for decoded images": the time the main loop spends on the next decoded
    input, which says the workers are the bottleneck, and nothing else. Here each input takes 50 ms
    to arrive (0.2 s in all) and each batch of two 150 ms to classify (0.3 s), which is not waiting."""

    def slow(*args):
        for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
            clock.work(0.05)
            yield Decoded(Input(name), np.zeros((2, 2, 3), np.uint8))

    class SlowBackend:
        def topk(self, batch, k):
            clock.work(0.15)
            return np.full((len(batch), 1), 1.0, np.float32), np.zeros((len(batch), 1), np.int64)

    monkeypatch.setattr(pipeline, "decode_in_order", slow)
    stats = new_stats(clock)
    chunks = pipeline.run([], None, SlowBackend(), ["only"], batch_size=2, topk=1, stats=stats)
    records = [r for chunk in chunks for r in chunk]
    assert [r.path for r in records] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert stats.inference_s == pytest.approx(0.3)
    assert stats.wait_s == pytest.approx(0.2)  # the inference (0.3 s) is not counted as waiting


def _summary(stats: Stats) -> str:
    from shufflenet_cli.outcome import Outcome as RealOutcome
    from shufflenet_cli.output.summary import summary_line

    return summary_line(RealOutcome(0, stats))


def test_the_summary_counts_the_start_and_says_how_long_it_took(clock):
    """It gave the loop's 0.30 s only: the model load and an ONNX export, seconds, were left out."""
    began = clock.perf_counter()
    clock.work(3.9)  # inputs, outputs, the model loaded and exported
    stats = new_stats(clock)
    stats.began = began
    stats.classified = 3
    clock.work(0.3)
    stats.end()
    assert _summary(stats) == "3 classified, 0 failed in 4.20 s (start 3.90 s, then 10.0 images/s)"
    text = "\n".join(timings_lines(Outcome(stats)))
    assert "timings: 10.0 images/s end-to-end over 3 inputs (decode to output)" in text
    assert "start 3.90 s (inputs, outputs, model load and backend set-up); 4.20 s in all" in text


def test_without_a_recorded_start_the_summary_is_the_loops(clock):
    stats = new_stats(clock)
    stats.classified, stats.failed = 1, 1
    clock.work(0.5)
    stats.end()
    assert _summary(stats) == "1 classified, 1 failed in 0.50 s (4.0 images/s)"


def test_predict_records_when_it_was_called(cli, images, random_weights, monkeypatch, tmp_path):
    """The model's load (made slow here) is inside the summary's time, and the report's."""
    import time

    from conftest import ReportPage

    from shufflenet_cli import api

    real_ready = api.ready

    def slow_ready(*args, **kwargs):
        time.sleep(0.5)
        return real_ready(*args, **kwargs)

    monkeypatch.setattr(api, "ready", slow_ready)
    report = tmp_path / "r.html"
    argv = ["predict", images[0].parent, "-m", "x0_5", "--weights", random_weights, "-f", "jsonl", "-j", "1"]
    r = cli(*argv, "--report", report)
    assert r.exit_code == 0, r.stderr
    pattern = r"3 classified, 0 failed in ([\d.]+) s \(start ([\d.]+) s, then [\d.]+ images/s\)"
    found = re.search(pattern, r.stderr)
    assert found, r.stderr
    total, start = float(found[1]), float(found[2])
    assert start >= 0.5 and total >= start
    assert re.fullmatch(pattern, ReportPage(report.read_text()).by_class["summary"][0])


def test_fetches_are_summed_apart_and_shown_only_where_there_were_some(monkeypatch, clock):
    def some_fetched(*args):
        for i in range(6):
            remote = i % 2 == 0
            yield Decoded(
                Input(f"{i}.jpg"), np.zeros((2, 2, 3), np.uint8), decode_s=0.01, fetch_s=0.1 * remote, fetched=remote
            )

    monkeypatch.setattr(pipeline, "decode_in_order", some_fetched)
    stats = new_stats(clock)
    list(pipeline.run([], None, SlowFirstBatch(clock), ["a", "b"], batch_size=4, topk=2, stats=stats))
    assert (stats.fetched, stats.fetch_s, stats.decode_s) == (3, pytest.approx(0.3), pytest.approx(0.06))
    text = "\n".join(timings_lines(Outcome(stats)))
    assert "fetch 100.00 ms per fetched input, 3 of them" in text
    assert "read+decode 10.00 ms/image" in text

    stats.fetched, stats.fetch_s = 0, 0.0
    assert "fetch" not in "\n".join(timings_lines(Outcome(stats)))
