"""Peak memory and throughput of `shufflenet predict` for a small and a large number of inputs.

The inputs are symlinks to a handful of tiny generated JPEGs, so the run is mostly pipeline overhead
(listing, decoding, batching, writing records) on top of a small model with random weights. Each run
is the real CLI in a subprocess (`-f jsonl -q`, stdout to /dev/null); its peak RSS comes from
wait4()'s rusage for that child alone.

    python -m benchmarks.memory                  # 1,000 vs 100,000 inputs, one flat folder
    python -m benchmarks.memory --n 10000        # a quicker look
    python -m benchmarks.memory --layout nested  # 1,000 files per sub-folder instead

Target: the large run's peak RSS within 25% of the small run's. Exit status 1 when it is not.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import random_weights

SOURCES = 8  # distinct tiny JPEGs the symlinks point at
TARGET = 1.25


@dataclass
class Result:
    n: int
    peak_rss_mib: float
    wall_s: float
    pipeline_rate: float  # images/s from --timings (model loaded, first input to last record)
    inputs_seen: int

    @property
    def wall_rate(self) -> float:
        return self.n / self.wall_s


def make_sources(folder: Path, size: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(SOURCES):
        rng = np.random.default_rng(seed)
        path = folder / f"src{seed}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), "RGB").save(path, quality=90)
        paths.append(path)
    return paths


def make_tree(root: Path, n: int, sources: list[Path], layout: str) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        folder = root if layout == "flat" else root / f"d{i // 1000:04d}"
        if layout != "flat" and i % 1000 == 0:
            folder.mkdir()
        os.symlink(sources[i % len(sources)], folder / f"img{i:07d}.jpg")
    return root


def run_cli(tree: Path, weights: Path, extra: list[str], timeout: float) -> tuple[float, float, float, int]:
    cmd = [sys.executable, "-m", "shufflenet_cli", "predict", str(tree), "-m", "x0_5", "--weights", str(weights)]
    cmd += ["-f", "jsonl", "-q", "--timings", *extra]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise SystemExit(f"timed out after {timeout:.0f} s: {' '.join(cmd)}")
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"exit {proc.returncode}: {' '.join(cmd)}\n{stderr}")
    m = re.search(r"timings: ([\d.]+) images/s end-to-end over (\d+) inputs", stderr)
    if not m:
        raise SystemExit(f"no --timings line in stderr:\n{stderr}")
    return usage.ru_maxrss / 1024, wall, float(m[1]), int(m[2])  # ru_maxrss is in KiB on Linux


def measure(n: int, work: Path, sources: list[Path], weights: Path, args: argparse.Namespace) -> Result:
    tree = make_tree(work / f"tree{n}", n, sources, args.layout)
    extra = ["-b", str(args.batch_size)]
    if args.workers is not None:
        extra += ["-j", str(args.workers)]
    if args.threads is not None:
        extra += ["--threads", str(args.threads)]
    rss, wall, rate, seen = run_cli(tree, weights, extra, args.timeout)
    if seen != n:
        raise SystemExit(f"{n} inputs given but {seen} records came out")
    return Result(n, rss, wall, rate, seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="inputs in the large run (default 100000)")
    parser.add_argument("--base", type=int, default=1_000, help="inputs in the small run (default 1000)")
    parser.add_argument("--layout", choices=["flat", "nested"], default="flat", help="one folder, or 1,000 per folder")
    parser.add_argument("--size", type=int, default=16, help="side of the tiny source JPEGs in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: the CLI's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the CLI's)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed for each run")
    parser.add_argument("--weights", type=Path, default=None, help="x0_5 state dict (default: random, generated)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shufflenet-mem-") as tmp:
        work = Path(tmp)
        sources = make_sources(work / "src", args.size)
        weights = args.weights or random_weights(work / "x0_5_random.pth", "x0_5")
        results = []
        for n in (args.base, args.n):
            r = measure(n, work, sources, weights, args)
            results.append(r)
            print(
                f"{r.n:>9,} inputs: peak RSS {r.peak_rss_mib:7.1f} MiB, wall {r.wall_s:7.1f} s "
                f"({r.wall_rate:6.1f} images/s incl. start-up; pipeline {r.pipeline_rate:6.1f} images/s)",
                flush=True,
            )
    small, large = results
    ratio = large.peak_rss_mib / small.peak_rss_mib
    verdict = "within" if ratio <= TARGET else "OVER"
    growth = large.peak_rss_mib - small.peak_rss_mib
    print(
        f"peak RSS ratio {large.n:,} / {small.n:,} = {ratio:.3f}, {growth:+.1f} MiB "
        f"({verdict} the {TARGET - 1:.0%} target); layout {args.layout}"
    )
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
