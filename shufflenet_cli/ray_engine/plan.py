"""The Ray Data plan for one window of inputs: their locations -> decode (Ray tasks) -> classify (an
autoscaling pool of actors) -> rows of pickled records, each with its input's index.

Not `read_images` or `read_binary_files`: `read_images` fails the whole run on one unreadable file,
`max_errored_blocks` would drop whole blocks of good images with the bad one, and either makes one
read task for many small files unless told otherwise. Here the locations are the dataset, split into
blocks of DECODE_ROWS, and a decode task reads and decodes its files itself, each failure that input's
error record. Object-store URIs are read by the decode tasks, never through the driver.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.ray_engine.sizing import DECODE_MEMORY, DECODE_ROWS, Sizing
from shufflenet_cli.ray_engine.worker import ClassifyActor, decode_rows


def window_plan(
    rows: list[dict[str, Any]],
    prep: Preprocess,
    sizing: Sizing,
    actor_args: dict[str, Any],
    timeout_s: float,
) -> Any:
    """The dataset for `rows` ({"index": int, "location": bytes}); nothing runs until it is iterated.
    `actor_args`: ClassifyActor's constructor arguments. `timeout_s`: Ray Data's own no-progress
    guard, which also ends the execution on the cluster where the driver's watchdog gives up."""
    import ray.data

    _quiet_console()
    ds: Any = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / DECODE_ROWS)))
    ds = ds.map_batches(
        decode_rows,
        fn_kwargs={"prep": prep},
        batch_size=DECODE_ROWS,
        batch_format="numpy",
        num_cpus=sizing.decode_cpus,
        memory=DECODE_MEMORY,
    )
    ds = ds.map_batches(
        ClassifyActor,
        fn_constructor_kwargs=actor_args,
        batch_size=sizing.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=sizing.min_actors, max_size=sizing.max_actors),
        num_cpus=sizing.actor_cpus,
        num_gpus=sizing.actor_gpus or None,
    )
    context = ds.context
    context.enable_progress_bars = False  # the CLI draws its own bar; Ray's would tear through it
    context.print_on_execution_start = False
    context.execution_no_progress_timeout_s = timeout_s
    return ds


def _quiet_console() -> None:
    """Ray Data logs each execution's start and end to stderr, and warns that its progress bars are off;
    the CLI's stderr is for its own progress and summary. Its log file (in the Ray session's logs)
    keeps everything; its errors still show."""
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":  # the console one; the file handlers stay as they are
            handler.setLevel(logging.ERROR)
