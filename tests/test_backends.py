"""Backends against the torch fp32 path, the ONNX cache, and the split preprocessing.

Tolerances (stated once, used below):
- onnxruntime fp32 vs torch fp32: logits within 1e-4 (max abs) where they are of ImageNet size
  (|logit| <= 10, the real weights), else within 1e-5 of the largest logit (random weights reach
  hundreds, where one float32 step is above 1e-4); probabilities within 1e-4; the same top-5.
- torch bf16 / fp16 autocast on CPU vs fp32: top-1 equal on all but at most one image of eight, and
  top-1 probabilities within 0.05 (bf16, 8 mantissa bits) / 0.01 (fp16, 11 bits).
- torch CUDA fp32 vs CPU fp32: probabilities within 1e-3 (cuDNN may use TF32), the same top-1.
Models are x0_5 with random weights whose classifier is scaled up so that logits are spread out:
the top-k order then does not hinge on rounding.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from conftest import DOG, make_image, random_state_dict

ORT_ATOL = 1e-4
LOW_PRECISION = {"bf16": 0.05, "fp16": 0.01}

onnxruntime = pytest.importorskip("onnxruntime")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def spread_model(seed: int = 0) -> torch.nn.Module:
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import build_model

    sd = random_state_dict("x0_5", seed=seed)
    sd["fc.weight"] = sd["fc.weight"] * 20
    return build_model(resolve_model("x0_5"), sd, "test")


@pytest.fixture(scope="module")
def prep():
    """Overrides conftest's `prep`: built from torchvision's `weights.transforms()`, not the ModelSpec."""
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.models import resolve_model

    return Preprocess.from_weights(resolve_model("x0_5").weights())


@pytest.fixture(scope="module")
def picture_paths(tmp_path_factory) -> list:
    """Eight pictures: crops of the real photo where it is here, noise otherwise, several sizes."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("pictures")
    paths = []
    if DOG.is_file():
        src = Image.open(DOG).convert("RGB")
        boxes = [(0, 0, 1546, 1213), (200, 100, 1000, 700), (500, 300, 1500, 1100), (0, 400, 700, 1213)]
        for i, box in enumerate(boxes):
            p = folder / f"dog{i}.jpg"
            src.crop(box).resize((500, 375) if i % 2 == 0 else (375, 500)).save(p, quality=90)
            paths.append(p)
    sizes = [(500, 375), (375, 500), (640, 480), (97, 61), (300, 1000), (224, 224), (800, 600), (333, 257)]
    for i, size in enumerate(sizes[: 8 - len(paths)]):
        paths.append(make_image(folder / f"noise{i}.jpg", size=size, seed=40 + i, quality=90))
    return paths


@pytest.fixture(scope="module")
def batch(prep, picture_paths) -> np.ndarray:
    return np.stack([prep(str(p)).array for p in picture_paths])


def torch_fp32(model, prep):
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    return TorchBackend(copy.deepcopy(model), torch.device("cpu"), prep.mean, prep.std)


def onnx(model, prep, weights_path=None, threads=1, **kw):
    from shufflenet_cli.backends.onnx_runtime import OnnxBackend

    return OnnxBackend(
        model, torch.device("cpu"), prep.mean, prep.std, prep.crop, threads=threads, weights_path=weights_path, **kw
    )


def torch_logits(model, prep, batch: np.ndarray) -> np.ndarray:
    from shufflenet_cli.backends.ops import as_tensor, normalize

    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model(normalize(as_tensor(batch), mean, std, channels_last=False)).numpy()


# ------------------------------------------------------------------------------------ parity


def test_onnxruntime_fp32_matches_torch_fp32(prep, batch):
    model = spread_model()
    reference = torch_fp32(model, prep)
    backend = onnx(model, prep)
    from shufflenet_cli.backends.onnx_export import allowed_difference

    ort_logits = backend.logits(batch)  # normalised as torch does, bit for bit (test_numpy_normalisation_...)
    ref_logits = torch_logits(model, prep, batch)
    assert np.abs(ort_logits - ref_logits).max() < allowed_difference(np.abs(ref_logits).max())
    assert backend.parity is not None and backend.parity[0] < backend.parity[1]

    probs, idx = backend.topk(batch, 5)
    ref_probs, ref_idx = reference.topk(batch, 5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=ORT_ATOL)


