"""OCSP and CRL over HTTP (RFC 6960 Appendix A, RFC 5019 §5): a small h11 server and an h11 client.

The server answers ``POST`` (body: DER OCSPRequest) and ``GET /{base64 request}`` on any path, plus the
extra static routes it is given (``/crl.der`` for a CRL distribution point). One thread per connection,
keep-alive, bounded request size and idle timeout.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Protocol

import h11

__all__ = ["OCSP_REQUEST_TYPE", "OCSP_RESPONSE_TYPE", "OCSPHTTPServer", "Responder", "fetch", "post_ocsp"]

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
MAX_REQUEST = 64 * 1024
IDLE_TIMEOUT = 10.0

_log = logging.getLogger("tlskit.pki.ocsp")


class Responder(Protocol):
    """What the server needs from :class:`tlskit.pki.ocsp.OCSPResponder`."""

    def respond(self, request_der: bytes) -> bytes: ...

    def respond_get(self, path: str) -> bytes: ...


class OCSPHTTPServer(socketserver.ThreadingTCPServer):
    """``with OCSPHTTPServer(responder, port=0) as server: ... server.url``; serves in a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, responder: Responder, *, host: str = "127.0.0.1", port: int = 0,
                 routes: Mapping[str, tuple[str, Callable[[], bytes]]] | None = None) -> None:
        self.responder = responder
        self.routes = dict(routes or {})  # path -> (content type, body factory)
        # socketserver's default is IPv4 only: an IPv6 address ("::1", "::") listens on IPv6; names and "" (every
        # interface) stay IPv4, as before
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        return f"http://{host if ':' not in host else f'[{host}]'}:{self.port}"

    def start(self) -> OCSPHTTPServer:
        """Serve in a background daemon thread until :meth:`close`."""
        self._thread = threading.Thread(target=self.serve_forever, name="tlskit-ocsp", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def __enter__(self) -> OCSPHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(socketserver.BaseRequestHandler):
    server: OCSPHTTPServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IDLE_TIMEOUT)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            while self._serve_one(conn, sock):
                conn.start_next_cycle()
        except (OSError, h11.ProtocolError) as exc:
            _log.debug("OCSP HTTP connection from %s ended: %s", self.client_address, exc)

    def _serve_one(self, conn: h11.Connection, sock: socket.socket) -> bool:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return False
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST:
                    self._send(conn, sock, 413, "text/plain", b"request too large\n")
                    return False
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return False
        if request is None:  # h11 yields Request before EndOfMessage; this only satisfies the type checker
            return False
        status, ctype, payload = self._route(request, bytes(body))
        self._send(conn, sock, status, ctype, payload)
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    def _route(self, request: h11.Request, body: bytes) -> tuple[int, str, bytes]:
        method, target = request.method.decode(), request.target.decode("latin-1")
        path = target.split("?", 1)[0]
        if method == "GET" and path in self.server.routes:
            ctype, factory = self.server.routes[path]
            return 200, ctype, factory()
        if method == "POST":
            _log.info("OCSP POST %s from %s", path, self.client_address[0])
            return 200, OCSP_RESPONSE_TYPE, self.server.responder.respond(body)
        if method == "GET":
            _log.info("OCSP GET %s from %s", path[:64], self.client_address[0])
            return 200, OCSP_RESPONSE_TYPE, self.server.responder.respond_get(target)
        return 405, "text/plain", b"use GET or POST (RFC 6960 Appendix A)\n"

    @staticmethod
    def _send(conn: h11.Connection, sock: socket.socket, status: int, ctype: str, payload: bytes) -> None:
        headers = [("Content-Type", ctype), ("Content-Length", str(len(payload))),
                   ("Cache-Control", "no-cache")]
        if status == 405:
            headers.append(("Allow", "GET, POST"))
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data = (data or b"") + (conn.send(h11.Data(data=payload)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        sock.sendall(data)


def fetch(url: str, body: bytes | None = None, *, content_type: str = OCSP_REQUEST_TYPE,
          timeout: float = 5.0, max_size: int = 10 * 1024 * 1024) -> bytes:
    """GET (``body`` None) or POST ``url`` and return the body; OSError on network or HTTP failure.

    ``timeout`` bounds the whole fetch (connecting, a TLS handshake, redirects: at most 3, GET only), not each
    read as urllib's does: a server that trickles a byte a second is cut off at it."""
    deadline = time.monotonic() + timeout
    for _ in range(4):
        status, location, data = _fetch_once(url, body, content_type, deadline, max_size)
        if status in (301, 302, 303, 307, 308) and location is not None and body is None:
            try:
                url = urllib.parse.urljoin(url, location)
            except ValueError as exc:
                raise OSError(f"{url} redirects to {location!r}, which is not a URL: {exc}") from None
            continue
        if not 200 <= status < 300 or status == 204:
            raise OSError(f"{url} answered HTTP {status}")
        return data
    raise OSError(f"{url}: too many redirects")


class _Refused(OSError):
    """A fetch refused for what the server sent (not a network failure): raised as it is."""


def _fetch_once(url: str, body: bytes | None, content_type: str, deadline: float,
                max_size: int) -> tuple[int, str | None, bytes]:
    """(status, Location, body) of one HTTP/1.1 exchange (h11), every step within ``deadline``."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:  # an unclosed "[::1", a port that is no number
        raise OSError(f"{url!r} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise OSError(f"refusing to fetch {url!r}: only http(s) URLs are supported")
    # a path or query that is not ASCII (a Location: /café) goes percent-encoded, as curl sends it
    target = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=~") + \
        (f"?{urllib.parse.quote(parts.query, safe='/%:@!$&()*+,;=~?')}" if parts.query else "")
    try:
        host = parts.netloc.rpartition("@")[2].encode("idna").decode("ascii")
    except UnicodeError as exc:  # an empty or overlong label ("a..b")
        raise OSError(f"{url!r}: the host name is invalid: {exc}") from None
    headers = [("Host", host), ("User-Agent", "tlskit"), ("Accept", "*/*"), ("Connection", "close")]
    if body is not None:
        headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer in time")
        return remaining

    try:
        sock = _connect(parts.hostname, port, left)
        try:
            if parts.scheme.lower() == "https":
                sock = _tls(sock, parts.hostname, left)
            conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
            out = conn.send(h11.Request(method="GET" if body is None else "POST", target=target, headers=headers))
            out += conn.send(h11.Data(data=body)) if body else b""
            sock.settimeout(left())
            sock.sendall(out + conn.send(h11.EndOfMessage()))
            status, location, chunks, size = 0, None, [], 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    sock.settimeout(left())
                    data = sock.recv(65536)
                    if not data and not status:
                        raise _Refused(f"{url} closed the connection without an answer")
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    location = next((_text(v) for k, v in event.headers if k == b"location"), None)
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > max_size:
                        raise _Refused(f"{url} sent more than {max_size} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, location, b"".join(chunks)
        finally:
            sock.close()  # (the TLS socket, once wrapped: it took over the descriptor)
    except _Refused:
        raise
    except TimeoutError:
        raise OSError(f"cannot reach {url}: no answer in time") from None
    except (h11.ProtocolError, UnicodeError) as exc:
        raise OSError(f"{url} answered with malformed HTTP: {exc}") from None
    except OSError as exc:
        raise OSError(f"cannot reach {url}: {exc.strerror or exc}") from None


def _text(value: bytes) -> str:
    """A header value as text: UTF-8 when it is (a Location a server wrote unencoded), else Latin-1."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _connect(host: str, port: int, left: Callable[[], float]) -> socket.socket:
    """A TCP connection to the first address of ``host`` that answers, each try within what is left."""
    error: OSError = OSError(f"{host} has no address")
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left())
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            error = exc
    raise error


def _tls(sock: socket.socket, host: str, left: Callable[[], float]) -> socket.socket:
    """A TLS client over ``sock`` (the system's trust, as urllib's), its handshake within what is left."""
    import selectors  # not select.select: a server with a raised open-file limit has descriptors past 1023
    import ssl  # a CRL or OCSP URL is plain http by convention (RFC 5280 §4.2.1.13, RFC 6960 A.1)

    tls = ssl.create_default_context().wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    try:
        tls.setblocking(False)
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                event = selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                event = selectors.EVENT_WRITE
            with selectors.DefaultSelector() as selector:
                selector.register(tls, event)
                ready = selector.select(max(left(), 0.0))
            if not ready:
                raise TimeoutError("no TLS handshake in time")
    except BaseException:
        tls.close()  # it holds the descriptor now
        raise


def post_ocsp(url: str, request_der: bytes, *, timeout: float = 5.0) -> bytes:
    """POST a DER OCSPRequest to ``url`` and return the DER OCSPResponse bytes (not yet verified)."""
    return fetch(url, request_der, content_type=OCSP_REQUEST_TYPE, timeout=timeout)
