"""The progress bar: drawn only on a terminal, with a count, a rate and (once counted) a total."""

from __future__ import annotations

import io
import time

from rich.console import Console

from shufflenet_cli.outcome import Stats
from shufflenet_cli.output.progress import SHOW_AFTER, Counter, progress_for


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100, color_system=None), buf


def _run(console: Console, n: int, count=None) -> None:
    stats = Stats(started=time.perf_counter() - 1.0)
    with progress_for(console, True, count) as bar:
        for _ in range(n):
            stats.classified += 1
            bar.advance(stats)
            time.sleep(0.001)


def test_no_bar_when_stderr_is_not_a_terminal():
    console, buf = _console(terminal=False)
    _run(console, 50, count=lambda: range(50))
    assert buf.getvalue() == ""


def test_no_bar_for_a_handful_of_images():
    console, buf = _console(terminal=True)
    _run(console, SHOW_AFTER - 1, count=lambda: range(SHOW_AFTER - 1))
    assert "images/s" not in buf.getvalue()


def test_bar_shows_count_rate_and_total_on_a_terminal():
    console, buf = _console(terminal=True)
    stats = Stats(started=time.perf_counter() - 1.0)
    with progress_for(console, True, lambda: range(40)) as bar:
        for _ in range(40):
            stats.classified += 1
            bar.advance(stats)
        bar.wait_for_count()  # the background count is in: the next update carries the total
        bar.advance(stats)
        bar.refresh()
    out = buf.getvalue()
    assert "images/s" in out
    assert "40/40" in out


def test_counter_counts_in_the_background():
    counted = Counter(lambda: range(40))
    counted.wait()
    assert counted.total == 40


def test_disabled_bar_draws_nothing_even_on_a_terminal():
    console, buf = _console(terminal=True)
    stats = Stats()
    with progress_for(console, False, None) as bar:
        for _ in range(30):
            stats.classified += 1
            bar.advance(stats)
    assert buf.getvalue() == ""


def test_counter_failure_leaves_total_unknown():
    def broken():
        yield 1
        raise OSError("gone")

    c = Counter(broken)
    c.wait()
    assert c.total is None


def _run_with_stderr_on_a_terminal(args: list[str]) -> tuple[int, bytes, str]:
    """Run the CLI with stdout piped and stderr on a pseudo-terminal; (exit code, stdout, terminal text)."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    env = dict(os.environ, COLUMNS="100", TERM="xterm")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shufflenet_cli", *args], stdout=subprocess.PIPE, stderr=follower, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.stdout.read()
    proc.wait()
    os.close(leader)
    return proc.returncode, stdout, b"".join(chunks).decode("utf-8", "replace")


def test_cli_bar_on_a_terminal_and_the_switches_that_hide_it(tmp_path, random_weights):
    import json

    from conftest import make_image

    for i in range(24):
        make_image(tmp_path / "imgs" / f"{i:02d}.png", size=(40, 40), seed=i)
    base = ["predict", str(tmp_path / "imgs"), "-m", "x0_5", "--weights", str(random_weights)]
    base += ["--backend", "torch", "-f", "jsonl", "-b", "2", "-j", "1"]

    code, out, term = _run_with_stderr_on_a_terminal(base)
    assert code == 0
    assert len([json.loads(line) for line in out.splitlines()]) == 24  # results untouched by the bar
    assert "classifying" in term and "images/s" in term  # the bar was drawn on stderr
    assert "24 classified, 0 failed" in term

    code, out, term = _run_with_stderr_on_a_terminal([*base, "--no-progress"])
    assert code == 0 and "classifying" not in term and "24 classified" in term

    code, out, term = _run_with_stderr_on_a_terminal([*base, "-q"])
    assert code == 0 and term.strip() == "" and len(out.splitlines()) == 24


# --- under a table on the same terminal: a footer line ---------------------------------------------


def test_footer_is_drawn_after_a_batch_and_erased_before_the_next():
    from shufflenet_cli.output.progress import Footer

    console, buf = _console(terminal=True)
    footer = Footer(console, True, lambda: range(40))
    stats = Stats(started=time.perf_counter() - 1.0)
    stats.classified = SHOW_AFTER - 1
    footer.advance(stats)
    assert buf.getvalue() == ""  # not for a handful
    stats.classified = 20
    footer._counter.wait()  # type: ignore[union-attr]
    footer.advance(stats)
    drawn = buf.getvalue()
    assert drawn.startswith("classifying 20/40, ") and "images/s" in drawn and "ETA" in drawn
    assert "\n" not in drawn  # one line, the cursor left on it
    footer.clear()
    assert buf.getvalue()[len(drawn) :] == "\x1b[1G\x1b[2K"  # back to its start, the line erased
    footer.clear()
    footer.stop()
    assert buf.getvalue()[len(drawn) :] == "\x1b[1G\x1b[2K"  # erased once


def test_footer_is_never_wider_than_the_terminal():
    from shufflenet_cli.output.progress import Footer

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=20, color_system=None)
    footer = Footer(console, True, None)
    footer.advance(Stats(classified=1000))
    assert len(buf.getvalue()) == 19 and buf.getvalue().startswith("classifying 1000/?")


def test_no_footer_off_a_terminal_or_when_disabled():
    from shufflenet_cli.output.progress import Footer

    for terminal, enabled in [(False, True), (True, False)]:
        console, buf = _console(terminal)
        footer = Footer(console, enabled, None)
        footer.advance(Stats(classified=100))
        footer.stop()
        assert buf.getvalue() == ""


def _screen(raw: str) -> list[str]:
    """The lines a terminal would show for `raw`: colours dropped, "\\x1b[1G\\x1b[2K" erasing its line."""
    import re

    raw = re.sub(r"\x1b\[[0-9;]*m", "", raw).replace("\r\n", "\n")
    lines = []
    for line in raw.split("\n"):
        lines.append(line.rsplit("\x1b[1G\x1b[2K", 1)[-1])
    return [line for line in lines if line]


def _run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on one pseudo-terminal, 100 columns; (exit code, its text)."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    env = dict(os.environ, COLUMNS="100", TERM="xterm", NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "shufflenet_cli", *args], stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(leader)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_cli_footer_under_a_table_on_the_terminal_leaves_the_table_whole(tmp_path, random_weights):
    """With the results on the terminal there was no progress at all: a bar would have torn the table."""
    from conftest import make_image

    for i in range(24):
        make_image(tmp_path / "imgs" / f"{i:02d}.png", size=(40, 40), seed=i)
    base = ["predict", str(tmp_path / "imgs"), "-m", "x0_5", "--weights", str(random_weights)]
    base += ["--backend", "torch", "-b", "4", "-j", "1", "-k", "1"]

    code, raw = _run_on_a_terminal(base)
    assert code == 0
    assert "classifying " in raw and "images/s" in raw  # drawn
    lines = _screen(raw)
    table, summary = lines[:-1], lines[-1]
    assert "classifying" not in "\n".join(lines)  # and erased, every time, before rows came
    assert table[0].startswith("┏") and table[-1].startswith("└") and len(table) == 3 + 24 + 23 + 1
    assert {len(line) for line in table} == {100}
    assert summary.startswith("24 classified, 0 failed")

    for switch in ("--no-progress", "-q"):
        code, raw = _run_on_a_terminal([*base, switch])
        assert code == 0 and "classifying" not in raw and len(_screen(raw)) >= 51
