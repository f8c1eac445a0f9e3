"""http(s) inputs against a real HTTP server on 127.0.0.1 started by the tests: photos, a redirect, a
404, a 500 that passes, a slow answer, bodies over --max-download, a text file, a port nothing listens
on. Each remote image gets the records of its local copy, in place; failures are error records."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ReportPage

from shufflenet_cli.decode.fetch import Remote, fetch
from shufflenet_cli.decode.images import ImageError

LAG = 0.25  # seconds before a /lagged/ answer
BIG = 200_000  # bytes; the tests' --max-download is far less
SMALL_CAP_MB = "0.05"


class Site:
    """What the server serves, and how often each path was asked for."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()  # ends the slow answers at teardown
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path
                site.hits[path] += 1
                if path in site.files:
                    self._send(200, site.files[path])
                elif path == "/redirect.jpg":
                    self.send_response(302)
                    self.send_header("Location", "/photos/img0.jpg")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/to-ftp.jpg":
                    self.send_response(301)
                    self.send_header("Location", "ftp://127.0.0.1/x.jpg")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif path == "/flaky.jpg":
                    self._send(500, b"busy") if site.hits[path] == 1 else self._send(
                        200, site.files["/photos/img1.jpg"]
                    )
                elif path == "/broken.jpg":
                    self._send(503, b"down")
                elif path.startswith("/lagged/"):  # a store far away: each answer after LAG seconds
                    time.sleep(LAG)
                    self._send(200, site.files["/photos/" + path.rsplit("/", 1)[1]])
                elif path == "/slow.jpg":
                    site.release.wait(30)
                    self._send(200, site.files["/photos/img0.jpg"])
                elif path == "/big.jpg":
                    self._send(200, b"\xff" * BIG)
                elif path == "/big-unsized.jpg":  # no Content-Length: the cap holds while reading
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"\xff" * BIG)
                    self.close_connection = True
                else:
                    self._send(404, b"not here")

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def site(images):
    files = {f"/photos/{p.name}": p.read_bytes() for p in images}
    files["/notes.txt"] = b"just some words, not a picture\n"
    s = Site(files)
    s.thread.start()
    yield s
    s.release.set()
    s.server.shutdown()
    s.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _aside(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "path"}


def test_remote_images_are_classified_as_their_local_copies_in_order(cli, site, images, cached_weights):
    args = []
    for p in images:
        args += [site.url(f"/photos/{p.name}"), str(p)]
    r = cli("predict", *args, site.url("/redirect.jpg"), "-m", "x0_5", "-f", "json")
    assert r.exit_code == 0, r.stderr
    records = r.json()
    assert [rec["path"] for rec in records] == [*args, site.url("/redirect.jpg")]
    for remote, local in zip(records[0:6:2], records[1:6:2], strict=True):
        assert "predictions" in remote
        assert _aside(remote) == _aside(local)
    assert _aside(records[-1]) == _aside(records[1])  # the redirect's target is img0


def test_each_failure_is_its_own_error_record_saying_which(cli, site, images, cached_weights):
    refused = f"http://127.0.0.1:{_free_port()}/a.jpg"
    urls = [
        site.url("/missing.jpg"),
        refused,
        site.url("/notes.txt"),
        site.url("/big.jpg"),
        site.url("/big-unsized.jpg"),
        site.url("/broken.jpg"),
        site.url("/to-ftp.jpg"),
    ]
    r = cli("predict", *urls, str(images[0]), "-m", "x0_5", "-f", "json", "--max-download", SMALL_CAP_MB)
    assert r.exit_code == 1, r.stderr
    records = r.json()
    assert [rec["path"] for rec in records] == [*urls, str(images[0])]
    errors = [rec.get("error") for rec in records]
    assert errors[0] == "HTTP 404 from 127.0.0.1"
    assert errors[1] == f"connection refused by 127.0.0.1:{refused.split(':')[2].split('/')[0]}"
    assert errors[2] == "cannot identify image file: it is a text file, not an image"
    assert errors[3].startswith("larger than --max-download (0.05 MB)")
    assert errors[4] == "larger than --max-download (0.05 MB)"
    assert errors[5] == "HTTP 503 from 127.0.0.1 (3 tries)"
    assert errors[6] == "HTTP 301 from 127.0.0.1: redirected to a non-http(s) URL"
    assert errors[7] is None and "predictions" in records[7]
    assert "Traceback" not in r.stderr
    assert site.hits["/missing.jpg"] == 1  # a 4xx is not asked again
    assert site.hits["/broken.jpg"] == 3  # a 5xx is


