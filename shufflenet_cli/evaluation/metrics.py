"""Accuracy from records and their true classes: top-1, top-5, per class, and the confused pairs.

Pure counting, fed one record at a time, so a run of any length is counted as it goes. A failed file
(an error record) is counted apart and never as a wrong answer: accuracy is over the images that
were classified.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shufflenet_cli.records import Prediction, Record

TOPK = 5  # top-5 accuracy needs the five best classes of every image
WRONG_KEPT = 100  # wrong answers kept for the report's thumbnails: the first ones, in input order


@dataclass
class ClassCounts:
    images: int = 0  # classified; failed files are not among them
    failed: int = 0
    top1: int = 0
    top5: int = 0


@dataclass(frozen=True)
class Wrong:
    """An image whose top-1 class is not its true one."""

    path: str
    truth: int
    predicted: Prediction


@dataclass(frozen=True)
class Confusion:
    truth: int
    predicted: int
    count: int


def fraction(part: int, whole: int) -> float | None:
    """part / whole, or None where there is nothing to divide (no image classified)."""
    return part / whole if whole else None


@dataclass
class Tally:
    """The counts so far. `classes`: the classes evaluated, so one whose files all failed still shows."""

    classes: list[int]
    per_class: dict[int, ClassCounts] = field(default_factory=dict)
    pairs: Counter[tuple[int, int]] = field(default_factory=Counter)  # (true, predicted top-1), wrong only
    wrong: list[Wrong] = field(default_factory=list)
    wrong_count: int = 0

    def __post_init__(self) -> None:
        for index in self.classes:
            self.per_class.setdefault(index, ClassCounts())

    def add(self, record: Record, truth: int) -> None:
        counts = self.per_class.setdefault(truth, ClassCounts())
        if not record.ok:
            counts.failed += 1
            return
        counts.images += 1
        top = [p.index for p in record.predictions[:TOPK]]
        if top and top[0] == truth:
            counts.top1 += 1
        elif record.predictions:
            self.pairs[(truth, top[0])] += 1
            self.wrong_count += 1
            if len(self.wrong) < WRONG_KEPT:
                self.wrong.append(Wrong(record.path, truth, record.predictions[0]))
        if truth in top:
            counts.top5 += 1

    @property
    def images(self) -> int:
        return sum(c.images for c in self.per_class.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.per_class.values())

    @property
    def top1(self) -> float | None:
        return fraction(sum(c.top1 for c in self.per_class.values()), self.images)

    @property
    def top5(self) -> float | None:
        return fraction(sum(c.top5 for c in self.per_class.values()), self.images)

    def confusions(self, most: int | None = None) -> list[Confusion]:
        """The (true, predicted) pairs of wrong answers, most frequent first; ties by true, then predicted class."""
        ranked = sorted(self.pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        return [Confusion(t, p, n) for (t, p), n in ranked[:most]]

    def worst_classes(self, most: int | None = None) -> list[int]:
        """The evaluated classes, lowest top-1 accuracy first (a class with no image classified last)."""

        def key(index: int) -> tuple[int, float, int]:
            c = self.per_class[index]
            acc = fraction(c.top1, c.images)
            return (acc is None, acc or 0.0, index)

        return sorted(self.per_class, key=key)[:most]
