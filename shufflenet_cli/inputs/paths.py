"""Finding inputs: files, directories (walked lazily, sorted), glob patterns (globbing.py), and `-` for stdin.

Yields one `Input` per file in the order given, without listing everything first, so the first batch
starts at once and memory stays flat. A path that does not exist is an `Input` with an error.
When stdin stops sending paths for a moment (`tail -f`, `inotifywait`), `STALL` goes out instead, every
`STALL_AFTER` seconds until more comes: the pipeline then finishes what it holds (pipeline.py), and the
batch loop gets a chance to see Ctrl-C.
"""

from __future__ import annotations

import os
import select
from dataclasses import dataclass
from typing import IO, Iterable, Iterator

from shufflenet_cli.image_formats import image_extensions
from shufflenet_cli.inputs.buckets import check_extras, expand_objects
from shufflenet_cli.inputs.globbing import has_magic, iglob
from shufflenet_cli.urls import is_http_url, is_object_url, looks_like_url


@dataclass(frozen=True)
class Input:
    path: str  # as the user will see it in the output
    error: str | None = None  # set when the path cannot be an image input at all


# Neither a file nor a URL: `https:/host/x` (a shell or pathlib folded the two slashes into one)
ONE_SLASH = "no such file, and not a URL either: a URL has two slashes after its scheme (https://host/...)"

# Not a file: "no new path from stdin for STALL_AFTER seconds" (compared by identity). It goes out only
# after a real input has: runner.first_found reads to the first input without an error, and a STALL
# there would start a run that may never get an image (exit 0 instead of "no image found", exit 2).
STALL = Input("")
# Long enough that any producer that is still producing (`find`, even on a network share: gaps of
# milliseconds) never looks stalled, so its batches stay full; short enough that a record, or Ctrl-C,
# waits no longer than a person notices.
STALL_AFTER = 0.25
# A line of a path list longer than this is no path (PATH_MAX is a few KiB): it is cut here, and its
# record says the name is too long, rather than the whole of it being held (a binary file piped in).
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class WalkOptions:
    recursive: bool = True
    hidden: bool = False
    extensions: frozenset[str] | None = None  # None: every extension Pillow opens


def read_path_list(stream: IO[bytes], null: bool = False, stall_after: float | None = None) -> Iterator[str | None]:
    """Paths from a byte stream, one per line or NUL-separated; bytes kept intact via surrogateescape.
    With `stall_after`, None each time that many seconds pass with no new bytes (a pipe or terminal).

    A line is kept to its first MAX_LINE bytes (no path is that long, so it becomes an error record):
    `cat video.bin | shufflenet predict -` holds no more than that, and each byte is scanned once."""
    sep = b"\0" if null else b"\n"
    line: list[bytes] = []  # the current line's pieces, MAX_LINE bytes at most
    kept = 0
    for chunk in _chunks(stream, stall_after):
        if chunk is None:
            yield None
            continue
        *ends, rest = chunk.split(sep)
        for end in ends:
            line.append(end[: MAX_LINE - kept])
            yield from _path_from_bytes(b"".join(line), null)
            line, kept = [], 0
        if kept < MAX_LINE and rest:
            line.append(rest[: MAX_LINE - kept])
            kept += len(line[-1])
    yield from _path_from_bytes(b"".join(line), null)


def _chunks(stream: IO[bytes], stall_after: float | None) -> Iterator[bytes | None]:
    """What the stream has now, until its end; None after `stall_after` seconds of nothing.

    read1: whatever the pipe has now, so a slow producer (`find` on a NAS) feeds batches as it goes;
    a plain read(n) on a buffered pipe would wait for n bytes or the end. The wait for bytes is a
    select() with a timeout, not a blocked read: the main thread gets back to the batch loop, which
    sees Ctrl-C (a blocked read is retried after runner.StopFlag sets its flag, and never returns), and
    no reader thread holds stdin's lock at exit (a daemon thread blocked in read1 there aborts the
    interpreter: "could not acquire lock for <_io.BufferedReader name='<stdin>'>").
    Nothing else reads stdin, so its buffer is empty and select() sees every byte that is waiting.
    """
    read = getattr(stream, "read1", stream.read)
    fd = _selectable(stream) if stall_after is not None else None
    while True:
        if fd is not None:
            try:
                ready, _, _ = select.select([fd], [], [], stall_after)
            except (OSError, ValueError):  # not a pipe select() takes (Windows): plain blocking reads
                ready = [fd]
                fd = None
            if not ready:
                yield None
                continue
        chunk = read(65536)
        if not chunk:
            return
        yield chunk


def _selectable(stream: IO[bytes]) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation (BytesIO) is an OSError
        return None


def _path_from_bytes(raw: bytes, null: bool) -> Iterator[str]:
    if not null:
        raw = raw.rstrip(b"\r")
    if raw:
        yield os.fsdecode(raw)


def iter_inputs(
    args: Iterable[str],
    options: WalkOptions = WalkOptions(),
    stdin: IO[bytes] | None = None,
    null: bool = False,
) -> Iterator[Input]:
    """The inputs, read lazily; UsageError at once where an argument needs an extra that is missing."""
    args = list(args)
    check_extras(args)
    return _iter_inputs(args, options, stdin, null)


def _iter_inputs(args: list[str], options: WalkOptions, stdin: IO[bytes] | None, null: bool) -> Iterator[Input]:
    extensions = options.extensions or image_extensions()
    real = False  # an input without an error has gone out: STALL may follow
    for item in _inputs(args, options, extensions, stdin, null):
        if item is None:
            if real:
                yield STALL
            continue
        real = real or item.error is None
        yield item


