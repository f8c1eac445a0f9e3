"""What more than one benchmark script uses: paths, image sets, weights, the CLI as a subprocess,
its --timings parsed, and the measurements the CPU and CUDA benchmarks share.

Import it as `from benchmarks import common`: the scripts run as modules from the repository root
(`python -m benchmarks.bench_cpu`, `python -m benchmarks.studies.handoff`), see README.md.
Heavy imports (torch, PIL, numpy, the package) are done inside the functions, so that a script's
--help and its parent process stay light.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the repository
BENCH_DIR = ROOT / ".bench"  # generated images, weights and caches, kept between runs (git-ignored)
SHARED = ROOT.parent / "shared"
DOG = SHARED / "images" / "dog.jpg"
REAL_X0_5 = SHARED / "weights" / "shufflenetv2_x0_5-imagenet-fp16.pth"
JPEG = {".jpg", ".jpeg", ".jpe", ".jfif"}
UPSCALED = JPEG | {".png", ".webp"}  # what `upscale` takes: it re-encodes them as JPEGs
SHARDS = 16  # make_image_set's shards, made in parallel


def python_module(name: str) -> list[str]:
    """The command that runs benchmark module `name` (a script's own `__spec__.name` for its child
    processes); run it with cwd=ROOT, where `benchmarks` is importable."""
    return [sys.executable, "-m", name]


# --------------------------------------------------------------------------------------------- images


def _source_image():  # type: ignore[no-untyped-def]
    from PIL import Image

    if DOG.is_file():
        return Image.open(DOG).convert("RGB")
    import numpy as np

    rng = np.random.default_rng(0)  # a smooth synthetic picture with some texture
    yy, xx = np.mgrid[0:1200, 0:1600].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(xx / 97 + c) * np.cos(yy / 61 - c) for c in range(3)], axis=-1)
    base += rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def _variant(src, rng, size, noise=None):  # type: ignore[no-untyped-def]
    """A random crop of `src`, resized to `size`, recoloured, maybe flipped, with optional noise."""
    import numpy as np
    from PIL import Image, ImageEnhance

    w, h = src.size
    tw, th = size
    aspect = tw / th
    area = rng.uniform(0.25, 1.0) * w * h
    cw = int(min(w, (area * aspect) ** 0.5))
    ch = int(min(h, cw / aspect))
    cw = int(ch * aspect)
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.Resampling.BICUBIC)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.3:  # hue shift by rotating the channels
        img = Image.merge("RGB", [img.getchannel(i) for i in rng.permutation(3)])
    if noise is not None:
        arr = np.asarray(img, dtype=np.int16)
        dy, dx = int(rng.integers(0, 8)), int(rng.integers(0, 8))
        arr = arr + noise[dy : dy + arr.shape[0], dx : dx + arr.shape[1]]
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img


def make_images(folder: Path, count: int, large: bool, seed: int) -> list[Path]:
    """`count` JPEGs in `folder` (kept between runs; only missing ones are made): ImageNet-size
    (500x375, a quarter 375x500) or, with `large`, 12-megapixel ones (4000x3000) with camera-like
    grain, all random crops, recolourings, flips and JPEG qualities of ../shared/images/dog.jpg
    (of a synthetic picture where that photo is absent)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{i:05d}.jpg" for i in range(count)]
    missing = [i for i, p in enumerate(paths) if not p.is_file()]
    if not missing:
        return paths
    src = _source_image()
    print(
        f"generating {len(missing)} {'12-megapixel' if large else 'ImageNet-size'} JPEGs in {folder} ...",
        file=sys.stderr,
    )
    noise_rng = np.random.default_rng(seed)
    noise = None
    if large:  # camera-like grain: an upscaled photo alone is too smooth to decode like a real one
        noise = noise_rng.normal(0, 5, (3008, 4008, 3)).astype(np.int16)
        src = src.resize((src.width * 2, src.height * 2))
    for i in missing:
        rng = np.random.default_rng(seed * 100003 + i)
        if large:
            size = (4000, 3000) if rng.random() < 0.75 else (3000, 4000)
            img = _variant(src, rng, size, noise if size[0] == 4000 else noise.transpose(1, 0, 2))
        else:
            size = (500, 375) if rng.random() < 0.75 else (375, 500)
            small_noise = noise_rng.normal(0, 3, (size[1] + 8, size[0] + 8, 3)).astype(np.int16)
            img = _variant(src, rng, size, small_noise if rng.random() < 0.5 else None)
        img.save(paths[i], quality=int(rng.integers(75, 96)))
    return paths


