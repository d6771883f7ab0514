"""HTTP/1.1 on h11 for one TLS connection: keep-alive, size limits, timeouts, routing, access log.

A connection waits ``idle_timeout`` for a request's first byte, then ``header_timeout`` for the rest of its
head (else 408); a client that reads nothing of a response for ``idle_timeout`` is cut off (the channel's
send timeout); heads over ``max_header_bytes`` get 431, bodies over ``max_body_bytes`` 413. Routes raise
``HTTPError`` for a plain-text error answer; an unexpected exception in a route is a logged 500.

0-RTT (RFC 8470): with ``--early-data`` the connection starts on the client's early data, before the TLS
handshake completes. A request whose first byte arrived as early data may be a replay: only GET, HEAD and
OPTIONS are served from it (``Request.early``; proxied with ``Early-Data: 1``), anything else is answered
``425 Too Early`` so the client retries it after the handshake. Responses go out at once, as 0.5-RTT data
(RFC 8446 §2.3), so a 0-RTT request is answered one round trip after the client's first flight; the
transport holds them for the handshake only where the engine does not allow that. A request read from early
data sees ``Request.tls`` as ``_PENDING`` (the handshake's fields come with the client's Finished); under
mTLS, a route that passes the client's identity on (``forwards_client_identity``: the proxy) waits for them.

Per-request cost: the connection reads through ``Channel`` (one deadline timer, no ``asyncio.timeout`` per
read); a response built from ``checked`` fields (validated by h11 once, e.g. per file version) skips h11's
per-field regexes, and its h11 ``Response`` (with Date and Server) is reused for the rest of the second. A
whole response (``Exchange.respond``) goes out as one write without awaiting, and a request without a body
is finished without awaiting (``skip_body``); the connection waits only while the transport is paused. The
connection's ``TLSFields`` are built only when something reads them (access log, proxy, mTLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import h11
from h11._headers import Headers  # a response from fields already checked skips h11's regexes: see checked()

from ..errors import TLSError
from .accesslog import AccessEntry, TLSFields, access_log
from .channel import Channel
from .exchange import Field, HTTPExchange
from .metrics import ServeMetrics
from .settings import HTTPLimits
from .target import host_name, split_target

__all__ = ["EARLY_SAFE_METHODS", "ConnectionTracker", "Exchange", "Field", "HTTPError", "Request", "Route", "Router",
           "TLSState", "checked", "serve_connection"]

_log = logging.getLogger("tlskit.serve")
FLUSH_SIZE = 1 << 16
DISCARD_TIME = 30.0  # seconds a request body the server does not read may take to finish (nginx's lingering_time)
_REASONS = {100: "Continue", 200: "OK", 206: "Partial Content", 301: "Moved Permanently", 304: "Not Modified",
            400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            410: "Gone", 411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
            414: "URI Too Long", 415: "Unsupported Media Type", 416: "Range Not Satisfiable", 417: "Expectation Failed",
            425: "Too Early", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout", 505: "HTTP Version Not Supported"}
_PHRASES = {status: phrase.encode() for status, phrase in _REASONS.items()}
EARLY_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))  # served from 0-RTT data (RFC 8470 §3; 9110 §9.2.1)
# What a request read from 0-RTT data sees of the connection until the handshake completes.
_PENDING = TLSFields(version="TLSv1.3", suite="-", group="-", sni="-", alpn="-", resumed=True, early_data=True,
                     handshake_ms=0.0, client="-")

_SERVER: Field = (b"server", b"server", b"tlskit")
_CLOSE: Field = (b"Connection", b"connection", b"close")  # as h11 spells the one it adds


def checked(headers: Sequence[tuple[str, str]]) -> tuple[Field, ...]:
    """Response header fields validated by h11 (names, values, Content-Length), to send as they are."""
    return tuple((name, name, value) for name, value in h11.Response(status_code=200, headers=list(headers)).headers)


class HTTPError(Exception):
    """Answer with ``status`` and a one-line text body (when no response has started yet)."""

    def __init__(self, status: int, headers: Sequence[tuple[str, str]] = (), detail: str = "") -> None:
        super().__init__(f"{status} {reason(status)}{': ' + detail if detail else ''}")
        self.status, self.headers, self.detail = status, tuple(headers), detail

    def log(self, request: Request) -> None:
        """Say why (INFO, as nginx's error log does for a client's bad request): the access line shows only the
        status."""
        if self.detail:
            state = request.tls_state
            sni = state.fields.sni if state.fields is not None else state.server_name()  # (0-RTT: from its hello)
            _log.info("%s %s from %s (SNI %s) answered %s", request.method, request.target, request.peer, sni, self)


_date: tuple[int, str, Field] = (0, "", (b"date", b"date", b""))


def _date_now() -> tuple[int, str, Field]:
    """The ``Date`` header value (and field), formatted once per second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date = (now, text, (b"date", b"date", text.encode()))
    return _date


