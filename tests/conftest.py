"""Shared fixtures and helpers: no network, a private torch cache, random-weight checkpoints, generated
images, the CLI in-process or as a child process fed on stdin, and readers of what it writes."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_WEIGHTS = SHARED / "weights" / "shufflenetv2_x0_5-imagenet-fp16.pth"
DOG = SHARED / "images" / "dog.jpg"


@pytest.fixture(scope="session")
def _session_user_cache(tmp_path_factory) -> Path:
    """$XDG_CACHE_HOME for the whole session: --weights exports are made once per weights file and
    reused, as on a user's machine, but never in the real home folder."""
    return tmp_path_factory.mktemp("xdg_cache")


@pytest.fixture(autouse=True)
def _offline_private_cache(tmp_path_factory, monkeypatch, _session_user_cache):
    """Every test: nothing is downloaded, torch's cache is a fresh temporary folder, and the user
    cache a private one."""
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(_session_user_cache))
    monkeypatch.setenv("SHUFFLENET_OFFLINE", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield home


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights")


def random_state_dict(arch: str = "x0_5", num_classes: int = 1000, seed: int = 0) -> dict:
    """Random weights whose batch-norm statistics are calibrated on random pictures.

    Plain random init shrinks activations layer by layer until the logits are ~1e-6 whatever the image:
    every picture would get the same prediction, and a record moved to its neighbour's place, or a
    sideways decode, would go unseen. Calibrated, different pictures give different top-5s.
    """
    import torch

    from shufflenet_cli.models import resolve_model

    torch.manual_seed(seed)
    model = resolve_model(arch).builder()(weights=None, num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # running stats = the average over the calibration batch
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 96, 96))
    return model.eval().state_dict()


@pytest.fixture(scope="session")
def random_weights(weights_dir) -> Path:
    """A plain state dict of a random x0_5 with 1000 classes, saved like any user checkpoint."""
    import torch

    path = weights_dir / "random_x0_5.pth"
    torch.save(random_state_dict("x0_5"), path)
    return path


@pytest.fixture
def cached_weights(_offline_private_cache) -> Path:
    """Random x0_5 weights placed in $TORCH_HOME/hub/checkpoints under torchvision's own file name."""
    import torch

    from shufflenet_cli.models import resolve_model
    from shufflenet_cli.weights import cache_path

    path = cache_path(resolve_model("x0_5"))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict("x0_5"), path)
    return path


@pytest.fixture(scope="session")
def real_weights(weights_dir) -> Path:
    """The real ImageNet x0_5 weights from ../shared (upcast to fp32), or skip."""
    if not REAL_WEIGHTS.is_file():
        pytest.skip("../shared/weights is not here")
    return REAL_WEIGHTS


@pytest.fixture(scope="module")
def prep():
    """x0_5's preprocessing from its ModelSpec constants (test_backends has its own, from torchvision)."""
    from shufflenet_cli.decode.preprocess import Preprocess
    from shufflenet_cli.models import resolve_model

    return Preprocess.from_spec(resolve_model("x0_5"))


def make_image(path: Path, size=(64, 48), mode: str = "RGB", seed: int = 0, **save) -> Path:
    """A small noisy picture (deterministic per seed) saved with Pillow."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(base, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save)
    return path


@pytest.fixture
def images(tmp_path) -> list[Path]:
    """Three small JPEGs with different content, in sorted name order."""
    return [make_image(tmp_path / "photos" / f"img{i}.jpg", size=(80 + 8 * i, 60), seed=i) for i in range(3)]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes  # stdout as written, e.g. for file names that are not UTF-8

    def json(self):
        return json.loads(self.stdout)

    def jsonl(self) -> list:
        return [json.loads(line) for line in self.stdout.splitlines()]


@pytest.fixture
def cli():
    """Run `shufflenet ARGS` in-process; stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from shufflenet_cli.cli import app

    def run(*args: str, input: str | bytes | None = None) -> CliResult:
        runner = CliRunner()
        result = runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr, result.stdout_bytes)

    return run


# --- shared helpers ---------------------------------------------------------------------------------

HANG = 120  # seconds before a test that waits on a thread or a child process gives up: stops a hung
# test on a busy machine; never a bound on how fast anything runs


def put(path: Path | bytes, seed: int = 0) -> str:
    """Write a tiny 24x24 JPEG at `path` (str path or bytes path), creating folders; return the path as a str."""
    name = os.fsdecode(path)  # undecodable bytes become surrogates, which open() turns back into the bytes
    make_image(Path(name), size=(24, 24), seed=seed)
    return name


def parse_records(r: CliResult, fmt: str = "jsonl") -> list[dict]:
    text = r.stdout_bytes.decode("utf-8")  # strict UTF-8: no raw bytes in JSON
    return json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]


def printed_paths(r: CliResult, fmt: str = "jsonl") -> list[str]:
    """The paths of the records on stdout, in order (CSV: one per image, not one per row)."""
    if fmt == "csv":
        text = r.stdout_bytes.decode("utf-8", "surrogateescape")  # CSV carries the file name's raw bytes
        return [path for path, _ in csv_records(text)]
    return [rec["path"] for rec in parse_records(r, fmt)]


