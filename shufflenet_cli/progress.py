"""A progress bar on stderr, only for people: shown when stderr is a terminal and the run is not tiny."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console

SHOW_AFTER = 8  # images: a handful finish before a bar would even draw


class _Bar:
    def __init__(self, console: Console, enabled: bool) -> None:
        self._console = console
        self._enabled = enabled and console.is_terminal
        self._progress: Any = None
        self._task: Any = None

    def advance(self, n: int, stats: Any) -> None:
        if not self._enabled:
            return
        if self._progress is None:
            if stats.done < SHOW_AFTER:
                return
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.completed} images"),
                BarColumn(),
                TextColumn("{task.fields[rate]:.1f} images/s"),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task("predict", total=None, rate=0.0)
        elapsed = max(stats.elapsed, 1e-9)
        self._progress.update(self._task, completed=stats.done, rate=stats.done / elapsed)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def progress_for(console: Console, enabled: bool) -> Iterator[_Bar]:
    bar = _Bar(console, enabled)
    try:
        yield bar
    finally:
        bar.stop()
