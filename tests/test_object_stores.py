"""Every object-storage scheme (s3://, gs://, az://, abfs://, abfss://) through the same code, without a
cloud: an in-memory fsspec filesystem is registered under each store's protocol, so the walk's order,
--no-recursive, --ext, hidden names, a missing bucket, an object read whole or refused by its size,
and the records of the CLI are tested for each scheme. A missing library is simulated by the check
that looks for it. (S3 against a real S3 server: test_buckets.py.)"""

from __future__ import annotations

import importlib.util
import io
import json

import pytest
from conftest import ReportPage
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry as fsspec_registry  # what fsspec.filesystem(protocol) looks in first

from shufflenet_cli.decode.fetch import Remote, fetch
from shufflenet_cli.decode.images import ImageError
from shufflenet_cli.errors import UsageError
from shufflenet_cli.inputs import buckets
from shufflenet_cli.inputs.paths import WalkOptions, iter_inputs
from shufflenet_cli.urls import OBJECT_SCHEMES, is_object_url, is_remote_url, looks_like_url, object_scheme

SCHEMES = list(OBJECT_SCHEMES)
EXTRAS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure")}
EXTRAS["abfss"] = EXTRAS["abfs"]
KEYS = ["a.jpg", "a/b.jpg", "a0.jpg", "deep/er/c.jpg"]  # key order: a.jpg < a/b.jpg < a0.jpg


class InMemoryStore(MemoryFileSystem):
    """fsspec's memory filesystem with a store of its own (the parent's is one for the process)."""

    store: dict = {}
    pseudo_dirs = [""]


@pytest.fixture
def store(request, monkeypatch, images):
    """(scheme, filesystem): `bkt/photos/` holding nested keys, a hidden one, a text one; `bkt/sizes/`
    an empty object and a large one; the store's library counted as installed."""
    scheme = request.param
    cls = type("Fake" + scheme.title(), (InMemoryStore,), {"store": {}, "pseudo_dirs": [""]})
    monkeypatch.setitem(fsspec_registry, buckets.STORES[scheme].protocol, cls)
    monkeypatch.setattr(buckets, "installed", lambda store: True)
    buckets._filesystem.cache_clear()
    fs = buckets.filesystem(buckets.STORES[scheme])
    assert isinstance(fs, cls)
    a, b, c = (p.read_bytes() for p in images)
    fs.pipe(
        {
            "bkt/photos/a.jpg": a,
            "bkt/photos/a/b.jpg": b,
            "bkt/photos/a0.jpg": c,
            "bkt/photos/deep/er/c.jpg": a,
            "bkt/photos/.hidden.jpg": b,
            "bkt/photos/notes.txt": b"not a photo",
            "bkt/junk/notes.jpg": b"just some words, not a picture\n",
            "bkt/sizes/empty.jpg": b"",
            "bkt/sizes/large.jpg": b"\xff" * 5000,
        }
    )
    yield scheme, fs
    buckets._filesystem.cache_clear()


