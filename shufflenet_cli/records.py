"""What comes out for each input: its predictions, or why it has none."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prediction:
    rank: int
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Record:
    path: str
    predictions: tuple[Prediction, ...] = field(default=())
    error: str | None = None
    thumbnail: bytes | None = field(default=None, compare=False, repr=False)  # small JPEG, for --report

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "predictions": [
                {"rank": p.rank, "index": p.index, "label": p.label, "probability": round(p.probability, 6)}
                for p in self.predictions
            ],
        }


def make_record(
    path: str, probs: Any, indices: Any, labels: list[str], threshold: float = 0.0, thumbnail: bytes | None = None
) -> Record:
    preds = tuple(
        Prediction(rank=r + 1, index=int(i), label=labels[int(i)], probability=float(p))
        for r, (p, i) in enumerate(zip(probs, indices, strict=True))
        if float(p) >= threshold
    )
    return Record(path=path, predictions=preds, thumbnail=thumbnail)
