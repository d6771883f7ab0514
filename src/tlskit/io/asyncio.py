"""TLS for asyncio: a ``Protocol`` that drives the engine under a ``Transport`` any protocol can use, so the
standard ``asyncio.StreamReader``/``StreamWriter`` work unchanged.

    reader, writer = await open_connection("example.com", 443, alpn=["http/1.1"])
    server = await start_server(handle, "127.0.0.1", 8443, config=ServerConfig(certificates=(ck,)))

The app protocol sees ``connection_made`` only after the handshake, unless a server asks for accepted 0-RTT
data (``early_data=True``): then the app is connected when the first early data arrives, reads it at once,
and what it writes goes out at once as 0.5-RTT data (RFC 8446 §2.3), or is held until the handshake completes
where the engine does not allow that (``TLSProtocol.in_early_data``, ``wait_handshake()``). A failed handshake
raises from ``open_connection``; on a server it is logged (logger ``tlskit.io``) with the peer, SNI and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
from asyncio import constants as asyncio_constants
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import IO, Any, cast

from ..config import ClientConfig, ServerConfig
from ..errors import (
    AlertError,
    CertificateError,
    ConfigError,
    ConnectionClosedError,
    HandshakeTimeout,
    RemoteAlert,
    TLSError,
    UnexpectedEOF,
    internal_cause,
)
from ..events import HandshakeComplete
from ..pki.verify import TrustStore
from .common import TLSSession, client_config, forget_tracebacks, format_address, server_config, with_env_key_log
from .ktls import KTLSOption, KTLSStream, policy

__all__ = ["TLSProtocol", "TLSTransport", "open_connection", "start_server", "start_tls"]

_WARN_AFTER_DROPPED = 5  # asyncio's constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES
_log = logging.getLogger("tlskit.io")

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


_DEFER_LIMIT = 1 << 16  # bytes of application data that may wait for a deferred flush
FAILURE_LINGER = 2.0  # seconds a connection we refused with an alert waits for the peer to close (see _linger)
SHUTDOWN_TIMEOUT = 30.0  # seconds close() waits for the peer to read what is queued and close (asyncio's default)


_DETACHED = asyncio.Protocol()  # a lost connection's app: it is told nothing more


class TLSProtocol(asyncio.Protocol):
    """Sits on the TCP transport: feeds the engine, and serves ``app`` through a ``TLSTransport``.

    ``waiter`` (client side) gets the handshake's outcome; without one, failures are logged.
    ``on_handshake(protocol, error)`` runs once when the handshake ends: ``error`` is None on success (before
    the app's ``connection_made``), else the ``TLSError`` (servers use it for metrics).

    ``early_data`` (servers): connect the app as soon as accepted 0-RTT data arrives (RFC 8446 §4.2.10), before
    the client's Finished, so it can start on the request. The first ``early_bytes`` bytes it reads were early
    data (replayable: serve only safe requests from them, RFC 8470). Writes made before the handshake completes
    go out at once as 0.5-RTT data (RFC 8446 §2.3: under the server's application key, right after its
    Finished), so the answer to a 0-RTT request reaches the client one round trip after its first flight. Where
    the engine refuses that (``ConfigError``: it still waits for a client certificate) they are held in memory,
    the app paused (``pause_writing``: ``drain()`` waits) until the handshake completes and they are sent.
    ``close()``/``write_eof()`` always wait for the handshake to complete. If it fails, the app gets
    ``connection_lost(error)`` and nothing still held is sent.

    At ``connection_lost`` the protocol lets go of the app and of its transport, as asyncio's ``SSLProtocol``
    does: the transport (which the app may still hold: ``get_extra_info`` keeps working) refers to the
    protocol, not back, so a finished connection's objects leave no reference cycle and are freed at once,
    not by the garbage collector (``transport`` is None from then on).
    """

    def __init__(
        self,
        session: TLSSession,
        app: asyncio.BaseProtocol,
        *,
        handshake_timeout: float | None = 30.0,
        waiter: asyncio.Future[None] | None = None,
        ktls: KTLSOption = False,
        on_handshake: Callable[[TLSProtocol, TLSError | None], None] | None = None,
        early_data: bool = False,
        plain_http_reply: bytes | None = None,
    ) -> None:
        self.session = session
        self.plain_http_reply = plain_http_reply  # server: sent instead of our alert to a plain HTTP request
        self.on_handshake = on_handshake
        self.app = app
        self.transport: TLSTransport | None = TLSTransport(self)  # None once the connection is lost
        self._handshake_timeout = handshake_timeout
        self._waiter = waiter
        self._raw: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._app_connected = False
        self._eof_delivered = False
        self._keep_open = False
        self._error: TLSError | None = None
        self._ktls_policy = policy(ktls)
        self._ktls: KTLSStream | None = None  # kTLS TX after the handshake (``tlskit.io.ktls``)
        self._tcp_paused = False  # the TCP transport asked us to pause (pause_writing without resume_writing)
        self._writable: asyncio.Event | None = None  # set while not _tcp_paused; made when sendfile() first waits
        self._app_paused = False  # what we last told the app: pause_writing() without resume_writing() yet
        self._early_app = early_data
        self._held: list[bytes] = []  # app writes while in early data, sent once the handshake completes
        self._close_held: bool | None = None  # close() while in early data: False close, True write_eof
        self._handshake_over = False  # the handshake completed or failed (and on_handshake ran)
        self._handshake_ended: asyncio.Event | None = None  # set then; made only when wait_handshake() must wait
        self._flush_soon: asyncio.Handle | None = None  # a deferred _flush (see _deliver)
        self._deferred = 0  # application bytes written while the flush is deferred
        self._established = False  # the handshake completed with the app connected (until connection_lost)
        self._shutdown: asyncio.TimerHandle | None = None  # close(): reading on until the peer closes, bounded
        self._app_done = False  # start_server's handler returned
        self._peer_done = False  # the peer closed TCP

    # --- the TCP side -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's TCPTransport has the Transport methods without subclassing it.
        self._raw = raw = cast(asyncio.Transport, transport)
        self.session.describe_peer = lambda: format_address(raw.get_extra_info("peername"))
        if self._handshake_timeout is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._handshake_timeout, self._handshake_timed_out)
        try:
            self.session.start()
        except TLSError as e:
            self._fail(e)
            return
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._error is not None:  # failed: lingering after our alert (dropped)
            return
        try:
            self.session.receive(data)
        except TLSError as e:
            self._fail(e)
            return
        if self._shutdown is not None:  # closed by the app: read on (and drop) until the peer closes too
            self.session.plaintext.clear()
            self._flush()
            if self.session.eof and self._raw is not None:
                self._raw.close()
            return
        self._deliver()

    def eof_received(self) -> bool:
        if self._error is not None:
            return False
        try:
            self.session.receive(b"")
        except TLSError as e:
            self._fail(e)
            return False
        if self._shutdown is not None:
            return False
        self._deliver()
        self._peer_done = True
        # After the peer's close_notify the app may keep the connection open for its answer (TLS 1.3 half-close:
        # the peer may half-close TCP too, as tlskit's blocking shutdown(SHUT_WR) does); once its handler has
        # returned without closing (code written for asyncio+ssl need not close), the connection closes.
        return self._keep_open and not self._app_done

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._shutdown is not None:
            self._shutdown.cancel()
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self._ktls is not None:
            self._ktls.connection_lost()
        if self.session.negotiated is None and self._error is None:  # the peer went away mid-handshake
            self._handshake_failed(UnexpectedEOF(f"the transport closed during the TLS handshake ({exc or 'EOF'})"))
        forget_tracebacks(self._error)  # (they refer to frames that refer to us: a cycle)
        forget_tracebacks(exc)
        if self._app_connected:
            self._app_connected = self._established = False
            self.app.connection_lost(self._error or exc)
        self.app, self.transport = _DETACHED, None  # no cycle through the app or its transport (see the class)

    def pause_writing(self) -> None:
        self._tcp_paused = True
        if self._writable is not None:
            self._writable.clear()
        self._sync_pause()

    def resume_writing(self) -> None:
        self._tcp_paused = False
        if self._writable is not None:
            self._writable.set()
        self._sync_pause()

    # --- what TLSTransport asks for -------------------------------------------------------------------

    @property
    def in_early_data(self) -> bool:
        """The app is connected on 0-RTT data and the handshake has not completed yet."""
        return self._app_connected and self.session.negotiated is None

    @property
    def early_bytes(self) -> int:
        """How many of the plaintext bytes the app reads (from the start) arrived as 0-RTT data."""
        return self.session.early_bytes

    async def wait_handshake(self) -> HandshakeComplete:
        """The handshake's outcome: ``HandshakeComplete``, or its ``TLSError`` raised."""
        if self.session.negotiated is None and self._error is None and not self._handshake_over:
            if self._handshake_ended is None:  # most connections never wait: no Event for them
                self._handshake_ended = asyncio.Event()
            await self._handshake_ended.wait()
        done = self.session.negotiated
        if done is None:
            raise self._error or UnexpectedEOF("the connection closed during the TLS handshake")
        return done

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._established and self._app_connected and self.session.negotiated is None:  # on 0-RTT data
            if self._error is not None:
                return
            if not self._held:  # nothing held yet: send it now as 0.5-RTT data (RFC 8446 §2.3)
                try:
                    self.session.conn.send_data(bytes(data))
                except ConfigError:  # not before the client's Finished here (a client certificate pending)
                    pass
                else:
                    self._flush()
                    return
            self._held.append(bytes(data))  # once holding, hold everything after it too: order is kept
            self._sync_pause()
            return
        if self._ktls is not None:
            self._ktls.write_data(bytes(data))
            return
        self.session.conn.send_data(bytes(data))
        if self._flush_soon is None:
            self._flush()
        else:  # deferred (see _deliver): it leaves with the tickets this loop iteration, or now once it is large,
            self._deferred += len(data)  # so a big first response still meets the transport's flow control
            if self._deferred >= _DEFER_LIMIT:
                self._flush()

    async def sendfile(self, file: IO[bytes], offset: int = 0, count: int | None = None) -> int:
        """Send a file: ``os.sendfile`` under kTLS TX, else read and written as records; bytes sent."""
        if self.session.negotiated is None:
            await self.wait_handshake()
        if self._ktls is not None:
            return await self._ktls.sendfile(file, offset, count)
        file.seek(offset)
        sent = 0
        while count is None or sent < count:
            chunk = file.read(1 << 16 if count is None else min(1 << 16, count - sent))
            if not chunk:
                break
            self.write(chunk)
            sent += len(chunk)
            if self._tcp_paused:  # flow control: resume_writing() sets it once the buffer drained
                if self._writable is None:
                    self._writable = asyncio.Event()
                await self._writable.wait()
        return sent

    def write_eof(self) -> None:
        """Send close_notify (RFC 8446 §6.1); the peer may still send until it closes its side."""
        if self.in_early_data:
            if self._close_held is None:
                self._close_held = True
            return
        self.session.conn.close()
        self._flush()

    def close(self, abort: bool = False, *, linger: bool = True) -> None:
        """close_notify, then the TCP close: with ``linger``, half-closed while the peer's close is awaited
        (SHUTDOWN_TIMEOUT at most), as asyncio's ssl transport; without (a server ending an idle connection, as
        nginx at keepalive_timeout), closed at once after what is queued."""
        raw = self._raw
        if self.in_early_data and not abort:  # the held response goes out when the handshake completes
            self._close_held = False
            return
        if self.session.conn.handshake_complete and not abort:
            self.session.conn.close()
            self._flush()
        if raw is not None:
            if abort:
                raw.abort()
            elif self._ktls is not None:
                self._ktls.close()  # after the close_notify still queued for the kernel
            elif linger and self.session.conn.handshake_complete and self._shutdown is None \
                    and not raw.is_closing() and not self._peer_done and _can_write_eof(raw):  # (peer gone: no wait)
                # As asyncio's ssl transport: half-close after what is queued, and read on until the peer closes
                # (bounded by SHUTDOWN_TIMEOUT). Closing with unread data (tickets the peer sent) makes the kernel
                # reset the connection, and the peer then loses what it had not read yet of ours.
                try:
                    raw.write_eof()
                except OSError:  # the peer has gone already (shutdown(SHUT_WR) on a reset socket): just close
                    raw.close()
                    return
                self._shutdown = asyncio.get_running_loop().call_later(SHUTDOWN_TIMEOUT, self._shutdown_timed_out)
                with contextlib.suppress(RuntimeError, NotImplementedError):
                    raw.resume_reading()  # (an app that paused reading: the peer's close must still be seen)
            elif self._shutdown is None:
                raw.close()
                if raw.get_write_buffer_size():  # asyncio's close() waits for it unbounded: a peer that reads
                    loop = asyncio.get_running_loop()  # nothing is still dropped after SHUTDOWN_TIMEOUT
                    self._shutdown = loop.call_later(SHUTDOWN_TIMEOUT, self._shutdown_timed_out)

    def app_done(self) -> None:
        """The stream handler returned: if the peer has closed (close_notify or TCP), close our side too, as
        asyncio's ssl transport would have (else the connection sat in CLOSE-WAIT); otherwise when it does."""
        self._app_done = True
        transport = self.transport
        if transport is not None and (self._peer_done or self.session.eof) and not transport.is_closing():
            transport.close()

    def _shutdown_timed_out(self) -> None:
        """The peer neither read what we sent nor closed within SHUTDOWN_TIMEOUT (asyncio: ssl_shutdown_timeout)."""
        if self._raw is not None:
            self._raw.abort()

    def extra_info(self, name: str, default: Any = None) -> Any:
        session = self.session
        if name in ("ssl_object", "tls"):
            return session
        if name == "ktls":
            return None if self._ktls is None else self._ktls.ktls
        if session.negotiated is not None:
            match name:
                case "peercert":
                    return session.getpeercert()
                case "peercert_der":
                    return session.getpeercert(binary_form=True)
                case "cipher":
                    return session.cipher()
                case "alpn":
                    return session.selected_alpn_protocol()
                case "compression":
                    return None
        return default if self._raw is None else self._raw.get_extra_info(name, default)

    @property
    def raw_transport(self) -> asyncio.Transport | None:
        return self._raw

    # --- internals ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
            self._deferred = 0
        out = self.session.outgoing()
        # A closed transport drops the bytes (uvloop's would raise): e.g. close_notify after the peer reset.
        if out and self._raw is not None and not self._raw.is_closing():
            if self._ktls is not None:
                self._ktls.write_records(out)
            else:
                self._raw.write(out)

    def _deliver(self) -> None:
        """Send what the engine queued; hand plaintext and EOF to the app once the handshake is done."""
        session = self.session
        defer = False
        if self._established:  # the common case, once per record: nothing about the handshake to check
            self._flush()
        else:
            # When the handshake completes now, what it still sends (session tickets) waits until the end of
            # this loop iteration: an app that answers the request which came with the client's Finished (and
            # closes) then sends it all in one write. kTLS needs it sent before it starts.
            defer = session.negotiated is not None and not self._handshake_over and self._ktls_policy is None
            if not defer:
                self._flush()
            if not self._app_connected:
                if session.negotiated is None:
                    if not (self._early_app and session.plaintext):
                        return
                    self._app_connected = True  # on 0-RTT data; the handshake completes later
                    self.app.connection_made(self._app_transport())
                    self._sync_pause()
                else:
                    self._handshake_done()
            elif not self._handshake_over and session.negotiated is not None:
                self._handshake_done()
        plaintext, app = session.plaintext, self.app
        if not isinstance(app, asyncio.BufferedProtocol):  # as asyncio's transports: data_received, duck-typed
            receive = cast(asyncio.Protocol, app).data_received
            while plaintext and self._app_connected:
                receive(plaintext.popleft())
        else:  # its own buffers, filled as asyncio's transports fill them
            while plaintext and self._app_connected:
                data = memoryview(plaintext.popleft())
                while data and self._app_connected:
                    buffer = memoryview(app.get_buffer(len(data))).cast("B")
                    if not buffer:
                        raise RuntimeError("get_buffer() returned an empty buffer")
                    n = min(len(buffer), len(data))
                    buffer[:n] = data[:n]
                    app.buffer_updated(n)
                    data = data[n:]
        if session.eof and not self._eof_delivered and self._app_connected:
            self._eof_delivered = True
            self._keep_open = bool(cast(asyncio.Protocol, app).eof_received())  # BufferedProtocol has it too
            if not self._keep_open or self._app_done:  # (a handler that has returned answers nothing more)
                self._app_transport().close()
        if defer and self._flush_soon is None:  # after the app's task was scheduled: it runs first
            self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)

    def _handshake_done(self) -> None:
        self._cancel_timer()
        if self._ktls_policy is not None and self._raw is not None:
            self._ktls = KTLSStream.start(self._raw, self.session, self._ktls_policy)
        early = self._app_connected
        self._app_connected = True
        if self.on_handshake is not None:
            self.on_handshake(self, None)
        if not early:
            self.app.connection_made(self._app_transport())
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        held, self._held = self._held, []
        for data in held:
            self.write(data)
        self._sync_pause()
        if self._close_held is not None:
            self.write_eof() if self._close_held else self.close()
        self._end_handshake()
        self._established = self._app_connected

    def _app_transport(self) -> TLSTransport:
        """The app's transport, while the app is connected (before ``connection_lost``)."""
        assert self.transport is not None, "the connection was lost"
        return self.transport

    def _sync_pause(self) -> None:
        """Pause the app while the TCP transport is paused or its writes are held; resume it when neither."""
        if not self._app_connected:
            return
        paused = self._tcp_paused or bool(self._held)
        if paused != self._app_paused:
            self._app_paused = self._app_transport()._protocol_paused = paused
            self.app.pause_writing() if paused else self.app.resume_writing()

    def _fail(self, error: TLSError, *, abort: bool = False) -> None:
        """A fatal error: send our alert, close the transport, report it once."""
        self._cancel_timer()
        self._error = error
        out = self.session.outgoing()
        if self.plain_http_reply is not None and self.session.plain_http():  # as nginx: an HTTP answer, not an alert
            out = self.plain_http_reply
        raw = self._raw
        in_handshake = not self._app_connected or self.session.negotiated is None
        if raw is not None and not raw.is_closing():
            if out and not abort and self._ktls is not None:
                with contextlib.suppress(OSError, TLSError):
                    self._ktls.write_records(out)
            elif out and not abort:
                raw.write(out)
            if abort:
                raw.abort()
            elif in_handshake and self._ktls is None and not self._peer_done and _can_write_eof(raw):
                self._linger(raw)  # (an app already connected learns of the error as the transport closes)
            else:
                raw.close()
        if in_handshake:
            self._handshake_failed(error)
        elif (cause := internal_cause(error)) is not None:
            _log.error("TLS connection with %s failed: %s", format_address(raw.get_extra_info("peername") if raw
                                                                           else None), error, exc_info=cause)

    def _linger(self, raw: asyncio.Transport) -> None:
        """After our fatal alert: half-close and drop what the peer still sends until it closes (FAILURE_LINGER at
        most). Closing at once with its data unread (a client's request right after its Finished) makes the
        kernel reset the connection, and the peer may lose the alert (curl did in half the runs)."""
        try:
            raw.write_eof()
        except OSError:
            raw.close()
            return
        self._shutdown = asyncio.get_running_loop().call_later(FAILURE_LINGER, self._shutdown_timed_out)
        with contextlib.suppress(RuntimeError, NotImplementedError):
            raw.resume_reading()

    def _handshake_failed(self, error: TLSError) -> None:
        self._error = error
        self._held.clear()
        self._end_handshake()
        if self.on_handshake is not None:
            self.on_handshake(self, error)
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_exception(error)
            return
        peer = self._raw.get_extra_info("peername") if self._raw is not None else None
        # What a client did (an alert either way, a timeout, a hang-up, plain HTTP) is INFO, as nginx logs it:
        # scanners would fill a warning log (and the metrics count them by reason); our own trouble is WARNING.
        cause = internal_cause(error)  # our bug (or a callback's), not the client's: ERROR, with its traceback
        client_caused = cause is None and isinstance(error, AlertError | RemoteAlert | CertificateError
                                                     | HandshakeTimeout | UnexpectedEOF)
        level = logging.INFO if client_caused else logging.ERROR if cause is not None else logging.WARNING
        if isinstance(error, UnexpectedEOF) and self.session.received_nothing():
            level = logging.DEBUG  # connected and hung up without a byte: a load balancer's TCP health check
        _log.log(level, "TLS handshake with %s (SNI %s) failed: %s",
                 format_address(peer), self.session.client_server_name() or "none", error, exc_info=cause)

    def _end_handshake(self) -> None:
        self._handshake_over = True
        if self._handshake_ended is not None:
            self._handshake_ended.set()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        self._fail(HandshakeTimeout(f"TLS handshake did not complete within {self._handshake_timeout} s"),
                   abort=True)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TLSTransport(asyncio.transports._FlowControlMixin):
    """The transport the app protocol writes to: plaintext in, records out through ``TLSProtocol``.

    ``get_extra_info`` adds ``ssl_object``/``tls`` (the session: ``version()``, ``cipher()``,
    ``getpeercert()``...), ``peercert``, ``peercert_der``, ``cipher`` and ``alpn`` to the TCP ones.
    ``loop.sendfile(transport, file)`` works as on asyncio's ssl transports (the file read and written as
    records; the flow-control mixin is what its fallback requires); ``sendfile()`` here uses kTLS when it can.
    """

    _sendfile_compatible = asyncio_constants._SendfileMode.FALLBACK

    def __init__(self, protocol: TLSProtocol) -> None:
        asyncio.Transport.__init__(self)  # not the mixin's: the write buffer limits are the TCP transport's
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._protocol_paused = False  # mirrors TLSProtocol._app_paused (loop.sendfile's fallback reads it)
        self._tls = protocol
        self._closing = False
        self._eof_written = False
        self._dropped = 0  # writes after the connection closed (asyncio warns from the fifth, as here)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._tls.extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``. As asyncio's own transports: after ``write_eof()`` a RuntimeError; once the
        transport is closing or the connection has failed the data is dropped (a warning from the fifth time
        on), the failure being reported by ``drain()``/the reader and ``connection_lost``."""
        if not data:
            return
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not self._closing:
            try:
                self._tls.write(data)
                return
            except ConnectionClosedError:
                pass
        self._dropped += 1
        if self._dropped >= _WARN_AFTER_DROPPED:
            _log.warning("TLS connection is closed: %d bytes written after it were dropped", len(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self._eof_written = True
        self._tls.write_eof()

    async def sendfile(self, file: IO[bytes], offset: int = 0, count: int | None = None) -> int:
        """Send a file; ``os.sendfile`` when kTLS TX is on (``get_extra_info("ktls")``), else records."""
        if self._closing:
            raise RuntimeError("sendfile() on a closing TLS transport")
        return await self._tls.sendfile(file, offset, count)

    def can_write_eof(self) -> bool:
        return True

    def close(self, *, linger: bool = True) -> None:
        """``linger=False``: no wait for the peer's close after ours (``TLSProtocol.close``)."""
        if not self._closing:
            self._closing = True
            self._tls.close(linger=linger)

    def abort(self) -> None:
        self._closing = True
        self._tls.close(abort=True)

    def is_closing(self) -> bool:
        raw = self._tls.raw_transport
        return self._closing or raw is None or raw.is_closing()

    def pause_reading(self) -> None:
        if (raw := self._tls.raw_transport) is not None:
            raw.pause_reading()

    def resume_reading(self) -> None:
        if (raw := self._tls.raw_transport) is not None:
            raw.resume_reading()

    def is_reading(self) -> bool:
        raw = self._tls.raw_transport
        return raw is not None and raw.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if (raw := self._tls.raw_transport) is not None:
            raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        raw = self._tls.raw_transport
        return 0 if raw is None else raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        raw = self._tls.raw_transport
        return (0, 0) if raw is None else raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._tls.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._tls.app


