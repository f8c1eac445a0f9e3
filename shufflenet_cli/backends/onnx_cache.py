"""Where checked ONNX exports are kept, and how a run finds one again.

The .onnx file of torchvision's cached weights goes to torch's checkpoints folder, next to them (or,
where that folder is not writable, to $XDG_CACHE_HOME/shufflenet-cli); the export of a --weights
file always goes to $XDG_CACHE_HOME/shufflenet-cli, never into the weights' own folder, which may be
shared with others. Its name is keyed by a hash of the state dict and of the exporter (torch version,
exporter kind, opset, onnxruntime version). A file is written (`save`, temporary file then rename)
only after its logits matched torch's (`onnx_export.allowed_difference`), and with it a record
(`record_path`) of its own sha256: a later run opens it only where its bytes still have that digest
(`open_checked`), and exports it again otherwise, with a warning where the file changed.

A checked export of torchvision's cached weights file also gets a small JSON sidecar keyed by the
sha256 of that file (`write_sidecar`), naming the export and its digest: a later run finds the .onnx
from the file's hash alone and opens it without importing torch or building the model
(`find_checked_export`, then `read_verified` before a session is made of it).

Stale exports (of earlier weights in the same --weights file) are removed only where the record says
the tool wrote them for that file and their bytes are still the ones recorded: a file the tool did
not write, or one changed since, is left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from shufflenet_cli.atomic import write_atomic
from shufflenet_cli.backends import onnx_export
from shufflenet_cli.backends.onnx_export import FORMAT, OPSET
from shufflenet_cli.errors import ModelLoadError, ShufflenetWarning
from shufflenet_cli.signals import reraise_interrupt

SIDECAR_FORMAT = 2  # 2: names the export's own sha256 (a sidecar without it is a miss)
RECORD_FORMAT = 1
_EXPORT_NAME = re.compile(r".+\.[0-9a-f]{16}\.onnx")


def state_dict_hash(model: Any) -> str:
    """sha256 over every tensor of the state dict: names, dtypes, shapes and bytes."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def exporter_key(exporter: str) -> str:
    import onnxruntime
    import torch

    return f"torch-{torch.__version__}|{exporter}|opset{OPSET}|format{FORMAT}|ort-{onnxruntime.__version__}"


def _stem(model: Any, weights_path: Path | None) -> str:
    if weights_path is not None:
        return Path(weights_path).stem
    from shufflenet_cli.models import spec_for_conv5

    try:
        spec = spec_for_conv5(int(model.conv5[0].in_channels))
    except (AttributeError, TypeError, IndexError):
        spec = None
    return spec.arch if spec is not None else type(model).__name__.lower()


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shufflenet-cli"


def cache_dirs(weights_path: Path | None) -> list[Path]:
    """Where the .onnx may go, first choice first. A --weights file: the user's cache folder only
    (the weights' own folder may be shared: nothing is written there). torchvision's weights:
    torch's checkpoints folder, next to them; then the user's cache folder."""
    from shufflenet_cli.weights import cache_dir

    if weights_path is not None:
        return [user_cache_dir()]
    return [cache_dir(), user_cache_dir()]


def cache_name(stem: str, weights_hash: str, key: str) -> str:
    digest = hashlib.sha256(f"{weights_hash}|{key}".encode()).hexdigest()[:16]
    return f"{stem}.{digest}.onnx"


# ------------------------------------------------------------ the record of what the tool wrote


def record_path(onnx_path: Path) -> Path:
    """The JSON record of an export this tool wrote: its sha256, and the --weights file it is of."""
    return onnx_path.with_name(onnx_path.name + ".json")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recorded_sha256(onnx_path: Path) -> str | None:
    data = _read_json(record_path(onnx_path))
    if data is None or data.get("record_format") != RECORD_FORMAT or data.get("onnx") != onnx_path.name:
        return None
    digest = data.get("onnx_sha256")
    return digest if isinstance(digest, str) else None


