"""Where results go: stdout, or --output FILE (atomic for json, appended for jsonl/csv, resumable).

Each batch is written whole and flushed, so a stopped run leaves only complete records behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO

from rich.console import Console

from shufflenet_cli.errors import OutputError, UsageError
from shufflenet_cli.output import render_table, renderer_for
from shufflenet_cli.records import Record

# JSON: a lone surrogate (undecodable file-name byte) becomes the JSON escape \udcXX.
# CSV and tables: the original bytes go out unchanged.
_ERRORS = {"json": "backslashreplace", "jsonl": "backslashreplace", "csv": "surrogateescape", "table": "replace"}


class Sink:
    def __init__(self, fmt: str, output: Path | None = None, resume: bool = False, stdout: IO[bytes] | None = None):
        if resume and (output is None or fmt not in ("jsonl", "csv")):
            raise UsageError("--resume needs --output FILE with --format jsonl or csv")
        self.fmt = fmt
        self.output = output
        self._tmp: str | None = None
        self._first_table = True
        new_file = True
        if output is None:
            binary = stdout if stdout is not None else sys.stdout.buffer
            self._close_stream = False
        else:
            binary, new_file = self._open_file(output, fmt, resume)
            self._close_stream = True
        self._stream = io.TextIOWrapper(
            binary, encoding="utf-8", errors=_ERRORS[fmt], newline="" if fmt == "csv" else "\n", write_through=True
        )
        self._renderer = None if fmt == "table" else renderer_for(fmt, csv_header=new_file)
        self._console = Console(file=self._stream, highlight=False, soft_wrap=False) if fmt == "table" else None
        if self._renderer is not None:
            self._write(self._renderer.header())

    def _open_file(self, output: Path, fmt: str, resume: bool) -> tuple[IO[bytes], bool]:
        try:
            if fmt in ("jsonl", "csv"):
                if resume and output.exists():
                    drop_partial_last_line(output)
                elif not resume and output.exists():
                    output.unlink()
                new = not output.exists() or output.stat().st_size == 0
                return open(output, "ab"), new
            directory = output.resolve().parent
            fd, self._tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=directory)
            return os.fdopen(fd, "wb"), True
        except OSError as exc:
            raise OutputError(f"cannot write --output {output}: {exc.strerror or exc}") from exc

    def _write(self, text: str) -> None:
        if not text:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write results: {exc.strerror or exc}") from exc

    def write(self, records: list[Record]) -> None:
        if self._console is not None:
            self._console.print(render_table(records, show_header=self._first_table))
            self._first_table = False
            self._stream.flush()
        else:
            self._write(self._renderer.render(records))

    def close(self) -> None:
        """Finish the output (closing bracket, atomic rename). Called on success and on interruption."""
        if self._renderer is not None:
            self._write(self._renderer.footer())
        if self._close_stream:
            self._stream.close()
            if self._tmp is not None:
                os.replace(self._tmp, self.output)
                self._tmp = None
        else:
            self._stream.detach()

    def abort(self) -> None:
        """Leave nothing half-written behind after an error."""
        if self._tmp is not None:
            try:
                self._stream.close()
            finally:
                os.unlink(self._tmp)
                self._tmp = None


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


def completed_paths(path: Path, fmt: str) -> set[str]:
    """Paths already present in a jsonl or csv results file (for --resume)."""
    if not path.exists():
        return set()
    done: set[str] = set()
    with open(path, encoding="utf-8", errors="surrogateescape", newline="" if fmt == "csv" else None) as f:
        if fmt == "csv":
            for row in csv.reader(f):
                if row and row[0] != "path":
                    done.add(row[0])
        else:
            for line in f:
                try:
                    done.add(json.loads(line)["path"])
                except (ValueError, KeyError, TypeError):
                    continue
    return done
