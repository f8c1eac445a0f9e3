"""Interleaved A/B of the CLI: an earlier revision against the work tree, on the bench's image sets.

This host's speed drifts by 10-30 % between runs minutes apart, so two revisions measured one after
the other tell little. This runs `shufflenet predict SET ... --timings` from a git worktree of BASE
and from this tree in turn, round after round, and prints each round's run rates (images/s, first
input to last record), the medians and how many rounds each side won.

    python benchmarks/ab_cli.py 6261240                     # ImageNet-size (x1_0) and 12-MP (x0_5) sets, 6 rounds
    python benchmarks/ab_cli.py HEAD~1 --sets small --rounds 10
    python benchmarks/ab_cli.py main --extra=--exact-decode # the same flags for both sides

Both sides use this tree's benchmark images, weights and ONNX cache (`.bench/`, made by bench_cpu.py's
code where missing); each side runs once untimed first (its own ONNX export, if its cache key differs).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import REAL_X0_5, ROOT, _env, _exact_folder, make_images, make_weights, parse_timings  # noqa: E402


def sets(workdir: Path, names: list[str]) -> dict[str, tuple[Path, str, Path]]:
    """name -> (folder, model, weights), the bench_cpu sets."""
    out = {}
    if "small" in names:
        small = make_images(workdir / "imagenet-size", 200, large=False, seed=1)
        out["small"] = (
            _exact_folder(small[0].parent, small, workdir / "set-small"),
            "x1_0",
            make_weights(workdir, "x1_0")[0],
        )
    if "12mp" in names:
        large = make_images(workdir / "12mp", 32, large=True, seed=2)
        model = "x0_5" if REAL_X0_5.is_file() else "x1_0"
        out["12mp"] = (
            _exact_folder(large[0].parent, large, workdir / "set-large"),
            model,
            make_weights(workdir, model)[0],
        )
    return out


def run_rate(tree: Path, workdir: Path, folder: Path, model: str, weights: Path, extra: list[str]) -> float:
    """One CLI run of `tree`'s code (PYTHONPATH; the working directory holds no package) -> its run rate."""
    env = {**_env(workdir), "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "shufflenet_cli", "predict", str(folder), "-m", model, "--weights", str(weights)]
    proc = subprocess.run(
        [*cmd, "-f", "jsonl", "-q", "--timings", *extra], cwd=workdir, env=env, capture_output=True, text=True
    )
    if proc.returncode not in (0, 1):  # 1: some inputs failed, which both sides then report alike
        raise SystemExit(f"{' '.join(cmd)} (PYTHONPATH={tree}) exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return parse_timings(proc.stderr)["run_rate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", help="the earlier revision (anything `git worktree add` takes)")
    ap.add_argument("--sets", default="small,12mp", help="small (200 ImageNet-size JPEGs), 12mp (32 12-MP JPEGs)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--extra", default="", help="more predict options for both sides, one shell-quoted string")
    ap.add_argument("--workdir", default=str(ROOT / ".bench"))
    args = ap.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = sets(workdir, [s.strip() for s in args.sets.split(",") if s.strip()])
    extra = shlex.split(args.extra)
    with tempfile.TemporaryDirectory(prefix="ab-base-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.base], check=True)
        try:
            sides = {f"base {args.base}": base, "this tree": ROOT}
            rates: dict[tuple[str, str], list[float]] = {}
            for folder, model, weights in chosen.values():
                for tree in sides.values():  # untimed: exports, caches, page cache
                    run_rate(tree, workdir, folder, model, weights, extra)
            for r in range(args.rounds):
                for name, (folder, model, weights) in chosen.items():
                    for side, tree in sides.items():
                        rate = run_rate(tree, workdir, folder, model, weights, extra)
                        rates.setdefault((name, side), []).append(rate)
                        print(f"round {r + 1}: {name:5} {side:20} {rate:8.1f} images/s", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
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
