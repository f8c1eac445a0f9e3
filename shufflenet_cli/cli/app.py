"""The Typer application, and how every command ends: expected failures become `Error:`/`Hint:`
lines on stderr and their exit code; stdout carries results only.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from typer.core import TyperCommand

from shufflenet_cli import __version__
from shufflenet_cli.errors import ShufflenetError
from shufflenet_cli.output.display import clean_text

if TYPE_CHECKING:
    from typer._click import HelpFormatter, Parameter  # the click that Typer runs on (its own copy since 0.2x)

app = typer.Typer(
    help="Classify images with torchvision's ImageNet-pretrained ShuffleNet v2.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion; the scripts call back with _SHUFFLENET_COMPLETE
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)

EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug


class PlainHelpCommand(TyperCommand):
    """A command whose `--help` names its arguments as click does (`PATHS...`, `[MODEL]...`), where
    Typer writes `{PATHS}...` in the usage line and `PATHS <list[str]>` in the list. Options carry
    their own metavars (params.py); the rest of the help is Typer's."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(_argument_name(param, bracketed=not param.required))
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: typer.Context, formatter: HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                sections["Arguments"].append((_argument_name(param, bracketed=False), record[1]))
            else:
                sections["Options"].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _argument_name(param: Parameter, bracketed: bool) -> str:
    """`PATHS...` for any number, `[MODEL]...` in the usage line where none is needed too."""
    name = param.metavar or (param.name or "").upper()
    name = f"[{name}]" if bracketed else name
    return f"{name}..." if param.nargs != 1 else name


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def fail(err: Console, exc: ShufflenetError, verbose: bool) -> None:
    """One or two plain lines on stderr: what happened, and what to do. A path in them is shown as
    the table shows it (display.clean_text): a newline or an escape sequence in a file name can
    neither forge another line nor drive the terminal."""
    err.print(f"Error: {clean_text(exc.message)}", markup=False)
    if exc.hint:
        err.print(f"Hint: {clean_text(exc.hint)}", markup=False)
    if verbose and exc.__cause__ is not None:
        err.print(f"Cause: {type(exc.__cause__).__name__}: {clean_text(str(exc.__cause__))}", markup=False)


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
        err.print(f"Error: unexpected failure: {type(exc).__name__}: {clean_text(str(exc))}", markup=False)
        if not debug:
            err.print("Hint: run again with --debug for the traceback, and report it", markup=False)
        raise typer.Exit(code=EXIT_INTERNAL) from None


def _print_traceback(err: Console) -> None:
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