def test_a_500_then_200_is_retried_and_classified(cli, site, images, cached_weights):
    r = cli("predict", site.url("/flaky.jpg"), str(images[1]), "-m", "x0_5", "-f", "json")
    assert r.exit_code == 0, r.stderr
    remote, local = r.json()
    assert _aside(remote) == _aside(local)
    assert site.hits["/flaky.jpg"] == 2


def test_a_slow_answer_times_out_after_the_timeout_and_is_retried(cli, site, images, cached_weights):
    r = cli("predict", site.url("/slow.jpg"), str(images[0]), "-m", "x0_5", "-f", "json", "--timeout", "0.3")
    assert r.exit_code == 1, r.stderr
    slow, local = r.json()
    assert slow["error"] == "timed out after 0.3 s fetching from 127.0.0.1 (3 tries)"
    assert "predictions" in local
    assert site.hits["/slow.jpg"] == 3


def test_urls_from_a_stdin_list(cli, site, images, cached_weights):
    urls = [site.url(f"/photos/{p.name}") for p in images]
    r = cli("predict", "-", "-m", "x0_5", "-f", "json", input="\n".join(urls) + "\n")
    assert r.exit_code == 0, r.stderr
    assert [rec["path"] for rec in r.json()] == urls


def test_resume_matches_urls_as_given(cli, site, images, cached_weights, tmp_path):
    urls = [site.url(f"/photos/{p.name}") for p in images]
    out = tmp_path / "out.jsonl"
    first = cli("predict", *urls[:2], "-m", "x0_5", "-o", out)
    assert first.exit_code == 0, first.stderr
    again = cli("predict", *urls, "-m", "x0_5", "-o", out, "--resume")
    assert again.exit_code == 0, again.stderr
    lines = [line for line in out.read_text().splitlines() if line]
    assert [json.loads(line)["path"] for line in lines] == urls
    assert [site.hits[f"/photos/{p.name}"] for p in images] == [1, 1, 1]  # the done ones not fetched again


def test_unsupported_option_values_are_usage_errors(cli, site, images, cached_weights):
    for option in ("--timeout", "--max-download"):
        r = cli("predict", str(images[0]), "-m", "x0_5", option, "0")
        assert r.exit_code == 2, (option, r.stderr)


def test_fetch_stops_reading_at_the_cap(site):
    with pytest.raises(ImageError, match="larger than --max-download"):
        fetch(site.url("/big-unsized.jpg"), Remote(max_bytes=1000))
    assert fetch(site.url("/notes.txt"), Remote()) == site.files["/notes.txt"]


@pytest.mark.parametrize("decode_in", ["threads", "processes"])
def test_timings_show_the_fetches_apart_from_the_decodes(cli, site, images, cached_weights, decode_in):
    """Each /lagged/ answer waits LAG: the fetch stage holds that wait, read+decode does not."""
    urls = [site.url(f"/lagged/{p.name}") for p in images]
    r = cli("predict", *urls, str(images[0]), "-m", "x0_5", "-f", "json", "--timings", "--decode-in", decode_in)
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stderr.split())
    fetch_ms, fetched = re.search(r"fetch ([0-9.]+) ms per fetched input, (\d+) of them", text).groups()
    assert int(fetched) == len(urls)  # the local file is not one of them
    assert float(fetch_ms) >= 1000 * LAG
    decode_ms = float(re.search(r"read\+decode ([0-9.]+) ms/image", text).group(1))
    assert decode_ms < 1000 * LAG * len(urls) / (len(urls) + 1)  # the waits are not counted in it


def test_timings_without_remote_inputs_have_no_fetch_stage(cli, images, cached_weights):
    r = cli("predict", *map(str, images), "-m", "x0_5", "-f", "json", "--timings")
    assert r.exit_code == 0, r.stderr
    assert "read+decode" in r.stderr and "fetch" not in r.stderr


def test_report_thumbnails_of_urls_are_their_local_copies(cli, site, images, cached_weights, tmp_path):
    urls = [site.url(f"/photos/{p.name}") for p in images]
    report = tmp_path / "report.html"
    r = cli("predict", *urls, *map(str, images), site.url("/missing.jpg"), "-m", "x0_5", "--report", report)
    assert r.exit_code == 1, r.stderr
    page = ReportPage(report.read_text(encoding="utf-8"))
    assert page.by_class["path"] == [*urls, *map(str, images)]
    n = len(images)
    assert len(page.imgs) == 2 * n and page.imgs[:n] == page.imgs[n:]
    assert [row[0] for row in page.rows if row] == [site.url("/missing.jpg")]
