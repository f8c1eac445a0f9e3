"""Class names: the packaged ImageNet list, or a user's own file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from shufflenet_cli.errors import ModelLoadError


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names; line i is class index i."""
    text = resources.files("shufflenet_cli").joinpath("imagenet_classes.txt").read_text("utf-8")
    return text.splitlines()


def read_labels(path: Path) -> list[str]:
    """Custom class names, one per line (blank trailing lines ignored)."""
    try:
        text = Path(path).read_text("utf-8-sig")  # a byte-order mark (Windows editors) is not part of a label
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read labels file {path}: {exc}") from exc
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelLoadError(f"labels file {path} is empty")
    return lines
