"""Remote addresses given where a local file is expected: told apart from files here. http(s) URLs
and object-storage URIs (s3://, gs://, az://, abfs://, abfss://) are inputs: decode/fetch.py reads
them, inputs/buckets.py lists a prefix. The same test says what a --weights URL is.
"""

from __future__ import annotations

import re

# Object storage, each read through fsspec (inputs/buckets.py holds each one's filesystem and extra).
OBJECT_SCHEMES = ("s3", "gs", "az", "abfs", "abfss")
REMOTE_SCHEMES = ("http", "https", *OBJECT_SCHEMES)
# One slash is enough: pathlib folds `https://host/x` into `https:/host/x`, and --weights is a Path.
_URL = re.compile(r"(?:" + "|".join(REMOTE_SCHEMES) + r"):/{1,2}[^/]", re.IGNORECASE)

_HTTP = re.compile(r"https?://[^/]", re.IGNORECASE)
_OBJECT = re.compile(r"(" + "|".join(OBJECT_SCHEMES) + r")://[^/]", re.IGNORECASE)

NOT_SUPPORTED = "URLs are not supported yet: download the file first and pass its local path"


def looks_like_url(text: str) -> bool:
    """True for `https://host/x.jpg`, `s3://bucket/key` and the like (schemes in REMOTE_SCHEMES).
    Callers ask only about a path that does not exist: a local file named `http:` stays a file."""
    return _URL.match(text) is not None


def is_http_url(text: str) -> bool:
    """True for `http://host/...` and `https://host/...`, the URLs read as inputs (two slashes: an
    input is a string, never folded by pathlib)."""
    return _HTTP.match(text) is not None


def object_scheme(text: str) -> str | None:
    """`s3`, `gs`, `az`, `abfs` or `abfss` (lower case) for an object or a prefix in object storage
    (`gs://bucket/photos/`), else None."""
    match = _OBJECT.match(text)
    return match.group(1).lower() if match else None


def is_object_url(text: str) -> bool:
    """True for an object or a prefix in object storage: one of OBJECT_SCHEMES (inputs/buckets.py)."""
    return _OBJECT.match(text) is not None


def is_remote_url(text: str) -> bool:
    """An input the decode workers fetch rather than open: http(s) or object storage."""
    return is_http_url(text) or is_object_url(text)
