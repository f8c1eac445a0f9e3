"""`shufflenet predict` on the same photos read locally, over HTTP and from S3, with a latency injected
into every request: images/s against the local-file rate.

The photos are random crops, recolourings and flips of ../shared/images/dog.jpg (a synthetic
picture where it is absent) saved as JPEGs from 1024 x 768 to 2048 x 1536 pixels, a few hundred KB
each, kept in .bench/remote-photos/. Each configuration is the real CLI in a subprocess
(`-f jsonl -q --timings`); its rate is --timings' (first input to last record: the model load and
start-up are left out, an S3 prefix's listing is in). The servers run in this process, on 127.0.0.1:

- http: the standard library's ThreadingHTTPServer, which sleeps LATENCY before each answer; the
  CLI gets one URL argument per photo.
- s3: moto's ThreadedMotoServer with its WSGI app wrapped so that every request (listing, HEAD, GET)
  waits LATENCY before moto answers; the CLI gets the prefix `s3://bench/photos/`. A wrapper rather
  than a proxy in front: no second hop whose own cost on these cores would be counted as latency, and
  moto's answers are passed on untouched.

The latency is a sleep on the server: it models a store far away (each request waits, the CPU does
not), not a slow link. A control runs the local folder on as many decode threads as a remote run gets
(`-j 32`). For each remote configuration, the fetches alone (decode/fetch.py's `fetch` on those
threads, in a child process, no decode, no model) give the rate remote reads allow whatever the
machine's decode rate; the CPU time of the CLI and of the servers is printed per image.
Configurations run in interleaved rounds (the host's speed drifts between runs); the medians are
printed, and the ratio of each remote rate to the local one.

    python -m benchmarks.remote_throughput                    # 200 photos, 0 and 50 ms, 3 rounds
    python -m benchmarks.remote_throughput --latency-ms 50 --rounds 5
    python -m benchmarks.remote_throughput --extra=-j --extra=64   # flags for every run (note the =)

Goal (issue 18): at 50 ms per request, each remote rate at least 80 % of the local one. Exit status
1 when a remote configuration with a latency of 50 ms or more misses it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

from benchmarks import common

GOAL = 0.8  # remote rate / local rate at GOAL_LATENCY_MS
GOAL_LATENCY_MS = 50.0
SIZES = [(1024, 768), (1600, 1200), (2048, 1536)]  # landscape; a quarter of the photos are turned
BUCKET = "bench"


# --------------------------------------------------------------------------------------------- photos


def make_photos(folder: Path, count: int) -> list[Path]:
    """`count` photo-like JPEGs in `folder`, made where missing (kept between runs)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo{i:04d}.jpg" for i in range(count)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if not missing:
        return paths
    print(f"generating {len(missing)} photos in {folder} ...", file=sys.stderr)
    src = common._source_image()
    for i in missing:
        rng = np.random.default_rng(1000 + i)
        w, h = SIZES[int(rng.integers(0, len(SIZES)))]
        size = (w, h) if rng.random() < 0.75 else (h, w)
        noise = np.random.default_rng(i).normal(0, 3, (size[1] + 8, size[0] + 8, 3)).astype(np.int16)
        img = common._variant(src, rng, size, noise)
        img.save(paths[i], quality=int(rng.integers(80, 93)))
    return paths


# -------------------------------------------------------------------------------------------- servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SlowHttp:
    """The photos over HTTP, each answer after `latency` seconds; `requests` counts them."""

    def __init__(self, files: dict[str, bytes], latency: float) -> None:
        self.files, self.latency, self.requests = files, latency, 0
        self.lock = threading.Lock()
        bench = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                with bench.lock:
                    bench.requests += 1
                time.sleep(bench.latency)
                body = bench.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256  # many fetches connect at once
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Delayed:
    """A WSGI app that sleeps `latency` seconds before `app` answers each request; `requests` counts them."""

    def __init__(self, app: Callable[..., Any], latency: float) -> None:
        self.app, self.latency, self.requests = app, latency, 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Any:
        with self.lock:
            self.requests += 1
        time.sleep(self.latency)
        return self.app(environ, start_response)


