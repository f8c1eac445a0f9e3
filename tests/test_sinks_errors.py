"""Results that cannot be written as they should: odd file names in CSV, a full disk, a closed stdout,
a reader that goes away (`| head`). Every format, the table too, follows the README's exit codes."""

from __future__ import annotations

import csv
from collections import Counter

from conftest import make_image
from test_inputs import run  # noqa: F401  (run is a fixture)
from test_streaming import spy_batches

from shufflenet_cli.sinks import completed_paths


def test_resume_csv_recognises_names_with_carriage_returns(run, tmp_path, monkeypatch):  # noqa: F811
    d = tmp_path / "imgs"
    names = ["a.jpg", "b\rc.jpg", "d\r\ne.jpg", "f\ng.jpg", "\rh.jpg", "i.jpg"]
    data = make_image(d / "x.jpg", size=(16, 16)).read_bytes()
    (d / "x.jpg").unlink()
    for name in names:
        (d / name).write_bytes(data)
    paths = sorted(str(d / name) for name in names)
    out = tmp_path / "out.csv"
    assert run(d, "-o", out, fmt="csv").exit_code == 0

    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert [row[0] for row in rows[::2]] == paths  # two rows (-k 2) per record, none split
    assert all(len(row) == 6 for row in rows)

    assert completed_paths(out, "csv") == Counter(paths[:-1])  # csv: the last record is always redone
    classified: list[str] = []
    spy_batches(monkeypatch, lambda batch: classified.extend(rec.path for rec in batch))
    before = out.read_bytes()
    assert run(d, "--resume", "-o", out, fmt="csv").exit_code == 0
    assert classified == paths[-1:]
    assert out.read_bytes() == before
