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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from rich.console import Console

from shufflenet_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, ModelLoadError, UsageError
from shufflenet_cli.inputs import Input, WalkOptions, iter_inputs, parse_extensions
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
    """Defaults chosen by measurement (docs/benchmarks.md); every one can be overridden."""
    cores = os.cpu_count() or 1
    if device_type == "cuda":
        batch, workers, threads = 128, min(16, cores), min(4, cores)
    else:
        batch, workers, threads = 32, min(4, cores), cores
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
    notes: list[str] = field(default_factory=list)


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


def predict(
    opts: PredictOptions,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: Console | None = None,
) -> Outcome:
    from shufflenet_cli.sinks import Sink, completed_paths

    err = stderr or Console(stderr=True)
    spec = resolve_model(opts.model)
    if opts.fmt not in ("table", "json", "jsonl", "csv"):
        raise UsageError(f"unknown format {opts.fmt!r}", hint="use table, json, jsonl or csv")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if opts.precision not in ("fp32", "fp16", "bf16"):
        raise UsageError(f"unknown precision {opts.precision!r}", hint="use fp32, fp16 or bf16")
    if not 0.0 <= opts.threshold <= 1.0:
        raise UsageError("--threshold must be between 0 and 1")
    topk = min(max(opts.topk, 1), 1000)
    walk = WalkOptions(
        recursive=opts.recursive,
        hidden=opts.hidden,
        extensions=parse_extensions(opts.ext) if opts.ext else None,
    )
    inputs: Iterator[Input] = iter_inputs(opts.paths, walk, stdin=stdin, null=opts.null)
    done: set[str] = set()
    if opts.resume and opts.output is not None:
        done = completed_paths(opts.output, opts.fmt)
        inputs = (i for i in inputs if i.path not in done)
        if done and not opts.quiet:
            err.print(f"resuming: {len(done)} input(s) already in {opts.output} are skipped", highlight=False)
    try:
        _, inputs = first_found(inputs)
    except UsageError:
        if not done:
            raise
        if not opts.quiet:
            err.print(f"nothing left to do: every input is already in {opts.output}", highlight=False)
        return Outcome(EXIT_OK, Stats())

    from shufflenet_cli.preprocess import Preprocess

    thumbs = REPORT_THUMBNAIL if opts.report else None
    prep = Preprocess.from_weights(spec.weights(), exact_decode=opts.exact_decode, thumbnail_size=thumbs)
    # Outputs are opened first (an unwritable path fails at once), removed again if the model fails.
    sink = Sink(opts.fmt, opts.output, opts.resume, stdout=stdout)
    report = _open_report(opts, spec, sink)
    try:
        model, device, labels = _load(spec, opts)
        tuning = default_tuning(device.type, opts)
        backend = _backend(model, device, prep, opts, tuning)
    except BaseException:
        _abort(sink, report)
        raise

    from shufflenet_cli import pipeline
    from shufflenet_cli.progress import progress_for

    stats = Stats()
    interrupted = False
    try:
        show_bar = opts.progress and not opts.quiet
        with warnings.catch_warnings(), StopFlag() as stop, progress_for(err, show_bar, _recount(opts, walk, done)) as bar:
            warnings.filterwarnings("ignore", module="PIL")  # metadata warnings: the image still counts
            for records in pipeline.run(
                inputs,
                prep,
                backend,
                labels,
                batch_size=tuning.batch_size,
                workers=tuning.workers,
                topk=topk,
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
    except BaseException:
        _abort(sink, report)
        raise
    sink.close()
    if interrupted:
        code = EXIT_INTERRUPTED
    else:
        code = EXIT_SOME_FAILED if stats.failed else EXIT_OK
    outcome = Outcome(code, stats, backend.describe(), tuning, interrupted)
    if report is not None:
        from shufflenet_cli.summary import summary_line

        report.close(summary_line(outcome))
    return outcome


def _recount(opts: PredictOptions, walk: WalkOptions, skip: set[str]):  # type: ignore[no-untyped-def]
    """A way to count the inputs again for the progress bar's total; None when they come from stdin."""
    if "-" in opts.paths:
        return None
    return lambda: (i for i in iter_inputs(opts.paths, walk) if i.path not in skip)


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
    from shufflenet_cli.weights import load_model, resolve_device

    device = resolve_device(opts.device)
    model = load_model(spec, opts.weights)
    labels = load_labels(spec, opts.labels, int(model.fc.out_features))
    return model, device, labels


def _backend(model, device, prep, opts: PredictOptions, tuning: Tuning):  # type: ignore[no-untyped-def]
    import torch

    from shufflenet_cli.backends import make_backend

    if device.type == "cpu":
        torch.set_num_threads(tuning.threads)
    return make_backend(opts.backend, model, device, prep, opts.precision)
