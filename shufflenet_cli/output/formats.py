"""Pure renderers: records in, text (or a rich Table) out. No I/O here.

json / jsonl / csv are produced a batch at a time so a million records stream without being held.
Lone surrogates (from non-UTF-8 file names) are left in the strings; the sink's error handler
writes them as `\\udcXX` escapes in JSON and as the original bytes in CSV.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Iterator

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from shufflenet_cli.output.display import clean_text
from shufflenet_cli.records import Record

CSV_HEADER = ("path", "rank", "index", "label", "probability", "error")

# A cell starting with one of these is a formula to a spreadsheet (OWASP: CSV injection); with
# --csv-safe it gets a leading "'", which spreadsheets show as text and hide. A cell that starts with
# "'" gets one too, so that reading back (--resume) strips exactly one from any cell that has it.
CSV_UNSAFE_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe_cell(text: str) -> str:
    """--csv-safe: `text` as a spreadsheet shows it, never as a formula."""
    return "'" + text if text[:1] in CSV_UNSAFE_START or text[:1] == "'" else text


def unquote_csv_cell(cell: str) -> str:
    """What `csv_safe_cell` was given."""
    return cell[1:] if cell[:1] == "'" else cell


def _dumps(record: Record) -> str:
    return json.dumps(record.to_dict(), ensure_ascii=False)


class JsonLines:
    def header(self) -> str:
        return ""

    def render(self, records: Iterable[Record]) -> str:
        return "".join(_dumps(r) + "\n" for r in records)

    def footer(self) -> str:
        return ""


class JsonArray:
    """One JSON array, written incrementally: `[`, records separated by commas, `]`."""

    def __init__(self) -> None:
        self._first = True

    def header(self) -> str:
        return "["

    def render(self, records: Iterable[Record]) -> str:
        parts = []
        for r in records:
            parts.append(("\n  " if self._first else ",\n  ") + _dumps(r))
            self._first = False
        return "".join(parts)

    def footer(self) -> str:
        return "]\n" if self._first else "\n]\n"


class Csv:
    def __init__(self, header: bool = True, safe: bool = False) -> None:
        self._header = header
        self._safe = safe  # --csv-safe: the text cells (path, label, error) through csv_safe_cell

    def header(self) -> str:
        return self._rows([CSV_HEADER]) if self._header else ""

    def render(self, records: Iterable[Record]) -> str:
        rows = (row for r in records for row in csv_rows(r))
        if self._safe:  # the numbers are never negative: only the text cells can start a formula
            rows = (
                (csv_safe_cell(str(path)), rank, index, csv_safe_cell(str(label)), prob, csv_safe_cell(str(error)))
                for path, rank, index, label, prob, error in rows
            )
        return self._rows(rows)

    def footer(self) -> str:
        return ""

    @staticmethod
    def _rows(rows: Iterable[Iterable[object]]) -> str:
        # Each row ends in "\n", and a field holding "\r" or "\n" is quoted. The writer quotes only the
        # characters of its own line terminator (Python 3.11): with "\n" it would leave a bare "\r" of a
        # file name unquoted, where CSV readers end the row. So it writes "\r\n", turned into "\n" per row.
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        for row in rows:
            writer.writerow(row)
            buf.seek(buf.tell() - 2)
            buf.write("\n")
            buf.truncate()
        return buf.getvalue()


def csv_rows(record: Record) -> list[tuple[object, ...]]:
    if record.error is not None:
        return [(record.path, "", "", "", "", record.error)]
    if not record.predictions:
        return [(record.path, "", "", "", "", "")]
    return [(record.path, p.rank, p.index, p.label, f"{p.probability:.6f}", "") for p in record.predictions]


_IMAGE_MIN, _LABEL_MIN = 16, 12  # the image and label columns' narrowest
_OTHER_COLUMNS = 2 + 7 + 5 + 4 * 2  # "#" and "prob", 5 borders, padding of 1 on each side of 4 columns


def render_table(records: Iterable[Record], show_header: bool = True, widths: tuple[int, int] | None = None) -> Table:
    """Grouped by image: the path once, then rank, label and a right-aligned probability.

    `widths` fixes the image and label columns (see `table_widths`); without, they fit the content.
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
        for row in _table_rows(record):
            table.add_row(*row)
    return table


def table_widths(records: Iterable[Record], width: int, floor: tuple[int, int] | None = None) -> tuple[int, int]:
    """The image and label columns' widths for a table `width` columns wide: each as wide as its longest
    text in `records` (at least 16 and 12, or `floor`); where they do not fit, the wider one is narrowed
    first.

    A table printed batch by batch passes the widths so far as `floor`: batches line up, and a column
    widens when a later batch needs it (narrowing only to fit the console), so a short first batch (one path, then stdin
    paused) does not squeeze every later one into a narrow column.
    """
    image, label = floor or (_IMAGE_MIN, _LABEL_MIN)
    for record in records:
        for path, _, text, _ in _table_rows(record):
            image, label = max(image, _text_width(path)), max(label, _text_width(text))
    room = max(width - _OTHER_COLUMNS, _IMAGE_MIN + _LABEL_MIN)
    while image + label > room:
        if image > _IMAGE_MIN and (image >= label or label == _LABEL_MIN):
            image -= 1
        else:
            label -= 1
    return image, label


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


def renderer_for(fmt: str, csv_header: bool = True, csv_safe: bool = False) -> JsonLines | JsonArray | Csv:
    if fmt == "jsonl":
        return JsonLines()
    if fmt == "json":
        return JsonArray()
    if fmt == "csv":
        return Csv(header=csv_header, safe=csv_safe)
    raise ValueError(f"no text renderer for {fmt!r}")


_BY_SUFFIX = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def choose_format(explicit: str | None, json_flag: bool, output: Path | None) -> str:
    """--format if given, --json, else --output's extension (results.jsonl -> jsonl), else table."""
    from shufflenet_cli.errors import UsageError

    if json_flag:
        if explicit not in (None, "json"):
            raise UsageError(f"--json and --format {explicit} disagree", hint="give one of them")
        return "json"
    if explicit is not None:
        return explicit
    if output is not None:
        return _BY_SUFFIX.get(output.suffix.lower(), "table")
    return "table"
