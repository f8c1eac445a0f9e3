"""--resume, in one place: what an earlier run's --output FILE already holds, cutting what a killed
run left unfinished, and skipping the inputs that already have a record.

Only a FILE this tool wrote is resumed: a line that is not a record, or another csv header, is a
usage error and FILE is left as it is. Paths are matched after `os.path.normpath` (`./photos/a.jpg`
is `photos/a.jpg`); absolute and relative spellings do not meet.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

from shufflenet_cli.errors import OutputError, UsageError
from shufflenet_cli.inputs.paths import STALL, Input
from shufflenet_cli.options import RESUMABLE
from shufflenet_cli.output.formats import CSV_HEADER, CSV_UNSAFE_START, unquote_csv_cell


def drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write can leave half a line: cut it so that resuming appends cleanly."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            idx = f.read(step).rfind(b"\n")
            if idx >= 0:
                f.truncate(pos + idx + 1)
                return
        f.truncate(0)


def truncate_to_complete(path: Path, fmt: str, cut_at: int | None = None) -> None:
    """Cut what a killed run may have left unfinished, exactly what `completed_paths` leaves out (csv:
    at `cut_at` where it found the end already; the file is not read through twice)."""
    if fmt == "csv":
        keep = cut_at if cut_at is not None else _scan_csv(path)[2]
        with open(path, "rb+") as f:
            f.truncate(keep)
    else:
        drop_partial_last_line(path)


class Completed(NamedTuple):
    """The complete records of a results file, per path: all of them, and the error records among them;
    csv: the byte offset where they end (a killed run's unfinished last record is cut there); the
    file's size when it was read (None: not read), so that a change by another run before this
    one holds its lock is seen."""

    records: Counter[str]
    failed: Counter[str]
    cut_at: int | None = None
    size: int | None = None

    @classmethod
    def unread(cls) -> Completed:
        return cls(Counter(), Counter())


def completed_paths(path: Path, fmt: str, csv_safe: bool = False) -> Completed:
    """How many complete records each path has in a jsonl or csv results file, and how many of them
    are error records (for --resume).

    A count, not a set: a file named twice in the inputs has two records, and only as many
    occurrences as are done get skipped.

    jsonl: every whole line that parses. A last line without its newline was cut mid-write: not done.
    csv: a record is several rows (one per prediction) and a kill can fall between them, so the
    last record in the file is never counted as done; it is cut and classified again. csv_safe
    (--csv-safe): paths were written with formats.csv_safe_cell, and are read back without it.
    """
    if fmt not in RESUMABLE:
        raise UsageError("--resume needs --output FILE with --format jsonl or csv")
    if not path.exists():
        return Completed(Counter(), Counter())
    try:
        size = path.stat().st_size
        if fmt == "csv":
            return Completed(*_scan_csv(path, csv_safe), size=size)
        return Completed(*_scan_jsonl(path), size=size)
    except OSError as exc:
        raise OutputError(f"cannot read --output {path} to resume: {exc.strerror or exc}") from exc


def _scan_jsonl(path: Path) -> tuple[Counter[str], Counter[str]]:
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break  # half a line: drop_partial_last_line cuts it
            try:
                record = json.loads(line.decode("utf-8", "surrogateescape"))
                if not isinstance(record["path"], str):
                    raise TypeError("a path that is not a string")
                done[record["path"]] += 1
            except (ValueError, KeyError, TypeError):
                if not line.strip():
                    continue
                raise _not_results(path, f"line {number} is not a record of this tool") from None
            if "error" in record:
                failed[record["path"]] += 1
    return done, failed


def _not_results(path: Path, why: str) -> UsageError:
    """--resume appends to FILE: never to a file that this tool did not write (notes, another table)."""
    return UsageError(
        f"--resume: {path} does not look like results of shufflenet predict ({why}); nothing was appended",
        hint="give --output a new file, or the results file of the run to resume",
    )


def _scan_csv(path: Path, csv_safe: bool = False) -> tuple[Counter[str], Counter[str], int]:
    """Paths of all records but the last, those of them that are errors, and the byte offset where the
    last record begins.

    A record is a run of rows with one path that starts at rank 1 (or is a single error/empty row).
    """
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    last_failed = False
    pos = 0  # bytes handed to the csv reader so far

    def lines(f: IO[bytes]) -> Iterator[str]:
        nonlocal pos
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # half a line
            pos += len(raw)
            yield raw.decode("utf-8", "surrogateescape")

    keep = 0  # end of the last row before the current record
    last_start = 0  # where the current (last) record's rows begin
    last_path: str | None = None
    with open(path, "rb") as f:
        reader = csv.reader(lines(f), strict=True)
        first = True
        try:
            for row in reader:
                if first and tuple(row) == CSV_HEADER:
                    keep = last_start = pos
                    first = False
                    continue
                if first:
                    raise _not_results(path, f"its first row is not the header {','.join(CSV_HEADER)}")
                if not row:
                    continue
                if len(row) != len(CSV_HEADER):
                    raise _not_results(path, f"a row has {len(row)} columns, not {len(CSV_HEADER)}")
                if csv_safe:
                    row[0] = _csv_safe_path(path, row[0])
                if row[0] != last_path or row[1] in ("", "1"):
                    if last_path is not None:
                        done[last_path] += 1
                        if last_failed:
                            failed[last_path] += 1
                    last_path, last_start = row[0], keep
                    last_failed = row[-1] != ""  # the error column
                keep = pos
        except csv.Error:
            pass  # a quoted field cut mid-write
    return done, failed, last_start if last_path is not None else keep


def _csv_safe_path(path: Path, cell: str) -> str:
    """A path cell of a --csv-safe file as the path it stands for. A cell that --csv-safe would have
    quoted, found bare, means FILE was written without it: reading on would skip the wrong inputs."""
    if cell[:1] in CSV_UNSAFE_START:
        raise UsageError(
            f"--resume --csv-safe: {path} was written without --csv-safe ({cell!r}); nothing was appended",
            hint="resume it the way it was written: without --csv-safe",
        )
    return unquote_csv_cell(cell)


def skip_done(
    inputs: Iterable[Input], done: Counter[str], failed: Counter[str] | None = None, tally: Counter[str] | None = None
) -> Iterator[Input]:
    """--resume: drop as many occurrences of each path as already have a record. `tally["skipped"]`
    counts the dropped ones, `tally["failed"]` those whose record is an error (of a path's records,
    the errors first)."""
    left: Counter[str] = Counter()
    left_failed: Counter[str] = Counter()
    pairs: tuple[tuple[Counter[str], Counter[str]], ...] = ((done, left), (failed or Counter(), left_failed))
    for counts, into in pairs:
        for path, n in counts.items():
            into[_same_path(path)] += n
    for item in inputs:
        key = None if item is STALL else _same_path(item.path)  # STALL: stdin is quiet; never skipped
        if key is not None and left[key] > 0:
            left[key] -= 1
            if tally is not None:
                tally["skipped"] += 1
                if left_failed[key] > 0:
                    left_failed[key] -= 1
                    tally["failed"] += 1
            continue
        yield item


def _same_path(path: str) -> str:
    """One spelling for one path (`./photos/a.jpg` and `photos/a.jpg`), so a resumed run given the
    folder another way still finds what is done. Textual only: absolute and relative do not meet."""
    return os.path.normpath(path) if path else path
