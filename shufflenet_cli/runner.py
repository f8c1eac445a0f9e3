"""`predict` as a library call: options in, records out through a sink, an exit code back.

The CLI parses options into `PredictOptions` and calls `predict`; nothing here imports typer.
Getting the backend ready (torch-free or not) is engine.py's; here: the inputs, resume, the outputs
and report, the batch loop, and the exit code.
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

from shufflenet_cli.engine import Tuning, ready
from shufflenet_cli.engine import default_tuning as default_tuning  # re-exported: benchmarks/bench_cpu.py
from shufflenet_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, UsageError
from shufflenet_cli.inputs.paths import STALL, Input, WalkOptions, image_extensions, iter_inputs, parse_extensions
from shufflenet_cli.models import ModelSpec, resolve_model
from shufflenet_cli.pipeline import Stats
from shufflenet_cli.atomic import is_stream


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
    decode: str = "checked"  # preprocess.DRAFT_FACTOR: exact (--exact-decode), checked, fast (--fast-decode)
    gpu_decode: bool = False
    decode_in: str = "auto"  # auto (processes on CUDA, threads on CPU), threads, processes
    cuda_graphs: bool = True  # CUDA: replay repeated batch shapes from captured graphs (cuda_graphs.py)
    timings: bool = False
    progress: bool = True
    quiet: bool = False


DECODE_IN = ("auto", "threads", "processes")
REPORT_THUMBNAIL = 160  # pixels, longer side, in the HTML report


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
    earlier_failed: int = 0  # --resume: skipped inputs whose record in --output is an error
    skipped: int = 0  # --resume: inputs skipped because --output already has their record


def skip_done(
    inputs: Iterable[Input], done: Counter[str], failed: Counter[str] | None = None, tally: Counter[str] | None = None
) -> Iterator[Input]:
    """--resume: drop as many occurrences of each path as already have a record. `tally["skipped"]`
    counts the dropped ones, `tally["failed"]` those whose record is an error (of a path's records,
    the errors first)."""
    left, left_failed = Counter(), Counter()
    for counts, into in ((done, left), (failed or {}, left_failed)):
        for path, n in counts.items():
            into[_same_path(path)] += n
    for item in inputs:
        key = None if item is STALL else _same_path(item.path)  # STALL: stdin is quiet; never skipped
        if key is not None and left[key] > 0:
            left[key] -= 1
            if tally is not None:
                tally["skipped"] += 1
                if left_failed[key] > 0:
                    left_failed[key] -= 1
                    tally["failed"] += 1
            continue
        yield item


def _same_path(path: str) -> str:
    """One spelling for one path (`./photos/a.jpg` and `photos/a.jpg`), so a resumed run given the
    folder another way still finds what is done. Textual only: absolute and relative do not meet."""
    return os.path.normpath(path) if path else path


def validate(opts: PredictOptions) -> None:
    """Checks for library callers; the CLI's own option types already enforce most of these."""
    from shufflenet_cli.backends.torch_backend import BACKENDS, PRECISIONS
    from shufflenet_cli.output.formats import FORMATS

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
    if opts.decode_in not in DECODE_IN:
        raise UsageError(f"unknown --decode-in {opts.decode_in!r}", hint="use " + ", ".join(DECODE_IN))
    if opts.gpu_decode and opts.backend == "onnxruntime":
        raise UsageError("--gpu-decode runs with the torch backend", hint="leave out --backend onnxruntime")
    _check_output_names(opts)