def _without(monkeypatch, module: str) -> None:
    """`module` looks absent to the check for it, whether or not it is installed here."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else find_spec(name, *a))


def _paths(*args: str, **options) -> list[tuple[str, str | None]]:
    return [(i.path, i.error) for i in iter_inputs(args, WalkOptions(**options))]


ALL_SCHEMES = pytest.mark.parametrize("store", SCHEMES, indirect=True)


@ALL_SCHEMES
@pytest.mark.parametrize(
    "options, names",
    [
        ({}, KEYS),
        ({"recursive": False}, ["a.jpg", "a0.jpg"]),
        ({"hidden": True}, [".hidden.jpg", *KEYS]),
        ({"extensions": frozenset({"txt"})}, ["notes.txt"]),
    ],
)
def test_a_prefix_is_walked_in_key_order_with_the_folder_rules(store, options, names):
    scheme, _ = store
    for given in (f"{scheme}://bkt/photos/", f"{scheme}://bkt/photos"):
        assert _paths(given, **options) == [(f"{scheme}://bkt/photos/{n}", None) for n in names]


@ALL_SCHEMES
def test_objects_missing_keys_and_missing_buckets(store):
    scheme, _ = store
    container = "container" if scheme in ("az", "abfs", "abfss") else "bucket"
    assert _paths(f"{scheme}://bkt/photos/a0.jpg", f"{scheme}://bkt/photos/gone.jpg", f"{scheme}://nobkt/x/") == [
        (f"{scheme}://bkt/photos/a0.jpg", None),
        (f"{scheme}://bkt/photos/gone.jpg", "no such object or prefix"),
        (f"{scheme}://nobkt/x/", f"no such {container}: nobkt"),
    ]
    assert _paths(f"{scheme}://bkt/empty-prefix/") == []


@ALL_SCHEMES
def test_an_object_is_read_whole_and_refused_past_the_cap(store, images):
    scheme, _ = store
    assert fetch(f"{scheme}://bkt/photos/a0.jpg", Remote()) == images[2].read_bytes()
    assert fetch(f"{scheme}://bkt/sizes/empty.jpg", Remote()) == b""
    assert fetch(f"{scheme}://bkt/sizes/large.jpg", Remote(max_bytes=5000)) == b"\xff" * 5000
    with pytest.raises(ImageError, match=r"^larger than --max-download \(0.00477 MB\)$"):
        fetch(f"{scheme}://bkt/sizes/large.jpg", Remote(max_bytes=4999))
    with pytest.raises(ImageError, match="^no such object"):
        fetch(f"{scheme}://bkt/photos/gone.jpg", Remote())


@ALL_SCHEMES
def test_the_cli_classifies_objects_as_their_local_copies(cli, store, images, cached_weights, tmp_path):
    scheme, _ = store
    report = tmp_path / "report.html"
    given = [f"{scheme}://bkt/photos/", f"{scheme}://bkt/junk/notes.jpg", *map(str, images)]
    r = cli("predict", *given, "-m", "x0_5", "-f", "jsonl", "--report", report)
    assert r.exit_code == 1, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["path"] for rec in records[:5]] == [
        *(f"{scheme}://bkt/photos/{n}" for n in KEYS),
        f"{scheme}://bkt/junk/notes.jpg",
    ]
    assert records[4]["error"] == "cannot identify image file: it is a text file, not an image"
    local = [{k: v for k, v in rec.items() if k != "path"} for rec in records[5:]]
    remote = [{k: v for k, v in rec.items() if k != "path"} for rec in records[:4]]
    assert remote == [local[0], local[1], local[2], local[0]]
    thumbnails = ReportPage(report.read_text(encoding="utf-8")).imgs  # the failed text object has none
    assert thumbnails[:4] == [thumbnails[4], thumbnails[5], thumbnails[6], thumbnails[4]]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_missing_library_is_a_usage_error_naming_the_extra(cli, images, cached_weights, monkeypatch, scheme):
    module, extra = EXTRAS[scheme]
    _without(monkeypatch, module)
    r = cli("predict", str(images[0]), f"{scheme}://bkt/photos/", "-m", "x0_5")
    assert r.exit_code == 2
    assert f"Error: {scheme}:// inputs need {module}, which is not installed" in r.stderr
    assert f"Hint: pip install 'shufflenet-cli[{extra}]'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_listed_object_without_its_library_is_an_error_record(monkeypatch, images, scheme):
    module, extra = EXTRAS[scheme]
    _without(monkeypatch, module)
    stdin = io.BytesIO(f"{scheme}://bkt/photos/a.jpg\n{images[0]}\n".encode())
    inputs = [(i.path, i.error) for i in iter_inputs(["-"], stdin=stdin)]
    assert inputs == [
        (f"{scheme}://bkt/photos/a.jpg", f"{scheme}:// inputs need {module}: pip install 'shufflenet-cli[{extra}]'"),
        (str(images[0]), None),
    ]
    with pytest.raises(UsageError, match=f"^{scheme}:// inputs need {module}, which is not installed$") as raised:
        iter_inputs([f"{scheme.upper()}://bkt/x.jpg"])  # an argument: checked before anything is read
    assert raised.value.hint == f"pip install 'shufflenet-cli[{extra}]'"


def test_every_object_scheme_has_one_store_and_is_a_url():
    assert set(buckets.STORES) == set(OBJECT_SCHEMES)
    for scheme in OBJECT_SCHEMES:
        url = f"{scheme.upper()}://bkt/photos/"
        assert object_scheme(url) == scheme and is_object_url(url) and is_remote_url(url) and looks_like_url(url)
    for text in ("s3:/bkt/x", "gs://", "gcs://bkt/x", "adl://bkt/x", "photos/s3://x", "https://host/x"):
        assert object_scheme(text) is None and not is_object_url(text), text


def test_a_store_that_cannot_be_reached_is_an_error_record(monkeypatch):
    class NoAccount(InMemoryStore):
        def __init__(self, *args, **kwargs):
            raise ValueError("Must provide either a connection_string or account_name with credentials!!")

    monkeypatch.setitem(fsspec_registry, "abfs", NoAccount)
    monkeypatch.setattr(buckets, "installed", lambda store: True)
    buckets._filesystem.cache_clear()
    error = "cannot connect to Azure Blob Storage: Must provide either a connection_string or account_name with"
    assert _paths("az://ctr/photos/") == [("az://ctr/photos/", error + " credentials!!")]


def test_what_the_libraries_log_about_a_failure_stays_off_stderr(tmp_path):
    """In a program that set up no logging, a record logged with its traceback by the store's library
    (as gcsfs logs a failed request) is not printed: the input's error record says it once."""
    script = tmp_path / "child.py"
    script.write_text(
        """
import logging
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry
from shufflenet_cli.inputs import buckets
from shufflenet_cli.inputs.paths import iter_inputs

class Failing(MemoryFileSystem):
    store, pseudo_dirs = {}, [""]
    def ls(self, path, detail=True, **kwargs):
        try:
            raise ConnectionError("Cannot connect to host storage.googleapis.com:443")
        except ConnectionError as exc:
            logging.getLogger("gcsfs").exception("_request out of retries on exception: %s", exc)
            raise

_registry["gs"] = Failing
buckets.installed = lambda store: True
print([(i.path, i.error) for i in iter_inputs(["gs://bkt/photos/"])])
"""
    )
    import subprocess
    import sys

    child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert "cannot list: Cannot connect to host storage.googleapis.com:443" in child.stdout
    assert child.stderr == ""
