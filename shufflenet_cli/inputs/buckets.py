"""Object storage as inputs, through fsspec and s3fs (the [s3] extra): `s3://bucket/prefix/` is a
folder, walked prefix by prefix in key order (recursively unless --no-recursive; --ext and hidden
names as for local folders), `s3://bucket/key.jpg` a file. Credentials and the endpoint come from the
standard AWS chain (`AWS_*` variables, profiles; `AWS_ENDPOINT_URL` for S3-compatible stores).
The decode workers read each object (decode/fetch.py calls `read_object`).
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
from typing import Any, Iterable, Iterator

from shufflenet_cli.errors import UsageError
from shufflenet_cli.urls import is_s3_url

S3_EXTRA = "pip install 'shufflenet-cli[s3]'"
# Connections a process may hold to the store: botocore's default of 10 left most of a remote run's
# decode threads (decode/fetch.py's REMOTE_WORKERS) queueing for one while each request waited on the
# network (docs/inputs.md, "Throughput"). They are opened only as they are needed.
MAX_CONNECTIONS = 128


class TooLarge(OSError):
    """An object larger than the cap: not read."""


def have_s3() -> bool:
    return importlib.util.find_spec("s3fs") is not None


def check_extras(paths: Iterable[str]) -> None:
    """UsageError (exit 2) before anything runs where an argument is an s3:// URL and s3fs is missing."""
    if any(is_s3_url(p) for p in paths) and not have_s3():
        raise UsageError("s3:// inputs need s3fs, which is not installed", hint=S3_EXTRA)


def filesystem() -> Any:
    """One client per process (and endpoint): made after a fork, never shared with the parent's loop."""
    return _filesystem(os.getpid(), os.environ.get("AWS_ENDPOINT_URL"))


@functools.lru_cache(maxsize=4)
def _filesystem(pid: int, endpoint: str | None) -> Any:
    import s3fs

    # No listings cache: a walk over millions of keys must not keep them all.
    return s3fs.S3FileSystem(
        use_listings_cache=False,
        skip_instance_cache=True,
        config_kwargs={"max_pool_connections": MAX_CONNECTIONS},
    )


def read_object(url: str, max_bytes: int) -> bytes:
    """The object's bytes; TooLarge where it has more than `max_bytes`; OSErrors as s3fs raises them.

    One ranged GET of at most `max_bytes + 1` bytes: asking for the size first (a HEAD, as opening the
    object does) doubled the requests, and each waits a round trip. An oversized object is refused
    after that many bytes, as an http(s) body without a Content-Length is."""
    fs, key = filesystem(), url[5:]
    try:
        data = fs.cat_file(key, start=0, end=max_bytes + 1)
    except OSError as exc:
        if exc.errno != errno.EINVAL or fs.size(key) != 0:
            raise
        return b""  # S3 refuses any range of an empty object (416): the empty file's own error follows
    if len(data) > max_bytes:
        raise TooLarge(f"more than {max_bytes} bytes")
    return bytes(data)


def expand_s3(url: str, recursive: bool, hidden: bool, extensions: frozenset[str]) -> Iterator[tuple[str, str | None]]:
    """(path, error) for each input `url` names: itself where it is an object, else the objects under it."""
    if not have_s3():
        yield url, f"s3:// inputs need s3fs: {S3_EXTRA}"
        return
    fs = filesystem()
    key = url[5:]
    if not url.endswith("/") and "/" in key.strip("/"):
        try:
            if fs.info(key)["type"] != "directory":
                yield url, None
                return
        except FileNotFoundError:
            yield url, _no_bucket(fs, key) or "no such object or prefix"
            return
        except Exception as exc:  # noqa: BLE001 - any client failure is this input's error
            yield url, f"cannot read: {_reason(exc)}"
            return
    yield from _walk(fs, key.rstrip("/"), recursive, hidden, extensions)


def _walk(
    fs: Any, root: str, recursive: bool, hidden: bool, extensions: frozenset[str]
) -> Iterator[tuple[str, str | None]]:
    """Depth first on a stack of its own; each prefix listed when reached, so the first objects go out
    before the whole bucket is listed."""
    stack: list[Iterator[tuple[str, bool]]] = []
    listing = _listing(fs, root, recursive, hidden, extensions)
    if isinstance(listing, str):
        yield "s3://" + root + "/", listing
        return
    stack.append(iter(listing))
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        name, is_dir = entry
        if not is_dir:
            yield "s3://" + name, None
            continue
        listing = _listing(fs, name, recursive, hidden, extensions)
        if isinstance(listing, str):
            yield "s3://" + name + "/", listing
        else:
            stack.append(iter(listing))


def _listing(
    fs: Any, prefix: str, recursive: bool, hidden: bool, extensions: frozenset[str]
) -> list[tuple[str, bool]] | str:
    """The entries under `prefix` worth visiting, in key order (a sub-prefix sorts as `name/`, where
    its keys are); an error message where it cannot be listed. An empty or absent prefix is empty."""
    try:
        entries = fs.ls(prefix, detail=True)
    except FileNotFoundError:
        return _no_bucket(fs, prefix) or []
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


def _no_bucket(fs: Any, key: str) -> str | None:
    """Why nothing is at `key` where its bucket is missing or cannot be read; None where the bucket is there."""
    bucket = key.split("/", 1)[0]
    try:
        if not fs.exists(bucket):
            return f"no such bucket: {bucket}"
    except Exception as exc:  # noqa: BLE001 - any client failure is this input's error
        return f"cannot read bucket {bucket}: {_reason(exc)}"
    return None


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
