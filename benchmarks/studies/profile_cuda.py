"""Where the time goes in `shufflenet predict --device cuda`: the feed's ceiling, CLI runs, py-spy samples.

    python -m benchmarks.studies.profile_cuda --json prof.json          # one GPU, 16 cores: about 3 minutes
    python -m benchmarks.studies.profile_cuda --device cpu --images 200 --feeds p2 --runs defaults   # dry run

bench_cuda.py says how fast; this says why. Same images and weights as bench_cuda.py (made by it).
  (1) feed   `pipeline.run` with the CLI's own Preprocess (or, for --gpu-decode, its JpegReader) and a
             backend that answers at once: the most images/s the decode workers and the main loop can
             deliver to any model. --feeds picks them: p16 = 16 worker processes, t8 = 8 threads,
             j16 = JpegReader in 16 processes (the CPU half of --gpu-decode), p16-b256 = p16 with
             twice the window of inputs in flight (batch 256).
  (2) runs   the CLI with --timings (its stages, "waiting for decoded images" among them), each run a
             name: options, environment, and `nice` = the niceness given to the run's decode worker
             processes once they start (the main process keeps its own). --runs picks them.
  (3) spy    where py-spy is installed, the runs named in --spy run under `py-spy record --idle
             --threads --nonblocking`; the main thread's samples are printed by the function they are
             in (self) and by the project's functions on the stack (inclusive), as % of its samples.
The table at the end is short; --json writes everything, --raw-dir keeps py-spy's raw stacks.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import (
    BENCH_DIR,
    Instant,
    child_env,
    machine,
    make_image_set,
    make_weights,
    parse_timings,
    predict_cmd,
)

RUNS = {  # name: (extra CLI options, decode workers' niceness)
    "defaults": ([], 0),
    "no-cuda-graphs": (["--no-cuda-graphs"], 0),
    "threads-1": (["--threads", "1"], 0),
    "threads-4": (["--threads", "4"], 0),
    "threads-16": (["--threads", "16"], 0),
    "nice-10": ([], 10),
    "workers-12": (["--workers", "12"], 0),
    "workers-8": (["--workers", "8"], 0),
    "decode-threads": (["--decode-in", "threads", "--workers", "8"], 0),
    "gpu-decode": (["--gpu-decode"], 0),
    "gpu-decode-nice-10": (["--gpu-decode"], 10),
    "gpu-decode-workers-4": (["--gpu-decode", "--workers", "4"], 0),
    "fp16": (["--precision", "fp16"], 0),
    "bf16": (["--precision", "bf16"], 0),
    "gpu-decode-fp16": (["--gpu-decode", "--precision", "fp16"], 0),
}
FEEDS = {  # name: (decoder, workers, processes, batch size; the window of inputs in flight is 2 batches)
    "p16": ("crop", 16, True, 128),
    "p16-b256": ("crop", 16, True, 256),  # twice the window: do the workers wait on the oldest group?
    "p12": ("crop", 12, True, 128),
    "p8": ("crop", 8, True, 128),
    "p2": ("crop", 2, True, 128),
    "t8": ("crop", 8, False, 128),
    "j16": ("jpeg", 16, True, 128),
    "j4": ("jpeg", 4, True, 128),
}


# ------------------------------------------------------------------------------------------ (1) feed


def feed(paths: list[str], decoder: str, workers: int, processes: bool, batch_size: int = 128) -> dict:
    from shufflenet_cli import pipeline
    from shufflenet_cli.decode.gpu import JpegReader
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.inputs.paths import Input
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.outcome import Stats

    prep = Preprocess.from_spec(resolve_model("x1_0"))
    stats = Stats()
    labels = [str(i) for i in range(1000)]
    got = 0
    for records in pipeline.run(
        (Input(p) for p in paths),
        prep if decoder == "crop" else JpegReader(prep),
        Instant(),
        labels,
        batch_size=batch_size,
        workers=workers,
        processes=processes,
        stats=stats,
    ):
        got += len(records)
    assert got == len(paths), (got, len(paths))
    n = len(paths)
    return {
        "rate": n / stats.elapsed,
        "wait_ms": 1000 * stats.wait_s / n,
        "decode_ms": 1000 * stats.decode_s / n,
        "preprocess_ms": 1000 * stats.preprocess_s / n,
    }


# ------------------------------------------------------------------------------------------ (2) runs


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children[ppid].append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _renice_descendants(proc: subprocess.Popen, nice: int, done: threading.Event) -> None:
    """Every 0.2 s: the run's descendants (its forkserver and decode workers), not the run itself,
    get niceness `nice`. A worker's first fraction of a second runs at the parent's priority."""
    seen: set[int] = set()
    while not done.wait(0.2):
        for pid in _descendants(proc.pid):
            if pid not in seen:
                try:
                    os.setpriority(os.PRIO_PROCESS, pid, nice)
                    seen.add(pid)
                except OSError:
                    pass


def cli_run(workdir: Path, target: Path, n: int, weights: Path, device: str, name: str, spy: Path | None) -> dict:
    extra, nice = RUNS[name]
    cmd = predict_cmd(str(target), "x1_0", weights, ["--device", device, *extra])
    if spy is not None:
        cmd = [
            "py-spy",
            "record",
            "-r",
            "250",
            "--idle",
            "--threads",
            "--nonblocking",
            "-f",
            "raw",
            "-o",
            str(spy),
            "--",
            *cmd,
        ]
    out_file = workdir / "profile.jsonl"
    t0 = time.perf_counter()
    with open(out_file, "wb") as out:
        proc = subprocess.Popen(cmd, env=child_env(workdir), stdout=out, stderr=subprocess.PIPE, cwd=str(workdir))
        done = threading.Event()
        renice = threading.Thread(target=_renice_descendants, args=(proc, nice, done), daemon=True)
        if nice:
            renice.start()
        try:
            _, err_bytes = proc.communicate(timeout=300)
        finally:
            done.set()
            if proc.poll() is None:
                proc.kill()
    wall = time.perf_counter() - t0
    err = err_bytes.decode(errors="replace")
    records = sum(line.startswith(b"{") for line in open(out_file, "rb"))  # py-spy prints to stdout too
    if proc.returncode != 0 or records != n:
        return {"error": f"exit {proc.returncode}, {records} of {n} records", "stderr": err[-2000:]}
    return {
        "options": " ".join(extra),
        "nice": nice,
        "wall_rate": n / wall,
        **parse_timings(err),
        "timings": err.strip()[-1500:],
    }


# ------------------------------------------------------------------------------------------- (3) spy


_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
_LOOP = re.compile(r"^_?loop \(.*runner\.py[:)]")  # the batched loop's frame (runner.loop, once runner._loop)


def _frame(text: str) -> str:
    """'topk (shufflenet_cli/backends/ops.py:123)' -> 'ops.topk'; frames outside files as they are."""
    m = _FRAME.match(text.strip())
    if not m:
        return text.strip()
    func, file = m.groups()
    return f"{Path(file).stem}.{func}"


def spy_summary(raw: Path, top: int = 14) -> dict:
    """The main thread's samples inside the batched loop (runner.loop: start-up left out), by the
    function they are in (self) and by the project's functions on the stack (inclusive)."""
    threads: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        tid = re.sub(r"\).*", ")", frames[0])  # 'thread (123): MainThread' and 'thread (123)' are one
        threads[tid].append((frames[1:], int(count)))
    if not threads:
        return {"error": "no samples"}
    main = max(threads, key=lambda t: sum(c for f, c in threads[t] if any("shufflenet_cli/cli.py" in x for x in f)))
    everything = threads[main]
    stacks = [(f, c) for f, c in everything if any(_LOOP.match(x.strip()) for x in f)]
    total = max(1, sum(c for _, c in stacks))
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, c in stacks:
        if frames:
            self_time[_frame(frames[-1])] += c
        for name in {_frame(f) for f in frames if "shufflenet_cli/" in f}:
            inclusive[name] += c
    pct = lambda c: round(100.0 * c / total, 1)  # noqa: E731
    return {
        "threads": {t: sum(c for _, c in s) for t, s in threads.items()},
        "main_samples": sum(c for _, c in everything),
        "loop_samples": total,
        "self": [(name, pct(c)) for name, c in self_time.most_common(top)],
        "inclusive": [(name, pct(c)) for name, c in inclusive.most_common(top)],
    }