class SlowS3:
    """moto's S3 server holding the photos under s3://bench/photos/, each request after `latency` seconds."""

    def __init__(self, photos: list[Path], latency: float) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line on stderr per request otherwise
        self.endpoint = f"http://127.0.0.1:{_free_port()}"
        port = int(self.endpoint.rsplit(":", 1)[1])
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.moto.start()
        self._fill(photos)  # before the delay: the upload is not measured
        # moto has no hook for this: its werkzeug server reads `app` for every request
        server = self.moto._server
        self.delayed = Delayed(server.app, latency)  # type: ignore[union-attr]
        server.app = self.delayed  # type: ignore[union-attr]

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def _fill(self, photos: list[Path]) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_aws_keys(self.env()))
        client.create_bucket(Bucket=BUCKET)
        for p in photos:
            client.put_object(Bucket=BUCKET, Key=f"photos/{p.name}", Body=p.read_bytes())

    @property
    def requests(self) -> int:
        return self.delayed.requests

    def close(self) -> None:
        self.moto.stop()


def _aws_keys(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


# ------------------------------------------------------------------------------------------------ runs


def run_cli(workdir: Path, targets: list[str], n: int, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One `shufflenet predict` over `targets`; its --timings as numbers, and the errors it recorded."""
    cmd = [*common.shufflenet_cmd(), "predict", *targets, "-m", args.model, "--weights", str(args.weights_path)]
    cmd += ["-f", "jsonl", "-q", "--timings", *args.extra]
    out_file = workdir / "predict.jsonl"
    before = _cpu()
    t0 = time.perf_counter()
    with open(out_file, "wb") as out:
        proc = subprocess.run(
            cmd, env={**common.child_env(workdir), **env}, stdout=out, stderr=subprocess.PIPE, timeout=args.timeout
        )
    wall = time.perf_counter() - t0
    server_cpu, cli_cpu = (b - a for a, b in zip(before, _cpu(), strict=True))
    err = proc.stderr.decode(errors="replace")
    records = [json.loads(line) for line in open(out_file, "rb")]
    errors = [r["error"] for r in records if r.get("error")]
    if proc.returncode != 0 or len(records) != n or errors:
        first = errors[0] if errors else ""
        raise SystemExit(
            f"exit {proc.returncode}, {len(records)} records of {n}, {len(errors)} errors {first!r}:\n{err[-3000:]}"
        )
    timings = common.parse_timings(err)
    fetch = re.search(r"fetch ([0-9.]+) ms per fetched input", " ".join(err.split()))
    return {
        "rate": timings["run_rate"],
        "wall_s": wall,
        "tuning": timings["tuning"],
        "fetch_ms": float(fetch.group(1)) if fetch else float("nan"),
        "wait_ms": timings["wait_ms"],
        "cli_cpu_ms": 1000 * cli_cpu / n,
        "server_cpu_ms": 1000 * server_cpu / n,
    }


def _cpu() -> tuple[float, float]:
    """CPU seconds so far of this process (the servers' threads: nothing else runs here meanwhile)
    and of its waited-for children (the CLI)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def fetch_ceiling(urls: list[str], env: dict[str, str], timeout: float) -> float:
    """Images/s of the fetches alone (no decode, no model) on as many threads as a run with URL
    arguments decodes on: the rate remote reads allow, whatever the machine's decode rate. In a
    child process: the servers' threads in this one would take the GIL from the fetches."""
    proc = subprocess.run(
        [*common.python_module(__spec__.name), "--fetch-only"],
        input="\n".join(urls).encode(),
        env={**os.environ, **env},
        cwd=str(common.ROOT),
        stdout=subprocess.PIPE,
        timeout=timeout,
        check=True,
    )
    return float(proc.stdout)


def _fetch_only() -> int:
    """The child of fetch_ceiling: URLs on stdin, images/s on stdout."""
    from concurrent.futures import ThreadPoolExecutor

    from shufflenet_cli.decode.fetch import REMOTE_WORKERS, Remote, fetch

    urls = sys.stdin.read().split()
    remote = Remote()
    fetch(urls[0], remote)  # the client made, as a run's first fetch makes it
    t0 = time.perf_counter()
    with ThreadPoolExecutor(REMOTE_WORKERS) as pool:
        for _ in pool.map(lambda url: fetch(url, remote), urls):
            pass
    print(len(urls) / (time.perf_counter() - t0))
    return 0


Start = Callable[[], tuple[list[str], list[str], dict[str, str], Any]]


def configurations(photos: list[Path], folder: Path, latencies: list[float]) -> Iterator[tuple[str, Start]]:
    """(name, start) for each configuration: start() returns (the CLI's arguments, each photo's URL,
    the environment, the server or None)."""
    from shufflenet_cli.decode.fetch import REMOTE_WORKERS

    files = {f"/photos/{p.name}": p.read_bytes() for p in photos}
    yield "local", lambda: ([str(folder)], [], {}, None)
    # the control: local files on as many decode threads as a run with URL arguments gets
    yield f"local -j {REMOTE_WORKERS}", lambda: ([str(folder), "-j", str(REMOTE_WORKERS)], [], {}, None)
    for ms in latencies:

        def http(ms: float = ms) -> tuple[list[str], list[str], dict[str, str], SlowHttp]:
            server = SlowHttp(files, ms / 1000)
            urls = [server.url(f"/photos/{p.name}") for p in photos]
            return urls, urls, {}, server

        def s3(ms: float = ms) -> tuple[list[str], list[str], dict[str, str], SlowS3]:
            server = SlowS3(photos, ms / 1000)
            return [f"s3://{BUCKET}/photos/"], [f"s3://{BUCKET}/photos/{p.name}" for p in photos], server.env(), server

        yield f"http {ms:g} ms", http
        yield f"s3 {ms:g} ms", s3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="photos (default 200)")
    parser.add_argument(
        "--latency-ms", type=float, action="append", help="injected per request; repeatable (default: 0 and 50)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--model", default="x0_5", help="width (default x0_5: real weights where ../shared has them)")
    parser.add_argument("--extra", action="append", default=[], help="a flag for every run, e.g. --extra=-j")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed for each run")
    parser.add_argument("--fetch-only", action="store_true", help=argparse.SUPPRESS)  # fetch_ceiling's child
    args = parser.parse_args()
    if args.fetch_only:
        return _fetch_only()
    latencies = args.latency_ms or [0.0, GOAL_LATENCY_MS]

    common.BENCH_DIR.mkdir(exist_ok=True)
    photos = make_photos(common.BENCH_DIR / "remote-photos", args.n)
    folder = common.exact_folder(photos[0].parent, photos, common.BENCH_DIR / f"remote-set-{args.n}")
    args.weights_path, weights_note = common.make_weights(common.BENCH_DIR, args.model)
    sizes = [p.stat().st_size for p in photos]
    info = common.machine()
    print(
        f"{len(photos)} JPEGs, median {statistics.median(sizes) / 1e3:.0f} KB ({min(sizes) / 1e3:.0f}-"
        f"{max(sizes) / 1e3:.0f} KB); model {args.model}, {weights_note}\n"
        f"machine: {info['cpu']}, {info['cores']} cores, load {' '.join(info['load_before'])}, "
        f"python {info['python']}, torch {info['torch']}, pillow {info['pillow']}; {info['date']}",
        flush=True,
    )
    configs = list(configurations(photos, folder, latencies))
    rates: dict[str, list[float]] = {name: [] for name, _ in configs}
    ceilings: dict[str, list[float]] = {name: [] for name, _ in configs}
    with tempfile.TemporaryDirectory(prefix="shufflenet-remote-") as tmp:
        workdir = Path(tmp)
        run_cli(workdir, [str(folder)], len(photos), args, {})  # untimed: caches warm, an ONNX export made
        for round_ in range(args.rounds):
            order = configs if round_ % 2 == 0 else [configs[0], *reversed(configs[1:])]
            for name, start in order:
                targets, urls, env, server = start()
                try:
                    result = run_cli(workdir, targets, len(photos), args, env)
                    result["requests"] = server.requests if server is not None else 0
                    if urls:
                        ceilings[name].append(fetch_ceiling(urls, env, args.timeout))
                finally:
                    if server is not None:
                        server.close()
                rates[name].append(result["rate"])
                ceiling = f", fetches alone {ceilings[name][-1]:6.1f} images/s" if urls else ""
                print(
                    f"round {round_ + 1} {name:>10}: {result['rate']:6.1f} images/s, {result['requests']:4d} "
                    f"requests; CPU ms/image: CLI {result['cli_cpu_ms']:.1f}, server {result['server_cpu_ms']:.1f}; "
                    f"fetch {result['fetch_ms']:.1f} ms/input, wait {result['wait_ms']:.1f} ms/image{ceiling}",
                    flush=True,
                )
    local = statistics.median(rates["local"])
    missed = []
    print(f"\nmedians over {args.rounds} round(s):")
    for name, values in rates.items():
        rate = statistics.median(values)
        ratio = rate / local
        ms = float(name.split()[1]) if not name.startswith("local") else 0.0
        verdict = ""
        if ms >= GOAL_LATENCY_MS:
            verdict = "  meets the goal" if ratio >= GOAL else f"  MISSES the {GOAL:.0%} goal"
            if ratio < GOAL:
                missed.append(name)
        ceiling = f"; fetches alone {statistics.median(ceilings[name]):6.1f} images/s" if ceilings[name] else ""
        print(f"  {name:>10}: {rate:6.1f} images/s, {ratio:6.1%} of local{ceiling}{verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
