"""Reading a weights file into a state dict, and naming what a file is when it is not one.

Checkpoints are always read with `torch.load(..., weights_only=True)`: never unpickled as code.
A file read to find its width (`read_checkpoint(path, keep=True)`) is kept until the model is built
from it, so a run reads it once.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from shufflenet_cli.errors import ModelLoadError
from shufflenet_cli.models import ModelSpec, spec_for_conv5
from shufflenet_cli.urls import NOT_SUPPORTED, looks_like_url

# At most one state dict: the last one read with keep=True, by its path and stat stamp.
_kept: dict[tuple[Any, ...], dict[str, Any]] = {}


def _identity(path: Path) -> tuple[Any, ...] | None:
    """The path and its stamp: another file put in its place, or one written in place, differs."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_checkpoint(path: Path, keep: bool = False) -> dict[str, Any]:
    """A state dict from a file: plain, or wrapped in {"state_dict": ...} / {"model": ...}, keys maybe `module.`.

    keep: hold the result for the next read of the same, unchanged file (which takes it)."""
    identity = _identity(path)
    state_dict = _kept.pop(identity, None) if identity is not None else None
    if state_dict is None:
        state_dict = unwrap_state_dict(_load(path), path)
    if keep and identity is not None:
        _kept.clear()
        _kept[identity] = state_dict
    return state_dict


def _load(path: Path) -> Any:
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes are not for the user
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        if looks_like_url(str(path)):
            raise ModelLoadError(f"--weights {path}: {NOT_SUPPORTED}") from exc
        raise ModelLoadError(f"weights file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ModelLoadError(f"weights path is a directory, not a file: {path}") from exc
    except Exception as exc:  # noqa: BLE001 - any way a file can fail to be a checkpoint
        if _is_torchscript(path):
            raise ModelLoadError(
                f"cannot read weights file {path}: it is a TorchScript model, not a state dict",
                hint=f"save its state dict in Python, torch.save(torch.jit.load({str(path)!r}).state_dict(), "
                "'state_dict.pth'), and pass --weights state_dict.pth",
            ) from exc
        if (what := _not_a_checkpoint(path)) is not None:
            raise ModelLoadError(f"cannot read weights file {path}: it is {what}, not a PyTorch checkpoint") from exc
        if isinstance(exc, pickle.UnpicklingError):
            raise ModelLoadError(
                f"cannot read weights file {path}: it is not a plain PyTorch state dict "
                "(only tensors are loaded; code inside a checkpoint is never run)"
            ) from exc
        raise ModelLoadError(f"cannot read weights file {path}: not a PyTorch checkpoint ({first_line(exc)})") from exc


def _is_torchscript(path: Path) -> bool:
    """A zip archive with a `constants.pkl` record: what torch.jit.save writes (torch.load's own test)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _not_a_checkpoint(path: Path) -> str | None:
    """What the file is where its first bytes say it cannot be a checkpoint (a zip archive, or a legacy
    pickle starting with its protocol byte): "a JPEG image", "an empty file", "text"; else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if not head:
        return "an empty file"
    from shufflenet_cli.image_formats import sniff

    if (found := sniff(head)) is not None:
        return ("an " if found[0][0] in "AEIOU" else "a ") + found[0]
    import codecs

    if any(b < 0x20 and b not in b"\t\n\r\f" for b in head):
        return None  # binary: no text has control bytes
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut at byte 256 is fine
        return "a text file"
    except UnicodeDecodeError:
        return None


def unwrap_state_dict(obj: Any, path: Path | str = "checkpoint") -> dict[str, Any]:
    import torch

    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors")
    out = {}
    for key, value in obj.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        out[key] = value.float() if value.is_floating_point() else value
    return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def width_of(state_dict: dict[str, Any]) -> ModelSpec | None:
    """Which width a state dict is for, from conv5's input channels (None when it is not ShuffleNet v2)."""
    conv5 = state_dict.get("conv5.0.weight")
    return spec_for_conv5(int(conv5.shape[1])) if conv5 is not None and conv5.dim() == 4 else None
