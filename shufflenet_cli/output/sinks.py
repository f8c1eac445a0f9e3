"""Where results go: stdout, or --output FILE (atomic for json, appended for jsonl/csv, resumable).

Each batch is written whole and flushed, with SIGINT/SIGTERM held meanwhile, so a stopped run leaves
only complete records behind; a batch that a full disk cuts short is cut back out of a file (the
write error is still exit 74). --output json goes to a temp file renamed at the end (a failed run
leaves an earlier file as it was); jsonl/csv records are appended batch by batch, and --resume
cuts whatever a killed run left unfinished before appending. A file is locked for the run
(output/locks.py): a second run on it stops with exit 2 before it changes anything. A jsonl/csv file
that this run starts (or replaces) gets its provenance beside it (resume.sidecar_of), written with
its first records; a resumed one keeps the provenance it has.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import stat
import sys
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from shufflenet_cli.atomic import AtomicFile, is_stream, rename_target, write_atomic
from shufflenet_cli.errors import OutputError, UsageError, WriteError
from shufflenet_cli.options import RESUMABLE
from shufflenet_cli.output.formats import renderer_for
from shufflenet_cli.output.locks import LockBeside, lock_fd
from shufflenet_cli.output.resume import Completed, sidecar_of, truncate_to_complete
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
        completed: Completed | None = None,
        csv_safe: bool = False,
        provenance: dict[str, Any] | None = None,
    ):
        """completed (--resume): what `completed_paths` found in `output` (where its complete records
        end, and its size then); None looks again. csv_safe: --csv-safe (formats.Csv). provenance
        (resume.provenance): kept beside a jsonl/csv `output` that this run starts."""
        if resume and (output is None or fmt not in RESUMABLE):
            raise UsageError("--resume needs --output FILE with --format jsonl or csv")
        self.fmt = fmt
        self.output = output
        self._atomic: AtomicFile | None = None  # json into a file: renamed over it at the end
        self._lock: LockBeside | None = None  # json into a file: the lock beside it
        self._replace = False  # jsonl/csv without --resume: empty the file at the first write, not before
        self._created = False  # the file did not exist before this run
        # written beside a jsonl/csv file with its first records; None: not (stdout, json, a resumed file)
        self._provenance = provenance if output is not None and fmt in RESUMABLE else None
        self._wrote = False
        new_file = True
        if output is None:
            self._stream, self._close_stream = _stdout(stdout)
        else:
            self._stream, new_file = self._open_file(output, fmt, resume, completed or Completed.unread())
            self._close_stream = True
        console = _table_console(self._stream) if fmt == "table" else None
        self._renderer = renderer_for(fmt, csv_header=new_file, csv_safe=csv_safe, console=console)
        # Written with the first batch (or at close): nothing reaches stdout if the model fails to load.
        self._header = self._renderer.header()

    def _open_file(self, output: Path, fmt: str, resume: bool, completed: Completed) -> tuple[IO[bytes], bool]:
        try:
            if output.is_dir():
                raise IsADirectoryError(21, "Is a directory")
            if fmt in RESUMABLE:
                return self._open_appended(output, fmt, resume, completed)
            if is_stream(output):
                return open(output, "ab", buffering=0), True  # a FIFO, a device, /dev/stdout: nothing to rename over
            self._lock = LockBeside(rename_target(output), "--output", output)
            self._atomic = AtomicFile(output)
            return self._atomic.file, True
        except OSError as exc:
            self._release()
            hint = "give a file name" if output.is_dir() else "choose a file in an existing folder you can write to"
            raise OutputError(f"cannot write --output {output}: {exc.strerror or exc}", hint=hint) from exc

    def _open_appended(self, output: Path, fmt: str, resume: bool, completed: Completed) -> tuple[IO[bytes], bool]:
        """jsonl/csv: opened now, so an unwritable path fails before any work; locked before anything
        in it changes. Unbuffered: a write cut short by a full disk leaves no bytes behind to go out later."""
        existed = output.exists()
        f = open(output, "ab", buffering=0)
        try:
            regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
            if regular:
                lock_fd(f.fileno(), "--output", output)
            if resume and existed:
                if regular and completed.size is not None and os.fstat(f.fileno()).st_size != completed.size:
                    raise _changed(output)  # another run wrote to it after this one read it
                truncate_to_complete(output, fmt, completed.cut_at)
                new = os.fstat(f.fileno()).st_size == 0
                if not (new and regular):  # its records' provenance stays (or stays unknown)
                    self._provenance = None
                return f, new
        except BaseException:
            f.close()
            raise
        # An earlier file is only emptied at the first write, so a run that fails before it (bad
        # weights) leaves it be. No unlink: a symlink or /dev/stdout stays what it is.
        self._replace, self._created = existed and regular, not existed
        if not regular:
            self._provenance = None
        return f, True

    def _write(self, text: str) -> None:
        text, self._header = self._header + text, ""
        if not text:
            return
        data = text.encode("utf-8", _ERRORS[self.fmt])
        try:
            with held_while_writing():
                if self._provenance is not None:  # first: records never go out without it
                    self._keep_provenance()
                if self._replace:
                    self._stream.truncate(0)  # O_APPEND: the writes then start at 0
                    self._replace = False
                self._wrote = True
                start = _end_of_file(self._stream) if self._close_stream else None
                try:
                    _write_all(self._stream, data)
                except OSError:
                    if start is not None:  # whole records or none: a torn last one would read as a record
                        _cut_back(self._stream, start)
                    raise
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise WriteError(f"cannot write results: {exc.strerror or exc}") from exc

    def _keep_provenance(self) -> None:
        """FILE.shufflenet.json, whole or not at all (a temporary file renamed), replacing an earlier one."""
        kept, self._provenance = self._provenance, None
        if self.output is not None and kept is not None:
            write_atomic(sidecar_of(self.output), json.dumps(kept, indent=2, ensure_ascii=False).encode() + b"\n")

    def write(self, records: list[Record]) -> None:
        self._write(self._renderer.render(records))

    def close(self, complete: bool = True) -> Path | None:
        """Finish the output (closing bracket, atomic rename). Called on success and on interruption.

        An interrupted json --output does not replace FILE: it is kept as FILE.partial, whose path is
        returned (a valid JSON array of the records done so far).
        """
        partial = None
        try:
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
                self._release()
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
        if self._close_stream:  # the caller's own stream stays open
            with contextlib.suppress(OSError, ValueError):
                self._stream.close()
            if self._created and not self._wrote and self._atomic is None:
                with contextlib.suppress(OSError):
                    os.unlink(self.output)  # type: ignore[arg-type]
                self._created = False
        if self._atomic is not None:
            self._atomic.discard()
            self._atomic = None
        self._release()

    def _release(self) -> None:
        """The lock beside a json FILE; a jsonl/csv file's own lock goes with its descriptor."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _changed(output: Path) -> OutputError:
    return OutputError(
        f"--output {output} was changed by another run while this one started; nothing was appended",
        hint="run --resume again once the other run is done",
    )


