"""Loading weights: torch's cache under torchvision's file name, --weights files and their wrappers, errors,
and weights whose scores are not numbers."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import random_state_dict


def test_cache_path_is_torchvisions_own_file_name(_offline_private_cache):
    from shufflenet_cli.models import MODELS
    from shufflenet_cli.weights import cache_path

    for spec in MODELS.values():
        path = cache_path(spec)
        assert path.parent == _offline_private_cache / "hub" / "checkpoints"
        assert spec.weights().url.endswith("/" + path.name)


def test_predict_reads_weights_from_the_cache_offline(cli, images, cached_weights):
    r = cli("predict", images[0], "-m", "x0_5", "-f", "json")
    assert r.exit_code == 0, r.stderr
    assert r.json()[0]["predictions"][0]["rank"] == 1


def test_offline_without_cached_weights_is_exit_3_with_one_clear_message(cli, images):
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import cache_path

    r = cli("predict", images[0], "-m", "x1_0", "-f", "json")
    assert r.exit_code == 3
    assert r.stdout == ""
    assert resolve_model("x1_0").weights().url in r.stderr
    assert str(cache_path(resolve_model("x1_0"))) in r.stderr
    assert "--weights PATH" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 2  # one line for what happened, one for what to do


EXACT, FP16 = 1e-6, 1e-2  # fp16 storage rounds the weights (~5e-4 relative)


def test_predict_jsonl_with_weights_file(cli, images, random_weights):
    r = cli("predict", *images, "-m", "x0_5", "--weights", random_weights, "-f", "jsonl", "-k", "3")
    assert r.exit_code == 0, r.stderr
    recs = r.jsonl()
    assert [rec["path"] for rec in recs] == [str(p) for p in images]
    assert all(len(rec["predictions"]) == 3 for rec in recs)


@pytest.mark.parametrize(
    "wrap, tol",
    [
        (lambda sd: sd, EXACT),
        (lambda sd: {"state_dict": sd}, EXACT),
        (lambda sd: {"model": sd}, EXACT),
        (lambda sd: {"module." + k: v for k, v in sd.items()}, EXACT),
        (lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}}, EXACT),
        (lambda sd: {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, FP16),
    ],
    ids=["plain", "state_dict", "model", "module-prefix", "wrapped-prefixed", "fp16"],
)
def test_weights_file_wrappers_give_the_same_predictions(cli, images, tmp_path, random_weights, wrap, tol):
    sd = torch.load(random_weights, weights_only=True)
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(sd), path)
    plain = cli("predict", *images, "-m", "x0_5", "--weights", random_weights, "-f", "json")
    wrapped = cli("predict", *images, "-m", "x0_5", "--weights", path, "-f", "json")
    assert wrapped.exit_code == 0, wrapped.stderr
    for a, b in zip(plain.json(), wrapped.json(), strict=True):
        assert a["predictions"][0]["index"] == b["predictions"][0]["index"]
        pa = {p["index"]: p["probability"] for p in a["predictions"]}
        pb = {p["index"]: p["probability"] for p in b["predictions"]}
        for index in pa.keys() & pb.keys():
            assert pa[index] == pytest.approx(pb[index], abs=tol)


class NotATensor:
    pass


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"this is not a checkpoint", "it is a text file, not a PyTorch checkpoint"),
        (b"", "it is an empty file, not a PyTorch checkpoint"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "it is a JPEG image, not a PyTorch checkpoint"),  # a photo
        (bytes(range(7, 256)), "cannot read weights file"),
        (b"\x00\x00\x00\x00binary", "cannot read weights file"),
        (pickle.dumps({"fc.weight": NotATensor()}), "not a plain PyTorch state dict"),
    ],
    ids=["text", "empty", "jpeg", "garbage", "nul-bytes", "pickled-code"],
)
def test_bad_weights_file_is_exit_3(cli, images, tmp_path, content, needle):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    r = cli("predict", images[0], "-m", "x0_5", "--weights", path)
    assert r.exit_code == 3
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    if content.startswith(b"\x00"):
        assert "text file" not in r.stderr  # control bytes: not text


def test_missing_weights_file_is_exit_3(cli, images, tmp_path):
    r = cli("predict", images[0], "--weights", tmp_path / "nope.pth")
    assert r.exit_code == 3
    assert "weights file not found" in r.stderr


def test_weights_for_another_width_name_it(cli, images, random_weights):
    r = cli("predict", images[0], "-m", "x1_0", "--weights", random_weights)
    assert r.exit_code == 3
    assert "shufflenet_v2_x0_5" in r.stderr
    assert "--model x0_5" in r.stderr


def test_state_dict_with_wrong_keys_is_exit_3(cli, images, tmp_path):
    sd = random_state_dict("x0_5")
    sd.pop("conv1.0.weight")
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    r = cli("predict", images[0], "-m", "x0_5", "--weights", path)
    assert r.exit_code == 3
    assert "does not fit shufflenet_v2_x0_5" in r.stderr


def test_custom_classifier_needs_matching_labels(cli, images, tmp_path):
    path = tmp_path / "ten.pth"
    torch.save(random_state_dict("x0_5", num_classes=10), path)
    labels = tmp_path / "labels.txt"  # as a Windows editor saves it: a byte-order mark, CRLF
    labels.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(f"class-{i}" for i in range(10)).encode() + b"\r\n")

    r = cli("predict", *images, "-m", "x0_5", "--weights", path, "--labels", labels, "-f", "json", "-k", "20")
    assert r.exit_code == 0, r.stderr
    for rec in r.json():
        assert len(rec["predictions"]) == 10  # top-k clamped to the class count
        assert {p["label"] for p in rec["predictions"]} == {f"class-{i}" for i in range(10)}

    mismatch = cli("predict", images[0], "-m", "x0_5", "--weights", path)
    assert mismatch.exit_code == 3
    assert "10 classes" in mismatch.stderr and "1000 names" in mismatch.stderr


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x0c", "\x0b", "\x1c", "\x85", "\r"])
def test_labels_split_on_newlines_only(tmp_path, separator):
    """A hostile file of 999 lines, one holding another line break str.splitlines() knows, passed as
    1,000 and shifted every later label by one."""
    from shufflenet_cli.errors import ModelLoadError
    from shufflenet_cli.labels import labels_for, read_labels

    names = [f"class-{i}" for i in range(999)]
    names[10] = f"class-10{separator}class-10b"
    path = tmp_path / "labels.txt"
    path.write_bytes("\n".join(names).encode() + b"\n")
    assert read_labels(path) == names
    with pytest.raises(ModelLoadError, match="999 names"):
        labels_for(path, 1000)


def test_labels_keep_their_crlf_and_bom_handling(tmp_path):
    from shufflenet_cli.labels import read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbfa\r\nb\nc\r\n\r\n\n")
    assert read_labels(path) == ["a", "b", "c"]


def test_an_endless_labels_file_is_an_error_not_memory_exhaustion(monkeypatch):
    from shufflenet_cli import labels
    from shufflenet_cli.errors import ModelLoadError

    monkeypatch.setattr(labels, "MAX_LABELS_BYTES", 1 << 16)
    with pytest.raises(ModelLoadError, match="over 65,536 bytes"):
        labels.read_labels("/dev/zero")


def test_packaged_imagenet_labels_are_a_thousand():
    from shufflenet_cli.labels import imagenet_labels

    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[1] == "goldfish"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_exit_3(cli, images, random_weights):
    r = cli("predict", images[0], "-m", "x0_5", "--weights", random_weights, "--device", "cuda")
    assert r.exit_code == 3
    assert "no CUDA device" in r.stderr
    assert "Traceback" not in r.stderr


def test_verbose_adds_the_cause_and_debug_the_traceback(cli, images, tmp_path):
    path = tmp_path / "bad.pth"
    path.write_bytes(b"garbage")
    plain = cli("predict", images[0], "-m", "x0_5", "--weights", path)
    verbose = cli("predict", images[0], "-m", "x0_5", "--weights", path, "-v")
    assert plain.exit_code == verbose.exit_code == 3
    assert "Cause:" not in plain.stderr
    assert "Cause:" in verbose.stderr and "Traceback" not in verbose.stderr
    debug = cli("predict", images[0], "-m", "x0_5", "--weights", path, "--debug")
    assert debug.exit_code == 3  # the traceback, then the same error lines and exit code
    assert "Traceback (most recent call last):" in debug.stderr and "ModelLoadError" in debug.stderr
    assert "Error: cannot read weights file" in debug.stderr and "Cause:" in debug.stderr


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_weights_that_give_nan_or_inf_are_named_never_an_empty_success(tmp_path, cli, images, bad, backend):
    """A damaged weights file whose scores are NaN or infinite: each image gets an error record that
    says so (exit 1) with torch; onnxruntime's export check refuses the model (exit 3). Never an empty
    list of predictions counted as classified, and no numpy warning on stderr."""
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    state = random_state_dict("x0_5")
    state["fc.bias"][5] = bad
    path = tmp_path / "damaged.pth"
    torch.save(state, path)
    r = cli("predict", *images[:2], "-m", "x0_5", "--weights", path, "--backend", backend, "-f", "jsonl")
    assert "Traceback" not in r.stderr and "RuntimeWarning" not in r.stderr
    if backend == "torch":
        assert r.exit_code == 1, r.stderr
        assert r.stdout.endswith("\n"), r.stdout[-200:]
        records = r.jsonl()
        assert len(records) == 2 and all("not a number (NaN or infinity)" in rec["error"] for rec in records)
        assert "0 classified, 2 failed" in r.stderr
    else:
        assert r.exit_code == 3, r.stderr
        assert "not numbers (NaN or infinity)" in r.stderr and r.stdout == ""


# --------------------------------------------------- download --from: what is in the cache already


@pytest.fixture
def x0_5_source(tmp_path, monkeypatch):
    """A random x0_5 file, accepted as torchvision's (its hash prefix taken as the expected one)."""
    import hashlib

    from shufflenet_cli import weights

    path = tmp_path / "my-x0_5.pth"
    torch.save(random_state_dict("x0_5"), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(weights, "hash_prefix", lambda spec: digest[:10])
    return path


@pytest.mark.parametrize("found", ["damaged", "other weights", "link"])
def test_download_from_replaces_a_cache_file_that_is_not_the_checked_one(x0_5_source, tmp_path, found):
    """It said "already in the cache; left as it was" for any file of that name, so a damaged or
    planted weights file stayed in use after the user had copied the right one in."""
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import cache_path, install_from_file

    dest = cache_path(resolve_model("x0_5"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    other = tmp_path / "other.pth"
    other.write_bytes(b"not these weights")
    if found == "damaged":
        dest.write_bytes(x0_5_source.read_bytes()[:-100])
    elif found == "other weights":
        torch.save(random_state_dict("x0_5", seed=1), dest)
    else:
        dest.symlink_to(other)
    spec, path, copied = install_from_file(x0_5_source)
    assert copied and path == dest and not dest.is_symlink()
    assert dest.read_bytes() == x0_5_source.read_bytes()
    assert other.read_bytes() == b"not these weights"  # a link is replaced, never written through


def test_download_from_leaves_the_same_weights_as_they_were(x0_5_source):
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import cache_path, install_from_file

    assert install_from_file(x0_5_source)[2] is True
    dest = cache_path(resolve_model("x0_5"))
    inode = dest.stat().st_ino
    assert install_from_file(x0_5_source)[2] is False
    assert dest.stat().st_ino == inode
    torch.save(random_state_dict("x0_5"), dest)  # the same tensors, saved under another name: other bytes
    assert install_from_file(x0_5_source)[2] is False
