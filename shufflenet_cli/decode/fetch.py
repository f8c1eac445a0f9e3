"""An http(s) or object-storage input's bytes, fetched in the decode worker that decodes them
(preprocess.py), so that fetches run as concurrently as decodes do. Every failure is an `ImageError`
naming what went wrong (the status and host, a refused port, a timeout, the size cap): that input's
error record.

For http(s), redirects are followed (urllib's default). Timeouts, connection resets and 5xx responses
are tried again after a growing pause: they are often passing. A 4xx, a refused connection or an
unknown host is not: asking again gives the same answer. Objects are read by inputs/buckets.py,
whose clients retry on their own.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from urllib.parse import urlsplit

from shufflenet_cli import __version__
from shufflenet_cli.decode.images import ImageError
from shufflenet_cli.inputs.buckets import TooLarge, read_object
from shufflenet_cli.urls import is_http_url, is_object_url, is_remote_url

MB = 1 << 20
CHUNK = 1 << 16
# How many more concurrent fetches than cores a run with URL arguments gets: a fetch waits on the
# network, not on a core, and each holds at most --max-download bytes.
REMOTE_WORKERS = 32
RETRIES = 2  # tries after the first
BACKOFF_S = 0.5  # the pause before the first retry; doubled for each one after


@dataclass(frozen=True)
class Remote:
    """How http(s) inputs are fetched: --timeout (seconds per request: connecting, or waiting for the
    next bytes) and --max-download (bytes; a larger body is refused while it is read, never held)."""

    timeout: float = 30.0
    max_bytes: int = 100 * MB
    retries: int = RETRIES
    backoff: float = BACKOFF_S


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Redirects are followed to http(s) only: urllib would follow one to ftp:// too."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not is_http_url(newurl):
            raise ImageError(f"HTTP {code} from {urlsplit(req.full_url).hostname}: redirected to a non-http(s) URL")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


class _Retry(Exception):
    """A failure worth another try; its message is the error if none is left."""


def fetch(url: str, remote: Remote) -> bytes:
    """The body at `url` (http(s) or object storage); ImageError with the reason where it cannot be had."""
    if is_object_url(url):
        return _read_object(url, remote.max_bytes)
    for attempt in range(remote.retries + 1):
        try:
            return _fetch_once(url, remote)
        except _Retry as exc:
            if attempt == remote.retries:
                tries = f" ({attempt + 1} tries)" if attempt else ""
                raise ImageError(f"{exc}{tries}") from None
            time.sleep(remote.backoff * 2**attempt)
    raise AssertionError("unreachable")


def _read_object(url: str, max_bytes: int) -> bytes:
    """An object in object storage (inputs/buckets.py); its client's own retries and timeouts apply."""
    try:
        return read_object(url, max_bytes)
    except TooLarge:
        raise ImageError(f"larger than --max-download ({max_bytes / MB:.3g} MB)") from None
    except FileNotFoundError:
        raise ImageError("no such object (it vanished after it was listed)") from None
    except PermissionError:
        raise ImageError("access denied: cannot read this object") from None
    except Exception as exc:  # noqa: BLE001 - any client failure is this input's error
        raise ImageError(f"cannot read object: {type(exc).__name__}: {exc}") from None


def _fetch_once(url: str, remote: Remote) -> bytes:
    host = urlsplit(url).hostname or url
    request = urllib.request.Request(url, headers={"User-Agent": f"shufflenet-cli/{__version__}"})
    try:
        with _OPENER.open(request, timeout=remote.timeout) as response:
            return _read_capped(response, remote.max_bytes)
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code} from {host}"
        if exc.code >= 500:
            raise _Retry(error) from None
        raise ImageError(error) from None
    except urllib.error.URLError as exc:
        raise _connection_error(url, exc.reason, remote.timeout) from None
    except (TimeoutError, ConnectionError, HTTPException, OSError) as exc:
        raise _connection_error(url, exc, remote.timeout) from None


def _read_capped(response: object, max_bytes: int) -> bytes:
    """The body, read in chunks; ImageError as soon as it passes `max_bytes` (a declared length that
    does so is refused before anything is read)."""
    declared = getattr(response, "headers", {}).get("Content-Length")
    too_large = f"larger than --max-download ({max_bytes / MB:.3g} MB)"
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ImageError(f"{too_large}: it says {int(declared)} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(CHUNK):  # type: ignore[attr-defined]
        size += len(chunk)
        if size > max_bytes:
            raise ImageError(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _connection_error(url: str, reason: object, timeout: float) -> Exception:
    """An ImageError for what cannot change on a retry; a _Retry for a timeout or a reset."""
    parts = urlsplit(url)
    host = parts.hostname or url
    if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
        return _Retry(f"timed out after {timeout:g} s fetching from {host}")
    if isinstance(reason, ConnectionRefusedError):
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        return ImageError(f"connection refused by {host}:{port}")
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, HTTPException)):
        return _Retry(f"connection to {host} broken ({type(reason).__name__})")
    if isinstance(reason, socket.gaierror):
        return ImageError(f"cannot find host {host}: {reason.strerror or reason}")
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return ImageError(f"cannot fetch from {host}: {text}")


def fetch_workers(workers: int, paths: list[str], processes: bool) -> int:
    """The decode threads for a run: at least REMOTE_WORKERS where an argument is a URL (a `-` list is
    not read ahead to find out). Processes are left as they are: each one costs a core's memory."""
    if processes or not any(is_remote_url(p) for p in paths):
        return workers
    return max(workers, REMOTE_WORKERS)
