"""The `shufflenet` command line: parse options, call the library, map failures to exit codes.

Only typer and the project's light modules are imported at start-up, so `--help` never loads torch.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Iterator, List, Optional

import typer
from rich.console import Console

from shufflenet_cli import __version__, signals
from shufflenet_cli.errors import ShufflenetError
from shufflenet_cli.models import DEFAULT_MODEL
from shufflenet_cli.options import BACKENDS, DECODE_IN, FORMATS, PRECISIONS, PredictOptions

app = typer.Typer(
    help="Classify images with torchvision's ImageNet-pretrained ShuffleNet v2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)

EXIT_INTERNAL = 70


def _choices(name: str, values: tuple[str, ...]) -> Any:
    """A Typer choice type made from one of options.py's lists, so a choice is named in one place."""
    return Enum(name, {v: v for v in values}, type=str)


Format = _choices("Format", FORMATS)
BackendName = _choices("BackendName", BACKENDS)
DecodeIn = _choices("DecodeIn", DECODE_IN)
Precision = _choices("Precision", PRECISIONS)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(err: Console, exc: ShufflenetError, verbose: bool) -> None:
    """One or two plain lines on stderr: what happened, and what to do."""
    err.print(f"Error: {exc.message}", markup=False)
    if exc.hint:
        err.print(f"Hint: {exc.hint}", markup=False)
    if verbose and exc.__cause__ is not None:
        err.print(f"Cause: {type(exc.__cause__).__name__}: {exc.__cause__}", markup=False)


@contextmanager
def handled(err: Console, verbose: bool, debug: bool) -> Iterator[None]:
    """Expected failures become `Error:`/`Hint:` lines and their exit code; --debug prints the
    traceback before them (the exit code stays the same: a script's checks do not change with it)."""
    try:
        yield
    except typer.Exit:
        raise
    except ShufflenetError as exc:
        if debug:
            _print_traceback(err)
        fail(err, exc, verbose or debug)
        raise typer.Exit(code=exc.exit_code) from None
    except BrokenPipeError:
        raise typer.Exit(code=0) from None
    except Exception as exc:  # noqa: BLE001
        if debug:
            _print_traceback(err)
        err.print(f"Error: unexpected failure: {type(exc).__name__}: {exc}", markup=False)
        if not debug:
            err.print("Hint: run again with --debug for the traceback, and report it", markup=False)
        raise typer.Exit(code=EXIT_INTERNAL) from None


