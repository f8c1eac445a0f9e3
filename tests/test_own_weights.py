"""Weights the tool can work out for itself (issue 17): the width of a --weights file, your own weights
as a width's default, `download` checking a cached file, and clear words for a TorchScript file, a URL
and a width in capitals."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from conftest import random_state_dict

from shufflenet_cli import checkpoints, weights
from shufflenet_cli.errors import ModelLoadError
from shufflenet_cli.models import resolve_model

X0_5 = resolve_model("x0_5")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def own_file(tmp_path) -> Path:
    """x0_5 weights that are not torchvision's (seed 1: other predictions than `cached_weights`)."""
    path = tmp_path / "finetuned-x0_5.pth"
    torch.save(random_state_dict("x0_5", seed=1), path)
    return path


def _top(r) -> list[tuple[int, ...]]:
    assert r.exit_code == 0, r.stderr
    return [tuple(p["index"] for p in rec["predictions"]) for rec in r.json()]


# ------------------------------------------------------------------ the width of a --weights file


def test_spec_for_takes_the_width_from_the_weights_file(random_weights):
    assert weights.spec_for(None, random_weights) is X0_5


def test_spec_for_keeps_a_given_width_and_the_default(random_weights):
    assert weights.spec_for("x1_0", random_weights).key == "x1_0"  # then the loader names the mismatch
    assert weights.spec_for("X1_5", None).key == "x1_5"
    assert weights.spec_for(None, None).key == "x1_0"


def test_spec_for_a_file_of_no_known_width_gets_the_default_and_the_loaders_message(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 4)}, path)
    spec = weights.spec_for(None, path)
    assert spec.key == "x1_0"
    with pytest.raises(ModelLoadError, match="is not a ShuffleNet v2 state dict"):
        weights.load_model(spec, path)


def test_spec_for_then_load_model_reads_the_file_once(random_weights, monkeypatch):
    reads = []
    real = checkpoints._load
    monkeypatch.setattr(checkpoints, "_load", lambda path: reads.append(path) or real(path))
    spec = weights.spec_for(None, random_weights)
    model = weights.load_model(spec, random_weights)
    assert reads == [random_weights]
    assert model.fc.out_features == 1000
    weights.load_model(spec, random_weights)  # not kept for ever: a later run reads the file again
    assert len(reads) == 2


