"""Getting a ready model: weights from torch's cache (downloaded once) or a local file, and a device.

Checkpoints are always read with `torch.load(..., weights_only=True)`: never unpickled as code.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from shufflenet_cli.atomic import AtomicFile
from shufflenet_cli.errors import ModelLoadError
from shufflenet_cli.models import ModelSpec, spec_for_conv5

OFFLINE_ENV = "SHUFFLENET_OFFLINE"
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")


def offline() -> bool:
    """True when SHUFFLENET_OFFLINE is set: the cache is read, nothing is downloaded."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def cache_dir() -> Path:
    """Where torchvision keeps downloaded weights: $TORCH_HOME/hub/checkpoints."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_dir_without_torch() -> Path:
    """torch.hub.get_dir() worked out without importing torch: $TORCH_HOME/hub, TORCH_HOME defaulting
    to $XDG_CACHE_HOME/torch, XDG_CACHE_HOME to ~/.cache (torch/hub.py's rule; a test compares them).
    A folder set with torch.hub.set_dir() is not seen: only the runner's torch-free path uses this."""
    xdg = os.getenv("XDG_CACHE_HOME", "~/.cache")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(xdg, "torch")))) / "hub"


def cached_file_without_torch(spec: ModelSpec) -> Path:
    """Where torchvision keeps (or would download) the weights file, found without importing torch."""
    return hub_dir_without_torch() / "checkpoints" / spec.weights_file


def weights_url(spec: ModelSpec) -> str:
    return spec.weights().url


def cache_path(spec: ModelSpec) -> Path:
    """torchvision's own file name for the weights, inside the cache."""
    return cache_dir() / spec.weights_file  # equal to the URL's file name (tests/test_torch_free.py)


def hash_prefix(spec: ModelSpec) -> str:
    """The sha256 prefix that torchvision's file name carries (`...-c8c7e3a2.pth`)."""
    match = _HASH_PREFIX.search(cache_path(spec).name)
    return match.group(1) if match else ""


def is_cached(spec: ModelSpec) -> bool:
    return cache_path(spec).is_file()


def download(spec: ModelSpec, progress: bool = True) -> Path:
    """Fetch the weights into the cache with torchvision's hash check; return the cached path."""
    import torch.hub

    dest = cache_path(spec)
    if dest.is_file():
        return dest
    url = weights_url(spec)
    if offline():
        raise _missing(spec, f"{OFFLINE_ENV} is set, so nothing is downloaded")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix(spec), progress=progress)
    except RuntimeError as exc:  # hash mismatch
        raise ModelLoadError(f"downloaded weights from {url} failed the hash check: {exc}") from exc
    except OSError as exc:  # URLError, timeouts, DNS failure, disk full
        raise _missing(spec, f"the download failed ({_reason(exc)})") from exc
    return dest


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)


def _missing(spec: ModelSpec, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"weights for {spec.arch} are not in the cache ({cache_path(spec)}) and {why}; "
        f"they come from {weights_url(spec)}",
        hint=f"run `shufflenet download {spec.key}` where there is internet (or copy that file into the "
        "cache, `shufflenet download --from FILE`), or pass --weights PATH",
    )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict from a file: plain, or wrapped in {"state_dict": ...} / {"model": ...}, keys maybe `module.`."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes are not for the user
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"weights file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ModelLoadError(f"weights path is a directory, not a file: {path}") from exc
    except Exception as exc:  # noqa: BLE001 - any way a file can fail to be a checkpoint
        if (what := _not_a_checkpoint(path)) is not None:
            raise ModelLoadError(f"cannot read weights file {path}: it is {what}, not a PyTorch checkpoint") from exc
        if isinstance(exc, pickle.UnpicklingError):
            raise ModelLoadError(
                f"cannot read weights file {path}: it is not a plain PyTorch state dict "
                "(only tensors are loaded; code inside a checkpoint is never run)"
            ) from exc
        raise ModelLoadError(f"cannot read weights file {path}: not a PyTorch checkpoint ({_first_line(exc)})") from exc
    return unwrap_state_dict(obj, path)


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def width_of(state_dict: dict[str, Any]) -> ModelSpec | None:
    """Which width a state dict is for, from conv5's input channels (None when it is not ShuffleNet v2)."""
    conv5 = state_dict.get("conv5.0.weight")
    return spec_for_conv5(int(conv5.shape[1])) if conv5 is not None and conv5.dim() == 4 else None


