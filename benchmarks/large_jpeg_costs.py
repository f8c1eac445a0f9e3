"""Where a large JPEG's time goes: the CPU cost of each step of the default path, one core, per image.

    python benchmarks/large_jpeg_costs.py                    # bench_cpu's 12-MP set (.bench/set-large)
    python benchmarks/large_jpeg_costs.py DIR --cores 1.8    # your own photos; the cores a run gets

Each step runs on one thread over every JPEG of the folder (the same files for every step):
  decode     full size (--exact-decode and the second decode of near-ties), the default's DCT draft
             (shorter side >= 4x the resize size), --fast-decode's (>= 2x), and libjpeg's smallest
             scale, 1/8: about the cost of reading the entropy-coded data, which every scale pays
  crop       the exact resize + center crop of the full image, and the default's resize of the
             drafted image over the crop's region
  forward    the default backend on one thread at the default batch size, steady state, and the
             extra CPU time of the first call of a process (memory it touches for the first time)
  seed       the seed's loop (bench_cpu's), for the ratio
Then the default's budget per image: draft decode + crop + forward + the near-ties' share (decoded
again, cropped exactly, classified again; counted from the drafted images' top two classes as the
CLI counts them), and the rate and seed ratio it allows on --cores cores. The model: x0_5 with the
real weights in ../shared (what bench_cpu's 12-MP rows use), else --weights.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import REAL_X0_5, ROOT, child_seed  # noqa: E402


def per_image_ms(fn, items) -> float:  # type: ignore[no-untyped-def]
    """Mean CPU milliseconds of fn(item) over items (thread CPU time: one core's work)."""
    cpu = 0.0
    for item in items:
        t0 = time.thread_time()
        fn(item)
        cpu += time.thread_time() - t0
    return 1000 * cpu / len(items)


def forward_costs(backend, batch) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    """(steady CPU ms per image, extra CPU ms of the first call, minor page faults of the first call)."""
    calls = []
    for _ in range(6):
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
        backend.topk(batch, 5)
        calls.append((time.process_time() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0))
    steady = statistics.median(c for c, _ in calls[2:])
    return 1000 * steady / len(batch), 1000 * (calls[0][0] - steady), calls[0][1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default=str(ROOT / ".bench" / "set-large"), help="large JPEGs")
    ap.add_argument("--model", default="x0_5")
    ap.add_argument("--weights", type=Path, help="weights file (default: the real x0_5 weights in ../shared)")
    ap.add_argument("--cores", type=float, default=2.0, help="cores a run gets, for the budget (default 2)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from shufflenet_cli import near_ties
    from shufflenet_cli.backends import make_backend
    from shufflenet_cli.engine import default_tuning
    from shufflenet_cli.images import decode_rgb
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.preprocess import DRAFT_FACTOR, Preprocess
    from shufflenet_cli.runner import PredictOptions
    from shufflenet_cli.weights import load_model

    paths = sorted(str(p) for p in Path(args.folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        sys.exit(f"error: no JPEGs in {args.folder}")
    weights = args.weights or REAL_X0_5
    if not weights.is_file():
        sys.exit("error: pass --weights FILE (real weights are only in ../shared for x0_5)")
    spec = resolve_model(args.model)
    prep = Preprocess.from_spec(spec)
    draft, fast = (DRAFT_FACTOR[m] * prep.resize for m in ("checked", "fast"))

    def eighth(path: str) -> None:
        with Image.open(path) as im:
            im.draft(None, (im.width // 8, im.height // 8))
            im.load()

    full = [decode_rgb(p)[0] for p in paths[:4]]
    drafts = [decode_rgb(p, draft) for p in paths]
    full_decode, draft_decode = "decode, full size", "decode, the default's draft (>= 4x)"
    exact_crop, draft_crop = "crop, exact (full image)", "crop, the default's (drafted image, its region)"
    rows = {
        full_decode: per_image_ms(decode_rgb, paths),
        draft_decode: per_image_ms(lambda p: decode_rgb(p, draft), paths),
        "decode, --fast-decode's draft (>= 2x)": per_image_ms(lambda p: decode_rgb(p, fast), paths),
        "decode at 1/8 (the entropy-decoding floor)": per_image_ms(eighth, paths),
        exact_crop: per_image_ms(prep.crop_array, full),
        draft_crop: per_image_ms(lambda d: prep.crop_array(d[0], approximate=d[1]), drafts),
    }
    seed = child_seed(args.model, weights, paths)["rate"]  # torch's default threads, as bench_cpu runs it
    torch.set_num_threads(1)
    tuning = default_tuning("cpu", PredictOptions(paths=[]))
    net = load_model(spec, weights)
    backend = make_backend("auto", net, torch.device("cpu"), prep, "fp32", threads=1, weights_path=weights)
    crops = np.stack([prep.crop_array(d, approximate=was) for d, was in drafts])
    batch = np.concatenate([crops] * (tuning.batch_size // len(crops) + 1))[: tuning.batch_size]
    fwd, first_extra, first_faults = forward_costs(backend, batch)
    rows[f"forward, {backend.describe()}, batch {len(batch)}"] = fwd
    probs = np.concatenate([backend.topk(crops[i : i + 32], 2)[0] for i in range(0, len(crops), 32)])
    near = len(near_ties.close_calls(probs, [was for _, was in drafts]))

    print(f"{len(paths)} JPEGs in {args.folder} ({full[0].width} x {full[0].height} first); model {spec.key}")
    print(f"one thread, CPU ms per image{'':>30}")
    for name, ms in rows.items():
        print(f"  {name:<62}{ms:>7.1f}")
    print(f"  first forward call of a process: {first_extra:+.0f} ms CPU once ({first_faults} page faults)")
    decode_ms, crop_ms = (
        rows["decode, the default's draft (>= 4x)"],
        rows["crop, the default's (drafted image, its region)"],
    )
    recheck = rows["decode, full size"] + rows["crop, exact (full image)"] + fwd
    share = near / len(paths)
    budget = decode_ms + crop_ms + fwd + share * recheck
    print(
        f"the default's budget: {decode_ms:.1f} + {crop_ms:.1f} + {fwd:.1f} + {near}/{len(paths)} near-ties x "
        f"{recheck:.1f} = {budget:.1f} ms CPU per image"
    )
    rate = 1000 * args.cores / budget
    print(
        f"on {args.cores:g} cores at most {rate:.1f} images/s; the seed loop ran {seed:.1f} images/s here: "
        f"at most {rate / seed:.2f}x (without the first call's {first_extra:.0f} ms)"
    )


if __name__ == "__main__":
    main()