def http_date() -> str:
    return _date_now()[1]


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class TLSState:
    """The connection's TLS as the HTTP layer sees it. ``fields`` is None while the connection runs on 0-RTT
    data (the handshake not complete); given ``make``, they are built on first use (the access log, the proxy
    and mTLS need them, a plain static request does not). ``early``: requests may arrive in 0-RTT data, whose
    first ``early_bytes()`` plaintext bytes were early data. ``client_auth``: the server checks client
    certificates, so the client's identity (from the resumed session) is only known once the handshake
    completes."""

    __slots__ = ("_early_bytes", "_fields", "_handshake", "_make", "client_auth", "early", "server_name")

    def __init__(self, fields: TLSFields | None = None, early_bytes: Callable[[], int] = lambda: 0,
                 handshake: Callable[[], Awaitable[TLSFields]] | None = None, *, client_auth: bool = False,
                 make: Callable[[], TLSFields | None] | None = None, early: bool | None = None,
                 server_name: Callable[[], str] = lambda: "-") -> None:
        self._fields, self._early_bytes, self._handshake, self._make = fields, early_bytes, handshake, make
        self.client_auth = client_auth
        self.server_name = server_name  # the ClientHello's SNI ("-": none) while ``fields`` is None (0-RTT)
        self.early = early if early is not None else fields is None or fields.early_data

    @property
    def fields(self) -> TLSFields | None:
        if self._fields is None and self._make is not None:
            self._fields = self._make()
        return self._fields

    def early_bytes(self) -> int:
        return self._early_bytes()

    async def complete(self) -> TLSFields:
        """The negotiated fields, waiting for the handshake if need be (its ``TLSError`` if it fails)."""
        fields = self.fields
        if fields is None:
            assert self._handshake is not None
            fields = self._fields = await self._handshake()
        return fields


@dataclass(kw_only=True, slots=True)
class Request:
    """One request as routes see it (read-only by convention: not frozen, which costs a µs per request)."""

    method: str
    target: str  # as sent: path and query, percent-encoded
    path: str  # the target's path, still percent-encoded
    host: str  # Host header without the port, lower case
    headers: list[tuple[bytes, bytes]]  # lower-case names, as h11 gives them
    http_version: str
    peer: str  # client IP address
    tls_state: TLSState
    first_on_connection: bool
    early: bool = False  # its first byte arrived in 0-RTT data: it may be a replay (RFC 8470)
    bad_target: str | None = None  # why the target cannot be routed (a 400), from ``route_target``
    raw_target: str | None = None  # HTTP/2: the :path's bytes as latin-1 for the log, when not all ASCII (h11
    # refuses such a target with a 400, logged from its bytes)

    @property
    def tls(self) -> TLSFields:
        """What the connection negotiated; ``_PENDING`` while its handshake is incomplete (0-RTT)."""
        return self.tls_state.fields or _PENDING

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


def route_target(target: str, host: str, headers: list[tuple[bytes, bytes]]) -> tuple[str, str, str | None]:
    """(path to route on, host, None) for a request target, or ("", host, why) for one answered 400
    (``target.split_target``: dot segments resolved, absolute form accepted). An absolute-form target's
    authority replaces the Host header in ``headers`` (RFC 9112 §3.2.2), so what is routed on and what an
    upstream is told agree."""
    try:
        path, host, authority = split_target(target, host)
    except ValueError as e:
        return "", host, str(e)
    if authority is not None:
        headers[:] = [(b"host", authority.encode("ascii", "replace")), *((k, v) for k, v in headers if k != b"host")]
    return path, host, None