_warned: set[Path] = set()  # the files this process has warned about


def read_verified(onnx_path: Path, sha256: str | None) -> bytes | None:
    """The file's bytes where their sha256 is `sha256` (what the tool recorded when it wrote it);
    None otherwise: no digest known, the file unreadable, or (with a warning) changed since. A
    session is then made of these bytes, not of the file opened again."""
    if sha256 is None:
        return None
    try:
        data = Path(onnx_path).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        if onnx_path not in _warned:  # the torch-free lookup and then the usual one find the same file
            _warned.add(onnx_path)
            warnings.warn(
                f"the cached ONNX export {onnx_path} has changed since it was written (its sha256 is not "
                "the one recorded); it is not used, and the model is exported again",
                ShufflenetWarning,
                stacklevel=2,
            )
        return None
    return data


def save_export(path: Path, data: bytes, weights_path: Path | None) -> bool:
    """Write a checked export and then its record; False where either cannot be written. An earlier
    record goes first: a file whose new record could not be written then has none (exported again,
    quietly), rather than an old digest that would call it changed."""
    record = {
        "record_format": RECORD_FORMAT,
        "onnx": path.name,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "weights": None if weights_path is None else os.fspath(Path(weights_path).resolve()),
    }
    _unlink(record_path(path))
    return save(path, data) and save(record_path(path), (json.dumps(record, indent=1) + "\n").encode())


def _stale_exports(path: Path, weights_path: Path) -> list[Path]:
    """Exports in `path`'s folder that the tool recorded as its own for the same --weights file,
    other than `path`, whose bytes are still the ones recorded: those it can prove it made."""
    source = os.fspath(Path(weights_path).resolve())
    stale = []
    try:
        records = [p for p in path.parent.iterdir() if p.name.endswith(".onnx.json")]
    except OSError:
        return []
    for record in records:
        onnx = record.with_name(record.name[: -len(".json")])
        data = _read_json(record)
        if onnx == path or data is None or data.get("weights") != source or not _EXPORT_NAME.fullmatch(onnx.name):
            continue
        if onnx.is_symlink() or not onnx.is_file():
            continue
        digest = _recorded_sha256(onnx)
        try:
            if digest is not None and hashlib.sha256(onnx.read_bytes()).hexdigest() == digest:
                stale.append(onnx)
        except OSError:
            continue
    return stale


# ------------------------------------------------------------------------------ the sidecar


def _versions() -> dict[str, str]:
    """What an export depends on besides the weights, read without importing torch."""
    from importlib.metadata import version

    return {
        "torch": version("torch"),
        "onnxruntime": version("onnxruntime"),
        "opset": str(OPSET),
        "format": str(FORMAT),
    }


def sidecar_name(arch: str, file_sha256: str) -> str:
    return f"{arch}.weights-{file_sha256[:16]}.json"


def write_sidecar(onnx_path: Path, arch: str, file_sha256: str, num_classes: int, onnx_sha256: str) -> Path | None:
    """Record, next to a checked export, the sha256 of the weights FILE it was made from and the
    export's own; call only with an export that passed the parity check (this run's, or a cache
    file whose bytes were verified against its record), and the digest of the bytes in use."""
    data = {
        "sidecar_format": SIDECAR_FORMAT,
        "weights_sha256": file_sha256,
        "onnx": onnx_path.name,
        "onnx_sha256": onnx_sha256,
        "num_classes": int(num_classes),
        "versions": _versions(),
    }
    path = onnx_path.with_name(sidecar_name(arch, file_sha256))
    if save(path, (json.dumps(data, indent=1) + "\n").encode()):
        return path
    return None


class Found(NamedTuple):
    """A checked export found by its sidecar: the file, its class count, the sha256 it must have."""

    path: Path
    num_classes: int
    sha256: str