def _inputs(
    args: Iterable[str], options: WalkOptions, extensions: frozenset[str], stdin: IO[bytes] | None, null: bool
) -> Iterator[Input | None]:
    """Each argument's inputs in order; None where stdin has been quiet for STALL_AFTER seconds."""
    for arg in args:
        if arg != "-":
            yield from _expand(arg, options, extensions, from_list=False)
        elif stdin is None:
            yield Input("-", error="no standard input to read paths from")
        else:
            for line in read_path_list(stdin, null, STALL_AFTER):
                if line is None:
                    yield None
                else:
                    yield from _expand(line, options, extensions, from_list=True)


def _expand(arg: str, options: WalkOptions, extensions: frozenset[str], from_list: bool) -> Iterator[Input]:
    if "\0" in arg:  # no file name holds one, and os functions raise ValueError on it
        yield Input(arg, error=_nul_error(arg, from_list))
    elif os.path.isdir(arg):
        yield from walk(arg, options, extensions)
    elif os.path.lexists(arg):
        yield Input(arg)
    elif looks_like_url(arg):  # before the glob: a URL's `?` is not a pattern
        yield from _remote(arg, options, extensions)
    elif not from_list and has_magic(arg):
        matched = False
        for match, is_dir, lineage in iglob(arg, hidden=options.hidden):
            matched = True
            if is_dir:
                yield from walk(match, options, extensions, lineage)
            else:
                yield Input(match)
        if not matched:
            yield Input(arg, error="no file matches this pattern")
    else:
        yield Input(arg, error=_missing(arg))


def _remote(arg: str, options: WalkOptions, extensions: frozenset[str]) -> Iterator[Input]:
    """A URL's inputs: an http(s) one is itself (the decode worker fetches it), an object-storage one
    (s3://, gs://, az://, abfs://) an object or the objects under a prefix (buckets.py); one that only
    looks like a URL (`https:/host/x`, one slash) is not supported."""
    if is_http_url(arg):
        yield Input(arg)
    elif is_object_url(arg):
        for path, error in expand_objects(arg, options.recursive, options.hidden, extensions):
            yield Input(path, error)
    else:
        yield Input(arg, error=ONE_SLASH)


def _nul_error(arg: str, from_list: bool) -> str:
    """What a path with a NUL byte in it is; from a newline-separated list that looks NUL-separated
    (`find -print0` without --null: every path in one line, each ended by a NUL), how to read it."""
    error = "the path contains a NUL byte, which no file name can"
    pieces = arg.split("\0")
    if from_list and (arg.endswith("\0") or len(pieces) > 2):
        error += "; the list looks NUL-separated (find -print0): read it with --null (-0)"
    return error


def _missing(arg: str) -> str:
    """Why a named path is not there: lexists says False for a folder on the way that cannot be entered too."""
    try:
        os.lstat(arg)
    except PermissionError:
        return "permission denied: a folder on the way to it cannot be entered"
    except OSError as exc:
        if exc.strerror and not isinstance(exc, FileNotFoundError):
            return exc.strerror.lower()
    return "no such file or directory"


def walk(
    root: str, options: WalkOptions, extensions: frozenset[str], lineage: frozenset = frozenset()
) -> Iterator[Input]:
    """Image files under `root` in sorted order, following symlinks but never into a cycle.
    `lineage`: folders (device, inode) that `root` lies in (a glob's match), never entered again.

    Depth first on a stack of its own, not Python's: a recursive walk ends in RecursionError some
    thousand folders down."""
    try:
        st = os.stat(root)
        lineage = lineage - {(st.st_dev, st.st_ino)}  # root itself is walked, as asked
    except OSError:
        pass  # _enter reports it
    inside = set(lineage)  # the folders being walked, and the lineage: never entered again
    stack: list[_Open] = []
    opened: _Open | Input | None = _enter(root, options, extensions, inside)
    while True:
        if isinstance(opened, Input):
            yield opened
        elif opened is not None:
            stack.append(opened)
        if not stack:
            return
        top = stack[-1]
        name = next(top.names, None)
        opened = None
        if name is None:
            stack.pop()
            inside.discard(top.key)
        elif name in top.subdirs:
            opened = _enter(os.path.join(top.folder, name), options, extensions, inside)
        else:
            opened = Input(os.path.join(top.folder, name))


@dataclass
class _Open:
    """A folder being walked: the names in it still to visit."""

    folder: str
    key: tuple[int, int]  # (device, inode)
    names: Iterator[str]
    subdirs: set[str]


def _enter(folder: str, options: WalkOptions, extensions: frozenset[str], inside: set) -> _Open | Input | None:
    """`folder` opened for the walk; None if it is one being walked already (a symlink back up the
    tree); an error Input if it cannot be listed."""
    try:
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        if key in inside:
            return None
        names, subdirs = _list(folder, options, extensions)
    except OSError as exc:
        return Input(folder, error=f"cannot list directory: {exc.strerror or exc}")
    inside.add(key)
    return _Open(folder, key, iter(names), subdirs)


def _list(folder: str, options: WalkOptions, extensions: frozenset[str]) -> tuple[list[str], set[str]]:
    """The sorted names in `folder` worth visiting (filtered while listing), and which are directories.

    Only names are kept, not `DirEntry` objects, so a flat folder of 100,000 files stays cheap to hold
    (docs/performance.md, "Defaults").
    """
    names: list[str] = []
    subdirs: set[str] = set()
    with os.scandir(folder) as it:
        for entry in it:
            name = entry.name
            if not options.hidden and name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                if options.recursive:
                    names.append(name)
                    subdirs.add(name)
            elif os.path.splitext(name)[1].lstrip(".").lower() in extensions:
                names.append(name)
    names.sort()
    return names, subdirs