def _same_file(a: Path, b: Path) -> bool:
    """One file under two names: the same real path, or (both existing) a hard link."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_output_names(opts: PredictOptions) -> None:
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


def predict(
    opts: PredictOptions,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: Console | None = None,
) -> Outcome:
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.output.sinks import Completed, Sink, completed_paths

    err = stderr or Console(stderr=True)
    spec = resolve_model(opts.model)
    validate(opts)
    walk = WalkOptions(
        recursive=opts.recursive,
        hidden=opts.hidden,
        extensions=parse_extensions(opts.ext) if opts.ext else image_extensions(),  # once, for both walks
    )
    inputs: Iterator[Input] = iter_inputs(opts.paths, walk, stdin=stdin, null=opts.null)
    completed = Completed(Counter(), Counter())
    earlier: Counter[str] = Counter()  # --resume's skipped inputs ("skipped"), those with an error record ("failed")
    if opts.resume and opts.output is not None:
        completed = completed_paths(opts.output, opts.fmt)
    done, failed = completed.records, completed.failed
    if done:
        if not opts.quiet:
            errors = f" ({n} of them errors; --resume does not try those again)" if (n := sum(failed.values())) else ""
            err.print(f"resuming: {sum(done.values())} record(s) already in {opts.output}{errors}", highlight=False)
        inputs = skip_done(inputs, done, failed, earlier)
        first = next(inputs, None)
        if first is None:
            if not opts.quiet:
                err.print(f"nothing left to do: every input is already in {opts.output}", highlight=False)
            outcome = Outcome(
                _exit_code(0, earlier["failed"]), Stats(), earlier_failed=earlier["failed"], skipped=earlier["skipped"]
            )
            # the report of this run still appears (empty but for its summary), not an older one left in place
            _close_report(_open_report(opts, spec), outcome)
            return outcome
        inputs = itertools.chain([first], inputs)
    else:
        _, inputs = first_found(inputs)

    thumbs = REPORT_THUMBNAIL if opts.report else None
    prep = Preprocess.from_spec(spec, decode=opts.decode, thumbnail_size=thumbs)
    # Outputs are opened first (an unwritable path fails at once), removed again if anything fails.
    sink = Sink(opts.fmt, opts.output, opts.resume, stdout=stdout, cut_at=completed.cut_at)
    report = _open_report(opts, spec, sink)
    try:
        backend, labels, tuning = ready(spec, opts, prep)
        prepare, gpu, recheck = _decoders(opts, prep, backend)
        # A bar on the terminal that also shows the results would tear through them.
        show_bar = opts.progress and not opts.quiet and not _results_on_terminal(opts, stdout)
        recount = _recount(opts, walk, done)
        stats, interrupted = _loop(
            inputs, prepare, backend, labels, tuning, opts, sink, report, err, show_bar, recount, gpu, recheck
        )
        partial = sink.close(complete=not interrupted)
    except BaseException:
        _abort(sink, report)
        raise
    if partial is not None:
        err.print(
            f"interrupted: {opts.output} left as it was; the records done so far are in {partial}", highlight=False
        )
    code = EXIT_INTERRUPTED if interrupted else _exit_code(stats.failed, earlier["failed"])
    described = backend.describe() + ("; JPEG decode: nvJPEG on the GPU" if gpu is not None else "")
    outcome = Outcome(code, stats, described, tuning, interrupted, earlier["failed"], earlier["skipped"])
    _close_report(report, outcome)
    return outcome


def _exit_code(failed: int, earlier_failed: int) -> int:
    """1 where an input failed, in this run or (--resume) in the one that wrote its record; else 0."""
    return EXIT_SOME_FAILED if failed or earlier_failed else EXIT_OK


def _decoders(opts: PredictOptions, prep, backend):  # type: ignore[no-untyped-def]
    """(what the decode workers run per file, the batch half or None, the exact decode that drafted
    near-ties are redone with or None): `prep` itself, or for --gpu-decode a JpegReader and its
    JpegBatchDecoder on the backend's device (checked by `ready`)."""
    if not opts.gpu_decode:
        return prep, None, prep.exact() if prep.decode == "checked" else None
    from shufflenet_cli.decode.gpu import JpegBatchDecoder, JpegReader

    if prep.decode == "checked":  # the JPEGs that nvJPEG leaves to Pillow: exact, as nvJPEG's are
        prep = prep.exact(thumbnail=True)
    return JpegReader(prep), JpegBatchDecoder(prep, backend.device), None


def _loop(inputs, prepare, backend, labels, tuning, opts, sink, report, err, show_bar, recount, gpu, recheck):  # type: ignore[no-untyped-def]
    """The batches, written as they finish; (stats, interrupted)."""
    from shufflenet_cli import pipeline
    from shufflenet_cli.output.progress import progress_for

    stats = Stats()
    interrupted = False
    try:
        with warnings.catch_warnings(), StopFlag() as stop, progress_for(err, show_bar, recount) as bar:
            warnings.filterwarnings("ignore", module="PIL")  # metadata warnings: the image still counts
            warnings.showwarning = _one_line_for_ours(err, warnings.showwarning)
            for records in pipeline.run(
                inputs,
                prepare,
                backend,
                labels,
                batch_size=tuning.batch_size,
                workers=tuning.workers,
                processes=tuning.processes,
                topk=min(max(opts.topk, 1), 1000),
                threshold=opts.threshold,
                stats=stats,
                should_stop=stop,
                gpu=gpu,
                recheck=recheck,
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
    stats.end()
    return stats, interrupted


def _one_line_for_ours(err: Console, other):  # type: ignore[no-untyped-def]
    """A warnings.showwarning that prints this tool's own warnings as one "warning: ..." line on
    stderr, and leaves any other warning to `other`."""
    from shufflenet_cli.errors import ShufflenetWarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, ShufflenetWarning):
            err.print(f"warning: {message}", highlight=False, markup=False)
        else:
            other(message, category, filename, lineno, file, line)

    return show


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


def _open_report(opts: PredictOptions, spec: ModelSpec, sink=None):  # type: ignore[no-untyped-def]
    if opts.report is None:
        return None
    from shufflenet_cli.output.report import HtmlReport

    try:
        return HtmlReport(opts.report, title=f"shufflenet predict: {spec.arch}")
    except BaseException:
        if sink is not None:
            sink.abort()
        raise


def _close_report(report, outcome: Outcome) -> None:  # type: ignore[no-untyped-def]
    """Write the report's page, with the run's summary at its top."""
    if report is not None:
        from shufflenet_cli.output.summary import summary_line

        report.close(summary_line(outcome))
