"""--engine ray (shufflenet_cli/ray_engine): real Ray on this machine, a private local instance and a
two-node cluster simulated with ray.cluster_utils.Cluster (one CPU per node), each run's records
compared with the local engine's on real images and broken files.

Every Ray test has a hard timeout (pytest-timeout), so a deadlocked plan fails instead of hanging CI;
they are marked `ray` (`-m "not ray"` leaves them out). Ray's processes are started and stopped by
the tests themselves (the engine's own shutdown, Cluster.shutdown), bound to this machine's address;
Ray's files (its token in ~/.ray, the ONNX exports its actors make) go to temporary folders.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_image

ray = pytest.importorskip("ray", reason="--engine ray needs the ray extra: pip install 'shufflenet-cli[ray]'")

from shufflenet_cli.decode.preprocess import Preprocess  # noqa: E402
from shufflenet_cli.errors import EXIT_MODEL, EXIT_SOME_FAILED, EXIT_USAGE, EngineError, UsageError  # noqa: E402
from shufflenet_cli.inputs.paths import Input, WalkOptions, iter_inputs  # noqa: E402
from shufflenet_cli.options import PredictOptions  # noqa: E402
from shufflenet_cli.outcome import Stats  # noqa: E402
from shufflenet_cli.ray_engine import auth, cluster, run, sizing, worker  # noqa: E402
from shufflenet_cli.weights import spec_for  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(30)]  # a test that starts Ray sets a longer one

START = 240  # seconds: a Ray start, actors importing torch and building the model, on 2 busy cores


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """The environment Ray's processes inherit when a test starts them: a private home (Ray writes
    its token to ~/.ray), torch and user caches of their own, no downloads, no address or auth mode
    from the caller's shell."""
    home = tmp_path_factory.mktemp("ray_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("ray_torch")))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("ray_cache")))
        mp.setenv("SHUFFLENET_OFFLINE", "1")
        for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            mp.delenv(name, raising=False)
        yield home


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """JPEGs of several sizes (one large enough to be draft-decoded, so near-ties are rechecked in
    the actors), a PNG, and three that fail: a truncated JPEG, text named .jpg, an empty file."""
    folder = tmp_path_factory.mktemp("ray_photos")
    for i in range(9):
        make_image(folder / f"a{i}.jpg", size=(70 + 13 * i, 50 + 7 * i), seed=i)
    make_image(folder / "big.jpg", size=(2200, 1100), seed=40)
    make_image(folder / "c.png", size=(90, 90), seed=41)
    good = (folder / "a0.jpg").read_bytes()
    (folder / "b_truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "b_text.jpg").write_text("not an image\n")
    (folder / "b_empty.jpg").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def two_nodes(ray_env):
    """A head and a worker node, one CPU each: the inference actor gets one, decode tasks the other."""
    from ray.cluster_utils import Cluster

    simulated = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        simulated.add_node(num_cpus=1)
        yield simulated
    finally:
        simulated.shutdown()


def _opts(paths: list[str], weights: Path, **ray_options) -> PredictOptions:
    return PredictOptions(paths=paths, model="x0_5", weights=weights, engine="ray", **ray_options)


def _ray_records(opts: PredictOptions, should_stop=lambda: False) -> tuple[list, Stats]:
    spec = spec_for(opts.model, opts.weights)
    prep = Preprocess.from_spec(spec, decode=opts.decode)
    stats = Stats()
    inputs = iter_inputs(opts.paths, WalkOptions())
    records = [r for batch in run.batches(inputs, opts, spec, prep, stats, should_stop) for r in batch]
    return records, stats


def _local_records(paths: list[str], weights: Path) -> list:
    from shufflenet_cli.api import classify

    return list(classify(paths, model="x0_5", weights=weights))


@pytest.mark.timeout(START)
def test_private_instance_gives_the_local_records_in_order(ray_env, photos, random_weights, monkeypatch):
    """No address: a private local instance, started and stopped by the run; windows of 6 inputs,
    so the records of several Ray executions are put back together in input order."""
    monkeypatch.setattr(run, "MIN_WINDOW", 6)
    monkeypatch.setattr(run, "WINDOW_PER_ACTOR", 1)
    paths = [str(photos), str(photos / "gone.jpg")]
    records, stats = _ray_records(_opts(paths, random_weights))

    assert records == _local_records(paths, random_weights)
    assert [r.path for r in records][-1] == str(photos / "gone.jpg")
    assert sum(not r.ok for r in records) == 4 and stats.failed == 4  # three broken files, one missing
    assert stats.classified == 11 and stats.batches >= 3  # the windows' forward passes
    assert not ray.is_initialized()  # the instance it started is stopped again
    assert "RAY_AUTH_MODE" not in os.environ  # ray.init's token mode is not left in this process


@pytest.mark.timeout(START)
def test_two_node_cluster_gives_the_local_records(ray_env, two_nodes, photos, random_weights, monkeypatch):
    """--ray-address HOST:PORT of a two-node cluster; relative paths, which the workers (in other
    folders) read by their absolute paths, while the records keep the paths as given."""
    monkeypatch.chdir(photos)
    paths = sorted(p.name for p in photos.iterdir())
    records, stats = _ray_records(_opts(paths, random_weights, ray_address=two_nodes.address))

    assert records == _local_records(paths, random_weights)
    assert [r.path for r in records] == paths
    assert stats.classified == 11 and stats.failed == 3
    assert not ray.is_initialized()  # disconnected; the cluster itself runs on (the fixture stops it)


@pytest.mark.timeout(START)
def test_watchdog_turns_no_progress_into_an_error(ray_env, two_nodes, photos, random_weights):
    """No records for --ray-timeout seconds (here shorter than an actor's start): exit 3 and what to
    check, instead of a wait without end."""
    opts = _opts([str(photos)], random_weights, ray_address=two_nodes.address, ray_timeout=0.5)
    began = time.monotonic()
    with pytest.raises(EngineError, match=r"no progress for 0.5 s") as caught:
        _ray_records(opts)
    assert caught.value.exit_code == EXIT_MODEL
    assert "ray status" in (caught.value.hint or "")
    assert time.monotonic() - began < 60
    assert not ray.is_initialized()


@pytest.mark.timeout(START)
def test_cli_on_a_two_node_cluster_writes_the_local_engines_lines(ray_env, two_nodes, photos, random_weights):
    """What a user runs: `shufflenet predict ... --engine ray --ray-address HOST:PORT`, a fresh process
    connecting to a running cluster, with a token in ~/.ray from an earlier local run (which a cluster
    started without token authentication must not be sent); the same JSON Lines as the local engine,
    error lines in place, exit 1 for both."""
    (ray_env / ".ray").mkdir(exist_ok=True)
    (ray_env / ".ray" / "auth_token").write_text("a-token-left-by-an-earlier-local-instance\n")
    paths = [str(photos), str(photos / "gone.jpg"), str(photos / "a3.jpg")]
    base = [sys.executable, "-m", "shufflenet_cli", "predict", *paths, "-m", "x0_5", "--weights", str(random_weights)]
    base += ["-f", "jsonl", "--no-progress"]
    local = subprocess.run(base, capture_output=True, text=True, timeout=START)
    ray_run = subprocess.run(
        [*base, "--engine", "ray", "--ray-address", two_nodes.address, "--ray-timeout", "120"],
        capture_output=True,
        text=True,
        timeout=START,
    )

    assert (local.returncode, ray_run.returncode) == (EXIT_SOME_FAILED, EXIT_SOME_FAILED), ray_run.stderr
    assert "Traceback" not in ray_run.stderr
    lines = [json.loads(line) for line in ray_run.stdout.splitlines()]
    assert ray_run.stdout == local.stdout
    expected = [str(p) for p in sorted(photos.iterdir())] + [paths[1], paths[2]]
    assert [line["path"] for line in lines] == expected
    failed = [p.name.startswith("b_") for p in sorted(photos.iterdir())] + [True, False]  # the broken, the missing
    assert [bool(line.get("error")) for line in lines] == failed


@pytest.mark.timeout(START)
def test_cli_outputs_report_and_resume_on_a_cluster(ray_env, two_nodes, photos, random_weights, tmp_path):
    """-o FILE, --report and --resume go through the runner's sink as for the local engine: the CSV
    the cluster writes is the local engine's, the report has a card per input, and a resumed run
    classifies only what the file lacks."""
    first = [str(p) for p in sorted(photos.iterdir()) if p.name != "c.png"]
    base = [sys.executable, "-m", "shufflenet_cli", "predict", "-m", "x0_5", "--weights", str(random_weights), "-q"]
    on_ray = ["--engine", "ray", "--ray-address", two_nodes.address, "--ray-timeout", "120"]
    local_csv, ray_csv = tmp_path / "local.csv", tmp_path / "ray.csv"
    local_report, report = tmp_path / "local.html", tmp_path / "r.html"
    local = subprocess.run(
        [*base, *first, "-o", str(local_csv), "--report", str(local_report)],
        capture_output=True,
        text=True,
        timeout=START,
    )
    ray_run = subprocess.run(
        [*base, *first, "-o", str(ray_csv), "--report", str(report), *on_ray],
        capture_output=True,
        text=True,
        timeout=START,
    )
    assert (local.returncode, ray_run.returncode) == (EXIT_SOME_FAILED, EXIT_SOME_FAILED), ray_run.stderr
    cards = [re.findall(r"<article.*?</article>", r.read_text(), flags=re.S) for r in (local_report, report)]
    assert cards[0] and cards[1] == cards[0]  # the same thumbnails, predictions and errors, in order
    local_csv.unlink()
    subprocess.run([*base, str(photos), "-o", str(local_csv)], check=False, timeout=START)
    resumed = subprocess.run(
        [*base, str(photos), "-o", str(ray_csv), "--resume", *on_ray], capture_output=True, text=True, timeout=START
    )
    assert resumed.returncode == EXIT_SOME_FAILED, resumed.stderr  # the earlier error records count
    assert sorted(ray_csv.read_text().splitlines()) == sorted(local_csv.read_text().splitlines())
    assert ray_csv.read_text().splitlines()[-1].startswith(str(photos / "c.png"))  # the one it lacked, added


@pytest.mark.timeout(60)
def test_auth_mode_that_does_not_match_the_cluster_fails_at_once(ray_env, two_nodes, monkeypatch):
    """RAY_AUTH_MODE=token against a cluster without token authentication: the driver would refuse the
    cluster's calls to it (its actors die before they start), so it is an error before connecting."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "some-token")
    with pytest.raises(EngineError, match="does not use token authentication, and RAY_AUTH_MODE is 'token'"):
        with cluster.connect(two_nodes.address):
            pass
    assert os.environ["RAY_AUTH_MODE"] == "token" and not ray.is_initialized()


@pytest.mark.timeout(START)
def test_cluster_with_token_authentication(ray_env, monkeypatch):
    """A cluster started with RAY_AUTH_MODE=token: without the token, or with another, an error at once
    (ray.init would time out as "Failed to connect"); with it, connected, and RAY_AUTH_MODE unset again
    after."""
    from ray.cluster_utils import Cluster

    with monkeypatch.context() as started:  # Ray reads the mode once per process: read again around the start
        started.setenv("RAY_AUTH_MODE", "token")
        started.setenv("RAY_AUTH_TOKEN", "the-clusters-token")
        auth.reload()
        try:
            guarded = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        finally:
            started.undo()
            auth.reload()
    try:
        (ray_env / ".ray" / "auth_token").unlink(missing_ok=True)  # an earlier test's local instance wrote one
        began = time.monotonic()
        with pytest.raises(EngineError, match="uses token authentication and no token was found"):
            with cluster.connect(guarded.address):
                pass
        (ray_env / ".ray").mkdir(exist_ok=True)
        (ray_env / ".ray" / "auth_token").write_text("another-clusters-token\n")
        with pytest.raises(EngineError, match="refuses the authentication token found here"):
            with cluster.connect(guarded.address):
                pass
        assert time.monotonic() - began < 10
        monkeypatch.setenv("RAY_AUTH_TOKEN", "the-clusters-token")
        with cluster.connect(guarded.address) as session:
            assert session.cpus == 1 and not session.started
        assert "RAY_AUTH_MODE" not in os.environ and not ray.is_initialized()
    finally:
        guarded.shutdown()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("source", ["option", "environment"])
def test_ray_client_address_is_refused(source, random_weights, monkeypatch, photos):
    """Ray Data does not run through Ray Client: ray:// says what to do instead, before Ray starts."""
    address = "ray://head.example:10001"
    if source == "environment":
        monkeypatch.setenv("RAY_ADDRESS", address)
        opts = _opts([str(photos)], random_weights)
    else:
        opts = _opts([str(photos)], random_weights, ray_address=address)
    with pytest.raises(UsageError, match=r"ray://\) are not supported") as caught:
        _ray_records(opts)
    assert caught.value.exit_code == EXIT_USAGE
    assert "ray job submit" in (caught.value.hint or "") and "--ray-address auto" in (caught.value.hint or "")
    assert not ray.is_initialized()


@pytest.mark.timeout(30)
def test_address_policy(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.address_for(None) is None  # a private local instance
    assert cluster.address_for("local") is None
    assert cluster.address_for("auto") == "auto"
    assert cluster.address_for(" 10.0.0.5:6379 ") == "10.0.0.5:6379"
    assert cluster.address_for(None, {"RAY_ADDRESS": "10.0.0.5:6379"}) == "10.0.0.5:6379"
    assert cluster.address_for("auto", {"RAY_ADDRESS": "10.0.0.5:6379"}) == "auto"  # the option first
    for wrong in ("http://head:8265", "head", "head:port", "head:0"):
        with pytest.raises(UsageError, match="is not a cluster address"):
            cluster.address_for(wrong)


@pytest.mark.timeout(30)
def test_unreachable_address_fails_at_once(ray_env):
    """Nothing listens there: a clear error within seconds (ray.init itself waits minutes)."""
    with socket.socket() as s:  # a port that was free a moment ago, closed again
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EngineError, match=f"nothing answers at 127.0.0.1:{port}"):
        with cluster.connect(f"127.0.0.1:{port}"):
            pass
    assert not ray.is_initialized()


def test_a_file_the_node_cannot_see_says_where_inputs_must_live(tmp_path, prep):
    """A decode task that cannot find a local path the driver listed: the record says why."""
    missing = str(tmp_path / "only-on-the-driver.jpg")
    batch = {"index": [7], "location": [worker.to_bytes(missing)]}
    out = worker.decode_rows(batch, prep)  # type: ignore[arg-type]
    assert out["index"].tolist() == [7]
    assert "storage every node sees" in out["error"][0] and socket.gethostname() in out["error"][0]


def test_windows_end_early_when_stdin_pauses():
    from shufflenet_cli.inputs.paths import STALL

    items = [Input("a"), Input("b"), STALL, STALL, Input("c"), Input("d"), Input("e")]
    assert [[i.path for i in w] for w in run._windows(iter(items), 2)] == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.parametrize(
    ("cpus", "gpus", "device", "actors", "actor_cpus", "actor_gpus"),
    [
        (2, 0, "auto", 1, 1.0, 0.0),  # one actor, one CPU left to decode
        (1, 0, "cpu", 1, 0.5, 0.0),  # one CPU: half of it each, never all of it to the actor
        (16, 0, "cpu", 8, 1.0, 0.0),
        (64, 4, "auto", 4, 1.0, 1.0),  # GPUs there: one actor per GPU
        (64, 4, "cpu", 32, 1.0, 0.0),
        (2, 1, "cuda", 1, 1.0, 1.0),
    ],
)
def test_sizing_leaves_cpus_to_decode(cpus, gpus, device, actors, actor_cpus, actor_gpus):
    s = sizing.size_for(cpus, gpus, device)
    assert (s.max_actors, s.actor_cpus, s.actor_gpus) == (actors, actor_cpus, actor_gpus)
    assert s.max_actors * s.actor_cpus <= cpus / 2  # the rest is for decode tasks: no deadlock
    assert s.decode_cpus <= cpus - s.max_actors * s.actor_cpus
    # decode tasks and actors ask for different resources (the decode also reserves memory), so that
    # Ray Data does not fuse the decode into the actors
    assert (s.decode_cpus, sizing.DECODE_MEMORY, 0.0) != (s.actor_cpus, 0, s.actor_gpus)


def test_sizing_refuses_cuda_without_gpus():
    with pytest.raises(EngineError, match="--device cuda: the Ray cluster has no GPUs"):
        sizing.size_for(8, 0, "cuda")
