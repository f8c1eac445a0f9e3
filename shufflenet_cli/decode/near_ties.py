"""The default decode's check: a JPEG decoded at a reduced DCT scale is decoded again exactly when
its top two classes come out close, so that its top-1 class is, as far as measured, the exact decode's.

Why: DCT scaling makes large JPEGs much cheaper to decode, but nudges the probabilities, and where
the model hesitates between two classes that nudge can swap them. Every swap measured on real photos
was between classes whose logits, as the drafted image gave them, lay well within LOGIT_MARGIN of each
other (docs/decoding.md, "Near-ties: how the margin was chosen"; docs/performance.md, "JPEG draft
decoding: top-1 agreement"). So a drafted image whose top two logits differ by less than LOGIT_MARGIN
is decoded and classified again, exactly; the other probabilities are the drafted image's. It is a measured margin,
not a bound: a picture with strong pixel-level texture (a one-pixel checkerboard laid over a photo) can
move further under DCT scaling, and `--exact-decode` is there for results that must be the reference's.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from shufflenet_cli.decode.decoded import decode_one
from shufflenet_cli.inputs.paths import Input

# log(p1 / p2), the top two logits' difference. Above the widest gap of any flip on the photos it was
# chosen on and on a held-out set; a wider margin decodes more images twice (docs/decoding.md,
# "Near-ties: how the margin was chosen").
LOGIT_MARGIN = 0.2


def close_calls(probs: np.ndarray, drafted: list[bool], margin: float | None = None) -> list[int]:
    """The rows (of a batch's top-k probabilities, best first) that were drafted and whose top two
    classes lie within `margin` (default LOGIT_MARGIN) in logits."""
    margin = LOGIT_MARGIN if margin is None else margin
    if probs.shape[1] < 2:
        return []  # a model with one class has no near-ties
    gaps = logit_gaps(probs).tolist()
    return [row for row, (was, g) in enumerate(zip(drafted, gaps, strict=True)) if was and g < margin]


def logit_gaps(probs: np.ndarray) -> np.ndarray:
    """log(p1 / p2) per row of top-k probabilities (best first, k >= 2): the top two logits' difference."""
    tiny = np.finfo(np.float32).tiny
    return np.log(np.maximum(probs[:, 0], tiny)) - np.log(np.maximum(probs[:, 1], tiny))


class Rechecks:
    """The second, exact decodes of near-ties, on `threads` threads of their own, while the run goes on
    (pipeline.py holds a batch's records back until its near-ties are done). Pillow lets go of the GIL
    while it decodes and resizes. Done one after another in the main loop, they leave the other cores
    idle, and on many cores the default falls behind --exact-decode (docs/performance.md, "JPEG draft
    decoding: top-1 agreement", the 16-core table)."""

    def __init__(self, exact: Callable[[str], Any], threads: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.exact = exact  # one thread at least: with --workers 0 too, the main loop goes on meanwhile
        self.pool = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="recheck")

    def submit(self, paths: list[str]) -> list[Future[tuple[np.ndarray | None, float]]]:
        """Each path's exact array and the seconds its decode took, to come. The array is None where
        the file cannot be decoded again (replaced or removed since): it keeps its drafted result, for
        it was classified, and the check is about near-ties, not files."""
        return [self.pool.submit(self._timed, path) for path in paths]

    def _timed(self, path: str) -> tuple[np.ndarray | None, float]:
        t0 = time.perf_counter()
        return decode_one(self.exact, Input(path)).array, time.perf_counter() - t0

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def apply(
    rows: list[int],
    arrays: list[np.ndarray | None],
    topk: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    probs: np.ndarray,
    indices: np.ndarray,
) -> int:
    """Classify the rows again from their exact arrays, in one batch, writing the results into `probs`
    and `indices` in place (a row whose array is None keeps its result); the number of rows redone."""
    kept = [(row, a) for row, a in zip(rows, arrays, strict=True) if a is not None]
    if kept:
        redone = [row for row, _ in kept]
        probs[redone], indices[redone] = topk(np.stack([a for _, a in kept]), probs.shape[1])
    return len(kept)
