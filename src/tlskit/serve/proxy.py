"""Reverse proxy to an HTTP/1.1 upstream, h11 on both sides (RFC 9110 §7.6, RFC 7239's de-facto headers).

Hop-by-hop headers are dropped both ways; the upstream sees ``X-Forwarded-For`` (appended),
``X-Forwarded-Proto: https``, ``X-Forwarded-Host``, ``Early-Data: 1`` for a request that arrived in 0-RTT data
(RFC 8470 §5.1) and, with mTLS, the client certificate's subject CN in ``client_cert_header`` and the
certificate as Envoy's ``X-Forwarded-Client-Cert`` (``Hash=<sha256 of the DER>;Subject="...";URI=<SPIFFE
ID>;DNS=...``) (a client cannot forge these: incoming copies are removed, and so is every header whose name has
an underscore, as nginx drops them). The path sent on is the one routed on (dot segments resolved, see
``target``), with the query as received. No upstream: 502; a silent one: 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import Callable
from typing import Any

import h11

from ..errors import TLSError
from .channel import unsent, wait_with_progress
from .exchange import HTTPExchange
from .http1 import HTTPError, Request
from .settings import ProxyRoute

__all__ = ["ReverseProxy"]

_log = logging.getLogger("tlskit.serve")
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
               b"te", b"trailer", b"transfer-encoding", b"upgrade"}
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # not in a field value (RFC 9110 §5.5; HTAB is)


class _ClientTimeout(Exception):
    """The client's request body stopped arriving (the channel's idle timeout)."""


class _ClientGone(Exception):
    """The client closed the connection, or broke it, in the middle of its request body."""


_SET_BY_US = {b"x-forwarded-proto", b"x-forwarded-host", b"early-data", b"x-forwarded-client-cert", b"date",
              b"server"}


class _Upstream(asyncio.Protocol):
    """The connection to the upstream: a stream reader and writer in one, which gives what the upstream sent
    before a connection error ahead of the error. An upstream that answers 413 and resets while we still send
    the body makes our write fail, and the transport then closes without reading what the kernel still holds:
    its answer was lost (a 502 in 1 upload of 5 under load). asyncio's ``StreamReader`` also raises the error
    before handing out what it has. So the socket has a second descriptor (``_spare``), read once the transport
    is lost to an error."""

    def __init__(self, send_timeout: float | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.send_timeout = send_timeout  # how long ``drain`` waits for an upstream that takes nothing
        self._spare: socket.socket | None = None
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = asyncio.Event()

    @classmethod
    async def connect(cls, host: str, port: int, send_timeout: float | None = None) -> _Upstream:
        _, protocol = await asyncio.get_running_loop().create_connection(lambda: cls(send_timeout), host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        raw = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            self._spare = socket.socket(fileno=os.dup(raw.fileno()))
            self._spare.setblocking(False)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._readable.set()
        if len(self._buffer) > _READ_AHEAD and self.transport is not None:
            self.transport.pause_reading()  # h11 takes it as it is read: no more than this waits here

    def eof_received(self) -> bool:
        self._eof = True
        self._readable.set()
        return True  # half-closed: the rest of a body may still go up (full duplex); closed by ``close``

    def connection_lost(self, exc: Exception | None) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            with spare, contextlib.suppress(OSError):  # BlockingIOError: all of it read; the reset after it
                while exc is not None and not self._eof and len(self._buffer) < _READ_AHEAD:
                    if not (data := spare.recv(65536)):
                        self._eof = True
                    self._buffer += data
        self._error = exc or ConnectionResetError("the upstream connection was closed")
        self._readable.set()
        self._writable.set()
        self._closed.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" at the upstream's EOF; its connection error once nothing is left to read."""
        while not self._buffer and not self._eof and self._error is None:
            self._readable.clear()
            await self._readable.wait()
        if self._buffer:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
            if self.transport is not None and len(self._buffer) <= _READ_AHEAD and not self._error:
                self.transport.resume_reading()
            return data
        if self._eof:
            return b""
        assert self._error is not None
        raise self._error

    def write(self, data: bytes) -> None:
        if self._error is not None or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError(f"the upstream connection was lost: {self._error}")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport holds too much; ``TimeoutError`` once the upstream has taken nothing for
        ``send_timeout`` (one that reads nothing held the request, its client and two descriptors for good;
        nginx: proxy_send_timeout, between two successive writes). Progress is what leaves the socket's send
        queue: asyncio resumes writing only once the kernel freed a third of a send buffer of megabytes, which
        a slow but steady upstream may take longer than the timeout to read."""
        try:
            await wait_with_progress(lambda: not self._writable.is_set(), self._writable.wait, self.send_timeout,
                                     self._unsent)
        except TimeoutError:
            raise TimeoutError(f"the upstream took none of the request for {self.send_timeout} s") from None
        if self._error is not None:
            raise ConnectionResetError(f"the upstream connection was lost: {self._error}")

    def _unsent(self) -> tuple[int, int] | None:
        """What waits to reach the upstream: asyncio's buffer and the kernel's send queue (SIOCOUTQ)."""
        if self.transport is None or self._spare is None:
            return None
        return unsent(self.transport, self._spare)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def close(self) -> None:
        """Close after what is queued is sent; cut (reset) an upstream that takes none of it for a few seconds."""
        if self.transport is not None:
            self.transport.close()
            try:
                async with asyncio.timeout(_CLOSE_WAIT):
                    await self._closed.wait()
            except TimeoutError:
                self.transport.abort()


_CLOSE_WAIT = 5.0  # seconds a closing upstream connection may take to send what is queued
_READ_AHEAD = 1 << 18  # bytes of the upstream's answer read before it is relayed (then reading pauses)


async def next_event(conn: h11.Connection, reader: _Upstream, timeout: float | None,
                     reads: list[int] | None = None) -> object:
    """The upstream's next h11 event, reading (at most ``timeout`` seconds per read) when h11 needs data;
    ``reads[0]`` counts the reads, so a caller waiting on this can time out between reads too."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        async with asyncio.timeout(timeout):
            data = await reader.read(1 << 16)
        conn.receive_data(data)
        if reads is not None:
            reads[0] += 1
    return event


