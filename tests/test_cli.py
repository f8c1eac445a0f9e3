"""The command line's own surface: `-h`, shell completion, choices in any case, `--topk`'s range,
plain metavars in `--help`, `--force`. Nothing here loads a model: the library's entry points are
replaced by fakes that record what the command line handed them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from shufflenet_cli.cli import app
from shufflenet_cli.options import PredictOptions

COMMANDS = ["predict", "evaluate", "models", "download", "info"]


def _invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), prog_name="shufflenet", env=env, terminal_width=100)


def _help(*command: str) -> str:
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def seen(monkeypatch) -> list[PredictOptions]:
    """runner.predict replaced: the options `predict` built, and an outcome with nothing in it."""
    from shufflenet_cli import runner
    from shufflenet_cli.outcome import Outcome, Stats

    calls: list[PredictOptions] = []

    def capture(opts, **kwargs):
        calls.append(opts)
        return Outcome(0, Stats())

    monkeypatch.setattr(runner, "predict", capture)
    return calls


# ---------------------------------------------------------------------------------------------- -h


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["shufflenet", *COMMANDS])
def test_dash_h_is_help_everywhere(command):
    result = _invoke(*command, "-h")
    assert result.exit_code == 0, result.output
    assert result.stdout == _help(*command)
    assert "-h, --help" in result.stdout


def test_no_option_of_any_command_takes_dash_h():
    from typer.main import get_command

    group = get_command(app)
    for name, command in [("shufflenet", group), *group.commands.items()]:
        taken = [p.name for p in command.params if "-h" in getattr(p, "opts", [])]
        assert taken == [], f"{name}: -h is taken by {taken}"


# ------------------------------------------------------------------------------------ completion


def test_show_completion_prints_the_bash_script(monkeypatch):
    # Typer detects the user's shell for --show-completion; this switch of Typer's (read when the
    # command is built, so not through CliRunner's env) makes it take the shell as its value instead:
    # the test does not depend on the shell, if any, that runs pytest.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = _invoke("--show-completion", "bash")
    assert result.exit_code == 0, result.output
    assert "_SHUFFLENET_COMPLETE=complete_bash" in result.stdout
    assert "complete -o default -F _shufflenet_completion shufflenet" in result.stdout


def test_root_help_offers_completion():
    shown = _help()
    assert "--install-completion" in shown
    assert "--show-completion" in shown


def test_the_installed_command_prints_its_bash_script():
    """`_SHUFFLENET_COMPLETE=source_bash shufflenet`: the script for a named shell, as the docs show."""
    exe = Path(sys.executable).with_name("shufflenet")
    if not exe.exists():
        pytest.skip("the shufflenet console script is not installed next to this Python")
    env = {**os.environ, "_SHUFFLENET_COMPLETE": "source_bash"}
    done = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "_SHUFFLENET_COMPLETE=complete_bash" in done.stdout
    assert "complete -o default -F _shufflenet_completion shufflenet" in done.stdout


# The CLI run in a child Python as the `shufflenet` script runs it, then a report of whether torch was
# imported: completion runs on every Tab press and must stay as light as --help.
_COMPLETE_IN_A_CHILD = """
import sys
sys.argv = ["shufflenet"]
from shufflenet_cli.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("torch imported\\n" if "torch" in sys.modules else "torch not imported\\n")
"""


def _complete(words: str) -> subprocess.CompletedProcess[str]:
    split = words.split(" ")
    env = {
        **os.environ,
        "_SHUFFLENET_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(split) - 1),
    }
    return subprocess.run(
        [sys.executable, "-c", _COMPLETE_IN_A_CHILD], env=env, capture_output=True, text=True, timeout=120
    )


def test_completion_offers_options_without_importing_torch():
    done = _complete("shufflenet predict --for")
    assert done.returncode == 0, done.stderr
    assert "--format" in done.stdout.split()
    assert done.stderr.strip().splitlines()[-1] == "torch not imported"


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        ("shufflenet pre", ["predict"]),
        ("shufflenet predict --format js", ["json", "jsonl"]),
        ("shufflenet predict --format JS", ["json", "jsonl"]),
        ("shufflenet evaluate --backend o", ["onnxruntime"]),
    ],
)
def test_completion_offers_commands_and_choices(words, offered):
    done = _complete(words)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == offered


# ------------------------------------------------------------------------------ choices, any case


def test_predict_choices_in_any_case(seen):
    args = ["a.jpg", "-f", "JSON", "--backend", "ONNXRUNTIME", "--precision", "FP16", "--decode-in", "Threads"]
    result = _invoke("predict", *args)
    assert result.exit_code == 0, result.output
    [opts] = seen
    assert (opts.fmt, opts.backend, opts.precision, opts.decode_in) == ("json", "onnxruntime", "fp16", "threads")


def test_predict_unknown_choice_is_still_a_usage_error(seen):
    result = _invoke("predict", "a.jpg", "-f", "xml")
    assert result.exit_code == 2
    assert "--format" in result.stderr
    assert seen == []


def test_evaluate_choices_in_any_case(monkeypatch, tmp_path):
    from shufflenet_cli.evaluation import render, run
    from shufflenet_cli.outcome import Outcome, Stats

    seen: list[PredictOptions] = []

    def capture(source, opts, predictions, stderr):
        seen.append(opts)
        return SimpleNamespace(outcome=Outcome(0, Stats()), unlabelled=0)

    monkeypatch.setattr(run, "evaluate", capture)
    monkeypatch.setattr(render, "evaluation_json", lambda ev: '{"as": "json"}')
    args = ["-f", "JSON", "--backend", "TORCH", "--precision", "BF16", "--decode-in", "PROCESSES", "-q"]
    result = _invoke("evaluate", str(tmp_path), *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == '{"as": "json"}'
    [opts] = seen
    assert (opts.backend, opts.precision, opts.decode_in) == ("torch", "bf16", "processes")


# ------------------------------------------------------------------------------------------ --topk


@pytest.mark.parametrize("value", ["0", "-3"])
def test_topk_under_one_is_a_usage_error(seen, value):
    result = _invoke("predict", "a.jpg", "--topk", value)
    assert result.exit_code == 2, result.output
    assert "--topk" in result.stderr
    assert seen == []


def test_topk_of_one_and_beyond_the_classes_reach_the_library(seen):
    assert _invoke("predict", "a.jpg", "-k", "1").exit_code == 0
    assert _invoke("predict", "a.jpg", "-k", "5000").exit_code == 0  # clamped by the library
    assert [o.topk for o in seen] == [1, 5000]


def test_topk_help_states_its_range():
    shown = " ".join(_help("predict").split())
    assert "at most the number of classes" in shown


# ---------------------------------------------------------------------------------- plain metavars

# Typer's own type labels: `<int range>`, `<list[str]>`, `<str>`, `<path>`, `<float>`, and a required
# argument as `{PATHS}` in the usage line.
_TYPE_LABEL = re.compile(r"<(int|float|str|path|list|bool|file|text)\b[^>]*>|\{[A-Z_]+\}")


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)], ids=["shufflenet", *COMMANDS])
def test_help_shows_plain_metavars(command):
    shown = _help(*command)
    assert _TYPE_LABEL.findall(shown) == [], shown


def test_predict_help_metavars():
    shown = _help("predict")
    assert "Usage: shufflenet predict [OPTIONS] PATHS..." in shown
    for expected in (
        "-m, --model MODEL",
        "--weights FILE",
        "--labels FILE",
        "--device DEVICE",
        "-b, --batch-size N",
        "-j, --workers N",
        "--threads N",
        "-k, --topk N",
        "--threshold P",
        "-o, --output FILE",
        "--ext LIST",
        "--report FILE",
        "-f, --format [table|json|jsonl|csv]",
        "--decode-in [auto|threads|processes]",
        "--backend [auto|torch|onnxruntime]",
        "--precision [fp32|fp16|bf16]",
    ):
        assert expected in shown, expected
    assert re.search(r"^  PATHS\.\.\.  ", shown, flags=re.M), shown


def test_evaluate_and_download_help_metavars():
    evaluate = _help("evaluate")
    assert "Usage: shufflenet evaluate [OPTIONS] DIR\n" in evaluate
    assert "--limit N" in evaluate
    assert "-f, --format [table|json]" in evaluate
    download = _help("download")
    assert "Usage: shufflenet download [OPTIONS] [MODEL]..." in download
    assert re.search(r"^  MODEL\.\.\.  ", download, flags=re.M), download


# ------------------------------------------------------------------------------------------ --force


def test_predict_help_offers_force():
    shown = " ".join(_help("predict").split())
    assert "--force Replace an existing, non-empty --output FILE." in shown


@pytest.mark.skipif(
    "force" not in {f.name for f in fields(PredictOptions)}, reason="PredictOptions.force is not there yet"
)
def test_force_reaches_the_library_options(seen):
    assert _invoke("predict", "a.jpg", "-o", "out.jsonl", "--force").exit_code == 0
    assert _invoke("predict", "a.jpg", "-o", "out.jsonl").exit_code == 0
    assert [o.force for o in seen] == [True, False]


# ------------------------------------------------------------------------- -o in a missing folder


@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_output_in_a_missing_folder_gets_the_reports_hint(cli, images, tmp_path, suffix):
    """`-o nodir/out.json` says what to do, as `--report nodir/r.html` does; before any work."""
    out = tmp_path / "nodir" / f"out.{suffix}"
    report = cli("predict", images[0], "--report", tmp_path / "nodir" / "r.html")
    result = cli("predict", images[0], "-o", out)
    assert (result.exit_code, report.exit_code) == (2, 2), result.stderr
    hint = "Hint: choose a file in an existing folder you can write to"
    assert report.stderr.splitlines()[-1] == hint
    assert result.stderr.splitlines() == [f"Error: cannot write --output {out}: No such file or directory", hint]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray-address", "auto"], "Error: --ray-address is for --engine ray"),
        (["--engine", "ray", "--gpu-decode"], "Error: --gpu-decode runs with the local engine"),
        (["--engine", "spark"], "Invalid value for '--engine'"),
    ],
)
def test_engine_options_are_checked_before_anything_runs(run, images, args, message):
    r = run(images[0], *args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert r.stdout == ""


def test_no_image_at_all_names_where_it_looked(run, tmp_path):
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    notes.mkdir()
    (notes / "todo.txt").write_text("not a picture")
    r = run(empty, notes)
    assert r.exit_code == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0] == f"Error: no image files found in {empty}, {notes}"
    assert lines[1].startswith("Hint: folders are searched for image extensions (--ext)")