def exact_folder(src: Path, paths: list[Path], dest: Path) -> Path:
    """A folder holding exactly `paths` (hard links), so the CLI sees the same N images as the loop."""
    names = sorted(p.name for p in paths)
    if dest.is_dir() and sorted(os.listdir(dest)) == names:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for p in paths:
        try:
            os.link(p, dest / p.name)
        except OSError:
            shutil.copy2(p, dest / p.name)
    return dest


def small_set(workdir: Path, count: int) -> tuple[list[Path], Path]:
    """The ImageNet-size JPEGs and a folder holding exactly them (the CLI's input)."""
    small = make_images(workdir / "imagenet-size", count, large=False, seed=1)
    return small, exact_folder(workdir / "imagenet-size", small, workdir / "set-small")


def large_set(workdir: Path, count: int, source: str | None = None) -> tuple[list[Path], Path | None]:
    """The 12-MP JPEGs (generated, or the first `count` of `source` by name) and a folder holding
    exactly them; ([], None) for count 0."""
    if not count:
        return [], None
    if source:
        src = Path(source).resolve()
        large = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:count]
        name = f"set-large-{hashlib.sha256(str(src).encode()).hexdigest()[:8]}"  # not the generated set's
    else:
        large, name = make_images(workdir / "12mp", count, large=True, seed=2), "set-large"
    return large, exact_folder(large[0].parent, large, workdir / name)


def _make_shard(folder: str, shard: int, count: int) -> list[str]:
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # one line per shard would crowd the output
        paths = make_images(Path(folder) / f"shard{shard:02d}", count, large=False, seed=100 + shard)
    return [str(p) for p in paths]