def find_checked_export(arch: str, file_sha256: str, folders: list[Path]) -> Found | None:
    """The export of a weights file of this sha256 that passed the torch check under the torch and
    onnxruntime installed now; None otherwise. Its bytes are not read here: `read_verified` checks
    them against `Found.sha256` before a session is made."""
    for folder in folders:
        data = _read_json(folder / sidecar_name(arch, file_sha256))
        if data is None:
            continue
        try:
            onnx = folder / str(data["onnx"])
            if (
                data["sidecar_format"] == SIDECAR_FORMAT
                and data["weights_sha256"] == file_sha256
                and data["versions"] == _versions()
                and "/" not in str(data["onnx"])
                and isinstance(data["onnx_sha256"], str)
                and onnx.is_file()
            ):
                return Found(onnx, int(data["num_classes"]), data["onnx_sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


# ------------------------------------------------------------------------ opening an export


@dataclass
class Opened:
    """An onnxruntime session of a checked export, and how it was had."""

    session: Any
    cache_path: Path | None  # the .onnx file it came from or was saved to (None: not saved)
    exported: bool  # this run exported and checked the model
    parity: tuple[float, float] | None  # (difference, allowed) where this run checked
    sha256: str | None = None  # the sha256 of the bytes the session was made of


def open_checked(
    new_session: Callable[[str | bytes], Any],
    model: Any,
    crop: int,
    weights_path: Path | None,
    exporter: str,
    mean: Any,
    std: Any,
) -> Opened:
    """A session of the cached export of `model` (its bytes as recorded when the tool wrote it), or
    of a new export that passed the parity check (then saved to the first cache folder that takes
    it). ModelLoadError where the export does not match torch or the weights give no numbers."""
    stem = _stem(model, weights_path)
    name = cache_name(stem, state_dict_hash(model), exporter_key(exporter))
    for folder in cache_dirs(weights_path):
        path = folder / name
        if path.is_file():
            data = read_verified(path, _recorded_sha256(path))
            if data is not None:
                try:
                    return Opened(new_session(data), path, False, None, hashlib.sha256(data).hexdigest())
                except Exception as exc:  # noqa: BLE001 - a damaged cache file is exported again
                    reraise_interrupt(exc)
    data = onnx_export.export_bytes(model, crop, exporter)
    session = new_session(data)
    parity = _check(model, session, crop, mean, std)
    saved = None
    for folder in cache_dirs(weights_path):
        path = folder / name
        if save_export(path, data, weights_path):
            saved = path
            if weights_path is not None:
                for stale in _stale_exports(path, weights_path):
                    _unlink(stale)
                    _unlink(record_path(stale))
            break
    return Opened(session, saved, True, parity, hashlib.sha256(data).hexdigest())


def _check(model: Any, session: Any, crop: int, mean: Any, std: Any) -> tuple[float, float]:
    """(difference, allowed) of the session's logits against torch's; ModelLoadError where they
    differ by more, or the model's own outputs are not numbers."""
    diff, largest = onnx_export.max_logit_difference(model, session, onnx_export.check_batch(crop, mean, std))
    parity = (diff, onnx_export.allowed_difference(largest))
    if not np.isfinite(largest):
        raise ModelLoadError(
            "the model's own outputs are not numbers (NaN or infinity) on a test image: "
            "the weights are probably damaged",
            hint="check or download the weights again",
        )
    if not diff < parity[1]:
        raise ModelLoadError(
            f"the ONNX export does not match torch: max abs logit difference {diff:.3g} "
            f"(allowed {parity[1]:.3g}); it is not used",
            hint="use --backend torch",
        )
    return parity


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def save(path: Path, data: bytes) -> bool:
    """Write a cache file atomically (`atomic.write_atomic`: a temporary file made with O_EXCL, then
    renamed; a link in its place is replaced, not followed); False where its folder cannot be made
    or written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, follow_links=False)
        return True
    except OSError:
        return False
