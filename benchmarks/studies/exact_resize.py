"""Can the default's exact resize run on the GPU? Pillow's arithmetic redone in float64, checked byte
for byte against the installed Pillow, and timed on a batch.

    python -m benchmarks.studies.exact_resize                   # CPU: the check, and the timings there
    python -m benchmarks.studies.exact_resize --device cuda     # the same on a GPU (the number that matters)

Why: on CUDA the default path is bound by its decode processes, and of what each does per
ImageNet-size JPEG the resize and crop is the larger part (benchmarks.studies.large_jpeg_costs on
bench_cpu's set; the figures are in docs/performance.md, "A lead for the default's decode bound").
Done on the GPU it would leave the processes only the decode, with the same pixels as now. This
script measures whether that is possible and fast; nothing in the CLI uses it.

Pillow's BILINEAR resize (libImaging/Resample.c) in two passes, each output value
    clip(0, 255, (sum_k in[k] * coeff[k] + 2**21) >> 22)
with the coefficients computed in double precision and rounded to 22-bit fixed point. Every partial
sum is an integer under 2**31, so a float64 matmul gives it exactly, on any device, in any summation
order. The rounding between the two passes makes their order matter, and Pillow picks the order by
shape: 13.0's Resample.c runs the vertical pass first where the height shrinks by more than twice
as many pixels as the width (`rule_order`). `pillow_order` asks the installed Pillow instead, once per
shape, and the check says where the two disagree (an older or newer Pillow with another rule).

1. The check: random pictures of many shapes, resized as `Preprocess.crop_array` does (shorter side to
   256, centre crop 224), compared byte for byte with Pillow in both pass orders; a shape that neither
   order matches is a failure (exit 1).
2. The timing: a batch of 500x375 uint8 pictures on --device, resized and cropped there (the crop's
   rows and columns only), against Pillow's resize and crop on one CPU thread.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from shufflenet_cli.decode.preprocess import Preprocess

PRECISION_BITS = 22  # Pillow's for 8-bit images: 32 - 8 - 2
RESIZE, CROP = 256, 224  # the weights' eval transform
resized_size = Preprocess(RESIZE, CROP, (0.0,) * 3, (1.0,) * 3).resized_size  # the CLI's own arithmetic
SHAPES = [(w, h) for w in range(120, 1300, 130) for h in range(120, 1300, 130)] + [
    (500, 375), (375, 500), (500, 333), (333, 500), (640, 480), (300, 1000), (1000, 300), (1280, 720),
    (257, 257), (230, 230), (999, 1001), (4000, 3000), (3000, 4000),
]  # fmt: skip


def coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc for BILINEAR, as an out x in matrix of
    fixed-point integers (stored as float64)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ss = 1.0 / filterscale
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [max(0.0, 1.0 - abs(((x + xmin) - center + 0.5) * ss)) for x in range(xmax)]
        total = 0.0
        for w in weights:  # summed in Pillow's order
            total += w
        for x, w in enumerate(weights):
            k = w / total if total != 0.0 else w
            m[xx, xmin + x] = int(-0.5 + k * (1 << PRECISION_BITS)) if k < 0 else int(0.5 + k * (1 << PRECISION_BITS))
    return m


@functools.cache
def plan(w: int, h: int, device: str) -> tuple[torch.Tensor | None, torch.Tensor | None, int, int]:
    """(horizontal matrix over the crop's columns, vertical over its rows, top, left); None where a
    pass is not needed (that side already has its size)."""
    new_w, new_h = resized_size(w, h)
    top, left = round((new_h - CROP) / 2.0), round((new_w - CROP) / 2.0)
    mh = None if new_w == w else torch.from_numpy(coefficients(w, new_w)[left : left + CROP]).to(device)
    mv = None if new_h == h else torch.from_numpy(coefficients(h, new_h)[top : top + CROP]).to(device)
    return mh, mv, top, left


def one_pass(x: torch.Tensor, m: torch.Tensor, axis: str) -> torch.Tensor:
    """x: N,H,W,C float64 of integers 0..255; m: out x in fixed-point coefficients."""
    acc = torch.einsum("nhwc,ow->nhoc", x, m) if axis == "h" else torch.einsum("nhwc,oh->nowc", x, m)
    return torch.clamp(torch.floor((acc + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)), 0, 255)


def crop_on(batch: torch.Tensor, order: str) -> torch.Tensor:
    """N,H,W,3 uint8 pictures of one shape -> N,224,224,3 uint8, Pillow's resize then the centre crop."""
    n, h, w, _ = batch.shape
    mh, mv, top, left = plan(w, h, str(batch.device))
    x = batch.to(torch.float64)
    if mh is None:
        x = x[:, :, left : left + CROP]
    if mv is None:
        x = x[:, top : top + CROP]
    for axis in order:
        m = mh if axis == "h" else mv
        if m is not None:
            x = one_pass(x, m, axis)
    return x.to(torch.uint8)


def pillow_crop(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    new_w, new_h = resized_size(w, h)
    top, left = round((new_h - CROP) / 2.0), round((new_w - CROP) / 2.0)
    img = Image.fromarray(arr).resize((new_w, new_h), Image.BILINEAR)
    return np.asarray(img.crop((left, top, left + CROP, top + CROP)))


def rule_order(w: int, h: int) -> str:
    """Pillow 13.0's choice (ImagingResampleInner): vertical first where the height shrinks by more
    than twice as many pixels as the width."""
    new_w, new_h = resized_size(w, h)
    return "vh" if h - new_h > 0 and h - new_h > (w - new_w) * 2 else "hv"


@functools.cache
def pillow_order(w: int, h: int) -> str | None:
    """ "hv" or "vh": the pass order that reproduces the installed Pillow on this shape (checked on
    random pixels, where the two orders differ); None where neither does."""
    arr = np.random.default_rng(w * 10007 + h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    want = pillow_crop(arr)
    for order in ("hv", "vh"):
        if np.array_equal(crop_on(torch.from_numpy(arr)[None], order)[0].numpy(), want):
            return order
    return None


def check(device: str) -> bool:
    ok, orders, off_rule = True, {"hv": [], "vh": []}, []
    for w, h in SHAPES:
        order = pillow_order(w, h)
        if order is None:
            print(f"  {w}x{h}: neither pass order reproduces Pillow", flush=True)
            ok = False
            continue
        orders[order].append(f"{w}x{h}")
        if order != rule_order(w, h):
            off_rule.append(f"{w}x{h}")
        if device != "cpu":  # the same numbers on the device, for a second random picture
            arr = np.random.default_rng(w + h).integers(0, 256, (h, w, 3), dtype=np.uint8)
            got = crop_on(torch.from_numpy(arr)[None].to(device), order)[0].cpu().numpy()
            if not np.array_equal(got, pillow_crop(arr)):
                print(f"  {w}x{h}: {device} differs from Pillow", flush=True)
                ok = False
    tall = ", ".join(orders["vh"]) or "none"
    hv, vh = len(orders["hv"]), len(orders["vh"])
    print(f"check: {len(SHAPES)} shapes, Pillow {Image.__version__}; horizontal pass first on {hv}, ", end="")
    print(f"vertical first on {vh} ({tall}); {'all equal' if ok else 'FAILED'}")
    rule = "followed on every shape" if not off_rule else "not followed on " + ", ".join(off_rule)
    print(f"Pillow 13.0's order rule: {rule}")
    return ok


def timing(device: str, batch_size: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    host = rng.integers(0, 256, (batch_size, 375, 500, 3), dtype=np.uint8)
    order = pillow_order(500, 375) or "hv"
    batch = torch.from_numpy(host).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(rounds + 1):
        sync()
        t0 = time.perf_counter()
        crop_on(batch, order)
        sync()
        times.append(time.perf_counter() - t0)
    on_device = batch_size / statistics.median(times[1:])
    n = min(batch_size, 64)
    t0 = time.thread_time()
    for arr in host[:n]:
        pillow_crop(arr)
    pillow = n / (time.thread_time() - t0)
    print(f"timing: 500x375 -> 224x224, batch {batch_size} on {device}: {on_device:,.0f} images/s "
          f"(median of {rounds}); Pillow on one CPU thread: {pillow:,.0f} images/s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="torch device for the check and the timing: cpu, cuda")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ok = check(args.device)
    timing(args.device, args.batch_size, args.rounds)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
