"""`--engine ray`'s entry point: `batches(...)` yields the records of the inputs in input order, as the
local engine's batch loop (pipeline.run) does, so the runner's sink, --resume, --report, progress bar
and summary work unchanged.

Windows: the inputs are read lazily, WINDOW_PER_ACTOR per actor at a time (MIN_WINDOW at least), and
each window is one Ray Data execution. A dataset is built from a list, so one dataset for a bucket of
ten million keys would hold them all in the driver first; a window holds a few thousand. Each window
starts its actor pool again (the model is built anew in each actor), which the window's size makes
small beside its work; the weights go into the object store once per run.

Order: each row keeps its input's index, and the driver puts the records back in order, holding at
most one window's records. Not Ray's `preserve_order`: then a slow block holds back every later one
inside Ray as well, and here the index also proves that every input came back exactly once, which is
checked at the end of each window (a row lost or doubled would shift every later record's path).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shufflenet_cli import weights
from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.errors import EngineError, ModelLoadError, ShufflenetError
from shufflenet_cli.inputs.paths import STALL, Input
from shufflenet_cli.models import ModelSpec
from shufflenet_cli.options import PredictOptions
from shufflenet_cli.outcome import Stats
from shufflenet_cli.ray_engine.cluster import address_for, connect
from shufflenet_cli.ray_engine.sizing import Sizing, size_for
from shufflenet_cli.ray_engine.watchdog import Feed
from shufflenet_cli.ray_engine.worker import to_bytes
from shufflenet_cli.records import Record
from shufflenet_cli.urls import is_remote_url

MIN_WINDOW = 4096
WINDOW_PER_ACTOR = 2048
CLOSE_GRACE_S = 30.0  # at most this long (plus a little) for a stopped run's last Ray call to return


def batches(
    inputs: Iterator[Input],
    opts: PredictOptions,
    spec: ModelSpec,
    prep: Preprocess,
    stats: Stats,
    should_stop: Callable[[], bool],
) -> Iterator[list[Record]]:
    """The records of `inputs`, in input order, in lists as they complete; an input's error (or its
    file's) is its record, in its place. Returns early once `should_stop()`.
    Raises UsageError (exit 2) for an address or option the engine refuses, EngineError (exit 3)
    where the cluster cannot be used or the run stops making progress, ModelLoadError (exit 3) for
    weights that cannot be read."""
    address = address_for(opts.ray_address)
    timeout_s = opts.ray_timeout  # above 0: options.validate
    weights_data = _read(_weights_file(spec, opts), "weights")  # before Ray starts: a bad file fails at once
    labels_data = _read(opts.labels, "labels") if opts.labels is not None else None
    with connect(address) as session:
        import ray

        # Connecting (or starting a private instance) is the engine's start-up, as loading the model is
        # the local engine's: the summary counts it under "start", and the rates from here.
        stats.started = time.perf_counter()

        sizing = size_for(session.cpus, session.gpus, opts.device, opts.batch_size)
        actor_args = {
            "weights": [ray.put(weights_data)],
            "labels": [ray.put(labels_data)] if labels_data is not None else None,
            "settings": _settings(opts, spec, sizing),
        }
        window = max(MIN_WINDOW, WINDOW_PER_ACTOR * sizing.max_actors)
        feed: Feed[tuple[str, Any]] = Feed(
            lambda feed: _produce(feed, inputs, prep, sizing, actor_args, timeout_s, window), timeout_s
        )
        order = _InOrder(stats)
        try:
            for kind, item in feed.items(should_stop, order.waited):
                if kind == "window":
                    order.expect(*item)
                elif kind == "rows":
                    order.add(item)
                else:
                    order.check_complete(item)
                if records := order.take():
                    yield records
            stats.end()
        finally:
            # After a stop or the watchdog, the execution ends at its next batch or at Ray's own
            # no-progress guard (set to the same timeout), before Ray is shut down.
            feed.close(grace_s=min(timeout_s, CLOSE_GRACE_S) + 5.0)


def _produce(
    feed: Feed[tuple[str, Any]],
    inputs: Iterator[Input],
    prep: Preprocess,
    sizing: Sizing,
    actor_args: dict[str, Any],
    timeout_s: float,
    window: int,
) -> None:
    """On the feed's thread: each window's inputs, then its rows as Ray finishes them, then its end."""
    from shufflenet_cli.ray_engine.plan import window_plan

    base = 0
    for chunk in _windows(inputs, window):
        if not feed.put(("window", (base, chunk))):
            return
        rows = [
            {"index": base + i, "location": to_bytes(_location(item.path))}
            for i, item in enumerate(chunk)
            if item.error is None
        ]
        if rows:
            ds = window_plan(rows, prep, sizing, actor_args, timeout_s)
            with feed.waiting_on_ray():
                try:
                    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                        if not feed.put(("rows", batch)):
                            return
                except Exception as exc:  # noqa: BLE001 - Ray's failures, as one line with what to do
                    raise _engine_error(exc, timeout_s) from None
        base += len(chunk)
        if not feed.put(("end", base)):
            return


def _windows(inputs: Iterator[Input], size: int) -> Iterator[list[Input]]:
    """The inputs in lists of `size`; a STALL (stdin paused) ends a window early, so that the records
    of the paths that did come do not wait for more."""
    chunk: list[Input] = []
    for item in inputs:
        if item is STALL:
            if chunk:
                yield chunk
                chunk = []
            continue
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _location(path: str) -> str:
    """Where a worker finds the input: a URL as it is; a local path made absolute (a worker's current
    folder is not the driver's), as the decode reads it (a local file named like a URL stays a file)."""
    if is_remote_url(path) and not os.path.lexists(path):
        return path
    return os.path.abspath(path)


class _InOrder:
    """Records back in input order: those that came, held until every earlier one has."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.waiting: dict[int, Input] = {}  # sent to Ray, by index
        self.done: dict[int, Record] = {}
        self.next = 0

    def waited(self, seconds: float) -> None:
        self.stats.wait_s += seconds

    def expect(self, base: int, chunk: list[Input]) -> None:
        for index, item in enumerate(chunk, start=base):
            if item.error is not None:  # not an image input at all: its record at once
                self.done[index] = Record(path=item.path, error=item.error)
            else:
                self.waiting[index] = item

    def add(self, batch: dict[str, Any]) -> None:
        for index, blob in zip(batch["index"].tolist(), batch["record"], strict=True):
            item = self.waiting.pop(index, None)
            if item is None:
                raise EngineError(f"Ray returned input {index} twice, or one it was never given: stopped")
            self.done[index] = dataclasses.replace(pickle.loads(blob), path=item.path)
        self.stats.decode_s += float(batch["decode_s"].sum())
        self.stats.preprocess_s += float(batch["preprocess_s"].sum())
        self.stats.drafted += int(batch["drafted"].sum())
        self.stats.inference_s += float(batch["inference_s"].sum())
        self.stats.batches += int(batch["batches"].sum())

    def check_complete(self, end: int) -> None:
        if self.next < end:
            lost = sorted(i for i in self.waiting if i < end)
            raise EngineError(f"Ray returned no record for {len(lost)} input(s) of the window: stopped")

    def take(self) -> list[Record]:
        out = []
        for index in itertools.count(self.next):
            record = self.done.pop(index, None)
            if record is None:
                break
            out.append(record)
        self.next += len(out)
        forward = False
        for record in out:
            if record.error is None:
                self.stats.classified += 1
                forward = True
            else:
                self.stats.failed += 1
        if forward and self.stats.first_batch is None:
            self.stats.first_batch = (self.stats.elapsed, self.stats.done)
        return out


def _weights_file(spec: ModelSpec, opts: PredictOptions) -> Path:
    """The weights the local engine would load: --weights, your own default for the width, or
    torchvision's cached file (downloaded here where it is missing, so workers never download)."""
    if opts.weights is not None:
        return opts.weights
    own = weights.own_weights(spec)
    return own if own is not None else weights.download(spec, progress=False)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read the {what} file {path}: {exc.strerror or exc}") from None


def _settings(opts: PredictOptions, spec: ModelSpec, sizing: Sizing) -> dict[str, Any]:
    """What each actor's Classifier is built with: the run's options, on the actor's device."""
    return {
        "model": spec.key,
        "device": sizing.device,
        "backend": opts.backend,
        "precision": opts.precision,
        "batch_size": sizing.batch_size,
        "threads": 1,  # the one CPU each actor asks for (sizing.py)
        "decode": opts.decode,
        "timeout": opts.timeout,
        "max_download": opts.max_download,
        "topk": opts.topk,
        "threshold": opts.threshold,
    }


def _engine_error(exc: Exception, timeout_s: float) -> ShufflenetError:
    """A failure inside Ray as the error the user sees: our own (a model that does not load in the
    actors) as it was raised there; Ray's no-progress guard as the watchdog's message; else one line."""
    from shufflenet_cli.ray_engine.watchdog import STALLED, STALLED_HINT

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ShufflenetError):
            return cause
        if type(cause).__name__ == "ExecutionTimeoutError":
            return EngineError(STALLED.format(seconds=timeout_s), hint=STALLED_HINT)
        cause = cause.__cause__ or getattr(cause, "cause", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return EngineError(f"the Ray engine failed: {type(exc).__name__}: {first}")