class Route(Protocol):
    prefix: str
    hosts: tuple[str, ...]

    async def handle(self, request: Request, exchange: HTTPExchange) -> None: ...


@dataclass(frozen=True, slots=True)
class Router:
    routes: tuple[Route, ...]

    def __post_init__(self) -> None:
        ordered = sorted(self.routes, key=lambda r: (not r.hosts, -len(r.prefix)))  # host-bound, then longest
        object.__setattr__(self, "routes", tuple(ordered))

    def match(self, host: str, path: str) -> Route | None:
        for route in self.routes:
            if route.hosts and host not in route.hosts:
                continue
            if path.startswith(route.prefix) or path == route.prefix.rstrip("/"):
                return route
        return None


class ServerConnection(h11.Connection):
    """h11's server side, without validating a response a second time. h11 rebuilds every response before it
    sends it (``_clean_up_response_headers_for_sending``, for the framing and ``Connection: close``), and that
    runs its header regexes over every field again, twice when the connection closes: 10-35 µs a response,
    the largest part of h11's cost per request. The fields were validated when the response was made (by h11,
    or once per file version: ``checked``). When the framing is Content-Length and a closing connection's
    response already says ``Connection: close``, h11's rebuilt response would be the same, and it is sent as
    it is; every other response goes through h11's own clean-up. (h11 internals, 0.16: the method,
    ``Headers._full_items`` and ``_cstate.keep_alive``; test_h11_sends_the_same_bytes_without_the_clean_up
    compares the bytes with h11's own for each kind of response.)"""

    def _clean_up_response_headers_for_sending(self, response: h11.Response) -> h11.Response:
        length = closing = False
        for _, name, value in response.headers._full_items:
            if name == b"content-length":
                length = True
            elif name == b"transfer-encoding" or (name == b"connection" and value != b"close"):
                length = False
                break
            elif name == b"connection":
                closing = True
        if length and (closing or self._cstate.keep_alive):
            return response
        return super()._clean_up_response_headers_for_sending(response)

    def send_body(self, data: bytes) -> list[bytes]:
        """``send_with_data_passthrough(Data(data=data))`` without the state machine's round trip, which for the
        server's ``Data`` in SEND_BODY changes nothing (h11 0.16 ``_process_event``: no transition, the states
        already at their fixed point; keep-alive and 100-continue look at other events): only the body writer
        runs, checking Content-Length as before. In any other state, h11's own path (and its error)."""
        writer = self._writer
        if writer is None or self._cstate.states[h11.SERVER] is not h11.SEND_BODY:
            return self.send_with_data_passthrough(h11.Data(data=data)) or []
        parts: list[bytes] = []
        try:
            writer(h11.Data(data=data), parts.append)
        except BaseException:
            self._process_error(h11.SERVER)  # as h11 does: our state becomes ERROR
            raise
        return parts


class _Counting(ServerConnection):
    """Counts the bytes fed in, so a request's offset in the stream says whether it began in 0-RTT data."""

    bytes_in = 0

    def receive_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        super().receive_data(data)


