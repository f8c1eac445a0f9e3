"""The CLI's inference step alone (`TorchBackend.topk` on a uint8 batch in host memory), variant by variant.

    python -m benchmarks.studies.forward_cuda                       # one GPU: about a minute
    python -m benchmarks.studies.forward_cuda --device cpu --batches 3 --variants fp32-tf32-off   # dry run

Each variant runs in a fresh process (so its first batch, cuDNN's set-up included, is measured too):
x1_0 with random weights, batch 128 by default, one batch of ImageNet-like noise in host memory.
Per batch: `host` = wall-clock ms of the whole call (pin, copy, normalise, forward, softmax, top-k,
one copy back), `launch` = the part before the copy back waits for the GPU (CPU time spent queuing
work), `gpu` = CUDA-event ms on the stream. `busy N` variants run while N processes spin on the CPU,
as the decode workers do in a run. Medians of --batches timed batches after 5 warm-up ones.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.common import ROOT, python_module

VARIANTS = {  # name: settings
    "fp32-tf32-off": {"channels_last": True},  # the CLI's fp32 until contiguous was chosen from these runs
    "fp32-tf32-on": {"tf32": True},
    "fp32-contiguous": {"channels_last": False},
    "fp32-cudnn-benchmark": {"cudnn_benchmark": True},
    "fp16": {"precision": "fp16"},
    "bf16": {"precision": "bf16"},
    "fp32-busy-16": {"busy": 16},
    "fp16-busy-16": {"precision": "fp16", "busy": 16},
    "fp32-graph": {"graph": True},  # normalise + forward captured once as a CUDA graph, replayed per batch
    "fp32-graph-busy-16": {"graph": True, "busy": 16},
}


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _graphed(backend, batch: int, device):  # type: ignore[no-untyped-def]
    """topk with normalise + forward replayed from a CUDA graph over a fixed device input buffer."""
    import torch

    from shufflenet_cli.backends import torch_backend  # its topk_to_numpy at call time: `child` marks it

    static_in = torch.zeros((batch, 224, 224, 3), dtype=torch.uint8, device=device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            backend.logits(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = backend.logits(static_in)

    def topk(b, k):  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            static_in.copy_(torch.from_numpy(b).pin_memory(), non_blocking=True)
        graph.replay()
        with torch.inference_mode():
            return torch_backend.topk_to_numpy(static_out, k)

    return topk


def child(name: str, device_name: str, batch: int, batches: int) -> dict:
    import numpy as np
    import torch

    from shufflenet_cli.backends.torch_backend import TorchBackend
    from shufflenet_cli.models import resolve_model

    v = VARIANTS[name]
    t0 = time.perf_counter()
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    spec = resolve_model("x1_0")
    torch.manual_seed(0)
    model = spec.builder()(weights=None).eval()
    backend = TorchBackend(
        model,
        device,
        spec.mean,
        spec.std,
        precision=v.get("precision", "fp32"),
        channels_last=v.get("channels_last", True),  # fixed here, not the backend's device-based default
        cuda_graphs=False,  # eager: the "graph" variants capture their own (_graphed), with a launch mark
    )
    if v.get("tf32"):  # after the backend: it turns TF32 off for fp32
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = bool(v.get("cudnn_benchmark"))
    built = time.perf_counter() - t0
    x = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)

    busy = []
    if v.get("busy"):
        ctx = multiprocessing.get_context("spawn")
        busy = [ctx.Process(target=_spin, args=(600.0,), daemon=True) for _ in range(v["busy"])]
        for p in busy:
            p.start()
        time.sleep(1.0)

    timed_topk = backend.topk if not (v.get("graph") and cuda) else _graphed(backend, batch, device)
    # `launch`: time until the work is queued, marked where top-k starts (before the copy back waits):
    # TorchBackend.topk (and _graphed's topk) call the name topk_to_numpy of torch_backend's module
    import shufflenet_cli.backends.torch_backend as backends_module

    launch_ends: list[float] = []
    real_topk_to_numpy = backends_module.topk_to_numpy

    def marked(logits, k):  # type: ignore[no-untyped-def]
        launch_ends.append(time.perf_counter())
        return real_topk_to_numpy(logits, k)

    backends_module.topk_to_numpy = marked
    try:
        t1 = time.perf_counter()
        timed_topk(x, 5)
        first = time.perf_counter() - t1
        for _ in range(5):
            timed_topk(x, 5)
        host, launch, gpu = [], [], []
        for _ in range(batches):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
            t1 = time.perf_counter()
            timed_topk(x, 5)
            t2 = time.perf_counter()
            host.append(1000 * (t2 - t1))
            launch.append(1000 * (launch_ends[-1] - t1))
            if cuda:
                end.record()
                torch.cuda.synchronize()
                gpu.append(start.elapsed_time(end))
    finally:
        backends_module.topk_to_numpy = real_topk_to_numpy
        for p in busy:
            p.kill()
    med = lambda xs: round(statistics.median(xs), 3) if xs else None  # noqa: E731
    return {
        "variant": name,
        "settings": v,
        "build_s": round(built, 2),
        "first_batch_s": round(first, 3),
        "host_ms": med(host),
        "launch_ms": med(launch),
        "gpu_ms": med(gpu),
        "images_per_s": round(batch / (statistics.median(host) / 1000), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.device, args.batch, args.batches)))
        return
    rows = []
    for name in args.variants.split(","):
        cmd = [*python_module(__spec__.name), "--child", name, "--device", args.device]
        cmd += ["--batch", str(args.batch), "--batches", str(args.batches)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=300, cwd=str(ROOT)
        )  # `benchmarks` importable
        if proc.returncode != 0:
            rows.append({"variant": name, "error": proc.stderr.strip()[-800:]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"inference step alone, x1_0, batch {args.batch}, --device {args.device}: medians of {args.batches}")
    print(f"  {'variant':22s} {'images/s':>9s} {'host ms':>8s} {'launch ms':>9s} {'gpu ms':>7s} {'1st batch s':>11s}")
    for r in rows:
        if "error" in r:
            print(f"  {r['variant']:22s} error: {r['error']}")
            continue
        print(
            f"  {r['variant']:22s} {r['images_per_s']:9.0f} {r['host_ms']:8.2f} {r['launch_ms']:9.2f}"
            f" {r['gpu_ms'] if r['gpu_ms'] is not None else float('nan'):7.2f} {r['first_batch_s']:11.3f}"
        )


if __name__ == "__main__":
    main()
