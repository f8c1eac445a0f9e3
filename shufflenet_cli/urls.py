"""Remote addresses given where a local file is expected: told apart from files here. http(s) URLs
are inputs (decode/fetch.py reads them); other schemes are recognised so that the message says what
they are.
"""

from __future__ import annotations

import re

REMOTE_SCHEMES = ("http", "https", "s3", "gs")
# One slash is enough: pathlib folds `https://host/x` into `https:/host/x`, and --weights is a Path.
_URL = re.compile(r"(?:" + "|".join(REMOTE_SCHEMES) + r"):/{1,2}[^/]", re.IGNORECASE)

_HTTP = re.compile(r"https?://[^/]", re.IGNORECASE)

NOT_SUPPORTED = "URLs are not supported yet: download the file first and pass its local path"


def looks_like_url(text: str) -> bool:
    """True for `https://host/x.jpg`, `s3://bucket/key` and the like (schemes in REMOTE_SCHEMES).
    Callers ask only about a path that does not exist: a local file named `http:` stays a file."""
    return _URL.match(text) is not None


def is_http_url(text: str) -> bool:
    """True for `http://host/...` and `https://host/...`, the URLs read as inputs (two slashes: an
    input is a string, never folded by pathlib)."""
    return _HTTP.match(text) is not None


def is_s3_url(text: str) -> bool:
    """True for `s3://bucket/...`: an object or a prefix (inputs/buckets.py)."""
    return text[:5].lower() == "s3://" and len(text) > 5


def is_remote_url(text: str) -> bool:
    """An input the decode workers fetch rather than open: http(s) or s3."""
    return is_http_url(text) or is_s3_url(text)
