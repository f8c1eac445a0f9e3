"""The default decode's check: a JPEG decoded at a reduced DCT scale is decoded again exactly when
its top two classes come out close, so that its top-1 class is, as far as measured, the exact decode's.

Why (docs/benchmarks.md, "JPEG draft decoding"): DCT scaling makes 12-megapixel photos 3x cheaper
to decode, but nudges the probabilities (on 319 real photos by 0.005 at the median), and where the
model hesitates between two classes that nudge can swap them. Every swap measured on those photos was
between classes whose logits, as the drafted image gave them, lay within LOGIT_MARGIN / 2.6 of each
other. So a drafted image whose top two logits differ by less than LOGIT_MARGIN is decoded and
classified again, exactly; the other probabilities are the drafted image's. It is a measured margin,
not a bound: a picture with strong pixel-level texture (a one-pixel checkerboard laid over a photo) can
move further under DCT scaling, and `--exact-decode` is there for results that must be the reference's.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

# log(p1 / p2), the top two logits' difference. On 319 real photos (4000 px, x0_5): the 6 swaps of
# the drafted decode had margins up to 0.076; at 0.2, 9 % of the images are decoded twice.
LOGIT_MARGIN = 0.2


def close_calls(probs: np.ndarray, drafted: list[bool], margin: float | None = None) -> list[int]:
    """The rows (of a batch's top-k probabilities, best first) that were drafted and whose top two
    classes lie within `margin` (default LOGIT_MARGIN) in logits."""
    margin = LOGIT_MARGIN if margin is None else margin
    if probs.shape[1] < 2:
        return []  # a model with one class has no near-ties
    tiny = np.finfo(np.float32).tiny
    gap = np.log(np.maximum(probs[:, 0], tiny)) - np.log(np.maximum(probs[:, 1], tiny))
    return [row for row, (was, g) in enumerate(zip(drafted, gap.tolist(), strict=True)) if was and g < margin]


def redo_exactly(
    rows: list[int],
    paths: list[str],
    exact: Callable[[str], Any],
    topk: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    probs: np.ndarray,
    indices: np.ndarray,
    threads: int = 1,
) -> int:
    """Classify `paths[row]` again from `exact(path).array` for each row, in one batch, writing the
    results into `probs` and `indices` in place; the number of rows redone.

    The exact decodes run on up to `threads` threads (Pillow lets go of the GIL while it decodes and
    resizes): on many cores, one after another in the calling thread they made the default slower
    than --exact-decode. A file that cannot be decoded again (replaced or removed since) keeps its
    drafted result: it was classified, and the check is about near-ties, not about the file.
    """
    wanted = [paths[row] for row in rows]
    if threads > 1 and len(wanted) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(wanted)), thread_name_prefix="recheck") as pool:
            arrays = list(pool.map(functools.partial(_array_or_none, exact), wanted))
    else:
        arrays = [_array_or_none(exact, path) for path in wanted]
    redone = [row for row, a in zip(rows, arrays, strict=True) if a is not None]
    if redone:
        p, i = topk(np.stack([a for a in arrays if a is not None]), probs.shape[1])
        probs[redone] = p
        indices[redone] = i
    return len(redone)


def _array_or_none(exact: Callable[[str], Any], path: str) -> np.ndarray | None:
    try:
        return exact(path).array
    except Exception:  # noqa: BLE001 - any failure: the drafted result stands
        return None
