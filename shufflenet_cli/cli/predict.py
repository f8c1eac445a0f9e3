"""`shufflenet predict`: options in, `runner.predict` called, the summary on stderr, the exit code out.

The runner is imported when the command runs, so `--help` never loads it (nor numpy, nor torch).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from enum import Enum
from pathlib import Path

import typer

from shufflenet_cli import signals
from shufflenet_cli.cli import params
from shufflenet_cli.cli.app import err_console, handled
from shufflenet_cli.options import PredictOptions


def predict(
    ctx: typer.Context,
    paths: params.PathsArg,
    model: params.ModelOpt = None,
    weights: params.WeightsOpt = None,
    labels: params.LabelsOpt = None,
    device: params.DeviceOpt = "auto",
    batch_size: params.BatchSizeOpt = None,
    workers: params.WorkersOpt = None,
    decode_in: params.DecodeInOpt = params.DecodeIn.auto,
    threads: params.ThreadsOpt = None,
    topk: params.TopkOpt = 5,
    threshold: params.ThresholdOpt = 0.0,
    fmt: params.FmtOpt = None,
    json_: params.JsonOpt = False,
    output: params.OutputOpt = None,
    resume: params.ResumeOpt = False,
    force: params.ForceOpt = False,
    csv_safe: params.CsvSafeOpt = False,
    recursive: params.RecursiveOpt = True,
    hidden: params.HiddenOpt = False,
    ext: params.ExtOpt = None,
    null: params.NullOpt = False,
    backend: params.BackendOpt = params.BackendName.auto,
    precision: params.PrecisionOpt = params.Precision.fp32,
    exact_decode: params.ExactDecodeOpt = False,
    fast_decode: params.FastDecodeOpt = False,
    gpu_decode: params.GpuDecodeOpt = False,
    cuda_graphs: params.CudaGraphsOpt = True,
    report: params.ReportOpt = None,
    timeout: params.TimeoutOpt = 30.0,
    max_download: params.MaxDownloadOpt = 100.0,
    engine: params.EngineOpt = params.Engine.local,
    ray_address: params.RayAddressOpt = None,
    ray_timeout: params.RayTimeoutOpt = 600.0,
    timings: params.TimingsOpt = False,
    progress: params.ProgressOpt = True,
    quiet: params.QuietOpt = False,
    verbose: params.VerboseOpt = False,
    debug: params.DebugOpt = False,
) -> None:
    """Classify images and print the top-k ImageNet classes with probabilities.

    Results go to stdout; progress, warnings and errors go to stderr.
    Exit codes: 0 all classified, 1 some inputs failed, 2 usage error or no image found,
    3 model (or --engine ray's cluster) could not be used, 74 results could not be written, 130 interrupted.
    """
    from shufflenet_cli.output.formats import choose_format
    from shufflenet_cli.output.summary import print_summary, print_timings
    from shufflenet_cli.runner import predict as run_predict

    out = None if output is None or output == "-" else Path(output)  # `-`: stdout
    err = err_console()
    with handled(err, verbose, debug):
        chosen_format = choose_format(fmt.value if fmt else None, json_, out)
    opts = _options(ctx, chosen_format, out)
    stdin = sys.stdin.buffer if "-" in paths and sys.stdin is not None else None
    with handled(err, verbose, debug), signals.sigterm_as_ctrl_c():
        outcome = run_predict(opts, stdin=stdin, stderr=err)
    if outcome.interrupted:
        signals.ignore_further()
    if not quiet:
        print_summary(err, outcome)
    if timings:
        print_timings(err, outcome)
    raise typer.Exit(code=outcome.exit_code)


def _options(ctx: typer.Context, fmt: str, output: Path | None) -> PredictOptions:
    """The library's options from the command line's: each option of the same name as given (a
    choice by its value), then the three the command line words differently."""
    given = {name: v.value if isinstance(v, Enum) else v for name, v in ctx.params.items()}
    same = {f.name: given[f.name] for f in fields(PredictOptions) if f.name in given}
    same["paths"] = list(same["paths"])
    decode = _decode_mode(given["exact_decode"], given["fast_decode"])
    return PredictOptions(**{**same, "fmt": fmt, "output": output, "decode": decode})


def _decode_mode(exact: bool, fast: bool) -> str:
    """A mode of preprocess.DRAFT_FACTOR: the default checks its DCT-scaled JPEGs (near_ties.py)."""
    if exact and fast:
        raise typer.BadParameter("give --exact-decode or --fast-decode, not both", param_hint="--fast-decode")
    return "exact" if exact else "fast" if fast else "checked"