class Exchange:
    """One request/response on the connection: the body as it arrives, and the response events out.

    A whole response (``respond``, ``simple``) is written at once without awaiting: the connection waits for
    a paused transport before it reads the next request. In 0-RTT the response goes out before the handshake
    completes (0.5-RTT data); the TLS transport holds it, and pauses writing, where the engine does not allow
    that yet."""

    __slots__ = ("_out", "_pending", "_received", "_tracker", "body_bytes", "channel", "close_after", "conn",
                 "limits", "status")

    def __init__(self, conn: h11.Connection, channel: Channel, limits: HTTPLimits, close_after: bool,
                 tracker: ConnectionTracker | None = None) -> None:
        self.conn, self.channel, self.limits = conn, channel, limits
        self.close_after = close_after  # at the request limit, or after an error: say Connection: close
        self._tracker = tracker  # ... and when the server started draining before the response did
        self.status = 0
        self.body_bytes = 0
        self._received = 0
        self._out: list[bytes] = []  # one TLS record and one write per response when it is small
        self._pending = 0  # body bytes in _out

    @property
    def started(self) -> bool:
        return self.status != 0

    async def receive(self, *, until: float | None = None) -> bytes | None:
        """The next part of the request body, None at its end; over ``max_body_bytes`` raises HTTPError(413).
        Each read may take ``idle_timeout``; ``until`` (the loop's clock) also bounds them all (TimeoutError)."""
        conn = self.conn
        while (event := conn.next_event()) is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:  # RFC 9110 §10.1.1: the route reads the body, so ask for it
                self._send(_CONTINUE)
                self._write()
            self.channel.set_timeout(self.limits.idle_timeout)
            if until is not None:
                self.channel.deadline = min(self.channel.deadline, until)
            data = await self.channel.read()
            if not data:  # EOF (close_notify, FIN) inside the body: the client left (499), not a malformed body
                raise ConnectionError("the client closed the connection inside a request body")
            conn.receive_data(data)
        return self._body_part(event)

    def _body_part(self, event: object) -> bytes | None:
        if type(event) is h11.Data:
            self._received += len(event.data)
            if self._received > self.limits.max_body_bytes:
                raise HTTPError(413, detail=f"body over {self.limits.max_body_bytes} bytes")
            return bytes(event.data)
        if type(event) is h11.EndOfMessage:
            return None
        raise ConnectionError("the client closed the connection inside a request body")

    async def body(self) -> AsyncIterator[bytes]:
        """The request body in chunks (see ``receive``)."""
        while (chunk := await self.receive()) is not None:
            yield chunk

    def skip_body(self) -> bool:
        """Drop the request body received so far; True when it has ended (always, for a request without one:
        no awaiting), False when more must be read (``discard_body``)."""
        conn = self.conn
        while conn.their_state is h11.SEND_BODY:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return False
            self._body_part(event)
        return True

    async def discard_body(self) -> None:
        """Read and drop the rest of the request body, for ``DISCARD_TIME`` at most in all (then TimeoutError, and
        the connection ends): a client trickling a body the server did not want, a byte within each read's
        timeout, held the connection for as long as it liked (nginx: lingering_time)."""
        until = asyncio.get_running_loop().time() + DISCARD_TIME
        while not self.skip_body() and await self.receive(until=until) is not None:
            pass

    async def start(self, status: int, headers: Sequence[tuple[str, str]], reason_phrase: str | None = None) -> None:
        """Send the response head; adds Date, Server and (when closing) Connection. A client that closed while
        the answer was prepared (a proxied request) is not answered: logged 499, as nginx does."""
        if self.channel.lost:
            raise ConnectionResetError("the client closed the connection before the response")
        phrase = None if reason_phrase is None else reason_phrase.encode("latin-1", "replace")
        self.send_head(status, list(checked(headers)), phrase)  # a list: built per request, so not cached

    def respond(self, status: int, fields: Sequence[Field], body: bytes = b"", *, send_body: bool = True) -> None:
        """A whole response from ``checked`` fields: head and body in one write. ``send_body`` is False for
        HEAD (the fields still describe the body)."""
        self.send_head(status, fields)
        if body and send_body:
            self.body_bytes += len(body)
            self._send_body(body)
        self._send(_END)
        self._write()

    async def write(self, data: bytes, *, flush: bool = False) -> None:
        """Body bytes; buffered up to ``FLUSH_SIZE`` unless ``flush`` (streaming a proxied response)."""
        self.body_bytes += len(data)
        self._pending += len(data)
        self._send_body(data)
        if flush or self._pending >= FLUSH_SIZE:
            await self.flush()

    async def end(self) -> None:
        self._send(_END)
        await self.flush()

    async def writable(self) -> int:
        """Body bytes to hand over now: any amount (``write`` waits while the transport has paused writing)."""
        return FLUSH_SIZE

    async def flush(self) -> None:
        """Write what is buffered; wait only while the transport has paused writing."""
        self._write()
        if self.channel.paused:
            await self.channel.drain()

    def simple(self, status: int, headers: Sequence[tuple[str, str]] = (), head: bool = False) -> None:
        """A complete plain-text answer such as ``404 Not Found``."""
        body = f"{status} {reason(status)}\n".encode()
        fields = [(b"content-type", b"content-type", b"text/plain; charset=utf-8"),
                  (b"content-length", b"content-length", b"%d" % len(body)), *checked(headers)]
        self.respond(status, fields, body, send_body=not head)

    def send_head(self, status: int, fields: Sequence[Field], phrase: bytes | None = None) -> None:
        """The response head from ``checked`` fields (buffered: the body follows, then ``end()``); adds Date,
        Server and (when closing) Connection."""
        self.status = status
        # Connection: close also when the client asked for it (or is HTTP/1.0): h11 would add it, rebuilding and
        # validating the whole response again (ServerConnection skips that only when it is there already)
        close = (self.close_after or not self.conn._cstate.keep_alive
                 or (self._tracker is not None and self._tracker.draining))
        self._send(_response(status, fields, close) if phrase is None else
                   _build_response(status, fields, close, phrase))

    def _send(self, event: h11.Event) -> None:
        parts = self.conn.send_with_data_passthrough(event)
        if parts:
            self._out += parts

    def _send_body(self, data: bytes) -> None:
        conn = self.conn
        if isinstance(conn, ServerConnection):
            self._out += conn.send_body(data)
        else:
            self._send(h11.Data(data=data))

    def _write(self) -> None:
        out = self._out
        if out:
            self.channel.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            self._pending = 0


