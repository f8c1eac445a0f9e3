"""Where results go: stdout, or --output FILE (atomic for json, appended for jsonl/csv, resumable).

Each batch is written whole and flushed, with SIGINT/SIGTERM held meanwhile, so a stopped run leaves
only complete records behind. --output json goes to a temp file renamed at the end (a failed run
leaves an earlier file as it was); jsonl/csv records are appended batch by batch, and --resume
cuts whatever a killed run left unfinished before appending.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import stat
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import IO, Iterator, NamedTuple

from rich.console import Console

from shufflenet_cli.errors import OutputError, UsageError, WriteError
from shufflenet_cli.output.formats import CSV_HEADER, render_table, renderer_for, table_widths
from shufflenet_cli.records import Record
from shufflenet_cli.atomic import is_stream, new_file_mode, rename_target

# JSON: a lone surrogate (undecodable file-name byte) becomes the JSON escape \udcXX.
# CSV and tables: the original bytes go out unchanged.
_ERRORS = {"json": "backslashreplace", "jsonl": "backslashreplace", "csv": "surrogateescape", "table": "replace"}
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
RESUMABLE = ("jsonl", "csv")


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
        self._tmp: str | None = None
        self._target: Path | None = None  # what the json temp file is renamed to (a symlink's target)
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
            self._target = rename_target(output)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=self._target.parent)
            os.fchmod(fd, new_file_mode(output))  # mkstemp makes 0600; the result gets what open() would give
            return os.fdopen(fd, "wb"), True
        except OSError as exc:
            raise OutputError(f"cannot write --output {output}: {exc.strerror or exc}") from exc

    def _write(self, text: str) -> None:
        text, self._header = self._header + text, ""
        if not text:
            return
        try:
            with _signals_held():
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
        else:
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
                if self._tmp is not None:
                    target = self._target
                    stale = self._target.with_name(self._target.name + ".partial")
                    if not complete:
                        partial = target = stale
                    os.replace(self._tmp, target)
                    self._tmp = None
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
            if self._created and not self._wrote and self._tmp is None:
                with contextlib.suppress(OSError):
                    os.unlink(self.output)  # type: ignore[arg-type]
                self._created = False
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


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


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a batch is written, then pass them on to the handlers they were for.

    A second Ctrl-C makes the runner raise KeyboardInterrupt; held, it lands after the last byte of
    the batch, never between two halves of a line. (A signal mask would not do: the kernel hands a
    process-wide signal to any thread that does not block it, such as a decode worker.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        for signum in held:
            _deliver(signum, old[signum])


def _deliver(signum: int, handler: object) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)


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
    csv: the byte offset where they end (a killed run's unfinished last record is cut there)."""

    records: Counter[str]
    failed: Counter[str]
    cut_at: int | None = None


def completed_paths(path: Path, fmt: str) -> Completed:
    """How many complete records each path has in a jsonl or csv results file, and how many of them
    are error records (for --resume).

    A count, not a set: a file named twice in the inputs has two records, and only as many
    occurrences as are done get skipped.

    jsonl: every whole line that parses. A last line without its newline was cut mid-write: not done.
    csv: a record is several rows (one per prediction) and a kill can fall between them, so the
    last record in the file is never counted as done; it is cut and classified again.
    """
    if fmt not in RESUMABLE:
        raise UsageError("--resume needs --output FILE with --format jsonl or csv")
    if not path.exists():
        return Completed(Counter(), Counter())
    try:
        if fmt == "csv":
            return Completed(*_scan_csv(path))
        return Completed(*_scan_jsonl(path))
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


def _scan_csv(path: Path) -> tuple[Counter[str], Counter[str], int]:
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