async def _send_body(exchange: HTTPExchange, send: Callable[[h11.Event], None], writer: _Upstream) -> None:
    """The client's request body to the upstream, as it arrives; its failures are the client's (408, 400, 499)."""
    body = exchange.body()
    while True:
        try:
            chunk = await anext(body)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise _ClientTimeout from None
        except h11.RemoteProtocolError as e:  # a malformed body (bad chunk framing): the client's fault
            raise HTTPError(400, detail=f"request body: {e}") from None
        except (OSError, TLSError) as e:
            raise _ClientGone(str(e)) from None
        send(h11.Data(data=chunk))
        await writer.drain()
        for _ in range(2):  # the loop reads the upstream first: an early answer is seen before its reset
            await asyncio.sleep(0)
    send(h11.EndOfMessage())
    await writer.drain()


async def _response_head(upstream: h11.Connection, reader: _Upstream, timeout: float | None,
                         reads: list[int] | None = None) -> h11.Response:
    """The upstream's final response head (1xx ones stay upstream), as ``next_event`` reads."""
    while not isinstance(event := await next_event(upstream, reader, timeout, reads), h11.Response):
        if not isinstance(event, h11.InformationalResponse):  # 100 Continue and friends
            raise h11.RemoteProtocolError("the upstream closed without a response")
    return event


async def _head_in_time(response: asyncio.Future[h11.Response], reads: list[int], timeout: float) -> h11.Response:
    """Wait for ``response`` (a ``_response_head`` task) allowing ``timeout`` seconds between its reads: an
    upstream that sends "102 Processing" now and then may take longer than that in all (nginx's
    proxy_read_timeout is per read too)."""
    while True:
        before = reads[0]
        done, _ = await asyncio.wait((response,), timeout=timeout)
        if done:
            return response.result()
        if reads[0] == before:
            raise TimeoutError


