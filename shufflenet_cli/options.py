"""What `predict` can be asked: the choices of every option (the CLI's enums are made from these),
`PredictOptions`, and the checks a library caller's options get before anything runs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from shufflenet_cli.atomic import is_stream
from shufflenet_cli.errors import UsageError
from shufflenet_cli.image_formats import image_extensions

FORMATS = ("table", "json", "jsonl", "csv")
RESUMABLE = ("jsonl", "csv")  # formats --resume can append to
BACKENDS = ("auto", "torch", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "bf16")
DECODE_IN = ("auto", "threads", "processes")
# exact: every image at full size; checked (default): big JPEGs DCT-scaled, near-ties decoded again;
# fast: DCT-scaled further and never checked (decode/preprocess.py DRAFT_FACTOR, decode/near_ties.py)
DECODE_MODES = ("exact", "checked", "fast")
DEVICE_HINT = "use auto, cpu, cuda or cuda:N"
# local: this process and its decode workers; ray: Ray Data on a Ray cluster (ray_engine/, docs/cluster.md)
ENGINES = ("local", "ray")
# --output's extensions and the format each one names (output/formats.choose_format picks by them)
RESULT_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@dataclass
class PredictOptions:
    paths: list[str]
    model: str | None = None  # None: the width of --weights, else DEFAULT_MODEL (weights.spec_for)
    weights: Path | None = None
    labels: Path | None = None
    device: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    threads: int | None = None
    topk: int = 5  # at least 1; at most the number of classes (more is that many)
    threshold: float = 0.0
    fmt: str = "table"
    output: Path | None = None
    resume: bool = False
    force: bool = False  # --force: replace a non-empty --output FILE (without it, or --resume, exit 2)
    csv_safe: bool = False  # csv: cells that a spreadsheet would run as formulas start with "'"
    recursive: bool = True
    hidden: bool = False
    ext: str | None = None
    null: bool = False
    precision: str = "fp32"
    backend: str = "auto"
    report: Path | None = None
    decode: str = "checked"  # DECODE_MODES: exact (--exact-decode), checked, fast (--fast-decode)
    gpu_decode: bool = False
    decode_in: str = "auto"  # DECODE_IN: auto (processes on CUDA, threads on CPU), threads, processes
    cuda_graphs: bool = True  # CUDA: replay repeated batch shapes from captured graphs (cuda_graphs.py)
    timeout: float = 30.0  # seconds per request for an http(s) input (decode/fetch.py)
    max_download: float = 100.0  # MB: an http(s) input larger than this is an error record, never held
    engine: str = "local"  # ENGINES
    ray_address: str | None = None  # --engine ray: auto or HOST:PORT; None: $RAY_ADDRESS, else a private instance
    # --engine ray: seconds without a record before the run stops (exit 3). An actor's start (a fresh
    # process importing torch and building the model) takes seconds, a GPU node joining an
    # autoscaling cluster minutes.
    ray_timeout: float = 600.0
    timings: bool = False
    progress: bool = True
    quiet: bool = False


def validate(opts: PredictOptions) -> None:
    """Checks for library callers; the CLI's own option types already enforce most of these."""
    if opts.fmt not in FORMATS:
        raise UsageError(f"unknown format {opts.fmt!r}", hint="use " + ", ".join(FORMATS))
    if opts.backend not in BACKENDS:
        raise UsageError(f"unknown backend {opts.backend!r}", hint="use " + ", ".join(BACKENDS))
    if opts.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {opts.precision!r}", hint="use " + ", ".join(PRECISIONS))
    for name, value, least in (
        ("--batch-size", opts.batch_size, 1),
        ("--workers", opts.workers, 0),
        ("--threads", opts.threads, 1),
        ("--topk", opts.topk, 1),
    ):
        if value is not None and value < least:
            raise UsageError(f"{name} must be at least {least}")
    for flag, amount in (
        ("--timeout", opts.timeout),
        ("--max-download", opts.max_download),
        ("--ray-timeout", opts.ray_timeout),
    ):
        if not amount > 0:  # NaN too
            raise UsageError(f"{flag} must be more than 0")
    if not 0.0 <= opts.threshold <= 1.0:
        raise UsageError("--threshold must be between 0 and 1")
    if opts.decode not in DECODE_MODES:
        raise UsageError(f"unknown decode mode {opts.decode!r}", hint="use " + ", ".join(DECODE_MODES))
    if opts.decode_in not in DECODE_IN:
        raise UsageError(f"unknown --decode-in {opts.decode_in!r}", hint="use " + ", ".join(DECODE_IN))
    if opts.csv_safe and opts.fmt != "csv":
        raise UsageError("--csv-safe is for --format csv", hint="leave it out, or write csv")
    if opts.engine not in ENGINES:
        raise UsageError(f"unknown engine {opts.engine!r}", hint="use " + ", ".join(ENGINES))
    if opts.ray_address is not None and opts.engine != "ray":
        raise UsageError("--ray-address is for --engine ray", hint="add --engine ray, or leave out --ray-address")
    if opts.engine == "ray" and opts.gpu_decode:
        raise UsageError("--gpu-decode runs with the local engine", hint="leave out --gpu-decode with --engine ray")
    if opts.gpu_decode and opts.backend == "onnxruntime":
        raise UsageError("--gpu-decode runs with the torch backend", hint="leave out --backend onnxruntime")
    check_output_names(opts)


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names: the same real path, or (both existing) a hard link."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_names(opts: PredictOptions) -> None:
    """Results never go over a picture (`-o *.jpg` in a shell makes the first photo FILE), nor
    --output and --report over each other."""
    named = [(flag, path) for flag, path in (("--output", opts.output), ("--report", opts.report)) if path]
    pictures = image_extensions() if named else frozenset()
    for flag, path in named:
        suffix = Path(path).suffix.lower().lstrip(".")
        if str(path) != "-" and suffix in pictures:
            raise UsageError(
                f"{flag} {path}: its name says it is an image (.{suffix}); results are not written over pictures",
                hint="name it .html" if flag == "--report" else "name it .jsonl, .json or .csv",
            )
    if len(named) == 2 and not all(is_stream(Path(p)) for _, p in named) and _same_file(named[0][1], named[1][1]):
        raise UsageError("--output and --report name the same file", hint="give each its own file")
    if opts.output is not None and not _is_stream(opts.output):
        check_output_format(opts.output, opts.fmt)
        if not (opts.force or opts.resume):
            _check_not_replacing(opts.output)


