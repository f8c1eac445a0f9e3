"""One run per output: an advisory lock (flock) held on --output and --report while a run writes them.

jsonl and csv are appended to in place, so their lock is on the file itself. A file written whole
(json, the report) is replaced by a rename, and a lock on the old file would not cover the new one,
so its lock is on `.NAME.lock` beside it, removed again when the run ends. A run that finds a lock
taken stops before it changes anything (exit 2). Streams (stdout, a FIFO, /dev/null) are not locked:
what is written there is not read back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from shufflenet_cli.errors import OutputError


def _in_use(flag: str, shown: Path) -> OutputError:
    return OutputError(
        f"{flag} {shown} is in use by another run",
        hint="wait for that run to finish, or give this one another file",
    )


def lock_fd(fd: int, flag: str, shown: Path) -> None:
    """Lock the open file `fd` for this run (released when it is closed); OutputError where another
    run holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _in_use(flag, shown) from None


class LockBeside:
    """The lock of a file that is replaced by a rename: `.NAME.lock` in the same folder.

    The lock file is removed on release, so a later run may find the one it opened already unlinked
    (or replaced) once it gets the lock: it then opens the current one again.
    """

    def __init__(self, target: Path, flag: str, shown: Path) -> None:
        self.path = target.with_name(f".{target.name}.lock")
        while True:
            # O_NOFOLLOW: a link planted under the lock's name is not followed
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                lock_fd(fd, flag, shown)
                if _same_file(fd, self.path):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still held: no other run holds this one
        os.close(self._fd)
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
