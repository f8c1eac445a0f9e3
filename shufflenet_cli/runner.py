"""`predict` as a library call: options in, records out through a sink, an exit code back.

The CLI parses options into `PredictOptions` and calls `predict`; nothing here imports typer.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from rich.console import Console

from shufflenet_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, ModelLoadError, UsageError
from shufflenet_cli.inputs import Input, WalkOptions, image_extensions, iter_inputs, parse_extensions
from shufflenet_cli.models import ModelSpec, resolve_model
from shufflenet_cli.pipeline import Stats


@dataclass
class PredictOptions:
    paths: list[str]
    model: str = "x1_0"
    weights: Path | None = None
    labels: Path | None = None
    device: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    threads: int | None = None
    topk: int = 5
    threshold: float = 0.0
    fmt: str = "table"
    output: Path | None = None
    resume: bool = False
    recursive: bool = True
    hidden: bool = False
    ext: str | None = None
    null: bool = False
    precision: str = "fp32"
    backend: str = "auto"
    report: Path | None = None
    exact_decode: bool = False
    timings: bool = False
    progress: bool = True
    quiet: bool = False


REPORT_THUMBNAIL = 160  # pixels, longer side, in the HTML report


@dataclass
class Tuning:
    batch_size: int
    workers: int
    threads: int


def default_tuning(device_type: str, opts: PredictOptions) -> Tuning:
    """Defaults chosen by measurement (docs/benchmarks.md); every one can be overridden.

    CPU: one decode worker and one inference thread per core. Inference cuts each batch into
    `threads` slices run at once on one intra-op thread each (onnxruntime and torch alike), so the
    decode threads and the inference threads share the cores a batch at a time, never spinning or
    waiting on each other inside a layer; decode workers stop when the read-ahead window is full.
    On 2 cores, x1_0: 2 inference threads (as slices) beat 1, 214 vs 163 images/s; batch 32 (16 per
    slice) tied 16 and beat 64; 1 to 3 workers tie on ImageNet-size JPEGs, and 12-megapixel ones
    need every core to decode (their decode costs 5x the forward pass).
    """
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    cores = max(1, cores)
    if device_type == "cuda":
        batch, workers, threads = 128, min(16, cores), min(4, cores)
    else:
        threads = min(cores, 16)
        workers = min(cores, 16)
        batch = min(256, max(32, 16 * threads))
    return Tuning(
        batch_size=opts.batch_size or batch,
        workers=workers if opts.workers is None else opts.workers,
        threads=opts.threads or threads,
    )


def first_found(inputs: Iterator[Input]) -> tuple[list[Input], Iterator[Input]]:
    """Read ahead to the first real input; UsageError (exit 2) when there is none at all."""
    held: list[Input] = []
    for item in inputs:
        held.append(item)
        if item.error is None:
            return held, itertools.chain(held, inputs)
    if not held:
        raise UsageError("no image files found in the given paths")
    shown = "; ".join(f"{i.path}: {i.error}" for i in held[:5])
    more = f" (and {len(held) - 5} more)" if len(held) > 5 else ""
    raise UsageError(f"no image found: {shown}{more}")


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop stops between batches, so every record written is whole."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]


@dataclass
class Outcome:
    exit_code: int
    stats: Stats
    backend: str = ""
    tuning: Tuning | None = None
    interrupted: bool = False


def load_labels(spec: ModelSpec, labels_path: Path | None, num_classes: int) -> list[str]:
    from shufflenet_cli.labels import imagenet_labels, read_labels

    labels = read_labels(labels_path) if labels_path else imagenet_labels()
    if len(labels) != num_classes:
        source = str(labels_path) if labels_path else "the ImageNet labels"
        raise ModelLoadError(
            f"the weights have {num_classes} classes but {source} has {len(labels)} names",
            hint="pass --labels FILE with one class name per line, one per class",
        )
    return labels


def skip_done(inputs: Iterable[Input], done: Counter[str]) -> Iterator[Input]:
    """--resume: drop as many occurrences of each path as already have a record."""
    left = Counter(done)
    for item in inputs:
        if left[item.path] > 0:
            left[item.path] -= 1
            continue
        yield item


def validate(opts: PredictOptions) -> None:
    """Checks for library callers; the CLI's own option types already enforce most of these."""
    from shufflenet_cli.backends import BACKENDS, PRECISIONS
    from shufflenet_cli.output import FORMATS

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
    ):
        if value is not None and value < least:
            raise UsageError(f"{name} must be at least {least}")
    if not 0.0 <= opts.threshold <= 1.0:
        raise UsageError("--threshold must be between 0 and 1")


