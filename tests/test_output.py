"""Pure renderers: records in, text or a rich Table out."""

from __future__ import annotations

import csv
import io
import json

import pytest
from rich.console import Console

from shufflenet_cli.output.formats import CSV_HEADER, Csv, JsonArray, JsonLines, render_table, unquote_csv_cell
from shufflenet_cli.output.sinks import Sink
from shufflenet_cli.records import Prediction, Record

GOOD = Record(
    "photos/dog.jpg",
    (Prediction(1, 258, "Samoyed", 0.88421), Prediction(2, 279, "Arctic fox", 0.0312)),
)
BAD = Record("photos/notes.jpg", error="cannot identify image file")
EMPTY = Record("photos/blank.png", ())


def _stream(renderer, batches) -> str:
    return renderer.header() + "".join(renderer.render(b) for b in batches) + renderer.footer()


def test_json_array_streams_batches_into_one_valid_array():
    text = _stream(JsonArray(), [[GOOD], [], [BAD, EMPTY]])
    assert json.loads(text) == [GOOD.to_dict(), BAD.to_dict(), EMPTY.to_dict()]
    assert json.loads(_stream(JsonArray(), [])) == []


def test_record_dict_shape():
    assert GOOD.to_dict() == {
        "path": "photos/dog.jpg",
        "predictions": [
            {"rank": 1, "index": 258, "label": "Samoyed", "probability": 0.88421},
            {"rank": 2, "index": 279, "label": "Arctic fox", "probability": 0.0312},
        ],
    }
    assert BAD.to_dict() == {"path": "photos/notes.jpg", "error": "cannot identify image file"}


def test_jsonl_one_line_per_record_even_with_newlines_in_names():
    odd = Record('we"ird\nname ü.jpg', GOOD.predictions)
    lines = _stream(JsonLines(), [[GOOD, odd, BAD]]).splitlines()
    assert [json.loads(line)["path"] for line in lines] == [GOOD.path, odd.path, BAD.path]


def test_csv_rows_per_prediction_and_per_failure():
    rows = list(csv.reader(io.StringIO(_stream(Csv(), [[GOOD, BAD], [EMPTY]]))))
    assert rows[0] == ["path", "rank", "index", "label", "probability", "error"]
    assert rows[1] == ["photos/dog.jpg", "1", "258", "Samoyed", "0.884210", ""]
    assert rows[2][:4] == ["photos/dog.jpg", "2", "279", "Arctic fox"]
    assert rows[3] == ["photos/notes.jpg", "", "", "", "", "cannot identify image file"]
    assert rows[4] == ["photos/blank.png", "", "", "", "", ""]
    assert len(rows) == 5
    assert _stream(Csv(header=False), [[BAD]]).count("path,rank") == 0


@pytest.mark.parametrize("name", ["a\rb.jpg", "a\r\nb.jpg", "a\nb.jpg", "a.jpg\r", "\r"])
def test_csv_quotes_a_carriage_return_or_newline_in_a_name(name):
    odd = Record(name, GOOD.predictions)
    text = _stream(Csv(), [[odd, BAD]])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[0] for row in rows] == ["path", name, name, BAD.path]
    assert rows[1] == [name, "1", "258", "Samoyed", "0.884210", ""]
    assert text.endswith("\n") and "\r\n" not in text.replace(name, "")  # rows end in "\n"


def test_csv_without_carriage_returns_is_what_the_csv_module_writes():
    """Only fields holding "\r" are written differently (quoted): everything else stays byte for byte."""
    rows = [CSV_HEADER, ("x,y.jpg", 1, 2, 'say "hi"', "0.5", ""), ("a\nb ü \udcff.jpg", "", "", "", "", "e, f")]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    assert Csv._rows(rows) == buf.getvalue()


def _plain(table, width=80) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(table)
    return buf.getvalue()


