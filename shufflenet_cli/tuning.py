"""Defaults that depend on the machine: batch size, decode workers, inference threads."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shufflenet_cli.options import PredictOptions


@dataclass
class Tuning:
    batch_size: int
    workers: int
    threads: int
    processes: bool = False  # decode workers are processes, not threads


def default_tuning(device_type: str, opts: PredictOptions) -> Tuning:
    """The run's batch size, decode workers and inference threads: the measured defaults
    (docs/performance.md, "Defaults"), each overridden by its option.

    CPU: one decode worker and one inference thread per core. Inference cuts each batch into
    `threads` slices run at once on one intra-op thread each (onnxruntime and torch alike), so the
    decode threads and the inference threads share the cores a batch at a time, never spinning or
    waiting on each other inside a layer; decode workers stop when the read-ahead window is full.
    The batch is the smallest of the sizes that tied, so the first records come soonest; big photos
    need every core to decode.
    CUDA: a large batch; decode workers as processes (threads stop scaling where the Python work
    around each decode holds the GIL); one torch thread in the main process, whose host-side work is
    copying batches, leaving the cores to the decode workers.
    """
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use (containers, taskset)
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    cores = max(1, cores)
    if device_type == "cuda":  # many cores feeding a fast device: threads stop scaling (decoding.py)
        batch, workers, threads, processes = 128, min(16, cores), 1, True
    else:
        threads = min(cores, 16)
        workers = min(cores, 16)
        batch = min(256, max(32, 16 * threads))
        processes = False
    return Tuning(
        batch_size=opts.batch_size or batch,
        workers=workers if opts.workers is None else opts.workers,
        threads=opts.threads or threads,
        processes=processes if opts.decode_in == "auto" else opts.decode_in == "processes",
    )