def predict(
    opts: PredictOptions,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: Console | None = None,
) -> Outcome:
    from shufflenet_cli.preprocess import Preprocess
    from shufflenet_cli.sinks import Sink, completed_paths

    err = stderr or Console(stderr=True)
    spec = resolve_model(opts.model)
    validate(opts)
    walk = WalkOptions(
        recursive=opts.recursive,
        hidden=opts.hidden,
        extensions=parse_extensions(opts.ext) if opts.ext else image_extensions(),  # once, for both walks
    )
    inputs: Iterator[Input] = iter_inputs(opts.paths, walk, stdin=stdin, null=opts.null)
    done: Counter[str] = Counter()
    if opts.resume and opts.output is not None:
        done = completed_paths(opts.output, opts.fmt)
    if done:
        if not opts.quiet:
            err.print(f"resuming: {sum(done.values())} record(s) already in {opts.output}", highlight=False)
        inputs = skip_done(inputs, done)
        first = next(inputs, None)
        if first is None:
            if not opts.quiet:
                err.print(f"nothing left to do: every input is already in {opts.output}", highlight=False)
            return Outcome(EXIT_OK, Stats())
        inputs = itertools.chain([first], inputs)
    else:
        _, inputs = first_found(inputs)

    thumbs = REPORT_THUMBNAIL if opts.report else None
    prep = Preprocess.from_spec(spec, exact_decode=opts.exact_decode, thumbnail_size=thumbs)
    # Outputs are opened first (an unwritable path fails at once), removed again if anything fails.
    sink = Sink(opts.fmt, opts.output, opts.resume, stdout=stdout)
    report = _open_report(opts, spec, sink)
    try:
        fast = _torch_free_backend(spec, opts, prep)
        if fast is not None:
            backend, labels, tuning = fast
        else:
            model, device, labels, source_sha = _load(spec, opts)
            tuning = default_tuning(device.type, opts)
            backend = _backend(model, device, prep, opts, tuning)
            _record_checked_export(spec, backend, source_sha, model)
        # A bar on the terminal that also shows the results would tear through them.
        show_bar = opts.progress and not opts.quiet and not _results_on_terminal(opts, stdout)
        recount = _recount(opts, walk, done)
        stats, interrupted = _loop(inputs, prep, backend, labels, tuning, opts, sink, report, err, show_bar, recount)
        partial = sink.close(complete=not interrupted)
    except BaseException:
        _abort(sink, report)
        raise
    if partial is not None:
        err.print(
            f"interrupted: {opts.output} left as it was; the records done so far are in {partial}", highlight=False
        )
    if interrupted:
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_SOME_FAILED if stats.failed else EXIT_OK
    outcome = Outcome(code, stats, backend.describe(), tuning, interrupted)
    if report is not None:
        from shufflenet_cli.summary import summary_line

        report.close(summary_line(outcome))
    return outcome


def _loop(inputs, prep, backend, labels, tuning, opts, sink, report, err, show_bar, recount):  # type: ignore[no-untyped-def]
    """The batches, written as they finish; (stats, interrupted)."""
    from shufflenet_cli import pipeline
    from shufflenet_cli.progress import progress_for

    stats = Stats()
    interrupted = False
    try:
        with warnings.catch_warnings(), StopFlag() as stop, progress_for(err, show_bar, recount) as bar:
            warnings.filterwarnings("ignore", module="PIL")  # metadata warnings: the image still counts
            for records in pipeline.run(
                inputs,
                prep,
                backend,
                labels,
                batch_size=tuning.batch_size,
                workers=tuning.workers,
                topk=min(max(opts.topk, 1), 1000),
                threshold=opts.threshold,
                stats=stats,
                should_stop=stop,
            ):
                t0 = time.perf_counter()
                sink.write(records)
                if report is not None:
                    report.add(records)
                stats.output_s += time.perf_counter() - t0
                bar.advance(stats)
            interrupted = stop()
    except KeyboardInterrupt:
        interrupted = True
    return stats, interrupted


def _results_on_terminal(opts: PredictOptions, stdout: IO[bytes] | None) -> bool:
    stream = stdout if stdout is not None else sys.stdout
    return opts.output is None and bool(getattr(stream, "isatty", lambda: False)())


def _recount(opts: PredictOptions, walk: WalkOptions, done: Counter[str]):  # type: ignore[no-untyped-def]
    """A way to count the inputs again for the progress bar's total; None when they come from stdin."""
    if "-" in opts.paths:
        return None
    return lambda: skip_done(iter_inputs(opts.paths, walk), done)


def _abort(sink, report) -> None:  # type: ignore[no-untyped-def]
    sink.abort()
    if report is not None:
        report.abort()


def _open_report(opts: PredictOptions, spec: ModelSpec, sink):  # type: ignore[no-untyped-def]
    if opts.report is None:
        return None
    from shufflenet_cli.report import HtmlReport

    try:
        return HtmlReport(opts.report, title=f"shufflenet predict: {spec.arch}")
    except BaseException:
        sink.abort()
        raise