def test_table_groups_by_image_and_fits_80_columns():
    long = Record(
        "/a/very/long/folder/name/that/goes/on/and/on/for/ever/and/ever/IMG_20240101_123456.jpg", GOOD.predictions
    )
    text = _plain(render_table([GOOD, BAD, long]))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert sum("photos/dog.jpg" in line for line in lines) == 1
    assert any("Samoyed" in line and "0.8842" in line for line in lines)
    assert "error: cannot identify image" in text
    row = next(line for line in lines if "Arctic fox" in line)
    assert row.rstrip().endswith("0.0312 │")  # right-aligned


README_TABLE = """\
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━┳━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━┓
┃ image                                  ┃  # ┃ label                ┃    prob ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━╇━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━┩
│ dog.jpg                                │  1 │ Samoyed              │  0.9296 │
│                                        │  2 │ Arctic fox           │  0.0131 │
│                                        │  3 │ wallaby              │  0.0125 │
│                                        │  4 │ Great Pyrenees       │  0.0101 │
│                                        │  5 │ Siamese cat          │  0.0080 │
└────────────────────────────────────────┴────┴──────────────────────┴─────────┘
"""


def _table_through_a_sink(batches, monkeypatch) -> str:
    monkeypatch.delenv("COLUMNS", raising=False)  # piped: 80 columns
    out = io.BytesIO()
    sink = Sink("table", stdout=out)
    for batch in batches:
        sink.write(batch)
    sink.close()
    return out.getvalue().decode()


def test_one_image_gives_the_readmes_table(monkeypatch):
    top5 = [("Samoyed", 0.929586), ("Arctic fox", 0.013096), ("wallaby", 0.0125), ("Great Pyrenees", 0.0101)]
    top5.append(("Siamese cat", 0.0080))
    dog = Record("dog.jpg", tuple(Prediction(i + 1, i, label, p) for i, (label, p) in enumerate(top5)))
    assert _table_through_a_sink([[dog]], monkeypatch) == README_TABLE


def test_the_sink_writes_batches_as_one_table_with_the_columns_of_the_first(monkeypatch):
    """It wrote a box per batch (32 images), the columns widening from one box to the next."""
    long = Record("photos/" + "a-longer-folder/" * 4 + "IMG_0001.jpg", GOOD.predictions)  # 83 columns
    text = _table_through_a_sink([[GOOD], [long], [GOOD], [EMPTY, BAD]], monkeypatch)
    lines = text.splitlines()
    assert lines[0].startswith("┏") and lines[-1].startswith("└")
    assert sum(line.startswith(("┏", "┌", "└")) for line in lines) == 2  # one top, one bottom
    assert {len(line) for line in lines} == {80}
    columns = {tuple(i for i, c in enumerate(line) if c in "│┃") for line in lines if line.startswith(("│", "┃"))}
    assert len(columns) == 1
    assert "│ …/a-longer-folder/IMG_0001.jpg         │" in text  # in its 38 columns, on one line
    assert "│ error:" in text and "│ (nothing" in text


def test_table_markup_in_names_is_not_interpreted():
    text = _plain(render_table([Record("[bold]x[/bold].jpg", GOOD.predictions)]))
    assert "[bold]x[/bold].jpg" in text


def test_table_shows_control_characters_in_names_and_labels_as_escapes():
    """An escape sequence in a file name (or a labels file) must not recolour the terminal."""
    record = Record("esc\x1b[31mred\n.jpg", (Prediction(1, 3, "lab\x07el", 0.5),))
    buf = io.StringIO()
    Console(file=buf, width=100, color_system=None).print(render_table([record, Record("a\x1b]0;t.jpg", error="e\rx")]))
    out = buf.getvalue()
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "esc\\x1b[31mred\\n.jpg" in out and "lab\\x07el" in out and "e\\rx" in out


def test_table_has_no_colour_codes_with_no_color(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, width=80).print(render_table([GOOD, BAD]))
    assert "\x1b[3" not in buf.getvalue()  # no foreground colours