def test_onnxruntime_dynamic_batch_axis(prep, batch):
    backend = onnx(spread_model(), prep)
    reference = torch_fp32(spread_model(), prep)
    for n in (1, 3):
        probs, idx = backend.topk(batch[:n], 5)
        ref_probs, ref_idx = reference.topk(batch[:n], 5)
        assert idx.shape == (n, 5)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=ORT_ATOL)


def test_torch_channels_last_and_contiguous_agree(prep, batch):
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    model = spread_model()
    cl = TorchBackend(copy.deepcopy(model), torch.device("cpu"), prep.mean, prep.std, channels_last=True)
    contiguous = TorchBackend(copy.deepcopy(model), torch.device("cpu"), prep.mean, prep.std, channels_last=False)
    p1, i1 = cl.topk(batch, 5)
    p2, i2 = contiguous.topk(batch, 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(p1, p2, rtol=0, atol=1e-5)


def test_numpy_normalisation_is_torchs_bit_for_bit(prep):
    from shufflenet_cli.backends.ops import normalize, normalize_numpy

    every_value = np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 16, 16, 3)
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
    expected = normalize(torch.from_numpy(every_value), mean, std, channels_last=False).numpy()
    got = normalize_numpy(every_value, mean.numpy(), std.numpy())
    assert got.flags.c_contiguous and got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_slices_run_at_once_give_the_one_slice_results(prep, batch, backend):
    from shufflenet_cli.backends.torch_backend import TorchBackend

    model = spread_model()
    if backend == "torch":
        one, three = (TorchBackend(spread_model(), torch.device("cpu"), prep.mean, prep.std, threads=t) for t in (1, 3))
    else:
        one, three = (onnx(model, prep, threads=t) for t in (1, 3))
    assert three.streams == 3
    p1, i1 = one.topk(batch, 5)
    p3, i3 = three.topk(batch, 5)
    np.testing.assert_array_equal(i1, i3)
    np.testing.assert_allclose(p1, p3, rtol=0, atol=1e-6)


def test_onnxruntime_runs_a_cpu_slice_in_small_runs_with_each_image_in_its_place(prep, batch):
    from shufflenet_cli.backends.onnx_runtime import CPU_RUN_IMAGES

    model = spread_model()
    backend = onnx(model, prep)
    ten = np.concatenate([batch, batch[:2, ::-1]])  # 10 distinct images (two flipped): the last run is short
    sizes, run = [], backend.session.run

    def spy(outputs, feeds, *args, **kwargs):
        (x,) = feeds.values()
        assert x.dtype == np.float32 and x.flags.c_contiguous
        sizes.append(len(x))
        return run(outputs, feeds, *args, **kwargs)

    backend.session.run = spy
    logits = backend.logits(ten)
    assert sizes == [min(CPU_RUN_IMAGES, len(ten) - i) for i in range(0, len(ten), CPU_RUN_IMAGES)]
    assert len(sizes) > 1
    # every row is its own image's: the torch fp32 logits of the same ten, in the same order
    expected = torch_logits(model, prep, ten)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert backend.logits(ten[:0]).shape == (0, 1000)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_torch_autocast_on_cpu_keeps_top1(prep, batch, precision):
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    model = spread_model()
    low = TorchBackend(copy.deepcopy(model), torch.device("cpu"), prep.mean, prep.std, precision=precision)
    probs, idx = low.topk(batch, 5)
    ref_probs, ref_idx = torch_fp32(model, prep).topk(batch, 5)
    same = idx[:, 0] == ref_idx[:, 0]
    assert same.sum() >= len(batch) - 1, (idx[:, 0], ref_idx[:, 0])
    assert np.abs(probs[same, 0] - ref_probs[same, 0]).max() <= LOW_PRECISION[precision]


