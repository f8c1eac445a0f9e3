"""`predict` as a library call: options in, records out through a sink, an `Outcome` back.

It reads as a recipe: validate -> inputs -> outputs -> the classifier (device, backend, decoders:
api.Classifier) -> loop -> outcome. Each step is one function below; the policies they apply live in
their own modules (options, device, engine, signals, output.resume, atomic). Nothing here imports typer.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

from rich.console import Console

from shufflenet_cli import weights
from shufflenet_cli.api import Classifier, preprocess_for
from shufflenet_cli.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, UsageError
from shufflenet_cli.image_formats import image_extensions, parse_extensions
from shufflenet_cli.inputs.paths import Input, WalkOptions, iter_inputs
from shufflenet_cli.models import ModelSpec
from shufflenet_cli.options import PredictOptions, validate
from shufflenet_cli.outcome import Outcome, Stats
from shufflenet_cli.output.display import clean_text
from shufflenet_cli.output.progress import progress_for
from shufflenet_cli.output.report import HtmlReport
from shufflenet_cli.output.resume import (
    Completed,
    check_inputs_match,
    check_provenance,
    completed_paths,
    provenance,
    skip_done,
)
from shufflenet_cli.output.sinks import Sink
from shufflenet_cli.output.summary import interrupted_note, summary_line
from shufflenet_cli.output.warning_lines import tool_warnings
from shufflenet_cli.records import Record
from shufflenet_cli.signals import StopFlag
from shufflenet_cli.tuning import Tuning, default_tuning

RecordsHook = Callable[[list[Record]], None]  # a caller watching each batch of records as it is written

REPORT_THUMBNAIL = 160  # pixels, longer side, in the HTML report


def predict(
    opts: PredictOptions,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
    stderr: Console | None = None,
    on_records: RecordsHook | None = None,
) -> Outcome:
    """Classify `opts.paths` and write their records; the outcome carries the exit code.
    `on_records` sees each batch of records, in input order, once it is written (`evaluate` counts them)."""
    began = time.perf_counter()  # the summary's time covers the whole command
    err = stderr or Console(stderr=True)
    spec = weights.spec_for(opts.model, opts.weights)  # no -m: the width of --weights, else the default
    validate(opts)
    todo = find_inputs(opts, stdin, err)
    if todo.nothing_left:
        return _nothing_left(opts, spec, todo)
    # outputs first: an unwritable path fails at once; warnings (the engine's too) as one line each
    with Outputs.open(opts, spec, stdout, todo.completed, on_records) as outputs, tool_warnings(err):
        engine = _engine(opts, spec)
        stats, interrupted = loop(todo, engine, opts, outputs, err, _on_terminal(opts, stdout), began)
        partial = outputs.sink.close(complete=not interrupted)
    if partial is not None:
        jsonl = _shown(opts.output.with_suffix(".jsonl")) if opts.output is not None else "results.jsonl"
        err.print(interrupted_note(_shown(opts.output), _shown(partial), jsonl), highlight=False, markup=False)
    code = EXIT_INTERRUPTED if interrupted else _exit_code(stats.failed, todo.earlier["failed"])
    outcome = Outcome(
        code,
        stats,
        engine.describe,
        engine.tuning,
        interrupted,
        todo.earlier["failed"],
        todo.earlier["skipped"],
    )
    outputs.close_report(outcome)
    return outcome


# ------------------------------------------------------------------------------------- inputs


@dataclass
class Todo:
    """The inputs still to classify, and what --resume found already done."""

    inputs: Iterator[Input]
    walk: WalkOptions
    completed: Completed
    earlier: Counter[str] = field(default_factory=Counter)  # --resume: "skipped" inputs, "failed" among them
    nothing_left: bool = False


def find_inputs(opts: PredictOptions, stdin: IO[bytes] | None, err: Console) -> Todo:
    """The inputs, read lazily; with --resume, those FILE holds are skipped. UsageError (exit 2) where
    there is no image at all."""
    walk = WalkOptions(
        recursive=opts.recursive,
        hidden=opts.hidden,
        extensions=parse_extensions(opts.ext) if opts.ext else image_extensions(),  # once, for both walks
    )
    inputs: Iterator[Input] = iter_inputs(opts.paths, walk, stdin=stdin, null=opts.null)
    completed = Completed(Counter(), Counter())
    if opts.resume and opts.output is not None:
        completed = completed_paths(opts.output, opts.fmt, opts.csv_safe)
        check_provenance(opts, completed, err)  # another model, weights, labels, topk: refused
    todo = Todo(inputs, walk, completed)
    done, failed = completed.records, completed.failed
    if not done:
        _, todo.inputs = first_found(inputs, opts.paths)
        return todo
    if not opts.quiet:
        errors = f" ({n} of them errors; --resume does not try those again)" if (n := sum(failed.values())) else ""
        err.print(
            f"resuming: {sum(done.values())} record(s) already in {_shown(opts.output)}{errors}",
            highlight=False,
            markup=False,
        )
    left = skip_done(inputs, done, failed, todo.earlier)
    first = next(left, None)
    check_inputs_match(opts, walk, first, todo.earlier["skipped"], done)  # a resume that matches nothing stops
    if first is None:
        if not opts.quiet:
            err.print(
                f"nothing left to do: every input is already in {_shown(opts.output)}", highlight=False, markup=False
            )
        todo.nothing_left = True
    else:
        todo.inputs = itertools.chain([first], left)
    return todo


def first_found(inputs: Iterator[Input], paths: list[str] | None = None) -> tuple[list[Input], Iterator[Input]]:
    """Read ahead to the first real input; UsageError (exit 2) when there is none at all, naming where
    it looked (`paths`, the arguments)."""
    held: list[Input] = []
    for item in inputs:
        held.append(item)
        if item.error is None:
            return held, itertools.chain(held, inputs)
    if not held:
        where = ", ".join(_shown(Path(p)) if p != "-" else "the paths on stdin" for p in (paths or [])[:3])
        more = f" (and {len(paths) - 3} more)" if paths and len(paths) > 3 else ""
        raise UsageError(
            f"no image files found in {where or 'the given paths'}{more}",
            hint="folders are searched for image extensions (--ext), recursively unless --no-recursive, "
            "skipping hidden names unless --hidden",
        )
    shown = "; ".join(f"{i.path}: {i.error}" for i in held[:5])
    more = f" (and {len(held) - 5} more)" if len(held) > 5 else ""
    raise UsageError(f"no image found: {shown}{more}")


def _nothing_left(opts: PredictOptions, spec: ModelSpec, todo: Todo) -> Outcome:
    """--resume with every input done: the outcome of the earlier records; the report of this run
    still appears (empty but for its summary), not an older one left in place."""
    failed, skipped = todo.earlier["failed"], todo.earlier["skipped"]
    outcome = Outcome(_exit_code(0, failed), Stats(), earlier_failed=failed, skipped=skipped)
    report = _open_report(opts, spec)
    if report is not None:
        report.close(summary_line(outcome))
    return outcome


def _exit_code(failed: int, earlier_failed: int) -> int:
    """1 where an input failed, in this run or (--resume) in the one that wrote its record; else 0."""
    return EXIT_SOME_FAILED if failed or earlier_failed else EXIT_OK


# ------------------------------------------------------------------------------------ outputs


class Outputs:
    """The sink and the optional report, opened before any work and removed again if the run fails."""

    def __init__(self, sink: Sink, report: HtmlReport | None, on_records: RecordsHook | None = None) -> None:
        self.sink, self.report, self.on_records = sink, report, on_records

    @classmethod
    def open(
        cls,
        opts: PredictOptions,
        spec: ModelSpec,
        stdout: IO[bytes] | None,
        completed: Completed,
        on_records: RecordsHook | None = None,
    ) -> Outputs:
        """Each file locked for the run (output/locks.py): a second run on it stops here, with exit 2."""
        sink = Sink(
            opts.fmt,
            opts.output,
            opts.resume,
            stdout=stdout,
            completed=completed,
            csv_safe=opts.csv_safe,
            provenance=provenance(opts),
        )
        try:
            return cls(sink, _open_report(opts, spec), on_records)
        except BaseException:
            sink.abort()
            raise

    def write(self, records: list[Record]) -> None:
        self.sink.write(records)
        if self.report is not None:
            self.report.add(records)
        if self.on_records is not None:  # after the sink: a record is counted once it is out
            self.on_records(records)

    def close_report(self, outcome: Outcome) -> None:
        """Write the report's page, with the run's summary at its top."""
        if self.report is not None:
            self.report.close(summary_line(outcome))

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:  # leave nothing half-written behind
            self.sink.abort()
            if self.report is not None:
                self.report.abort()


def _open_report(opts: PredictOptions, spec: ModelSpec) -> HtmlReport | None:
    if opts.report is None:
        return None
    return HtmlReport(opts.report, title=f"shufflenet predict: {spec.arch}")


# ------------------------------------------------------------------------------------- engine

Batches = Callable[[Iterator[Input], Stats, Callable[[], bool]], Iterator[list[Record]]]


class Engine(NamedTuple):
    """Where the batches are classified: the inputs' batches of records, in input order; the backend
    in words; the batch size, workers and threads, for --timings."""

    batches: Batches
    describe: str
    tuning: Tuning


def _engine(opts: PredictOptions, spec: ModelSpec) -> Engine:
    """--engine local: a Classifier in this process. --engine ray: Ray Data on a cluster (ray_engine/),
    Ray imported only then."""
    thumbnail_size = REPORT_THUMBNAIL if opts.report else None
    if opts.engine == "ray":
        from shufflenet_cli.ray_engine.run import batches as on_ray

        prep = preprocess_for(opts, spec, thumbnail_size)
        return Engine(
            lambda inputs, stats, stop: on_ray(inputs, opts, spec, prep, stats, stop),
            "Ray Data (--engine ray)",
            default_tuning("cpu", opts),
        )
    classifier = Classifier._for_run(opts, spec, thumbnail_size)
    return Engine(
        lambda inputs, stats, stop: classifier._batches(
            inputs, topk=opts.topk, threshold=opts.threshold, stats=stats, should_stop=stop
        ),
        classifier.describe(),
        classifier._tuning,
    )


# --------------------------------------------------------------------------------------- loop


def loop(
    todo: Todo,
    engine: Engine,
    opts: PredictOptions,
    outputs: Outputs,
    err: Console,
    on_terminal: bool,
    began: float | None = None,
) -> tuple[Stats, bool]:
    """The batches, written as they finish; (stats, interrupted). `on_terminal`: the results go to the
    terminal, where progress is a footer line below them; `began`: when `predict` was called."""
    stats = Stats(began=began)
    interrupted = False
    recount = _recount(opts, todo)
    shown = opts.progress and not opts.quiet
    try:
        with StopFlag() as stop, progress_for(err, shown, recount, under_results=on_terminal) as bar:
            batches = engine.batches(todo.inputs, stats, stop)
            for records in batches:
                t0 = time.perf_counter()
                bar.clear()  # the footer's line: the rows go where it stood, and it is drawn again below
                outputs.write(records)
                stats.output_s += time.perf_counter() - t0
                bar.advance(stats)
            interrupted = stop()
    except KeyboardInterrupt:
        interrupted = True
    stats.end()
    return stats, interrupted


def _shown(path: Path | None) -> str:
    """A path as a terminal may show it: control and bidi characters escaped."""
    return clean_text(str(path))


def _on_terminal(opts: PredictOptions, stdout: IO[bytes] | None) -> bool:
    """The results go to a terminal (a bar there would tear through them)."""
    stream = stdout if stdout is not None else sys.stdout
    return opts.output is None and bool(getattr(stream, "isatty", lambda: False)())


def _recount(opts: PredictOptions, todo: Todo) -> Callable[[], Iterable[Input]] | None:
    """A way to count the inputs again for the progress bar's total; None when they come from stdin."""
    if "-" in opts.paths:
        return None
    paths, walk, done = opts.paths, todo.walk, todo.completed.records
    return lambda: skip_done(iter_inputs(paths, walk), done)


__all__ = ["Outcome", "PredictOptions", "predict"]
