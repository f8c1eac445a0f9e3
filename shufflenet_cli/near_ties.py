"""The default decode's check: a JPEG decoded at a reduced DCT scale is decoded again exactly when
its top two classes come out close, so that its top-1 class is the exact decode's.

Why (docs/benchmarks.md, "JPEG draft decoding"): DCT scaling makes 12-megapixel photos 3x cheaper
to decode, but nudges the probabilities (on 319 real photos by 0.005 at the median), and where the
model hesitates between two classes that nudge can swap them. Every swap measured was between
classes whose logits, as the drafted image gave them, lay within LOGIT_MARGIN / 2.6 of each other.
So a drafted image whose top two logits differ by less than LOGIT_MARGIN is decoded and classified
again, exactly; the other probabilities are the drafted image's.
"""

from __future__ import annotations

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
) -> int:
    """Classify `paths[row]` again from `exact(path).array` for each row, in one batch, writing the
    results into `probs` and `indices` in place; the number of rows redone.

    A file that cannot be decoded again (replaced or removed since) keeps its drafted result: it
    was classified, and the check is about near-ties, not about the file.
    """
    redone, arrays = [], []
    for row in rows:
        try:
            arrays.append(exact(paths[row]).array)
        except Exception:  # noqa: BLE001 - any failure: the drafted result stands
            continue
        redone.append(row)
    if redone:
        p, i = topk(np.stack(arrays), probs.shape[1])
        probs[redone] = p
        indices[redone] = i
    return len(redone)
