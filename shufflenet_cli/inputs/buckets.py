"""Object storage as inputs, through fsspec: `s3://` (s3fs, the [s3] extra), `gs://` (gcsfs, [gcs]),
`az://`, `abfs://` and `abfss://` (adlfs, [azure]). `SCHEME://bucket/prefix/` is a folder, walked
prefix by prefix in key order (recursively unless --no-recursive; --ext and hidden names as for local
folders), `SCHEME://bucket/key.jpg` a file. Credentials and endpoints come from each library's
default chain (AWS_* variables and profiles, AWS_ENDPOINT_URL; Google's application default
credentials; AZURE_STORAGE_* variables and Azure's default credential).

Every scheme goes through the same code: STORES says which fsspec filesystem and which extra a scheme
needs, and nothing else differs. The decode workers read each object (decode/fetch.py calls
`read_object`).
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from shufflenet_cli.errors import UsageError
from shufflenet_cli.urls import object_scheme

# Connections a process may hold to a store: botocore's default of 10 left most of a remote run's
# decode threads (decode/fetch.py's REMOTE_WORKERS) queueing for one while each request waited on the
# network (docs/inputs.md, "Throughput"). They are opened only as they are needed.
MAX_CONNECTIONS = 128


@dataclass(frozen=True)
class Store:
    """One kind of object storage: the fsspec filesystem that reads it and the extra that installs it."""

    name: str
    protocol: str  # fsspec's name for the filesystem
    module: str  # the package that implements it, looked for without importing it
    extra: str  # shufflenet-cli's extra that installs the package
    container: str = "bucket"  # what the first part of the path is called there
    # for the filesystem, besides no listings cache (not hashed: a Store is a cache key)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    env: tuple[str, ...] = ()  # variables that choose the endpoint or account: another value, another client
    loggers: tuple[str, ...] = ()  # the libraries' own loggers (see _filesystem)

    @property
    def install(self) -> str:
        return f"pip install 'shufflenet-cli[{self.extra}]'"


_AZURE = Store(
    "Azure Blob Storage",
    "abfs",
    "adlfs",
    "azure",
    container="container",
    env=("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_CONNECTION_STRING"),
    loggers=("adlfs", "azure"),
)
STORES: dict[str, Store] = {  # one per urls.OBJECT_SCHEMES
    "s3": Store(
        "S3",
        "s3",
        "s3fs",
        "s3",
        options={"config_kwargs": {"max_pool_connections": MAX_CONNECTIONS}},
        env=("AWS_ENDPOINT_URL",),
        loggers=("s3fs", "aiobotocore", "botocore"),
    ),
    "gs": Store(
        "Google Cloud Storage", "gs", "gcsfs", "gcs", env=("STORAGE_EMULATOR_HOST",), loggers=("gcsfs", "google")
    ),
    "az": _AZURE,
    "abfs": _AZURE,
    "abfss": _AZURE,
}


class TooLarge(OSError):
    """An object larger than the cap: not kept."""


def store_for(url: str) -> Store:
    """The store an object-storage URL (urls.is_object_url) is in."""
    scheme = object_scheme(url)
    if scheme is None:
        raise ValueError(f"not an object-storage URL: {url}")
    return STORES[scheme]


def installed(store: Store) -> bool:
    return importlib.util.find_spec(store.module) is not None


def _needs(url: str, store: Store) -> str:
    return f"{url.split(':', 1)[0].lower()}:// inputs need {store.module}"


def check_extras(paths: Iterable[str]) -> None:
    """UsageError (exit 2) before anything runs where an argument is in a store whose library is
    missing; its hint is the pip install to run."""
    for path in paths:
        if object_scheme(path) is not None and not installed(store := store_for(path)):
            raise UsageError(f"{_needs(path, store)}, which is not installed", hint=store.install)


def filesystem(store: Store) -> Any:
    """One client per process, store and endpoint: made after a fork, never shared with the parent's loop."""
    return _filesystem(os.getpid(), store, tuple(os.environ.get(name) for name in store.env))


@functools.lru_cache(maxsize=8)
def _filesystem(pid: int, store: Store, env: tuple[str | None, ...]) -> Any:
    import fsspec

    # A failure is its input's error record; the libraries would also log it, with a traceback, on
    # stderr (Python's last-resort handler). A handler of their own keeps that out where the program
    # has set up no logging; where it has, their records still reach it.
    for name in store.loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
    # No listings cache: a walk over millions of keys must not keep them all.
    return fsspec.filesystem(store.protocol, use_listings_cache=False, skip_instance_cache=True, **store.options)


def _key(url: str) -> str:
    return url.split("://", 1)[1]


