"""`evaluate --report FILE`: one self-contained HTML page: the summary beside torchvision's figures,
per-class accuracy as bars, the most confused pairs, and thumbnails of the wrong answers.

The page is built by pure functions (an `Evaluation` and thumbnails in, HTML out) from
output/report.py's pieces (its head, styles, escaping and bars), so it looks like predict's report
and, like it, loads nothing from outside. `EvaluationReport` opens the file before the run (an
unwritable path fails at once) and renames it into place at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shufflenet_cli.atomic import AtomicFile
from shufflenet_cli.errors import OutputError, WriteError
from shufflenet_cli.evaluation.metrics import Wrong, fraction
from shufflenet_cli.evaluation.render import error_pct, pct
from shufflenet_cli.evaluation.run import Evaluation
from shufflenet_cli.output.report import CARDS_CLOSE, PAGE_TAIL, bar_width, esc, head_html, percent, thumbnail_uri

THUMBNAIL = 160  # pixels, longer side, as predict's report
CONFUSIONS_SHOWN = 20

EXTRA_CSS = """<style>
table.figures { border-collapse: collapse; background: var(--card); border: 1px solid var(--line); }
table.figures th, table.figures td { padding: 6px 12px; border-top: 1px solid var(--line); text-align: right; }
table.figures th:first-child, table.figures td:first-child { text-align: left; }
.pairs th:nth-child(2), .pairs td:nth-child(2) { text-align: left; }
.classes { columns: 360px; column-gap: 24px; }
.classes li { break-inside: avoid; }
.truth { margin: 0 0 4px; }
.wrong { color: var(--err); margin: 0; }
</style>
"""


def figures_html(ev: Evaluation) -> str:
    """Measured accuracy and error rates (percent), with the published ones where they apply."""
    t, pub = ev.tally, ev.published
    head = "<tr><th></th><th>measured</th>" + ("<th>published</th>" if pub else "") + "</tr>"
    rows = [
        ("top-1 accuracy", pct(t.top1), pub and pct(pub.top1)),
        ("top-5 accuracy", pct(t.top5), pub and pct(pub.top5)),
        ("top-1 error", error_pct(t.top1), pub and error_pct(pub.top1)),
        ("top-5 error", error_pct(t.top5), pub and error_pct(pub.top5)),
    ]
    body = "".join(
        f"<tr><td>{name}</td><td>{mine}</td>" + (f"<td>{theirs}</td>" if pub else "") + "</tr>"
        for name, mine, theirs in rows
    )
    source = f'<p class="meta">published: {esc(pub.source)}</p>' if pub else ""
    return f'<section><h2>accuracy, percent</h2><table class="figures">{head}{body}</table>{source}</section>\n'


def classes_html(ev: Evaluation) -> str:
    """Each class's top-1 accuracy as a bar, lowest first."""
    items = []
    for index in ev.tally.worst_classes():
        c = ev.tally.per_class[index]
        acc = fraction(c.top1, c.images)
        shown = "no image" if acc is None else percent(acc)
        failed = f", {c.failed} failed" if c.failed else ""
        items.append(
            f'<li title="class {index}: {c.top1} of {c.images} right at top-1{failed}">'
            f'<span class="label">{index} {esc(ev.names[index])}</span><span class="pct">{shown}</span>'
            f'<span class="bar"><span style="width:{bar_width(acc or 0.0)}"></span></span></li>'
        )
    return '<section><h2>top-1 accuracy per class</h2><ol class="bars classes">' + "".join(items) + "</ol></section>\n"


def confusions_html(ev: Evaluation) -> str:
    pairs = ev.tally.confusions(CONFUSIONS_SHOWN)
    if not pairs:
        return ""
    rows = "".join(
        f"<tr><td>{c.truth} {esc(ev.names[c.truth])}</td><td>{c.predicted} {esc(ev.names[c.predicted])}</td>"
        f"<td>{c.count}</td></tr>"
        for c in pairs
    )
    return (
        '<section><h2>most confused</h2><table class="figures pairs"><tr><th>true</th><th>predicted top-1</th>'
        f"<th>images</th></tr>{rows}</table></section>\n"
    )


