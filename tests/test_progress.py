"""The progress bar: drawn only on a terminal, with a count, a rate and (once counted) a total."""

from __future__ import annotations

import io
import time

from rich.console import Console

from shufflenet_cli.pipeline import Stats
from shufflenet_cli.progress import SHOW_AFTER, Counter, progress_for


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100, color_system=None), buf


def _run(console: Console, n: int, count=None) -> None:
    stats = Stats(started=time.perf_counter() - 1.0)
    with progress_for(console, True, count) as bar:
        for _ in range(n):
            stats.classified += 1
            bar.advance(stats)
            time.sleep(0.001)


def test_no_bar_when_stderr_is_not_a_terminal():
    console, buf = _console(terminal=False)
    _run(console, 50, count=lambda: range(50))
    assert buf.getvalue() == ""


def test_no_bar_for_a_handful_of_images():
    console, buf = _console(terminal=True)
    _run(console, SHOW_AFTER - 1, count=lambda: range(SHOW_AFTER - 1))
    assert "images/s" not in buf.getvalue()


def test_bar_shows_count_rate_and_total_on_a_terminal():
    console, buf = _console(terminal=True)
    stats = Stats(started=time.perf_counter() - 1.0)
    with progress_for(console, True, lambda: range(40)) as bar:
        for _ in range(40):
            stats.classified += 1
            bar.advance(stats)
        bar._counter._thread.join()  # the background count is in: the next update carries the total
        bar.advance(stats)
        bar._progress.refresh()
    out = buf.getvalue()
    assert "images/s" in out
    assert "40/40" in out


def test_counter_counts_in_the_background():
    counted = Counter(lambda: range(40))
    counted._thread.join()
    assert counted.total == 40


def test_disabled_bar_draws_nothing_even_on_a_terminal():
    console, buf = _console(terminal=True)
    stats = Stats()
    with progress_for(console, False, None) as bar:
        for _ in range(30):
            stats.classified += 1
            bar.advance(stats)
    assert buf.getvalue() == ""


def test_counter_failure_leaves_total_unknown():
    def broken():
        yield 1
        raise OSError("gone")

    c = Counter(broken)
    c._thread.join()
    assert c.total is None
