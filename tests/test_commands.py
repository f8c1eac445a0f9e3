"""`models`, `download`, `info`, `--version`, help texts and start-up: exit code, stdout and stderr apart.

Nothing here touches the network: downloads are either refused (SHUFFLENET_OFFLINE, set by conftest)
or go through a fake `torch.hub.download_url_to_file`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import stat
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
from conftest import random_state_dict
from rich.console import Console

from shufflenet_cli import __version__
from shufflenet_cli.models import MODELS, resolve_model


def _render(renderable, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def _cache_files(torch_home: Path) -> list[Path]:
    folder = torch_home / "hub" / "checkpoints"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _save(state_dict, path: Path) -> Path:
    import torch

    torch.save(state_dict, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_offline(monkeypatch):
    monkeypatch.delenv("SHUFFLENET_OFFLINE", raising=False)


@pytest.fixture
def fake_hub(monkeypatch, no_offline):
    """torch.hub.download_url_to_file replaced: records its calls, writes a small file, never connects."""
    calls: list[dict] = []

    def fake(url, dst, hash_prefix=None, progress=True):
        calls.append({"url": url, "dst": dst, "hash_prefix": hash_prefix, "progress": progress})
        Path(dst).write_bytes(b"weights for " + url.encode())

    monkeypatch.setattr("torch.hub.download_url_to_file", fake)
    return calls


# --- start-up, version, help ------------------------------------------------------------------


def test_importing_the_cli_does_not_import_torch():
    code = "import sys, shufflenet_cli.cli; assert 'torch' not in sys.modules; assert 'torchvision' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_version(cli):
    r = cli("--version")
    assert r.exit_code == 0
    assert r.stdout == f"shufflenet {__version__}\n"
    assert r.stderr == ""


@pytest.mark.parametrize("args", [["--help"], ["models", "--help"], ["download", "--help"], ["info", "--help"]])
def test_help(cli, args):
    r = cli(*args)
    assert r.exit_code == 0
    assert r.stdout.startswith("Usage: ")
    assert r.stderr == ""


def test_top_level_help_lists_the_commands(cli):
    r = cli("--help")
    for name in ("predict", "models", "download", "info"):
        assert f"  {name} " in r.stdout


def test_every_option_has_help():
    import typer

    from shufflenet_cli.cli import app

    root = typer.main.get_command(app)
    missing: list[str] = []

    def walk(cmd, path: str) -> None:
        if not (cmd.help or "").strip():
            missing.append(f"{path}: command has no help")
        for param in cmd.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path}: {param.name} has no help")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(root, "shufflenet")
    assert set(root.commands) >= {"predict", "models", "download", "info"}
    assert missing == []


# --- models -----------------------------------------------------------------------------------


def test_models_json_comes_from_torchvision_metadata(cli):
    r = cli("models", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    rows = r.json()
    assert [row["name"] for row in rows] == list(MODELS)
    for row in rows:
        spec = resolve_model(row["name"])
        entry = spec.weights()
        meta = entry.meta
        assert row["arch"] == spec.arch
        assert row["num_params"] == meta["num_params"]
        assert row["gflops"] == meta["_ops"]
        assert row["acc1"] == meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert row["acc5"] == meta["_metrics"]["ImageNet-1K"]["acc@5"]
        assert row["file_size_mb"] == meta["_file_size"]
        assert row["url"] == entry.url
        assert row["cached"] is False
        assert row["default"] is (row["name"] == "x1_0")


def test_models_json_shows_cached_weights(cli, cached_weights):
    r = cli("models", "-f", "json")
    assert r.exit_code == 0, r.stderr
    by_name = {row["name"]: row for row in r.json()}
    assert by_name["x0_5"]["cached"] is True
    assert by_name["x0_5"]["path"] == str(cached_weights)
    assert [n for n, row in by_name.items() if row["cached"]] == ["x0_5"]


def test_models_table(cli, cached_weights):
    r = cli("models")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("│ x")}
    assert list(lines) == list(MODELS)
    assert "(default)" in lines["x1_0"]
    assert sum("(default)" in line for line in lines.values()) == 1
    assert lines["x0_5"].split("│")[-2].strip() == "yes"
    assert lines["x2_0"].split("│")[-2].strip() == "no"
    assert "\x1b[" not in r.stdout  # no colour codes when not a terminal


def test_models_table_renderer_fits_80_columns():
    from shufflenet_cli.catalog import model_rows, render_models_table

    rows = model_rows()
    text = _render(render_models_table(rows))
    assert max(len(line) for line in text.splitlines()) <= 80
    x2 = next(line for line in text.splitlines() if "x2_0" in line)
    meta = resolve_model("x2_0").weights().meta
    cells = [c.strip() for c in x2.split("│")[1:-1]]
    assert cells == [
        "x2_0",
        f"{meta['num_params'] / 1e6:.2f}M",
        f"{meta['_ops']:g}",
        f"{meta['_metrics']['ImageNet-1K']['acc@1']:.2f}",
        f"{meta['_metrics']['ImageNet-1K']['acc@5']:.2f}",
        f"{meta['_file_size']:.1f} MB",
        "no",
    ]


def test_unexpected_failure_is_one_line_and_exit_70(cli, monkeypatch):
    def broken():
        raise ValueError("boom")

    monkeypatch.setattr("shufflenet_cli.catalog.model_rows", broken)
    r = cli("models")
    assert r.exit_code == 70
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "Error: unexpected failure: ValueError: boom",
        "Hint: run again with --debug for the traceback, and report it",
    ]
    r = cli("models", "--debug")  # the traceback, then the same error line and exit code
    assert r.exit_code == 70
    assert r.stderr.startswith("Traceback (most recent call last):")
    assert r.stderr.splitlines()[-1] == "Error: unexpected failure: ValueError: boom"


# --- download ---------------------------------------------------------------------------------


def test_download_offline_is_exit_3_with_a_hint(cli, _offline_private_cache):
    r = cli("download")
    assert r.exit_code == 3
    assert r.stdout == ""
    spec = resolve_model("x1_0")
    lines = r.stderr.splitlines()
    assert len(lines) == 2  # what happened, and what to do
    assert lines[0].startswith(f"Error: weights for {spec.arch} are not in the cache")
    assert "SHUFFLENET_OFFLINE is set" in lines[0] and spec.weights().url in lines[0]
    assert lines[1].startswith("Hint: run `shufflenet download x1_0` where there is internet")
    assert "Traceback" not in r.stderr
    assert _cache_files(_offline_private_cache) == []


def test_download_already_cached(cli, monkeypatch, cached_weights):
    """A cached file is checked as a download is (its hash taken here as torchvision's); one that
    fails is fetched again (tests/test_own_weights.py)."""
    from shufflenet_cli import weights

    monkeypatch.setattr(weights, "hash_prefix", lambda spec: _sha256(cached_weights)[:10])
    before = cached_weights.read_bytes()
    r = cli("download", "x0_5")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"{cached_weights}\n"
    assert r.stderr == "x0_5: already in the cache (sha256 checked)\n"
    assert cached_weights.read_bytes() == before


def test_download_unknown_model_suggests_the_closest(cli, fake_hub):
    r = cli("download", "x0_5", "x05")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "Error: unknown model 'x05'",
        "Hint: did you mean 'x0_5'? choose one of: x0_5, x1_0, x1_5, x2_0",
    ]
    assert fake_hub == []  # names are checked before anything is fetched


def test_download_fetches_with_the_hash_check(cli, fake_hub):
    from shufflenet_cli.weights import cache_path, hash_prefix

    spec = resolve_model("x1_5")
    r = cli("download", "x1_5")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"{cache_path(spec)}\n"
    assert r.stderr.splitlines() == [f"x1_5: downloading {spec.weights().url}", "x1_5: downloaded (sha256 checked)"]
    assert fake_hub == [
        {"url": spec.weights().url, "dst": str(cache_path(spec)), "hash_prefix": hash_prefix(spec), "progress": False}
    ]
    assert hash_prefix(spec) == "3c479a10"


def test_download_all_prints_every_path_in_order(cli, monkeypatch, fake_hub, cached_weights):
    from shufflenet_cli import weights
    from shufflenet_cli.weights import cache_path

    torchvisions = weights.hash_prefix
    digest = _sha256(cached_weights)
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: digest[:10] if spec.key == "x0_5" else torchvisions(spec))
    r = cli("download", "--all")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [str(cache_path(spec)) for spec in MODELS.values()]
    assert [call["url"] for call in fake_hub] == [MODELS[k].weights().url for k in ("x1_0", "x1_5", "x2_0")]
    assert "x0_5: already in the cache (sha256 checked)" in r.stderr.splitlines()


def test_download_names_and_all_together_is_a_usage_error(cli, fake_hub):
    r = cli("download", "x0_5", "--all")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.startswith("Error: give model names or --all, not both")


def test_download_network_failure(cli, monkeypatch, no_offline):
    def unreachable(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torch.hub.download_url_to_file", unreachable)
    r = cli("download", "x0_5")
    assert r.exit_code == 3
    assert r.stdout == ""
    assert "the download failed ([Errno -3] Temporary failure in name resolution)" in r.stderr
    assert "Hint: " in r.stderr
    assert "Cause:" not in r.stderr

    r = cli("download", "x0_5", "--verbose")
    assert r.exit_code == 3
    assert r.stderr.splitlines()[-1].startswith("Cause: URLError: ")
    assert "Traceback" not in r.stderr

    r = cli("download", "x0_5", "--debug")
    assert r.exit_code == 3  # as without --debug
    assert "Traceback (most recent call last):" in r.stderr and "ModelLoadError" in r.stderr
    assert any(line.startswith("Error: ") and "the download failed" in line for line in r.stderr.splitlines())


def test_download_hash_mismatch(cli, monkeypatch, no_offline):
    def bad_hash(url, dst, hash_prefix=None, progress=True):
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0000")')

    monkeypatch.setattr("torch.hub.download_url_to_file", bad_hash)
    r = cli("download", "x0_5")
    assert r.exit_code == 3
    assert r.stdout == ""
    assert "failed the hash check" in r.stderr.splitlines()[-1]


# --- download --from ----------------------------------------------------------------------------


@pytest.fixture
def x0_5_file(tmp_path) -> Path:
    return _save(random_state_dict("x0_5"), tmp_path / "my-x0_5.pth")


def test_download_from_file_then_predict_uses_it(cli, monkeypatch, x0_5_file, images, _offline_private_cache):
    from shufflenet_cli import weights

    digest = _sha256(x0_5_file)
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: digest[:10])
    spec = resolve_model("x0_5")

    r = cli("download", "x0_5", "--from", x0_5_file)
    assert r.exit_code == 0, r.stderr
    dest = weights.cache_path(spec)
    assert r.stdout == f"{dest}\n"
    assert r.stderr == f"x0_5: copied {x0_5_file} (sha256 checked)\n"
    assert dest.read_bytes() == x0_5_file.read_bytes()
    assert _cache_files(_offline_private_cache) == [dest]  # no temporary file left behind
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644

    r = cli("predict", images[0], "-m", "x0_5", "-f", "json", "-k", "2")
    assert r.exit_code == 0, r.stderr
    [record] = r.json()
    assert record["path"] == str(images[0])
    assert len(record["predictions"]) == 2

    r = cli("models", "-f", "json")
    assert {row["name"]: row["cached"] for row in r.json()}["x0_5"] is True


def test_download_from_file_finds_the_width_in_the_file(cli, monkeypatch, x0_5_file):
    from shufflenet_cli import weights

    digest = _sha256(x0_5_file)
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: digest[:8] if spec.key == "x0_5" else "ffffffff")
    r = cli("download", "--from", x0_5_file)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"{weights.cache_path(resolve_model('x0_5'))}\n"


def test_download_from_file_with_the_wrong_hash(cli, x0_5_file, _offline_private_cache):
    spec = resolve_model("x0_5")
    r = cli("download", "x0_5", "--from", x0_5_file)
    assert r.exit_code == 3
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"Error: {x0_5_file} is not torchvision's {spec.arch} weights file: its sha256 is ")
    assert "wants one starting with f707e7126e" in lines[0]
    assert (
        lines[1] == f"Hint: get the file from {spec.weights().url}, or use your own weights with "
        f"`predict --weights {x0_5_file}` (as the default: `shufflenet download x0_5 --from {x0_5_file} --force`)"
    )
    assert _cache_files(_offline_private_cache) == []  # nothing written


def test_download_from_file_of_another_width(cli, monkeypatch, tmp_path, _offline_private_cache):
    from shufflenet_cli import weights

    path = _save(random_state_dict("x1_0"), tmp_path / "x1_0.pth")
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: _sha256(path)[:10])
    r = cli("download", "x0_5", "--from", path)
    assert r.exit_code == 3
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"Error: {path} holds weights for shufflenet_v2_x1_0, not shufflenet_v2_x0_5",
        f"Hint: run `shufflenet download x1_0 --from {path}`",
    ]
    assert _cache_files(_offline_private_cache) == []


def test_download_from_file_that_does_not_fit(cli, monkeypatch, tmp_path, _offline_private_cache):
    """Right hash (patched) and right conv5 width, but the tensors do not load into the model."""
    from shufflenet_cli import weights

    state = random_state_dict("x0_5")
    del state["conv1.0.weight"]
    path = _save(state, tmp_path / "broken.pth")
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: _sha256(path)[:10])
    r = cli("download", "x0_5", "--from", path)
    assert r.exit_code == 3
    assert r.stderr.startswith(f"Error: {path} does not fit shufflenet_v2_x0_5: ")
    assert _cache_files(_offline_private_cache) == []


@pytest.mark.parametrize("kind", ["missing", "text"])
def test_download_from_unreadable_file(cli, tmp_path, kind, _offline_private_cache):
    path = tmp_path / "weights.pth"
    if kind == "text":
        path.write_text("not a checkpoint\n")
    r = cli("download", "x0_5", "--from", path)
    assert r.exit_code == 3
    assert r.stdout == ""
    assert r.stderr.startswith("Error: ")
    assert str(path) in r.stderr.splitlines()[0]
    assert _cache_files(_offline_private_cache) == []


def test_download_from_with_several_models_is_a_usage_error(cli, x0_5_file):
    for args in (["x0_5", "x1_0"], ["--all"]):
        r = cli("download", *args, "--from", x0_5_file)
        assert r.exit_code == 2
        assert r.stdout == ""
        assert r.stderr.splitlines()[0] == "Error: --from FILE copies one width"


def test_download_from_when_already_cached(cli, monkeypatch, x0_5_file, cached_weights):
    from shufflenet_cli import weights

    before = cached_weights.read_bytes()
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: _sha256(x0_5_file)[:10])
    r = cli("download", "--from", x0_5_file)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"{cached_weights}\n"
    assert r.stderr == "x0_5: already in the cache; left as it was\n"
    assert cached_weights.read_bytes() == before


# --- info -------------------------------------------------------------------------------------


def test_info_json(cli, cached_weights, _offline_private_cache):
    import PIL
    import torch
    import torchvision

    r = cli("info", "--format", "json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    info = r.json()
    assert info["versions"]["shufflenet"] == __version__
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["torchvision"] == torchvision.__version__
    assert info["versions"]["pillow"] == PIL.__version__
    assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["cpu"]["count"] == os.cpu_count()
    assert info["cpu"]["torch_threads"] >= 1
    assert info["cuda"]["available"] == torch.cuda.is_available()
    assert len(info["cuda"]["devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert info["cache"]["dir"] == str(_offline_private_cache / "hub" / "checkpoints")
    assert info["cache"]["offline"] is True
    assert {k: v["cached"] for k, v in info["cache"]["weights"].items()} == {
        "x0_5": True,
        "x1_0": False,
        "x1_5": False,
        "x2_0": False,
    }
    assert info["backends"]["torch"]["available"] is True
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    assert info["backends"]["onnxruntime"]["available"] is has_ort
    assert (info["versions"]["onnxruntime"] is not None) is has_ort


def test_info_table(cli, cached_weights, _offline_private_cache):
    r = cli("info")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""
    for title in ("versions", "devices", "weights cache", "backends"):
        assert title in [line.strip() for line in r.stdout.splitlines()]
    assert str(_offline_private_cache / "hub" / "checkpoints") in r.stdout.replace("│\n│", "")
    x0_5 = next(line for line in r.stdout.splitlines() if "│ x0_5 " in line)
    assert "cached" in x0_5 and "not cached" not in x0_5


def test_info_renderer_shows_cuda_devices():
    from shufflenet_cli.environment import render_info

    info = {
        "versions": {"shufflenet": "0.1.0", "onnxruntime": None},
        "cpu": {"count": 16, "usable": 8, "torch_threads": 8},
        "cuda": {
            "available": True,
            "version": "12.4",
            "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.1, "capability": "9.0"}],
        },
        "cache": {"dir": "/cache", "offline": False, "weights": {"x1_0": {"cached": True, "path": "/cache/x"}}},
        "backends": {
            "torch": {"available": True, "version": "2.5.0"},
            "onnxruntime": {
                "available": False,
                "version": None,
                "providers": [],
                "error": "ModuleNotFoundError: No module named 'onnxruntime'",
            },
        },
    }
    text = _render(render_info(info))
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = {
        cells[0]: cells[1]
        for cells in ([c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines())
        if len(cells) == 2
    }
    assert rows["onnxruntime"] in ("not installed", "no (not installed)")
    assert rows["cpu"] == "16 cores, 8 usable, torch threads 8"
    assert rows["cuda"] == "yes (CUDA 12.4)"
    assert rows["cuda:0"] == "NVIDIA H100 80GB HBM3, 79.1 GB, sm 9.0"
    assert rows["x1_0"] == "cached"
    assert rows["offline"] == "no"


def test_every_predict_option_reaches_the_library_options(monkeypatch, tmp_path):
    """Each command-line option lands in PredictOptions, by its own name or as the CLI words it."""
    from dataclasses import fields

    from typer.testing import CliRunner

    from shufflenet_cli import runner
    from shufflenet_cli.cli import app
    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.outcome import Outcome, Stats

    seen: list[PredictOptions] = []

    def capture(opts, **kwargs):
        seen.append(opts)
        return Outcome(0, Stats())

    monkeypatch.setattr(runner, "predict", capture)
    args = (
        "a.jpg b -m x0_5 --weights w.pth --labels l.txt --device cpu -b 7 -j 3 --decode-in processes --threads 2 "
        "-k 4 --threshold 0.25 -o out.csv --resume --force --csv-safe --no-recursive --hidden --ext jpg,png -0 "
        "--backend torch "
        "--precision bf16 --fast-decode --gpu-decode --no-cuda-graphs --report r.html --timings --no-progress -q "
        "--timeout 5 --max-download 7 --engine ray --ray-address 10.0.0.1:6379 --ray-timeout 9"
    ).split()
    result = CliRunner().invoke(app, ["predict", *args])
    assert result.exit_code == 0, result.output
    expected = PredictOptions(
        paths=["a.jpg", "b"], model="x0_5", weights=Path("w.pth"), labels=Path("l.txt"), device="cpu",
        batch_size=7, workers=3, threads=2, topk=4, threshold=0.25, fmt="csv", output=Path("out.csv"),
        resume=True, csv_safe=True, recursive=False, hidden=True, ext="jpg,png", null=True, precision="bf16",
        backend="torch",
        report=Path("r.html"), decode="fast", gpu_decode=True, decode_in="processes", cuda_graphs=False,
        timings=True, progress=False, quiet=True, force=True, timeout=5.0, max_download=7.0,
        engine="ray", ray_address="10.0.0.1:6379", ray_timeout=9.0,
    )  # fmt: skip
    assert seen == [expected]
    for f in fields(PredictOptions):  # every field is set off its default above, so none can be dropped unseen
        assert getattr(expected, f.name) != f.default, f.name


@pytest.mark.parametrize("name", ["evil\x1b[2J\x1b]0;owned\x07.pth", "two\nError: forged.pth", "gpj\u202eexe.pth"])
def test_error_lines_show_control_and_bidi_characters_of_a_path_escaped(cli, images, tmp_path, name):
    """A path in an `Error:` line reaches the terminal as the table shows it: no escape sequence acts,
    no newline forges a second line, no RIGHT-TO-LEFT OVERRIDE turns the name around."""
    missing = tmp_path / name
    r = cli("predict", images[0], "-m", "x0_5", "--weights", missing)
    assert r.exit_code == 3, r.stderr
    shown = name.replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace("\n", "\\n").replace("\u202e", "\\u202e")
    assert r.stderr.splitlines() == [f"Error: weights file not found: {tmp_path / shown}"]


def test_download_from_shows_a_file_name_escaped(cli, monkeypatch, x0_5_file, tmp_path):
    from shufflenet_cli import weights

    odd = tmp_path / "x\x1b[31m\u202e.pth"
    odd.write_bytes(x0_5_file.read_bytes())
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: _sha256(odd)[:10])
    r = cli("download", "x0_5", "--from", odd)
    assert r.exit_code == 0, r.stderr
    assert r.stderr == f"x0_5: copied {tmp_path}/x\\x1b[31m\\u202e.pth (sha256 checked)\n"


class _TorchvisionForAnotherTorch:
    """An import hook that fails torchvision's import as a torchvision built for another torch does."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


@pytest.mark.parametrize("command", ["predict", "info"])
def test_a_torchvision_for_another_torch_is_exit_3_naming_both(cli, run, images, monkeypatch, command):
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_TorchvisionForAnotherTorch(), *sys.meta_path])
    r = run(images[0]) if command == "predict" else cli("info")
    assert r.exit_code == 3, r.stderr
    first, hint = r.stderr.splitlines()[:2]
    assert first.startswith("Error: torchvision cannot be loaded with this torch (torch ")
    assert "torchvision::nms does not exist" in first
    assert hint == "Hint: install the two together, from one index, so that they match: " + (
        "pip install --force-reinstall torch torchvision"
    )
    assert "Traceback" not in r.stderr