def test_format_comes_from_the_option_then_the_output_extension():
    from pathlib import Path

    import pytest

    from shufflenet_cli.errors import UsageError
    from shufflenet_cli.output.formats import choose_format

    assert choose_format(None, False, None) == "table"
    assert choose_format(None, False, Path("out/results.JSONL")) == "jsonl"
    assert choose_format(None, False, Path("r.ndjson")) == "jsonl"
    assert choose_format(None, False, Path("r.csv")) == "csv"
    assert choose_format(None, False, Path("r.json")) == "json"
    assert choose_format(None, False, Path("r.txt")) == "table"
    assert choose_format("csv", False, Path("r.json")) == "csv"  # explicit wins
    assert choose_format(None, True, None) == choose_format("json", True, None) == "json"
    with pytest.raises(UsageError):
        choose_format("csv", True, None)


def test_table_shows_bidi_controls_in_names_escaped():
    """U+202E makes "x\u202egpj.exe" read as "xexe.jpg": the table shows the override instead."""
    names = ["x\u202egpj.exe", "a\u2066b\u2069c\u200e\u200f\u202a\u202b\u202c\u202d", "line\u2028sep"]
    out = _plain(render_table([Record(n, GOOD.predictions) for n in names]), width=120)
    assert not any(ch in out for ch in "\u202e\u2066\u2069\u200e\u200f\u202a\u202b\u202c\u202d\u2028")
    assert "x\\u202egpj.exe" in out and "a\\u2066b\\u2069c\\u200e\\u200f\\u202a" in out and "line\\u2028sep" in out


def test_json_and_csv_keep_the_exact_path_for_machines():
    name = "x\u202egpj\x1b.exe"
    assert json.loads(JsonLines().render([Record(name, ())]))["path"] == name
    assert list(csv.reader(io.StringIO(Csv().render([Record(name, ())]))))[0][0] == name


FORMULAS = ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "'quoted", "plain.jpg", ""]


def test_csv_writes_cells_as_they_are_by_default():
    """The default is for scripts: the path is the path, whatever it starts with."""
    rows = list(csv.reader(io.StringIO(Csv(header=False).render([Record(n, ()) for n in FORMULAS]), newline="")))
    assert [row[0] for row in rows] == FORMULAS


def test_csv_safe_starts_formula_cells_with_a_quote_and_reads_back_exactly():
    records = [Record(n, (Prediction(1, 3, n, 0.5),)) for n in FORMULAS] + [Record("=e", error="-err")]
    rows = list(csv.reader(io.StringIO(Csv(header=False, safe=True).render(records), newline="")))
    cells = [row[0] for row in rows[:-1]]
    assert cells == ["'" + n if n[:1] in "=+-@\t\r'" and n else n for n in FORMULAS]
    assert [row[3] for row in rows[:-1]] == cells  # labels too (a --labels file is input as well)
    assert rows[-1] == ["'=e", "", "", "", "", "'-err"]
    assert all(not cell or cell[0] not in "=+-@\t\r" for row in rows for cell in row)
    assert [unquote_csv_cell(c) for c in cells] == FORMULAS


def test_an_interrupted_json_output_says_how_to_go_on_with_resume(images, random_weights, tmp_path, monkeypatch):
    """It said only where the records were: nothing of --resume, which a .json output cannot use."""
    from contextlib import contextmanager

    from shufflenet_cli import runner
    from shufflenet_cli.options import PredictOptions

    @contextmanager
    def stopped_at_once():
        yield lambda: True  # as if Ctrl-C came before the first batch

    monkeypatch.setattr(runner, "StopFlag", stopped_at_once)
    out = tmp_path / "r.json"
    opts = PredictOptions([str(p) for p in images], model="x0_5", weights=random_weights, fmt="json", output=out)
    opts.workers, opts.threads, opts.quiet = 1, 1, True
    err = io.StringIO()
    outcome = runner.predict(opts, stderr=Console(file=err, width=1000, color_system=None))
    assert outcome.interrupted and json.loads(out.with_name("r.json.partial").read_text()) == []
    note = err.getvalue().strip()
    assert note == (
        f"interrupted: {out} left as it was; the records done so far are in {out}.partial; to go on where a run"
        f" stops, write JSON Lines or CSV (-o {tmp_path / 'r.jsonl'}) and rerun it with --resume"
    )