def make_image_set(workdir: Path, count: int) -> tuple[list[str], Path]:
    """`count` ImageNet-size JPEGs in SHARDS shards made in parallel (a process pool over all cores),
    and a folder whose SHARDS sub-folders hold exactly them: the CUDA scripts' set."""
    counts = [count // SHARDS + (k < count % SHARDS) for k in range(SHARDS)]
    procs = max(1, min(SHARDS, os.cpu_count() or 1))
    jobs = [(str(workdir / "cuda-imagenet-size"), k, n) for k, n in enumerate(counts)]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        shards = pool.starmap(_make_shard, jobs)
    target = workdir / "cuda-set"
    for k, paths in enumerate(shards):
        src = workdir / "cuda-imagenet-size" / f"shard{k:02d}"
        exact_folder(src, [Path(p) for p in paths], target / f"shard{k:02d}")
    return [p for paths in shards for p in paths], target


def find_jpegs(folders: list[str], limit: int | None, suffixes: set[str] = JPEG) -> list[Path]:
    """The files in `folders` (searched recursively; a file is taken as it is) with these suffixes."""
    paths: list[Path] = []
    for f in folders:
        p = Path(f)
        paths += [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.suffix.lower() in suffixes)
    return paths[:limit] if limit else paths


def upscale(paths: list[Path], size: int, dest: Path) -> list[Path]:
    """Each picture resized so that its longer side is `size`, saved in `dest` as a JPEG (quality 92)."""
    from PIL import Image, ImageOps

    out = []
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            scale = size / max(im.size)
            big = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
        q = dest / f"{i:05d}_{p.stem}.jpg"
        big.save(q, quality=92)
        out.append(q)
    return out


# -------------------------------------------------------------------------------------------- weights


def random_weights(path: Path, model: str) -> Path:
    """A seeded random state dict of `model` saved at `path` (speed does not depend on the values)."""
    import torch

    from shufflenet_cli.models import resolve_model

    torch.manual_seed(0)
    torch.save(resolve_model(model).builder()(weights=None).eval().state_dict(), path)
    return path


def make_weights(workdir: Path, model: str) -> tuple[Path, str]:
    """A weights file for `model` in `workdir` (kept between runs) and what it holds: x0_5's real
    ImageNet weights where ../shared has them (upcast to fp32), else seeded random ones."""
    import torch

    from shufflenet_cli.models import resolve_model

    spec = resolve_model(model)
    if spec.key == "x0_5" and REAL_X0_5.is_file():
        path = workdir / "x0_5-imagenet.pth"
        if not path.is_file():
            sd = torch.load(REAL_X0_5, weights_only=True)
            torch.save({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, path)
        return path, "real ImageNet weights (fp16 file upcast to fp32)"
    path = workdir / f"{spec.key}-random.pth"
    if not path.is_file():
        random_weights(path, spec.key)
    return path, "random weights (seeded; speed does not depend on values)"


def default_large_model(model: str) -> str:
    """The 12-MP set's model: x0_5 with its real weights where ../shared has them (the default decode's
    speed depends on how sure the model is: near-ties are decoded twice), else `model`."""
    return "x0_5" if REAL_X0_5.is_file() else model


def load_net(model: str, weights: Path):  # type: ignore[no-untyped-def]
    """(spec, eval model) for `model` with the weights in that file, as the CLI loads them."""
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import load_model

    spec = resolve_model(model)
    return spec, load_model(spec, weights)


# ------------------------------------------------------------------------------ in-process measurements


def med(values: list[float]) -> float:
    """The median of the numbers that are not nan (nan where none is)."""
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def timed(fn, min_s: float = 1.0, min_iters: int = 3, warmup: int = 1) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of one call of fn, after warm-up calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def uint8_batch(prep, paths: list[str], size: int):  # type: ignore[no-untyped-def]
    """A N,H,W,3 uint8 batch of `size` crops made by `prep` (the CLI's Preprocess) from `paths`,
    repeated where there are fewer paths than `size`."""
    import numpy as np

    crops = [prep(p).array for p in paths[: min(size, len(paths))]]
    while len(crops) < size:
        crops += crops[: size - len(crops)]
    return np.stack(crops)


def seed_loop(model: str, weights: Path, paths: list[str]) -> dict:
    """The seed's loop, exactly as its README example, one image at a time on the CPU: images/s."""
    import torch
    from PIL import Image
    from torchvision import transforms

    _, net = load_net(model, weights)
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )

    def one(path: str) -> None:
        img = Image.open(path).convert("RGB")
        with torch.no_grad():
            probabilities = torch.nn.functional.softmax(net(preprocess(img).unsqueeze(0))[0], dim=0)
        torch.topk(probabilities, 5)

    one(paths[0])  # warm-up
    t0 = time.perf_counter()
    for p in paths:
        one(p)
    return {"rate": len(paths) / (time.perf_counter() - t0), "threads": torch.get_num_threads()}


def decode_rates(model: str, paths: list[str], variants: list[dict]) -> list[dict]:
    """The CLI's per-image work (Preprocess: read, decode, resize, crop) alone, inline (`workers` 1)
    or on a thread pool of `workers`; each variant's dict with its `rate` (images/s) added."""
    from concurrent.futures import ThreadPoolExecutor

    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.models import resolve_model

    spec = resolve_model(model)
    out = []
    for v in variants:
        prep = Preprocess.from_weights(spec.weights(), decode=v.get("decode", "checked"))  # checked: draft only
        prep(paths[0])
        t0 = time.perf_counter()
        if v["workers"] <= 1:
            for p in paths:
                prep(p)
        else:
            with ThreadPoolExecutor(v["workers"]) as pool:
                for _ in pool.map(prep, paths, chunksize=4):
                    pass
        out.append({**v, "rate": len(paths) / (time.perf_counter() - t0)})
    return out


class Instant:
    """A backend that answers at once: what is left of a run is the main process's own work per image."""

    name, precision = "instant", "fp32"

    def topk(self, batch: Any, k: int) -> tuple[Any, Any]:
        import numpy as np

        n = len(batch)
        return np.full((n, k), 1.0 / k, np.float32), np.tile(np.arange(k), (n, 1))

    def describe(self) -> str:
        return self.name


# ----------------------------------------------------------------------------------- the CLI, measured


def child_env(workdir: Path) -> dict:
    """The environment of every child process: a private TORCH_HOME in `workdir`, offline, and
    torch's own choice of threads."""
    env = dict(os.environ)
    env["TORCH_HOME"] = str(workdir / "torch_home")
    env["SHUFFLENET_OFFLINE"] = "1"
    env.pop("OMP_NUM_THREADS", None)
    return env


def shufflenet_cmd() -> list[str]:
    """The installed `shufflenet` entry point next to this interpreter, else `python -m shufflenet_cli`."""
    exe = Path(sys.executable).with_name("shufflenet")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "shufflenet_cli"]