def _print_traceback(err: Console) -> None:
    import traceback

    err.print(traceback.format_exc(), markup=False, end="")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shufflenet {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Classify images with torchvision's ImageNet-pretrained ShuffleNet v2."""


@app.command()
def predict(
    paths: Annotated[
        List[str],
        typer.Argument(
            help="Image files, directories (searched recursively), quoted glob patterns "
            "('photos/**/*.jpg'), or - to read paths from stdin, one per line.",
            show_default=False,
            metavar="PATHS",
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Width: x0_5, x1_0, x1_5 or x2_0 (or shufflenet_v2_x1_0).")
    ] = DEFAULT_MODEL,
    weights: Annotated[
        Optional[Path],
        typer.Option(help="Local weights file (a state dict; loaded with weights_only=True) instead of the cache."),
    ] = None,
    labels: Annotated[
        Optional[Path], typer.Option(help="Class names, one per line, for --weights with a different classifier.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (cuda if available, else cpu), cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch-size",
            "-b",
            min=1,
            help="Images per forward pass [default: CPU 16 per thread, at least 32; CUDA 128].",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            "-j",
            min=0,
            help="Decode workers running ahead of inference; 0 decodes inline [default: number of cores, up to 16].",
            show_default=False,
        ),
    ] = None,
    decode_in: Annotated[
        DecodeIn,
        typer.Option(help="Decode workers are threads or processes. auto: processes on CUDA, threads on CPU."),
    ] = DecodeIn.auto,
    threads: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="CPU inference threads: each batch is cut into this many slices run at once "
            "[default: number of cores, up to 16]. On CUDA: the backend's CPU threads [default: 1].",
            show_default=False,
        ),
    ] = None,
    topk: Annotated[int, typer.Option("--topk", "-k", help="Predictions per image (clamped to 1..1000).")] = 5,
    threshold: Annotated[float, typer.Option(help="Drop predictions with a probability under this (0..1).")] = 0.0,
    fmt: Annotated[
        Optional[Format],
        typer.Option(
            "--format",
            "-f",
            help="Output format [default: from --output's extension (.json, .jsonl, .csv), else table].",
            show_default=False,
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Shorthand for --format json.")] = False,
    output: Annotated[
        Optional[str],  # a str: `-o -` is stdout, `-o ./-` a file named '-'
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write results to FILE (json: atomically; jsonl/csv: appended as they come); `-` is stdout.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="With --output FILE (jsonl or csv): skip inputs already in FILE. Their error records are "
            "not tried again, and still make the exit code 1. csv: the file's last record is always done again "
            "(a killed run may have cut it between its rows)."
        ),
    ] = False,
    recursive: Annotated[bool, typer.Option(help="Search directories recursively.")] = True,
    hidden: Annotated[bool, typer.Option(help="Include hidden files and folders (names starting with '.').")] = False,
    ext: Annotated[
        Optional[str],
        typer.Option(
            help="Only these extensions from directories, e.g. jpg,png [default: all Pillow opens].", show_default=False
        ),
    ] = None,
    null: Annotated[
        bool, typer.Option("--null", "-0", help="With -: paths on stdin are NUL-separated (find -print0).")
    ] = False,
    backend: Annotated[
        BackendName,
        typer.Option(help="Inference engine. auto: onnxruntime on CPU at fp32 where installed, else torch."),
    ] = BackendName.auto,
    precision: Annotated[
        Precision, typer.Option(help="Inference precision (fp16/bf16 use autocast).")
    ] = Precision.fp32,
    exact_decode: Annotated[
        bool,
        typer.Option(
            "--exact-decode",
            help="Decode every image at full size: the weights' own preprocessing, byte for byte. By default a "
            "JPEG with a shorter side of at least 8x the resize size (2,048 px; 1,856 for x1_5 and x2_0) is decoded "
            "at a reduced DCT scale, which is faster on big photos, and decoded again at full size when its top "
            "two classes come out close, so that its top-1 class is the full decode's (probabilities may differ "
            "in the second or third decimal). Measurements: docs/decoding.md.",
        ),
    ] = False,
    fast_decode: Annotated[
        bool,
        typer.Option(
            "--fast-decode",
            help="Decode JPEGs with a shorter side of at least 4x the resize size (1,024 px; 928 for x1_5 and "
            "x2_0) at a reduced DCT scale (never below twice "
            "the resize size), and never again at full size: faster still, but on some photos top-1 differs "
            "from the full decode's (near-ties). Measurements: docs/decoding.md.",
        ),
    ] = False,
    gpu_decode: Annotated[
        bool,
        typer.Option(
            help="CUDA only: decode JPEGs in batches on the GPU (nvJPEG), resize and crop there; "
            "other files still decode on the CPU."
        ),
    ] = False,
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            help="CUDA, torch backend: from the second batch of a size on, replay the inference step from a "
            "captured CUDA graph (one launch per batch; the same kernels and results)."
        ),
    ] = True,
    report: Annotated[
        Optional[Path],
        typer.Option(help="Also write a self-contained HTML report (thumbnails and bar charts) to FILE."),
    ] = None,
    timings: Annotated[bool, typer.Option(help="Print throughput and per-stage timings on stderr.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr (only on a terminal).")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary on stderr.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Add the underlying exception to error messages.")
    ] = False,
    debug: Annotated[bool, typer.Option(help="Also print the traceback of an error (same exit code).")] = False,
) -> None:
    """Classify images and print the top-k ImageNet classes with probabilities.

    Results go to stdout; progress, warnings and errors go to stderr.
    Exit codes: 0 all classified, 1 some inputs failed, 2 usage error or no image found,
    3 model could not be loaded, 74 results could not be written, 130 interrupted.
    """
    from shufflenet_cli.output.formats import choose_format
    from shufflenet_cli.output.summary import print_summary, print_timings
    from shufflenet_cli.runner import predict as run_predict

    out = None if output is None or output == "-" else Path(output)  # `-`: stdout
    err = _err_console()
    with handled(err, verbose, debug):
        chosen_format = choose_format(fmt.value if fmt else None, json_, out)
    opts = PredictOptions(
        paths=paths,
        model=model,
        weights=weights,
        labels=labels,
        device=device,
        batch_size=batch_size,
        workers=workers,
        threads=threads,
        topk=topk,
        threshold=threshold,
        fmt=chosen_format,
        output=out,
        resume=resume,
        recursive=recursive,
        hidden=hidden,
        ext=ext,
        null=null,
        precision=precision.value,
        backend=backend.value,
        report=report,
        decode=_decode_mode(exact_decode, fast_decode),
        gpu_decode=gpu_decode,
        cuda_graphs=cuda_graphs,
        decode_in=decode_in.value,
        timings=timings,
        progress=progress,
        quiet=quiet,
    )
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


