"""The results table, for people: one table on the screen however many batches it is written in.

Its widths are fixed with the first batch, when its header goes out: the label column as wide as the
longest label (or message) in that batch, between _LABEL_USUAL and _LABEL_MAX columns (the longest
ImageNet class name), and the image column whatever else the console's width leaves. Later batches
are rows under the same borders, so no column moves; a longer label or message wraps at its spaces.
A path longer than its column is shortened from the left at a "/" (`…/2019/IMG_0001.jpg`): each
prediction stays one line, and the file's own name and nearest folders, which tell files apart, stay
in view. The whole path is in json, jsonl and csv.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shufflenet_cli.output.display import clean_text
from shufflenet_cli.records import Record

_IMAGE_MIN, _LABEL_MIN = 16, 12  # the image and label columns' narrowest
_LABEL_USUAL = 20  # wide enough for nearly every ImageNet class name, whatever the first batch held
_LABEL_MAX = 30  # "American Staffordshire terrier"
_OTHER_COLUMNS = 2 + 7 + 5 + 4 * 2  # "#" and "prob", 5 borders, padding of 1 on each side of 4 columns
ELLIPSIS = "…"

# A later batch's top border becomes the line between two images, as inside a batch
_TOP_TO_SEPARATOR = str.maketrans("┌┬┐", "├┼┤")


class TableText:
    """--format table as text, a batch at a time, for the sink to write (header, render, footer as
    the other formats): the header and top border with the first batch, then rows only, and the bottom
    border at the end, so a stream of batches reads as one table."""

    def __init__(self, console: Console) -> None:
        self._console = console  # renders as the output would show it (terminal or not, width, colours)
        self._widths: tuple[int, int] | None = None
        self._bottom = ""

    def header(self) -> str:
        return ""  # the widths wait for the first batch, so an empty run writes nothing

    def render(self, records: Iterable[Record]) -> str:
        records = list(records)
        if not records:
            return ""
        first = self._widths is None
        if self._widths is None:
            self._widths = table_widths(records, self._console.width)
        with self._console.capture() as capture:
            self._console.print(render_table(records, show_header=first, widths=self._widths))
        lines = capture.get().splitlines(keepends=True)
        top, self._bottom = lines[0], lines[-1]
        return (top if first else top.translate(_TOP_TO_SEPARATOR)) + "".join(lines[1:-1])

    def footer(self) -> str:
        return self._bottom


def render_table(records: Iterable[Record], show_header: bool = True, widths: tuple[int, int] | None = None) -> Table:
    """Grouped by image: the path once, then rank, label and a right-aligned probability.

    `widths` fixes the image and label columns (see `table_widths`), and a longer path is shortened
    to fit; without, the columns fit the content.
    """
    image, label = widths or (None, None)
    table = Table(show_header=show_header, header_style="bold")
    table.add_column("image", overflow="fold", ratio=3, min_width=_IMAGE_MIN, width=image)
    table.add_column("#", justify="right", width=2)
    table.add_column("label", overflow="fold", ratio=2, min_width=_LABEL_MIN, width=label)
    table.add_column("prob", justify="right", width=7)
    for i, record in enumerate(records):
        if i:
            table.add_section()
        for path, rank, text, prob in _table_rows(record):
            if image is not None and path:
                path = Text(shorten_path(str(path), image))
            table.add_row(path, rank, text, prob)
    return table


def table_widths(records: Iterable[Record], width: int, fixed: tuple[int, int] | None = None) -> tuple[int, int]:
    """The image and label columns' widths for a table `width` columns wide: the label column as wide
    as the longest label or message in `records` (within 20 and 30), the image column the rest (at
    least 16; the label column gives way first, down to 12, on a narrow console). `fixed`: a table's widths so far,
    which stay."""
    if fixed is not None:
        return fixed
    label = _LABEL_USUAL
    for record in records:
        for _, _, text, _ in _table_rows(record):
            label = max(label, _text_width(text))
    room = max(width - _OTHER_COLUMNS, _IMAGE_MIN + _LABEL_MIN)
    label = max(_LABEL_MIN, min(label, _LABEL_MAX, room - _IMAGE_MIN))
    return room - label, label


def shorten_path(path: str, width: int) -> str:
    """`path` in `width` columns: whole where it fits, else "…/" and as many of its last folders as
    fit with the file's name. A name that alone is too long is kept whole after "…/" (the table folds
    it): a file is never shown by part of its name."""
    if cell_len(path) <= width:
        return path
    *folders, name = path.split("/")
    shown = name
    for folder in reversed(folders):
        longer = f"{folder}/{shown}"
        if cell_len(f"{ELLIPSIS}/{longer}") > width:
            break
        shown = longer
    return f"{ELLIPSIS}/{shown}"


def _table_rows(record: Record) -> Iterator[tuple[Text | str, str, Text, str]]:
    path = Text(clean_text(record.path))  # undecodable bytes as U+FFFD, control characters escaped
    if record.error is not None:
        yield path, "", Text("error: " + clean_text(record.error), style="red"), ""
        return
    if not record.predictions:
        yield path, "", Text("(nothing above the threshold)", style="dim"), ""
    for j, p in enumerate(record.predictions):
        yield path if j == 0 else "", str(p.rank), Text(clean_text(p.label)), f"{p.probability:.4f}"


def _text_width(text: Text | str) -> int:
    """Columns the longest line takes, as rich measures a cell."""
    lines = str(text).splitlines()
    return max(map(cell_len, lines)) if lines else 0