def test_a_weights_file_changed_after_its_width_was_read_is_read_again(random_weights, tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(random_weights.read_bytes())
    assert weights.spec_for(None, path) is X0_5
    torch.save(random_state_dict("x1_0"), path)
    with pytest.raises(ModelLoadError, match="holds weights for shufflenet_v2_x1_0"):
        weights.load_model(X0_5, path)


def test_resolve_model_of_none_is_still_an_error():
    with pytest.raises((TypeError, AttributeError)):
        resolve_model(None)  # type: ignore[arg-type]


def test_predict_without_model_takes_the_width_from_weights(cli, images, random_weights):
    r = cli("predict", images[0], "--weights", random_weights, "-f", "json", "-k", "2")
    assert r.exit_code == 0, r.stderr
    assert len(r.json()[0]["predictions"]) == 2


def test_library_predict_with_model_none_takes_the_width_from_weights(images, random_weights, tmp_path):
    from shufflenet_cli import runner
    from shufflenet_cli.options import PredictOptions

    out = tmp_path / "out.jsonl"
    opts = PredictOptions(paths=[str(images[0])], model=None, weights=random_weights, fmt="jsonl", output=out)  # type: ignore[arg-type]
    assert runner.predict(opts).exit_code == 0
    assert out.read_text().count("\n") == 1


# ------------------------------------------------------------------ your own weights as the default


def test_download_from_without_force_still_wants_torchvisions_file(cli, own_file, _offline_private_cache):
    r = cli("download", "--from", own_file)
    assert r.exit_code == 3
    assert f"`shufflenet download x0_5 --from {own_file} --force`" in r.stderr.splitlines()[1]
    assert not weights.own_path(X0_5).exists() and not weights.cache_path(X0_5).exists()


def test_download_from_force_makes_your_weights_the_default_offline(cli, images, own_file, random_weights):
    r = cli("download", "--from", own_file, "--force")
    assert r.exit_code == 0, r.stderr
    own = weights.own_path(X0_5)
    assert r.stdout == f"{own}\n"
    assert r.stderr.startswith(f"x0_5: installed {own_file} as your own default weights (it is not torchvision's")
    assert "predictions will differ from the official weights'" in r.stderr
    assert "`shufflenet download x0_5 --official` goes back" in r.stderr
    assert own.read_bytes() == own_file.read_bytes()
    assert not weights.cache_path(X0_5).exists()  # torchvision's name is never given to other weights

    mine = cli("predict", *images, "-m", "x0_5", "-f", "json")  # offline, nothing else cached
    assert _top(mine) == _top(cli("predict", *images, "-m", "x0_5", "--weights", own_file, "-f", "json"))
    assert _top(mine) != _top(cli("predict", *images, "-m", "x0_5", "--weights", random_weights, "-f", "json"))

    rows = {row["name"]: row for row in cli("models", "-f", "json").json()}
    assert rows["x0_5"]["own"] == str(own) and rows["x0_5"]["cached"] is False
    assert rows["x1_0"]["own"] is None
    table = cli("models").stdout
    assert "own" in table.split("x0_5")[1].splitlines()[0]
    assert "own: your own default weights; figures are torchvision's" in table
    assert cli("info", "-f", "json").json()["cache"]["weights"]["x0_5"]["own"] == str(own)
    assert "your own weights" in cli("info").stdout  # the path may wrap in the table


def test_your_weights_win_over_torchvisions_cached_file(cli, images, own_file, cached_weights):
    before = _top(cli("predict", *images, "-m", "x0_5", "-f", "json"))
    assert cli("download", "x0_5", "--from", own_file, "--force").exit_code == 0
    after = _top(cli("predict", *images, "-m", "x0_5", "-f", "json"))
    assert after == _top(cli("predict", *images, "-m", "x0_5", "--weights", own_file, "-f", "json"))
    assert after != before


def test_download_official_goes_back(cli, monkeypatch, images, own_file, cached_weights):
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: _sha256(cached_weights)[:10])
    official = _top(cli("predict", *images, "-m", "x0_5", "-f", "json"))
    assert cli("download", "x0_5", "--from", own_file, "--force").exit_code == 0
    r = cli("download", "x0_5")  # a plain download says your weights are still the default
    assert r.exit_code == 0, r.stderr
    assert f"x0_5: note: your own weights {weights.own_path(X0_5)} stay the default" in r.stderr

    r = cli("download", "x0_5", "--official")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"{cached_weights}\n"
    assert r.stderr.splitlines() == [
        f"x0_5: removed your own weights {weights.own_path(X0_5)}",
        "x0_5: already in the cache (sha256 checked)",
    ]
    assert not weights.own_path(X0_5).exists()
    assert _top(cli("predict", *images, "-m", "x0_5", "-f", "json")) == official


@pytest.mark.parametrize(
    "args, message",
    [
        (["--force"], "Error: --force is for --from FILE"),
        (["--official", "--from", "w.pth"], "Error: --official and --from do not go together"),
    ],
)
def test_force_and_official_misused_are_usage_errors(cli, args, message):
    r = cli("download", *args)
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == message


def test_download_from_force_checks_the_width(cli, own_file, _offline_private_cache):
    r = cli("download", "x1_0", "--from", own_file, "--force")
    assert r.exit_code == 3
    assert r.stderr.startswith(f"Error: {own_file} holds weights for shufflenet_v2_x0_5, not shufflenet_v2_x1_0")
    assert not weights.own_path(resolve_model("x1_0")).exists()


# ------------------------------------------------------------------ download checks a cached file


def test_download_of_a_cached_file_that_fails_the_hash_check_offline_is_exit_3(cli, cached_weights):
    before = cached_weights.read_bytes()
    r = cli("download", "x0_5")
    assert r.exit_code == 3
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"Error: the cached weights file {cached_weights} is damaged or not torchvision's")
    assert "wants one starting with f707e7126e" in lines[0]
    assert lines[1].startswith("Hint: run `shufflenet download x0_5` where there is internet")
    assert cached_weights.read_bytes() == before


