"""shufflenet: classify images with torchvision's ImageNet-pretrained ShuffleNet v2.

The public Python API is what this module exports (docs/api.md); every submodule is private.
The names load on first use, so that `import shufflenet_cli` (and the CLI's start-up) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shufflenet_cli.api import Classifier, ImageLike, classify
    from shufflenet_cli.errors import ModelLoadError, ShufflenetError, UsageError
    from shufflenet_cli.records import Prediction, Record

__version__ = "0.1.0"

_WHERE = {
    "Classifier": "shufflenet_cli.api",
    "ImageLike": "shufflenet_cli.api",
    "classify": "shufflenet_cli.api",
    "Record": "shufflenet_cli.records",
    "Prediction": "shufflenet_cli.records",
    "ShufflenetError": "shufflenet_cli.errors",
    "UsageError": "shufflenet_cli.errors",
    "ModelLoadError": "shufflenet_cli.errors",
}

__all__ = [
    "Classifier",
    "ImageLike",
    "ModelLoadError",
    "Prediction",
    "Record",
    "ShufflenetError",
    "UsageError",
    "__version__",
    "classify",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'shufflenet_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
