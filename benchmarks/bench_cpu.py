"""CPU benchmark: the seed's per-image loop vs `shufflenet predict` with its defaults, on the same images.

    python -m benchmarks.bench_cpu                  # about 3 minutes on 2 cores
    python -m benchmarks.bench_cpu --images 1000 --large 48 --repeats 5
    python -m benchmarks.bench_cpu --sweep          # the measurements behind shufflenet_cli/tuning.py

What it measures, each in its own child process of this one (same images, same weights file):
  (a) seed      the seed's loop: Image.open, Resize(256)/CenterCrop(224)/ToTensor/Normalize,
                forward at batch 1, softmax, topk; torch's default threads
  (b) predict   the real CLI as a subprocess: `shufflenet predict DIR -m MODEL --weights FILE -f jsonl -q
                --timings`, defaults otherwise. `wall` excludes nothing (interpreter start, imports, model
                load, ONNX session, every image, output); `run` is the CLI's own --timings rate (from the
                first input to the last record), and `startup` = wall - N / run. Cached ONNX files are
                deleted first, so the first run (timed separately) exports and checks one.
  (c) forward   backend.topk on ready uint8 batches at the default batch size: the default backend with
                the default threads (and with 1 thread), plus eager torch channels_last for reference
  (d) decode    the CLI's own per-image work (Preprocess: decode, resize, crop) on the default decode
                workers (and inline, one thread); for 12-MP JPEGs the exact decode, the default's JPEG
                draft (without the second, exact decode of near-ties) and --fast-decode's draft
  On the 12-MP set, (b) runs with the defaults, --exact-decode and --fast-decode. The default's speed
  there depends on the model's confidence (near-ties are decoded twice, near_ties.py), so that set runs
  with x0_5 and its real ImageNet weights where ../shared has them (--large-model), and --large-dir
  puts real photos in place of the generated ones.
From (c) and (d), per repeat: bound = 1 / (1/c + 1/d), each stage alone on the whole machine at its
defaults, one after the other; b/bound is the share of it that predict reaches (the issue's goal).
The strict bound counts each stage at its cheapest core-seconds (1 thread or all), as if the cores
were never idle and never shared. Other processes' CPU use during each repeat is printed: this
machine is shared, and how much of the second core a VM gets varies from minute to minute.
Ratios are medians of per-repeat ratios (b and a measured seconds apart).

Images: ImageNet-size JPEGs (500x375 and 375x500) made from ../shared/images/dog.jpg by random crops,
recolouring, flips, noise and JPEG qualities (synthetic pictures where that photo is absent), and a
12-megapixel set (4000x3000) made the same way. They are generated once into --workdir (default .bench/).
Weights: random (seeded) for x1_0, the reference model of the issue (its speed does not depend on the
values); the real ImageNet weights from ../shared/weights for x0_5 where present.
Each measurement runs --repeats times, the variants interleaved; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import (
    BENCH_DIR,
    DOG,
    ROOT,
    child_env,
    decode_rates,
    default_large_model,
    exact_folder,
    large_set,
    load_net,
    machine,
    make_images,
    make_weights,
    med,
    parse_timings,
    python_module,
    run_cli,
    seed_loop,
    shufflenet_cmd,
    small_set,
    timed,
    uint8_batch,
)

# ------------------------------------------------------------------------------------ child processes


def child_forward(model: str, weights: Path, paths: list[str], variants: list[dict]) -> list[dict]:
    """(c) backend.topk on ready uint8 batches: rates in images/s for each variant."""
    import torch

    from shufflenet_cli.backends.factory import make_backend
    from shufflenet_cli.backends.torch_backend import TorchBackend
    from shufflenet_cli.decode.preprocess import Preprocess

    spec, net = load_net(model, weights)
    prep = Preprocess.from_weights(spec.weights())
    cpu = torch.device("cpu")
    batches: dict[int, object] = {}
    out = []
    for v in variants:
        torch.set_num_threads(v["threads"])
        if v["backend"] == "torch":
            import copy

            backend = TorchBackend(
                copy.deepcopy(net),
                cpu,
                prep.mean,
                prep.std,
                channels_last=v.get("channels_last", True),
                threads=v["threads"] if v.get("split", True) else 1,
            )
        elif v["backend"] == "onnxruntime" and not v.get("split", True):
            from shufflenet_cli.backends.onnx_runtime import OnnxBackend

            backend = OnnxBackend(
                net, cpu, prep.mean, prep.std, prep.crop, threads=v["threads"], weights_path=weights, split=False
            )
        else:
            backend = make_backend(v["backend"], net, cpu, prep, "fp32", threads=v["threads"], weights_path=weights)
        b = v["batch"]
        if b not in batches:
            batches[b] = uint8_batch(prep, paths, b)
        seconds = timed(lambda: backend.topk(batches[b], 5), min_s=v.get("min_s", 1.0), warmup=2)  # noqa: B023
        out.append({**v, "rate": b / seconds, "describe": backend.describe()})
    return out


def child_main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    result: dict = {}
    for task in job["tasks"]:
        kind = task["kind"]
        if kind == "seed":
            result[task["name"]] = seed_loop(job["model"], Path(job["weights"]), task["paths"])
        elif kind == "forward":
            result[task["name"]] = child_forward(job["model"], Path(job["weights"]), task["paths"], task["variants"])
        elif kind == "decode":
            result[task["name"]] = decode_rates(job["model"], task["paths"], task["variants"])
    print("RESULT " + json.dumps(result))


# -------------------------------------------------------------------------------------------- parent


def run_child(workdir: Path, job: dict) -> dict:
    job_file = workdir / f"job-{os.getpid()}.json"  # not argv: thousands of paths would not fit
    job_file.write_text(json.dumps(job))
    proc = subprocess.run(
        [*python_module(__spec__.name), "--child", str(job_file)],
        env=child_env(workdir),
        capture_output=True,
        text=True,
        cwd=str(ROOT),  # where `benchmarks` is importable
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _wall(cmd: list[str], workdir: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=child_env(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def parallel_probe() -> float:
    """Speed-up of 2 threads over 1 on a GIL-free Pillow resize: about 2.0 when this VM really has
    two cores to itself, about 1.0 when the host hands the second one to someone else (that does
    not show in /proc/stat here)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    im = Image.new("RGB", (1600, 1200), (120, 30, 200))
    items = range(24)

    def work(_: int) -> None:
        im.resize((800, 600), Image.Resampling.BILINEAR)

    speedups = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            t0 = time.perf_counter()
            for i in items:
                work(i)
            t1 = time.perf_counter()
            list(pool.map(work, items))
            speedups.append((t1 - t0) / (time.perf_counter() - t1))
    return statistics.median(speedups)


