"""Where a large JPEG's time goes: the CPU cost of each step of the default path, one core, per image.

    python -m benchmarks.studies.large_jpeg_costs                      # bench_cpu's 12-MP set
    python -m benchmarks.studies.large_jpeg_costs DIR --upscale 4000   # photos, upscaled as draft_agreement.py does
    python -m benchmarks.studies.large_jpeg_costs DIR --cores 1.8      # large JPEGs as they are; cores a run gets

Each step runs on one thread over every JPEG of the folder (the same files for every step):
  decode     full size (--exact-decode and the second decode of near-ties), the default's DCT draft
             (shorter side >= 4x the resize size), --fast-decode's (>= 2x), and libjpeg's cheapest
             scale, 1/8 (mostly entropy decoding, which every scale pays: what no draft can save)
  crop       the exact resize + center crop of the full image, and the default's resize of the
             drafted image over the crop's region (timed alone, the decode left out)
  forward    the default backend on one thread at the default batch size, steady state, and the
             extra CPU time of the first call of a process (memory it touches for the first time)
  seed       the seed's loop (bench_cpu's), in this process, for comparison
Then the default's budget per image: draft decode + crop + forward + the near-ties' share (decoded
again, cropped exactly, classified again; counted from the drafted images' top two classes as the
CLI counts them), and the rate it allows on --cores whole cores. The model: x0_5 with the real
weights in ../shared (what bench_cpu's 12-MP rows use), else --weights.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import BENCH_DIR, JPEG, REAL_X0_5, UPSCALED, find_jpegs, seed_loop, upscale

DEFAULT_SET = BENCH_DIR / "set-large"  # bench_cpu's 12-MP set (its exact copy of the generated files)


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
    ap.add_argument("folder", nargs="?", default=str(DEFAULT_SET), help=f"large JPEGs (default {DEFAULT_SET})")
    ap.add_argument(
        "--upscale",
        type=int,
        default=0,
        help="resize each picture to this longer side first, as "
        "draft_agreement.py does, e.g. 4000 (default 0: the files as they are)",
    )
    ap.add_argument("--model", default="x0_5", help="x0_5, x1_0, x1_5 or x2_0 (default x0_5)")
    ap.add_argument("--weights", type=Path, help="weights file (default: the real x0_5 weights in ../shared)")
    ap.add_argument("--cores", type=float, default=2.0, help="cores a run gets, for the budget (default 2)")
    args = ap.parse_args()
    folder = Path(args.folder)
    if not folder.is_dir():
        hint = " (python -m benchmarks.bench_cpu makes it)" if folder == DEFAULT_SET else ""
        sys.exit(f"error: no folder {folder}{hint}")

    from shufflenet_cli.models import resolve_model

    spec = resolve_model(args.model)
    if args.weights is not None and not args.weights.is_file():
        sys.exit(f"error: no weights file {args.weights}")
    weights = args.weights or (REAL_X0_5 if spec.key == "x0_5" else None)
    if weights is None or not weights.is_file():
        sys.exit("error: pass --weights FILE (real weights are only in ../shared, for x0_5)")
    with tempfile.TemporaryDirectory() as tmp:
        paths = find_jpegs([str(folder)], None, UPSCALED if args.upscale else JPEG)
        if not paths:
            sys.exit(f"error: no JPEGs in {folder}")
        if args.upscale:
            print(f"upscaling {len(paths)} images to {args.upscale} px ...", file=sys.stderr)
            paths = upscale(paths, args.upscale, Path(tmp))
        measure(
            [str(p) for p in paths],
            spec,
            weights,
            args.cores,
            f"{folder}, upscaled to {args.upscale} px" if args.upscale else str(folder),
        )


def measure(paths: list[str], spec, weights: Path, cores: float, source: str) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    from shufflenet_cli.backends.factory import make_backend
    from shufflenet_cli.decode import near_ties
    from shufflenet_cli.decode.images import decode_rgb
    from shufflenet_cli.decode.preprocess import DRAFT_FACTOR, Preprocess
    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.tuning import default_tuning
    from shufflenet_cli.weights import load_model

    prep = Preprocess.from_spec(spec)
    draft, fast = (DRAFT_FACTOR[m] * prep.resize for m in ("checked", "fast"))
    full_decode, draft_decode = "decode, full size", "decode, the default's draft (>= 4x)"
    exact_crop, draft_crop = "crop, exact (full image)", "crop, the default's (drafted image, its region)"
    rows = {
        full_decode: per_image_ms(decode_rgb, paths),
        draft_decode: per_image_ms(lambda p: decode_rgb(p, draft), paths),
        "decode, --fast-decode's draft (>= 2x)": per_image_ms(lambda p: decode_rgb(p, fast), paths),
        # decode_rgb's smallest draft: libjpeg's 1/8 scale, mostly entropy decoding, which every scale pays
        "decode at 1/8, libjpeg's cheapest scale": per_image_ms(lambda p: decode_rgb(p, 1), paths),
    }
    crops, drafted = [], []  # one file at a time: only the crops are kept
    exact_s = draft_s = 0.0
    for p in paths:
        img = decode_rgb(p)[0]
        t0 = time.thread_time()
        prep.crop_array(img)
        exact_s += time.thread_time() - t0
        img, was = decode_rgb(p, draft)
        t0 = time.thread_time()
        crops.append(prep.crop_array(img, approximate=was))
        draft_s += time.thread_time() - t0
        drafted.append(was)
    rows[exact_crop], rows[draft_crop] = 1000 * exact_s / len(paths), 1000 * draft_s / len(paths)

    seed = seed_loop(spec.key, weights, paths)["rate"]  # in this process, torch's default threads
    torch.set_num_threads(1)
    tuning = default_tuning("cpu", PredictOptions(paths=[]))
    backend = make_backend(
        "auto", load_model(spec, weights), torch.device("cpu"), prep, "fp32", threads=1, weights_path=weights
    )
    stacked = np.stack(crops)
    batch = np.concatenate([stacked] * (tuning.batch_size // len(crops) + 1))[: tuning.batch_size]
    fwd, first_extra, first_faults = forward_costs(backend, batch)
    rows[f"forward, {backend.describe()}, batch {len(batch)}"] = fwd
    probs = np.concatenate([backend.topk(stacked[i : i + 32], 2)[0] for i in range(0, len(crops), 32)])
    near = len(near_ties.close_calls(probs, drafted))

    print(f"{len(paths)} JPEGs from {source}; model {spec.key}")
    print("one thread, CPU ms per image")
    for name, ms in rows.items():
        print(f"  {name:<62}{ms:>7.1f}")
    print(f"  first forward call of a process: {first_extra:+.0f} ms CPU once ({first_faults} page faults)")
    recheck = rows[full_decode] + rows[exact_crop] + fwd
    budget = rows[draft_decode] + rows[draft_crop] + fwd + near / len(paths) * recheck
    print(
        f"the default's budget: {rows[draft_decode]:.1f} + {rows[draft_crop]:.1f} + {fwd:.1f} + "
        f"{near}/{len(paths)} near-ties x {recheck:.1f} = {budget:.1f} ms CPU per image"
    )
    rate = 1000 * cores / budget
    print(
        f"so on {cores:g} whole cores at most {rate:.1f} images/s (before the first call's {first_extra:.0f} ms); "
        f"the seed loop ran {seed:.1f} images/s in this process ({rate / seed:.2f}x that)"
    )


if __name__ == "__main__":
    main()
