"""Where results go: stdout, or --output FILE (atomic for json, appended for jsonl/csv, resumable).

Each batch is written whole and flushed, with SIGINT/SIGTERM held meanwhile, so a stopped run leaves
only complete records behind. --output json goes to a temp file renamed at the end (a failed run
leaves an earlier file as it was); jsonl/csv records are appended batch by batch, and --resume
cuts whatever a killed run left unfinished before appending.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from pathlib import Path
from typing import IO

from rich.console import Console

from shufflenet_cli.atomic import AtomicFile, is_stream
from shufflenet_cli.errors import OutputError, UsageError, WriteError
from shufflenet_cli.options import RESUMABLE
from shufflenet_cli.output.formats import render_table, renderer_for, table_widths
from shufflenet_cli.output.resume import truncate_to_complete
from shufflenet_cli.records import Record
from shufflenet_cli.signals import held_while_writing

# JSON: a lone surrogate (undecodable file-name byte) becomes the JSON escape \udcXX.
# CSV and tables: the original bytes go out unchanged.
_ERRORS = {"json": "backslashreplace", "jsonl": "backslashreplace", "csv": "surrogateescape", "table": "replace"}


class Sink:
    def __init__(
        self,
        fmt: str,
        output: Path | None = None,
        resume: bool = False,
        stdout: IO[bytes] | None = None,
        cut_at: int | None = None,
    ):
        """cut_at (--resume): where the complete records of `output` end, as `completed_paths` found
        them; None looks again."""
        if resume and (output is None or fmt not in RESUMABLE):
            raise UsageError("--resume needs --output FILE with --format jsonl or csv")
        self.fmt = fmt
        self.output = output
        self._atomic: AtomicFile | None = None  # json into a file: renamed over it at the end
        self._replace = False  # jsonl/csv without --resume: empty the file at the first write, not before
        self._created = False  # the file did not exist before this run
        self._wrote = False
        self._table_widths: tuple[int, int] | None = None  # the table's columns so far: they only widen
        new_file = True
        if output is None:
            binary, self._close_stream = _stdout(stdout)
        else:
            binary, new_file = self._open_file(output, fmt, resume, cut_at)
            self._close_stream = True
        self._stream = io.TextIOWrapper(
            binary, encoding="utf-8", errors=_ERRORS[fmt], newline="" if fmt == "csv" else "\n", write_through=True
        )
        self._renderer = None if fmt == "table" else renderer_for(fmt, csv_header=new_file)
        self._console = _table_console(self._stream) if fmt == "table" else None
        # Written with the first batch (or at close): nothing reaches stdout if the model fails to load.
        self._header = self._renderer.header() if self._renderer is not None else ""

    def _open_file(self, output: Path, fmt: str, resume: bool, cut_at: int | None) -> tuple[IO[bytes], bool]:
        try:
            if output.is_dir():
                raise IsADirectoryError(21, "Is a directory")
            if fmt in RESUMABLE:
                existed = output.exists()
                if resume and existed:
                    truncate_to_complete(output, fmt, cut_at)
                    return open(output, "ab"), output.stat().st_size == 0
                # Opened now, so an unwritable path fails before any work; an earlier file is only
                # emptied at the first write, so a run that fails before it (bad weights) leaves it be.
                # No unlink: a symlink or /dev/stdout stays what it is.
                f = open(output, "ab")
                self._replace, self._created = existed and stat.S_ISREG(os.fstat(f.fileno()).st_mode), not existed
                return f, True
            if is_stream(output):
                return open(output, "ab"), True  # a FIFO, a device, /dev/stdout: nothing to rename over
            self._atomic = AtomicFile(output)
            return self._atomic.file, True
        except OSError as exc:
            raise OutputError(f"cannot write --output {output}: {exc.strerror or exc}") from exc

    def _write(self, text: str) -> None:
        text, self._header = self._header + text, ""
        if not text:
            return
        try:
            with held_while_writing():
                if self._replace:
                    self._stream.buffer.truncate(0)  # O_APPEND: the writes then start at 0
                    self._replace = False
                self._wrote = True
                self._stream.write(text)
                self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise WriteError(f"cannot write results: {exc.strerror or exc}") from exc

    def write(self, records: list[Record]) -> None:
        if self._console is not None:
            first = self._table_widths is None
            self._table_widths = table_widths(records, self._console.width, self._table_widths)
            with self._console.capture() as table:
                self._console.print(render_table(records, show_header=first, widths=self._table_widths))
            self._write(table.get())
        elif self._renderer is not None:
            self._write(self._renderer.render(records))

    def close(self, complete: bool = True) -> Path | None:
        """Finish the output (closing bracket, atomic rename). Called on success and on interruption.

        An interrupted json --output does not replace FILE: it is kept as FILE.partial, whose path is
        returned (a valid JSON array of the records done so far).
        """
        partial = None
        try:
            if self._renderer is not None:
                self._write(self._renderer.footer())
            if self._close_stream:
                self._stream.close()
                if self._atomic is not None:
                    stale = self._atomic.target.with_name(self._atomic.target.name + ".partial")
                    if not complete:
                        partial = stale
                    self._atomic.commit(to=partial)
                    self._atomic = None
                    if complete:  # an earlier interrupted run's records: FILE now holds them all
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(stale)
            else:
                self._stream.detach()
        except BrokenPipeError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            where = "results" if self.output is None else f"--output {self.output}"
            raise WriteError(f"cannot write {where}: {exc.strerror or exc}") from exc
        except BaseException:
            self.abort()
            raise
        return partial

    def abort(self) -> None:
        """Leave nothing half-written behind after an error: the json temp file goes, a previous file stays."""
        if not self._close_stream:
            # The caller's stream stays open. If what it holds cannot be flushed (a full disk), detach
            # fails too: that error is the one being handled already, and must not replace it.
            with contextlib.suppress(OSError, ValueError):
                self._stream.detach()
        else:
            with contextlib.suppress(OSError, ValueError):
                self._stream.close()
            if self._created and not self._wrote and self._atomic is None:
                with contextlib.suppress(OSError):
                    os.unlink(self.output)  # type: ignore[arg-type]
                self._created = False
        if self._atomic is not None:
            self._atomic.discard()
            self._atomic = None


def _stdout(given: IO[bytes] | None) -> tuple[IO[bytes], bool]:
    """The binary stream for results on stdout, and whether the sink closes it when it is done.

    The process's stdout gets a buffered writer of the sink's own on the same descriptor, which stays
    open: bytes that a full disk or a closed pipe refused go away with that writer. Left in
    sys.stdout's buffer, they would make Python's flush at exit fail ("Exception ignored", exit 120).
    """
    if given is not None:
        return given, False
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        raise WriteError(
            "cannot write results: standard output is closed", hint="leave stdout open, or pass --output FILE"
        )
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # no descriptor (a test runner's capture): its buffer, as it is
        return sys.stdout.buffer, False
    sys.stdout.flush()  # anything printed before goes first
    return open(fd, "wb", closefd=False), True


def _table_console(stream: IO[str]) -> Console:
    """A Console that renders as it would for `stream` (terminal or not, colours, width), into a string.

    The table then goes out through `Sink._write` like any other format: written by rich itself, a
    closed pipe would exit 1 (`Console.on_broken_pipe`) and a full disk would escape as a bare OSError.
    """
    target = Console(file=stream)
    return Console(
        file=io.StringIO(),
        highlight=False,
        soft_wrap=False,
        force_terminal=target.is_terminal,
        color_system=target.color_system,  # type: ignore[arg-type]
        width=target.width,
    )
