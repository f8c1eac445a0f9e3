"""A progress bar on stderr, only for people: shown when stderr is a terminal and the run is not tiny;
where the results go to the same terminal, a footer line below them instead (a bar would tear them).

The inputs stream, so their number is not known up front; when the bar is shown, a background thread
counts them (a second, cheap walk) and the bar gains a total and an ETA once that count is in.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

from rich.console import Console
from rich.control import Control, ControlType

from shufflenet_cli.outcome import Stats

SHOW_AFTER = 8  # images: a handful finish before a bar would even draw


class Counter:
    """Counts an iterable in a daemon thread; `total` is None until it is done."""

    def __init__(self, make_items: Callable[[], Iterable[Any]]) -> None:
        self.total: int | None = None
        self._thread = threading.Thread(target=self._count, args=(make_items,), daemon=True, name="count")
        self._thread.start()

    def wait(self) -> None:
        """Until the count is in (or has given up)."""
        self._thread.join()

    def _count(self, make_items: Callable[[], Iterable[Any]]) -> None:
        n = 0
        try:
            for _ in make_items():
                n += 1
        except Exception:  # noqa: BLE001 - counting is only for the ETA; never fail the run for it
            return
        self.total = n


class Bar:
    def __init__(self, console: Console, enabled: bool, count: Callable[[], Iterable[Any]] | None = None) -> None:
        self._console = console
        self._enabled = enabled and console.is_terminal
        self._count = count
        self._counter: Counter | None = None
        self._progress: Any = None
        self._task: Any = None

    def advance(self, stats: Stats) -> None:
        if not self._enabled:
            return
        if self._progress is None:
            if self._counter is None and self._count is not None:
                self._counter = Counter(self._count)
            if stats.done < SHOW_AFTER:
                return
            self._start()
        total = self._counter.total if self._counter is not None else None
        rate = stats.done / max(stats.elapsed, 1e-9)
        self._progress.update(self._task, completed=stats.done, total=total, rate=rate)

    def _start(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("classifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} images/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("predict", total=None, rate=0.0)

    def wait_for_count(self) -> None:
        """Until the background count of the inputs is in (the next update then carries the total)."""
        if self._counter is not None:
            self._counter.wait()

    def refresh(self) -> None:
        """Draw the bar now, not at its next tick."""
        if self._progress is not None:
            self._progress.refresh()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def clear(self) -> None:
        """Nothing: the bar draws on its own line, and the results do not go to its terminal."""


class Footer:
    """Progress as the last line of a terminal that also shows the results: drawn after each batch,
    and erased before the next batch's rows are written where it stood, so it never tears the table.
    Drawn only then (no refresh thread): nothing else writes to the terminal meanwhile."""

    def __init__(self, console: Console, enabled: bool, count: Callable[[], Iterable[Any]] | None = None) -> None:
        self._console = console
        self._enabled = enabled and console.is_terminal
        self._counter = Counter(count) if self._enabled and count is not None else None
        self._drawn = False

    def advance(self, stats: Stats) -> None:
        if not self._enabled or stats.done < SHOW_AFTER:
            return
        self.clear()
        line = footer_line(stats, self._counter.total if self._counter else None)
        # a column short of the width: a full line would move the cursor on, and the erase miss it
        self._console.print(line[: self._console.width - 1], end="", **_PLAIN)
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self._console.control(Control.move_to_column(0), Control((ControlType.ERASE_IN_LINE, 2)))
            self._drawn = False

    def stop(self) -> None:
        self.clear()


_PLAIN: dict[str, Any] = {"markup": False, "highlight": False, "no_wrap": True, "overflow": "crop", "crop": True}


def footer_line(stats: Stats, total: int | None) -> str:
    """`classifying DONE/TOTAL, RATE images/s, ELAPSED, ETA LEFT` (the total and ETA once counted)."""
    done, elapsed = stats.done, stats.elapsed
    rate = done / max(elapsed, 1e-9)
    line = f"classifying {done}/{total if total is not None else '?'}, {rate:.1f} images/s, {_clock(elapsed)}"
    if total is not None and total >= done and rate > 0:
        line += f", ETA {_clock((total - done) / rate)}"
    return line


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@contextmanager
def progress_for(
    console: Console, enabled: bool, count: Callable[[], Iterable[Any]] | None = None, under_results: bool = False
) -> Iterator[Bar | Footer]:
    """A bar, or where the results go to the terminal too (`under_results`), a footer line below them."""
    bar = Footer(console, enabled, count) if under_results else Bar(console, enabled, count)
    try:
        yield bar
    finally:
        bar.stop()
