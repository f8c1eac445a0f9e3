"""--gpu-decode: JPEG bytes read in workers, decoded per batch by torchvision.io.decode_jpeg.

The decoder takes a torch device, so everything but nvJPEG itself runs here on the CPU (libjpeg
through the same call): which files go to the GPU, EXIF orientation, the eval transform on tensors,
the fallback to Pillow, record order. The CUDA tests at the end run where a GPU exists.

Tolerances (stated once, used below):
- orientation and the tensor transform: exact (the same pixels as Pillow's transpose; the same
  numbers as `weights.transforms()` on a tensor image).
- decode_jpeg + tensor resize vs the default Pillow path: a different decoder and resize arithmetic,
  so pixels differ by a few levels: mean absolute difference under 3 (of 255) on a crop.
- with the real x0_5 weights on the real photo: the same top-1, its probability within 0.03.
"""

from __future__ import annotations

import io

import imagegen as gen
import numpy as np
import pytest
import torch
from conftest import DOG, make_image, random_state_dict
from PIL import Image, ImageOps

from shufflenet_cli.decode.gpu import JpegBatchDecoder, JpegReader, check_available, read_jpeg, upright
from shufflenet_cli.decode.preprocess import Preprocess
from shufflenet_cli.inputs.paths import Input
from shufflenet_cli.models import resolve_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
CPU = torch.device("cpu")
PIXEL_MEAN_DIFF = 3.0


def _pillow_crop(prep: Preprocess, path) -> np.ndarray:
    return Preprocess(prep.resize, prep.crop, prep.mean, prep.std, decode="exact")(str(path)).array


def _gpu_path_crop(prep: Preprocess, path, device=CPU) -> np.ndarray:
    crop = JpegReader(prep)(str(path))
    assert crop.array is None and crop.jpeg is not None, "this file should wait for the batch decoder"
    (out,) = JpegBatchDecoder(prep, device).decode([crop.jpeg])
    return out.cpu().numpy()


# ---------------------------------------------------------------------------- which files go where


def test_plain_jpegs_wait_for_the_batch_decoder(tmp_path, prep):
    rgb = make_image(tmp_path / "a.jpg", size=(120, 90))
    gray = make_image(tmp_path / "g.jpg", size=(120, 90), mode="L")
    for path in (rgb, gray):
        crop = JpegReader(prep)(str(path))
        assert crop.array is None
        assert crop.jpeg.data == path.read_bytes()


def test_the_report_thumbnail_comes_from_the_bytes_read_once(tmp_path, prep, monkeypatch):
    """--report under --gpu-decode: the thumbnail is Pillow's small upright copy, made from the bytes
    the reader already holds (of an MPO, its photo's), not from the file read a second time."""
    import builtins

    from shufflenet_cli.decode.images import load_rgb
    from shufflenet_cli.decode.preprocess import make_thumbnail

    rotated = gen.rotated(tmp_path / "r.jpg", gen.blocks((300, 400)), 6)  # stored 400 x 300
    mpo, _ = phone_mpo(tmp_path)
    reader = JpegReader(Preprocess(prep.resize, prep.crop, prep.mean, prep.std, thumbnail_size=160))
    real_open, opened = builtins.open, []
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    crops = {path: reader(str(path)) for path in (rotated, mpo)}
    monkeypatch.setattr(builtins, "open", real_open)
    assert sorted(opened) == sorted([str(rotated), str(mpo)])  # each file opened once
    for path, crop in crops.items():
        assert crop.jpeg is not None and crop.thumbnail is not None
        assert crop.thumbnail == make_thumbnail(load_rgb(str(path), 160), 160)  # what the Pillow path makes
    with Image.open(io.BytesIO(crops[rotated].thumbnail)) as thumb:
        w, h = thumb.size
        assert h == 160 and w < h  # upright (300 x 400), then shrunk


@pytest.mark.parametrize("kind", ["png", "cmyk", "not_an_image", "jpeg_suffix_png_inside"])
def test_other_files_take_the_pillow_path_at_once(tmp_path, prep, kind):
    if kind == "png":
        path = make_image(tmp_path / "a.png", size=(120, 90))
    elif kind == "cmyk":
        path = make_image(tmp_path / "c.jpg", size=(120, 90), mode="CMYK")
    elif kind == "jpeg_suffix_png_inside":
        path = make_image(tmp_path / "p.jpg", size=(120, 90), format="PNG")
    else:
        path = tmp_path / "n.jpg"
        path.write_bytes(b"\xff\xd8\xff" + b"not really a jpeg" * 10)
    assert read_jpeg(str(path)) is None
    if kind == "not_an_image":
        from shufflenet_cli.decode.images import ImageError

        with pytest.raises(ImageError):
            JpegReader(prep)(str(path))
        return
    crop = JpegReader(prep)(str(path))
    assert crop.jpeg is None
    np.testing.assert_array_equal(crop.array, _pillow_crop(prep, path))