def _is_stream(path: Path) -> bool:
    """stdout (`-`), /dev/null, a FIFO: read by no one later, so any format fits and nothing is lost."""
    return str(path) == "-" or is_stream(Path(path))


def check_output_format(output: Path, fmt: str) -> None:
    """A file holds what its name says: `-f jsonl -o x.csv` or a table in `report.html` would be
    read, or opened, as something it is not. A table is for the terminal, never for a file."""
    suffix = Path(output).suffix.lower()
    named = RESULT_SUFFIXES.get(suffix)
    names = "name it .jsonl, .json or .csv"
    if fmt == "table" and named is not None:
        raise UsageError(
            f"--format table is for the terminal, not for --output {output}",
            hint=f"leave out --format table ({suffix} writes {named}), or leave out --output",
        )
    if fmt == "table":
        report = " (the HTML page is --report FILE.html)" if suffix in (".html", ".htm") else ""
        raise UsageError(
            f"--output {output}: a table is for the terminal, and {suffix or 'a name without an extension'} "
            "names no results format",
            hint=f"{names}, or give --format jsonl, json or csv{report}",
        )
    if named is not None and named != fmt:
        ours = " or ".join(s for s, f in RESULT_SUFFIXES.items() if f == fmt)
        raise UsageError(
            f"--output {output} is named {suffix}, but --format is {fmt}",
            hint=f"name it {ours}, or give --format {named}",
        )
    if suffix in (".html", ".htm"):
        raise UsageError(
            f"--output {output} is named {suffix}, but --format is {fmt}",
            hint=f"{names}; the HTML page is --report FILE.html",
        )


def _check_not_replacing(output: Path) -> None:
    """Results are not replaced by accident (as git and rsync ask for --force): a non-empty regular
    file stays unless --force says to replace it, or --resume to add to it. An empty file holds nothing
    to lose."""
    try:
        st = os.stat(output)
    except OSError:
        return  # missing (or unreadable: the sink says why)
    if stat.S_ISREG(st.st_mode) and st.st_size > 0:
        raise UsageError(
            f"--output {output} already exists; nothing was written",
            hint="pass --force to replace it, or --resume to add what it lacks (jsonl, csv), or give another file",
        )
