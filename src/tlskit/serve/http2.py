"""HTTP/2 (RFC 9113) on the ``h2`` package for one TLS connection whose ALPN is "h2": each stream a request.

Opt-in: the server offers "h2" only when ``alpn`` lists it. Every stream runs the same routes as HTTP/1.1 in
its own task, through ``StreamExchange`` (the ``HTTPExchange`` the routes know), at most
``MAX_CONCURRENT_STREAMS`` at once (more are refused: REFUSED_STREAM, §5.1.2). Response bodies respect the
client's flow-control windows (a whole response from ``respond`` goes out as far as the windows allow and the rest
when they open); request body bytes are acknowledged as the route consumes them. A RST_STREAM from the client
cancels its stream's task; a malformed request (§8.1.1: h2's header checks, made here) gets RST_STREAM with
PROTOCOL_ERROR, and the connection goes on (but not for a Content-Length that is no number or that the DATA
frames contradict: h2 checks that inside ``receive_data`` and ends the connection).

Limits from ``HTTPLimits``: SETTINGS_MAX_HEADER_LIST_SIZE is ``max_header_bytes`` and a larger header list gets 431
on its stream (up to ``HEADER_LIST_DECODED`` times that; beyond, the connection ends, see ``_Connection.run``),
bodies over ``max_body_bytes`` get 413, a connection without streams closes after ``idle_timeout`` (GOAWAY), and
so does one whose client keeps a window shut that long. A protocol error from the client is answered by h2's
GOAWAY, then the connection closes. SIGTERM (``ConnectionTracker.drain``) sends GOAWAY naming the last stream
accepted, finishes the streams in flight and refuses newer ones (REFUSED_STREAM: the client retries them
elsewhere); a GOAWAY from the client does the same (§6.8). h2 cannot send after its own GOAWAY, so the draining
one is written with hyperframe and h2's final GOAWAY follows the last stream; the client's never reaches h2
(``InboundFrames``).

0-RTT (RFC 8470): a stream whose HEADERS were read in a chunk that began within the early data counts as
early (conservative: a chunk straddling the end of early data marks its streams early); only GET, HEAD and
OPTIONS are served from it, anything else gets 425.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.utilities import HeaderValidationFlags, validate_headers
from hyperframe.frame import GoAwayFrame

from ..errors import TLSError
from . import http1
from .accesslog import access_log
from .channel import Channel
from .exchange import Field
from .h2frames import H2ServerConnection, InboundFrames
from .http1 import ConnectionTracker, HTTPError, Request, Router, TLSState, checked, record_request, route_for
from .metrics import ServeMetrics
from .settings import HTTPLimits
from .target import host_name

__all__ = ["MAX_CONCURRENT_STREAMS", "StreamExchange", "serve_h2_connection"]

_log = logging.getLogger("tlskit.serve")
MAX_CONCURRENT_STREAMS = 100
# Frames that carry nothing (empty DATA, WINDOW_UPDATE, PRIORITY, SETTINGS, PING, unknown types) cost us far more
# than the client (CVE-2019-9518/-9515/-9512): beyond this many, plus what its use explains (requests; two
# WINDOW_UPDATEs per DATA frame sent), the connection ends with ENHANCE_YOUR_CALM (RFC 9113 §10.5; nginx: "http2
# flood detected").
IDLE_FRAMES = 10_000
MAX_CLIENT_RESETS = 200  # streams in flight a client may cancel (if they are half its streams or more): then GOAWAY
# What h2 enforces: over it, in one receive_data, h2 ends the connection (it raises before decoding the HEADERS
# block). So h2 is fed at most MAX_CONCURRENT_STREAMS header blocks at a time (``InboundFrames``) and ``_request``
# refuses the streams over MAX_CONCURRENT_STREAMS between: h2 holds at most the streams accepted plus one run's
# open (§5.1.2: REFUSED_STREAM for each, however many come in one read; a flood of them ends the connection all
# the same, in ``_costly``).
_H2_STREAM_CEILING = MAX_CONCURRENT_STREAMS + MAX_CLIENT_RESETS
HEADER_LIST_DECODED = 4  # header lists up to 4 times max_header_bytes get 431; larger ones end the connection
CONNECTION_WINDOW = 1 << 24  # receive window for the whole connection: a stalled stream does not block the rest
_SERVER = (b"server", b"tlskit")
_NO_CONTENT = (204, 304)  # statuses whose responses have no content (RFC 9110 §15.3.5, §15.4.5)
_PSEUDO = (b":method", b":scheme", b":authority", b":path")
_Failed = (TimeoutError, ConnectionError, TLSError, h2.exceptions.ProtocolError)
_REQUEST = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
_TRAILERS = _REQUEST._replace(is_trailer=True)


class _StreamFailed(Exception):
    """The stream cannot continue (the response already started): reset it with ``error_code`` (RFC 9113 §7)."""

    def __init__(self, why: str, error_code: ErrorCodes = ErrorCodes.INTERNAL_ERROR) -> None:
        super().__init__(why)
        self.error_code = error_code


class StreamExchange:
    """One stream's request body in and response out; the ``HTTPExchange`` routes use, plus ``simple``."""

    __slots__ = ("_chunks", "_end", "_ended", "_in_end", "_out", "_received", "_window", "arrived", "body_bytes",
                 "conn", "expects_continue", "head", "status", "stream_id")

    def __init__(self, conn: _Connection, stream_id: int, in_end: bool, expects_continue: bool = False) -> None:
        self.conn, self.stream_id = conn, stream_id
        self.expects_continue = expects_continue and not in_end  # "Expect: 100-continue" not answered yet
        self.status = 0
        self.head = False  # the request is HEAD: its response has no content
        self.body_bytes = 0
        self._received = 0
        self._chunks: deque[tuple[bytes, int]] = deque()  # request body: (data, flow-controlled length)
        self._in_end = in_end  # the client ended its side (END_STREAM)
        self.arrived = asyncio.Event()  # body data or its end arrived
        self._out: deque[bytes] = deque()  # response body waiting for the client's window
        self._end = False  # the response ends after _out
        self._ended = False  # END_STREAM sent
        self._window = asyncio.Event()  # the client's window for this stream (or the connection) grew

    # --- the request body --------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.status != 0

    def feed(self, data: bytes, flow_length: int, end: bool) -> None:
        if data or flow_length:
            self._chunks.append((data, flow_length))
        self._in_end = self._in_end or end
        self.arrived.set()

    async def receive(self, *, until: float | None = None) -> bytes | None:
        """The next part of the request body, None at its end; over ``max_body_bytes`` raises HTTPError(413).
        Each wait may take ``idle_timeout``; ``until`` (the loop's clock) also bounds them all (TimeoutError)."""
        limits = self.conn.limits
        while not self._chunks:
            if self._in_end:
                return None
            if self.expects_continue and not self.status:  # RFC 9110 §10.1.1: the route reads the body, so ask
                self.expects_continue = False
                self.conn.h2.send_headers(self.stream_id, [(b":status", b"100")])
                self.conn.send()
            self.arrived.clear()
            wait = limits.idle_timeout
            if until is not None and (wait := min(wait, until - asyncio.get_running_loop().time())) <= 0:
                raise TimeoutError("the request body did not end in time")
            await asyncio.wait_for(self.arrived.wait(), wait)
        data, flow_length = self._chunks.popleft()
        self.conn.acknowledge(self.stream_id, flow_length)
        self._received += len(data)
        if self._received > limits.max_body_bytes:
            raise HTTPError(413, detail=f"body over {limits.max_body_bytes} bytes")
        return data

    async def body(self) -> AsyncIterator[bytes]:
        while (chunk := await self.receive()) is not None:
            yield chunk

    def skip_body(self) -> bool:
        while self._chunks:
            self.conn.acknowledge(self.stream_id, self._chunks.popleft()[1])
        return self._in_end

    async def discard_body(self) -> None:
        """Drop the rest of the request body, for ``http1.DISCARD_TIME`` at most in all, as over HTTP/1.1; then
        the stream is reset (CANCEL): a body trickling in held its stream, and the connection, for ever."""
        until = asyncio.get_running_loop().time() + http1.DISCARD_TIME
        try:
            while not self.skip_body() and await self.receive(until=until) is not None:
                pass
        except TimeoutError:
            raise _StreamFailed("the request body it did not want did not end in time", ErrorCodes.CANCEL) from None

    # --- the response ------------------------------------------------------------------------------

    async def start(self, status: int, headers: Sequence[tuple[str, str]], reason_phrase: str | None = None) -> None:
        """The response head (HTTP/2 has no reason phrase); fields are checked as for HTTP/1.1."""
        self.send_head(status, checked(headers))

    def send_head(self, status: int, fields: Sequence[Field], phrase: bytes | None = None, *,
                  end: bool = False) -> None:
        """The HEADERS frame; it carries END_STREAM when the response has no content (RFC 9113 §8.1: no empty
        DATA frame after it, as nginx): the answer to HEAD, 204, 304 (RFC 9110 §6.4.1) or Content-Length: 0."""
        end = end or self.head or status in _NO_CONTENT or any(
            name == b"content-length" and value.strip() == b"0" for _, name, value in fields)
        self.status = status
        headers = [(b":status", b"%d" % status), *((name, value) for _, name, value in fields),
                   (b"date", http1.http_date().encode()), _SERVER]
        self.conn.h2.send_headers(self.stream_id, headers, end_stream=end)
        self._ended = end
        self.conn.send()

    def respond(self, status: int, fields: Sequence[Field], body: bytes = b"", *, send_body: bool = True) -> None:
        """Head and as much of the body as the client's windows take now; ``finish`` sends the rest."""
        self.send_head(status, fields, end=not (body and send_body))
        if self._ended:  # (a response without content: its fields describe the body, which is not sent)
            return
        self._out.append(body)
        self._end = True
        self._push()

    def simple(self, status: int, headers: Sequence[tuple[str, str]] = (), head: bool = False) -> None:
        body = f"{status} {http1.reason(status)}\n".encode()
        fields = [(b"content-type", b"content-type", b"text/plain; charset=utf-8"),
                  (b"content-length", b"content-length", b"%d" % len(body)), *checked(headers)]
        self.respond(status, fields, body, send_body=not head)

    async def write(self, data: bytes, *, flush: bool = False) -> None:
        """Body bytes, sent as the windows allow (``flush`` changes nothing: DATA frames go out at once)."""
        if data and self._ended:  # as h11 refuses them over HTTP/1.1 (a route's bug: the stream is reset)
            raise _StreamFailed(f"{len(data)} body bytes for a response without content")
        if data:
            self._out.append(data)
        await self.flush()

    async def end(self) -> None:
        self._end = True
        await self.flush()

    async def flush(self) -> None:
        """Send what waits for the client's windows; the client must open them within ``idle_timeout``."""
        conn = self.conn
        while True:
            self._window.clear()  # before pushing: a WINDOW_UPDATE from here on is not missed
            self._push()
            if conn.channel.paused:
                await conn.writable()
                continue  # windows may have opened meanwhile: push again
            if not self._out:
                return
            await self._window_opens()

    async def writable(self) -> int:
        """Body bytes the client's windows take now, at least one: what waits goes first, then this waits for
        the windows as ``flush`` does. A route that reads what it sends (``static.send_file``) reads no more: a
        client opening 100 streams with its windows shut had each hold a 64 KiB chunk, 7.5 MB a connection."""
        await self.flush()
        h2c, sid = self.conn.h2, self.stream_id
        while True:
            self._window.clear()
            if (room := h2c.local_flow_control_window(sid)) > 0:
                return room
            await self._window_opens()

    async def _window_opens(self) -> None:
        try:
            await asyncio.wait_for(self._window.wait(), self.conn.limits.idle_timeout)
        except TimeoutError:
            # CANCEL (§7: the stream is no longer needed), not INTERNAL_ERROR: nothing failed here, and the client
            # broke no rule (nginx says PROTOCOL_ERROR for its send_timeout, though keeping a window shut is legal)
            raise _StreamFailed("the client kept its flow-control window shut", ErrorCodes.CANCEL) from None

    async def finish(self) -> None:
        """After the route: the rest of a ``respond`` body, END_STREAM if the route did not send it."""
        if not self._ended:
            self._end = True
            await self.flush()

    def window_opened(self) -> None:
        self._window.set()

    def _push(self) -> None:
        """DATA frames for what the windows allow now, END_STREAM after the last when the response ends; none
        while the transport has paused writing (a client that reads nothing and opens its windows wide had
        every stream queue a 64 KiB chunk: 13 MB per connection; the stream's ``flush`` waits instead)."""
        conn = self.conn
        h2c, sid, out = conn.h2, self.stream_id, self._out
        queued = 0
        while out and not conn.channel.paused:
            size = min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size)
            if size <= 0:
                break
            chunk = out[0]
            if len(chunk) > size:
                out[0] = chunk[size:]
                chunk = chunk[:size]
            else:
                out.popleft()
            last = self._end and not out
            h2c.send_data(sid, chunk, end_stream=last)
            conn.data_frames += 1
            self.body_bytes += len(chunk)  # sent, as nginx's $body_bytes_sent (not what waits for the window)
            self._ended = last
            queued += len(chunk)
            if queued >= _PUSH_BATCH:  # written in batches: the transport pauses past its high-water mark
                conn.send()
                queued = 0
        if self._end and not out and not self._ended:
            h2c.end_stream(sid)
            self._ended = True
        conn.send()