@pytest.mark.skipif(not DOG.is_file(), reason="../shared is not here")
def test_onnxruntime_with_real_weights_calls_the_dog_a_samoyed(real_weights, prep):
    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import build_model, read_checkpoint

    model = build_model(resolve_model("x0_5"), read_checkpoint(real_weights), "real")
    one = prep(str(DOG)).array[None]
    backend = onnx(model, prep)
    assert backend.parity[0] < ORT_ATOL  # ImageNet-size logits: the plain 1e-4 holds
    logits = backend.logits(one)
    assert np.abs(logits - torch_logits(model, prep, one)).max() < ORT_ATOL
    probs, idx = backend.topk(one, 5)
    ref_probs, ref_idx = torch_fp32(model, prep).topk(one, 5)
    assert idx[0, 0] == 258
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=ORT_ATOL)


@cuda
def test_cuda_fp32_matches_cpu(prep, batch):
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    model = spread_model()
    gpu = TorchBackend(copy.deepcopy(model), torch.device("cuda"), prep.mean, prep.std)
    probs, idx = gpu.topk(batch, 5)
    ref_probs, ref_idx = torch_fp32(model, prep).topk(batch, 5)
    np.testing.assert_array_equal(idx[:, 0], ref_idx[:, 0])
    np.testing.assert_allclose(probs[:, 0], ref_probs[:, 0], rtol=0, atol=1e-3)


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_keeps_top1(prep, batch, precision):
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    model = spread_model()
    gpu = TorchBackend(copy.deepcopy(model), torch.device("cuda"), prep.mean, prep.std, precision=precision)
    probs, idx = gpu.topk(batch, 5)
    ref_probs, ref_idx = torch_fp32(model, prep).topk(batch, 5)
    same = idx[:, 0] == ref_idx[:, 0]
    assert same.sum() >= len(batch) - 1
    assert np.abs(probs[same, 0] - ref_probs[same, 0]).max() <= LOW_PRECISION[precision]


@cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("on_device", [False, True], ids=["numpy", "device-tensor"])
def test_cuda_graph_replay_is_bit_for_bit_the_eager_step(prep, batch, precision, on_device):
    """Batches of one shape are replayed from a CUDA graph from the second one on; the kernels are
    the same, so the results are too. The last, smaller batch runs eagerly."""
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    model = spread_model()
    make = lambda graphs: TorchBackend(  # noqa: E731
        copy.deepcopy(model), torch.device("cuda"), prep.mean, prep.std, precision=precision, cuda_graphs=graphs
    )
    graphed, eager = make(True), make(False)
    rng = np.random.default_rng(5)
    batches = [np.roll(batch, i, axis=0) for i in range(3)] + [batch[:3]]
    batches[2] = rng.integers(0, 256, batch.shape, dtype=np.uint8)  # a replay sees new data, not a copy
    for b in batches:
        x = torch.from_numpy(b).cuda() if on_device else b
        got, want = graphed.topk(x, 5), eager.topk(x, 5)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    assert len(graphed.graphs.captured) == 1 and graphed.graphs.failed is None
    assert "CUDA graphs" in graphed.describe() and "CUDA graphs" not in eager.describe()


@cuda
def test_one_off_batches_run_eagerly_and_take_no_graph_slot(prep, batch):
    """near_ties.py's second-pass batches (one_off) come in odd sizes: counted, they would fill the
    MAX_SHAPES graph slots that the run's own batch sizes need."""
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    graphed = TorchBackend(copy.deepcopy(spread_model()), torch.device("cuda"), prep.mean, prep.std)
    eager = TorchBackend(copy.deepcopy(spread_model()), torch.device("cuda"), prep.mean, prep.std, cuda_graphs=False)
    for b in [batch[:2], batch[:2], batch[:3], batch[:3], batch, batch]:
        got, want = graphed.topk(b, 5, one_off=True), eager.topk(b, 5)
        np.testing.assert_array_equal(got[1], want[1])
    assert not graphed.graphs.captured and not graphed.graphs.seen and graphed.graphs.replayed == 0
    for b in [batch, batch, batch]:
        graphed.topk(b, 5)
    assert len(graphed.graphs.captured) == 1 and graphed.graphs.replayed == 2