async def _finish(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` if it runs, and in any case take its outcome (no "exception was never retrieved")."""
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    elif not task.cancelled():
        task.exception()


def _hop_by_hop(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    named = {t.strip().lower() for name, value in headers if name == b"connection" for t in value.split(b",")}
    return _HOP_BY_HOP | (named - _NEVER_HOP_BY_HOP)


# Connection may not list these (nginx ignores it too): dropping them would break the message's framing or
# its target (`Connection: content-length` sent a POST head without its body).
_NEVER_HOP_BY_HOP = {b"host", b"content-length"}


class ReverseProxy:
    """The route for a ``[[route]]`` with ``proxy = "http://host:port"``."""

    forwards_client_identity = True  # under mTLS an early request waits for the handshake's client certificate

    def __init__(self, route: ProxyRoute) -> None:
        self.prefix, self.hosts = route.prefix, route.hosts
        self.route = route

    def _request_headers(self, request: Request) -> list[tuple[bytes, bytes]]:
        r = self.route
        drop = _hop_by_hop(request.headers) | _SET_BY_US | {r.client_cert_header.encode(), b"expect"}  # 100: ours
        if not r.preserve_host:
            drop.add(b"host")
        # Names with "_" are dropped, as nginx does (underscores_in_headers off): a WSGI/CGI upstream reads
        # X_Client_Cert and X-Client-Cert as one variable, so an underscore copy would forge what we set.
        headers = [(k, v) for k, v in request.headers if k not in drop and k != b"x-forwarded-for" and b"_" not in k]
        forwarded_for = ", ".join([v.decode("latin-1") for k, v in request.headers if k == b"x-forwarded-for"]
                                  + [request.peer])
        headers += [(b"x-forwarded-for", forwarded_for.encode()), (b"x-forwarded-proto", b"https"),
                    (b"connection", b"close")]
        if request.host:
            headers.append((b"x-forwarded-host", request.host.encode()))
        if not r.preserve_host or not any(k == b"host" for k, _ in headers):  # (HTTP/1.0 may have none; 1.1 must)
            headers.append((b"host", f"{r.upstream_host}:{r.upstream_port}".encode()))
        if request.early:
            headers.append((b"early-data", b"1"))
        if request.tls.client != "-":
            headers.append((r.client_cert_header.encode(), request.tls.client.encode("utf-8", "replace")))
        if request.tls.client_xfcc:
            headers.append((b"x-forwarded-client-cert", request.tls.client_xfcc.encode("utf-8", "replace")))
        if any(k == b"transfer-encoding" for k, _ in request.headers):
            headers.append((b"transfer-encoding", b"chunked"))  # h11 re-chunks what it streams
        return headers

    async def handle(self, request: Request, exchange: HTTPExchange) -> None:
        r = self.route
        try:
            async with asyncio.timeout(r.timeout):
                reader = writer = await _Upstream.connect(r.upstream_host, r.upstream_port, r.timeout)
        except TimeoutError:
            raise HTTPError(504, detail=f"connecting to {r.upstream_host}:{r.upstream_port} timed out") from None
        except OSError as e:
            _log.warning("upstream %s:%d: %s", r.upstream_host, r.upstream_port, e.strerror or e)
            raise HTTPError(502, detail=f"upstream {r.upstream_host}:{r.upstream_port}: {e.strerror or e}") from None
        upstream = h11.Connection(h11.CLIENT)
        try:
            await self._forward(request, exchange, upstream, reader, writer)
        except _ClientTimeout:  # the client stopped sending its body: not the upstream's fault (nginx: 408)
            raise HTTPError(408, detail="the request body stalled") from None
        except _ClientGone as e:  # ... or went away (logged as 499, nginx's "client closed request")
            raise ConnectionError(f"the client failed while sending its body: {e}") from None
        except TimeoutError as e:
            raise HTTPError(504, detail=str(e) or "the upstream did not answer in time") from None
        except TLSError:
            raise  # the client's connection failed (TLS errors are OSErrors too): not the upstream's
        except (OSError, h11.ProtocolError) as e:
            if isinstance(e, ConnectionError | h11.LocalProtocolError) and exchange.started:
                raise ConnectionError(f"upstream response cut short: {e}") from None
            raise HTTPError(502, detail=f"upstream {r.upstream_host}:{r.upstream_port}: {e}") from None
        finally:
            await writer.close()

    async def _send_body_watching(self, exchange: HTTPExchange, send: Callable[[h11.Event], None],
                                  upstream: h11.Connection, reader: _Upstream,
                                  writer: _Upstream) -> tuple[h11.Response, asyncio.Future[None] | None]:
        """Send the request body while watching for the upstream's answer (RFC 9112 §9.5). An error that comes
        first (413 to an upload too large, 401) is relayed and the rest of the body not sent, as nginx does:
        closing with our data unread, the upstream resets the connection, and waiting for the body to be sent
        lost the answer (502). Any other early answer (an upstream that streams its response while it reads:
        full duplex) is relayed while the body goes on: the task returned, still sending."""
        reads = [0]
        body = asyncio.ensure_future(_send_body(exchange, send, writer))
        response = asyncio.ensure_future(_response_head(upstream, reader, None, reads))
        body_goes_on = False
        try:
            await asyncio.wait((body, response), return_when=asyncio.FIRST_COMPLETED)
            if response.done() and not response.exception():
                head = response.result()
                body_goes_on = head.status_code < 400 and not body.done()
                return head, body if body_goes_on else None  # an error: the body stops here (finally)
            if body.done() and (failed := body.exception()) is not None:
                if not isinstance(failed, OSError) or isinstance(failed, TLSError):
                    raise failed  # the client's doing (408, 499, 400)
                with contextlib.suppress(TimeoutError):  # the upstream reset while we sent: did it answer first?
                    await asyncio.wait_for(asyncio.shield(response), 1.0)
                if response.done() and not response.exception():
                    return response.result(), None
                raise failed
            if not body.done():
                raise response.exception() or h11.RemoteProtocolError("no response")  # (the upstream failed)
            return await _head_in_time(response, reads, self.route.timeout), None
        finally:
            await _finish(response)
            if not body_goes_on:
                await _finish(body)

    async def _forward(self, request: Request, exchange: HTTPExchange, upstream: h11.Connection,
                       reader: _Upstream, writer: _Upstream) -> None:
        r = self.route

        def send(event: h11.Event) -> None:
            if data := upstream.send(event):
                writer.write(data)

        try:  # HTTP/2 lets through what HTTP/1.1 cannot carry (a space in :path, odd header names): 400
            query = request.target.partition("?")
            head = h11.Request(method=request.method, target=r.upstream_path + request.path + query[1] + query[2],
                               headers=self._request_headers(request))
        except (h11.LocalProtocolError, UnicodeEncodeError) as e:
            raise HTTPError(400, detail=f"cannot be forwarded as HTTP/1.1: {e}") from None
        send(head)
        if not any(k == b"transfer-encoding" or (k == b"content-length" and v.strip(b"0 ")) for k, v in head.headers):
            send(h11.EndOfMessage())  # no body
            await writer.drain()
            event, body = await _response_head(upstream, reader, r.timeout), None
        else:
            event, body = await self._send_body_watching(exchange, send, upstream, reader, writer)
        if body is not None:  # full duplex: a client failing to send the rest ends the upstream exchange too

            def abort_upstream(task: asyncio.Future[None]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    writer.abort()

            body.add_done_callback(abort_upstream)
        try:
            await self._relay(exchange, event, upstream, reader)
        except (OSError, h11.ProtocolError):
            if body is not None and body.done() and not body.cancelled() and (failed := body.exception()):
                raise failed from None  # the client's failure (408, 499), not the upstream's
            raise
        finally:
            if body is not None:
                await _finish(body)  # the upstream answered in full without reading all of it: not sent

    async def _relay(self, exchange: HTTPExchange, event: h11.Response, upstream: h11.Connection,
                     reader: _Upstream) -> None:
        """The upstream's response to the client: the head with hop-by-hop fields dropped, then the body."""
        r = self.route
        drop = _hop_by_hop(list(event.headers)) | {b"date", b"server"}
        if any(k == b"transfer-encoding" for k, _ in event.headers):
            drop.add(b"content-length")  # RFC 9112 §6.3: chunked wins, and a proxy MUST remove the Content-Length
        if event.status_code == 204:  # RFC 9110 §8.6: never in a 204 (HTTP/2 clients reset the stream)
            drop.add(b"content-length")
        if any(_CONTROL.search(v) for _, v in event.headers):  # h11 lets them through; HTTP/2 clients refuse them
            raise h11.RemoteProtocolError("the upstream sent a header field value with control characters")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers if k not in drop]
        try:
            await exchange.start(event.status_code, headers, event.reason.decode("latin-1"))
        except ConnectionError as e:  # the client left while the upstream prepared its answer (499)
            raise _ClientGone(str(e)) from None
        await exchange.flush()  # the client sees the head while a slow upstream streams the body
        while not isinstance(part := await next_event(upstream, reader, r.timeout), h11.EndOfMessage):
            if not isinstance(part, h11.Data):
                raise ConnectionError("the upstream closed in the middle of its response")
            await exchange.write(bytes(part.data), flush=True)
        await exchange.end()
