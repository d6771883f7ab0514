"""HTTP/2 in `tlskit serve` (opt-in: ``--alpn h2 --alpn http/1.1``) against real clients: curl (libcurl with
nghttp2) and headless Chromium (Debian `chromium`); each test names the peer's version when it fails.
Without ``--alpn h2`` the same clients get HTTP/1.1."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.peers import chromium_dump_dom, require, tool_version
from tests.served import Served, start

PAGE = ('<!doctype html><title>h2</title><link rel=stylesheet href="style.css">'
        '<h1 id=greeting>Hello over HTTP/2</h1>\n')
BIG = bytes(range(256)) * 1024  # 256 KiB: larger than the client's initial window and the in-memory file cache


def _serve(tmp_path: Path, *alpn: str) -> Served:
    root = tmp_path / "www"
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text(PAGE)
    (root / "style.css").write_text("h1 { color: green }\n")
    (root / "big.bin").write_bytes(BIG)
    args = [str(root), "--host", "127.0.0.1", "--port", "0"]
    for protocol in alpn:
        args += ["--alpn", protocol]
    served = start(args, {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")})
    served.host = "localhost"
    return served


@pytest.fixture
def h2_site(tmp_path: Path) -> Iterator[Served]:
    served = _serve(tmp_path, "h2", "http/1.1")
    yield served
    served.stop()


def _curl(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    curl = require("curl")
    return subprocess.run([curl, "-sS", "--cacert", str(served.cacert), *args], capture_output=True, text=True,
                          timeout=30, check=False)


def test_curl_gets_a_file_over_http2(h2_site: Served, tmp_path: Path) -> None:
    out = tmp_path / "big.out"
    result = _curl(h2_site, "--http2", "-o", str(out), "-w", "%{http_version} %{http_code}", h2_site.url("/big.bin"))
    assert result.stdout == "2 200", (tool_version("curl"), result.stderr)
    assert out.read_bytes() == BIG
    fields = h2_site.access(r'"GET /big\.bin HTTP/2\.0" 200 262144 ')
    assert fields["alpn"] == "h2"


def test_curl_head_range_and_404_over_http2(h2_site: Served) -> None:
    head = _curl(h2_site, "--http2", "-I", h2_site.url("/big.bin"))
    assert head.stdout.startswith("HTTP/2 200"), (tool_version("curl"), head.stderr)
    assert "content-length: 262144" in head.stdout and "accept-ranges: bytes" in head.stdout
    ranged = subprocess.run([require("curl"), "-sS", "--http2", "--cacert", str(h2_site.cacert), "-r", "1000-1099",
                             "-D", "-", h2_site.url("/big.bin")], capture_output=True, timeout=30, check=False)
    head_part, _, body = ranged.stdout.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/2 206"), (tool_version("curl"), ranged.stderr)
    assert b"content-range: bytes 1000-1099/262144" in head_part and body == BIG[1000:1100]
    missing = _curl(h2_site, "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                    h2_site.url("/missing"))
    assert missing.stdout == "2 404", missing.stderr
    h2_site.access(r'"HEAD /big\.bin HTTP/2\.0" 200 0 ')
    h2_site.access(r'"GET /missing HTTP/2\.0" 404 ')


def test_nghttp_sees_a_head_response_end_on_its_headers_frame(h2_site: Served) -> None:
    """RFC 9113 §8.1: END_STREAM on HEADERS (flags 0x5), no empty DATA frame, for HEAD of a file streamed from disk."""
    nghttp = require("nghttp")
    result = subprocess.run([nghttp, "-nv", "-H", ":method: HEAD", h2_site.url("/big.bin")],  # (nghttp verifies no
                            capture_output=True, text=True, timeout=30, check=False)              # certificate)
    response = [line for line in result.stdout.splitlines() if "recv HEADERS frame" in line or "recv DATA" in line]
    assert len(response) == 1 and "HEADERS" in response[0] and "flags=0x05" in response[0], \
        (tool_version("nghttp"), result.stdout)
    h2_site.access(r'"HEAD /big\.bin HTTP/2\.0" 200 0 ')


def test_curl_several_urls_on_one_http2_connection_in_parallel(h2_site: Served) -> None:
    urls = [h2_site.url(p) for p in ("/", "/style.css", "/big.bin", "/index.html")]
    result = _curl(h2_site, "--http2", "--parallel", "-o", "/dev/null", "-o", "/dev/null",
                   "-o", "/dev/null", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{num_connects}\n", *urls)
    lines = result.stdout.splitlines()
    assert sorted(line.split()[:2] == ["2", "200"] for line in lines) == [True] * 4, (tool_version("curl"),
                                                                                      result.stdout, result.stderr)
    assert sum(int(line.split()[2]) for line in lines) == 1, result.stdout  # one connection for all four
    for path in ("/ ", "/style.css ", "/big.bin ", "/index.html "):
        h2_site.access(rf'"GET {path}HTTP/2\.0" 200 ')


def test_without_alpn_h2_curl_gets_http11(tmp_path: Path) -> None:
    served = _serve(tmp_path)
    try:
        result = _curl(served, "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", served.url("/"))
        assert result.stdout == "1.1 200", (tool_version("curl"), result.stderr)
        assert served.access(r'"GET / HTTP/1\.1" 200 ')["alpn"] == "http/1.1"
    finally:
        served.stop()


def test_chromium_loads_a_page_over_http2(h2_site: Served, tmp_path: Path) -> None:
    result = chromium_dump_dom(h2_site.url("/"), h2_site.cacert.parent / "localhost.pem", tmp_path / "chromium")
    version = tool_version("chromium")
    assert '<h1 id="greeting">Hello over HTTP/2</h1>' in result.stdout, (version, result.stderr[-2000:])
    page = h2_site.access(r'"GET / HTTP/2\.0" 200 .*HeadlessChrome')
    assert (page["tls"], page["alpn"]) == ("TLSv1.3", "h2"), (version, page)
    h2_site.access(r'"GET /style\.css HTTP/2\.0" 200 .*HeadlessChrome')  # the stylesheet: another stream