_END = h11.EndOfMessage()  # events are immutable: one serves every response
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
_RESPONSES_MAX = 256
# (id of the fields, status, closing) -> (the fields, the second its Date says, the Response): a file version's
# head is built once a second. Only tuples of fields are kept (a file's are; per-request lists are built each
# time); an entry holds its fields, so their id is not reused while it is here.
_responses: dict[tuple[int, int, bool], tuple[tuple[Field, ...], int, h11.Response]] = {}


def _response(status: int, fields: Sequence[Field], close: bool) -> h11.Response:
    """The h11 Response for ``fields`` plus Date, Server and (``close``) Connection, reused within a second
    when ``fields`` is a tuple kept across requests (a file version's fields); a list is built per request."""
    if type(fields) is not tuple:
        return _build_response(status, fields, close)
    key = (id(fields), status, close)
    date = _date_now()
    known = _responses.get(key)
    if known is not None and known[1] == date[0] and known[0] is fields:
        return known[2]
    if len(_responses) >= _RESPONSES_MAX:
        _responses.clear()
    response = _build_response(status, fields, close, date=date[2])
    _responses[key] = (fields, date[0], response)
    return response


def _build_response(status: int, fields: Sequence[Field], close: bool, phrase: bytes | None = None,
                    date: Field | None = None) -> h11.Response:
    items = [*fields, date or _date_now()[2], _SERVER]
    if close:
        items.append(_CLOSE)
    return h11.Response(headers=Headers(items), status_code=status, http_version=b"1.1", _parsed=True,
                        reason=_PHRASES.get(status, b"Unknown") if phrase is None else phrase)


@dataclass(slots=True)
class _Open:
    channel: Channel
    idle: bool = True
    on_drain: Callable[[], None] | None = None  # HTTP/2: send GOAWAY, finish the streams in flight
    begun: float = 0.0  # HTTP/1.1: when the first byte of the request being read arrived (monotonic)


@dataclass(slots=True)
class ConnectionTracker:
    """The connections a server process has open, so SIGTERM can close the idle ones and wait for the rest."""

    draining: bool = False
    open: dict[int, _Open] = field(default_factory=dict)
    empty: asyncio.Event = field(default_factory=asyncio.Event)

    def drain(self) -> None:
        self.draining = True
        for entry in list(self.open.values()):
            if entry.on_drain is not None:
                entry.on_drain()
            elif entry.idle:
                entry.channel.close()
        if not self.open:
            self.empty.set()

    def add(self, channel: Channel) -> _Open:
        entry = _Open(channel)
        self.open[id(entry)] = entry
        self.empty.clear()
        return entry

    def remove(self, entry: _Open) -> None:
        self.open.pop(id(entry), None)
        if not self.open:
            self.empty.set()