def _load(spec: ModelSpec, opts: PredictOptions):  # type: ignore[no-untyped-def]
    """(model, device, labels, sha256 of torchvision's cached weights file or None)."""
    from shufflenet_cli.weights import download, load_model, resolve_device, sha256_file

    device = resolve_device(opts.device)
    source_sha = None
    if _onnx_candidate(opts) and device.type == "cpu":  # hashed before loading: the sidecar names its source
        source_sha = sha256_file(download(spec, progress=False))
    model = load_model(spec, opts.weights)
    labels = load_labels(spec, opts.labels, int(model.fc.out_features))
    return model, device, labels, source_sha


def _onnx_candidate(opts: PredictOptions) -> bool:
    """Options under which onnxruntime may run torchvision's cached weights file: those the
    torch-free path serves (fp32, no --weights; auto or onnxruntime)."""
    return opts.weights is None and opts.precision == "fp32" and opts.backend in ("auto", "onnxruntime")


def gpu_may_be_visible() -> bool:
    """Whether a GPU that torch could use as `cuda` may be here, decided without importing torch:
    False only when CUDA_VISIBLE_DEVICES hides every device ("" or "-1"), or when there is no NVIDIA
    device node (/dev/nvidia0...), no NVIDIA driver (/proc/driver/nvidia), no ROCm (/dev/kfd) and no
    WSL GPU (/dev/dxg). Errs towards True: then torch decides, as it always did."""
    import glob

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(
        glob.glob("/dev/nvidia[0-9]*")
        or os.path.exists("/proc/driver/nvidia")
        or os.path.exists("/dev/kfd")
        or os.path.exists("/dev/dxg")
    )


def _cpu_without_torch(device: str) -> bool:
    """The device is the CPU, known without importing torch: `--device cpu`, or `auto` where no GPU can
    be visible (`gpu_may_be_visible`; where torch is already imported, torch.cuda decides). `auto`
    with a GPU present never takes the torch-free path, so it never runs on the CPU by mistake."""
    name = device.strip().lower()
    if name == "cpu":
        return True
    if name != "auto":
        return False
    if "torch" in sys.modules:
        import torch

        return not torch.cuda.is_available()
    return not gpu_may_be_visible()


def _weights_file_without_torch(spec: ModelSpec) -> Path:
    if "torch" in sys.modules:  # a library caller may have moved the hub folder (torch.hub.set_dir)
        from shufflenet_cli.weights import cache_dir

        return cache_dir() / spec.weights_file
    from shufflenet_cli.weights import cached_file_without_torch

    return cached_file_without_torch(spec)


def _torch_free_backend(spec: ModelSpec, opts: PredictOptions, prep):  # type: ignore[no-untyped-def]
    """(backend, labels, tuning) from a checked ONNX export of torchvision's cached weights file,
    found by the file's sha256, without importing torch or torchvision; None where it does not apply
    (then the usual path runs: it loads the model, exports and checks as needed)."""
    if not _onnx_candidate(opts) or not _cpu_without_torch(opts.device):
        return None
    from shufflenet_cli import onnx_backend
    from shufflenet_cli.weights import sha256_file

    if not onnx_backend.available():
        return None
    weights_file = _weights_file_without_torch(spec)
    try:
        digest = sha256_file(weights_file)
    except OSError:
        return None
    folders = [weights_file.parent, onnx_backend._user_cache_dir()]
    found = onnx_backend.find_checked_export(spec.arch, digest, folders)
    if found is None:
        return None
    onnx_file, num_classes = found
    labels = load_labels(spec, opts.labels, num_classes)
    tuning = default_tuning("cpu", opts)
    try:
        backend = onnx_backend.OnnxBackend(
            None, onnx_backend.CpuDevice(), prep.mean, prep.std, prep.crop, threads=tuning.threads, onnx_file=onnx_file
        )
    except Exception:  # noqa: BLE001 - a damaged file: the usual path exports it again
        return None
    return backend, labels, tuning


def _record_checked_export(spec: ModelSpec, backend, source_sha: str | None, model) -> None:  # type: ignore[no-untyped-def]
    """After the usual path opened or exported (and checked) an ONNX file for torchvision's cached
    weights, write the sidecar that lets the next run find it without torch."""
    from shufflenet_cli.onnx_backend import OnnxBackend, write_sidecar
    from shufflenet_cli.weights import cache_path, sha256_file

    if source_sha is None or not isinstance(backend, OnnxBackend) or backend.cache_path is None:
        return
    try:
        if sha256_file(cache_path(spec)) != source_sha:  # replaced while it was loading
            return
    except OSError:
        return
    write_sidecar(backend.cache_path, spec.arch, source_sha, int(model.fc.out_features))


def _backend(model, device, prep, opts: PredictOptions, tuning: Tuning):  # type: ignore[no-untyped-def]
    import torch

    from shufflenet_cli.backends import make_backend

    if device.type == "cpu":
        torch.set_num_threads(tuning.threads)
    return make_backend(
        opts.backend, model, device, prep, opts.precision, threads=tuning.threads, weights_path=opts.weights
    )
