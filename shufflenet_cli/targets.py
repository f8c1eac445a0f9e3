"""Where a file that is written whole at the end goes (json --output, --report).

A regular file, a new one, or a symlink's target: written to a temporary file beside it and renamed
over it, so it appears whole or not at all and keeps its mode. A FIFO, a device or a pipe
(`>(cat)`, /dev/stdout): written straight into, never renamed over (that would put a regular file
where /dev/null was).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def is_stream(path: Path) -> bool:
    """An existing path that is neither a regular file nor a directory: a FIFO, a device, a pipe."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def rename_target(path: Path) -> Path:
    """What the temporary file is renamed to: the path itself, or the file its symlinks lead to
    (renamed within that folder, never across file systems; the links stay links)."""
    return path.resolve()


def new_file_mode(path: Path) -> int:
    """The mode of the file being replaced, or what the umask gives a new file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