def read_object(url: str, max_bytes: int) -> bytes:
    """The object's bytes; TooLarge where it has more than `max_bytes`; OSErrors as the library raises them.

    One ranged GET of at most `max_bytes + 1` bytes: asking for the size first (a HEAD, as opening the
    object does) doubled the requests, and each waits a round trip. An oversized object is refused
    after that many bytes, as an http(s) body without a Content-Length is."""
    fs, key = filesystem(store_for(url)), _key(url)
    try:
        data = fs.cat_file(key, start=0, end=max_bytes + 1)
    except OSError as exc:
        if exc.errno != errno.EINVAL or fs.size(key) != 0:
            raise
        return b""  # S3 refuses any range of an empty object (416): the empty file's own error follows
    if len(data) > max_bytes:
        raise TooLarge(f"more than {max_bytes} bytes")
    return bytes(data)


def expand_objects(
    url: str, recursive: bool, hidden: bool, extensions: frozenset[str]
) -> Iterator[tuple[str, str | None]]:
    """(path, error) for each input `url` names: itself where it is an object, else the objects under
    it, each named as `url` is followed by the rest of its key."""
    store = store_for(url)
    if not installed(store):
        yield url, f"{_needs(url, store)}: {store.install}"
        return
    try:
        fs = filesystem(store)
    except Exception as exc:  # noqa: BLE001 - no account or credentials set up (adlfs says so here)
        yield url, f"cannot connect to {store.name}: {_reason(exc)}"
        return
    key = _key(url)
    if not url.endswith("/") and "/" in key.strip("/"):
        try:
            if fs.info(key)["type"] != "directory":
                yield url, None
                return
        except FileNotFoundError:
            yield url, _no_container(fs, store, key) or "no such object or prefix"
            return
        except Exception as exc:  # noqa: BLE001 - any client failure is this input's error
            yield url, f"cannot read: {_reason(exc)}"
            return
    yield from _walk(fs, store, url.rstrip("/"), key.rstrip("/"), (recursive, hidden, extensions))


def _walk(
    fs: Any, store: Store, base: str, key: str, rules: tuple[bool, bool, frozenset[str]]
) -> Iterator[tuple[str, str | None]]:
    """Depth first on a stack of its own; each prefix listed when reached, so the first objects go out
    before the whole bucket is listed. An entry's URL is `base` and its key's part below `key`: the
    scheme and the bucket as they were given (an Azure account in them stays there)."""
    root = type(fs)._strip_protocol(key).rstrip("/")  # how the filesystem names `key` in its listings

    def url(name: str) -> str:
        return base + name[len(root) :] if name.startswith(root + "/") else base.split("://")[0] + "://" + name

    stack: list[Iterator[tuple[str, bool]]] = []
    listing = _listing(fs, store, root, key, rules)
    if isinstance(listing, str):
        yield base + "/", listing
        return
    stack.append(iter(listing))
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        name, is_dir = entry
        if not is_dir:
            yield url(name), None
            continue
        listing = _listing(fs, store, name, name, rules)
        if isinstance(listing, str):
            yield url(name) + "/", listing
        else:
            stack.append(iter(listing))


def _listing(
    fs: Any, store: Store, prefix: str, key: str, rules: tuple[bool, bool, frozenset[str]]
) -> list[tuple[str, bool]] | str:
    """The entries under `prefix` worth visiting, in key order (a sub-prefix sorts as `name/`, where
    its keys are); an error message where it cannot be listed. An empty or absent prefix is empty."""
    recursive, hidden, extensions = rules
    try:
        entries = fs.ls(key, detail=True)
    except FileNotFoundError:
        return _no_container(fs, store, key) or []
    except Exception as exc:  # noqa: BLE001 - any client failure is this prefix's error
        return f"cannot list: {_reason(exc)}"
    kept: list[tuple[str, bool]] = []
    for entry in entries:
        name = entry["name"].rstrip("/")
        base = name.rsplit("/", 1)[-1]
        is_dir = entry.get("type") == "directory"
        if name == prefix or (not hidden and base.startswith(".")):
            continue
        if is_dir and not recursive:
            continue
        if not is_dir and os.path.splitext(base)[1].lstrip(".").lower() not in extensions:
            continue
        kept.append((name, is_dir))
    kept.sort(key=lambda e: e[0] + "/" if e[1] else e[0])
    return kept


def _no_container(fs: Any, store: Store, key: str) -> str | None:
    """Why nothing is at `key` where its bucket (container) is missing or cannot be read; None where it is there."""
    bucket = key.split("/", 1)[0]
    try:
        if not fs.exists(bucket):
            return f"no such {store.container}: {bucket}"
    except Exception as exc:  # noqa: BLE001 - any client failure is this input's error
        return f"cannot read {store.container} {bucket}: {_reason(exc)}"
    return None


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