# ------------------------------------------------------------------------------------------- main


def _table(items: dict, width: int, row) -> list[str]:  # type: ignore[no-untyped-def]
    """One line per measurement: `row(r)` after its name, or the error it ended with."""
    return [
        f"  {name:{width}s} " + (f"error: {r['error']} {r.get('stderr', '')[-300:]}" if "error" in r else row(r))
        for name, r in items.items()
    ]


def report(res: dict) -> str:
    lines = [f"machine: {json.dumps(res['machine'])}", f"images: {res['images']}"]
    lines.append("(1) feed: pipeline.run with a backend that answers at once")
    lines += _table(
        res["feeds"],
        6,
        lambda r: (
            f"{r['rate']:8.0f} images/s   wait {r['wait_ms']:.3f}  decode {r['decode_ms']:.2f}"
            f"  prep {r['preprocess_ms']:.2f} ms/image"
        ),
    )
    lines.append(
        "(2) CLI runs: run images/s (wall) [after the first batch, which took s], ms/image: wait / inference /"
        " output (worker: decode, prep)"
    )
    lines += _table(
        res["runs"],
        22,
        lambda r: (
            f"{r['run_rate']:7.0f} ({r['wall_rate']:5.0f}) [{r['after_first_rate']:6.0f}, {r['first_batch_s']:.2f}]"
            f"  {r['wait_ms']:.3f} / {r['inference_ms']:.3f} / {r['output_ms']:.3f}"
            f"   ({r['decode_ms']:.2f}, {r['preprocess_ms']:.2f})"
        ),
    )
    for name, s in res.get("spy", {}).items():
        lines.append(
            f"(3) py-spy, {name}: main thread {s.get('main_samples')} samples, {s.get('loop_samples')} in the loop"
            f" (below, as % of those); all threads {s.get('threads')}"
        )
        if "error" in s:
            lines.append(f"  error: {s['error']}")
            continue
        lines.append("  self: " + ", ".join(f"{n} {p}%" for n, p in s["self"]))
        lines.append("  inclusive: " + ", ".join(f"{n} {p}%" for n, p in s["inclusive"]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8000)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workdir", default=str(BENCH_DIR))
    ap.add_argument("--feeds", default="p16,p12,p8,t8,j16,j4", help=f"of {','.join(FEEDS)}")
    ap.add_argument(
        "--runs", default="defaults,threads-1,threads-16,nice-10,workers-12,gpu-decode", help=f"of {','.join(RUNS)}"
    )
    ap.add_argument("--spy", default="defaults,gpu-decode", help="runs repeated under py-spy (where installed)")
    ap.add_argument("--json")
    ap.add_argument("--raw-dir", help="keep py-spy's raw stacks here")
    args = ap.parse_args()

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    paths, target = make_image_set(workdir, args.images)
    weights, _ = make_weights(workdir, "x1_0")
    res: dict = {"machine": machine(), "images": len(paths), "feeds": {}, "runs": {}, "spy": {}}
    for name in filter(None, args.feeds.split(",")):
        decoder, workers, processes, batch = FEEDS[name]
        print(f"feed {name} ...", file=sys.stderr, flush=True)
        try:
            res["feeds"][name] = feed(paths, decoder, workers, processes, batch)
        except Exception as exc:  # noqa: BLE001 - a failed measurement is reported, the rest go on
            res["feeds"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    for name in filter(None, args.runs.split(",")):
        print(f"run {name} ...", file=sys.stderr, flush=True)
        res["runs"][name] = cli_run(workdir, target, len(paths), weights, args.device, name, None)
    spy_tool = shutil.which("py-spy")
    for name in filter(None, args.spy.split(",")):
        if spy_tool is None:
            res["spy"][name] = {"error": "py-spy is not installed"}
            continue
        raw = Path(args.raw_dir or workdir) / f"spy-{name}.txt"
        raw.parent.mkdir(parents=True, exist_ok=True)
        print(f"py-spy {name} ...", file=sys.stderr, flush=True)
        res["runs"][f"{name} (py-spy)"] = cli_run(workdir, target, len(paths), weights, args.device, name, raw)
        res["spy"][name] = spy_summary(raw) if raw.is_file() else {"error": "py-spy wrote nothing"}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(report(res))


if __name__ == "__main__":
    main()