def test_predict_still_uses_whatever_is_cached(cli, images, cached_weights):
    assert cli("predict", images[0], "-m", "x0_5", "-f", "json").exit_code == 0


def test_download_fetches_a_cached_file_that_fails_the_hash_check_again(cli, monkeypatch, cached_weights):
    monkeypatch.delenv("SHUFFLENET_OFFLINE")
    calls = []

    def fake(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        Path(dst).write_bytes(b"fresh")

    monkeypatch.setattr("torch.hub.download_url_to_file", fake)
    r = cli("download", "x0_5")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"{cached_weights}\n"
    lines = r.stderr.splitlines()
    assert lines[0].startswith("x0_5: the cached file is damaged or not torchvision's (its sha256 is ")
    assert lines[0].endswith(f"; downloading {X0_5.weights().url} again")
    assert lines[1] == "x0_5: downloaded (sha256 checked)"
    assert calls == [(X0_5.weights().url, str(cached_weights), "f707e7126e")]
    assert cached_weights.read_bytes() == b"fresh"


# ------------------------------------------------------------------ TorchScript, URLs, capitals


def test_a_torchscript_file_as_weights_says_how_to_get_a_state_dict(cli, images, tmp_path):
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notes
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    r = cli("predict", images[0], "-m", "x0_5", "--weights", path)
    assert r.exit_code == 3
    lines = r.stderr.splitlines()
    assert lines[0] == f"Error: cannot read weights file {path}: it is a TorchScript model, not a state dict"
    assert lines[1] == (
        f"Hint: save its state dict in Python, torch.save(torch.jit.load({str(path)!r}).state_dict(), "
        "'state_dict.pth'), and pass --weights state_dict.pth"
    )


def test_a_url_folded_to_one_slash_says_so(cli, images, cached_weights):
    """http(s) and object storage: test_remote.py, test_buckets.py, test_object_stores.py."""
    r = cli("predict", "https:/host/dog.jpg", images[0], "-m", "x0_5", "-f", "json")
    assert r.exit_code == 1
    bad, good = r.json()
    assert bad["path"] == "https:/host/dog.jpg" and good["path"] == str(images[0])
    assert "two slashes" in bad["error"]


def test_a_local_path_that_looks_like_a_url_is_still_a_file(cli, tmp_path, monkeypatch, cached_weights, images):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "https:" / "host").mkdir(parents=True)
    (tmp_path / "https:" / "host" / "dog.jpg").write_bytes(images[0].read_bytes())
    r = cli("predict", "https://host/dog.jpg", "-m", "x0_5", "-f", "json")
    assert r.exit_code == 0, r.stderr
    assert "predictions" in r.json()[0]


@pytest.mark.parametrize("url", ["https://example.com/w.pth", "s3://bucket/w.pth"])
def test_a_url_as_weights_says_urls_are_not_supported(cli, images, url):
    r = cli("predict", images[0], "-m", "x0_5", "--weights", url)
    assert r.exit_code == 3
    assert "URLs are not supported yet: download the file first and pass its local path" in r.stderr
    assert "not found" not in r.stderr


@pytest.mark.parametrize(
    "text, url",
    [
        ("https://example.com/a.jpg", True),
        ("https:/example.com/a.jpg", True),  # what pathlib makes of it
        ("HTTP://example.com/a.jpg", True),
        ("gs://bucket/key", True),
        ("http:", False),
        ("http:x.jpg", False),
        ("ftp://host/a.jpg", False),
        ("photos/https://a.jpg", False),
        ("httpss://a", False),
    ],
)
def test_looks_like_url(text, url):
    from shufflenet_cli.urls import looks_like_url

    assert looks_like_url(text) is url


def test_model_names_in_capitals(cli, images, cached_weights, monkeypatch):
    r = cli("predict", images[0], "-m", "X0_5", "-f", "json")
    assert r.exit_code == 0, r.stderr
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: _sha256(cached_weights)[:10])
    r = cli("download", "X0_5")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == f"{cached_weights}\n"
