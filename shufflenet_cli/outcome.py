"""What a run reports: `Stats` (counts and per-stage seconds, filled in by the batch loop) and the
`Outcome` of `predict` (its exit code, and what the summary and --timings print)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from shufflenet_cli.tuning import Tuning


@dataclass
class Stats:
    """Counts and per-stage seconds, for the summary and --timings."""

    classified: int = 0
    failed: int = 0
    batches: int = 0
    decode_s: float = 0.0  # summed over workers
    fetch_s: float = 0.0  # remote inputs' bytes fetched (http(s), object storage), summed over workers
    fetched: int = 0  # inputs whose bytes were fetched (and decoded): --timings shows fetch where any were
    preprocess_s: float = 0.0  # summed over workers
    inference_s: float = 0.0
    output_s: float = 0.0
    wait_s: float = 0.0  # the main loop waiting for the next decoded input: the workers are behind
    drafted: int = 0  # JPEGs decoded at a reduced DCT scale
    rechecked: int | None = None  # of those, near-ties decoded and classified again exactly; None: no check
    recheck_s: float = 0.0  # those second decodes (on their own threads) and forward passes
    started: float = field(default_factory=time.perf_counter)  # the batch loop's start: the rates count from here
    began: float | None = None  # when `predict` was called: the whole command's time counts from here
    first_batch: tuple[float, int] | None = None  # (seconds since start, inputs done) when it finished
    ended: float | None = None  # set by end(): the rates leave out closing the output afterwards

    @property
    def after_first_batch(self) -> float | None:
        """Images/s since the first batch finished: the rate without the one-time costs (workers
        starting, the first forward pass's set-up); None until a later batch has finished."""
        if self.first_batch is None:
            return None
        seconds, done = self.first_batch
        if self.done <= done or self.elapsed <= seconds:
            return None
        return (self.done - done) / (self.elapsed - seconds)

    @property
    def done(self) -> int:
        return self.classified + self.failed

    @property
    def elapsed(self) -> float:
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    @property
    def start_s(self) -> float | None:
        """Seconds before the loop: inputs found, outputs opened, the model loaded (an ONNX export on a
        first run); None where `began` was not recorded."""
        return None if self.began is None else self.started - self.began

    @property
    def total_s(self) -> float:
        """The whole command's seconds, start included (where recorded), to the last record."""
        return self.elapsed + (self.start_s or 0.0)

    def end(self) -> None:
        """The last record is out: elapsed stops here (the first call counts)."""
        if self.ended is None:
            self.ended = time.perf_counter()


@dataclass
class Outcome:
    exit_code: int
    stats: Stats
    backend: str = ""
    tuning: Tuning | None = None
    interrupted: bool = False
    earlier_failed: int = 0  # --resume: skipped inputs whose record in --output is an error
    skipped: int = 0  # --resume: inputs skipped because --output already has their record