def test_missing_file_is_left_to_the_pillow_path(tmp_path):
    assert read_jpeg(str(tmp_path / "gone.jpg")) is None


def test_a_jpeg_without_its_end_marker_is_left_to_pillow(tmp_path):
    """nvJPEG fills in a truncated file's missing rows where Pillow reports it: Pillow decides."""
    whole = make_image(tmp_path / "whole.jpg", size=(120, 90))
    assert read_jpeg(str(whole)) is not None
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(whole.read_bytes() + b"\x00" * 16)
    assert read_jpeg(str(padded)) is not None
    cut = gen.truncated(tmp_path / "cut.jpg", whole, 0.9)
    assert read_jpeg(str(cut)) is None


def phone_mpo(tmp_path) -> tuple:
    """A phone-style MPO (a photo, then a small second picture such as a gain map) and its photo alone."""
    photo = smooth_jpeg(tmp_path / "photo.jpg")
    path = tmp_path / "phone.mpo"
    with Image.open(photo) as im:
        im.save(path, save_all=True, append_images=[im.resize((64, 48))], quality=90)
    with Image.open(path) as im:
        assert im.format == "MPO" and im.n_frames == 2
    return path, photo


def test_an_mpo_sends_its_first_picture_to_the_batch_decoder(tmp_path, prep):
    path, _ = phone_mpo(tmp_path)
    data = path.read_bytes()
    jpeg = read_jpeg(str(path))
    assert jpeg is not None, "the photo of an MPO is a whole JPEG: nvJPEG takes it"
    assert data.startswith(jpeg.data) and len(jpeg.data) < len(data) and jpeg.data.endswith(b"\xff\xd9")
    with Image.open(io.BytesIO(jpeg.data)) as first, Image.open(path) as whole:  # the same picture, not the second
        np.testing.assert_array_equal(np.asarray(first.convert("RGB")), np.asarray(whole.convert("RGB")))
    got, want = _gpu_path_crop(prep, path), _pillow_crop(prep, path)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < PIXEL_MEAN_DIFF


def test_an_mpo_cut_short_goes_to_the_batch_decoder_only_while_its_photo_is_whole(tmp_path):
    path, _ = phone_mpo(tmp_path)
    size = len(read_jpeg(str(path)).data)
    data = path.read_bytes()
    in_second = tmp_path / "cut_in_second.mpo"
    in_second.write_bytes(data[: size + (len(data) - size) // 2])
    assert read_jpeg(str(in_second)).data == data[:size]
    in_first = tmp_path / "cut_in_first.mpo"
    in_first.write_bytes(data[: size // 2])
    assert read_jpeg(str(in_first)) is None  # Pillow says what is wrong with it


# ------------------------------------------------------------------------------ orientation, transform


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_is_pillows_transpose(orientation):
    hwc = np.random.default_rng(orientation).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    stored = Image.fromarray(hwc)
    stored.getexif()[0x0112] = orientation  # EXIF orientation
    want = ImageOps.exif_transpose(stored)
    got = upright(torch.from_numpy(hwc).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, np.asarray(want))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, prep, orientation):
    up = gen.blocks((320, 240), seed=orientation)
    path = gen.rotated(tmp_path / f"r{orientation}.jpg", up, orientation)
    want = _pillow_crop(prep, gen.save(up, tmp_path / "upright.jpg"))
    got = _gpu_path_crop(prep, path)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < PIXEL_MEAN_DIFF


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (256, 256), (300, 1000), (230, 230)])
def test_transform_is_the_weights_own_on_tensors(size):
    """Crops normalised by the backends equal weights.transforms() run on the same tensor image."""
    from shufflenet_cli.backends.ops import normalize

    spec = resolve_model("x1_5")  # resize 232: the sizes differ from x0_5's 256
    weights_prep = Preprocess.from_spec(spec)
    w, h = size
    image = torch.from_numpy(np.random.default_rng(w + h).integers(0, 256, size=(3, h, w), dtype=np.uint8))
    (crop,) = JpegBatchDecoder(weights_prep, CPU).transform([image])
    shape = (1, 3, 1, 1)
    mean, std = torch.tensor(spec.mean).view(shape), torch.tensor(spec.std).view(shape)
    ours = normalize(crop.unsqueeze(0), mean, std, channels_last=False)
    reference = spec.weights().transforms()(image).unsqueeze(0)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_same_size_images_are_resized_together_and_stay_in_order(prep):
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, size=(3, 300, 400), dtype=np.uint8)) for _ in range(3)]
    images.insert(1, None)
    images.append(torch.from_numpy(rng.integers(0, 256, size=(3, 400, 300), dtype=np.uint8)))
    batched = JpegBatchDecoder(prep, CPU).transform(images)
    assert batched[1] is None
    for i in (0, 2, 3, 4):
        (alone,) = JpegBatchDecoder(prep, CPU).transform([images[i]])
        torch.testing.assert_close(batched[i], alone, rtol=0, atol=0)


