"""The `shufflenet` command line: parse options, call the library, map failures to exit codes.

Only typer and the project's light modules are imported at start-up, so `--help` never loads torch.
`app.py` holds the Typer application and the error handling; each command lives in its own module.
"""

from __future__ import annotations

from shufflenet_cli.cli import commands, evaluate, predict
from shufflenet_cli.cli.app import PlainHelpCommand, app

# The commands, in the order `shufflenet --help` lists them; each with plain argument names in its help.
app.command(cls=PlainHelpCommand)(predict.predict)
app.command(cls=PlainHelpCommand)(evaluate.evaluate)
app.command(cls=PlainHelpCommand)(commands.models)
app.command(cls=PlainHelpCommand)(commands.download)
app.command(cls=PlainHelpCommand)(commands.info)

__all__ = ["app", "main"]


def main() -> None:
    app()
