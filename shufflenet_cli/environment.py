"""What `shufflenet info` reports: versions, devices, the weights cache, the inference backends, the
image formats this installation reads.

`collect_info()` looks (and imports torch); `render_info` and `info_json` are pure.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _cpu_info() -> dict[str, Any]:
    import torch

    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {"count": os.cpu_count(), "usable": usable, "torch_threads": torch.get_num_threads()}


def _cuda_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"available": False, "version": torch.version.cuda, "devices": []}
    try:
        if not torch.cuda.is_available():
            return info
        info["available"] = True
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            info["devices"].append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gb": round(props.total_memory / 2**30, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    except Exception as exc:  # noqa: BLE001  a broken driver is worth reporting, not crashing on
        info["available"] = False
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _onnxruntime_info() -> dict[str, Any]:
    try:
        import onnxruntime
    except Exception as exc:  # noqa: BLE001  ImportError, or a broken install
        return {"available": False, "version": None, "providers": [], "error": f"{type(exc).__name__}: {exc}"}
    return {
        "available": True,
        "version": onnxruntime.__version__,
        "providers": list(onnxruntime.get_available_providers()),
    }


def collect_info() -> dict[str, Any]:
    """Everything `info` shows, as plain JSON-ready data."""
    import PIL
    import torch

    from shufflenet_cli.models import torchvision_mismatch

    try:
        import torchvision
    except (RuntimeError, ImportError, OSError) as exc:  # another torch's build: say which, not a traceback
        raise torchvision_mismatch(exc) from None

    from shufflenet_cli import __version__, weights
    from shufflenet_cli.image_formats import readable_formats
    from shufflenet_cli.models import MODELS

    ort = _onnxruntime_info()
    return {
        "versions": {
            "shufflenet": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": PIL.__version__,
            "onnxruntime": ort["version"],
        },
        "platform": platform.platform(),
        "cpu": _cpu_info(),
        "cuda": _cuda_info(),
        "cache": {
            "dir": str(weights.cache_dir()),
            "offline": weights.offline(),
            "weights": {
                key: {"cached": weights.is_cached(spec), "path": str(weights.cache_path(spec)), "own": _own(spec)}
                for key, spec in MODELS.items()
            },
        },
        "backends": {
            "torch": {"available": True, "version": torch.__version__},
            "onnxruntime": ort,
        },
        "formats": readable_formats(),
    }


def _own(spec: Any) -> str | None:
    """Your own default weights for the width (`download --from FILE --force`), which predict uses."""
    from shufflenet_cli import weights

    own = weights.own_weights(spec)
    return str(own) if own is not None else None


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def render_info(info: dict[str, Any]) -> Group:
    """Two-column tables, one per section."""

    def section(title: str) -> Table:
        table = Table(title=title, title_justify="left", title_style="bold", show_header=False)
        table.add_column("key", style="dim", no_wrap=True)
        table.add_column("value", overflow="fold")
        return table

    versions = section("versions")
    for name, version in info["versions"].items():
        versions.add_row(name, version or "not installed")

    devices = section("devices")
    cpu = info["cpu"]
    usable = f", {cpu['usable']} usable" if cpu.get("usable") not in (None, cpu["count"]) else ""
    devices.add_row("cpu", f"{cpu['count']} cores{usable}, torch threads {cpu['torch_threads']}")
    cuda = info["cuda"]
    if cuda["available"]:
        devices.add_row("cuda", f"yes (CUDA {cuda['version']})")
        for dev in cuda["devices"]:
            devices.add_row(f"cuda:{dev['index']}", f"{dev['name']}, {dev['memory_gb']} GB, sm {dev['capability']}")
    else:
        built = f"torch built with CUDA {cuda['version']}" if cuda["version"] else "torch built without CUDA"
        devices.add_row("cuda", f"no ({cuda.get('error') or built})")

    cache = section("weights cache")
    cache.add_row("folder", info["cache"]["dir"])
    cache.add_row(
        "offline", _yes_no(info["cache"]["offline"]) + (" (SHUFFLENET_OFFLINE)" if info["cache"]["offline"] else "")
    )
    for key, entry in info["cache"]["weights"].items():
        state = "cached" if entry["cached"] else "not cached"
        cache.add_row(key, f"your own weights: {entry['own']}" if entry.get("own") else state)

    backends = section("backends")
    for name, entry in info["backends"].items():
        if entry["available"]:
            providers = entry.get("providers")
            extra = f" ({', '.join(providers)})" if providers else ""
            backends.add_row(name, f"yes, {entry['version']}{extra}")
        else:
            backends.add_row(
                name, "no (not installed)" if "No module" in entry.get("error", "") else f"no ({entry.get('error')})"
            )

    return Group(versions, devices, cache, backends, *_formats_section(info.get("formats"), section))


def _formats_section(formats: dict[str, Any] | None, section: Callable[[str], Table]) -> list[Table]:
    """The image formats Pillow reads here, and the extras that would add more."""
    if not formats:
        return []
    table = section("image formats")
    table.add_row("reads", ", ".join(formats["readable"]))
    for extra, entry in formats["extras"].items():
        # Text, not markup: the extra's brackets ('shufflenet-cli[heif]') must print as they are
        table.add_row(extra, Text(f"yes ({entry['formats']})" if entry["installed"] else f"no: {entry['install']}"))
    return [table]


def info_json(info: dict[str, Any]) -> str:
    return json.dumps(info, indent=2)
