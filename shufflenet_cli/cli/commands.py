"""`shufflenet models`, `download` and `info`: each reads the library and prints, results on stdout."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, List, Optional, TypeVar

import typer
from rich.console import Console, RenderableType

from shufflenet_cli.cli.app import err_console, handled
from shufflenet_cli.models import DEFAULT_MODEL, ModelSpec

T = TypeVar("T")


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


_VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Add the underlying exception to error messages.")]
_DebugOpt = Annotated[bool, typer.Option(help="Also print the traceback of an error (same exit code).")]
_TableOrJsonOpt = Annotated[
    TableOrJson,
    typer.Option(
        "--format", "-f", case_sensitive=False, metavar="[table|json]", help="table for people, json for scripts."
    ),
]


def models(
    fmt: _TableOrJsonOpt = TableOrJson.table,
    verbose: _VerboseOpt = False,
    debug: _DebugOpt = False,
) -> None:
    """List the four widths: parameters, GFLOPs, ImageNet accuracy, file size, and whether the weights are cached.

    The figures are torchvision's own weights metadata. The default width is marked.
    """

    with handled(err_console(), verbose, debug):
        from shufflenet_cli.catalog import model_rows, models_json, render_models_table

        _table_or_json(fmt, model_rows(), models_json, render_models_table)


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
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="With --from: a file that is not torchvision's (your own training, a fine-tune) becomes the "
            "width's default weights for predict, kept apart from torchvision's file. --official goes back.",
        ),
    ] = False,
    official: Annotated[
        bool,
        typer.Option(
            "--official", help="Remove your own default weights of these widths (--force), then fetch torchvision's."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a download progress bar on stderr (only on a terminal).")] = True,
    verbose: _VerboseOpt = False,
    debug: _DebugOpt = False,
) -> None:
    """Fetch weights into torch's cache ahead of time, with torchvision's hash check.

    A file already in the cache is checked the same way, and fetched again where it fails.
    Prints the cached path of each width on stdout, one per line; progress and notes go to stderr.
    Exit codes: 0 all in the cache, 2 usage error or unknown model, 3 a download or check failed.
    """
    err = err_console()

    with handled(err, verbose, debug):
        from shufflenet_cli.errors import UsageError
        from shufflenet_cli.models import MODELS, resolve_model

        if all_ and names:
            raise UsageError("give model names or --all, not both")
        if force and from_ is None:
            raise UsageError("--force is for --from FILE", hint="install your own weights with --from FILE --force")
        if official and from_ is not None:
            raise UsageError("--official and --from do not go together", hint="use one, then the other")
        if from_ is not None:
            if all_ or (names and len(names) > 1):
                raise UsageError("--from FILE copies one width", hint="name at most one model with --from")
            _install(err, from_, resolve_model(names[0]) if names else None, force)
            return
        specs = list(MODELS.values()) if all_ else [resolve_model(n) for n in names or [DEFAULT_MODEL]]
        show = progress and sys.stderr is not None and sys.stderr.isatty()
        for spec in dict.fromkeys(specs):
            _fetch(err, spec, official, show)


def _install(err: Console, source: Path, spec: Optional[ModelSpec], force: bool) -> None:
    """download --from: torchvision's file into the cache; with --force, any file of the width as your own."""
    from shufflenet_cli import weights
    from shufflenet_cli.output.display import clean_text

    shown = clean_text(str(source))
    try:
        spec, path, copied = weights.install_from_file(source, spec)
    except weights.NotOfficial:
        if not force:
            raise
        spec, path = weights.install_own(source, spec)
        err.print(
            f"{spec.key}: installed {shown} as your own default weights (it is not torchvision's file): "
            f"predictions will differ from the official weights'; `shufflenet download {spec.key} --official` "
            "goes back",
            markup=False,
            highlight=False,
        )
        typer.echo(str(path))
        return
    note = f"copied {shown} (sha256 checked)" if copied else "already in the cache; left as it was"
    err.print(f"{spec.key}: {note}", markup=False)
    if (own := weights.own_weights(spec)) is not None:
        err.print(f"{spec.key}: note: your own weights {clean_text(str(own))} stay the default", markup=False)
    typer.echo(str(path))


def _fetch(err: Console, spec: ModelSpec, official: bool, show: bool) -> None:
    """One width into the cache; a cached file is checked as a download is, and fetched again if it fails."""
    from shufflenet_cli import weights
    from shufflenet_cli.output.display import clean_text

    if official and (removed := weights.remove_own(spec)) is not None:
        err.print(f"{spec.key}: removed your own weights {clean_text(str(removed))}", markup=False)
    if not weights.is_cached(spec):
        if not weights.offline():
            err.print(f"{spec.key}: downloading {weights.weights_url(spec)}", markup=False)
        weights.download(spec, progress=show)
        err.print(f"{spec.key}: downloaded (sha256 checked)", markup=False)
    elif (problem := weights.cached_file_problem(spec)) is None:
        err.print(f"{spec.key}: already in the cache (sha256 checked)", markup=False)
    else:
        if not weights.offline():
            err.print(
                f"{spec.key}: the cached file is damaged or not torchvision's ({problem}); "
                f"downloading {weights.weights_url(spec)} again",
                markup=False,
            )
        weights.fetch_again(spec, problem, progress=show)
        err.print(f"{spec.key}: downloaded (sha256 checked)", markup=False)
    if not official and (own := weights.own_weights(spec)) is not None:
        err.print(f"{spec.key}: note: your own weights {clean_text(str(own))} stay the default", markup=False)
    typer.echo(str(weights.cache_path(spec)))


def info(
    fmt: _TableOrJsonOpt = TableOrJson.table,
    verbose: _VerboseOpt = False,
    debug: _DebugOpt = False,
) -> None:
    """Show versions, devices (CPU threads, CUDA), the weights cache and the available backends."""

    with handled(err_console(), verbose, debug):
        from shufflenet_cli.environment import collect_info, info_json, render_info

        _table_or_json(fmt, collect_info(), info_json, render_info)


def _table_or_json(
    fmt: TableOrJson, data: T, as_json: Callable[[T], str], as_table: Callable[[T], RenderableType]
) -> None:
    """Results on stdout: JSON for scripts, or a table for people."""
    if fmt is TableOrJson.json:
        typer.echo(as_json(data))
    else:
        Console(highlight=False).print(as_table(data))
