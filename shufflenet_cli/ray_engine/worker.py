"""What runs on the Ray workers: `decode_rows` (Ray tasks) and `ClassifyActor` (the actor pool).

The batches between the steps are dicts of NumPy columns. Every row keeps its input's `index`, so the
driver can put the records back in input order and check that each input came back exactly once.
Optional values travel as empty strings and bytes rather than nulls, so every block has the same
column types. Paths travel as bytes (surrogateescape): a file name that is not UTF-8 is still a path.
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import tempfile
import time
import weakref
from typing import Any

import numpy as np

from shufflenet_cli.decode.decoded import Decoded, decode_one
from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.inputs.paths import Input
from shufflenet_cli.urls import is_remote_url

Batch = dict[str, np.ndarray]

# A local path that the driver listed but a worker cannot find: the node does not see the driver's files.
NOT_ON_NODE = (
    "file not found on Ray node {node}: with --engine ray, local paths must be on storage every node "
    "sees at the same path (a shared file system), or in object storage (s3://)"
)


def to_bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def from_bytes(data: bytes) -> str:
    return bytes(data).decode("utf-8", "surrogateescape")


def decode_rows(batch: Batch, prep: Preprocess) -> Batch:
    """Ray task: each row's file read and decoded to its crop, or its error (a failure is that
    input's error, never an exception that would fail the task)."""
    locations = [from_bytes(b) for b in batch["location"]]
    decoded = [_decode(prep, location) for location in locations]
    blank = np.zeros((prep.crop, prep.crop, 3), np.uint8)  # a failed row's place in the tensor column
    return {
        "index": np.asarray(batch["index"], np.int64),
        "location": np.asarray(batch["location"], dtype=object),
        "array": np.stack([d.array if d.array is not None else blank for d in decoded]),
        "error": np.array([d.error or "" for d in decoded], dtype=object),
        "drafted": np.array([d.drafted for d in decoded], dtype=bool),
        "thumbnail": np.array([d.thumbnail or b"" for d in decoded], dtype=object),
        "decode_s": np.array([d.decode_s for d in decoded], dtype=np.float64),
        "preprocess_s": np.array([d.preprocess_s for d in decoded], dtype=np.float64),
    }


def _decode(prep: Preprocess, location: str) -> Decoded:
    decoded = decode_one(prep, Input(location))
    if decoded.error is not None and not is_remote_url(location) and not os.path.lexists(location):
        decoded.error = NOT_ON_NODE.format(node=socket.gethostname())
    return decoded


class ClassifyActor:
    """An actor of the pool: the model built once from weights shipped through the object store (no
    internet, no weights cache needed on the node), then decoded batches in, pickled records out."""

    def __init__(self, weights: list[Any], labels: list[Any] | None, settings: dict[str, Any]) -> None:
        # The refs come wrapped in lists: Ray resolves a top-level ObjectRef argument itself, and the
        # bytes are fetched here, once per actor, rather than carried in the actor's creation arguments.
        import ray

        from shufflenet_cli.api import Classifier

        folder = tempfile.mkdtemp(prefix="shufflenet-ray-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        weights_file = _write(folder, "weights.pth", ray.get(weights[0]))
        labels_file = _write(folder, "labels.txt", ray.get(labels[0])) if labels is not None else None
        self.topk, self.threshold = settings["topk"], settings["threshold"]
        self.classifier = Classifier(
            settings["model"],
            weights=weights_file,
            labels=labels_file,
            device=settings["device"],
            backend=settings["backend"],
            precision=settings["precision"],
            batch_size=settings["batch_size"],
            threads=settings["threads"],
            workers=1,
            decode=settings["decode"],
            timeout=settings["timeout"],
            max_download=settings["max_download"],
        )

    def __call__(self, batch: Batch) -> Batch:
        errors = [str(e) for e in batch["error"]]
        decoded = [
            Decoded(
                Input(from_bytes(location)),
                array=array if not error else None,
                error=error or None,
                drafted=bool(drafted),
                thumbnail=bytes(thumbnail) or None,
            )
            for location, array, error, drafted, thumbnail in zip(
                batch["location"], batch["array"], errors, batch["drafted"], batch["thumbnail"], strict=True
            )
        ]
        t0 = time.perf_counter()
        records = self.classifier._classify_decoded(decoded, topk=self.topk, threshold=self.threshold)
        seconds = time.perf_counter() - t0
        forward = not all(errors)
        first = np.zeros(len(records), np.float64)
        first[0] = seconds if forward else 0.0  # the batch's figures on its first row: summed on the driver
        counted = np.zeros(len(records), np.int64)
        counted[0] = int(forward)
        return {
            "index": np.asarray(batch["index"], np.int64),
            "record": np.array([pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records], dtype=object),
            "decode_s": np.asarray(batch["decode_s"], np.float64),
            "preprocess_s": np.asarray(batch["preprocess_s"], np.float64),
            "drafted": np.asarray(batch["drafted"], bool),
            "inference_s": first,
            "batches": counted,
        }


def _write(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path
