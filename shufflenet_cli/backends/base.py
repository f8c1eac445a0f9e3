"""What every inference backend offers the batch loop."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    name: str
    precision: str

    def topk(self, batch: np.ndarray, k: int, one_off: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Must be done with `batch` when it returns: the caller stacks the next batch into its memory.
        one_off: a batch outside the run's rhythm (near_ties.py's second pass): nothing is kept for it."""
        ...

    def describe(self) -> str: ...