def test_large_images_are_resized_a_few_at_a_time(prep, monkeypatch):
    """The resize's float32 copy is ~5x the pixels: a batch of phone photos is not resized in one call
    (measured on the CPU: ~200 MiB per 12-MP photo, so ~25 GiB for 128). Same crops, in order."""
    from torchvision.transforms import functional as F

    from shufflenet_cli.decode import gpu as gpu_decode

    rng = np.random.default_rng(1)
    images = [torch.from_numpy(rng.integers(0, 256, size=(3, 300, 400), dtype=np.uint8)) for _ in range(5)]
    monkeypatch.setattr(gpu_decode, "RESIZE_PIXELS", 2 * 3 * 300 * 400)  # two of these per call
    calls = []
    resize = F.resize
    monkeypatch.setattr(F, "resize", lambda batch, *a, **k: calls.append(len(batch)) or resize(batch, *a, **k))
    split = JpegBatchDecoder(prep, CPU).transform(images)
    assert calls == [2, 2, 1]
    for image, crop in zip(images, split, strict=True):
        (alone,) = JpegBatchDecoder(prep, CPU).transform([image])
        torch.testing.assert_close(crop, alone, rtol=0, atol=0)


def smooth_jpeg(path, size=(500, 375), seed=0):
    """A photo-like JPEG (blurred noise): decoders differ most on per-pixel noise, least on photos."""
    from PIL import ImageFilter

    noise = make_image(path.with_suffix(".png"), size=size, seed=seed)
    Image.open(noise).filter(ImageFilter.GaussianBlur(3)).save(path, quality=90)
    return path


def test_a_picture_too_long_for_its_width_is_left_to_the_pillow_path(tmp_path, prep):
    """Resized whole on the device, 40000 x 2 would be 5,120,000 x 256 float pixels: Pillow crops it
    from its region instead (preprocess.MAX_RESIZED_PIXELS)."""
    line = np.random.default_rng(0).integers(0, 256, (2, 40000, 3), dtype=np.uint8)
    path = tmp_path / "line.jpg"
    Image.fromarray(line).save(path, quality=95)
    jpeg = read_jpeg(str(path))
    assert jpeg is not None
    assert JpegBatchDecoder(prep, CPU).decode([jpeg]) == [None]
    ok = JpegBatchDecoder(prep, CPU).decode([read_jpeg(str(make_image(tmp_path / "a.jpg", size=(120, 90))))])
    assert ok[0] is not None and tuple(ok[0].shape) == (224, 224, 3)


def test_decoded_crop_is_close_to_the_pillow_path(tmp_path, prep):
    path = smooth_jpeg(tmp_path / "photo.jpg")
    got, want = _gpu_path_crop(prep, path), _pillow_crop(prep, path)
    assert got.shape == want.shape == (224, 224, 3)
    assert np.abs(got.astype(int) - want.astype(int)).mean() < PIXEL_MEAN_DIFF


# --------------------------------------------------------------------------------- pipeline, fallback


def _run(prep, paths, device, backend):
    from shufflenet_cli import pipeline

    gpu = JpegBatchDecoder(prep, device)
    inputs = [Input(str(p)) for p in paths]
    return [
        r for chunk in pipeline.run(inputs, JpegReader(prep), backend, LABELS, batch_size=4, gpu=gpu) for r in chunk
    ]


LABELS = [f"class {i}" for i in range(1000)]


@pytest.fixture(scope="module")
def cpu_backend(prep):
    from shufflenet_cli.backends.torch_backend import TorchBackend
    from shufflenet_cli.weights import build_model

    model = build_model(resolve_model("x0_5"), random_state_dict("x0_5"), "test")
    return TorchBackend(model, CPU, prep.mean, prep.std, threads=1)


def _mixed_folder(tmp_path) -> list:
    paths = [make_image(tmp_path / f"{i:02d}.jpg", size=(100 + 10 * i, 80), seed=i) for i in range(6)]
    paths.insert(2, make_image(tmp_path / "02b.png", size=(90, 90), seed=20))
    paths.insert(4, make_image(tmp_path / "04b.jpg", size=(90, 90), mode="CMYK", seed=21))
    paths.insert(6, gen.truncated(tmp_path / "06b.jpg", paths[0], 0.3))  # header fine, data cut short
    bad = tmp_path / "07b.jpg"
    bad.write_bytes(paths[1].read_bytes()[:200] + b"\x00" * 50)
    paths.insert(7, bad)
    return paths