def _taken(future: asyncio.Future[None]) -> None:
    """Mark a shared future's outcome as seen (no "Task exception was never retrieved" for a lost connection)."""
    if not future.cancelled():
        future.exception()


_PUSH_BATCH = 1 << 16  # DATA bytes handed to the transport at once (frames coalesce into full TLS records)


class _Connection:
    """The h2 state machine over one ``Channel``: reads frames, starts a task per stream, writes frames."""

    def __init__(self, channel: Channel, state: TLSState, router: Callable[[], Router], limits: HTTPLimits,
                 tracker: ConnectionTracker, metrics: ServeMetrics | None, logged: bool, peer: str) -> None:
        self.channel, self.state, self.router, self.limits = channel, state, router, limits
        self.tracker, self.metrics, self.logged, self.peer = tracker, metrics, logged, peer
        # h2's header checks raise out of receive_data as a connection error: ``_request`` makes them, per stream
        self.h2 = H2ServerConnection(config=h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False))
        self.inbound = InboundFrames(blocks_per_part=MAX_CONCURRENT_STREAMS)
        self.streams: dict[int, StreamExchange] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.last_stream = 0  # the highest stream id accepted (named in the draining GOAWAY)
        self.requests = 0  # streams opened by the client
        self.resets = 0  # streams that cost us and served nothing: reset by the client in flight, refused, malformed
        self.refused: dict[str, int] = {}  # streams refused before any response, by why (``_refused``)
        self.data_frames = 0  # DATA frames sent: each may earn a stream and a connection WINDOW_UPDATE
        self.draining = False
        self.closed = False
        self.bytes_in = 0
        self._drain: asyncio.Future[None] | None = None

    def send(self) -> None:
        """Write what h2 has queued (after the final GOAWAY, nothing more)."""
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.channel.write(data)

    def acknowledge(self, stream_id: int, flow_length: int) -> None:
        """Received data was consumed: give the client its window back (stream and connection)."""
        if flow_length and not self.closed:
            self.h2.acknowledge_received_data(flow_length, stream_id)
            self.send()

    async def writable(self) -> None:
        """Wait while the transport has paused writing: one task awaits the channel, the others its result."""
        if self._drain is None or self._drain.done():
            self._drain = asyncio.ensure_future(self.channel.drain())
            self._drain.add_done_callback(_taken)  # its error is taken even when every waiter was cancelled
        await asyncio.shield(self._drain)

    def close(self, error: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """h2's GOAWAY, then close the connection."""
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=error, last_stream_id=self.last_stream)
        with contextlib.suppress(ConnectionError):
            self.send()
        self.closed = True
        self.channel.close()

    def drain(self) -> None:
        """SIGTERM: GOAWAY now, in-flight streams finish, newer ones are refused; close after the last."""
        if self.draining or self.closed:
            return
        self.draining = True
        if not self.streams:
            self.close()
            return
        goaway = GoAwayFrame(stream_id=0, last_stream_id=self.last_stream, error_code=ErrorCodes.NO_ERROR)
        self.send()
        with contextlib.suppress(ConnectionError):
            self.channel.write(goaway.serialize())

    async def run(self) -> None:
        h2c, channel, limits = self.h2, self.channel, self.limits
        h2c.local_settings = _settings(MAX_CONCURRENT_STREAMS, limits)
        h2c.initiate_connection()  # advertises these
        # h2 raises TooManyStreamsError over its limit before it decodes the HEADERS block: a connection error, as
        # ignoring the block would leave the HPACK tables out of step. So h2 holds a higher ceiling (settings
        # replaced, not updated: nothing waits for an ACK) and ``_request`` refuses the streams between.
        h2c.local_settings = _settings(_H2_STREAM_CEILING, limits)
        # The decoder stops as soon as the list outgrows this, mid-block: the entries the rest of the block adds to
        # the dynamic table are missing, so only a connection error (h2's, ENHANCE_YOUR_CALM) can follow. Lists
        # over max_header_bytes but under this are decoded whole and get 431 (§10.5.1), the connection goes on;
        # decoding any list whole would let an HPACK bomb (indexed references to a large entry) cost unbounded memory.
        h2c.decoder.max_header_list_size = HEADER_LIST_DECODED * limits.max_header_bytes
        h2c.increment_flow_control_window(CONNECTION_WINDOW - h2c.inbound_flow_control_window)
        self.send()
        if self.tracker.draining:
            self.drain()
        inbound = self.inbound
        while not self.closed:
            if channel.paused:  # the client reads nothing: read no more requests, PINGs or SETTINGS meanwhile
                await self.writable()
                if self.closed:
                    break
            # a header block left open holds the HPACK state of the connection: it has header_timeout to end, as
            # a request head has over HTTP/1.1 (else one CONTINUATION a minute kept it open for an hour)
            block_left = inbound.block_since + limits.header_timeout - time.monotonic() if inbound.in_block \
                else limits.idle_timeout
            channel.set_timeout(max(0.001, min(limits.idle_timeout, block_left)))
            try:
                data = await channel.read()
            except TimeoutError:
                if inbound.in_block:
                    self._give_up(ErrorCodes.PROTOCOL_ERROR, "a header block did not end within header_timeout")
                    break
                if self.streams:
                    continue  # streams bound their own waits
                self.close()
                break
            if not data:
                break
            start, self.bytes_in = self.bytes_in, self.bytes_in + len(data)
            early = self.state.early and start < self.state.early_bytes()
            parts = inbound.split(data, h2c.max_inbound_frame_size)
            if inbound.malformed:
                self._give_up(ErrorCodes.FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
                break
            if inbound.block_bytes > HEADER_LIST_DECODED * limits.max_header_bytes:  # encoded: decoding only grows it
                self._give_up(ErrorCodes.ENHANCE_YOUR_CALM, f"a header block of over {inbound.block_bytes} bytes")
                break
            if self._flooded():
                break
            for part in parts:
                if self.closed:
                    break
                if isinstance(part, GoAwayFrame):
                    _log.debug("%s: GOAWAY from the client, error code %d", self.peer, part.error_code)
                    # §6.8: its last stream id names streams we opened (none: we never push), not the client's; so
                    # as for SIGTERM, every stream in flight is answered and newer ones are refused, then we close
                    self.drain()
                    continue
                try:
                    events = h2c.receive_data(part)
                except h2.exceptions.ProtocolError as e:
                    _log.debug("%s: HTTP/2 protocol error: %s", self.peer, e)
                    if h2c.state_machine.state is not h2.connection.ConnectionState.CLOSED:
                        h2c.close_connection(error_code=e.error_code)  # a bad preface: h2 raises before its GOAWAY
                    self.send()  # the GOAWAY with the error
                    if h2c.highest_inbound_stream_id > self.last_stream:
                        # h2's GOAWAY named the highest stream it saw, but the streams of this read before the bad
                        # frame were never started: a second GOAWAY (§6.8: the id may only go down) says so, and
                        # the client may retry them
                        with contextlib.suppress(ConnectionError):
                            channel.write(GoAwayFrame(stream_id=0, last_stream_id=self.last_stream,
                                                      error_code=e.error_code).serialize())
                    self.closed = True
                    channel.close()
                    break
                for event in events:
                    if self.closed:  # h2 has sent its GOAWAY (rapid reset): it would refuse to reset streams
                        break
                    self._event(event, early)
            if not self.closed and self._flooded():  # (DATA on closed streams is counted as h2 meets it)
                break
            self.send()

    def _flooded(self) -> bool:
        """Too many frames that carry nothing for what the client's use explains: GOAWAY ENHANCE_YOUR_CALM."""
        idle = self.inbound.idle + self.h2.closed_stream_data
        if idle <= IDLE_FRAMES + 100 * self.requests + 2 * self.data_frames:
            return False
        self._give_up(ErrorCodes.ENHANCE_YOUR_CALM, f"a flood of {idle} frames that carry nothing (empty DATA, "
                                                    "WINDOW_UPDATE, PRIORITY, SETTINGS, PING, DATA on closed streams)")
        return True

    def _event(self, event: h2.events.Event, early: bool) -> None:
        match event:
            case h2.events.RequestReceived(stream_id=int(sid)):
                self._request(sid, event, early)
            case h2.events.DataReceived(stream_id=int(sid)):
                stream = self.streams.get(sid)
                if stream is not None:
                    stream.feed(event.data or b"", event.flow_controlled_length or 0, bool(event.stream_ended))
                else:
                    self.acknowledge(sid, event.flow_controlled_length or 0)
            case h2.events.StreamEnded(stream_id=int(sid)):
                if (stream := self.streams.get(sid)) is not None:
                    stream.feed(b"", 0, True)
            case h2.events.TrailersReceived(stream_id=int(sid)):
                # malformed, or over the header list limit (the response may have started: no 431 then)
                if (not _valid(event.headers, _TRAILERS, self.peer)
                        or header_list_size(event.headers or ()) > self.limits.max_header_bytes):
                    if self._abort(sid):  # before the route takes the body as complete
                        self._costly()  # as a reset by the client: a flood of them is rapid reset too
                    self._refuse(sid, ErrorCodes.PROTOCOL_ERROR)
            case h2.events.StreamReset(stream_id=int(sid)):
                if self._abort(sid):  # the client gave up on it
                    self._costly()
            case h2.events.WindowUpdated(stream_id=sid):
                streams = self.streams.values() if not sid else [s for s in (self.streams.get(sid),) if s]
                for stream in streams:
                    stream.window_opened()
            case h2.events.RemoteSettingsChanged():
                for stream in self.streams.values():  # INITIAL_WINDOW_SIZE may have grown every window
                    stream.window_opened()

    def _request(self, sid: int, event: h2.events.RequestReceived, early: bool) -> None:
        self.requests += 1
        if self.draining or self.closed:
            self._refused(sid, event, "after GOAWAY", ErrorCodes.REFUSED_STREAM)
            self._costly()  # draining can last (a slow stream in flight): new streams stay bounded
            return
        # §5.1.2 counts open and half-closed streams: one whose END_STREAM went both ways is closed, though its
        # task may still be tidying up (a proxied stream closing its upstream connection); counting the tasks
        # refused streams of clients that kept to the limit (found with nghttp). The streams accepted before this
        # one, not all h2 has seen: of a burst in one read, the last ones are refused.
        h2_streams = self.h2.streams
        if len(self.tasks) >= _H2_STREAM_CEILING or sum(  # (tasks tidying up are bounded too)
                1 for other in self.streams if (st := h2_streams.get(other)) is not None and st.open) \
                >= MAX_CONCURRENT_STREAMS:  # a stream error: the client may retry it
            self._refused(sid, event, "over SETTINGS_MAX_CONCURRENT_STREAMS", ErrorCodes.REFUSED_STREAM)
            self._costly()
            return
        if header_list_size(event.headers or ()) > self.limits.max_header_bytes:
            # answered 431 without h2's checks of the whole list: in Python they cost 7 requests' worth for a list
            # an HPACK reference made 60 KB out of a few bytes; and it counts as a stream that served nothing
            self._costly()
            if self.closed:
                return
        elif not _valid(event.headers, _REQUEST, self.peer):  # §8.1.1: malformed, a stream error
            self._refused(sid, event, "malformed", ErrorCodes.PROTOCOL_ERROR)
            self._costly()
            return
        self.last_stream = max(self.last_stream, sid)
        expects = any(name == b"expect" and value.lower() == b"100-continue" for name, value in event.headers or ())
        stream = StreamExchange(self, sid, bool(event.stream_ended), expects)
        self.streams[sid] = stream
        task = asyncio.get_running_loop().create_task(
            self._serve(stream, list(event.headers or ()), early, not event.stream_ended))
        self.tasks[sid] = task
        # A task cancelled before its first step (HEADERS and RST_STREAM in one read) never runs its finally:
        # the stream is forgotten here, whatever happened to the task.
        task.add_done_callback(lambda _: self._forget(stream))

    def _refuse(self, sid: int, error: ErrorCodes) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError):  # the client reset it in the same read
            self.h2.reset_stream(sid, error)

    def _refused(self, sid: int, event: h2.events.RequestReceived, why: str, error: ErrorCodes) -> None:
        """Reset a stream no response was started for, and count it for ``log_refused``. Not in the access log:
        no status was sent (one made up would skew the per-status metrics too), a REFUSED_STREAM request is
        retried by the client (§8.7: not processed), so it would be logged twice, and nginx logs none either."""
        self._refuse(sid, error)
        self.refused[why] = self.refused.get(why, 0) + 1
        if _log.isEnabledFor(logging.DEBUG):
            pseudo = {name: value for name, value in event.headers or () if name in (b":method", b":path")}
            _log.debug("%s sni=%s: HTTP/2 stream %d refused (%s, %s): %r %r", self.peer, self._sni(),
                       sid, why, error.name, pseudo.get(b":method"), pseudo.get(b":path"))

    def log_refused(self) -> None:
        """One line per connection that had streams refused, when it ends (a line per stream: debug level)."""
        if self.refused:
            counts = ", ".join(f"{count} {why}" for why, count in self.refused.items())
            _log.info("%s sni=%s: HTTP/2 streams refused: %s", self.peer, self._sni(), counts)

    def _sni(self) -> str:
        fields = self.state.fields  # (the ClientHello's name is gone once the handshake is over)
        return fields.sni if fields is not None else self.state.server_name()

    def _abort(self, sid: int) -> bool:
        """Cancel a stream's task; it stops counting against ``MAX_CONCURRENT_STREAMS`` at once, as the client
        may open the next (the task is forgotten when it has ended). False if the stream was not in flight."""
        task, stream = self.tasks.get(sid), self.streams.pop(sid, None)
        if task is None or stream is None:
            return False
        task.cancel()
        return True

    def _give_up(self, error: ErrorCodes, why: str) -> None:
        """End the connection with GOAWAY ``error`` (the client broke a limit that keeps the server safe)."""
        _log.info("%s: HTTP/2 connection ended: %s", self.peer, why)
        self.send()
        with contextlib.suppress(ConnectionError):  # written past h2, which waits for the block's CONTINUATION
            self.channel.write(GoAwayFrame(stream_id=0, last_stream_id=self.last_stream, error_code=error).serialize())
        self.closed = True
        self.channel.close()

    def _costly(self) -> None:
        """One more stream that cost us and served nothing: hundreds of them, half the client's or more, end the
        connection (rapid reset, CVE-2023-44487: opening and cancelling streams costs us, not the client)."""
        self.resets += 1
        if self.resets > MAX_CLIENT_RESETS and 2 * self.resets > self.requests:
            self.h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            self.send()
            self.closed = True
            self.channel.close()

    def _forget(self, stream: StreamExchange) -> None:
        self.streams.pop(stream.stream_id, None)
        self.tasks.pop(stream.stream_id, None)
        stream.skip_body()
        if self.draining and not self.streams:
            self.close()

    async def _serve(self, stream: StreamExchange, raw: list[tuple[bytes, bytes]], early: bool, body: bool) -> None:
        started = time.monotonic()
        request = _request(raw, self.peer, self.state, early, stream.stream_id == 1, body)
        oversized = header_list_size(raw) > self.limits.max_header_bytes
        stream.head = request.method == "HEAD"
        try:
            await self._exchange(request, stream, oversized)
            await stream.finish()
            if not stream._in_end:  # answered before the whole body came: the client may stop (§8.1)
                self.h2.reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
                self.send()
        except (_StreamFailed, *_Failed) as e:
            _log.debug("%s: stream %d failed: %s", self.peer, stream.stream_id, e)
            with contextlib.suppress(*_Failed):
                if not self.closed:
                    code = e.error_code if isinstance(e, _StreamFailed) else ErrorCodes.INTERNAL_ERROR
                    self.h2.reset_stream(stream.stream_id, code)
                    self.send()
        finally:  # also when the client reset the stream or closed the connection (the task is cancelled then)
            self._forget(stream)
            await record_request(request, stream.status or http1.CLIENT_CLOSED, stream.body_bytes, started,
                                 metrics=self.metrics, logged=self.logged)

    async def _exchange(self, request: Request, stream: StreamExchange, oversized: bool) -> None:
        """Route the request; errors answered as HTTP/1.1 answers them (a started response: reset instead)."""
        head = request.method == "HEAD"
        try:
            if oversized:
                raise HTTPError(431, detail=f"header list over {self.limits.max_header_bytes} bytes")
            route = await route_for(request, request.header(b"content-length"), self.router(), self.limits)
            await route.handle(request, stream)
        except HTTPError as e:
            if stream.started:
                raise _StreamFailed(f"failed after the response started: {e}") from None
            e.log(request)
            stream.simple(e.status, e.headers, head=head)
        except (*_Failed, _StreamFailed):
            raise
        except Exception:  # a bug in a route costs one stream: log it, answer 500
            _log.exception("%s %s from %s failed (HTTP/2)", request.method, request.target, self.peer)
            if stream.started:
                raise _StreamFailed("failed after the response started") from None
            stream.simple(500, head=head)


