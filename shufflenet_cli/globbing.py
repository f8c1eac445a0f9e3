"""Glob patterns expanded lazily, in walk order, each file once: `'photos/**/*.jpg'` over a million
files hands out its first match after listing one folder per level, not after listing them all.

Matching follows Python's `glob` with `recursive=True`: `*`, `?` and `[...]` within one name, `**` as a
whole name for any number of folders, names starting with `.` only where the pattern's name does, a
trailing `/` for folders only. It differs in three ways, all for `predict`'s sake:
- matches come folder by folder, each folder's names sorted (the order `predict FOLDER` walks in),
  not sorted as whole strings;
- a matched folder is yielded once, and nothing under it: the caller walks it whole;
- nothing is yielded twice (`glob('a/**')` names `a/b.jpg` once as itself and again inside `a/`).
Folders that cannot be listed are passed over, as `glob` does.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from typing import Callable, Iterator

_MAGIC = re.compile(r"[*?[]")


def has_magic(text: str) -> bool:
    return _MAGIC.search(text) is not None


def iglob(pattern: str) -> Iterator[tuple[str, bool]]:
    """(path, is_folder) for each match of `pattern`, lazily, in walk order, none under another."""
    drive, rest = os.path.splitdrive(pattern)
    seps = os.sep + (os.altsep or "")
    anchor = drive + (os.sep if rest[:1] and rest[0] in seps else "")
    names = [n for n in re.split("[" + re.escape(seps) + "]", rest) if n]
    folders_only = bool(rest) and rest[-1] in seps
    parts = tuple(n for i, n in enumerate(names) if not (n == "**" and i and names[i - 1] == "**"))
    covered: set[str] = set()  # matched folders: their insides are the caller's walk
    seen: set[str] | None = set() if parts.count("**") > 1 else None  # only there can one path match twice

    def under_covered(path: str) -> bool:
        head = os.path.dirname(path)
        while head and head != anchor:
            if head in covered:
                return True
            head, prev = os.path.dirname(head), head
            if head == prev:
                break
        return False

    for path in _match(anchor, parts, lambda p: p in covered):
        is_dir = os.path.isdir(path)
        if (folders_only and not is_dir) or under_covered(path):
            continue
        if seen is not None:
            if path in seen:
                continue
            seen.add(path)
        if is_dir:
            covered.add(path)
        yield path, is_dir


def _match(
    base: str, parts: tuple[str, ...], covered: Callable[[str], bool], ancestors: frozenset = frozenset()
) -> Iterator[str]:
    """Paths under `base` that match `parts`, in walk order. `ancestors`: the folders (device, inode)
    that `**` is already inside, so that a symlink back up the tree is not followed round again."""
    if not parts:
        yield base
        return
    part, rest = parts[0], parts[1:]
    if part == "**":
        if not rest:  # 'a/**' is everything in a: each name, folders walked whole by the caller
            yield from (os.path.join(base, n) for n in _names(base, "*"))
            return
        try:
            st = os.stat(base or os.curdir)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in ancestors:
            return
        ancestors = ancestors | {(st.st_dev, st.st_ino)}
        here = _matcher(rest[0])
        hidden_here = rest[0].startswith(".")
        for name in _names(base, None):
            path = os.path.join(base, name)
            hidden = name.startswith(".")
            if (hidden_here or not hidden) and here(name):  # `**` as no folder at all
                yield from _follow(path, rest[1:], covered, ancestors)
            if not hidden and not covered(path) and os.path.isdir(path):
                yield from _match(path, parts, covered, ancestors)  # `**` as this folder and more
        return
    if has_magic(part):
        for name in _names(base, part):
            yield from _follow(os.path.join(base, name), rest, covered, ancestors)
        return
    path = os.path.join(base, part)
    if rest or os.path.lexists(path):
        yield from _follow(path, rest, covered, ancestors)


def _follow(path: str, rest: tuple[str, ...], covered: Callable[[str], bool], ancestors: frozenset) -> Iterator[str]:
    if not rest:
        yield path
    elif not covered(path) and os.path.isdir(path):
        yield from _match(path, rest, covered, ancestors)


def _names(folder: str, part: str | None) -> list[str]:
    """The sorted names in `folder` that `part` matches, hidden ones only where `part` starts with '.';
    all of them for None."""
    match = _matcher(part) if part is not None else (lambda name: True)
    hidden = part is None or part.startswith(".")
    try:
        with os.scandir(folder or os.curdir) as it:
            names = [e.name for e in it if (hidden or not e.name.startswith(".")) and match(e.name)]
    except OSError:
        return []
    names.sort()
    return names


@functools.lru_cache(maxsize=64)
def _matcher(part: str) -> Callable[[str], bool]:
    regex = re.compile(fnmatch.translate(os.path.normcase(part)))
    return lambda name: regex.match(os.path.normcase(name)) is not None