@pytest.mark.parametrize(
    ("device", "precision", "layout"),
    [("cpu", "fp32", "channels_last"), ("cuda", "fp32", "contiguous"), ("cuda", "fp16", "channels_last")],
)
def test_each_device_and_precision_gets_the_layout_measured_faster(prep, device, precision, layout):
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    backend = TorchBackend(
        copy.deepcopy(spread_model()), torch.device(device), prep.mean, prep.std, precision=precision
    )
    assert backend.channels_last == (layout == "channels_last")
    assert f"{precision} {layout}" in backend.describe()


def test_graphs_capture_a_shape_the_second_time_and_give_up_after_a_failed_capture(monkeypatch):
    """The policy, without a GPU: the first batch of a shape runs eagerly (None), the second is
    captured and replayed, later ones replayed; at most MAX_SHAPES shapes; a capture that raises
    turns graphs off for the rest of the run."""
    from shufflenet_cli.backends import cuda_graphs

    captures = []

    class FakeCapture:
        def __init__(self, device, step, batch, k):
            if batch.shape[0] == 13:
                raise RuntimeError("operation not permitted when stream is capturing")
            captures.append(batch.shape)

        def run(self, batch):
            return ("replayed", batch.shape[0])

    monkeypatch.setattr(cuda_graphs, "Captured", FakeCapture)
    steps = cuda_graphs.GraphedSteps("cuda", step=None)
    b = lambda n: np.zeros((n, 4, 4, 3), np.uint8)  # noqa: E731
    assert [steps.topk(b(8), 5) for _ in range(3)] == [None, ("replayed", 8), ("replayed", 8)]
    assert captures == [(8, 4, 4, 3)] and steps.replayed == 2
    assert steps.topk(b(8).astype(np.float32), 5) is None  # uint8 batches only
    assert steps.topk(b(8), 3) is None  # another k: another step
    assert steps.topk(b(5), 5) is None and steps.topk(b(5), 5) == ("replayed", 5)
    assert steps.topk(b(6), 5) is None and steps.topk(b(6), 5) is None  # MAX_SHAPES (2) kept already
    assert len(captures) == cuda_graphs.MAX_SHAPES
    steps = cuda_graphs.GraphedSteps("cuda", step=None)
    assert steps.topk(b(13), 5) is None and steps.topk(b(13), 5) is None
    assert "stream is capturing" in steps.failed
    assert steps.topk(b(8), 5) is None and steps.topk(b(8), 5) is None  # off for the rest of the run
    assert len(captures) == 2


# ------------------------------------------------------------------------------- ONNX cache


@pytest.fixture
def spy_export(monkeypatch):
    """Counts real exports (and still runs them)."""
    from shufflenet_cli.backends import onnx_export

    calls = []
    real = onnx_export.export_bytes

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_bytes", counting)
    return calls


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """$XDG_CACHE_HOME/shufflenet-cli, private to the test: where a --weights file's export goes."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "shufflenet-cli"


def test_export_is_cached_in_the_user_cache_and_reused(tmp_path, prep, spy_export, user_cache):
    """A --weights file's export goes to the user's cache, never the weights' folder (it may be shared)."""
    weights = tmp_path / "mine.pth"
    weights.write_bytes(b"")  # only its folder and name matter here
    model = spread_model()
    first = onnx(model, prep, weights_path=weights)
    assert first.exported and len(spy_export) == 1
    assert first.cache_path.parent == user_cache and first.cache_path.name.startswith("mine.")
    assert not list(tmp_path.glob("*.onnx"))
    second = onnx(model, prep, weights_path=weights)
    assert len(spy_export) == 1, "the cached file must be reused, not exported again"
    assert not second.exported and second.cache_path == first.cache_path


