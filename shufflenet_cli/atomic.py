"""Where a file that is written whole at the end goes (json --output, --report).

A regular file, a new one, or a symlink's target: written to a temporary file beside it and renamed
over it, so it appears whole or not at all and keeps its mode. A FIFO, a device, a pipe (`>(cat)`),
or a process's own descriptor (/dev/stdout, /dev/fd/N, even where it leads to a regular file after
`>> log`): appended to, never renamed over (that would put a regular file where /dev/null was, or
replace the log).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

_DESCRIPTORS = re.compile(r"/dev/(stdout|stderr|fd/\d+)|/proc/(self|\d+)/fd/\d+")


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
