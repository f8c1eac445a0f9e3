"""The local engine against --engine ray on the same images: on one machine (a private local Ray
instance) and on a two-node cluster simulated on this machine (ray.cluster_utils.Cluster, one CPU
per node by default).

    python -m benchmarks.ray_engine                    # 300 ImageNet-size JPEGs, x1_0, 3 rounds
    python -m benchmarks.ray_engine --images 600 --rounds 5 --model x0_5
    python -m benchmarks.ray_engine --fused            # also: decode fused into the actors (the trap)
    python -m benchmarks.ray_engine --window 100       # also: windows of 100 inputs (each restarts the pool)

Each run is a child process of its own (one Ray session per process, as the CLI makes), which calls
what the CLI calls (api.classify for the local engine, ray_engine.run.batches for Ray); its records
are counted and checked equal to the first run's (as the output formats write them). Two rates per
run: over the whole call (Ray's start included: a fresh instance or connection, the actors importing
torch and building the model) and after the first records (the steady rate). The variants run in
interleaved rounds: this host's speed drifts between runs.
Figures go in docs/cluster.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH_DIR, ROOT, machine, make_weights, python_module, small_set

Run = tuple[list[Any], float, tuple[float, int]]  # records, start, (first records' time, how many came then)


def _local(paths: list[str], model: str, weights: Path) -> Run:
    from shufflenet_cli.api import classify

    t0 = time.perf_counter()
    records: list[Any] = []
    first = None
    for record in classify(paths, model=model, weights=weights):
        records.append(record)
        if first is None:
            first = (time.perf_counter(), 1)
    return records, t0, first or (t0, 0)


def _ray(paths: list[str], model: str, weights: Path, address: str | None) -> Run:
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.inputs.paths import WalkOptions, iter_inputs
    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.outcome import Stats
    from shufflenet_cli.ray_engine import run
    from shufflenet_cli.weights import spec_for

    opts = PredictOptions(paths=paths, model=model, weights=weights, engine="ray", ray_address=address)
    spec = spec_for(model, weights)
    prep = Preprocess.from_spec(spec, decode=opts.decode)
    t0 = time.perf_counter()
    records: list[Any] = []
    first = None
    for batch in run.batches(iter_inputs(paths, WalkOptions()), opts, spec, prep, Stats(), lambda: False):
        records.extend(batch)
        if first is None:
            first = (time.perf_counter(), len(records))
    return records, t0, first or (t0, 0)


def _timed(call: Callable[[], Run], n: int) -> dict[str, Any]:
    records, t0, (first, first_n) = call()
    end = time.perf_counter()
    if len(records) != n:
        raise RuntimeError(f"expected {n} records, got {len(records)}")
    return {
        "total_rate": n / (end - t0),
        "steady_rate": (n - first_n) / (end - first) if end > first and n > first_n else float("nan"),
        "first_s": first - t0,
        "records": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="ImageNet-size JPEGs (default 300)")
    parser.add_argument("--model", default="x1_0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--node-cpus", type=int, default=1, help="CPUs of each simulated node (default 1)")
    parser.add_argument("--fused", action="store_true", help="also run Ray with the decode fused into the actors")
    parser.add_argument("--window", type=int, default=0, help="also run Ray with windows of this many inputs")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child's one run: VARIANT,ADDRESS,RECORDS_FILE
    args = parser.parse_args()

    workdir = BENCH_DIR
    os.environ.setdefault("TORCH_HOME", str(workdir / "torch_home"))
    os.environ["SHUFFLENET_OFFLINE"] = "1"
    images, folder = small_set(workdir, args.images)
    weights, what = make_weights(workdir, args.model)
    paths = [str(folder)]
    if args.one:
        _child(args.one, paths, args.model, weights, len(images))
        return
    print(machine(), file=sys.stderr)
    print(f"{len(images)} ImageNet-size JPEGs, {args.model} ({what})", file=sys.stderr)

    from ray.cluster_utils import Cluster

    simulated = Cluster(initialize_head=True, head_node_args={"num_cpus": args.node_cpus})
    simulated.add_node(num_cpus=args.node_cpus)
    variants = {
        f"ray, 2 nodes x {args.node_cpus} CPU": f"ray,{simulated.address}",
        "local engine": "local,",
        "ray, one machine": "ray,",
    }
    if args.fused:
        variants["ray, one machine, decode fused into actors"] = "fused,"
    if args.window:
        variants[f"ray, one machine, windows of {args.window}"] = f"window{args.window},"
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            reference = None
            for r in range(args.rounds):
                names = list(variants)
                for name in names[:1] + (names[1:] if r % 2 == 0 else names[:0:-1]):
                    out = Path(tmp) / "records.json"
                    # each run in a process of its own, as the CLI runs: one Ray session per process
                    cmd = [*python_module(__spec__.name), "--images", str(args.images), "--model", args.model]
                    done = subprocess.run(
                        [*cmd, "--one", f"{variants[name]},{out}"], cwd=ROOT, stdout=subprocess.PIPE, check=True
                    )
                    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
                    records = json.loads(out.read_text())
                    if reference is None:
                        reference = records
                    elif records != reference:
                        raise RuntimeError(f"{name}: records differ from the first run's")
                    results[name].append(result)
                    print(f"round {r + 1} {name}: {_line(result)}", file=sys.stderr)
    finally:
        simulated.shutdown()
    print(f"\nmedians over {args.rounds} rounds, {len(images)} images:")
    for name, runs in results.items():
        med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        print(f"  {name:45s} {_line(med)}")


def _child(spec: str, paths: list[str], model: str, weights: Path, n: int) -> None:
    """One run, its figures as a JSON line on stdout and its records (as written) in a file."""
    variant, address, out = spec.split(",", 2)
    calls: dict[str, Callable[[], Run]] = {
        "local": lambda: _local(paths, model, weights),
        "ray": lambda: _ray(paths, model, weights, address or None),
        "fused": lambda: _fused(paths, model, weights),
    }
    call = calls.get(variant) or (lambda: _windowed(paths, model, weights, int(variant.removeprefix("window"))))
    result = _timed(call, n)
    Path(out).write_text(json.dumps([r.to_dict() for r in result.pop("records")]))
    print(json.dumps(result))


def _line(r: dict[str, float]) -> str:
    return (
        f"{r['total_rate']:6.1f} images/s over the call, first records after {r['first_s']:5.1f} s, "
        f"{r['steady_rate']:6.1f} images/s after them"
    )


def _fused(paths: list[str], model: str, weights: Path) -> Run:
    """Ray with the decode's request made equal to the actors': Ray Data fuses the two steps."""
    from shufflenet_cli.ray_engine import plan

    plan.DECODE_MEMORY = None  # type: ignore[assignment]
    return _ray(paths, model, weights, None)


def _windowed(paths: list[str], model: str, weights: Path, window: int) -> Run:
    from shufflenet_cli.ray_engine import run

    run.MIN_WINDOW, run.WINDOW_PER_ACTOR = window, 1
    return _ray(paths, model, weights, None)


if __name__ == "__main__":
    main()
