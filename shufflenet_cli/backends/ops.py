"""Tensor arithmetic shared by every backend and the GPU decoder: the one home of normalisation and
top-k, so that the backends differ only in the network's arithmetic.

Normalisation is torchvision's (`convert_image_dtype` then `normalize`); softmax is always computed
in float32. Nothing here imports torch at module level: the torch-free onnxruntime path uses the
numpy functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_tensor(batch: np.ndarray) -> Any:
    """The uint8 batch as a CPU tensor sharing its memory (copied only when numpy marks it read-only)."""
    import torch

    return torch.from_numpy(batch if batch.flags.writeable else batch.copy())


def normalize(x: Any, mean: Any, std: Any, channels_last: bool) -> Any:
    """N,H,W,C uint8 tensor -> N,C,H,W float32, `(x / 255 - mean) / std` (torchvision's arithmetic).

    NHWC memory viewed as NCHW is channels_last already; `channels_last=False` makes it contiguous.
    """
    x = x.permute(0, 3, 1, 2)
    if not channels_last:
        x = x.contiguous()  # on uint8: a quarter of the bytes of a float copy
    return x.float().div_(255).sub_(mean).div_(std)


def normalize_numpy(batch: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """`normalize` in numpy, bit for bit (the same float32 operations in the same order), into a
    contiguous N,C,H,W array; numpy releases the GIL, so slices normalise in parallel threads.
    mean, std: float32 arrays of shape (1, 3, 1, 1)."""
    n, h, w, c = batch.shape
    x = np.empty((n, c, h, w), dtype=np.float32)
    np.copyto(x, batch.transpose(0, 3, 1, 2), casting="unsafe")
    x /= np.float32(255)
    x -= mean
    x /= std
    return x


def topk_on_device(logits: Any, k: int) -> Any:
    """Softmax in float32, top-k: one N x 2k tensor on the logits' device, [probabilities | indices]."""
    import torch

    probs = logits.float().softmax(dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return torch.cat([values, indices.to(values.dtype)], dim=1)  # indices < 2**24 are exact in float32


def split_topk(both: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`topk_on_device`'s result, copied to the host, as (probabilities, int64 class indices)."""
    k = both.shape[1] // 2
    return both[:, :k], both[:, k:].astype(np.int64)


def topk_to_numpy(logits: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax in float32, top-k, and one device-to-host copy per batch."""
    return split_topk(topk_on_device(logits, k).cpu().numpy())


def topk_numpy(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`topk_to_numpy` in numpy (float32 softmax, largest first; ties: lower index first). The
    probabilities may differ from torch's softmax in the last float32 bits."""
    x = logits.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf logits: the record says so (pipeline.py)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True, dtype=np.float32)
    k = min(k, probs.shape[1])
    indices = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(probs, indices, axis=1), indices.astype(np.int64)
