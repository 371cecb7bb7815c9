"""Tests for cafclassify.io._fetch against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

from cafclassify._errors import DownloadError
from cafclassify.io import _fetch
from cafclassify.io._fetch import fetch, file_sha256

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not text, not HTML
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
HTML = b"<!DOCTYPE html>\n<html><body>Please log in</body></html>\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD under several misbehaviours, chosen by the path."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send_body(self, body: bytes, *, status=200, ctype="application/octet-stream", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _range_start(self) -> int:
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            return int(rng[len("bytes=") : -1])
        return 0

    def do_GET(self):
        state = self.server.state
        state["requests"].append((self.path, self.headers.get("Range")))
        path = self.path
        if path == "/good.bin":
            start = self._range_start()
            if start:
                self._send_body(
                    PAYLOAD[start:],
                    status=206,
                    extra={"Content-Range": f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"},
                )
            else:
                self._send_body(PAYLOAD)
        elif path == "/missing.bin":
            self.send_error(404, "Not Found")
        elif path == "/page.h5ad":
            self._send_body(HTML, ctype="text/html; charset=utf-8")
        elif path == "/sniff.h5ad":  # HTML served with a data content type
            self._send_body(b"  \n" + HTML, ctype="application/octet-stream")
        elif path in ("/truncate-once.bin", "/truncate-norange.bin", "/truncate-always.bin"):
            n = sum(1 for p, _ in state["requests"] if p == path)
            start = self._range_start() if path != "/truncate-norange.bin" else 0
            truncate = path == "/truncate-always.bin" or n == 1
            body = PAYLOAD[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
                )
            self.send_header("Connection", "close")
            self.end_headers()
            if truncate:
                self.wfile.write(body[: len(body) // 3])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)
        elif path == "/flaky.bin":  # one 503, then fine
            n = sum(1 for p, _ in state["requests"] if p == path)
            if n == 1:
                self.send_error(503, "Service Unavailable")
            else:
                self._send_body(PAYLOAD)
        else:
            self.send_error(404, "Not Found")


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(_fetch, "_BACKOFF_SECONDS", 0.0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = {"requests": []}
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield base, httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_good_file_is_downloaded_and_verified(server, tmp_path):
    base, _ = server
    dest = tmp_path / "sub" / "good.bin"
    out = fetch(f"{base}/good.bin", dest, sha256=PAYLOAD_SHA, allow_http=True)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("good.bin.part").exists()


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    base, state = server
    dest = tmp_path / "good.bin"
    dest.write_bytes(PAYLOAD)
    fetch(f"{base}/good.bin", dest, sha256=PAYLOAD_SHA, allow_http=True)
    assert state["requests"] == []


def test_wrong_checksum_names_url_and_both_hashes_and_leaves_nothing(server, tmp_path):
    base, _ = server
    dest = tmp_path / "good.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        fetch(f"{base}/good.bin", dest, sha256=wrong, allow_http=True)
    msg = str(info.value)
    assert f"{base}/good.bin" in msg
    assert wrong in msg
    assert PAYLOAD_SHA in msg
    assert not dest.exists()
    assert not dest.with_name("good.bin.part").exists()


def test_malformed_checksum_is_refused_before_downloading(server, tmp_path):
    base, state = server
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch(f"{base}/good.bin", tmp_path / "x", sha256="abc123", allow_http=True)
    assert state["requests"] == []


def test_404_is_a_clear_error(server, tmp_path):
    base, _ = server
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError, match="404"):
        fetch(f"{base}/missing.bin", dest, allow_http=True)
    assert not dest.exists()


@pytest.mark.parametrize("path", ["/page.h5ad", "/sniff.h5ad"])
def test_html_instead_of_data_is_refused(server, tmp_path, path):
    base, _ = server
    dest = tmp_path / "data.h5ad"
    with pytest.raises(DownloadError, match="(?i)html|web page"):
        fetch(f"{base}{path}", dest, allow_http=True)
    assert not dest.exists()
    assert not dest.with_name("data.h5ad.part").exists()


def test_truncated_transfer_resumes_with_range(server, tmp_path):
    base, state = server
    dest = tmp_path / "t.bin"
    fetch(f"{base}/truncate-once.bin", dest, sha256=PAYLOAD_SHA, allow_http=True, retries=2)
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for p, r in state["requests"] if p == "/truncate-once.bin"]
    assert len(ranges) == 2
    assert ranges[0] is None
    assert ranges[1] == f"bytes={len(PAYLOAD) // 3}-"


def test_truncated_transfer_restarts_when_server_ignores_range(server, tmp_path):
    base, _ = server
    dest = tmp_path / "t.bin"
    fetch(f"{base}/truncate-norange.bin", dest, sha256=PAYLOAD_SHA, allow_http=True, retries=2)
    assert dest.read_bytes() == PAYLOAD


def test_always_truncated_transfer_gives_up_with_clear_error(server, tmp_path):
    base, state = server
    dest = tmp_path / "t.bin"
    with pytest.raises(DownloadError, match="failed after 3 attempts"):
        fetch(f"{base}/truncate-always.bin", dest, allow_http=True, retries=2)
    assert not dest.exists()
    assert len(state["requests"]) == 3
    # the partial file is kept so a rerun resumes
    assert dest.with_name("t.bin.part").exists()


def test_server_error_is_retried(server, tmp_path):
    base, state = server
    dest = tmp_path / "f.bin"
    fetch(f"{base}/flaky.bin", dest, sha256=PAYLOAD_SHA, allow_http=True, retries=1)
    assert dest.read_bytes() == PAYLOAD
    assert len(state["requests"]) == 2


def test_plain_http_is_refused_unless_allowed(server, tmp_path):
    base, state = server
    with pytest.raises(DownloadError, match="http://"):
        fetch(f"{base}/good.bin", tmp_path / "g.bin")
    assert state["requests"] == []


def test_unknown_scheme_is_refused(tmp_path):
    with pytest.raises(DownloadError, match="scheme"):
        fetch("gopher://example.org/x", tmp_path / "x")


def test_file_url_and_local_path(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    a = fetch(src.as_uri(), tmp_path / "a.bin", sha256=PAYLOAD_SHA)
    b = fetch(str(src), tmp_path / "b.bin", sha256="sha256:" + PAYLOAD_SHA.upper())
    assert a.read_bytes() == PAYLOAD
    assert b.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="mismatch"):
        fetch(src.as_uri(), tmp_path / "c.bin", sha256="f" * 64)
    assert not (tmp_path / "c.bin").exists()


def test_missing_local_file(tmp_path):
    with pytest.raises(DownloadError, match="does not exist"):
        fetch(tmp_path / "nope.h5ad", tmp_path / "out.h5ad")


def test_file_sha256_matches_hashlib(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(PAYLOAD)
    assert file_sha256(p, chunk_size=1000) == PAYLOAD_SHA
