"""The four ShuffleNet v2 widths: names, and their torchvision builders and weights.

Importing this module does not import torch; `builder()` and `weights()` do. The few facts a run needs
without torch (torchvision's weights file name, the eval transform's sizes, mean and std) are plain
constants here; tests/test_torch_free.py proves each one equal to torchvision's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from shufflenet_cli.errors import ModelLoadError, UsageError

DEFAULT_MODEL = "x1_0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    key: str  # "x1_0"
    arch: str  # torchvision builder name, "shufflenet_v2_x1_0"
    weights_enum: str  # "ShuffleNet_V2_X1_0_Weights"
    conv5_in: int  # input channels of conv5: tells the widths apart in a state dict
    weights_file: str  # torchvision's file name for IMAGENET1K_V1 (the basename of its url)
    resize: int  # eval transform: shorter side resized to this (bilinear) ...
    crop: int = 224  # ... then a centre crop of this size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def builder(self) -> Any:
        return getattr(torchvision_models(), self.arch)

    def weights(self) -> Any:
        """torchvision's IMAGENET1K_V1 entry: url, transforms, categories, metrics."""
        return getattr(torchvision_models(), self.weights_enum).IMAGENET1K_V1


MODELS: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            "x0_5", "shufflenet_v2_x0_5", "ShuffleNet_V2_X0_5_Weights", 192, "shufflenetv2_x0.5-f707e7126e.pth", 256
        ),
        ModelSpec(
            "x1_0", "shufflenet_v2_x1_0", "ShuffleNet_V2_X1_0_Weights", 464, "shufflenetv2_x1-5666bf0f80.pth", 256
        ),
        ModelSpec(
            "x1_5", "shufflenet_v2_x1_5", "ShuffleNet_V2_X1_5_Weights", 704, "shufflenetv2_x1_5-3c479a10.pth", 232
        ),
        ModelSpec(
            "x2_0", "shufflenet_v2_x2_0", "ShuffleNet_V2_X2_0_Weights", 976, "shufflenetv2_x2_0-8be3c8ee.pth", 232
        ),
    )
}


def resolve_model(name: str) -> ModelSpec:
    """Accept `x1_0`, `1.0`, `shufflenet_v2_x1_0`, `shufflenetv2_x1.0`; suggest the closest otherwise."""
    key = name.strip().lower().replace(".", "_").replace("-", "_")
    for prefix in ("shufflenet_v2_", "shufflenetv2_", "shufflenet_"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if not key.startswith("x"):
        key = "x" + key
    if key in MODELS:
        return MODELS[key]
    close = _nearest_width(key) or next(iter(difflib.get_close_matches(key, list(MODELS), n=1, cutoff=0.4)), None)
    hint = f"did you mean {close!r}? " if close else ""
    raise UsageError(
        f"unknown model {name!r}",
        hint=f"{hint}choose one of: {', '.join(MODELS)}",
    )


def spec_for_conv5(channels: int) -> ModelSpec | None:
    """Which width a state dict belongs to, from conv5's input channels."""
    return next((s for s in MODELS.values() if s.conv5_in == channels), None)


def _nearest_width(key: str) -> str | None:
    """`x1_2` -> `x1_0`, `x3` -> `x2_0`: the width numerically closest to what was typed."""
    digits = key[1:]
    if digits.isdigit() and len(digits) == 2:  # "x05" -> 0.5
        digits = digits[0] + "." + digits[1]
    try:
        wanted = float(digits.replace("_", "."))
    except ValueError:
        return None
    return min(MODELS, key=lambda k: abs(float(k[1:].replace("_", ".")) - wanted))


def torchvision_models() -> Any:
    """torchvision.models; ModelLoadError (exit 3) where torchvision cannot load with the installed
    torch: a torchvision built for another torch fails at import ("operator torchvision::nms does not
    exist"), which pip allows when the two come from different indexes."""
    try:
        from torchvision import models
    except (RuntimeError, ImportError, OSError) as exc:
        raise torchvision_mismatch(exc) from None
    return models


def torchvision_mismatch(exc: BaseException) -> ModelLoadError:
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    found = f"torch {version('torch')}, torchvision {version('torchvision')}"
    return ModelLoadError(
        f"torchvision cannot be loaded with this torch ({found}): {type(exc).__name__}: {exc}",
        hint="install the two together, from one index, so that they match: "
        "pip install --force-reinstall torch torchvision",
    )