def _write_all(stream: IO[bytes], data: bytes) -> None:
    """All of `data`, through a raw file's partial writes too, then flushed."""
    view = memoryview(data)
    while view:
        n = stream.write(view)
        if n is None:  # a non-blocking descriptor that is full
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        view = view[n:]
    stream.flush()


def _end_of_file(stream: IO[bytes]) -> int | None:
    """Where a regular file ends, when the next write goes there (appended, or written at its end);
    None for anything else (a pipe, a terminal, a buffer)."""
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND or os.lseek(fd, 0, os.SEEK_CUR) == st.st_size:
            return st.st_size
    except (OSError, ValueError):
        pass
    return None


def _cut_back(stream: IO[bytes], size: int) -> None:
    """Cut a regular file back to `size`, where its last complete record ends."""
    with contextlib.suppress(OSError, ValueError):
        fd = stream.fileno()
        os.ftruncate(fd, size)
        if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
            os.lseek(fd, size, os.SEEK_SET)


def _stdout(given: IO[bytes] | None) -> tuple[IO[bytes], bool]:
    """The binary stream for results on stdout, and whether the sink closes it when it is done.

    The process's stdout gets an unbuffered writer of the sink's own on the same descriptor, which
    stays open: bytes that a full disk or a closed pipe refused are not kept anywhere. Left in
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
    return open(fd, "wb", buffering=0, closefd=False), True


def _table_console(stream: IO[bytes]) -> Console:
    """A Console that renders as it would for `stream` (terminal or not, colours, width), into a string.

    The table then goes out through `Sink._write` like any other format: written by rich itself, a
    closed pipe would exit 1 (`Console.on_broken_pipe`) and a full disk would escape as a bare OSError.
    """
    target = Console(file=stream)  # type: ignore[arg-type]  # only asked whether it is a terminal
    return Console(
        file=io.StringIO(),
        highlight=False,
        soft_wrap=False,
        force_terminal=target.is_terminal,
        color_system=target.color_system,  # type: ignore[arg-type]
        width=target.width,
    )