def test_changed_weights_export_again_and_drop_the_stale_file(tmp_path, prep, spy_export):
    weights = tmp_path / "mine.pth"
    first = onnx(spread_model(seed=0), prep, weights_path=weights)
    second = onnx(spread_model(seed=1), prep, weights_path=weights)
    assert len(spy_export) == 2
    assert second.cache_path != first.cache_path
    assert second.cache_path.is_file() and not first.cache_path.exists()


def test_without_a_weights_file_the_export_goes_to_torchs_checkpoints(_offline_private_cache, prep):
    backend = onnx(spread_model(), prep)
    assert backend.cache_path.parent == _offline_private_cache / "hub" / "checkpoints"
    assert backend.cache_path.name.startswith("shufflenet_v2_x0_5.")


def test_unwritable_checkpoints_folder_falls_back_to_the_user_cache(_offline_private_cache, prep, monkeypatch):
    from shufflenet_cli.backends import onnx_cache

    locked = _offline_private_cache / "hub" / "checkpoints"
    real = onnx_cache.save
    monkeypatch.setattr(onnx_cache, "save", lambda path, data: path.parent != locked and real(path, data))
    backend = onnx(spread_model(), prep)
    assert backend.cache_path.parent == onnx_cache.user_cache_dir()


def test_a_damaged_cache_file_is_exported_again(tmp_path, prep, spy_export):
    weights = tmp_path / "w.pth"
    first = onnx(spread_model(), prep, weights_path=weights)
    first.cache_path.write_bytes(b"not onnx")
    with pytest.warns(UserWarning, match="changed since it was written"):
        second = onnx(spread_model(), prep, weights_path=weights)
    assert len(spy_export) == 2 and second.exported
    assert second.cache_path.stat().st_size > 1000


def test_an_export_that_disagrees_with_torch_is_refused_and_not_cached(tmp_path, prep, monkeypatch):
    from shufflenet_cli.backends import onnx_export
    from shufflenet_cli.errors import ModelLoadError

    other = spread_model(seed=7)
    real = onnx_export.export_bytes
    monkeypatch.setattr(onnx_export, "export_bytes", lambda model, crop, exporter=None: real(other, crop, exporter))
    with pytest.raises(ModelLoadError, match="does not match torch"):
        onnx(spread_model(seed=0), prep, weights_path=tmp_path / "w.pth")
    assert not list(tmp_path.glob("**/*.onnx"))


def test_dynamo_exporter_works_too_and_prints_nothing_on_stdout(tmp_path, prep, batch, capfd):
    """The fallback for a torch without the TorchScript exporter (needs onnxscript; about 7 s)."""
    pytest.importorskip("onnxscript")
    model = spread_model()
    backend = onnx(model, prep, weights_path=tmp_path / "w.pth", exporter="dynamo")
    assert backend.exported and backend.cache_path.is_file()
    probs, idx = backend.topk(batch, 5)
    ref_probs, ref_idx = torch_fp32(model, prep).topk(batch, 5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=ORT_ATOL)
    assert capfd.readouterr().out == ""


