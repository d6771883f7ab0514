"""`tlskit serve` when a proxied exchange goes wrong, with real clients (curl over HTTP/1.1 and HTTP/2, raw TLS
sockets) and a scripted upstream: what the client gets (as nginx answers) and that every request, however it
ended, is in the access log and the metrics."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.peers import require
from tests.loopback import thread_per_connection
from tests.served import Served, start

# What the scripted upstream answers, by the last path segment (it reads the request head first).
_ANSWERS = {
    b"both": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"cut": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",  # then it closes
    b"ctl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\x01b\r\n\r\nok",
    b"ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
}


@contextlib.contextmanager
def scripted_upstream() -> Iterator[int]:
    def answer(conn: socket.socket, _stop: threading.Event) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in head and (chunk := conn.recv(65536)):
                    head += chunk
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)  # read the body first, as an app does
                body = head.partition(b"\r\n\r\n")[2]  # (one that answers before it: relayed early)
                chunked = re.search(rb"(?im)^transfer-encoding:\s*chunked", head)
                while ((length and len(body) < int(length.group(1))) or (chunked and not body.endswith(b"0\r\n\r\n"))
                       ) and (chunk := conn.recv(65536)):
                    body += chunk
                target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
                conn.sendall(_ANSWERS.get(target.rstrip(b"/").rsplit(b"/", 1)[-1], _ANSWERS[b"ok"]))

    with thread_per_connection(answer) as port:
        yield port


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Served]:
    with scripted_upstream() as port:
        (tmp_path / "site.toml").write_text(
            '[http]\nidle_timeout = 1\n\n[tls]\nalpn = ["h2", "http/1.1"]\n\n'
            f'[[route]]\npath = "/api/"\nproxy = "http://127.0.0.1:{port}"\n')
        served = start(["--config", str(tmp_path / "site.toml"), "--host", "127.0.0.1", "--port", "0",
                        "--metrics-port", "0"], {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")})
        served.host = "localhost"
        try:
            yield served
        finally:
            served.stop()


def _tls(served: Served) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    return served.context().wrap_socket(raw, server_hostname="localhost")


def _read_response(tls: ssl.SSLSocket) -> bytes:
    """One response with a Content-Length body, or what came until the server closed."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := tls.recv(65536)):
        data += chunk
    length = re.search(rb"\r\ncontent-length: *(\d+)", data, re.IGNORECASE)
    while length and len(data.partition(b"\r\n\r\n")[2]) < int(length.group(1)) and (chunk := tls.recv(65536)):
        data += chunk
    return data


def _requests_counted(served: Served) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return int(sum(float(m) for m in re.findall(r'^tlskit_http_requests_total\{[^}]*\} (\S+)$', text, re.M)))


def test_upstream_framing_faults_are_not_passed_on(site: Served) -> None:
    """RFC 9112 §6.3: an upstream response with both Transfer-Encoding and Content-Length is forwarded without
    the Content-Length (it claimed 100 bytes, the chunked body has 5: the connection broke, and the keep-alive
    request after it went unanswered); a header value with control characters is a 502 (nginx: 502), not
    something HTTP/2 clients refuse."""
    client = http.client.HTTPSConnection("localhost", site.port, context=site.context(), timeout=5)
    sockets = set()
    for _ in range(2):  # the second on the same connection: it survived the first
        client.request("GET", "/api/both")
        response = client.getresponse()
        assert (response.status, response.read()) == (200, b"hello")
        assert response.getheader("content-length") is None and response.getheader("transfer-encoding") == "chunked"
        sockets.add(id(client.sock))
    assert len(sockets) == 1
    for host in ("a b", "a/b"):  # RFC 9112 §3.2: 400, and nothing reaches the upstream (nginx: 400 too)
        client.putrequest("GET", "/api/ok", skip_host=True)
        client.putheader("Host", host)
        client.endheaders()
        response = client.getresponse()
        assert response.status == 400, host
        response.read()
        client.close()
    client.request("GET", "/api/ctl")
    response = client.getresponse()
    assert response.status == 502 and response.getheader("x-a") is None
    response.read()
    client.close()
    curl = require("curl")
    result = subprocess.run([curl, "-sS", "--http2", "--cacert", str(site.cacert), "-w", " %{http_version}",
                             site.url("/api/both")], capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stdout) == (0, "hello 2"), result.stderr
    assert not [line for line in site.log if "Traceback" in line]


def test_a_stalled_or_malformed_request_body_is_the_clients_fault(site: Served) -> None:
    """The client, not the upstream, stopped: 408 and the connection closes (nginx: 408); was 504."""
    with _tls(site) as tls:
        tls.sendall(b"POST /api/up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc")
        began = time.monotonic()
        answer = _read_response(tls)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in answer.lower() and tls.recv(100) == b""
        assert time.monotonic() - began < 4
    site.wait_log(r'"POST /api/up HTTP/1\.1" 408 ')
    with _tls(site) as tls:  # a chunked body that is no chunk: the client's fault, 400 (it was a 502)
        tls.sendall(b"POST /api/up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert _read_response(tls).startswith(b"HTTP/1.1 400 ")


def test_every_proxied_request_is_logged_and_counted_however_it_ended(site: Served) -> None:
    """Over HTTP/2 curl closes the connection as soon as its stream ends, which cancelled the stream's task
    before its log entry (about 3 in 4 went missing); a response cut short by the upstream, or a client that
    went away, was not logged either (nginx logs the status it sent, or 499)."""
    curl = require("curl")
    before = _requests_counted(site)
    for _ in range(8):
        result = subprocess.run([curl, "-sS", "--http2", "--cacert", str(site.cacert), site.url("/api/ok")],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.stdout == "ok", result.stderr
    with _tls(site) as tls:  # the upstream stops after 7 of 100 bytes: the client gets them, then the close
        tls.sendall(b"GET /api/cut HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _read_response(tls).endswith(b"partial")
    with _tls(site) as tls:  # a client that leaves in the middle of its request body
        tls.sendall(b"POST /api/gone HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nab")
        time.sleep(0.2)
    tls = _tls(site)  # ... with close_notify, as curl and browsers close: h11 called that a malformed body (400)
    tls.sendall(b"POST /api/notified HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nab")
    time.sleep(0.2)
    with contextlib.suppress(ssl.SSLError, OSError):
        tls.unwrap()
    tls.close()
    site.wait_log(r'"POST /api/notified HTTP/1\.1" 499 ')
    site.wait_log(r'"GET /api/cut HTTP/1\.1" 200 7 ')
    site.wait_log(r'"POST /api/gone HTTP/1\.1" 499 ')
    deadline = time.monotonic() + 5
    while len([line for line in site.log if '"GET /api/ok HTTP/2.0" 200' in line]) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len([line for line in site.log if '"GET /api/ok HTTP/2.0" 200' in line]) == 8
    assert _requests_counted(site) - before == 11
