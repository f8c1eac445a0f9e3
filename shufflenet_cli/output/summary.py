"""The lines on stderr after a run: the summary, and the --timings breakdown."""

from __future__ import annotations

from rich.console import Console

from shufflenet_cli.outcome import Outcome, Stats


def summary_line(outcome: Outcome) -> str:
    """`N classified, M failed in T s (start S s, then R images/s)`: the whole command's time;
    the rate is over the batches only (decode to output), after the start (model load, ONNX export)."""
    s = outcome.stats
    head = "interrupted: " if outcome.interrupted else ""
    rate = s.done / max(s.elapsed, 1e-9)
    timing = f"{rate:.1f} images/s" if s.start_s is None else f"start {s.start_s:.2f} s, then {rate:.1f} images/s"
    line = f"{head}{s.classified} classified, {s.failed} failed in {s.total_s:.2f} s ({timing})"
    if outcome.skipped or outcome.earlier_failed:
        line += f"; {outcome.skipped} input(s) skipped, already in the output (--resume)"
        if outcome.earlier_failed:
            line += f": {outcome.earlier_failed} of them failed in an earlier run"
    return line


def timings_lines(outcome: Outcome) -> list[str]:
    s = outcome.stats
    n = max(s.done, 1)
    ms = lambda seconds: 1000.0 * seconds / n  # noqa: E731
    t = outcome.tuning
    if t is None:  # nothing ran (e.g. --resume with every input done)
        return ["timings: nothing to classify"]
    kind = "inline" if t.workers == 0 else "processes" if t.processes else "threads"
    first = []
    if s.first_batch is not None:
        steady = s.after_first_batch
        after = f"{steady:.1f} images/s after it" if steady is not None else "the only batch"
        first = [f"  first batch done after {s.first_batch[0]:.2f} s (workers starting, first forward pass); {after}"]
    rate = f"{s.done / max(s.elapsed, 1e-9):.1f} images/s end-to-end over {s.done} inputs (decode to output)"
    start = []
    if s.start_s is not None:
        start = [
            f"  start {s.start_s:.2f} s (inputs, outputs, model load and backend set-up); {s.total_s:.2f} s in all"
        ]
    return [
        f"timings: {rate}",
        *start,
        *first,
        *_fetch_line(s),
        f"  read+decode {ms(s.decode_s):.2f} ms/image (worker time), preprocess {ms(s.preprocess_s):.2f} ms/image "
        f"(worker time), inference {ms(s.inference_s):.2f} ms/image, output {ms(s.output_s):.2f} ms/image",
        f"  waiting for decoded images {ms(s.wait_s):.2f} ms/image (in the main process; "
        + (
            "with --workers 0 this is the decoding itself)"
            if t.workers == 0
            else "large when decoding is the bottleneck)"
        ),
        f"  backend {outcome.backend}; batch size {t.batch_size}, workers {t.workers} ({kind}), threads {t.threads}",
        *_draft_line(s),
    ]


def _fetch_line(s: Stats) -> list[str]:
    """Remote inputs' fetches, apart from their decodes; nothing where the run fetched none."""
    if not s.fetched:
        return []
    each = 1000.0 * s.fetch_s / s.fetched
    return [f"  fetch {each:.2f} ms per fetched input, {s.fetched} of them (worker time, mostly network waits)"]


def _draft_line(s: Stats) -> list[str]:
    if not s.drafted:
        return []
    line = f"  JPEG DCT scaling: {s.drafted} image(s) decoded at a reduced scale"
    if s.rechecked is not None:  # the default's check (near_ties.py); --fast-decode has none
        line += f", {s.rechecked} of them decoded again at full size and classified again (near-ties"
        if s.rechecked:
            each = 1000.0 * s.recheck_s / s.rechecked
            line += f"; {each:.1f} ms each: the decode, on threads of its own, and the second forward pass"
        line += ")"
    return [line]


def interrupted_note(output: str, partial: str, jsonl: str) -> str:
    """What an interrupted json --output left, and how a run goes on where it stops (--resume reads
    JSON Lines and CSV only). The paths as the terminal may show them."""
    return (
        f"interrupted: {output} left as it was; the records done so far are in {partial}; to go on where a run "
        f"stops, write JSON Lines or CSV (-o {jsonl}) and rerun it with --resume"
    )


def print_summary(err: Console, outcome: Outcome) -> None:
    err.print(summary_line(outcome), markup=False, highlight=False)


def print_timings(err: Console, outcome: Outcome) -> None:
    for line in timings_lines(outcome):
        err.print(line, markup=False, highlight=False)
