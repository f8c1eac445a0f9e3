"""--format table for people: one table across batches, its columns fixed with the first batch, long
paths shortened from the left at a "/"."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from shufflenet_cli.output.table import TableText, shorten_path, table_widths
from shufflenet_cli.records import Prediction, Record

TOP2 = (Prediction(1, 258, "Samoyed", 0.88421), Prediction(2, 279, "Arctic fox", 0.0312))
LONG = "/home/ann/photos/2019/summer-holiday-in-the-mountains/IMG_20190704_123456.jpg"


def _console(width: int = 80, terminal: bool = False) -> Console:
    return Console(width=width, file=io.StringIO(), color_system=None, force_terminal=terminal)


def _stream(batches: list[list[Record]], width: int = 80, terminal: bool = False) -> str:
    """As the sink writes it: the header, each batch, the footer."""
    table = TableText(_console(width, terminal))
    return table.header() + "".join(table.render(b) for b in batches) + table.footer()


def _columns(line: str) -> tuple[int, ...]:
    return tuple(i for i, c in enumerate(line) if c in "│┃┏┳┓┡╇┩├┼┤└┴┘┌┬┐")


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_batches_make_one_table_with_the_same_columns(terminal):
    batches = [[Record("a.jpg", TOP2)], [Record(LONG, TOP2)], [Record("b.jpg", TOP2)]]
    batches.append([Record("c.jpg", ()), Record("photos/notes.jpg", error="cannot identify image file")])
    lines = _stream(batches, terminal=terminal).splitlines()
    assert [line[0] for line in lines].count("┏") == 1 and lines[0].startswith("┏")  # the header once
    assert sum(line.startswith("└") for line in lines) == 1 and lines[-1].startswith("└")  # the bottom once
    assert not any(line.startswith("┌") for line in lines)  # no box of its own for a later batch
    assert {len(line) for line in lines} == {80}
    assert len({_columns(line) for line in lines}) == 1  # every border and row: the same columns
    assert sum(line.startswith("├") for line in lines) == 4  # between each two images, batches or not
    text = "\n".join(lines)
    assert "│ error: cannot " in text and "│ identify image file " in text  # wrapped at its spaces


def test_an_empty_run_writes_no_table():
    assert _stream([]) == "" and _stream([[], []]) == ""


def test_a_piped_table_is_plain_text():
    text = _stream([[Record("a.jpg", TOP2)], [Record("b.jpg", TOP2)]], terminal=False)
    assert "\x1b" not in text


def test_widths_are_fixed_with_the_first_batch():
    first = table_widths([Record("a.jpg", TOP2)], 80)
    assert first == (80 - 22 - 20, 20)  # 22: "#" and "prob", borders, padding; labels get 20 at least
    assert table_widths([Record(LONG, (Prediction(1, 1, "x" * 40, 0.5),))], 80, first) == first
    assert table_widths([Record("a.jpg", (Prediction(1, 1, "American Staffordshire terrier", 0.5),))], 80)[1] == 30
    assert table_widths([Record("a.jpg", error="e" * 60)], 80) == (80 - 22 - 30, 30)  # longer: wrapped
    assert table_widths([Record("a.jpg", TOP2)], 40) == (16, 12)  # a narrow console: the label gives way
    assert table_widths([Record("a.jpg", TOP2)], 10) == (16, 12)  # never under the least


def test_a_later_longer_label_wraps_at_its_spaces_and_moves_nothing():
    later = Record("b.jpg", (Prediction(1, 1, "American Staffordshire terrier", 0.5),))
    lines = _stream([[Record("a.jpg", TOP2)], [later]]).splitlines()
    assert len({_columns(line) for line in lines}) == 1
    assert any("│ American             │" in line for line in lines)  # 20 columns
    assert any("│ Staffordshire        │" in line for line in lines)
    assert any("│ terrier              │" in line for line in lines)


@pytest.mark.parametrize(
    ("width", "shown"),
    [
        (100, LONG),
        (len(LONG), LONG),
        (len(LONG) - 1, "…/ann/photos/2019/summer-holiday-in-the-mountains/IMG_20190704_123456.jpg"),
        (60, "…/summer-holiday-in-the-mountains/IMG_20190704_123456.jpg"),
        (40, "…/IMG_20190704_123456.jpg"),
        (20, "…/IMG_20190704_123456.jpg"),  # the name itself is never cut: the table folds it
    ],
)
def test_long_paths_are_shortened_from_the_left_at_a_slash(width, shown):
    assert shorten_path(LONG, width) == shown


def test_shortening_counts_wide_characters_as_a_terminal_does():
    path = "写真/二〇一九年/猫の写真.jpg"  # 2 columns a character
    assert shorten_path(path, 30) == path
    assert shorten_path(path, 20) == "…/猫の写真.jpg"


def test_a_long_path_takes_one_line_in_the_table():
    lines = _stream([[Record(LONG, TOP2)]]).splitlines()
    assert len(lines) == 3 + 2 + 1  # header (3 lines), the two predictions, the bottom
    row = lines[3]
    assert "│ …/summer-holiday-in-the-mountains/IMG_20190704_123456" not in row  # not this wide at 80
    assert "…/IMG_20190704_123456.jpg" in row and "Samoyed" in row
    assert not any("IMG_2019" in line for line in lines[4:])  # never folded onto a second line


def test_the_path_is_escaped_before_it_is_shortened():
    name = "dir/" + "d" * 50 + "/evil\x1b[31m.jpg"
    text = _stream([[Record(name, TOP2)]])
    assert "\x1b" not in text and "…/evil\\x1b[31m.jpg" in text
