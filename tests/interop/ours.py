"""tlskit's side of the interop tests: an in-process server on a background thread, ``tlskit serve`` as a
subprocess, configs built from a ``Pki``, and an interactive ``openssl s_client`` for KeyUpdate commands.

Every wait is bounded (``TIMEOUT`` from peers.py); threads are daemons and servers stop when their
context exits, so a failing test cannot hang the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

from tests.interop.conftest import Pki
from tests.interop.peers import HOST, TIMEOUT, PeerError, require, wait_listening
from tlskit.config import CertifiedKey, ClientConfig, ServerConfig
from tlskit.connection import Connection, TrafficSecrets
from tlskit.enums import CipherSuite, NamedGroup
from tlskit.errors import TLSError
from tlskit.events import ApplicationData, ConnectionClosed, Event, HandshakeComplete
from tlskit.io.socket import TLSListener, TLSSocket, listen

SUITES: dict[str, CipherSuite] = {s.name: s for s in (
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
)}
"""The suites tlskit implements, by their IANA (and OpenSSL) names."""

# (OpenSSL -groups name, tlskit group, IANA name as negotiated() reports it)
GROUPS: list[tuple[str, NamedGroup, str]] = [
    ("X25519", NamedGroup.x25519, "x25519"),
    ("P-256", NamedGroup.secp256r1, "secp256r1"),
    ("P-384", NamedGroup.secp384r1, "secp384r1"),
]

# GnuTLS priority-string names
GNUTLS_CIPHERS = {
    "TLS_AES_128_GCM_SHA256": "AES-128-GCM",
    "TLS_AES_256_GCM_SHA384": "AES-256-GCM",
    "TLS_CHACHA20_POLY1305_SHA256": "CHACHA20-POLY1305",
}
GNUTLS_GROUPS = {NamedGroup.x25519: "X25519", NamedGroup.secp256r1: "SECP256R1", NamedGroup.secp384r1: "SECP384R1"}


def server_config(pki: Pki, **overrides: Any) -> ServerConfig:
    """A ``ServerConfig`` serving ``pki``'s chain; keywords set other fields."""
    return ServerConfig(certificates=(CertifiedKey.from_pem_files(pki.cert, pki.key),), **overrides)



# --------------------------------------------------------------------------------------------- in-process server


@dataclass
class Served:
    """One connection our server handled: what it negotiated, received and how it ended."""

    negotiated: HandshakeComplete | None = None
    cipher: tuple[str, str, int] | None = None  # TLSSocket.cipher(), as ssl.SSLSocket.cipher()
    version: str | None = None
    received: bytes = b""
    error: BaseException | None = None
    secrets_at_handshake: TrafficSecrets | None = None
    secrets_at_end: TrafficSecrets | None = None
    done: threading.Event = field(default_factory=threading.Event)


Handler = Callable[[TLSSocket, Served], None]


def echo(tls: TLSSocket, served: Served) -> None:
    """Echo every chunk back until the peer closes."""
    while data := tls.recv(65536):
        served.received += data
        tls.sendall(data)


def http_hello(tls: TLSSocket, served: Served) -> None:
    """Answer one HTTP/1.x request with 200 and a body naming the request line, then close."""
    while b"\r\n\r\n" not in served.received:
        data = tls.recv(65536)
        if not data:
            return
        served.received += data
    request_line = served.received.split(b"\r\n", 1)[0]
    body = b"tlskit says hello to " + request_line + b"\n"
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % len(body) + body)


