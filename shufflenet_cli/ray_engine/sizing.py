"""The plan's resource requests, from the cluster's CPUs and GPUs and --device: pure arithmetic, no Ray.

Three rules, each from a way the plan fails:
- The actors never get every CPU. Decode tasks need CPUs too; with all of them held by actors that
  wait for decoded crops, nothing is decoded and the run hangs without a word. At most half the CPUs
  (all but one GPU actor's CPU on a GPU cluster) go to actors.
- Decode tasks and actors ask for different resources. Where their requests are equal, Ray Data fuses
  the decode step into the actors: each actor then decodes and classifies in turn, and the CPUs left
  for decode tasks stay idle (docs/cluster.md, "How the plan is built"). Decode tasks also reserve
  DECODE_MEMORY, which a large photo's decode does take, and which sets them apart from the actors.
- The pool autoscales from one actor to `max_actors`; each CPU actor runs one inference thread on
  its one CPU, so its request is what it uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shufflenet_cli.errors import EngineError

# Logical memory a decode task reserves: a 12-megapixel JPEG decoded whole is 36 MB, and its resize
# may take up to decode/preprocess.py's MAX_RESIZED_PIXELS (128 MiB) on top.
DECODE_MEMORY = 256 * 2**20
# Inputs per decode task: enough that a task's start-up is small beside its decodes, few enough that
# the decoded crops (150 KB each at 224 x 224) make blocks of a few MB, and that every CPU gets tasks.
DECODE_ROWS = 16
# Images per forward pass in an actor (--batch-size overrides): the local engine's CPU default for
# one inference thread; on a GPU, larger batches keep it busy between the host's copies.
CPU_BATCH = 32
GPU_BATCH = 128


@dataclass(frozen=True)
class Sizing:
    device: str  # what each actor's Classifier runs on: "cpu" or "cuda"
    actor_cpus: float
    actor_gpus: float
    min_actors: int
    max_actors: int
    decode_cpus: float
    batch_size: int


def size_for(cpus: float, gpus: float, device: str, batch_size: int | None = None) -> Sizing:
    """The requests for a cluster of `cpus` CPUs and `gpus` GPUs, and --device (auto, cpu, cuda, cuda:N).
    EngineError (exit 3) where the cluster cannot run the plan at all."""
    if cpus <= 0:
        raise EngineError(
            "the Ray cluster has no CPUs to decode on",
            hint="add nodes with CPUs (`ray start --num-cpus N`), or leave --ray-address out",
        )
    wants_gpu = device.startswith("cuda")
    if wants_gpu and gpus < 1:
        raise EngineError(
            f"--device {device}: the Ray cluster has no GPUs",
            hint="use --device cpu, or add GPU nodes to the cluster",
        )
    if wants_gpu or (device == "auto" and gpus >= 1):
        # one CPU per GPU actor for its host-side work, where the cluster has CPUs to spare for decoding
        actor_cpus = 1.0 if cpus >= 2 else cpus / 2
        actors = max(1, min(int(gpus), math.floor(cpus / 2 / actor_cpus)))
        return Sizing("cuda", actor_cpus, 1.0, 1, actors, min(1.0, cpus / 2), batch_size or GPU_BATCH)
    unit = min(1.0, cpus / 2)  # a one-CPU cluster: half a CPU each, so a decode task fits beside the actor
    actors = max(1, math.floor(cpus / 2 / unit))
    return Sizing("cpu", unit, 0.0, 1, actors, unit, batch_size or CPU_BATCH)