def csv_records(text: str) -> list[tuple[str, int]]:
    """(path, number of rows) per record, in file order."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][0] == "path"
    return [(p, len(list(g))) for p, g in itertools.groupby(row[0] for row in rows[1:])]


@pytest.fixture
def run(cli, random_weights):
    """`shufflenet predict ARGS -m x0_5 --weights random` through `cli`."""

    def invoke(*args: str | Path, fmt: str = "jsonl", input: bytes | None = None) -> CliResult:
        argv = ["predict", "-m", "x0_5", "--weights", str(random_weights), "-f", fmt, "-k", "2", "-j", "1"]
        argv += ["--threads", "1", "-q", *[os.fsdecode(a) for a in args]]  # given last: they win
        return cli(*argv, input=input)

    return invoke


ODD_NAMES = [
    b"with space.jpg",
    b"new\nline.jpg",
    b"quo\"te's,comma.jpg",
    "ünï 猫 🐈.jpg".encode(),
    b"bad\xff\xfename.jpg",
]


@pytest.fixture
def odd_dir(tmp_path) -> tuple[Path, list[str]]:
    """A folder of pictures whose names hold spaces, a newline, quotes, emoji and bytes that are not UTF-8."""
    d = tmp_path / "odd"
    raw_dir = os.fsencode(d)
    paths = [put(os.path.join(raw_dir, name), seed=i) for i, name in enumerate(ODD_NAMES)]
    return d, sorted(paths)


def folder_of(tmp_path: Path, n: int, name: str = "imgs") -> tuple[Path, list[str]]:
    """n copies of one tiny JPEG, 0000.jpg, 0001.jpg, ...: (the folder, their paths in order)."""
    d = tmp_path / name
    d.mkdir()
    data = make_image(d / "0000.jpg", size=(16, 16)).read_bytes()  # every caller has n >= 1
    for i in range(n):
        (d / f"{i:04d}.jpg").write_bytes(data)
    return d, [str(d / f"{i:04d}.jpg") for i in range(n)]


def sample_records(*paths: str) -> list:
    """One record with two predictions for each path."""
    from shufflenet_cli.records import Prediction, Record

    return [Record(p, (Prediction(1, 7, "cock", 0.75), Prediction(2, 8, "hen", 0.25))) for p in paths]


def spy_batches(monkeypatch, on_batch) -> None:
    """Call on_batch(records) each time the pipeline hands a batch to the sink."""
    from shufflenet_cli import pipeline

    real_run = pipeline.run

    def spied(*args, **kwargs):
        for batch in real_run(*args, **kwargs):
            on_batch(batch)
            yield batch

    monkeypatch.setattr(pipeline, "run", spied)


class CountingBackend:
    """Top-k of nothing in particular; remembers the size of each batch it was given."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def topk(self, batch, k: int):
        import numpy as np

        self.batches.append(len(batch))
        n = len(batch)
        return np.full((n, k), 1.0 / k), np.tile(np.arange(k), (n, 1))

    def describe(self) -> str:
        return "counting"


class Producer:
    """`shufflenet predict -` with its stdin a pipe that the test writes to, line by line."""

    def __init__(self, random_weights: Path, *args: str, null: bool = False) -> None:
        cmd = [sys.executable, "-m", "shufflenet_cli", "predict", "-", "-m", "x0_5", "--weights", str(random_weights)]
        cmd += ["-f", "jsonl", "-k", "1", "-b", "8", *args] + (["--null"] if null else [])
        self.sep = b"\0" if null else b"\n"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def send(self, path: str) -> None:
        self.proc.stdin.write(os.fsencode(path) + self.sep)  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def record(self) -> dict:
        """The next record on stdout. With stdin open and quiet, a run that holds its records back never
        writes one: the test fails after HANG seconds instead of hanging."""
        try:
            line = self.lines.get(timeout=HANG)
        except queue.Empty:
            pytest.fail(f"no record within {HANG} s while stdin was open and quiet")
        assert line is not None, self.stderr()
        assert line.endswith(b"\n")
        return json.loads(line)

    def rest(self) -> list[dict]:
        self.pump.join(timeout=HANG)
        out = []
        while (line := self.lines.get(timeout=HANG)) is not None:
            assert line.endswith(b"\n")
            out.append(json.loads(line))
        return out

    def stderr(self) -> str:
        self.kill()
        return self.proc.stderr.read().decode()  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=HANG)


class ReportPage(HTMLParser):
    """What a test needs from a --report page: the <img> sources, text by class, every attribute value."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[str] = []
        self.attrs_seen: list[str] = []
        self.by_class: dict[str, list[str]] = {}
        self.rows: list[list[str]] = []
        self._open: list[tuple[str, str | None]] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs_seen += [v or "" for v in a.values()]
        if tag == "img":
            self.imgs.append(a.get("src") or "")
            return
        if tag == "tr":
            self.rows.append([])
        if tag == "td":
            self._cell = []
        self._open.append((tag, a.get("class")))
        if a.get("class"):
            self.by_class.setdefault(a["class"], []).append("")

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        for _, cls in reversed(self._open):
            if cls:
                self.by_class[cls][-1] += data
                break


def leftovers(folder: Path) -> list[str]:
    """Temporary files a writer left behind in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))
