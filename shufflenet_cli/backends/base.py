"""What every inference backend offers the batch loop."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Normalisation(Protocol):
    """What a backend takes from the weights' eval transform (`decode.preprocess.Preprocess`)."""

    @property
    def mean(self) -> tuple[float, float, float]: ...

    @property
    def std(self) -> tuple[float, float, float]: ...

    @property
    def crop(self) -> int: ...


class Backend(Protocol):
    name: str
    precision: str
    device: Any  # a torch.device, or device.CPU where no torch is loaded

    def topk(self, batch: np.ndarray, k: int, one_off: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Must be done with `batch` when it returns: the caller stacks the next batch into its memory.
        one_off: a batch outside the run's rhythm (near_ties.py's second pass): nothing is kept for it."""
        ...

    def describe(self) -> str: ...
