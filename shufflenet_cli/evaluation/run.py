"""`evaluate` as a library call: labelled inputs found, `runner.predict` run on them, its records counted.

Evaluation is `predict` itself (the same models, weights, devices, backends, decoding and input
handling), watched through its `on_records` hook; nothing here runs a model. predict's own records go
to `--predictions FILE` as jsonl, or else to the null device: writing jsonl there costs little, and
it leaves the runner's sinks exactly as `predict` uses them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from shufflenet_cli import runner, weights
from shufflenet_cli.errors import UsageError
from shufflenet_cli.evaluation.labelled import Classes, Labelled, from_csv, from_folders
from shufflenet_cli.evaluation.metrics import TOPK, Tally
from shufflenet_cli.image_formats import image_extensions, parse_extensions
from shufflenet_cli.inputs.paths import WalkOptions
from shufflenet_cli.labels import imagenet_labels, imagenet_wnids, read_labels
from shufflenet_cli.models import resolve_model
from shufflenet_cli.options import PredictOptions
from shufflenet_cli.outcome import Outcome
from shufflenet_cli.records import Record


@dataclass(frozen=True)
class Published:
    """torchvision's own figures for its weights of this width, on ImageNet-1K's validation set."""

    top1: float  # fractions, as the measured ones
    top5: float
    source: str


@dataclass
class Evaluation:
    tally: Tally
    names: list[str]  # class i's label
    outcome: Outcome
    model: str  # "shufflenet_v2_x0_5"
    published: Published | None  # None with --labels: other classes than torchvision's
    unlabelled: int = 0  # files in DIR outside every class folder


@dataclass(frozen=True)
class Source:
    """Where the labels come from: DIR's class folders, or `labels_from`'s rows; `limit` classes at most."""

    root: Path
    labels_from: Path | None = None
    limit: int | None = None


def find_labelled(source: Source, opts: PredictOptions, names: list[str]) -> Labelled:
    if not source.root.is_dir():
        raise UsageError(f"{source.root} is not a folder", hint="give the folder that holds the labelled images")
    if source.limit is not None and source.limit < 1:
        raise UsageError("--limit must be at least 1")
    classes = Classes(names, wnids=imagenet_wnids() if opts.labels is None else None)
    if source.labels_from is not None:
        return from_csv(source.root, source.labels_from, classes, source.limit)
    walk = WalkOptions(
        recursive=opts.recursive,
        hidden=opts.hidden,
        extensions=parse_extensions(opts.ext) if opts.ext else image_extensions(),
    )
    return from_folders(source.root, classes, walk, source.limit)


def evaluate(
    source: Source, opts: PredictOptions, predictions: Path | None = None, stderr: Console | None = None
) -> Evaluation:
    """Classify the labelled images of `source` with `opts` (its paths, format and output are set
    here) and count the answers; the outcome's exit code is predict's (1 where a file failed)."""
    spec = weights.spec_for(opts.model, opts.weights)
    names = read_labels(opts.labels) if opts.labels else imagenet_labels()
    labelled = find_labelled(source, opts, names)
    tally = Tally(labelled.classes)
    count = _counter(labelled, tally)
    run_opts = replace(
        opts,
        paths=labelled.paths,
        fmt="jsonl",
        output=predictions if predictions is not None else Path(os.devnull),
        topk=max(opts.topk, TOPK),
        threshold=0.0,  # a dropped prediction would read as a wrong one
        resume=False,
        report=None,  # evaluate's report is its own page
    )
    outcome = runner.predict(run_opts, stderr=stderr, on_records=count)
    published = None if opts.labels else published_for(spec.key)
    return Evaluation(tally, names, outcome, spec.arch, published, labelled.unlabelled)


def _counter(labelled: Labelled, tally: Tally) -> runner.RecordsHook:
    """The hook that counts each batch: records come back in input order, so record i is input i."""
    done = 0

    def count(records: list[Record]) -> None:
        nonlocal done
        for record in records:
            path, truth = labelled.paths[done], labelled.truth[done]
            if record.path != path:  # a bug in the runner's ordering, not in the user's data
                raise RuntimeError(f"record {done} is for {record.path!r}, expected {path!r}")
            tally.add(record, truth)
            done += 1

    return count


def published_for(model: str) -> Published | None:
    """torchvision's published accuracy for the width's IMAGENET1K_V1 weights (from its metadata, offline)."""
    from shufflenet_cli.catalog import model_row

    row = model_row(resolve_model(model))
    return Published(row.acc1 / 100.0, row.acc5 / 100.0, f"torchvision {row.arch} IMAGENET1K_V1")