def test_pipeline_keeps_one_record_per_input_in_order(tmp_path, prep, cpu_backend):
    from shufflenet_cli import pipeline

    paths = _mixed_folder(tmp_path)
    got = _run(prep, paths, CPU, cpu_backend)
    want = [
        r
        for chunk in pipeline.run([Input(str(p)) for p in paths], prep, cpu_backend, LABELS, batch_size=4)
        for r in chunk
    ]
    assert [r.path for r in got] == [str(p) for p in paths]
    assert [r.error is None for r in got] == [r.error is None for r in want]
    for g, w in zip(got, want, strict=True):
        if w.error is None:
            assert g.predictions[0].index == w.predictions[0].index, g.path


def test_a_file_the_decoder_refuses_falls_back_to_pillow(tmp_path, prep, cpu_backend, monkeypatch):
    paths = [make_image(tmp_path / f"{i}.jpg", size=(120, 90), seed=i) for i in range(3)]
    refused = paths[1].read_bytes()
    real = JpegBatchDecoder._nvjpeg

    def picky(self, blobs):
        if any(b == refused for b in blobs):
            raise RuntimeError("nvjpeg: unsupported")
        return real(self, blobs)

    monkeypatch.setattr(JpegBatchDecoder, "_nvjpeg", picky)
    records = _run(prep, paths, CPU, cpu_backend)
    assert [r.error for r in records] == [None, None, None]
    fallback = cpu_backend.topk(_pillow_crop(prep, paths[1])[None], 5)[1][0]
    assert [p.index for p in records[1].predictions] == list(fallback)


def test_a_gpu_failure_sends_the_chunk_to_pillow(tmp_path, prep, cpu_backend, monkeypatch):
    """Anything else going wrong on the GPU (out of memory, say) costs speed, not records."""
    paths = [make_image(tmp_path / f"{i}.jpg", size=(120, 90), seed=i) for i in range(3)]

    def out_of_memory(self, images):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(JpegBatchDecoder, "transform", out_of_memory)
    records = _run(prep, paths, CPU, cpu_backend)
    assert [r.error for r in records] == [None, None, None]
    for path, record in zip(paths, records, strict=True):
        want = cpu_backend.topk(_pillow_crop(prep, path)[None], 5)[1][0]
        assert [p.index for p in record.predictions] == list(want)


def test_gpu_decode_needs_cuda():
    from shufflenet_cli.errors import UsageError

    with pytest.raises(UsageError, match="needs a CUDA device"):
        check_available(CPU)


def test_cli_refuses_gpu_decode_on_the_cpu(cli, images, random_weights):
    r = cli("predict", images[0], "-m", "x0_5", "--weights", random_weights, "--device", "cpu", "--gpu-decode")
    assert r.exit_code == 2
    assert "--gpu-decode needs a CUDA device" in r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------- CUDA


@cuda
def test_cuda_decode_matches_the_cpu_decode(tmp_path, prep):
    paths = [smooth_jpeg(tmp_path / f"{i}.jpg", size=(500 - 40 * i, 375), seed=i) for i in range(4)]
    for p in paths:
        on_gpu = _gpu_path_crop(prep, p, torch.device("cuda"))
        assert np.abs(on_gpu.astype(int) - _pillow_crop(prep, p).astype(int)).mean() < PIXEL_MEAN_DIFF


@cuda
def test_cuda_pipeline_in_order_with_fallbacks(tmp_path, prep, cpu_backend):
    import copy

    from shufflenet_cli.backends.torch_backend import TorchBackend

    gpu_backend = TorchBackend(copy.deepcopy(cpu_backend.model), torch.device("cuda"), prep.mean, prep.std)
    paths = _mixed_folder(tmp_path)
    on_gpu = _run(prep, paths, torch.device("cuda"), gpu_backend)
    on_cpu = _run(prep, paths, CPU, cpu_backend)
    assert [r.path for r in on_gpu] == [str(p) for p in paths]
    assert [r.error is None for r in on_gpu] == [r.error is None for r in on_cpu]


@cuda
def test_cuda_cli_real_weights_on_the_dog(cli, real_weights, tmp_path):
    if not DOG.is_file():
        pytest.skip("../shared/images is not here")
    args = ("predict", DOG, "-m", "x0_5", "--weights", real_weights, "--device", "cuda", "-f", "json")
    default = cli(*args).json()[0]
    gpu = cli(*args, "--gpu-decode").json()[0]
    assert gpu["predictions"][0]["index"] == default["predictions"][0]["index"] == 258
    assert abs(gpu["predictions"][0]["probability"] - default["predictions"][0]["probability"]) < 0.03
