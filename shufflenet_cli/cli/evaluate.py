"""`shufflenet evaluate`: accuracy on labelled images, through the same runner as `predict`.

The library is imported when the command runs, so `--help` never loads it (nor numpy, nor torch).
"""

from __future__ import annotations

from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from shufflenet_cli import signals
from shufflenet_cli.cli import params
from shufflenet_cli.cli.app import err_console, handled
from shufflenet_cli.cli.commands import TableOrJson
from shufflenet_cli.options import PredictOptions

DirArg = Annotated[
    Path,
    typer.Argument(
        help="A folder with one subfolder of images per class, named by the class's index (0..999) or label "
        "(Samoyed); with --labels-from, the folder the CSV's paths are relative to.",
        show_default=False,
        metavar="DIR",
    ),
]
LabelsFromOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--labels-from",
        metavar="FILE",
        help="A CSV of `path,label` rows (label: an index or a name) for a flat folder.",
    ),
]
LimitOpt = Annotated[
    Optional[int],
    typer.Option(min=1, metavar="N", help="A quick check: only the first N classes by index.", show_default=False),
]
EvalFormatOpt = Annotated[
    TableOrJson,
    typer.Option(
        "--format",
        "-f",
        case_sensitive=False,
        metavar=params.choices_metavar(tuple(c.value for c in TableOrJson)),
        help="table for people, json (one object) for scripts.",
    ),
]
EvalForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing, non-empty --predictions FILE.")]
PredictionsOpt = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE", help="Also keep every record, as `predict --format jsonl` writes it, in FILE."),
]
EvalReportOpt = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FILE",
        help="Also write an HTML page: the summary, per-class accuracy, thumbnails of wrong answers.",
    ),
]


def evaluate(
    ctx: typer.Context,
    root: DirArg,
    labels_from: LabelsFromOpt = None,
    limit: LimitOpt = None,
    model: params.ModelOpt = None,
    weights: params.WeightsOpt = None,
    labels: params.LabelsOpt = None,
    device: params.DeviceOpt = "auto",
    batch_size: params.BatchSizeOpt = None,
    workers: params.WorkersOpt = None,
    decode_in: params.DecodeInOpt = params.DecodeIn.auto,
    threads: params.ThreadsOpt = None,
    backend: params.BackendOpt = params.BackendName.auto,
    precision: params.PrecisionOpt = params.Precision.fp32,
    exact_decode: params.ExactDecodeOpt = False,
    fast_decode: params.FastDecodeOpt = False,
    gpu_decode: params.GpuDecodeOpt = False,
    cuda_graphs: params.CudaGraphsOpt = True,
    hidden: params.HiddenOpt = False,
    ext: params.ExtOpt = None,
    fmt: EvalFormatOpt = TableOrJson.table,
    predictions: PredictionsOpt = None,
    force: EvalForceOpt = False,
    report: EvalReportOpt = None,
    progress: params.ProgressOpt = True,
    quiet: params.QuietOpt = False,
    verbose: params.VerboseOpt = False,
    debug: params.DebugOpt = False,
) -> None:
    """Measure top-1 and top-5 accuracy on labelled images, beside torchvision's published figures.

    Runs the same pipeline as predict; shows per-class accuracy and the most confused classes.
    Failed files are counted apart, never as wrong answers.
    Exit codes: 0 all classified, 1 some files failed, 2 usage error (a folder or label that names no
    class, or names two), 3 model could not be loaded, 74 results could not be written, 130 interrupted.
    """
    from shufflenet_cli.evaluation.render import evaluation_json, render_evaluation
    from shufflenet_cli.evaluation.report import EvaluationReport
    from shufflenet_cli.evaluation.run import Source
    from shufflenet_cli.evaluation.run import evaluate as run_evaluate
    from shufflenet_cli.output.summary import print_summary

    opts = _options(ctx)
    err = err_console()
    with handled(err, verbose, debug), signals.sigterm_as_ctrl_c():
        page = EvaluationReport(report) if report is not None else None  # an unwritable path fails at once
        try:
            ev = run_evaluate(Source(root, labels_from, limit), opts, predictions, stderr=err)
            if page is not None:
                page.write(ev)
        finally:
            if page is not None:
                page.discard()
    if ev.outcome.interrupted:
        signals.ignore_further()
    with handled(err, verbose, debug):
        if fmt is TableOrJson.json:
            typer.echo(evaluation_json(ev))
        else:
            Console(highlight=False).print(render_evaluation(ev))
    if not quiet:
        print_summary(err, ev.outcome)
        if ev.unlabelled:
            err.print(f"note: {ev.unlabelled} file(s) directly in {root} belong to no class folder; left out")
    raise typer.Exit(code=ev.outcome.exit_code)


def _options(ctx: typer.Context) -> PredictOptions:
    """predict's options from those of the same name (a choice by its value); evaluate's own
    --format and --report are not predict's, and the run sets the paths and the output."""
    given = {name: v.value if isinstance(v, Enum) else v for name, v in ctx.params.items()}
    same = {
        f.name: given[f.name] for f in fields(PredictOptions) if f.name in given and f.name not in ("fmt", "report")
    }
    if given["exact_decode"] and given["fast_decode"]:
        raise typer.BadParameter("give --exact-decode or --fast-decode, not both", param_hint="--fast-decode")
    decode = "exact" if given["exact_decode"] else "fast" if given["fast_decode"] else "checked"
    return PredictOptions(**{**same, "paths": [], "decode": decode})
