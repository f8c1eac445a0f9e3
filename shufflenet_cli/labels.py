"""Class names: the packaged ImageNet list, or a user's own file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from shufflenet_cli.errors import ModelLoadError

# Far above any real list of names: a labels file is read whole, so /dev/zero or a
# wrong multi-gigabyte path must end in an error, not in memory exhaustion.
MAX_LABELS_BYTES = 16 << 20


def split_lines(text: str) -> list[str]:
    """Lines ended by \\n or \\r\\n only. Not str.splitlines(), which also ends a line at U+2028,
    a form feed, \\x1c and others: a name holding one would count as two, shifting every later label
    onto the wrong class while the count still matched."""
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the last line's own \n
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names; line i is class index i."""
    data = resources.files("shufflenet_cli").joinpath("imagenet_classes.txt").read_bytes()
    return split_lines(data.decode("utf-8"))


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet classes' WordNet ids (`n01440764`), in class order (sorted, as ILSVRC numbers
    them); line i is class index i. The folder names of ImageNet's validation set once sorted."""
    data = resources.files("shufflenet_cli").joinpath("imagenet_wnids.txt").read_bytes()
    return split_lines(data.decode("ascii"))


def read_labels(path: Path) -> list[str]:
    """Custom class names, one per line (blank trailing lines ignored)."""
    try:
        with open(path, "rb") as f:  # bytes, not text: universal newlines would end a line at a lone \r too
            data = f.read(MAX_LABELS_BYTES + 1)
    except OSError as exc:
        raise ModelLoadError(f"cannot read labels file {path}: {exc}") from exc
    if len(data) > MAX_LABELS_BYTES:
        raise ModelLoadError(f"labels file {path} is over {MAX_LABELS_BYTES:,} bytes: not a list of class names")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of a label
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"cannot read labels file {path}: {exc}") from exc
    lines = split_lines(text)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelLoadError(f"labels file {path} is empty")
    return lines


def labels_for(labels_path: Path | None, num_classes: int) -> list[str]:
    """The names for a classifier of `num_classes` classes: `labels_path`'s, else ImageNet's."""
    labels = read_labels(labels_path) if labels_path else imagenet_labels()
    if len(labels) != num_classes:
        source = str(labels_path) if labels_path else "the ImageNet labels"
        raise ModelLoadError(
            f"the weights have {num_classes} classes but {source} has {len(labels)} names",
            hint="pass --labels FILE with one class name per line, one per class",
        )
    return labels
