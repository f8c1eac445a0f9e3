"""Labelled inputs, in the order they will be classified: a folder per class, or a `path,label` CSV.

A class is named by its index (`258`), its label (`Samoyed`, as in `--labels` or ImageNet's names;
matched exactly, else ignoring case and reading `_` as a space), or, for ImageNet's own classes, its
WordNet id (`n02111889`, the folder names of ImageNet's validation set once sorted). A name that fits
two classes is a usage error, as is a name that fits none.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from shufflenet_cli.errors import UsageError
from shufflenet_cli.inputs.paths import WalkOptions, walk

WNID = re.compile(r"n\d{8}")
NAMING_HINT = "name each class by its index (0..{last}) or its label, e.g. `258` or `Samoyed`"


def _key(name: str) -> str:
    return name.casefold().replace("_", " ").strip()


@dataclass
class Classes:
    """The class names a run uses (line i: class i), and how a folder or CSV name finds one."""

    names: list[str]
    wnids: list[str] | None = None  # ImageNet's classes only: `--labels` names other classes
    _exact: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)
    _loose: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        exact, loose = defaultdict(list), defaultdict(list)
        for i, name in enumerate(self.names):
            exact[name].append(i)
            loose[_key(name)].append(i)
        self._exact, self._loose = dict(exact), dict(loose)

    def index_of(self, name: str, where: str) -> int:
        """The class `name` stands for; UsageError naming `where` when it fits none, or more than one."""
        hint = NAMING_HINT.format(last=len(self.names) - 1)
        if name.isdigit():
            if int(name) < len(self.names):
                return int(name)
            raise UsageError(f"{where}: class index {name} is out of range (0..{len(self.names) - 1})", hint=hint)
        found = self._exact.get(name) or self._loose.get(_key(name)) or []
        if len(found) == 1:
            return found[0]
        if found:
            which = ", ".join(f"{i} ({self.names[i]})" for i in found)
            raise UsageError(
                f"{where}: the name {name!r} fits more than one class: {which}",
                hint="name the class by its index instead",
            )
        if WNID.fullmatch(name):
            if self.wnids is None:
                raise UsageError(
                    f"{where}: {name!r} is a WordNet id, which names one of ImageNet's classes, not one of --labels'",
                    hint=hint,
                )
            if name in self.wnids:
                return self.wnids.index(name)
            raise UsageError(f"{where}: {name!r} looks like a WordNet id, but of none of ImageNet's classes", hint=hint)
        raise UsageError(f"{where}: {name!r} is not a class index or a label", hint=hint)


@dataclass
class Labelled:
    """The inputs to classify, in order, and each one's true class."""

    paths: list[str]
    truth: list[int]
    classes: list[int]  # the classes evaluated, in order
    unlabelled: int = 0  # files in DIR itself, outside every class folder: not evaluated


def from_folders(root: Path, classes: Classes, walk_options: WalkOptions, limit: int | None = None) -> Labelled:
    """One subfolder of `root` per class, walked as `predict` walks folders; with `limit`, the first
    `limit` classes by index."""
    folders: dict[int, str] = {}
    unlabelled = 0
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not walk_options.hidden and entry.name.startswith("."):
            continue
        if not entry.is_dir():
            unlabelled += 1
            continue
        index = classes.index_of(entry.name, f"folder {os.path.join(root, entry.name)}")
        if index in folders:
            raise UsageError(
                f"folders {folders[index]} and {entry.path} are both class {index} ({classes.names[index]})",
                hint="merge them into one folder",
            )
        folders[index] = entry.path
    chosen = sorted(folders)[:limit]
    paths: list[str] = []
    truth: list[int] = []
    extensions = walk_options.extensions or frozenset()
    for index in chosen:
        for item in walk(folders[index], walk_options, extensions):
            paths.append(item.path)
            truth.append(index)
    return _checked(Labelled(paths, truth, chosen, unlabelled), root)


def from_csv(root: Path, table: Path, classes: Classes, limit: int | None = None) -> Labelled:
    """`path,label` rows (a header row `path,label` is allowed); paths relative to `root`. With `limit`,
    the rows of the first `limit` classes by index."""
    try:
        with open(table, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read --labels-from {table}: {exc}") from exc
    header = int(bool(rows) and [c.strip().lower() for c in rows[0]] == ["path", "label"])
    pairs: list[tuple[str, int]] = []
    for line, row in enumerate(rows[header:], start=1 + header):
        if not "".join(row).strip():
            continue
        if len(row) != 2:
            raise UsageError(f"{table}, row {line}: expected `path,label`, got {len(row)} field(s)")
        path = os.path.join(root, row[0])
        if os.path.isdir(path):  # a folder would become many records under one label
            raise UsageError(f"{table}, row {line}: {path} is a folder; each row names one image")
        pairs.append((path, classes.index_of(row[1].strip(), f"{table}, row {line}")))
    chosen = sorted({index for _, index in pairs})[:limit]
    keep = set(chosen)
    kept = [(path, index) for path, index in pairs if index in keep]
    return _checked(Labelled([p for p, _ in kept], [i for _, i in kept], chosen), root)


def _checked(labelled: Labelled, root: Path) -> Labelled:
    if not labelled.paths:
        raise UsageError(
            f"no labelled image found in {root}",
            hint="give a folder with one subfolder of images per class, or --labels-from FILE.csv",
        )
    return labelled
