"""az:// and abfs:// inputs against Azurite, Azure's Blob Storage emulator, started on 127.0.0.1 by the
tests and reached as a user would reach it: AZURE_STORAGE_CONNECTION_STRING with Azurite's development
account. The container is filled with azure-storage-blob, not adlfs. Through the CLI: a prefix walked
in key order (recursively or not, --ext, hidden names), each object classified as its local copy, a
text object named .jpg an error record in its place, an object as a file, a missing key and a missing
container as records, empty prefixes (a directory marker, an ADLS folder), abfs:// and abfss:// as az://.

Azurite comes from npm (`npm install --prefix .ci-node azurite@3`, as .ci/run does, or `-g`); without
it, or without adlfs, the module is skipped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import make_image, parse_records

pytest.importorskip("adlfs")
blob = pytest.importorskip("azure.storage.blob")

ROOT = Path(__file__).resolve().parents[1]
# Azurite's well-known development account and key (its documentation, and the Azure SDKs' own
# `UseDevelopmentStorage=true`): not a secret.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "pictures"
START = 60  # seconds Azurite may take to listen on a busy machine before the module fails
# Each user-facing variable adlfs reads: only the connection string is set, as a user of Azurite would.
AZURE_VARIABLES = [
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CLIENT_ID",
    "AZURE_STORAGE_CLIENT_SECRET",
    "AZURE_STORAGE_TENANT_ID",
    "AZURE_STORAGE_ANON",
]
# Keys under photos/: the images, and what a walk gives in key order (a.jpg < a/b.png < a0.jpg).
GOOD = ["a.jpg", "a/b.png", "a0.jpg", "deep/er/c.jpg"]
WALKED = ["a.jpg", "a/b.png", "a0.jpg", "broken.jpg", "deep/er/c.jpg"]
BROKEN = "cannot identify image file: it is a text file, not an image"


def _azurite() -> str | None:
    """azurite-blob on PATH, else in .ci-node/ or node_modules/ at the repository's root."""
    if found := shutil.which("azurite-blob"):
        return found
    for folder in (ROOT / ".ci-node", ROOT):
        candidate = folder / "node_modules" / ".bin" / "azurite-blob"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def azurite(tmp_path_factory) -> str:
    """A running Azurite blob service: its connection string. Stopped when the module is done."""
    binary = _azurite()
    if binary is None or shutil.which("node") is None:
        pytest.skip("Azurite is not installed: npm install --prefix .ci-node azurite@3 (needs node)")
    work = tmp_path_factory.mktemp("azurite")
    port = _free_port()
    argv = [binary, "--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck"]
    argv += ["--blobHost", "127.0.0.1", "--blobPort", str(port)]
    log = work / "azurite.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=work, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Azurite exited with {proc.returncode}: {log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"Azurite did not listen on port {port} within {START} s: {log.read_text()}")
                time.sleep(0.1)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, Path]:
    """The local copies of the good objects, by key under photos/: JPEGs and a PNG, each different."""
    folder = tmp_path_factory.mktemp("local")
    return {
        name: make_image(folder / name.replace("/", "_"), size=(72 + 8 * i, 56), seed=i) for i, name in enumerate(GOOD)
    }


@pytest.fixture(scope="module")
def container(azurite, local) -> str:
    """CONTAINER, filled once for the module."""
    service = blob.BlobServiceClient.from_connection_string(azurite)
    client = service.create_container(CONTAINER)
    blobs: dict[str, tuple[bytes, dict | None]] = {
        **{f"photos/{name}": (path.read_bytes(), None) for name, path in local.items()},
        "photos/broken.jpg": (b"just some words, not a picture\n", None),
        "photos/readme.txt": (b"not a photo", None),
        "photos/.hidden.jpg": (local["a.jpg"].read_bytes(), None),
        "photos/.cache/d.jpg": (local["a0.jpg"].read_bytes(), None),
        "photos/empty/": (b"", None),  # a zero-byte directory marker, as some tools make for a folder
        "photos/folder": (b"", {"hdi_isfolder": "true"}),  # an ADLS Gen2 folder seen through the Blob API
    }
    for name, (data, metadata) in blobs.items():
        client.upload_blob(name, data, metadata=metadata)
    service.close()
    return CONTAINER


