"""Warnings during a run, as people read them on stderr: this tool's own as one "warning: ..." line
(Python's own form takes two, with a source line), Pillow's metadata warnings silenced (the image still
counts), any other left to Python."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from rich.console import Console

from shufflenet_cli.errors import ShufflenetWarning
from shufflenet_cli.output.display import clean_text

ShowWarning = Callable[..., None]  # the signature of warnings.showwarning


@contextmanager
def tool_warnings(err: Console) -> Iterator[None]:
    """Pillow's metadata warnings silenced (the image still counts); this tool's own as one line each."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="PIL")
        warnings.showwarning = _one_line_for_ours(err, warnings.showwarning)
        yield


def _one_line_for_ours(err: Console, other: ShowWarning) -> ShowWarning:
    """A warnings.showwarning that prints this tool's own warnings as one "warning: ..." line on
    stderr, and leaves any other warning to `other`."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: IO[str] | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, ShufflenetWarning):
            err.print(f"warning: {clean_text(str(message))}", highlight=False, markup=False)
        else:
            other(message, category, filename, lineno, file, line)

    return show