def _valid(headers: Sequence[tuple[bytes, bytes]] | None, flags: HeaderValidationFlags, peer: str) -> bool:
    """h2's checks of a received header list (RFC 9113 §8.2, §8.3), made here so that one failing costs a stream."""
    try:
        for _ in validate_headers(headers or (), flags):
            pass
    except h2.exceptions.ProtocolError as e:
        _log.debug("%s: malformed header list: %s", peer, e)
        return False
    return True


def header_list_size(headers: Sequence[tuple[bytes, bytes]]) -> int:
    """The size SETTINGS_MAX_HEADER_LIST_SIZE limits (RFC 9113 §6.5.2): names, values and 32 octets a field,
    counting each crumb of a cookie h2 has joined (§8.2.3) as the field it arrived as."""
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 32
        if name == b"cookie":
            size += value.count(b"; ") * (32 + len(name) - 2)  # a crumb each: its own name and overhead, less "; "
    return size


def _settings(concurrent_streams: int, limits: HTTPLimits) -> h2.settings.Settings:
    return h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: concurrent_streams,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes})


def _request(raw: list[tuple[bytes, bytes]], peer: str, state: TLSState, early: bool, first: bool,
             body: bool) -> Request:
    """The ``Request`` for a stream's header list (``_valid`` has checked the pseudo-headers, RFC 9113 §8.3).

    Cookie fields are joined (§8.2.3) and ``:authority`` becomes Host, as an HTTP/1.1 request carries them;
    a body without Content-Length is presented as ``Transfer-Encoding: chunked`` (which HTTP/2 clients may
    not send), so a proxy re-frames it for an HTTP/1.1 upstream."""
    pseudo: dict[bytes, bytes] = {}
    headers: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    for name, value in raw:
        if name in _PSEUDO:
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)
        else:
            headers.append((name, value))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    authority = pseudo.get(b":authority")
    if authority is not None and not any(name == b"host" for name, _ in headers):
        headers.insert(0, (b"host", authority))
    if body and not any(name == b"content-length" for name, _ in headers):
        headers.append((b"transfer-encoding", b"chunked"))
    bad_host = None
    try:
        host = host_name(next((v for k, v in headers if k == b"host"), b""))
    except ValueError as e:
        host, bad_host = "", str(e)
    raw_path = pseudo.get(b":path", b"")
    target = raw_path.decode("ascii", "replace")
    path, host, bad_target = http1.route_target(target, host, headers)
    bad_target = bad_host or bad_target
    if not target.startswith("/") and target != "*":  # RFC 9113 §8.3.1: origin form (or "*" for OPTIONS) only
        path, bad_target = "", ":path is not in origin form"
    return Request(method=pseudo.get(b":method", b"").decode("ascii", "replace"), target=target, path=path,
                   host=host, headers=headers, http_version="2.0", peer=peer, tls_state=state,
                   first_on_connection=first, early=early, bad_target=bad_target,
                   raw_target=None if raw_path.isascii() else raw_path.decode("latin-1"))


async def serve_h2_connection(channel: Channel, state: TLSState, *, router: Callable[[], Router],
                              limits: HTTPLimits, tracker: ConnectionTracker, metrics: ServeMetrics | None,
                              log_access: bool) -> None:
    """Streams on one connection until either side closes, it idles out, or the server has drained it."""
    peer_address = channel.get_extra_info("peername")
    peer = str(peer_address[0]) if isinstance(peer_address, tuple) else "-"
    logged = log_access and access_log.isEnabledFor(logging.INFO)
    conn = _Connection(channel, state, router, limits, tracker, metrics, logged, peer)
    entry = tracker.add(channel)
    entry.idle = False
    entry.on_drain = conn.drain
    if metrics:
        metrics.active.inc()
    try:
        await conn.run()
    except _Failed as e:
        _log.debug("%s: HTTP/2 connection ended: %s", peer, e)
    finally:
        conn.closed = True
        tasks = list(conn.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.log_refused()
        if metrics:
            metrics.active.dec()
        await channel.close_gracefully()
        conn.h2.release()
        tracker.remove(entry)
