"""s3:// inputs against moto's S3 server on 127.0.0.1, started by the tests (AWS_ENDPOINT_URL, dummy
keys): a prefix walked in key order, recursively or not, --ext and hidden names as for folders; an
object as a file; an empty prefix; a missing bucket; an object that is not an image; no s3fs."""

from __future__ import annotations

import itertools
import socket

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

_BUCKETS = itertools.count()


@pytest.fixture(scope="module")
def s3_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch, images):
    """A bucket named for the test: photos/ with nested prefixes, a hidden object, a text object."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    from shufflenet_cli.inputs.buckets import STORES, filesystem

    fs = filesystem(STORES["s3"])
    name = f"bucket-{next(_BUCKETS)}"  # one per test: moto keeps them for the module
    fs.mkdir(name)
    a, b, c = (p.read_bytes() for p in images)
    fs.pipe(
        {
            f"{name}/photos/a.jpg": a,
            f"{name}/photos/a/b.jpg": b,  # key order: a.jpg < a/b.jpg < a0.jpg
            f"{name}/photos/a0.jpg": c,
            f"{name}/photos/deep/er/c.jpg": a,
            f"{name}/photos/.hidden.jpg": b,
            f"{name}/photos/notes.txt": b"not a photo",
            f"{name}/junk/notes.jpg": b"just some words, not a picture\n",
            f"{name}/sizes/empty.jpg": b"",
            f"{name}/sizes/large.jpg": b"\xff" * 200_000,
        }
    )
    return name


def _aside(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "path"}


def test_a_prefix_is_walked_in_key_order_and_classified_as_the_local_copies(cli, bucket, images, cached_weights):
    r = cli("predict", f"s3://{bucket}/photos/", *map(str, images), "-m", "x0_5", "-f", "json")
    assert r.exit_code == 0, r.stderr
    records = r.json()
    names = ["a.jpg", "a/b.jpg", "a0.jpg", "deep/er/c.jpg"]
    assert [rec["path"] for rec in records[:4]] == [f"s3://{bucket}/photos/{n}" for n in names]
    local = records[4:]
    for remote, copy in zip(records[:4], [local[0], local[1], local[2], local[0]], strict=True):
        assert _aside(remote) == _aside(copy)


@pytest.mark.parametrize(
    "options, names",
    [
        (["--no-recursive"], ["a.jpg", "a0.jpg"]),
        (["--hidden"], [".hidden.jpg", "a.jpg", "a/b.jpg", "a0.jpg", "deep/er/c.jpg"]),
        (["--ext", "txt"], ["notes.txt"]),
    ],
)
def test_a_prefix_honours_recursion_hidden_names_and_extensions(cli, bucket, cached_weights, options, names):
    r = cli("predict", f"s3://{bucket}/photos/", "-m", "x0_5", "-f", "json", *options)
    assert [rec["path"] for rec in r.json()] == [f"s3://{bucket}/photos/{n}" for n in names]


def test_an_object_is_a_file_and_failures_are_records(cli, bucket, images, cached_weights):
    inputs = [
        f"s3://{bucket}/photos/a0.jpg",
        f"s3://{bucket}/junk/notes.jpg",
        f"s3://{bucket}/photos/missing.jpg",
        "s3://no-such-bucket-here/photos/",
        f"s3://{bucket}/empty/",
        str(images[2]),
    ]
    r = cli("predict", *inputs, "-m", "x0_5", "-f", "json")
    assert r.exit_code == 1, r.stderr
    records = r.json()
    assert [rec["path"] for rec in records] == [*inputs[:3], "s3://no-such-bucket-here/photos/", str(images[2])]
    assert _aside(records[0]) == _aside(records[4])
    assert records[1]["error"] == "cannot identify image file: it is a text file, not an image"
    assert records[2]["error"] == "no such object or prefix"
    assert records[3]["error"] == "no such bucket: no-such-bucket-here"
    assert "Traceback" not in r.stderr


def test_max_download_and_an_empty_object_are_records(cli, bucket, images, cached_weights, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    r = cli("predict", f"s3://{bucket}/sizes/", str(empty), "-m", "x0_5", "-f", "json", "--max-download", "0.05")
    assert r.exit_code == 1, r.stderr
    records = r.json()
    assert [rec["path"] for rec in records] == [
        f"s3://{bucket}/sizes/empty.jpg",
        f"s3://{bucket}/sizes/large.jpg",
        str(empty),
    ]
    assert records[0]["error"] == records[2]["error"]  # an empty object is an empty file
    assert records[1]["error"] == "larger than --max-download (0.05 MB)"


def test_an_empty_prefix_alone_is_no_image_found(cli, bucket, cached_weights):
    r = cli("predict", f"s3://{bucket}/empty/", "-m", "x0_5", "-f", "json")
    assert r.exit_code == 2


def test_resume_matches_objects_as_given(cli, bucket, cached_weights, tmp_path):
    out = tmp_path / "out.jsonl"
    first = cli("predict", f"s3://{bucket}/photos/a.jpg", "-m", "x0_5", "-o", out)
    assert first.exit_code == 0, first.stderr
    again = cli("predict", f"s3://{bucket}/photos/", "-m", "x0_5", "-o", out, "--resume")
    assert again.exit_code == 0, again.stderr
    assert len([line for line in out.read_text().splitlines() if line]) == 4


def test_without_s3fs_an_s3_argument_is_a_usage_error_naming_the_extra(cli, images, cached_weights, monkeypatch):
    monkeypatch.setattr("shufflenet_cli.inputs.buckets.installed", lambda store: False)
    r = cli("predict", "s3://b/photos/", str(images[0]), "-m", "x0_5")
    assert r.exit_code == 2
    assert "pip install 'shufflenet-cli[s3]'" in r.stderr
