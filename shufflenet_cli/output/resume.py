"""--resume, in one place: what --output FILE already holds, cutting a record that a killed run left
unfinished, and skipping the inputs that already have a record.

Only a FILE this tool wrote is resumed: a line that is not a record, or another csv header, is a
usage error and FILE is left as it is; so is one made with other settings (its provenance, in
`FILE.shufflenet.json` beside it, says which). Paths are matched as absolute paths from the current
folder (`./photos/a.jpg`, `photos/a.jpg` and `/home/me/photos/a.jpg` are one); symlinks are not
followed. Inputs that match none of FILE's records stop the run before anything is classified.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from rich.console import Console

from shufflenet_cli import __version__
from shufflenet_cli.atomic import is_stream
from shufflenet_cli.errors import OutputError, UsageError
from shufflenet_cli.inputs.paths import STALL, Input, WalkOptions, iter_inputs
from shufflenet_cli.models import DEFAULT_MODEL, ModelSpec, resolve_model
from shufflenet_cli.options import RESUMABLE, PredictOptions
from shufflenet_cli.output.display import clean_text
from shufflenet_cli.output.formats import CSV_HEADER, CSV_UNSAFE_START, unquote_csv_cell
from shufflenet_cli.urls import is_remote_url
from shufflenet_cli.weights import own_path, sha256_file

SIDECAR = ".shufflenet.json"  # FILE + this: what made FILE's records (provenance)
# The settings that change what a record says; a file whose records were made with others is not
# appended to. The tool's version is kept, not compared: an upgrade may resume.
COMPARED = ("model", "weights", "labels", "topk", "threshold")


def drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write can leave half a line: cut it so that resuming appends cleanly."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            idx = f.read(step).rfind(b"\n")
            if idx >= 0:
                f.truncate(pos + idx + 1)
                return
        f.truncate(0)


def truncate_to_complete(path: Path, fmt: str, cut_at: int | None = None) -> None:
    """Cut what a killed run may have left unfinished, exactly what `completed_paths` leaves out (csv:
    at `cut_at` where it found the end already; the file is not read through twice)."""
    if fmt == "csv":
        keep = cut_at if cut_at is not None else _scan_csv(path)[2]
        with open(path, "rb+") as f:
            f.truncate(keep)
    else:
        drop_partial_last_line(path)


class Completed(NamedTuple):
    """The complete records of a results file, per path: all of them, and the error records among them;
    csv: the byte offset where they end (a killed run's unfinished last record is cut there); the
    file's size when it was read (None: not read), so that a change by another run before this
    one holds its lock is seen."""

    records: Counter[str]
    failed: Counter[str]
    cut_at: int | None = None
    size: int | None = None

    @classmethod
    def unread(cls) -> Completed:
        return cls(Counter(), Counter())


def completed_paths(path: Path, fmt: str, csv_safe: bool = False) -> Completed:
    """How many complete records each path has in a jsonl or csv results file, and how many of them
    are error records (for --resume).

    A count, not a set: a file named twice in the inputs has two records, and only as many
    occurrences as are done get skipped.

    jsonl: every whole line that parses. A last line without its newline was cut mid-write: not done.
    csv: a record is several rows (one per prediction) and a kill can fall between them, so the
    last record in the file is never counted as done; it is cut and classified again. csv_safe
    (--csv-safe): paths were written with formats.csv_safe_cell, and are read back without it.
    """
    if fmt not in RESUMABLE:
        raise UsageError("--resume needs --output FILE with --format jsonl or csv")
    if not path.exists():
        return Completed(Counter(), Counter())
    try:
        size = path.stat().st_size
        if fmt == "csv":
            return Completed(*_scan_csv(path, csv_safe), size=size)
        return Completed(*_scan_jsonl(path), size=size)
    except OSError as exc:
        raise OutputError(f"cannot read --output {path} to resume: {exc.strerror or exc}") from exc


def _scan_jsonl(path: Path) -> tuple[Counter[str], Counter[str]]:
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break  # half a line: drop_partial_last_line cuts it
            try:
                record = json.loads(line.decode("utf-8", "surrogateescape"))
                if not isinstance(record["path"], str):
                    raise TypeError("a path that is not a string")
                done[record["path"]] += 1
            except (ValueError, KeyError, TypeError):
                if not line.strip():
                    continue
                raise _not_results(path, f"line {number} is not a record of this tool") from None
            if "error" in record:
                failed[record["path"]] += 1
    return done, failed


def _not_results(path: Path, why: str) -> UsageError:
    """--resume appends to FILE: never to a file that this tool did not write (notes, another table)."""
    return UsageError(
        f"--resume: {path} does not look like results of shufflenet predict ({why}); nothing was appended",
        hint="give --output a new file, or the results file of the run to resume",
    )


def _scan_csv(path: Path, csv_safe: bool = False) -> tuple[Counter[str], Counter[str], int]:
    """Paths of all records but the last, those of them that are errors, and the byte offset where the
    last record begins.

    A record is a run of rows with one path that starts at rank 1 (or is a single error/empty row).
    """
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    last_failed = False
    pos = 0  # bytes handed to the csv reader so far

    def lines(f: IO[bytes]) -> Iterator[str]:
        nonlocal pos
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # half a line
            pos += len(raw)
            yield raw.decode("utf-8", "surrogateescape")

    keep = 0  # end of the last row before the current record
    last_start = 0  # where the current (last) record's rows begin
    last_path: str | None = None
    with open(path, "rb") as f:
        reader = csv.reader(lines(f), strict=True)
        first = True
        try:
            for row in reader:
                if first and tuple(row) == CSV_HEADER:
                    keep = last_start = pos
                    first = False
                    continue
                if first:
                    raise _not_results(path, f"its first row is not the header {','.join(CSV_HEADER)}")
                if not row:
                    continue
                if len(row) != len(CSV_HEADER):
                    raise _not_results(path, f"a row has {len(row)} columns, not {len(CSV_HEADER)}")
                if csv_safe:
                    row[0] = _csv_safe_path(path, row[0])
                if row[0] != last_path or row[1] in ("", "1"):
                    if last_path is not None:
                        done[last_path] += 1
                        if last_failed:
                            failed[last_path] += 1
                    last_path, last_start = row[0], keep
                    last_failed = row[-1] != ""  # the error column
                keep = pos
        except csv.Error:
            pass  # a quoted field cut mid-write
    return done, failed, last_start if last_path is not None else keep


def _csv_safe_path(path: Path, cell: str) -> str:
    """A path cell of a --csv-safe file as the path it stands for. A cell that --csv-safe would have
    quoted, found bare, means FILE was written without it: reading on would skip the wrong inputs."""
    if cell[:1] in CSV_UNSAFE_START:
        raise UsageError(
            f"--resume --csv-safe: {path} was written without --csv-safe ({cell!r}); nothing was appended",
            hint="resume it the way it was written: without --csv-safe",
        )
    return unquote_csv_cell(cell)


def skip_done(
    inputs: Iterable[Input], done: Counter[str], failed: Counter[str] | None = None, tally: Counter[str] | None = None
) -> Iterator[Input]:
    """--resume: drop as many occurrences of each path as already have a record. `tally["skipped"]`
    counts the dropped ones, `tally["failed"]` those whose record is an error (of a path's records,
    the errors first)."""
    left: Counter[str] = Counter()
    left_failed: Counter[str] = Counter()
    cwd = os.getcwd()
    pairs: tuple[tuple[Counter[str], Counter[str]], ...] = ((done, left), (failed or Counter(), left_failed))
    for counts, into in pairs:
        for path, n in counts.items():
            into[_same_path(path, cwd)] += n
    for item in inputs:
        key = None if item is STALL else _same_path(item.path, cwd)  # STALL: stdin is quiet; never skipped
        if key is not None and left[key] > 0:
            left[key] -= 1
            if tally is not None:
                tally["skipped"] += 1
                if left_failed[key] > 0:
                    left_failed[key] -= 1
                    tally["failed"] += 1
            continue
        yield item


def _same_path(path: str, cwd: str) -> str:
    """One spelling for one path (`./photos/a.jpg`, `photos/a.jpg`, and absolute from `cwd`), so a
    resumed run given the folder another way still finds what is done. Textual: links not followed,
    which would cost a look at the disk for each of a million records. A URL is matched as given."""
    return os.path.normpath(os.path.join(cwd, path)) if path and not is_remote_url(path) else path


def check_inputs_match(
    opts: PredictOptions, walk: WalkOptions, first: Input | None, skipped: int, done: Counter[str]
) -> None:
    """--resume: UsageError (exit 2) where FILE holds records and none of the inputs has one (the
    first run was given relative paths from another folder, or other files): going on would classify
    everything again after FILE's records. Called with the first input left to classify and how many
    `skip_done` skipped before it; only then, when nothing was, are the inputs walked once more to
    look for any match. Inputs from stdin are read once: not checked."""
    if first is None or first is STALL or skipped or not done or "-" in opts.paths:
        return
    cwd = os.getcwd()
    keys = {_same_path(path, cwd) for path in done}
    if any(item is not STALL and _same_path(item.path, cwd) in keys for item in iter_inputs(opts.paths, walk)):
        return
    example = next(iter(done))
    raise UsageError(
        f"--resume: none of the inputs has a record in {opts.output}, which holds {sum(done.values())}; "
        f"it has {example!r}, the inputs begin with {first.path!r}; nothing was classified",
        hint="give the inputs as the first run did, from the folder it ran in (relative paths are read "
        "from there), or give --output a new file",
    )


# ---------------------------------------------------------------------------------- provenance


def sidecar_of(output: Path) -> Path:
    """Where the provenance of `output` is kept: beside it, `FILE.shufflenet.json`."""
    return output.with_name(output.name + SIDECAR)


def provenance(opts: PredictOptions) -> dict[str, Any] | None:
    """What makes the records of `opts.output` what they are, from the options alone: the model, the
    weights (a file's sha256; torchvision's by its file name, which carries its hash, known without
    torch), the labels, --topk, --threshold, the tool's version. None for stdout, a stream, json."""
    output = opts.output
    if output is None or opts.fmt not in RESUMABLE or str(output) == "-" or is_stream(output):
        return None
    # No model with --weights: the width is the file's, which its sha256 names already.
    spec = resolve_model(opts.model or DEFAULT_MODEL)
    return {
        "tool": "shufflenet predict",
        "version": __version__,
        "model": spec.arch if opts.model or opts.weights is None else None,
        "weights": _sha256(opts.weights) if opts.weights is not None else _default_weights(spec),
        "labels": _sha256(opts.labels) if opts.labels is not None else "imagenet",
        "topk": opts.topk,
        "threshold": opts.threshold,
    }


def _default_weights(spec: ModelSpec) -> str | None:
    """Your own default weights of the width (`download --from FILE --force`) by their sha256, as a
    --weights file; else torchvision's by its file name."""
    own = own_path(spec)
    return _sha256(own) if own.is_file() else spec.weights_file


def _sha256(path: Path) -> str | None:
    """A file's identity; None where it cannot be read (loading it then fails with its own error)."""
    try:
        return "sha256:" + sha256_file(path)
    except OSError:
        return None


def read_provenance(output: Path) -> dict[str, Any] | None:
    """The provenance kept beside `output`; None where there is none that can be read (a file
    written before this tool kept one, or one copied without it)."""
    try:
        kept = json.loads(sidecar_of(output).read_bytes())
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) else None