async def serve_connection(channel: Channel, tls: TLSFields | TLSState, *, router: Callable[[], Router],
                           limits: HTTPLimits, tracker: ConnectionTracker, metrics: ServeMetrics | None,
                           log_access: bool) -> None:
    """Requests on one connection until either side closes, a limit is hit, or the server drains."""
    peer_address = channel.get_extra_info("peername")
    peer = str(peer_address[0]) if isinstance(peer_address, tuple) else "-"
    state = tls if isinstance(tls, TLSState) else TLSState(tls)
    kind: type[h11.Connection] = _Counting if state.early else ServerConnection
    conn = kind(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
    logged = log_access and access_log.isEnabledFor(logging.INFO)  # -q: no entry built at all
    entry = tracker.add(channel)
    if metrics:
        metrics.active.inc()
    leftover: bytes | bytearray = b""  # what h11 holds of the next request (pipelined) when it starts
    idle = False  # closed at the idle timeout: no need to wait for the client's own close (nginx does not)
    try:
        for n in range(limits.max_requests_per_connection):
            entry.idle = not leftover  # idle (SIGTERM may close it) until a byte of the next request is here
            if tracker.draining:
                break
            try:
                request_event, head_bytes = await _read_head(conn, channel, limits, leftover, entry)
            except TimeoutError:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    idle = True
                    break  # idle keep-alive connection: close quietly
                await _answer_unread(conn, channel, limits, 408, peer, state, metrics, logged,
                                     bytes(conn.trailing_data[0][:_LOGGED_LINE]), entry.begun)
                break
            except _Unreadable as e:
                await _answer_unread(conn, channel, limits, e.status, peer, state, metrics, logged, e.start,
                                     entry.begun)
                break
            if type(request_event) is not h11.Request:
                break  # ConnectionClosed
            entry.idle = False
            # where the request began: all bytes fed (skipped empty lines included) less those read for its head
            early = state.early and isinstance(conn, _Counting) and conn.bytes_in - head_bytes < state.early_bytes()
            await _exchange(conn, channel, request_event, head_bytes, peer, state, n == 0, early, router(), limits,
                            n + 1 == limits.max_requests_per_connection, tracker, metrics, logged)
            if channel.paused:  # the response is written: read the next request once the transport takes more
                await channel.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
            leftover = conn.trailing_data[0]
            if leftover[:1] == b"\r" or leftover[:1] == b"\n":  # an empty line after a body (RFC 9112 §2.2)
                conn = _restarted(conn, leftover, limits)
                leftover = conn.trailing_data[0]
    except (TimeoutError, ConnectionError, TLSError, h11.ProtocolError) as e:
        _log.debug("%s: connection ended: %s", peer, e)
    finally:
        if metrics:
            metrics.active.dec()
        # At the idle timeout, closed at once (nginx does) only if all of the last response has reached the
        # client: bytes it sends into a closed socket make the kernel reset it and drop what is still queued.
        await channel.close_gracefully(linger=not (idle and channel.unsent() == (0, 0)))
        tracker.remove(entry)


def _restarted(conn: h11.Connection, leftover: bytes | bytearray, limits: HTTPLimits) -> h11.Connection:
    """A fresh h11 connection (between requests both are idle: nothing else is lost) fed ``leftover``
    without its leading empty lines, which h11 would take for a malformed request line."""
    rest = bytes(leftover).lstrip(b"\r\n")
    fresh = type(conn)(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
    if isinstance(conn, _Counting) and isinstance(fresh, _Counting):
        fresh.bytes_in = conn.bytes_in - len(rest)  # the next request's offset (0-RTT accounting) is kept
    if rest:
        fresh.receive_data(rest)
    return fresh


class _Unreadable(Exception):
    """h11 could not parse a request head: the status to answer and the start of what was sent."""

    def __init__(self, status: int, start: bytes) -> None:
        super().__init__(status)
        self.status, self.start = status, start


async def _read_head(conn: h11.Connection, channel: Channel, limits: HTTPLimits,
                     first: bytes | bytearray, entry: _Open) -> tuple[object, int]:
    """The next event (a Request, or ConnectionClosed) and at most how many bytes its head has: idle timeout
    until the first byte, then the header timeout for the whole head. ``first``: what h11 already holds
    (``trailing_data``). ``_Unreadable`` for a malformed head."""
    buffered = len(first)
    entry.begun = time.monotonic()
    try:
        if buffered:  # pipelined: (part of) the next head is here already
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event, buffered
            channel.set_timeout(limits.header_timeout)
        else:  # nothing buffered: h11 needs data (it is idle, between requests)
            channel.set_timeout(limits.idle_timeout)
            data = await channel.read()
            entry.idle = False  # a request has begun: a drain lets it finish
            entry.begun = time.monotonic()
            while data[:1] == b"\r" or data[:1] == b"\n":  # RFC 9112 §2.2: empty lines before a request line
                stripped = data.lstrip(b"\r\n")
                if isinstance(conn, _Counting):
                    conn.bytes_in += len(data) - len(stripped)  # still counted: the 0-RTT offset stays true
                if data := stripped:
                    break
                data = await channel.read()
                if not data:
                    break
            first = data
            buffered = len(data)
            conn.receive_data(data)
            channel.set_timeout(limits.header_timeout)
            event = conn.next_event()
        while event is h11.NEED_DATA:
            data = await channel.read()
            buffered += len(data)
            conn.receive_data(data)
            event = conn.next_event()
    except h11.RemoteProtocolError as e:  # h11 consumed what it parsed: the start is the first bytes read
        raise _Unreadable(e.error_status_hint, bytes(first[:_LOGGED_LINE])) from None
    return event, buffered


async def _exchange(conn: h11.Connection, channel: Channel, event: h11.Request, head_bytes: int, peer: str,
                    state: TLSState, first: bool, early: bool, router: Router, limits: HTTPLimits, close_after: bool,
                    tracker: ConnectionTracker, metrics: ServeMetrics | None, logged: bool) -> None:
    started = time.monotonic() if metrics or logged else 0.0
    target = event.target.decode("ascii", "replace")
    headers = [(name, value) for _, name, value in event.headers._full_items]  # h11's (raw, lower, value)
    host, length, chunked, bad_host = "", None, False, None
    for name, value in headers:
        if name == b"host":
            try:
                host = host_name(value)
            except ValueError as e:
                bad_host = str(e)
        elif name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
    path, host, bad_target = route_target(target, host, headers)
    request = Request(method=event.method.decode("ascii", "replace"), target=target, path=path, host=host,
                      headers=headers, http_version=event.http_version.decode(), peer=peer, tls_state=state,
                      first_on_connection=first, early=early, bad_target=bad_host or bad_target)
    exchange = Exchange(conn, channel, limits, close_after, tracker)
    try:  # routed and answered; errors answered too (400/413/431/505/500) unless the response had begun
        try:
            if chunked and length is not None:  # RFC 9112 §6.1: a smuggling pattern (nginx: 400, and closes)
                exchange.close_after = True
                raise HTTPError(400, detail="both Content-Length and Transfer-Encoding")
            if event.http_version[:2] != b"1.":  # "HTTP/2.0" in a request line (1.x minors are served as 1.1)
                exchange.close_after = True
                raise HTTPError(505)
            # h11 bounds only a head still incomplete in its buffer; one that arrived whole is measured here.
            if head_bytes > limits.max_header_bytes and (
                    len(event.target) + sum(len(k) + len(v) + 4 for k, v in headers) > limits.max_header_bytes):
                exchange.close_after = True
                raise HTTPError(431)
            route = checked_route(request, length, router, limits)  # route_for, without a coroutine per request
            if awaits_identity(request, route):
                await request.tls_state.complete()
            await route.handle(request, exchange)
        except HTTPError as e:
            if exchange.started:
                raise ConnectionError(f"failed after the response started: {e}") from None
            e.log(request)
            exchange.close_after = exchange.close_after or e.status in (408, 413)  # the body stays unread
            exchange.simple(e.status, e.headers, head=request.method == "HEAD")
        except (TimeoutError, ConnectionError, TLSError, h11.ProtocolError):
            raise
        except Exception:  # a bug in a route must cost one request, not the server: log it, answer 500
            _log.exception("%s %s from %s failed", request.method, request.target, request.peer)
            if exchange.started:
                raise ConnectionError("failed after the response started") from None
            exchange.simple(500, head=request.method == "HEAD")
        if conn.their_state is h11.SEND_BODY and conn.our_state is h11.DONE:
            with contextlib.suppress(HTTPError):  # ready for the next request (a client that fails to send
                await exchange.discard_body()  # the rest ends the connection, after the log entry)
    finally:  # whatever happened, as nginx logs it: the status sent (and bytes), or 499 if the client left first
        if metrics or logged:
            await record_request(request, exchange.status or CLIENT_CLOSED, exchange.body_bytes, started,
                                 metrics=metrics, logged=logged)


CLIENT_CLOSED = 499  # nginx's status for a request whose client went away before the response began


async def route_for(request: Request, content_length: bytes | str | None, router: Router,
                    limits: HTTPLimits) -> Route:
    """``checked_route``, then (``awaits_identity``) the wait for the handshake to complete."""
    route = checked_route(request, content_length, router, limits)
    if awaits_identity(request, route):
        await request.tls_state.complete()
    return route


def awaits_identity(request: Request, route: Route) -> bool:
    """Under mTLS in 0-RTT, a route that passes the client's identity on waits for the handshake: the client's
    certificate, restored from its ticket, is known then (an upstream must not be told "no client
    certificate")."""
    state = request.tls_state
    return state.client_auth and state.fields is None and bool(getattr(route, "forwards_client_identity", False))


def checked_route(request: Request, content_length: bytes | str | None, router: Router, limits: HTTPLimits) -> Route:
    """The route for a request, after the checks both HTTP versions make: 413 for a declared body over the
    limit, 425 for what is not replay-safe in 0-RTT data (RFC 8470), 404 without a route."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limits.max_body_bytes:
        raise HTTPError(413, detail=f"body over {limits.max_body_bytes} bytes")
    if request.bad_target is not None:
        raise HTTPError(400, detail=request.bad_target)
    if request.early and request.method not in EARLY_SAFE_METHODS:
        raise HTTPError(425, detail="not replay-safe: send it again now that the handshake is complete")
    route = router.match(request.host, request.path) if request.path.startswith("/") else None
    if route is None:
        raise HTTPError(404)
    return route


async def record_request(request: Request, status: int, size: int, started: float, *,
                         metrics: ServeMetrics | None, logged: bool) -> None:
    """Count an answered request in the metrics and write its access log entry (combined format + TLS fields,
    with ``early`` saying whether this request, not just its connection, came in 0-RTT data)."""
    if metrics:
        metrics.requests.labels(str(status)).inc()
        metrics.request_seconds.observe(time.monotonic() - started)
    if logged:
        try:
            fields = await request.tls_state.complete()
        except (TLSError, ConnectionError):  # a 0-RTT request whose handshake failed: logged all the same
            fields = _PENDING
        if fields.early_data and not request.early:
            fields = dataclasses.replace(fields, early_data=False)
        access = AccessEntry(peer=request.peer, time=time.time(), method=request.method,
                             target=request.raw_target or request.target,
                             http_version=request.http_version, status=status, size=size,
                             referer=request.header(b"referer") or "-", user_agent=request.header(b"user-agent") or "-",
                             request_ms=round((time.monotonic() - started) * 1000, 3), tls=fields)
        access_log.info("%s", access, extra={"access": access})  # formatted by the handler: combined()


async def _answer_unread(conn: h11.Connection, channel: Channel, limits: HTTPLimits, status: int, peer: str,
                         state: TLSState, metrics: ServeMetrics | None, logged: bool, start: bytes,
                         begun: float) -> None:
    """408/400/431/501 for a request we could not read, logged and counted like any answer (its first line as
    far as it came, from ``start``, as nginx logs it; its time from ``begun``, its first byte); the connection
    closes after it."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    line = start.partition(b"\r\n")[0].partition(b"\n")[0]
    exchange = Exchange(conn, channel, limits, close_after=True)
    with contextlib.suppress(h11.LocalProtocolError, ConnectionError, TLSError):
        exchange.simple(status)
    if metrics:
        metrics.requests.labels(str(status)).inc()
    if logged:
        fields = await state.complete()
        access = AccessEntry(peer=peer, time=time.time(), method="-", target="-", http_version="-", status=status,
                             size=exchange.body_bytes, referer="-", user_agent="-",
                             request_ms=round((time.monotonic() - begun) * 1000, 3), tls=fields,
                             request_line=line.decode("latin-1"))
        access_log.info("%s", access, extra={"access": access})


_LOGGED_LINE = 1024  # bytes of an unreadable request's first line that reach the access log