@pytest.fixture(autouse=True)
def _connection_string(azurite, monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    for name in AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _aside(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "path"}


def _local_records(run, local: dict[str, Path]) -> dict[str, dict]:
    """predict on the local copies: each record without its path, by key."""
    r = run(*local.values())
    assert r.exit_code == 0, r.stderr
    records = parse_records(r)
    assert [rec["path"] for rec in records] == [str(p) for p in local.values()]
    return dict(zip(local, map(_aside, records), strict=True))


def test_a_prefix_is_walked_in_key_order_and_classified_as_the_local_copies(run, container, local):
    r = run(f"az://{container}/photos/", "-j", "4")
    assert r.exit_code == 1, r.stderr
    records = parse_records(r)
    assert [rec["path"] for rec in records] == [f"az://{container}/photos/{n}" for n in WALKED]
    assert records[WALKED.index("broken.jpg")]["error"] == BROKEN
    expected = _local_records(run, local)
    for name, record in zip(WALKED, records, strict=True):
        if name != "broken.jpg":
            assert "error" not in record, record
            assert _aside(record) == expected[name], name
    assert len({str(expected[name]) for name in GOOD}) == len(GOOD)  # the copies tell each other apart
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "options, names, code",
    [
        (["--no-recursive"], ["a.jpg", "a0.jpg", "broken.jpg"], 1),
        (["--ext", "png"], ["a/b.png"], 0),
        (["--ext", "jpg,txt"], ["a.jpg", "a0.jpg", "broken.jpg", "deep/er/c.jpg", "readme.txt"], 1),
        (["--hidden"], [".cache/d.jpg", ".hidden.jpg", *WALKED], 1),
    ],
)
def test_a_prefix_honours_recursion_extensions_and_hidden_names(run, container, options, names, code):
    r = run(f"az://{container}/photos", *options)
    assert [rec["path"] for rec in parse_records(r)] == [f"az://{container}/photos/{n}" for n in names]
    assert r.exit_code == code, r.stderr


def test_an_object_is_a_file_and_missing_ones_are_records(run, container, local):
    inputs = [
        f"az://{container}/photos/a0.jpg",
        f"az://{container}/photos/gone.jpg",
        "az://no-such-container/photos/",
        "az://no-such-container/photos/a.jpg",
        f"az://{container}/photos/broken.jpg",
        str(local["a0.jpg"]),
    ]
    r = run(*inputs)
    assert r.exit_code == 1, r.stderr
    records = parse_records(r)
    assert [rec["path"] for rec in records] == inputs
    assert "error" not in records[0]
    assert _aside(records[0]) == _aside(records[5])
    assert [rec.get("error") for rec in records[1:5]] == [
        "no such object or prefix",
        "no such container: no-such-container",
        "no such container: no-such-container",
        BROKEN,
    ]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("prefix", ["empty/", "folder/", "folder", "nothing-here/"])
def test_an_empty_prefix_alone_has_no_input(run, container, prefix):
    """A directory marker, an ADLS folder and an absent prefix hold nothing: no image given (exit 2)."""
    r = run(f"az://{container}/photos/{prefix}")
    assert r.exit_code == 2, r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr


def test_abfs_and_abfss_are_az(run, container):
    r = run(*(f"{scheme}://{container}/photos/a" for scheme in ("az", "abfs", "abfss")))
    assert r.exit_code == 0, r.stderr
    records = parse_records(r)
    assert [rec["path"] for rec in records] == [
        f"{scheme}://{container}/photos/a/b.png" for scheme in ("az", "abfs", "abfss")
    ]
    assert _aside(records[0]) == _aside(records[1]) == _aside(records[2])
    assert "error" not in records[0]
