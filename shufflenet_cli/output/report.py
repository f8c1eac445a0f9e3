"""`--report FILE`: one self-contained HTML page of the run (thumbnails, bar charts, failures, summary).

The page needs nothing from outside: thumbnails are JPEG data URIs, the bars are plain HTML/CSS, there is
no script, and a Content-Security-Policy tells the browser to fetch nothing else.

The top half of this module is pure (records in, HTML text out); `HtmlReport` does the file handling.
Rows are streamed batch by batch into temporary files beside the target, so no image is held in memory;
`close()` writes head (with the summary), failures and cards into a last temporary file and renames it
over the target, so the report appears whole or not at all (targets.py: a symlink's file is replaced, a
FIFO or a device is written into).
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Iterable

from shufflenet_cli.atomic import AtomicFile, is_stream, make_temp, rename_target
from shufflenet_cli.errors import OutputError, WriteError
from shufflenet_cli.output.display import clean_text
from shufflenet_cli.output.locks import LockBeside
from shufflenet_cli.records import Prediction, Record

# Only inline styles and data: images may load; anything else (a stray URL) is refused by the browser.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
OPEN_FAILURES_UP_TO = 50  # more failed files than this: the list starts folded

CSS = """
:root { color-scheme: light dark; --fg: #1d2127; --muted: #5d6672; --bg: #f6f7f9; --card: #fff;
  --line: #dde1e6; --bar: #3a7bd5; --track: #e8ecf1; --err: #b3261e; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8eb; --muted: #9aa3ad; --bg: #15181c;
  --card: #1e2227; --line: #2e343b; --bar: #5b9bf0; --track: #2b3137; --err: #f28b82; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { margin-bottom: 20px; }
h1 { font-size: 20px; margin: 0 0 6px; }
h2 { font-size: 16px; margin: 24px 0 10px; }
.summary { font-size: 15px; margin: 0; }
.meta { color: var(--muted); margin: 4px 0 0; font-size: 12px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 12px; }
.card { display: flex; gap: 14px; padding: 12px; background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; min-width: 0; }
.thumb { flex: none; width: 160px; height: 160px; display: flex; align-items: center; justify-content: center;
  background: var(--track); border-radius: 4px; overflow: hidden; }
.thumb img { max-width: 160px; max-height: 160px; display: block; }
.thumb .none { color: var(--muted); font-size: 12px; }
.info { flex: 1; min-width: 0; }
.path { font: 12px/1.3 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; margin: 0 0 8px;
  overflow-wrap: anywhere; }
.bars { list-style: none; margin: 0; padding: 0; }
.bars li { display: grid; grid-template-columns: minmax(0, 1fr) 64px; column-gap: 8px; margin-bottom: 6px; }
.label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.pct { text-align: right; font-variant-numeric: tabular-nums; }
.bar { grid-column: 1 / span 2; height: 6px; background: var(--track); border-radius: 3px; overflow: hidden; }
.bar span { display: block; height: 100%; background: var(--bar); }
.bars li:first-child .label { font-weight: 600; }
.empty { color: var(--muted); margin: 0; }
.failed summary { cursor: pointer; font-weight: 600; color: var(--err); margin-bottom: 8px; }
.failed table { border-collapse: collapse; width: 100%; background: var(--card); border: 1px solid var(--line); }
.failed th, .failed td { text-align: left; vertical-align: top; padding: 6px 10px; border-top: 1px solid var(--line); }
.failed td:first-child { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px;
  overflow-wrap: anywhere; width: 45%; }
.failed td:last-child { color: var(--err); }
"""

# --- pure functions: text in, HTML out ---------------------------------------------------------------


def esc(text: str) -> str:
    """`clean_text`, HTML-escaped for element content and quoted attribute values alike."""
    return html.escape(clean_text(text), quote=True)


def thumbnail_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def percent(probability: float) -> str:
    """A probability for people: "93.1%", "<0.1%" for what rounds to nothing."""
    value = 100.0 * probability
    if 0.0 < value < 0.05:
        return "<0.1%"
    return f"{value:.1f}%"


def bar_width(probability: float) -> str:
    """The CSS width of a bar, clamped to 0..100% (a NaN draws no bar)."""
    p = probability if probability == probability else 0.0
    return f"{min(max(100.0 * p, 0.0), 100.0):.2f}%"


def bars_html(predictions: Iterable[Prediction]) -> str:
    """The top-k classes as a list of labelled bars, widest first as given."""
    items = [
        f'<li title="#{p.rank} {esc(p.label)} (class {p.index}): {p.probability:.6f}">'
        f'<span class="label">{esc(p.label)}</span><span class="pct">{percent(p.probability)}</span>'
        f'<span class="bar"><span style="width:{bar_width(p.probability)}"></span></span></li>'
        for p in predictions
    ]
    if not items:
        return '<p class="empty">nothing above the threshold</p>'
    return '<ol class="bars">' + "".join(items) + "</ol>"


def card_html(record: Record) -> str:
    """One classified image: its thumbnail beside the bar chart of its predictions."""
    path = esc(record.path)
    if record.thumbnail:
        alt = esc(os.path.basename(record.path))
        thumb = f'<img src="{thumbnail_uri(record.thumbnail)}" alt="{alt}">'
    else:
        thumb = '<span class="none">no preview</span>'
    return (
        f'<article class="card"><div class="thumb">{thumb}</div>'
        f'<div class="info"><p class="path">{path}</p>{bars_html(record.predictions)}</div></article>\n'
    )


def error_row_html(record: Record) -> str:
    """One failed input: its path and why it could not be classified."""
    return f"<tr><td>{esc(record.path)}</td><td>{esc(record.error or 'unknown error')}</td></tr>\n"


def head_html(title: str, summary: str, generated: str = "") -> str:
    meta = f'<p class="meta">{esc(generated)}</p>' if generated else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{esc(title)}</h1><p class="summary">{esc(summary)}</p>{meta}</header>\n'
    )


def failures_open(count: int) -> str:
    state = " open" if count <= OPEN_FAILURES_UP_TO else ""
    noun = "file" if count == 1 else "files"
    return (
        f'<section class="failed"><details{state}><summary>{count} failed {noun}</summary>\n'
        "<table><thead><tr><th>file</th><th>error</th></tr></thead><tbody>\n"
    )


FAILURES_CLOSE = "</tbody></table></details></section>\n"


def cards_open(count: int) -> str:
    noun = "image" if count == 1 else "images"
    return f'<section><h2>{count} classified {noun}</h2><div class="grid">\n'


CARDS_CLOSE = "</div></section>\n"
PAGE_TAIL = "</body>\n</html>\n"


# --- file handling -----------------------------------------------------------------------------------


class HtmlReport:
    """Stream records into temporary files beside `path`; `close()` assembles and renames atomically."""

    def __init__(self, path: Path, title: str) -> None:
        self.path = Path(path)
        self.title = title
        self.classified = 0
        self.failed = 0
        self._tmp: list[str] = []
        self._lock: LockBeside | None = None  # a file (not a stream): one run writes it at a time
        if self.path.is_dir():
            raise OutputError(f"cannot write --report {self.path}: it is a directory", hint="give a file name")
        try:
            # a FIFO or a device is written into at the end (its rows wait in the temp folder); a file is replaced
            self._target = None if is_stream(self.path) else rename_target(self.path)
            self._dir = Path(tempfile.gettempdir()) if self._target is None else self._target.parent
            if self._target is not None:
                self._lock = LockBeside(self._target, "--report", self.path)
            self._cards = self._temp("cards")
            self._errors = self._temp("errors")
        except OSError as exc:
            self.abort()
            raise OutputError(
                f"cannot write --report {self.path}: {exc.strerror or exc}",
                hint="choose a file in an existing folder you can write to",
            ) from exc

    def _temp(self, part: str) -> IO[str]:
        fd, name = make_temp(self._dir, self.path.name, suffix=f".{part}.tmp")
        self._tmp.append(name)
        return os.fdopen(fd, "w", encoding="utf-8", errors="replace", newline="\n")

    def add(self, records: list[Record]) -> None:
        """Append one batch (flushed, so a long run's report grows on disk, not in memory)."""
        cards = [card_html(r) for r in records if r.ok]
        errors = [error_row_html(r) for r in records if not r.ok]
        try:
            if cards:
                self._cards.write("".join(cards))
                self._cards.flush()
            if errors:
                self._errors.write("".join(errors))
                self._errors.flush()
        except OSError as exc:
            raise WriteError(f"cannot write --report {self.path}: {exc.strerror or exc}") from exc
        self.classified += len(cards)
        self.failed += len(errors)

    def close(self, summary: str) -> None:
        """Write the finished page (summary at the top) and move it into place."""
        if not self._tmp:
            return
        generated = time.strftime("generated %Y-%m-%d %H:%M:%S %Z")
        try:
            self._cards.close()
            self._errors.close()
            if self._target is None:
                with open(self.path, "a", encoding="utf-8", errors="replace", newline="\n") as out:
                    self._write_page(out, summary, generated)
                return
            page = AtomicFile(self._target, suffix=".html.tmp")
            try:
                with io.TextIOWrapper(page.file, encoding="utf-8", errors="replace", newline="\n") as out:
                    self._write_page(out, summary, generated)
                page.commit()
            finally:
                page.discard()
        except OSError as exc:
            raise WriteError(f"cannot write --report {self.path}: {exc.strerror or exc}") from exc
        finally:
            self.abort()

    def _write_page(self, out: IO[str], summary: str, generated: str) -> None:
        out.write(head_html(self.title, summary, generated))
        if self.failed:
            out.write(failures_open(self.failed))
            _copy(self._tmp[1], out)
            out.write(FAILURES_CLOSE)
        out.write(cards_open(self.classified))
        _copy(self._tmp[0], out)
        out.write(CARDS_CLOSE + PAGE_TAIL)

    def abort(self) -> None:
        """Remove the temporary files and release the lock; the target is left as it was."""
        for f in (getattr(self, "_cards", None), getattr(self, "_errors", None)):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
        self._remove_temps()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _remove_temps(self) -> None:
        while self._tmp:
            try:
                os.unlink(self._tmp.pop())
            except OSError:
                pass


def _copy(name: str, out: IO[str]) -> None:
    with open(name, encoding="utf-8", newline="\n") as f:
        shutil.copyfileobj(f, out, 1 << 20)
