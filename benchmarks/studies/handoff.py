"""How fast the main process can take crops from decode workers, with decoding itself taken out.

    python -m benchmarks.studies.handoff                 # about 20 s on 2 cores
    python -m benchmarks.studies.handoff --items 50000 --workers 4

One worker whose "decoder" returns a ready 224x224x3 uint8 crop at once, through
`shufflenet_cli.decode.workers.decode_in_order`: (1) worker threads; (2) worker processes with the crops
in shared-memory slots (the CUDA default); (3) worker processes with the crops pickled through the
pool's pipe (what (2) replaced; a decoder without a `crop` size still goes this way); (4) as (3)
with 48-byte crops, which shows whether the bytes or the tasks cost. Then the whole loop the main
process runs, `pipeline.run` (crops -> batches of 128 -> records) with a backend that answers at
once, from threads and from processes: the most records a second the CPU side can deliver to any
model. Prints crops (records) per second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import Instant
from shufflenet_cli.decode.preprocess import Crop
from shufflenet_cli.decode.workers import decode_in_order
from shufflenet_cli.inputs.paths import Input


class Ready:
    """A decoder that returns a fixed crop at once; `crop` set means shared-memory slots are used."""

    def __init__(self, shape: tuple[int, int, int], slots: bool) -> None:
        self.shape = shape
        if slots:
            self.crop = shape[0]

    def __call__(self, path: str) -> Crop:
        return Crop(np.full(self.shape, 7, np.uint8), 0.0, 0.0)


def rate(decoder: Ready, items: int, workers: int, processes: bool) -> float:
    t0 = time.perf_counter()
    got = sum(
        d.array is not None
        for d in decode_in_order(
            (Input(str(i)) for i in range(items)), decoder, workers=workers, window=256, processes=processes
        )
    )
    assert got == items
    return items / (time.perf_counter() - t0)


def pipeline_rate(decoder: Ready, items: int, workers: int, processes: bool) -> float:
    from shufflenet_cli import pipeline

    labels = [str(i) for i in range(1000)]
    t0 = time.perf_counter()
    inputs = (Input(str(i)) for i in range(items))
    got = sum(
        len(r)
        for r in pipeline.run(inputs, decoder, Instant(), labels, batch_size=128, workers=workers, processes=processes)
    )
    assert got == items
    return items / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    crop = (224, 224, 3)
    rows = [
        ("threads", Ready(crop, slots=False), False),
        ("processes, shared-memory slots", Ready(crop, slots=True), True),
        ("processes, pickled through the pipe", Ready(crop, slots=False), True),
        ("processes, pickled, 48-byte crops", Ready((4, 4, 3), slots=False), True),
    ]
    print(f"{args.items} crops, {args.workers} worker(s)")
    for name, decoder, processes in rows:
        print(f"  {name:40s} {rate(decoder, args.items, args.workers, processes):10.0f} crops/s")
    for name, processes in (("threads", False), ("processes, shared-memory slots", True)):
        r = pipeline_rate(Ready(crop, slots=True), args.items, args.workers, processes)
        print(f"  pipeline.run, instant backend, {name:30s} {r:8.0f} records/s")


if __name__ == "__main__":
    main()
