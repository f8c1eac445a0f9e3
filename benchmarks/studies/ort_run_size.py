"""How many images one onnxruntime run on CPU should take (`CPU_RUN_IMAGES` in shufflenet_cli/backends/onnx_runtime.py).

The CLI cuts each batch into one slice per thread and runs the slices at once; each slice is run a
few images at a time. This measures, for several run sizes, on the default batch and threads:
- steady forward rate (images/s; `OnnxBackend.topk` on a ready uint8 batch, the sizes interleaved
  round by round in one process so that the machine's drift hits them all alike);
- the first batch of a fresh process (wall ms, CPU ms, page faults) and how much resident memory it
  added over that batch and ten more (the model and torch loaded before).

    python -m benchmarks.studies.ort_run_size               # x1_0, random weights, sizes 16,8,4,2
    python -m benchmarks.studies.ort_run_size --model x0_5  # x0_5 with the real weights where ../shared has them
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_DIR, ROOT, load_net, make_images, make_weights, python_module, uint8_batch


def backend_and_batch(model: str, weights: Path, images: list[str]):
    import torch

    from shufflenet_cli.backends.factory import make_backend
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.tuning import default_tuning

    spec, net = load_net(model, weights)
    prep = Preprocess.from_weights(spec.weights())
    tuning = default_tuning("cpu", PredictOptions(paths=[]))
    backend = make_backend(
        "onnxruntime", net, torch.device("cpu"), prep, "fp32", threads=tuning.threads, weights_path=weights
    )
    return backend, uint8_batch(prep, images, tuning.batch_size)


def rss_mib() -> float:
    """Resident memory now (onnxruntime keeps what a run allocated for the next one)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_first(args: argparse.Namespace) -> None:
    """In a fresh process: the first batch at one run size, then the resident memory added over ten more."""
    from shufflenet_cli.backends import onnx_runtime as onnx_backend

    onnx_backend.CPU_RUN_IMAGES = args.child_first
    backend, batch = backend_and_batch(args.model, Path(args.weights), json.loads(args.images))
    before = rss_mib()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    backend.topk(batch, 5)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(10):
        backend.topk(batch, 5)
    grown = rss_mib() - before
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    print(json.dumps({"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3, "faults": r1.ru_minflt - r0.ru_minflt, "rss": grown}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="x1_0")
    ap.add_argument("--sizes", default="16,8,4,2", help="images per run, comma-separated")
    ap.add_argument("--rounds", type=int, default=6, help="steady rate: rounds of 5 batches per size")
    ap.add_argument("--workdir", default=str(BENCH_DIR))
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    ap.add_argument("--images", help=argparse.SUPPRESS)
    ap.add_argument("--child-first", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_first:
        child_first(args)
        return
    from shufflenet_cli.backends import onnx_runtime as onnx_backend

    workdir = Path(args.workdir).resolve()
    images = [str(p) for p in make_images(workdir / "imagenet-size", 64, large=False, seed=1)]
    weights, note = make_weights(workdir, args.model)
    sizes = [int(s) for s in args.sizes.split(",")]
    backend, batch = backend_and_batch(args.model, weights, images)
    print(f"{args.model} ({note}); batch {len(batch)}, {backend.describe()}", file=sys.stderr)

    rates: dict[int, list[float]] = {s: [] for s in sizes}
    for s in sizes:  # warm every size's buffers first
        onnx_backend.CPU_RUN_IMAGES = s
        backend.topk(batch, 5)
    for _ in range(args.rounds):
        for s in sizes:
            onnx_backend.CPU_RUN_IMAGES = s
            t0 = time.perf_counter()
            for _ in range(5):
                backend.topk(batch, 5)
            rates[s].append(5 * len(batch) / (time.perf_counter() - t0))
    head = "images per run | steady images/s (median; per round) | first batch: wall ms, CPU ms, faults"
    print(f"{head} | memory added MiB")
    child = [*python_module(__spec__.name), "--model", args.model, "--weights", str(weights)]
    for s in sizes:
        out = subprocess.run(
            [*child, "--images", json.dumps(images), "--child-first", str(s)],
            capture_output=True,
            text=True,
            cwd=str(ROOT),  # where `benchmarks` is importable
        )
        if out.returncode != 0:
            sys.exit(f"the first-batch child for {s} images per run failed:\n{out.stderr[-3000:]}")
        first = json.loads(out.stdout.strip().splitlines()[-1])
        per_round = ", ".join(f"{r:.0f}" for r in rates[s])
        print(
            f"{s:>14} | {statistics.median(rates[s]):7.0f} ({per_round}) | {first['wall_ms']:.0f}, "
            f"{first['cpu_ms']:.0f}, {first['faults']} | {first['rss']:.0f}"
        )


if __name__ == "__main__":
    main()
