"""Interleaved A/B of the CLI: an earlier revision against the work tree, on the bench's image sets.

This host's speed drifts by 10-30 % between runs minutes apart, so two revisions measured one after
the other tell little. This runs `shufflenet predict SET ... --timings` from a git worktree of BASE
and from this tree in turn, round after round, and prints each round's run rates (images/s, first
input to last record), the medians and how many rounds each side won.

    python -m benchmarks.ab_cli REV                         # ImageNet-size (x1_0) and 12-MP (x0_5) sets, 6 rounds
    python -m benchmarks.ab_cli HEAD~1 --sets small --rounds 10
    python -m benchmarks.ab_cli main --extra=--exact-decode # the same flags for both sides (note the =)

Both sides use this tree's benchmark images, weights and ONNX cache (`.bench/`, bench_cpu.py's sets,
made where missing); each side runs once untimed first (its own ONNX export, if its cache key differs),
and the side that goes first alternates from round to round. A run that does not report a rate over
every input stops the comparison.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    BENCH_DIR,
    ROOT,
    child_env,
    default_large_model,
    large_set,
    make_weights,
    parse_timings,
    small_set,
)

SETS = ("small", "12mp")


def sets(workdir: Path, names: list[str]) -> dict[str, tuple[Path, str, Path, int]]:
    """name -> (folder, model, weights, images): bench_cpu's sets at its default sizes, and models."""
    out = {}
    if "small" in names:
        small, folder = small_set(workdir, 200)
        out["small"] = (folder, "x1_0", make_weights(workdir, "x1_0")[0], len(small))
    if "12mp" in names:
        large, folder = large_set(workdir, 32)
        model = default_large_model("x1_0")
        out["12mp"] = (folder, model, make_weights(workdir, model)[0], len(large))
    return out


def _env_for(tree: Path, workdir: Path) -> dict:
    return {**child_env(workdir), "PYTHONPATH": str(tree)}


def check_imports(tree: Path, workdir: Path) -> None:
    """The package a run of `tree` imports must be that tree's (not the installed one's)."""
    probe = [sys.executable, "-c", "import shufflenet_cli; print(shufflenet_cli.__file__)"]
    got = subprocess.run(probe, cwd=workdir, env=_env_for(tree, workdir), capture_output=True, text=True)
    where = Path(got.stdout.strip() or "?").resolve()
    if got.returncode != 0 or tree.resolve() not in where.parents:
        raise SystemExit(f"with PYTHONPATH={tree}, shufflenet_cli came from {where}, not from that tree:\n{got.stderr}")


def run_rate(tree: Path, workdir: Path, folder: Path, model: str, weights: Path, n: int, extra: list[str]) -> float:
    """One CLI run of `tree`'s code (PYTHONPATH; the working directory holds no package) -> its run rate."""
    cmd = [sys.executable, "-m", "shufflenet_cli", "predict", str(folder), "-m", model, "--weights", str(weights)]
    proc = subprocess.run(
        [*cmd, "-f", "jsonl", "-q", "--timings", *extra],
        cwd=workdir,
        env=_env_for(tree, workdir),
        capture_output=True,
        text=True,
    )
    timings = parse_timings(proc.stderr)
    # exit 1 is also what a crash gives: only a run that printed its rate over every input counts
    if proc.returncode not in (0, 1) or not math.isfinite(timings["run_rate"]) or timings["inputs"] != n:
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={tree}) exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return timings["run_rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="the earlier revision (anything `git worktree add` takes)")
    ap.add_argument("--sets", default="small,12mp", help="small (200 ImageNet-size JPEGs), 12mp (32 12-MP JPEGs)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--extra", default="", help='more predict options for both sides: --extra="--threads 1"')
    ap.add_argument("--workdir", default=str(BENCH_DIR))
    args = ap.parse_args()
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    if args.rounds < 1 or not names or not set(names) <= set(SETS):
        ap.error(f"--rounds must be 1 or more and --sets a list of {', '.join(SETS)}")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = sets(workdir, names)
    extra = shlex.split(args.extra)
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ab-base-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.base], check=True)
        sides = {f"base {args.base}": base, "this tree": ROOT}
        try:
            for tree in sides.values():
                check_imports(tree, workdir)
            for folder, model, weights, n in chosen.values():
                for tree in sides.values():  # untimed: exports, caches, page cache
                    run_rate(tree, workdir, folder, model, weights, n, extra)
            for r in range(args.rounds):
                for name, (folder, model, weights, n) in chosen.items():
                    order = list(sides.items())[:: -1 if r % 2 else 1]  # who goes first alternates
                    for side, tree in order:
                        rate = run_rate(tree, workdir, folder, model, weights, n, extra)
                        rates.setdefault((name, side), []).append(rate)
                        print(f"round {r + 1}: {name:5} {side:20} {rate:8.1f} images/s", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
    print(f"run rates, images/s, {args.rounds} interleaved rounds; predict options: -f jsonl -q --timings {args.extra}")
    base_side, new_side = sides
    for name in chosen:
        a, b = rates[(name, base_side)], rates[(name, new_side)]
        wins = sum(y > x for x, y in zip(a, b, strict=True))
        ratio = statistics.median(b) / statistics.median(a)
        print(f"{name}: {base_side} median {statistics.median(a):.1f} ({', '.join(f'{x:.1f}' for x in a)})")
        print(f"{' ' * len(name)}  {new_side} median {statistics.median(b):.1f} ({', '.join(f'{x:.1f}' for x in b)})")
        print(f"{' ' * len(name)}  this tree / base {ratio:.3f}; faster in {wins} of {len(a)} rounds")


if __name__ == "__main__":
    main()