def predict_cmd(target: str, model: str, weights: Path, extra: list[str] = ()) -> list[str]:
    """`shufflenet predict` as the benchmarks run it: JSON Lines to stdout, --timings on stderr."""
    cmd = [*shufflenet_cmd(), "predict", target, "-m", model, "--weights", str(weights), "-f", "jsonl", "-q"]
    return [*cmd, "--timings", *extra]


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else float("nan")


def parse_timings(stderr: str) -> dict:
    """--timings' lines as numbers (nan where a line is missing), and the backend and tuning it names."""
    text = " ".join(stderr.split())  # rich wraps stderr at 80 columns when it is not a terminal
    tuning = re.search(r"backend (.+?); batch size (\d+), workers (\d+ ?\(?\w*\)?), threads (\d+)", text)
    ms = lambda name: _number(name + r" ([0-9.]+) ms/image", text)  # noqa: E731
    return {
        "run_rate": _number(r"timings: ([0-9.]+) images/s", text),
        "inputs": _number(r"end-to-end over (\d+) inputs", text),
        "decode_ms": ms(r"read\+decode"),
        "preprocess_ms": ms("preprocess"),
        "inference_ms": ms("inference"),
        "output_ms": ms("output"),
        "wait_ms": ms("waiting for decoded images"),
        "first_batch_s": _number(r"first batch done after ([0-9.]+) s", text),
        "after_first_rate": _number(r"; ([0-9.]+) images/s after it", text),
        "drafted": _number(r"JPEG DCT scaling: (\d+) image", text),
        "rechecked": _number(r"reduced scale, (\d+) of them decoded again", text),
        "backend": tuning.group(1) if tuning else "?",
        "tuning": "batch {}, workers {}, threads {}".format(*tuning.groups()[1:]) if tuning else "?",
    }


def run_cli(
    workdir: Path, target: str, n: int, model: str, weights: Path, extra: list[str] = (), timeout: float | None = None
) -> dict:
    """The real CLI, as a user runs it; the wall time excludes nothing. `timeout` (seconds): the
    child is killed and subprocess.TimeoutExpired raised past it (default: none)."""
    out_file = workdir / "predict.jsonl"
    cmd = predict_cmd(target, model, weights, extra)
    t0 = time.perf_counter()
    with open(out_file, "wb") as out:
        proc = subprocess.run(
            cmd, env=child_env(workdir), stdout=out, stderr=subprocess.PIPE, cwd=str(workdir), timeout=timeout
        )
    wall = time.perf_counter() - t0
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-3000:]}")
    records = sum(1 for _ in open(out_file, "rb"))
    if records != n:
        raise RuntimeError(f"expected {n} records from predict, got {records}")
    run_rate = parse_timings(err)["run_rate"]
    return {
        "wall_s": wall,
        "wall_rate": n / wall,
        "run_rate": run_rate,
        "startup_s": wall - n / run_rate,  # nan where --timings printed no rate
        "timings": err.strip(),
    }


def machine() -> dict:
    """The CPU, core count and library versions, and when: printed with every result."""
    import numpy
    import PIL
    import torch
    import torchvision

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": ort,
        "pillow": PIL.__version__,
        "numpy": numpy.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load_before": open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").is_file() else [],
    }