class OthersLoad:
    """How many cores other processes kept busy since this was made: the machine's busy CPU time
    (/proc/stat) minus this benchmark's own (its children's rusage), over the wall time.
    0 on a quiet machine; 1.0 means a whole core of the 2 went to someone else."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.mine0 = time.perf_counter(), self._busy(), self._mine()

    @staticmethod
    def _busy() -> float:
        try:
            fields = [float(x) for x in open("/proc/stat").readline().split()[1:]]
        except (OSError, ValueError):
            return float("nan")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _mine() -> float:
        import resource

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def cores(self) -> float:
        wall = time.perf_counter() - self.t0
        others = (self._busy() - self.busy0) - (self._mine() - self.mine0)
        return max(0.0, others / wall)


def defaults() -> tuple[int, int, int, str]:
    """The CLI's CPU defaults: batch size, decode workers, threads, and auto's backend."""
    import torch

    from shufflenet_cli.backends.factory import prefers_onnxruntime
    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.tuning import default_tuning

    t = default_tuning("cpu", PredictOptions(paths=[]))
    backend = "onnxruntime" if prefers_onnxruntime(torch.device("cpu"), "fp32") else "torch"
    return t.batch_size, t.workers, t.threads, backend


def main_bench(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    small, small_dir = small_set(workdir, args.images)
    large, large_dir = large_set(workdir, args.large, args.large_dir)
    weights, weights_note = make_weights(workdir, args.model)
    large_model = args.large_model or default_large_model(args.model)
    large_weights, large_weights_note = make_weights(workdir, large_model) if large else (None, "")
    batch, workers, threads, backend = defaults()
    cores = os.cpu_count() or 1
    info = machine()
    print(
        f"machine: {info['cpu']}, {cores} cores; torch {info['torch']}, onnxruntime {info['onnxruntime']}",
        file=sys.stderr,
    )
    print(
        f"model {args.model}, {weights_note}; defaults: backend {backend}, batch {batch}, "
        f"workers {workers}, threads {threads}",
        file=sys.stderr,
    )

    one = str(DOG if DOG.is_file() else small[0])
    for old in list(workdir.glob("*.onnx")) + list((workdir / "torch_home").rglob("*.onnx")):
        old.unlink()  # so that the first run below measures the export and its check
    t0 = time.perf_counter()
    run_cli(workdir, one, 1, args.model, weights)  # exports, checks and caches the ONNX file
    warm_up_s = time.perf_counter() - t0

    sp = [str(p) for p in small]
    lp = [str(p) for p in large]
    fwd = [
        {"name": "default", "backend": "auto", "batch": batch, "threads": threads},
        {"name": "default, 1 thread", "backend": "auto", "batch": batch, "threads": 1},
        {"name": "torch channels_last", "backend": "torch", "batch": batch, "threads": threads, "channels_last": True},
    ]
    dec = [{"name": f"{workers} workers", "workers": workers}, {"name": "inline", "workers": 1}]
    tasks = [
        {"kind": "seed", "name": "seed", "paths": sp},
        {"kind": "forward", "name": "forward", "paths": sp, "variants": fwd},
        {"kind": "decode", "name": "decode", "paths": sp, "variants": dec},
    ]
    large_tasks = [
        {"kind": "seed", "name": "seed_large", "paths": lp},
        {
            "kind": "decode",
            "name": "decode_large",
            "paths": lp,
            "variants": [
                {"name": f"exact, {workers} workers", "workers": workers, "decode": "exact"},
                {"name": "exact, inline", "workers": 1, "decode": "exact"},
                {"name": f"default's draft, {workers} workers", "workers": workers, "decode": "checked"},
                {"name": f"--fast-decode, {workers} workers", "workers": workers, "decode": "fast"},
            ],
        },
    ]
    runs: dict[str, list] = {}
    for _ in range(args.repeats):  # start-up costs: `shufflenet --help` vs importing torch
        runs.setdefault("help", []).append(_wall([*shufflenet_cmd(), "--help"], workdir))
        runs.setdefault("import_torch", []).append(_wall([sys.executable, "-c", "import torch"], workdir))
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats} ...", file=sys.stderr)
        others = OthersLoad()
        runs.setdefault("probe", []).append(round(parallel_probe(), 2))
        job = {"model": args.model, "weights": str(weights), "tasks": tasks}
        for name, value in run_child(workdir, job).items():
            runs.setdefault(name, []).append(value)
        if large:
            job = {"model": large_model, "weights": str(large_weights), "tasks": large_tasks}
            for name, value in run_child(workdir, job).items():
                runs.setdefault(name, []).append(value)
        runs.setdefault("probe_b", []).append(round(parallel_probe(), 2))
        runs.setdefault("predict", []).append(run_cli(workdir, str(small_dir), len(small), args.model, weights))
        if large_dir:
            for key, extra in (("", []), ("_exact", ["--exact-decode"]), ("_fast", ["--fast-decode"])):
                runs.setdefault(f"predict_large{key}", []).append(
                    run_cli(workdir, str(large_dir), len(large), large_model, large_weights, extra)
                )
        runs.setdefault("single", []).append(run_cli(workdir, one, 1, args.model, weights)["wall_s"])
        runs.setdefault("load", []).append(round(others.cores(), 2))

    def variant_rates(name: str) -> dict[str, float]:
        names = [v["name"] for v in runs[name][0]]
        return {n: med([rep[i]["rate"] for rep in runs[name]]) for i, n in enumerate(names)}

    def variant_all(name: str) -> dict[str, list[float]]:
        names = [v["name"] for v in runs[name][0]]
        return {n: [round(rep[i]["rate"], 1) for rep in runs[name]] for i, n in enumerate(names)}

    res: dict = {
        "machine": info,
        "model": args.model,
        "weights": weights_note,
        "images": len(small),
        "large": len(large),
    }
    res["defaults"] = {"backend": backend, "batch": batch, "workers": workers, "threads": threads}
    res["describe"] = runs["forward"][0][0]["describe"]
    res["warm_up_s"] = warm_up_s
    res["repeats"] = args.repeats
    res["seed"] = med([x["rate"] for x in runs["seed"]])
    res["forward"] = variant_rates("forward")
    res["decode"] = variant_rates("decode")
    res["forward_all"] = variant_all("forward")
    res["decode_all"] = variant_all("decode")
    res["help_s"] = med(runs["help"])
    res["import_torch_s"] = med(runs["import_torch"])
    p = runs["predict"]
    res["predict"] = {k: med([x[k] for x in p]) for k in ("wall_s", "wall_rate", "run_rate", "startup_s")}
    res["predict_all"] = [round(x["run_rate"], 1) for x in p]
    res["seed_all"] = [round(x["rate"], 1) for x in runs["seed"]]
    res["load_all"] = runs["load"]
    res["probe_all"] = runs["probe"]
    res["probe_b_all"] = runs["probe_b"]
    res["ratio_all"] = [round(b["run_rate"] / a["rate"], 2) for a, b in zip(runs["seed"], p, strict=True)]
    res["single_s"] = med(runs["single"])
    # Bounds per repeat, from that repeat's (c) and (d): how many cores this VM really gets varies
    # from minute to minute, so b is compared with what was measured next to it.
    bounds, stricts = [], []
    for fwd_r, dec_r in zip(runs["forward"], runs["decode"], strict=True):
        c2, c1 = fwd_r[0]["rate"], fwd_r[1]["rate"]
        d2, d1 = dec_r[0]["rate"], dec_r[1]["rate"]
        bounds.append(1 / (1 / c2 + 1 / d2))  # each stage alone on the whole machine, one after the other
        stricts.append(cores / (min(cores / c2, 1 / c1) + min(cores / d2, 1 / d1)))  # cheapest core-seconds
    res["bound"], res["bound_strict"] = med(bounds), med(stricts)
    res["bound_all"] = [round(x, 1) for x in bounds]
    res["share_all"] = [round(b["run_rate"] / x, 2) for b, x in zip(p, bounds, strict=True)]
    res["share_strict_all"] = [round(b["run_rate"] / x, 2) for b, x in zip(p, stricts, strict=True)]
    res["ratio"] = med([b["run_rate"] / a["rate"] for a, b in zip(runs["seed"], p, strict=True)])
    if large:
        res["large_model"], res["large_weights"] = large_model, large_weights_note
        res["large_source"] = str(Path(args.large_dir).resolve()) if args.large_dir else "generated 4000x3000"
        res["seed_large"] = med([x["rate"] for x in runs["seed_large"]])
        res["decode_large"] = variant_rates("decode_large")
        pl = runs["predict_large"]
        res["predict_large"] = {k: med([x[k] for x in pl]) for k in ("wall_s", "wall_rate", "run_rate", "startup_s")}
        res["seed_large_all"] = [round(x["rate"], 1) for x in runs["seed_large"]]
        t = parse_timings(pl[-1]["timings"])
        res["large_drafted"], res["large_rechecked"] = t["drafted"], t["rechecked"]
        for key in ("", "_exact", "_fast"):  # the defaults, --exact-decode, --fast-decode
            runs_k = runs[f"predict_large{key}"]
            res[f"predict_large{key}_all"] = [round(x["run_rate"], 1) for x in runs_k]
            if key:  # the defaults' predict_large is the dict above
                res[f"predict_large{key}"] = med([x["run_rate"] for x in runs_k])
            res[f"ratio_large{key}_all"] = [
                round(b["run_rate"] / a["rate"], 2) for a, b in zip(runs["seed_large"], runs_k, strict=True)
            ]
            res[f"ratio_large{key}"] = med(res[f"ratio_large{key}_all"])
    res["timings_example"] = p[-1]["timings"]
    return res


def _row(label: str, rate: float, note: str = "") -> str:
    return f"  {label:<48}{rate:8.1f}   {note}".rstrip()


def report(res: dict) -> str:
    m, d, p = res["machine"], res["defaults"], res["predict"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores; python {m['python']}, torch {m['torch']}, "
        f"torchvision {m['torchvision']}, onnxruntime {m['onnxruntime']}, Pillow {m['pillow']}; {m['date']}",
        f"model {res['model']} ({res['weights']}); {res['images']} ImageNet-size JPEGs, "
        f"{res['large']} large JPEGs; medians of {res['repeats']} repeats "
        f"(cores used by other processes during each repeat: {res['load_all']})",
        f"2-thread speed-up probe (2.0 = both cores ours) before a,c,d: {res['probe_all']}; "
        f"before b: {res['probe_b_all']}",
        f"defaults: backend {d['backend']} -> {res['describe']}; "
        f"batch {d['batch']}, workers {d['workers']}, threads {d['threads']}",
        "",
        f"ImageNet-size JPEGs (500x375){'images/s':>31}",
        _row("(a) seed loop (batch 1, torch default threads)", res["seed"], f"runs {res['seed_all']}"),
        _row("(b) shufflenet predict, defaults (run)", p["run_rate"], f"runs {res['predict_all']}"),
        _row(
            f"    same, wall incl. startup ({res['images']} images)",
            p["wall_rate"],
            f"(wall {p['wall_s']:.2f} s, startup {p['startup_s']:.2f} s)",
        ),
    ]
    for name, rate in res["forward"].items():
        lines.append(_row(f"(c) forward only, batch {d['batch']}, {name}", rate, f"runs {res['forward_all'][name]}"))
    for name, rate in res["decode"].items():
        lines.append(_row(f"(d) decode+preprocess only, {name}", rate, f"runs {res['decode_all'][name]}"))
    lines += [
        _row("bound 1/(1/c + 1/d), default c and d", res["bound"], f"runs {res['bound_all']}"),
        _row(f"strict bound: cheapest core-seconds on {m['cores']} cores", res["bound_strict"]),
        "",
        f"  b/a  = {res['ratio']:.2f}x  (goal >= 3.0x; per repeat {res['ratio_all']})",
        f"  b/bound = {100 * med(res['share_all']):.0f}%  (goal >= 85%; per repeat {res['share_all']}); "
        f"b/strict bound = {100 * med(res['share_strict_all']):.0f}% (per repeat {res['share_strict_all']})",
        f"  single image `shufflenet predict dog.jpg`, warm cache: {res['single_s']:.2f} s wall; "
        f"first run (exports and checks the ONNX file): {res['warm_up_s']:.2f} s",
        f"  `shufflenet --help`: {res['help_s']:.2f} s; `python -c 'import torch'`: {res['import_torch_s']:.2f} s "
        f"(ratio {res['help_s'] / res['import_torch_s']:.2f}, goal < 0.33)",
    ]
    if res.get("large"):
        pl = res["predict_large"]
        lines += [
            "",
            f"large JPEGs ({res['large_source']}); model {res['large_model']} ({res['large_weights']})",
            f"large JPEGs ({res['large']}){'images/s':>{41 - len(str(res['large']))}}",
            _row("(a) seed loop", res["seed_large"], f"runs {res['seed_large_all']}"),
            _row("(b) shufflenet predict, defaults (run)", pl["run_rate"], f"runs {res['predict_large_all']}"),
            _row(
                f"    same, wall incl. startup ({res['large']} images)", pl["wall_rate"], f"(wall {pl['wall_s']:.2f} s)"
            ),
        ]
        lines.append(
            f"      of which decoded at a reduced DCT scale: {res['large_drafted']:.0f}, "
            f"decoded again at full size (near-ties): {res['large_rechecked']:.0f} (last run)"
        )
        for key, flag in (("exact", "--exact-decode"), ("fast", "--fast-decode")):
            runs_k = res[f"predict_large_{key}_all"]
            lines.append(_row(f"(b) shufflenet predict {flag} (run)", res[f"predict_large_{key}"], f"runs {runs_k}"))
        for name, rate in res["decode_large"].items():
            lines.append(_row(f"(d) decode+preprocess only, {name}", rate))
        lines += [
            f"  b/a  = {res['ratio_large']:.2f}x  (defaults; goal >= 6x; per repeat {res['ratio_large_all']})",
            f"  --exact-decode / a = {res['ratio_large_exact']:.2f}x; "
            f"--fast-decode / a = {res['ratio_large_fast']:.2f}x",
        ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- sweep


def main_sweep(args: argparse.Namespace) -> str:
    """The measurements behind default_tuning: forward variants, then the CLI over its knobs."""
    workdir = Path(args.workdir).resolve()
    small = make_images(workdir / "imagenet-size", args.images, large=False, seed=1)
    small_dir = exact_folder(workdir / "imagenet-size", small, workdir / "set-small")
    weights, _ = make_weights(workdir, args.model)
    sp = [str(p) for p in small]
    fwd = []
    for threads in (1, 2):
        for batch in [int(b) for b in args.batches.split(",")]:
            for backend in ("onnxruntime", "torch"):
                base = {"backend": backend, "batch": batch, "threads": threads, "min_s": 0.6}
                tag = "cl " if backend == "torch" else ""
                if threads == 1:
                    fwd.append({**base, "name": f"{backend} {tag}1 thread b{batch}"})
                    continue
                fwd.append({**base, "name": f"{backend} {tag}2 slices b{batch}"})
                fwd.append({**base, "name": f"{backend} {tag}2 threads/layer b{batch}", "split": False})
            if batch == 32:
                base = {"backend": "torch", "channels_last": False, "batch": batch, "threads": threads, "min_s": 0.6}
                fwd.append({**base, "name": f"torch contig {threads} slices b{batch}"})
    run_cli(workdir, sp[0], 1, args.model, weights)
    combos = [c.split(",") for c in args.combos.split(";")]
    cli_runs: dict[str, list[float]] = {}
    fwd_runs: dict[str, list[float]] = {}
    probes = []
    for r in range(args.repeats):
        print(f"sweep repeat {r + 1}/{args.repeats} ...", file=sys.stderr)
        probes.append(round(parallel_probe(), 2))
        res = run_child(
            workdir,
            {
                "model": args.model,
                "weights": str(weights),
                "tasks": [{"kind": "forward", "name": "f", "paths": sp, "variants": fwd}],
            },
        )
        for v in res["f"]:
            fwd_runs.setdefault(v["name"], []).append(v["rate"])
        for backend, batch, workers, threads in combos:
            extra = ["--backend", backend, "-b", batch, "-j", workers, "--threads", threads]
            rate = run_cli(workdir, str(small_dir), len(small), args.model, weights, extra)["run_rate"]
            cli_runs.setdefault(f"predict {backend} b{batch} j{workers} t{threads}", []).append(rate)
    lines = [f"2-thread speed-up probe at each repeat (2.0 = both cores ours): {probes}"]
    lines.append(f"forward only ({args.model}), images/s, median of {args.repeats}:")
    lines += [f"  {k:<28}{med(v):8.1f}   {[round(x) for x in v]}" for k, v in fwd_runs.items()]
    lines.append(f"shufflenet predict on {len(small)} images (run rate), images/s, median of {args.repeats}:")
    lines += [f"  {k:<40}{med(v):8.1f}   {[round(x) for x in v]}" for k, v in cli_runs.items()]
    return "\n".join(lines)


DEFAULT_COMBOS = ";".join(
    [
        "onnxruntime,32,2,2",  # the defaults on 2 cores
        "onnxruntime,32,1,2",
        "onnxruntime,32,3,2",
        "onnxruntime,32,1,1",
        "onnxruntime,32,2,1",
        "onnxruntime,16,2,2",
        "onnxruntime,64,2,2",
        "torch,32,2,2",
        "torch,32,1,1",
    ]
)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=200, help="ImageNet-size JPEGs (default 200)")
    ap.add_argument("--large", type=int, default=32, help="12-megapixel JPEGs; 0 skips that set (default 32)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="repeats of every measurement; medians are shown (default 3)"
    )
    ap.add_argument("--model", default="x1_0", help="x0_5, x1_0, x1_5 or x2_0 (default x1_0, the issue's reference)")
    ap.add_argument(
        "--large-model",
        help="model for the 12-MP set (default x0_5 with the real weights where ../shared has them, else --model): "
        "the default decode's speed there depends on how sure the model is (near-ties are decoded twice)",
    )
    ap.add_argument(
        "--large-dir", help="the large set: the first --large JPEGs (by name) in this folder instead of generated ones"
    )
    ap.add_argument("--workdir", default=str(BENCH_DIR), help="images, weights and caches (default .bench/, reused)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--sweep", action="store_true", help="run the tuning sweep (forward variants, CLI knobs) instead")
    ap.add_argument("--combos", default=DEFAULT_COMBOS, help="sweep: backend,batch,workers,threads;... ")
    ap.add_argument("--batches", default="16,32,64", help="sweep: forward batch sizes")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(args.child)
        return
    if args.sweep:
        print(main_sweep(args))
        return
    res = main_bench(args)
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
