"""Domain exceptions. The CLI maps each to one message on stderr and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_WRITE = 74  # EX_IOERR: results could not be written part-way through a run
EXIT_INTERRUPTED = 130


class ShufflenetError(Exception):
    """An expected failure: the message is for the user, the exit code for scripts."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(ShufflenetError):
    """Bad options or no input at all (exit 2)."""

    exit_code = EXIT_USAGE


class ModelLoadError(ShufflenetError):
    """Weights missing or unusable, labels that do not fit, device unavailable (exit 3)."""

    exit_code = EXIT_MODEL


class EngineError(ShufflenetError):
    """The Ray engine cannot go on: the cluster cannot be reached or refuses us, lacks what the run
    asks for, or the run made no progress for too long (exit 3, as for a device that is unavailable)."""

    exit_code = EXIT_MODEL


class OutputError(ShufflenetError):
    """--output or --report cannot be opened (exit 2): found before anything is classified."""

    exit_code = EXIT_USAGE


class WriteError(ShufflenetError):
    """Results could not be written during the run: disk full, a closed device (exit 74)."""

    exit_code = EXIT_WRITE


class ShufflenetWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints it as one line."""
