"""Getting a ready model: weights from torch's cache (downloaded once) or a local file, and a device.

Checkpoints are always read with `torch.load(..., weights_only=True)`: never unpickled as code.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from shufflenet_cli.atomic import AtomicFile
from shufflenet_cli.checkpoints import first_line, read_checkpoint, width_of
from shufflenet_cli.errors import ModelLoadError
from shufflenet_cli.models import DEFAULT_MODEL, MODELS, ModelSpec, resolve_model

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
    """Fetch the weights into the cache with torchvision's hash check; return the cached path.
    A file already there is used as it is (`cached_file_problem` is `shufflenet download`'s check)."""
    dest = cache_path(spec)
    if dest.is_file():
        return dest
    return _fetch(spec, progress)


def fetch_again(spec: ModelSpec, problem: str, progress: bool = True) -> Path:
    """Replace a cached file that failed `cached_file_problem` with a fresh download."""
    if offline():
        raise ModelLoadError(
            f"the cached weights file {cache_path(spec)} is damaged or not torchvision's ({problem}), "
            f"and {OFFLINE_ENV} is set, so it is not downloaded again",
            hint=f"run `shufflenet download {spec.key}` where there is internet, or copy torchvision's file "
            f"over with `shufflenet download {spec.key} --from FILE`",
        )
    return _fetch(spec, progress)


def cached_file_problem(spec: ModelSpec) -> str | None:
    """What is wrong with torchvision's cached file, checked as a download is (its sha256 starts with
    the prefix in its name); None where it passes. predict does not ask: it uses whatever is there."""
    path = cache_path(spec)
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return f"it cannot be read: {_reason(exc)}"
    expected = hash_prefix(spec)
    if actual.startswith(expected):
        return None
    return f"its sha256 is {actual[:16]}..., its name wants one starting with {expected}"


def _fetch(spec: ModelSpec, progress: bool) -> Path:
    import torch.hub

    dest = cache_path(spec)
    url = weights_url(spec)
    if offline():
        raise _missing(spec, f"{OFFLINE_ENV} is set, so nothing is downloaded")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:  # torch writes a temporary file and moves it over dest only once the hash is right
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
        raise ModelLoadError(f"{source} does not fit {spec.arch}: {first_line(exc)}") from exc
    return model.eval()


def load_model(spec: ModelSpec, weights_path: Path | None = None) -> Any:
    """The model with weights from `weights_path`, else your own installed weights for the width
    (`own_weights`), else torchvision's from the cache (downloading once)."""
    path = Path(weights_path) if weights_path is not None else own_weights(spec) or download(spec, progress=False)
    return build_model(spec, read_checkpoint(path), str(path))


def spec_for(model: str | None, weights_path: Path | None) -> ModelSpec:
    """The width of a run: `model` where given; else the width of the `weights_path` file (read once:
    the state dict is kept for `load_model`); else DEFAULT_MODEL. A file of no known width gets the
    default, and then the loader's own message."""
    if model is not None:
        return resolve_model(model)
    if weights_path is not None:
        found = width_of(read_checkpoint(Path(weights_path), keep=True))
        if found is not None:
            return found
    return MODELS[DEFAULT_MODEL]


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


class NotOfficial(ModelLoadError):
    """A weights file that is not torchvision's (its sha256 does not match the name's prefix)."""


def install_from_file(source: Path, spec: ModelSpec | None = None) -> tuple[ModelSpec, Path, bool]:
    """Copy a local weights file into the cache under torchvision's name, for machines without internet.

    The file must be a loadable state dict of the width (`spec`, or the width found in the file) and its
    sha256 must start with the prefix in torchvision's file name, the check a download gets (else
    NotOfficial). The copy is atomic (temporary file, then rename; a link in its place is replaced,
    not followed); nothing is written when a check fails. Returns the width, the cached path and
    whether it was copied (False: a file of that sha256, or of the same tensors, was already in the
    cache; any other file of that name, a damaged one or a link, is replaced).
    """
    source = Path(source)
    state_dict = read_checkpoint(source)
    spec = _width_to_install(source, state_dict, spec)
    expected = hash_prefix(spec)
    actual = sha256_file(source)
    if not actual.startswith(expected):
        raise NotOfficial(
            f"{source} is not torchvision's {spec.arch} weights file: its sha256 is {actual[:16]}..., "
            f"torchvision's file name {cache_path(spec).name} wants one starting with {expected}",
            hint=f"get the file from {weights_url(spec)}, or use your own weights with `predict --weights {source}` "
            f"(as the default: `shufflenet download {spec.key} --from {source} --force`)",
        )
    build_model(spec, state_dict, str(source))
    dest = cache_path(spec)
    if _holds(dest, actual, state_dict):
        return spec, dest, False
    _copy_in(source, dest, actual)
    return spec, dest, True


def _width_to_install(source: Path, state_dict: dict[str, Any], spec: ModelSpec | None) -> ModelSpec:
    """`spec`, or the width found in the file; an error where they differ or the file has none."""
    found = width_of(state_dict)
    if spec is None:
        if found is None:
            raise ModelLoadError(f"{source} is not a ShuffleNet v2 state dict (no conv5 weights)")
        return found
    if found is not None and found.key != spec.key:
        raise ModelLoadError(
            f"{source} holds weights for {found.arch}, not {spec.arch}",
            hint=f"run `shufflenet download {found.key} --from {source}`",
        )
    return spec


def _copy_in(source: Path, dest: Path, digest: str) -> None:
    """Copy `source` (of this sha256) to `dest` atomically, replacing a link there rather than following it."""
    import shutil

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        copy = AtomicFile(dest, mode=0o644, follow_links=False, suffix=".part")  # 0o644: the cache is shared
    except OSError as exc:
        raise ModelLoadError(f"cannot write to the weights cache {dest.parent}: {_reason(exc)}") from exc
    try:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, copy.file, 1 << 20)
        copy.file.flush()
        if sha256_file(Path(copy.tmp)) != digest:
            raise ModelLoadError(f"{source} changed while it was being copied; nothing was written")
        copy.commit(fsync=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot copy {source} into the weights cache: {_reason(exc)}") from exc
    finally:
        copy.discard()


# ---------------------------------------------------------------- your own weights as a width's default

# A folder of its own inside torch's: torchvision's files keep their names and hashes (`download`
# checks them), and your weights move with TORCH_HOME like the rest of the cache.
OWN_FOLDER = "shufflenet-cli"


def own_path(spec: ModelSpec) -> Path:
    """Where your own default weights for the width are kept (`download --from FILE --force`)."""
    if "torch" in sys.modules:  # a library caller may have moved the hub folder (torch.hub.set_dir)
        import torch.hub

        hub = Path(torch.hub.get_dir())
    else:  # predict's torch-free path looks here too
        hub = hub_dir_without_torch()
    return hub / "checkpoints" / OWN_FOLDER / f"{spec.key}.pth"


def own_weights(spec: ModelSpec) -> Path | None:
    """Your own installed default weights for the width, where there are some: predict prefers them."""
    path = own_path(spec)
    return path if path.is_file() else None


def install_own(source: Path, spec: ModelSpec | None = None) -> tuple[ModelSpec, Path]:
    """Make a weights file that is not torchvision's the width's default: a loadable state dict of the
    width (`spec`, or the one found in the file), copied atomically to `own_path`. torchvision's
    cached file is left as it is; `remove_own` goes back to it."""
    source = Path(source)
    state_dict = read_checkpoint(source)
    spec = _width_to_install(source, state_dict, spec)
    build_model(spec, state_dict, str(source))
    dest = own_path(spec)
    _copy_in(source, dest, sha256_file(source))
    return spec, dest


def remove_own(spec: ModelSpec) -> Path | None:
    """Remove your own default weights for the width; their path, or None where there were none."""
    path = own_path(spec)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelLoadError(f"cannot remove your weights {path}: {_reason(exc)}") from exc
    return path