def build_model(spec: ModelSpec, state_dict: dict[str, Any], source: str) -> Any:
    """A ShuffleNet v2 of this width, classifier sized from the weights, in eval mode."""
    fc = state_dict.get("fc.weight")
    conv5 = state_dict.get("conv5.0.weight")
    if fc is None or conv5 is None or fc.dim() != 2 or conv5.dim() != 4:
        raise ModelLoadError(f"{source} is not a ShuffleNet v2 state dict (no fc / conv5 weights)")
    other = width_of(state_dict)
    if other is not None and other.key != spec.key:
        raise ModelLoadError(
            f"{source} holds weights for {other.arch}, not {spec.arch}",
            hint=f"pass --model {other.key}",
        )
    model = spec.builder()(weights=None, num_classes=int(fc.shape[0]))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{source} does not fit {spec.arch}: {_first_line(exc)}") from exc
    return model.eval()


def load_model(spec: ModelSpec, weights_path: Path | None = None) -> Any:
    """The model with weights from `weights_path`, or else from torch's cache (downloading once)."""
    path = Path(weights_path) if weights_path is not None else download(spec, progress=False)
    return build_model(spec, read_checkpoint(path), str(path))


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _holds(path: Path, digest: str, state_dict: dict[str, Any]) -> bool:
    """Whether `path` is a regular file (not a link) of this sha256, or one that holds the same
    tensors. A file of the right name is not enough: a damaged or planted one would stay in use
    after the user copied the right one in."""
    import torch

    try:
        if path.is_symlink() or not path.is_file():
            return False
        if sha256_file(path) == digest:
            return True
        cached = read_checkpoint(path)
    except (OSError, ModelLoadError):
        return False
    return cached.keys() == state_dict.keys() and all(
        cached[k].dtype == v.dtype and cached[k].shape == v.shape and torch.equal(cached[k], v)
        for k, v in state_dict.items()
    )


def install_from_file(source: Path, spec: ModelSpec | None = None) -> tuple[ModelSpec, Path, bool]:
    """Copy a local weights file into the cache under torchvision's name, for machines without internet.

    The file must be a loadable state dict of the width (`spec`, or the width found in the file) and its
    sha256 must start with the prefix in torchvision's file name, the check a download gets. The copy is
    atomic (temporary file, then rename; a link in its place is replaced, not followed); nothing is
    written when a check fails. Returns the width, the cached path and whether it was copied (False:
    a file of that sha256, or of the same tensors, was already in the cache; any other file of that
    name, a damaged one or a link, is replaced).
    """
    import shutil

    source = Path(source)
    state_dict = read_checkpoint(source)
    found = width_of(state_dict)
    if spec is None:
        if found is None:
            raise ModelLoadError(f"{source} is not a ShuffleNet v2 state dict (no conv5 weights)")
        spec = found
    elif found is not None and found.key != spec.key:
        raise ModelLoadError(
            f"{source} holds weights for {found.arch}, not {spec.arch}",
            hint=f"run `shufflenet download {found.key} --from {source}`",
        )
    expected = hash_prefix(spec)
    actual = sha256_file(source)
    if not actual.startswith(expected):
        raise ModelLoadError(
            f"{source} is not torchvision's {spec.arch} weights file: its sha256 is {actual[:16]}..., "
            f"torchvision's file name {cache_path(spec).name} wants one starting with {expected}",
            hint=f"get the file from {weights_url(spec)}, or use your own weights with `predict --weights {source}`",
        )
    build_model(spec, state_dict, str(source))
    dest = cache_path(spec)
    if _holds(dest, actual, state_dict):
        return spec, dest, False
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        copy = AtomicFile(dest, mode=0o644, follow_links=False, suffix=".part")  # 0o644: the cache is shared
    except OSError as exc:
        raise ModelLoadError(f"cannot write to the weights cache {dest.parent}: {_reason(exc)}") from exc
    try:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, copy.file, 1 << 20)
        copy.file.flush()
        if sha256_file(Path(copy.tmp)) != actual:
            raise ModelLoadError(f"{source} changed while it was being copied; nothing was written")
        copy.commit(fsync=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot copy {source} into the weights cache: {_reason(exc)}") from exc
    finally:
        copy.discard()
    return spec, dest, True
