"""Glob patterns expanded lazily, in walk order, each file once: `'photos/**/*.jpg'` over a million
files hands out its first match after listing one folder per level, not after listing them all.

Matching follows Python's `glob` with `recursive=True`: `*`, `?` and `[...]` within one name, `**` as a
whole name for any number of folders, names starting with `.` only where the pattern's name does (or
with `hidden`, as `--hidden` asks), a trailing `/` for folders only. It differs in four ways, all for
`predict`'s sake:
- matches come folder by folder, each folder's names sorted (the order `predict FOLDER` walks in),
  not sorted as whole strings;
- a matched folder is yielded once, and nothing under it: the caller walks it whole (so `a/**` is
  the folder `a`, with `predict a`'s filters, rather than every file in it);
- nothing is yielded twice (`glob('a/**')` names `a/b.jpg` once as itself and again inside `a/`);
- symlinks are followed, but `**` never goes round a cycle, and each matched folder comes with the
  folders (device, inode) it really lies in, links resolved, so that the caller's walk of it does not
  climb back into them either; the same rule as walking a folder (a pattern that names a cycle's link
  outright is followed once, as written).
Folders that cannot be listed are passed over, as `glob` does.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections import OrderedDict
from typing import Callable, Iterator, NamedTuple, Union

_MAGIC = re.compile(r"[*?[]")

Folders = frozenset  # of (st_dev, st_ino): the folders a match lies in
_CHAINS_KEPT = 4096  # folders whose chain is remembered


def has_magic(text: str) -> bool:
    return _MAGIC.search(text) is not None


def iglob(pattern: str, hidden: bool = False) -> Iterator[tuple[str, bool, Folders]]:
    """(path, is_folder, the folders it lies in) for each match of `pattern`: lazily, in walk order,
    none under another."""
    drive, rest = os.path.splitdrive(pattern)
    seps = os.sep + (os.altsep or "")
    anchor = drive + (os.sep if rest[:1] and rest[0] in seps else "")
    names = [n for n in re.split("[" + re.escape(seps) + "]", rest) if n]
    folders_only = bool(rest) and rest[-1] in seps
    parts = tuple(n for i, n in enumerate(names) if not (n == "**" and i and names[i - 1] == "**"))
    matcher = _Matcher(hidden)
    seen: set[str] | None = set() if parts.count("**") > 1 else None  # only there can one path match twice
    for path in _depth_first(matcher.match(anchor, parts)):
        is_dir = os.path.isdir(path)
        if (folders_only and not is_dir) or matcher.under_covered(path, anchor):
            continue
        if seen is not None:
            if path in seen:
                continue
            seen.add(path)
        if is_dir:
            matcher.covered.add(path)
        yield path, is_dir, matcher.chain(os.path.dirname(path)) if is_dir else frozenset()


class _Matcher:
    def __init__(self, hidden: bool) -> None:
        self.hidden = hidden
        self.covered: set[str] = set()  # matched folders: their insides are the caller's walk
        # one stat per distinct folder, however many matches and `**` levels lie below it
        self._chains: OrderedDict[str, Folders] = OrderedDict()  # the most recently used last

    def chain(self, folder: str) -> Folders:
        """(device, inode) of `folder` as it really is (links resolved) and of each folder above it, to
        the root: the folders a walk from `folder` must not climb back into."""
        real = os.path.realpath(folder or os.curdir)
        head: str | None = real
        todo: list[str] = []  # up to the nearest folder whose chain is known, without recursion
        while head is not None and head not in self._chains:
            todo.append(head)
            parent = os.path.dirname(head)
            head = parent if parent != head else None
        above: Folders = frozenset() if head is None else self._chains[head]
        if head is not None:
            self._chains.move_to_end(head)
        for path in reversed(todo):
            key = _key(path)
            above = above | {key} if key is not None else above
            self._chains[path] = above
            if len(self._chains) > _CHAINS_KEPT:
                self._chains.popitem(last=False)
        return above

    def under_covered(self, path: str, anchor: str) -> bool:
        head = os.path.dirname(path)
        while head and head != anchor:
            if head in self.covered:
                return True
            head, prev = os.path.dirname(head), head
            if head == prev:
                break
        return False

    def match(self, base: str, parts: tuple[str, ...]) -> Steps:
        """Paths under `base` matching `parts`, in walk order (through _depth_first)."""
        if not parts:
            yield base
            return
        part, rest = parts[0], parts[1:]
        if part == "**":
            if not rest:  # 'a/**' is a and everything in it: the folder, walked whole by the caller
                if base:
                    yield base
                else:  # '**' here: each name, not './name'
                    yield from (name for name, _ in self.entries(base, "*"))
                return
            inside = self.chain(base)  # the folders `base` really lies in, itself included
            here = _matcher(rest[0])
            hidden_here = self.hidden or rest[0].startswith(".")
            for name, is_dir in self.entries(base, None):
                path = os.path.join(base, name)
                dot = name.startswith(".")
                if (hidden_here or not dot) and here(name):  # `**` as no folder at all
                    yield _Into(self.follow(path, rest[1:]))
                if is_dir and (self.hidden or not dot) and path not in self.covered:
                    if _key(path) not in inside:  # not a symlink back up the tree
                        yield _Into(self.match(path, parts))  # `**` as this folder and more
            return
        if has_magic(part):
            for name, is_dir in self.entries(base, part):
                yield _Into(self.follow(os.path.join(base, name), rest, is_dir))
            return
        path = os.path.join(base, part)
        if rest or os.path.lexists(path):
            yield _Into(self.follow(path, rest))

    def follow(self, path: str, rest: tuple[str, ...], is_dir: bool | None = None) -> Steps:
        if not rest:
            yield path
        elif path not in self.covered and (os.path.isdir(path) if is_dir is None else is_dir):
            yield _Into(self.match(path, rest))

    def entries(self, folder: str, part: str | None) -> list[tuple[str, bool]]:
        """(name, is a folder) for the names in `folder` that `part` matches, sorted; hidden ones only
        with `hidden` or where `part` starts with '.'; all of them for None. Folders as the listing
        says (links followed), so a tree is not stat-ed again name by name."""
        match = _matcher(part) if part is not None else (lambda name: True)
        hidden = self.hidden or part is None or part.startswith(".")
        try:
            with os.scandir(folder or os.curdir) as it:
                found = [(e.name, _is_dir(e)) for e in it if (hidden or not e.name.startswith(".")) and match(e.name)]
        except OSError:
            return []
        found.sort()
        return found


class _Into(NamedTuple):
    """A matcher step's nested step, whose matches come next, in its place."""

    steps: Iterator[str | _Into]


Steps = Iterator[Union[str, _Into]]


def _depth_first(steps: Steps) -> Iterator[str]:
    """The matches of `steps` and of the steps nested in them, in order, on a stack of their own: nested
    generators on Python's stack end in RecursionError some thousand folders down."""
    stack = [steps]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
        elif isinstance(step, _Into):
            stack.append(step.steps)
        else:
            yield step


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@functools.lru_cache(maxsize=64)
def _matcher(part: str) -> Callable[[str], bool]:
    regex = re.compile(fnmatch.translate(os.path.normcase(part)))
    return lambda name: regex.match(os.path.normcase(name)) is not None