async def open_connection(
    host: str,
    port: int,
    *,
    server_name: str | None = None,
    cafile: str | os.PathLike[str] | None = None,
    trust: TrustStore | None = None,
    alpn: Iterable[str] = (),
    config: ClientConfig | None = None,
    handshake_timeout: float | None = 30.0,
    limit: int = 1 << 16,
    ktls: KTLSOption = False,
    half_close: bool = False,
    **overrides: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, complete the handshake and return streams; arguments as ``tlskit.io.socket.connect``, but
    ``handshake_timeout`` where ``connect`` has ``timeout``.

    Raises the handshake's ``TLSError`` (``HandshakeTimeout`` after ``handshake_timeout`` seconds). After the
    server's close_notify the connection closes (ours goes back), as with ``ssl``: the server's ``wait_closed``
    returns and ``writer.is_closing()`` tells a pool the connection is done. ``half_close=True`` keeps the write
    side open for more (TLS 1.3 allows it) until the app closes.
    """
    cfg = client_config(host, server_name=server_name, cafile=cafile, trust=trust, alpn=alpn,
                        config=config, overrides=overrides)
    loop = asyncio.get_running_loop()
    tls, waiter, streams = _client(cfg, limit, half_close, handshake_timeout, ktls)
    try:
        await loop.create_connection(lambda: tls, host, port)
        await waiter
    except BaseException:
        waiter.cancel()  # cancelled while connecting, the handshake's failure has nobody left to report to
        tls.close(abort=True)
        raise
    return streams()


async def start_tls(
    writer: asyncio.StreamWriter,
    *,
    server_name: str,
    cafile: str | os.PathLike[str] | None = None,
    trust: TrustStore | None = None,
    alpn: Iterable[str] = (),
    config: ClientConfig | None = None,
    handshake_timeout: float | None = 30.0,
    limit: int = 1 << 16,
    half_close: bool = False,
    **overrides: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """STARTTLS on a plain asyncio connection (SMTP, IMAP; ``StreamWriter.start_tls`` with ``ssl``): a client
    handshake on ``writer``'s transport, and new streams over TLS. Arguments as ``open_connection``,
    ``server_name`` required. The old streams are done: plaintext their reader still held is dropped (never
    taken as sent over TLS: CVE-2011-0411), their ``wait_closed()`` returns when the TLS connection ends, and
    closing them closes it without close_notify. A failed or cancelled handshake aborts the connection (as
    ``loop.start_tls``)."""
    cfg = client_config(server_name, server_name=server_name, cafile=cafile, trust=trust, alpn=alpn,
                        config=config, overrides=overrides)
    raw = cast(asyncio.Transport, writer.transport)
    await writer.drain()  # what the plain protocol still had to send goes before the ClientHello
    plain = raw.get_protocol()
    tls, waiter, streams = _client(cfg, limit, half_close, handshake_timeout, False, also_lost=plain.connection_lost)
    raw.set_protocol(tls)
    tls.connection_made(raw)
    raw.resume_reading()  # the plain protocol may have paused it
    try:
        await waiter
    except BaseException:
        tls.close(abort=True)
        plain.connection_lost(None)  # the old streams end with it (the new ones never started)
        raise
    return streams()


def _client(cfg: ClientConfig, limit: int, half_close: bool, handshake_timeout: float | None, ktls: KTLSOption,
            also_lost: Callable[[Exception | None], object] | None = None
            ) -> tuple[TLSProtocol, asyncio.Future[None], Callable[[], tuple[asyncio.StreamReader,
                                                                              asyncio.StreamWriter]]]:
    """A client ``TLSProtocol`` over new streams: it, the future its handshake resolves, and the streams for after.
    ``also_lost``: told when the connection ends (the plain streams STARTTLS replaced)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    app = _ClientStreams(reader, loop, half_close, also_lost)
    waiter: asyncio.Future[None] = loop.create_future()
    tls = TLSProtocol(TLSSession(cfg), app, handshake_timeout=handshake_timeout, waiter=waiter, ktls=ktls)
    transport = tls._app_transport()  # (the streams may be made after the connection was lost)
    return tls, waiter, lambda: (reader, asyncio.StreamWriter(transport, app, reader, loop))


async def start_server(
    client_connected_cb: StreamHandler,
    host: str | Sequence[str] | None = None,
    port: int = 0,
    *,
    config: ServerConfig,
    handshake_timeout: float | None = 30.0,
    limit: int = 1 << 16,
    ktls: KTLSOption = False,
    early_data: bool = False,
    **kw: Any,
) -> asyncio.Server:
    """``asyncio.start_server`` over TLS: ``client_connected_cb`` runs after each successful handshake.

    ``ktls`` offloads TX to the kernel after each handshake (``tlskit.io.ktls``; RX stays in userspace).
    ``early_data``: run ``client_connected_cb`` when accepted 0-RTT data arrives (see ``TLSProtocol``).
    Extra keywords go to ``loop.create_server`` (``reuse_port``, ``backlog``, ``sock``...).
    """
    loop = asyncio.get_running_loop()
    config = with_env_key_log(server_config(config))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            result = client_connected_cb(reader, writer)
            if inspect.isawaitable(result):
                await result
        finally:  # a handler written for asyncio+ssl need not close: once the peer has closed too, we do (on
            # Python 3.13+ asyncio itself closes an unreferenced writer when the handler returns, as with ssl)
            transport = writer.transport
            if isinstance(transport, TLSTransport):
                transport._tls.app_done()

    def factory() -> TLSProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        app = asyncio.StreamReaderProtocol(reader, handler, loop=loop)
        return TLSProtocol(TLSSession(config), app, handshake_timeout=handshake_timeout, ktls=ktls,
                           early_data=early_data)

    return await loop.create_server(factory, host, port, **kw)


class _ClientStreams(asyncio.StreamReaderProtocol):
    """The client's streams: the server's close_notify ends the connection unless ``half_close`` (asyncio's own
    streams end it only over ``ssl``, which they recognise by an ``sslcontext`` tlskit has not got)."""

    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop, half_close: bool,
                 also_lost: Callable[[Exception | None], object] | None = None) -> None:
        super().__init__(reader, loop=loop)
        self._half_close = half_close
        self._also_lost = also_lost

    def eof_received(self) -> bool:
        super().eof_received()
        return self._half_close

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._also_lost is not None:
            self._also_lost(exc)


def _can_write_eof(raw: asyncio.Transport) -> bool:
    try:
        return raw.can_write_eof()
    except NotImplementedError:  # asyncio.WriteTransport's default
        return False