def wrong_card_html(w: Wrong, names: list[str], thumbnail: bytes | None) -> str:
    """One wrong answer: its thumbnail, its path, its true class and what the model said instead."""
    thumb = f'<img src="{thumbnail_uri(thumbnail)}" alt="">' if thumbnail else '<span class="none">no preview</span>'
    p = w.predicted
    return (
        f'<article class="card"><div class="thumb">{thumb}</div><div class="info">'
        f'<p class="path">{esc(w.path)}</p><p class="truth">true: {w.truth} {esc(names[w.truth])}</p>'
        f'<p class="wrong">predicted: {p.index} {esc(p.label)} ({percent(p.probability)})</p></div></article>\n'
    )


def wrong_html(ev: Evaluation, thumbnails: list[bytes | None]) -> str:
    t = ev.tally
    if not t.wrong:
        return ""
    shown = f"the first {len(t.wrong)} of {t.wrong_count}" if len(t.wrong) < t.wrong_count else str(t.wrong_count)
    cards = "".join(wrong_card_html(w, ev.names, thumb) for w, thumb in zip(t.wrong, thumbnails, strict=True))
    return f'<section><h2>wrong at top-1: {shown}</h2><div class="grid">\n{cards}{CARDS_CLOSE}'


def page_html(ev: Evaluation, summary: str, thumbnails: list[bytes | None]) -> str:
    title = f"shufflenet evaluate: {ev.model}"
    return (
        head_html(title, summary)
        + EXTRA_CSS
        + figures_html(ev)
        + confusions_html(ev)
        + wrong_html(ev, thumbnails)
        + classes_html(ev)
        + PAGE_TAIL
    )


def summary_text(ev: Evaluation) -> str:
    t = ev.tally
    return (
        f"{t.images} images of {len(t.classes)} classes, {t.failed} failed: "
        f"top-1 {pct(t.top1)} %, top-5 {pct(t.top5)} %" + (" (interrupted)" if ev.outcome.interrupted else "")
    )


# --- file handling -----------------------------------------------------------------------------------


def thumbnail_of(path: str) -> bytes | None:
    """A small JPEG of the upright picture, or None where it cannot be read again."""
    from shufflenet_cli.decode.images import load_rgb
    from shufflenet_cli.decode.preprocess import make_thumbnail

    try:
        return make_thumbnail(load_rgb(path, draft_min=THUMBNAIL), THUMBNAIL)
    except Exception:  # noqa: BLE001 - the page does without this one preview
        return None


class EvaluationReport:
    """The page's file: a temporary file beside FILE, opened at once, renamed over FILE by `write`."""

    def __init__(self, path: Path, thumbnail: Callable[[str], bytes | None] = thumbnail_of) -> None:
        self.path = Path(path)
        self.thumbnail = thumbnail
        if self.path.is_dir():
            raise OutputError(f"cannot write --report {self.path}: it is a directory", hint="give a file name")
        try:
            self._file: AtomicFile | None = AtomicFile(self.path, suffix=".html.tmp")
        except OSError as exc:
            raise OutputError(
                f"cannot write --report {self.path}: {exc.strerror or exc}",
                hint="choose a file in an existing folder you can write to",
            ) from exc

    def write(self, ev: Evaluation) -> None:
        thumbnails = [self.thumbnail(w.path) for w in ev.tally.wrong]
        text = page_html(ev, summary_text(ev), thumbnails)
        if self._file is None:
            return
        try:
            self._file.file.write(text.encode("utf-8", "replace"))
            self._file.commit()
        except OSError as exc:
            raise WriteError(f"cannot write --report {self.path}: {exc.strerror or exc}") from exc
        finally:
            self.discard()

    def discard(self) -> None:
        if self._file is not None:
            self._file.discard()
            self._file = None
