"""Top-1 agreement of JPEG draft (DCT-scaled) decoding with the exact decode, on folders of photos.

    python -m benchmarks.studies.draft_agreement FOLDER [FOLDER ...]       # upscaled to 4000 px first
    python -m benchmarks.studies.draft_agreement FOLDER --upscale 0        # the files as they are
    python -m benchmarks.studies.draft_agreement FOLDER --weights my_x0_5.pth --model x0_5

For every JPEG it classifies several decodes of the same file with torch fp32 and compares each with
the exact one:
  exact        full-size decode (--exact-decode; what the others are compared with)
  draft >=4x   DCT scaling while the shorter side stays >= 4x the resize size (the default's draft; --factors 4)
  draft >=2x   DCT scaling while the shorter side stays >= 2x the resize size (--fast-decode)
  draft >=1x   DCT scaling down to just above the resize size (faster, the variant the issue rejected)
  (--factors sets the list, e.g. 4,2,1 adds draft >=4x)
  +gap G       with --reducing-gaps G,...: the first factor's draft, resized with Pillow's reducing_gap G
               (a box-filter reduction first: cheaper, further from the exact resize)
and prints top-1 agreement, top-5 overlap, decode and crop time per image (medians), over all images and over the
"confident" ones (exact top-1 probability >= 0.5), where a flip is not a coin toss between near-ties;
then, for the default's check (near_ties.py: decode again exactly where the drafted image's top two
logits lie within a margin), the logit gaps of each draft's flips and, per --margins value, how many
images would be decoded again and how many flips would be left.
With --upscale PX (default 4000), each picture is first resized so its longer side is PX and saved as
a JPEG (quality 92) in a temporary folder, as the issue's measurement did with real photos. Images
whose shorter side is under twice the resize size are never drafted, so without upscaling most
ImageNet-size files agree trivially.
Weights: --weights FILE, else the real x0_5 weights in ../shared/weights (fp16 file, upcast).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import JPEG, REAL_X0_5, UPSCALED, find_jpegs, upscale


def load_model(model_key: str, weights: Path | None):
    import torch

    from shufflenet_cli import weights as weights_module
    from shufflenet_cli.models import resolve_model

    spec = resolve_model(model_key)
    if weights is None:
        if spec.key != "x0_5" or not REAL_X0_5.is_file():
            sys.exit("error: pass --weights FILE (real weights are only bundled in ../shared for x0_5)")
        weights = REAL_X0_5
    return spec, weights_module.load_model(spec, weights), torch.device("cpu")  # floating tensors as fp32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", help="folders (searched recursively) or JPEG files")
    ap.add_argument("--model", default="x0_5")
    ap.add_argument("--weights", type=Path, help="weights file (default: the real x0_5 weights in ../shared)")
    ap.add_argument(
        "--upscale", type=int, default=4000, help="resize to this longer side first; 0 keeps the files (default 4000)"
    )
    ap.add_argument("--limit", type=int, help="at most this many images")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--factors", default="2,1", help="draft factors to compare with the exact decode (default 2,1)")
    ap.add_argument(
        "--reducing-gaps",
        default="",
        help="also the first factor's draft resized with these Pillow reducing_gap values, e.g. 3,2,1.5",
    )
    ap.add_argument(
        "--margins",
        default="0.1,0.2,0.3",
        help="logit gaps to try as the default's check (near_ties.py): per draft, how many images each would "
        "decode again and how many flips it would leave (default 0.1,0.2,0.3)",
    )
    args = ap.parse_args()

    import numpy as np

    from shufflenet_cli.backends.torch_backend import TorchBackend
    from shufflenet_cli.decode import near_ties
    from shufflenet_cli.decode.images import decode_rgb
    from shufflenet_cli.decode.preprocess import Preprocess

    paths = find_jpegs(args.folders, args.limit, UPSCALED if args.upscale else JPEG)
    if not paths:
        sys.exit("error: no JPEG files found")
    spec, model, cpu = load_model(args.model, args.weights)
    prep = Preprocess.from_weights(spec.weights(), decode="exact")
    backend = TorchBackend(model, cpu, prep.mean, prep.std)
    variants: dict[str, tuple[int | None, float | None]] = {"exact": (None, None)}  # name: (draft_min, gap)
    factors = args.factors.split(",")
    for f in factors:
        variants[f"draft >={f}x"] = (int(f) * prep.resize, None)
    for g in filter(None, args.reducing_gaps.split(",")):
        variants[f"{factors[0]}x +gap {g}"] = (int(factors[0]) * prep.resize, float(g))

    with tempfile.TemporaryDirectory() as tmp:
        if args.upscale:
            print(f"upscaling {len(paths)} images to {args.upscale} px ...", file=sys.stderr)
            paths = upscale(paths, args.upscale, Path(tmp))
        crops: dict[str, list[np.ndarray]] = {name: [] for name in variants}
        seconds: dict[str, list[float]] = {name: [] for name in variants}  # decode
        crop_seconds: dict[str, list[float]] = {name: [] for name in variants}
        for p in paths:
            decoded: dict[int | None, tuple] = {}  # draft_min: (image, drafted, seconds); +gap reuses its draft
            for name, (draft_min, gap) in variants.items():
                if draft_min not in decoded:
                    t0 = time.perf_counter()
                    img, drafted = decode_rgb(str(p), draft_min)
                    decoded[draft_min] = (img, drafted, time.perf_counter() - t0)
                img, drafted, decode_s = decoded[draft_min]
                seconds[name].append(decode_s)
                t0 = time.perf_counter()
                crops[name].append(prep.crop_array(img, approximate=drafted, reducing_gap=gap))  # as the CLI crops it
                crop_seconds[name].append(time.perf_counter() - t0)
        top5: dict[str, np.ndarray] = {}
        probs: dict[str, np.ndarray] = {}
        for name, arrays in crops.items():
            outs = [
                backend.topk(np.stack(arrays[i : i + args.batch_size]), 5)
                for i in range(0, len(arrays), args.batch_size)
            ]
            probs[name] = np.concatenate([o[0] for o in outs])
            top5[name] = np.concatenate([o[1] for o in outs])

    n = len(paths)
    ref = top5["exact"]
    print(f"{n} JPEGs from {', '.join(args.folders)}; model {spec.key}; upscaled to {args.upscale or 'as is'} px")
    confident = probs["exact"][:, 0] >= 0.5
    median_p = float(np.median(probs["exact"][:, 0]))
    print(f"exact top-1 probability: median {median_p:.2f}; {int(confident.sum())} of {n} images >= 0.5")
    print(
        f"{'decode':<12}{'top-1 agree':>12}{'(confident)':>12}{'top-5 overlap':>15}{'|dp top-1|':>12}{'decode ms':>11}"
        f"{'crop ms':>9}"
    )
    for name in variants:
        same = top5[name][:, 0] == ref[:, 0]
        agree = float(np.mean(same))
        agree_conf = float(np.mean(same[confident])) if confident.any() else float("nan")
        overlap = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5[name], ref, strict=True)]))
        dp = float(np.mean(np.abs(probs[name][:, 0] - probs["exact"][:, 0])))
        ms, crop_ms = (1000 * statistics.median(t[name]) for t in (seconds, crop_seconds))
        print(
            f"{name:<12}{100 * agree:>11.1f}%{100 * agree_conf:>11.1f}%{100 * overlap:>14.1f}%{dp:>12.4f}{ms:>11.1f}"
            f"{crop_ms:>9.1f}"
        )
    for name in list(variants)[1:]:
        disagree = [
            f"{p.name} ({probs['exact'][i, 0]:.2f})" for i, p in enumerate(paths) if top5[name][i, 0] != ref[i, 0]
        ]
        if disagree:
            more = " ..." if len(disagree) > 12 else ""
            print(f"{name} disagrees on (exact top-1 probability): {', '.join(disagree[:12])}{more}")
    print("the default's check (near_ties.py): decode again where the drafted top two logits lie within a margin")
    for name in list(variants)[1:]:
        gap = near_ties.logit_gaps(probs[name])
        flips = top5[name][:, 0] != ref[:, 0]
        print(f"{name}: logit gaps of its flips: {', '.join(f'{g:.3f}' for g in sorted(gap[flips])) or 'none'}")
        for margin in (float(m) for m in args.margins.split(",")):
            again = gap < margin
            print(
                f"  margin {margin}: decoded again {int(again.sum())} of {n} ({100 * again.mean():.1f}%), "
                f"flips left {int((flips & ~again).sum())}"
            )


if __name__ == "__main__":
    main()