class OurServer:
    """tlskit's blocking front end (``listen``/``TLSListener``) on 127.0.0.1, one thread per connection.

    ``connections`` lists a ``Served`` per accepted connection in accept order; ``wait(n)`` blocks until n
    connections have finished (handshake failure included) and returns them.
    """

    def __init__(self, config: ServerConfig, handler: Handler = echo, *, timeout: float = TIMEOUT) -> None:
        self.config = config
        self.handler = handler
        self.timeout = timeout
        self.connections: list[Served] = []
        self._listener: TLSListener | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.port = 0

    def __enter__(self) -> Self:
        self._listener = listen(HOST, 0, self.config)
        self._listener.socket.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"tlskit-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                tls, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            served = Served()
            self.connections.append(served)
            threading.Thread(target=self._handle, args=(tls, served), daemon=True).start()

    def _handle(self, tls: TLSSocket, served: Served) -> None:
        try:
            tls.settimeout(self.timeout)
            tls.do_handshake()
            served.negotiated = tls.negotiated
            served.cipher, served.version = tls.cipher(), tls.version()
            served.secrets_at_handshake = tls.conn.traffic_secrets()
            self.handler(tls, served)
            if tls.conn.handshake_complete:
                served.secrets_at_end = tls.conn.traffic_secrets()
        except BaseException as exc:  # recorded for the test to assert on
            served.error = exc
        finally:
            with contextlib.suppress(Exception):
                tls.close()
            served.done.set()

    def wait(self, count: int = 1, timeout: float | None = None) -> list[Served]:
        """The first ``count`` connections once each has finished; ``PeerError`` if that takes too long."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.connections) < count:
            if time.monotonic() > deadline:
                raise PeerError(f"tlskit server saw {len(self.connections)} of {count} connections")
            time.sleep(0.01)
        for served in self.connections[:count]:
            if not served.done.wait(max(0.0, deadline - time.monotonic())):
                raise PeerError("a tlskit server connection did not finish in time")
        return self.connections[:count]


# --------------------------------------------------------------------------------------------- tlskit serve


class TlskitServe:
    """``tlskit serve ROOT --cert --key --host 127.0.0.1 --port 0`` as a subprocess; ``port`` once started."""

    def __init__(self, root: Path, pki: Pki, *, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> None:
        self.root, self.pki, self.timeout = root, pki, timeout
        self.env = {**os.environ, **(env or {})}
        if env is None or "SSLKEYLOGFILE" not in env:
            self.env.pop("SSLKEYLOGFILE", None)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "tlskit", "serve", os.fspath(self.root), "--host", HOST, "--port", "0",
                "--cert", os.fspath(self.pki.cert), "--key", os.fspath(self.pki.key)]

    def output(self) -> str:
        if self._out is None:
            return ""
        self._out.seek(0)
        return self._out.read().decode("utf-8", "replace")

    def wait_output(self, pattern: str) -> re.Match[str]:
        """Wait until the server's log matches ``pattern``; ``PeerError`` with the log on timeout."""
        deadline = time.monotonic() + self.timeout
        while (match := re.search(pattern, self.output())) is None:
            if time.monotonic() > deadline:
                raise PeerError(f"tlskit serve never logged {pattern!r}:\n{self.output()}")
            time.sleep(0.02)
        return match

    def __enter__(self) -> Self:
        self._out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while (match := re.search(r"Serving .* at https://[^:]+:(\d+)/", self.output())) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise PeerError(f"tlskit serve did not start\n$ {' '.join(self.argv())}\n{self.output()}")
            time.sleep(0.02)
        self.port = int(match.group(1))
        wait_listening(self.port, proc=self.proc, timeout=self.timeout, what="tlskit serve")  # type: ignore[arg-type]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self._out is not None:
            self._out.close()
            self._out = None


# --------------------------------------------------------------------------------------------- interactive s_client


class InteractiveClient:
    """``openssl s_client`` fed one stdin line at a time (its ``K``/``k`` commands need a line of their own)."""

    def __init__(self, argv: Sequence[str], timeout: float = TIMEOUT) -> None:
        self.argv, self.timeout = list(argv), timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def stdout(self) -> str:
        self._out.seek(0)
        return self._out.read().decode("utf-8", "replace")

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode("utf-8", "replace")

    def send_line(self, line: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def wait_for(self, stream: Literal["stdout", "stderr"], pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + self.timeout
        while (match := re.search(pattern, self.stdout() if stream == "stdout" else self.stderr())) is None:
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise PeerError(f"s_client {stream} never matched {pattern!r}\n$ {' '.join(self.argv)}\n"
                                f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}")
            time.sleep(0.02)
        return match

    def close(self) -> int:
        """Close stdin (s_client then sends close_notify and exits) and return its exit status."""
        assert self.proc is not None and self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        return self.proc.wait(timeout=self.timeout)

    def __enter__(self) -> Self:
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=self._out, stderr=self._err,
                                     start_new_session=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self._out.close()
        self._err.close()


def s_client_argv(port: int, cafile: Path, *extra: str, servername: str = "localhost") -> list[str]:
    """``openssl s_client`` TLS 1.3 argv as ``peers.openssl_client`` builds it (brief, verifying)."""
    return [require("openssl"), "s_client", "-connect", f"{HOST}:{port}", "-tls1_3", "-verify_return_error",
            "-CAfile", os.fspath(cafile), "-servername", servername, "-verify_hostname", servername, "-brief",
            *extra]


@contextlib.contextmanager
def raw_connection(port: int, timeout: float = TIMEOUT) -> Iterator[socket.socket]:
    """A TCP connection to 127.0.0.1:``port`` with a timeout on every operation."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        yield sock


def read_all(tls: TLSSocket) -> bytes:
    """Everything ``tls`` receives until the peer closes."""
    chunks = []
    while chunk := tls.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def sansio_exchange(port: int, config: ClientConfig, request: bytes, timeout: float = TIMEOUT) -> list[Event]:
    """Drive the sans-IO ``Connection`` over a plain socket: handshake, send ``request`` once the handshake is
    done, read until the peer closes; every event the engine reported, in order (the blocking front end
    keeps only data, so post-handshake events such as ``SessionTicketReceived`` are seen only here)."""
    conn = Connection(config)
    events: list[Event] = []
    conn.start()
    sent_request = False
    deadline = time.monotonic() + timeout
    with raw_connection(port, timeout) as sock:
        sock.sendall(conn.data_to_send())
        while not any(isinstance(e, ConnectionClosed) for e in events):
            if time.monotonic() > deadline:
                raise PeerError(f"sans-IO exchange did not finish; events so far: {events}")
            data = sock.recv(65536)
            try:
                conn.receive_data(data)
            except TLSError:
                events += conn.events()
                raise
            events += conn.events()
            if conn.handshake_complete and not sent_request:
                conn.send_data(request)
                sent_request = True
            if out := conn.data_to_send():
                sock.sendall(out)
            if not data:
                break
    return events


def application_data(events: Sequence[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ApplicationData))