def _decode_mode(exact: bool, fast: bool) -> str:
    """A mode of preprocess.DRAFT_FACTOR: the default checks its DCT-scaled JPEGs (near_ties.py)."""
    if exact and fast:
        raise typer.BadParameter("give --exact-decode or --fast-decode, not both", param_hint="--fast-decode")
    return "exact" if exact else "fast" if fast else "checked"


# --- models, download, info ---------------------------------------------------------------------


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


_VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Add the underlying exception to error messages.")]
_DebugOpt = Annotated[bool, typer.Option(help="Also print the traceback of an error (same exit code).")]
_TableOrJsonOpt = Annotated[TableOrJson, typer.Option("--format", "-f", help="table for people, json for scripts.")]


@app.command()
def models(
    fmt: _TableOrJsonOpt = TableOrJson.table,
    verbose: _VerboseOpt = False,
    debug: _DebugOpt = False,
) -> None:
    """List the four widths: parameters, GFLOPs, ImageNet accuracy, file size, and whether the weights are cached.

    The figures are torchvision's own weights metadata. The default width is marked.
    """

    with handled(_err_console(), verbose, debug):
        from shufflenet_cli.catalog import model_rows, models_json, render_models_table

        rows = model_rows()
        if fmt is TableOrJson.json:
            typer.echo(models_json(rows))
        else:
            Console(highlight=False).print(render_models_table(rows))


@app.command()
def download(
    names: Annotated[
        Optional[List[str]],
        typer.Argument(
            metavar="MODEL",
            help=f"Widths to fetch: x0_5, x1_0, x1_5, x2_0 "
            f"[default: {DEFAULT_MODEL}; with --from: the width in the file].",
            show_default=False,
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Fetch all four widths.")] = False,
    from_: Annotated[
        Optional[Path],
        typer.Option(
            "--from",
            metavar="FILE",
            help="Copy this local weights file into the cache instead of downloading, after checking its sha256 "
            "against the prefix in torchvision's file name (for machines without internet).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a download progress bar on stderr (only on a terminal).")] = True,
    verbose: _VerboseOpt = False,
    debug: _DebugOpt = False,
) -> None:
    """Fetch weights into torch's cache ahead of time, with torchvision's hash check.

    Prints the cached path of each width on stdout, one per line; progress and notes go to stderr.
    Exit codes: 0 all in the cache, 2 usage error or unknown model, 3 a download or check failed.
    """
    err = _err_console()

    with handled(err, verbose, debug):
        from shufflenet_cli import weights
        from shufflenet_cli.errors import UsageError
        from shufflenet_cli.models import MODELS, resolve_model

        if all_ and names:
            raise UsageError("give model names or --all, not both")
        if from_ is not None:
            if all_ or (names and len(names) > 1):
                raise UsageError("--from FILE copies one width", hint="name at most one model with --from")
            spec = resolve_model(names[0]) if names else None
            spec, path, copied = weights.install_from_file(from_, spec)
            note = f"copied {from_} (sha256 checked)" if copied else "already in the cache; left as it was"
            err.print(f"{spec.key}: {note}", markup=False)
            typer.echo(str(path))
            return
        specs = list(MODELS.values()) if all_ else [resolve_model(n) for n in names or [DEFAULT_MODEL]]
        show = progress and sys.stderr is not None and sys.stderr.isatty()
        for spec in dict.fromkeys(specs):
            if weights.is_cached(spec):
                err.print(f"{spec.key}: already in the cache", markup=False)
            else:
                if not weights.offline():
                    err.print(f"{spec.key}: downloading {weights.weights_url(spec)}", markup=False)
                weights.download(spec, progress=show)
                err.print(f"{spec.key}: downloaded (sha256 checked)", markup=False)
            typer.echo(str(weights.cache_path(spec)))


@app.command()
def info(
    fmt: _TableOrJsonOpt = TableOrJson.table,
    verbose: _VerboseOpt = False,
    debug: _DebugOpt = False,
) -> None:
    """Show versions, devices (CPU threads, CUDA), the weights cache and the available backends."""

    with handled(_err_console(), verbose, debug):
        from shufflenet_cli.environment import collect_info, info_json, render_info

        data = collect_info()
        if fmt is TableOrJson.json:
            typer.echo(info_json(data))
        else:
            Console(highlight=False).print(render_info(data))


def main() -> None:
    app()
