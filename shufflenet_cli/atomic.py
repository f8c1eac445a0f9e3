"""Files that appear whole or not at all: the one writer behind json --output, --report, the ONNX
cache and `download --from`.

`AtomicFile` writes to a temporary file made with `mkstemp` (O_EXCL: never through a link planted
under its name) in the target's own folder, and `commit()` renames it over the target, so a reader
sees the old file or the new one, never half of one, and the new file keeps the old one's mode.

Where a user names the file (--output, --report), `follow_links` replaces the file a symlink leads to,
and `is_stream` tells the callers what must not be renamed over at all: a FIFO, a device, a pipe
(`>(cat)`), or a process's own descriptor (/dev/stdout, /dev/fd/N, even where it leads to a regular
file after `>> log`): those are appended to (renaming would put a regular file where /dev/null was,
or replace the log). Caches are written with `follow_links=False`: a link in their place is replaced,
never followed.

A temporary file's name carries a marker, the host and the writer's pid (`.NAME.shufflenet-HOST-PID.
XXXXXXXX.tmp`): one that a killed run (kill -9, a power cut) left behind is removed by the next
writer of the same NAME once that pid is gone. Nothing else is ever removed: not a name without the
marker, not another host's, nor another user's, nor one whose pid is still running.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import stat
import tempfile
from pathlib import Path
from typing import IO

_DESCRIPTORS = re.compile(r"/dev/(stdout|stderr|fd/\d+)|/proc/(self|\d+)/fd/\d+")
_MARKER = "shufflenet"
_HOST = re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:32] or "host"


def temp_prefix(name: str, pid: int | None = None) -> str:
    """How a temporary file for NAME begins: hidden, marked as this tool's, with this host and `pid`
    (default: this process). mkstemp adds the random part and the suffix."""
    return f".{name[:80]}.{_MARKER}-{_HOST}-{os.getpid() if pid is None else pid}."


def make_temp(folder: Path, name: str, suffix: str = ".tmp") -> tuple[int, str]:
    """mkstemp (O_EXCL, mode 0600: never through a planted link) in `folder`, named for NAME; the
    temporary files of NAME that killed runs left there are removed first."""
    remove_stale_temps(folder, name)
    return tempfile.mkstemp(prefix=temp_prefix(name), suffix=suffix, dir=folder)


def remove_stale_temps(folder: Path, name: str) -> None:
    """Remove the temporary files for NAME in `folder` that this tool provably made and no one is
    writing: the marker and this host in the name, the writer's pid gone, a regular file of this user."""
    mine = re.compile(re.escape(f".{name[:80]}.{_MARKER}-{_HOST}-") + r"(\d+)\.[A-Za-z0-9_]{8}\.[A-Za-z.]+")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        found = mine.fullmatch(entry.name)
        if found is None or _running(int(found.group(1))):
            continue
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(entry.path)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or a pid no system has: kept
        return True
    return True


def is_stream(path: Path) -> bool:
    """An existing path that is not a file to replace: a FIFO, a device, a pipe, a descriptor."""
    if _DESCRIPTORS.fullmatch(os.path.abspath(path)):
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def rename_target(path: Path) -> Path:
    """What the temporary file is renamed to: the path itself, or the file its symlinks lead to
    (renamed within that folder, never across file systems; the links stay links). OSError for a
    symlink loop."""
    try:
        return path.resolve()
    except RuntimeError as exc:  # Python < 3.13 says "Symlink loop" this way
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path)) from exc


def new_file_mode(path: Path) -> int:
    """The mode of the file being replaced, or what the umask gives a new file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


class AtomicFile:
    """A temporary file beside `path`, renamed over it by `commit()`; `discard()` removes it.

    mode: the new file's permissions (default: the replaced file's, or what the umask gives a new
    one; mkstemp's own 0600 would hide a report or a cache file from other users).
    follow_links: replace the file a symlink `path` leads to (renamed within that folder, never
    across file systems; the links stay links) rather than the link itself.
    """

    def __init__(self, path: Path, *, mode: int | None = None, follow_links: bool = True, suffix: str = ".tmp"):
        self.path = Path(path)
        self.target = rename_target(self.path) if follow_links else self.path
        fd, self.tmp = make_temp(self.target.parent, self.target.name, suffix)
        try:
            os.fchmod(fd, new_file_mode(self.path) if mode is None else mode)
            self.file: IO[bytes] = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        self._done = False

    def commit(self, to: Path | None = None, fsync: bool = False) -> Path:
        """Close the file and rename it over the target (or over `to`, in the same folder)."""
        dest = self.target if to is None else to
        if fsync:
            self.file.flush()
            os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, dest)
        self._done = True
        return dest

    def discard(self) -> None:
        """Close and remove the temporary file, if it is still there; the target is left as it was."""
        if self._done:
            return
        self._done = True
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def write_atomic(path: Path, data: bytes, *, mode: int | None = None, follow_links: bool = True) -> None:
    """`data` as the whole of `path`, or (OSError) nothing changed."""
    f = AtomicFile(path, mode=mode, follow_links=follow_links)
    try:
        f.file.write(data)
        f.commit()
    finally:
        f.discard()
