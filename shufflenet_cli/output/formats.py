"""Pure renderers: records in, text out. No I/O here. The table is in table.py.

json / jsonl / csv are produced a batch at a time so a million records stream without being held.
Lone surrogates (from non-UTF-8 file names) are left in the strings; the sink's error handler
writes them as `\\udcXX` escapes in JSON and as the original bytes in CSV.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable

from rich.console import Console

from shufflenet_cli.output.table import TableText
from shufflenet_cli.output.table import render_table as render_table  # where it was before table.py
from shufflenet_cli.output.table import table_widths as table_widths
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


def renderer_for(
    fmt: str, csv_header: bool = True, csv_safe: bool = False, console: Console | None = None
) -> JsonLines | JsonArray | Csv | TableText:
    """The renderer of `fmt`; a table renders as `console` would show it (terminal or not, width)."""
    if fmt == "table":
        return TableText(console or Console(width=80, color_system=None))
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