def check_provenance(opts: PredictOptions, completed: Completed, err: Console | None = None) -> None:
    """--resume: UsageError (exit 2) where FILE's records were made with another model, weights,
    labels, --topk or --threshold, naming each that differs and what it was. FILE without provenance
    is resumed with a warning on `err`: the settings it was made with are not known. A csv FILE of
    one record is checked too: that record is classified again, but the provenance kept stays."""
    ours = provenance(opts)
    if opts.output is None or ours is None or not completed.size:  # a new or empty FILE gets ours
        return
    kept = read_provenance(opts.output)
    if kept is None:
        if err is not None and not opts.quiet:
            err.print(
                f"warning: {clean_text(str(opts.output))} does not say what made its records (no readable "
                f"{clean_text(sidecar_of(opts.output).name)}): appending without checking the model, "
                "weights, labels, --topk and --threshold",
                highlight=False,
                markup=False,
            )
        return
    # a setting not known on either side (an unreadable file, a width left to the weights) is not compared
    differ = [key for key in COMPARED if None not in (kept.get(key), ours[key]) and kept[key] != ours[key]]
    if differ:
        then = " and ".join(_setting(key, kept[key]) for key in differ)
        now = " and ".join(_setting(key, ours[key]) for key in differ)
        raise UsageError(
            f"--resume: {opts.output} was made with {then}, not {now}; nothing was appended",
            hint="resume with the settings it was made with (they are in "
            f"{sidecar_of(opts.output).name}), or give --output a new file",
        )


def _setting(key: str, value: Any) -> str:
    """A setting as the command line gives it."""
    if key in ("weights", "labels") and isinstance(value, str) and value.startswith("sha256:"):
        return f"--{key} of {value[:19]}..."  # the sha256 of that file: enough of it to tell files apart
    if key == "weights":
        return f"torchvision's weights {value}"
    if key == "labels":
        return "ImageNet's labels" if value == "imagenet" else f"labels {value}"
    return f"--{key} {value}"