def test_export_does_not_touch_the_network(tmp_path, prep, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the export tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    backend = onnx(spread_model(), prep, weights_path=tmp_path / "w.pth")
    assert backend.exported


# ------------------------------------------------------------------------- choosing a backend


def test_auto_takes_onnxruntime_on_cpu_fp32_and_torch_otherwise(prep, tmp_path):
    from shufflenet_cli.backends.factory import make_backend

    cpu = torch.device("cpu")
    auto = make_backend("auto", spread_model(), cpu, prep, "fp32", threads=1, weights_path=tmp_path / "w.pth")
    assert auto.name == "onnxruntime" and auto.describe().startswith("onnxruntime cpu fp32")
    low = make_backend("auto", spread_model(), cpu, prep, "bf16")
    assert low.name == "torch" and low.describe().startswith("torch cpu bf16")


def test_auto_falls_back_to_torch_and_says_why(prep, monkeypatch):
    from shufflenet_cli.backends import onnx_export
    from shufflenet_cli.backends.factory import make_backend
    from shufflenet_cli.errors import ModelLoadError

    def broken(*args, **kwargs):
        raise ModelLoadError("cannot export the model to ONNX: boom")

    monkeypatch.setattr(onnx_export, "export_bytes", broken)
    backend = make_backend("auto", spread_model(), torch.device("cpu"), prep, "fp32")
    assert backend.name == "torch"
    assert "onnxruntime not used: cannot export the model to ONNX: boom" in backend.describe()


def test_onnxruntime_refuses_low_precision(prep):
    from shufflenet_cli.backends.factory import make_backend
    from shufflenet_cli.errors import UsageError

    with pytest.raises(UsageError, match="fp32 only"):
        make_backend("onnxruntime", spread_model(), torch.device("cpu"), prep, "fp16")


def test_onnxruntime_not_installed_is_a_usage_error(prep, monkeypatch):
    import sys

    from shufflenet_cli.backends.factory import make_backend
    from shufflenet_cli.errors import UsageError

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were absent
    with pytest.raises(UsageError, match="needs the onnxruntime package") as info:
        make_backend("onnxruntime", spread_model(), torch.device("cpu"), prep, "fp32")
    assert "pip install 'shufflenet-cli[onnx]'" in info.value.hint
    assert make_backend("auto", spread_model(), torch.device("cpu"), prep, "fp32").name == "torch"


def test_cli_onnxruntime_not_installed_exit_2(cli, images, random_weights, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = cli("predict", *images, "-m", "x0_5", "--weights", random_weights, "--backend", "onnxruntime")
    assert r.exit_code == 2
    assert "Error: --backend onnxruntime needs the onnxruntime package" in r.stderr


def test_cli_backends_give_the_same_records(cli, images, random_weights):
    out = {}
    for backend in ("torch", "onnxruntime"):
        r = cli(
            "predict",
            *images,
            "-m",
            "x0_5",
            "--weights",
            random_weights,
            "-f",
            "jsonl",
            "--backend",
            backend,
            "--timings",
        )
        assert r.exit_code == 0, r.stderr
        assert f"backend {backend} cpu fp32" in r.stderr
        out[backend] = r.jsonl()
    for a, b in zip(out["torch"], out["onnxruntime"], strict=True):
        assert [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]]
        assert [p["probability"] for p in a["predictions"]] == pytest.approx(
            [p["probability"] for p in b["predictions"]], abs=ORT_ATOL
        )


# --------------------------------------------------------------- the split preprocessing


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (97, 61), (1200, 900), (256, 256), (301, 1003)])
def test_split_preprocessing_equals_weights_transforms_bit_for_bit(tmp_path, size):
    """Preprocess.crop_array (workers) + normalize (backend) == weights.transforms(), exactly."""
    from PIL import Image

    from shufflenet_cli.backends.ops import normalize
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.models import resolve_model

    for key in ("x0_5", "x2_0"):  # x2_0 resizes to 232, not 256
        weights = resolve_model(key).weights()
        path = make_image(tmp_path / f"{key}.jpg", size=size, seed=sum(size), quality=90)
        img = Image.open(path).convert("RGB")
        expected = weights.transforms()(img)
        prep = Preprocess.from_weights(weights, decode="exact")
        crop = torch.from_numpy(prep.crop_array(img).copy())[None]
        got = normalize(crop, torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1), True)[
            0
        ]
        assert got.shape == expected.shape
        assert torch.equal(got, expected)
        if min(size) < 2 * prep.resize:  # DCT scaling never applies: the default path is exact too
            np.testing.assert_array_equal(Preprocess.from_weights(weights)(str(path)).array, prep(str(path)).array)


# ------------------------------------------------------------------------------ CPU defaults


def test_cpu_defaults_one_decode_worker_and_one_inference_thread_per_core(monkeypatch):
    import os

    from shufflenet_cli.options import PredictOptions
    from shufflenet_cli.tuning import default_tuning

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    t = default_tuning("cpu", PredictOptions(paths=[]))
    assert (t.batch_size, t.workers, t.threads) == (32, 2, 2)
    own = default_tuning("cpu", PredictOptions(paths=[], batch_size=8, workers=0, threads=1))
    assert (own.batch_size, own.workers, own.threads) == (8, 0, 1)
