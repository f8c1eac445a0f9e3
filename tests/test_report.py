"""`--report FILE`: the pure HTML builders, the file handling, the CLI, and a headless Chromium check.
(With --resume: test_resume.py.)"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import HANG, ReportPage, leftovers, make_image

from shufflenet_cli.errors import OutputError
from shufflenet_cli.output.display import clean_text
from shufflenet_cli.output.report import (
    HtmlReport,
    bar_width,
    bars_html,
    card_html,
    error_row_html,
    esc,
    head_html,
    percent,
)
from shufflenet_cli.records import Prediction, Record

JPEG = bytes.fromhex("ffd8ffe000104a46494600")  # not a whole picture: only its bytes are checked here


def rec(path: str = "a.jpg", probs=(0.9, 0.1), labels=("cat", "dog"), thumbnail: bytes | None = JPEG) -> Record:
    preds = tuple(
        Prediction(rank=i + 1, index=i, label=name, probability=p)
        for i, (p, name) in enumerate(zip(probs, labels, strict=True))
    )
    return Record(path=path, predictions=preds, thumbnail=thumbnail)


# --- pure functions ----------------------------------------------------------------------------------


def test_esc_escapes_markup_and_quotes():
    assert esc("<b>&\"'") == "&lt;b&gt;&amp;&quot;&#x27;"


def test_clean_text_lone_surrogates_and_controls():
    undecodable = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name read on a UTF-8 system
    assert clean_text(undecodable) == "caf\ufffd.jpg"
    assert clean_text("x\ud800y") == "x\ufffdy"  # a surrogate no file-name byte made
    assert clean_text("a\nb\tc\x00d\x7f") == "a\\nb\\tc\\x00d\\x7f"
    assert clean_text("ünïcödé 狗.jpg") == "ünïcödé 狗.jpg"
    esc(undecodable).encode("utf-8")  # strict UTF-8 never fails on the output


def test_percent_and_bar_width():
    assert percent(0.93264) == "93.3%"
    assert percent(0.0004) == "<0.1%"
    assert percent(0.0) == "0.0%"
    assert bar_width(0.5) == "50.00%"
    assert bar_width(1.2) == "100.00%"
    assert bar_width(-0.1) == "0.00%"
    assert bar_width(float("nan")) == "0.00%"


def test_bars_one_bar_per_prediction_with_width_and_label():
    out = bars_html(rec(probs=(0.75, 0.2, 0.05), labels=("tabby", "<script>", "a & b")).predictions)
    assert out.count("<li") == 3
    assert re.findall(r'style="width:([\d.]+)%"', out) == ["75.00", "20.00", "5.00"]
    assert "&lt;script&gt;" in out and "<script>" not in out
    assert "a &amp; b" in out
    page = ReportPage(out)
    assert page.by_class["label"] == ["tabby", "<script>", "a & b"]
    assert page.by_class["pct"] == ["75.0%", "20.0%", "5.0%"]


def test_bars_nothing_above_threshold():
    assert "nothing above the threshold" in bars_html(())


def test_card_embeds_thumbnail_and_escapes_path():
    path = 'dir/<x> & "q"\n' + os.fsdecode(b"\xff.jpg")
    out = card_html(rec(path=path))
    page = ReportPage(out)
    assert page.imgs == ["data:image/jpeg;base64,/9j/4AAQSkZJRgA="]
    assert page.by_class["path"] == ['dir/<x> & "q"\\n\ufffd.jpg']
    assert "<x>" not in out and "\n\ufffd" not in out
    out.encode("utf-8")


def test_card_without_thumbnail_has_no_img():
    out = card_html(rec(thumbnail=None))
    assert "<img" not in out and "no preview" in out


def test_error_row_lists_path_and_escaped_error():
    out = error_row_html(Record(path="bad <1>.jpg", error='truncated & "broken"'))
    assert ReportPage(out).rows == [["bad <1>.jpg", 'truncated & "broken"']]
    assert "&lt;1&gt;" in out and "&amp;" in out


def test_head_has_summary_title_and_no_external_references():
    out = head_html("model <x>", "3 classified, 1 failed", "generated now")
    page = ReportPage(out + "</body></html>")
    assert page.by_class["summary"] == ["3 classified, 1 failed"]
    assert "<title>model &lt;x&gt;</title>" in out
    assert "Content-Security-Policy" in out
    assert "http://" not in out and "https://" not in out and "url(" not in out


# --- file handling -----------------------------------------------------------------------------------


def test_report_assembles_on_close_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "r.html"
    report = HtmlReport(target, title="t")
    report.add([rec("one.jpg"), Record(path="bad.jpg", error="broken")])
    report.add([rec("two.jpg")])
    assert not target.exists()  # nothing at the target until the page is whole
    report.close("2 classified, 1 failed")
    page = ReportPage(target.read_text(encoding="utf-8"))
    assert len(page.imgs) == 2
    assert page.by_class["path"] == ["one.jpg", "two.jpg"]
    assert page.rows[-1] == ["bad.jpg", "broken"]
    assert page.by_class["summary"] == ["2 classified, 1 failed"]
    assert leftovers(tmp_path) == []
    report.abort()  # harmless after close
    assert target.exists()


def test_report_abort_removes_temp_files_and_keeps_old_target(tmp_path):
    target = tmp_path / "r.html"
    target.write_text("old")
    report = HtmlReport(target, title="t")
    report.add([rec()])
    assert len(leftovers(tmp_path)) == 2
    report.abort()
    assert leftovers(tmp_path) == []
    assert target.read_text() == "old"


def test_report_into_a_fifo_is_written_into_not_replaced(tmp_path, monkeypatch):
    """A FIFO (or a device, or `>(cat)`) gets the page written into it; renaming a file over it would
    leave its reader waiting and put a regular file where /dev/null was. Its rows wait in the temp folder."""
    import tempfile
    import threading

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)  # never blocks the suite
    reader.start()
    report = HtmlReport(fifo, title="t")
    report.add([rec("one.jpg")])
    report.close("1 classified, 0 failed")
    reader.join(timeout=HANG)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a regular file"
    assert got and ReportPage(got[0].decode()).by_class["summary"] == ["1 classified, 0 failed"]
    assert leftovers(tmp_path) == [] and leftovers(temp) == []


def test_report_through_a_symlink_replaces_the_file_it_points_to_and_keeps_its_mode(tmp_path):
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "r.html"
    real.write_text("old")
    real.chmod(0o640)
    link = tmp_path / "link.html"
    link.symlink_to(real)
    report = HtmlReport(link, title="t")
    report.add([rec("one.jpg")])
    report.close("1 classified, 0 failed")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert ReportPage(real.read_text()).by_class["summary"] == ["1 classified, 0 failed"]
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == [] and leftovers(real.parent) == []


def test_a_full_disk_while_the_report_is_written_is_a_write_error(tmp_path, monkeypatch):
    """Exit 74, as for results: the run got under way; only a path that cannot be created is exit 2."""
    from shufflenet_cli.errors import EXIT_WRITE, WriteError

    target = tmp_path / "r.html"
    report = HtmlReport(target, title="t")

    def full(text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report._cards, "write", full)
    with pytest.raises(WriteError, match="No space left on device") as caught:
        report.add([rec("one.jpg")])
    assert caught.value.exit_code == EXIT_WRITE
    report.abort()
    assert leftovers(tmp_path) == [] and not target.exists()


@pytest.mark.parametrize("where", ["missing/dir/r.html", "."])
def test_unwritable_report_path_is_an_output_error(tmp_path, where):
    with pytest.raises(OutputError, match="cannot write --report"):
        HtmlReport(tmp_path / where, title="t")
    assert leftovers(tmp_path) == []


# --- through the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def report_run(cli, tmp_path, random_weights):
    """`predict DIR --report` over four generated images, two with awkward names, and a corrupt file."""
    folder = tmp_path / "in"
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # not UTF-8: a lone surrogate in Python
    for i, name in enumerate(["a.jpg", "b.png", 'odd <&> "name".jpg', latin1]):
        make_image(folder / name, size=(90 + 10 * i, 70), seed=i)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    r = cli("predict", folder, "-m", "x0_5", "--weights", random_weights, "-f", "jsonl", "-k", "3", "--report", target)
    return r, target


def test_cli_report_has_images_errors_and_summary(report_run):
    r, target = report_run
    assert r.exit_code == 1, r.stderr  # one input failed
    assert len(r.jsonl()) == 5  # stdout still carries the results
    text = target.read_text(encoding="utf-8")
    page = ReportPage(text)
    assert len(page.imgs) == 4
    assert all(src.startswith("data:image/jpeg;base64,/9j/") for src in page.imgs)
    names = sorted(os.path.basename(p) for p in page.by_class["path"])
    assert names == ["a.jpg", "b.png", "caf\ufffd.jpg", 'odd <&> "name".jpg']
    assert len(page.by_class["bars"]) == 4
    failed = [row for row in page.rows if row]
    assert len(failed) == 1 and failed[0][0].endswith("corrupt.jpg") and failed[0][1]
    summary = r"4 classified, 1 failed in [\d.]+ s \(start [\d.]+ s, then [\d.]+ images/s\)"
    assert re.fullmatch(summary, page.by_class["summary"][0])
    assert "http://" not in text and "https://" not in text
    assert not any(v.startswith(("http:", "https:", "//")) for v in page.attrs_seen)
    assert leftovers(target.parent) == []


def test_cli_report_unwritable_is_one_error_line(cli, images, random_weights, tmp_path):
    r = cli("predict", *images, "-m", "x0_5", "--weights", random_weights, "--report", tmp_path / "no" / "r.html")
    assert r.exit_code == 2
    assert r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0].startswith("Error: cannot write --report ")
    assert "Hint: " in r.stderr
    assert "Traceback" not in r.stderr


# --- in a real browser -------------------------------------------------------------------------------

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

# Runs before the report's Content-Security-Policy <meta> (which forbids scripts from there on) and,
# once everything has loaded, writes into the DOM how many <img> elements actually decoded.
PROBE = """<script>window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  var p = document.createElement("p"); p.id = "probe"; p.textContent = "images=" + imgs.length + " loaded=" + ok;
  document.body.appendChild(p);
});</script>
"""


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")
def test_every_image_renders_in_headless_chromium(report_run, tmp_path):
    _, target = report_run
    probed = tmp_path / "probed.html"
    probed.write_text(target.read_text(encoding="utf-8").replace("<head>\n", "<head>\n" + PROBE, 1), encoding="utf-8")
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", probed.as_uri(),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG).stdout
    assert re.search(r'<p id="probe">images=4 loaded=4</p>', out), out[-2000:]


def test_report_to_dev_stdout_appended_to_a_log_keeps_the_log(tmp_path):
    """`--report /dev/stdout >> log`: /dev/stdout then leads to a regular file, which must be written
    into, never replaced (that would drop the log and whatever else went to stdout)."""
    import subprocess
    import sys

    log = tmp_path / "log.txt"
    log.write_text("OLD LOG\n")
    code = (
        "import sys; from shufflenet_cli.output.report import HtmlReport; from shufflenet_cli.records import Record\n"
        "print('before', flush=True)\n"
        "r = HtmlReport('/dev/stdout', title='t'); r.add([Record('a.jpg', error='bad')])\n"
        "r.close('0 classified, 1 failed')\n"
        "print('after', flush=True)\n"
    )
    with open(log, "a") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, check=True, timeout=HANG)
    text = log.read_text()
    assert text.startswith("OLD LOG\nbefore\n<!DOCTYPE html>") and text.endswith("</html>\nafter\n")


def test_report_paths_that_cannot_be_a_file_are_clean_errors(cli, random_weights, images, tmp_path):
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    r = cli("predict", images[0], "-m", "x0_5", "--weights", random_weights, "--report", tmp_path / "loop1")
    assert r.exit_code == 2 and "cannot write --report" in r.stderr and "Traceback" not in r.stderr

    from shufflenet_cli.options import PredictOptions, validate

    validate(PredictOptions([], output=Path("/dev/null"), report=Path("/dev/null")))  # both thrown away: allowed


def test_report_shows_bidi_controls_in_names_escaped():
    page = card_html(rec("x\u202egpj.exe")) + error_row_html(Record("y\u2067z.jpg", error="e\u202ex"))
    assert not any(ch in page for ch in "\u202e\u2067")
    assert "x\\u202egpj.exe" in page and "y\\u2067z.jpg" in page and "e\\u202ex" in page


def test_report_removes_temporary_files_a_killed_run_left_and_keeps_a_running_ones(tmp_path):
    import sys

    from shufflenet_cli.atomic import temp_prefix

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=HANG)
    target = tmp_path / "report.html"
    dead = [tmp_path / (temp_prefix("report.html", child.pid) + f"abcdefgh{s}") for s in (".cards.tmp", ".html.tmp")]
    live = tmp_path / (temp_prefix("report.html", os.getppid()) + "abcdefgh.errors.tmp")
    for path in (*dead, live):
        path.write_text("<article>")
    report = HtmlReport(target, "t")
    report.add([rec()])
    report.close("1 classified")
    assert leftovers(tmp_path) == [live.name]
