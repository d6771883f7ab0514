"""`tlskit serve` as a user runs it, for tests: a subprocess on a free port whose stdout and log are captured.

Every process is bounded: start waits at most 20 s for the announcement, ``stop`` sends SIGTERM and kills
after 10 s, and the fixtures using it stop it at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tlskit.serve.channel import Channel


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    cacert: Path
    stdout: list[str]
    log: list[str]  # stderr lines, appended as they arrive
    metrics_port: int | None = None
    host: str = "localhost"
    extra: dict[str, object] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"https://{self.host}:{self.port}{path}"

    def wait_log(self, pattern: str, timeout: float = 10, after: int = 0) -> str:
        """The first log line (from index ``after``) matching ``pattern``, polling until it appears."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log)[after:]:
                if re.search(pattern, line):
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no log line matches {pattern!r}: {''.join(self.log[-30:])}")

    def access(self, pattern: str, timeout: float = 10) -> dict[str, str]:
        """The ``key=value`` TLS fields of the first access line matching ``pattern``."""
        line = self.wait_log(pattern, timeout)
        return dict(re.findall(r"(\w+)=(\S+)", line.split('"')[-1]))

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cacert))

    def fetch(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
              data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url(path), method=method, headers=headers or {}, data=data)
        try:
            with urllib.request.urlopen(request, context=self.context(), timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def _pump(stream: IO[str], put: Callable[[str | None], object]) -> None:
    for line in stream:
        put(line)
    put(None)  # EOF


def start(args: Sequence[str], env: dict[str, str], *, cwd: Path | None = None, dev: bool = True,
          workers: int = 1) -> Served:
    """Start ``tlskit serve ARGS --workers N`` and wait until it has announced itself (20 s at most)."""
    argv = [sys.executable, "-m", "tlskit", "serve", *args]
    if "--workers" not in args and workers:  # workers=0: the server's own default (one per core)
        argv += ["--workers", str(workers)]
    env = {**env, "PYTHONUNBUFFERED": "1"}
    env.pop("SSLKEYLOGFILE", None)
    process = subprocess.Popen(argv, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    assert process.stdout is not None and process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, lines.put), daemon=True).start()
    threading.Thread(target=_pump, args=(process.stderr, lambda line: log.append(line or "")), daemon=True).start()
    wanted = {"Serving"} | ({"Try:"} if dev else set()) | ({"Metrics:"} if "--metrics-port" in args else set())
    seen: list[str] = []
    try:
        while wanted and (line := lines.get(timeout=20)) is not None:
            seen.append(line)
            wanted = {w for w in wanted if not line.startswith(w)}
    except queue.Empty:
        pass
    if wanted:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        raise AssertionError(f"server did not start: {''.join(seen)} {''.join(log)}")
    first = re.search(r"https://(\S+):(\d+)/", seen[0])
    assert first is not None, seen
    cacert = next((m.group(1) for s in seen if (m := re.search(r"--cacert (\S+)", s))), "")
    metrics = next((int(m.group(1)) for s in seen if (m := re.search(r"Metrics: http://\S+:(\d+)/", s))), None)
    host = first.group(1).strip("[]")
    return Served(process, int(first.group(2)), Path(cacert), seen, log, metrics,
                  host if host != "::1" else "localhost")


def json_lines(lines: Sequence[str]) -> list[dict[str, object]]:
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


class EchoUpstream(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 upstream for proxy tests: answers with the request it saw as JSON (method, path, headers,
    body — chunked bodies decoded) and ``x-upstream: echo``; ``/slow`` waits a second first; ``/204`` answers
    204 with a Content-Length."""

    protocol_version = "HTTP/1.1"
    slow_arrivals = 0  # /slow requests that reached an upstream of this process (tests wait for one: no sleeps)
    _arrival = threading.Condition()

    @classmethod
    def wait_slow(cls, seen: int, timeout: float = 10) -> None:
        """Until more than ``seen`` /slow requests have reached an upstream (it answers them a second later)."""
        with cls._arrival:
            assert cls._arrival.wait_for(lambda: cls.slow_arrivals > seen, timeout), "/slow never reached upstream"

    def do_GET(self) -> None:
        if self.path.endswith("/slow"):
            with self._arrival:
                type(self).slow_arrivals += 1
                self._arrival.notify_all()
            time.sleep(1.0)
        if self.path.endswith("/204"):  # with a Content-Length it must not have (RFC 9110 §8.6): some send one
            self.send_response(204)
            self.send_header("content-length", "5")
            self.end_headers()
            return
        if self.headers.get("transfer-encoding") == "chunked":
            body = b""
            while (size := int(self.rfile.readline().strip(), 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
        out = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": body.decode(), "method": self.command}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.send_header("x-upstream", "echo")
        self.end_headers()
        self.wfile.write(out)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass



def site_config(tmp_path: Path, text: str) -> Path:
    """``text`` as ``tmp_path/site.toml`` (a `tlskit serve --config` file)."""
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def raw_exchange(served: Served, request: bytes) -> bytes:
    """Send ``request`` as it is over TLS; everything the server answers until it closes (or 5 s pass)."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw, \
            served.context().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(request)
        out = b""
        with contextlib.suppress(TimeoutError, ssl.SSLError, ConnectionError):
            while chunk := tls.recv(65536):
                out += chunk
        return out


class _UpstreamServer(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # a proxy opens a connection per request: 100 HTTP/2 streams at once (default 5)


@contextlib.contextmanager
def echo_upstream() -> Iterator[int]:
    """The port of an ``EchoUpstream`` on 127.0.0.1, for the duration of the block."""
    server = _UpstreamServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class ChannelTransport(asyncio.Transport):
    """The TCP side under a served ``Channel``, in process: records what the server writes; ``close()`` reports
    the connection lost, as a real transport does. Create it inside the running loop."""

    def __init__(self, channel: Channel | None = None) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = asyncio.get_running_loop().create_future()
        self.channel = channel
        self.buffered = 0  # what get_write_buffer_size() reports

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.data += data

    def close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
            assert self.channel is not None
            asyncio.get_running_loop().call_soon(self.channel.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed.done()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 50000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def v6_loopback() -> bool:
    """Whether this machine can bind ::1 (IPv6 loopback)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
