"""The app protocol under ``TLSProtocol`` for one served connection: plaintext in, responses out.

It does what ``asyncio.StreamReader``/``StreamWriter`` did for HTTP/1.1 serving with less per request: a
read hands over everything received since the last one, and one lazily re-armed timer per connection
enforces the current read ``deadline`` (instead of an ``asyncio.timeout`` per read). Writes go straight to
the transport; ``drain()`` is only needed while the transport has paused writing (``paused``).
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import struct
import termios
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ..io.asyncio import TLSTransport

__all__ = ["Channel", "unsent", "wait_with_progress"]

HIGH_WATER = 1 << 18  # plaintext buffered unread (pipelined requests, a body): pause reading from the socket
_SLACK = 0.001  # a timer may fire this much early (libuv counts milliseconds): it still counts as expired


def _connected_once(channel: Channel) -> None:
    raise RuntimeError("connection_made() twice on one Channel")


class Channel(asyncio.Protocol):
    """One connection's plaintext stream. ``connected(channel)`` runs at ``connection_made`` (it starts the
    handler task); ``deadline`` is the loop time after which a ``read()`` still waiting raises TimeoutError."""

    def __init__(self, connected: Callable[[Channel], object], *, send_timeout: float = 60.0) -> None:
        self._loop = asyncio.get_running_loop()
        self._connected = connected
        self.send_timeout = send_timeout  # a client that reads nothing this long while we wait to write: cut off
        self.transport: asyncio.Transport | None = None
        self.handler: object = None
        self.deadline = math.inf
        self.paused = False  # the transport asked us to stop writing: ``await drain()`` before more
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._reading = True
        self._eof = False
        self._lost = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None  # read() waiting
        self._drained: asyncio.Future[None] | None = None  # drain() waiting (HTTP/2: another task than read())
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._closed: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        connected, self._connected = self._connected, _connected_once  # it may hold what holds us: no cycle
        self.handler = connected(self)  # held here: the loop keeps only weak references to tasks

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and self._reading and self.transport is not None:
            self._reading = False
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # half-closed: the response to what was read still goes out

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        if exc is not None:
            self._error = exc
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()
        self._wake_drain()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drain()

    # --- for the handler ----------------------------------------------------------------------------

    async def read(self) -> bytes:
        """What arrived since the last read, b"" at EOF; the connection's error (``TLSError``,
        ``ConnectionError``) once it is lost; TimeoutError when ``deadline`` passes first."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            if self._loop.time() + _SLACK >= self.deadline:
                raise TimeoutError
            if self.deadline < self._timer_at:  # the one timer fires by the deadline (later moves: re-armed)
                self._arm()
            await self._wait()
            if not self._chunks and not self._eof and self._loop.time() + _SLACK >= self.deadline:
                raise TimeoutError
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        if not self._reading and self.transport is not None:
            self._reading = True
            self.transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def write(self, data: bytes) -> None:
        """ConnectionResetError once the connection is lost or closing (a long body stops there, as with
        ``drain``; e.g. a request that arrived just as SIGTERM's drain closed the idle connection)."""
        if self._lost or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection was lost")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport has paused writing (one task at a time; it may be another than read's). A
        client that reads nothing for ``send_timeout`` seconds meanwhile is cut off: the connection is aborted
        and TimeoutError raised (as nginx's ``send_timeout``)."""
        try:
            await wait_with_progress(lambda: self.paused and not self._lost, self._resumed, self.send_timeout,
                                     self.unsent)
        except TimeoutError:
            self.abort()
            raise
        if self._lost:
            raise ConnectionResetError("the connection was lost")

    async def _resumed(self) -> None:
        while self.paused and not self._lost:
            waiter = self._drained = self._loop.create_future()
            await waiter

    def unsent(self) -> tuple[int, int] | None:
        """What has not reached the client (``unsent``)."""
        if self.transport is None:
            return None
        return unsent(self.transport, self.transport.get_extra_info("socket"))

    @property
    def lost(self) -> bool:
        """The connection is gone (not merely half-closed by the client: it may still read our answer)."""
        return self._lost

    def set_timeout(self, seconds: float) -> None:
        """Reads from now on must complete within ``seconds`` (until the next call)."""
        self.deadline = self._loop.time() + seconds

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default if self.transport is None else self.transport.get_extra_info(name, default)

    def close(self, *, linger: bool = True) -> None:
        if self.transport is not None:
            if not linger and isinstance(self.transport, TLSTransport):
                self.transport.close(linger=False)
            else:
                self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def release(self) -> None:
        """The handler is done: forget the connection's error. Once raised by ``read()`` its traceback holds
        that frame, which holds this channel: a reference cycle that kept the connection for the collector."""
        if self._error is not None:
            self._error = ConnectionResetError("the connection was lost")

    async def wait_closed(self) -> None:
        if not self._lost:
            if self._closed is None:
                self._closed = self._loop.create_future()
            await asyncio.shield(self._closed)  # a waiter given up on (a timeout) leaves it for the next one

    async def close_gracefully(self, *, linger: bool = True) -> None:
        """Close; what is still on its way to the client goes on leaving, and once ``send_timeout`` passes with
        none of it leaving (the client stopped reading), the connection is aborted: progress counted as in
        ``drain``. A draining server waits for this. ``linger=False``: an idle connection, closed without waiting
        for the client's own close."""
        self.close(linger=linger)
        try:
            await wait_with_progress(lambda: bool(self.write_pending) and not self._lost, self.wait_closed,
                                     self.send_timeout, self.unsent)
        except TimeoutError:
            self.abort()

    @property
    def write_pending(self) -> int:
        """Bytes the transport still holds for the socket."""
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    # --- internals ----------------------------------------------------------------------------------

    def _wait(self) -> asyncio.Future[None]:
        """The future ``_wake`` resolves (data, EOF, loss or an expired deadline)."""
        waiter = self._waiter = self._loop.create_future()
        return waiter

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = self.deadline
        self._timer = self._loop.call_at(self.deadline, self._expired)

    def _expired(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if self._waiter is None or self._lost:
            return  # nobody reading: the next read arms it again
        if self._loop.time() + _SLACK >= self.deadline:
            self._wake()  # _wait sees the deadline passed
        elif self.deadline < math.inf:
            self._arm()

    def _wake_drain(self) -> None:
        waiter = self._drained
        if waiter is not None:
            self._drained = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


async def wait_with_progress(waiting: Callable[[], bool], wait: Callable[[], Awaitable[object]], timeout: float | None,
                             unsent: Callable[[], tuple[int, int] | None]) -> None:
    """Await ``wait()`` while ``waiting()``; TimeoutError once ``timeout`` seconds pass with nothing leaving the
    socket (``unsent`` unchanged, or unknown). Progress, not the time until asyncio resumes writing: it waits for
    the kernel to free a third of a send buffer of megabytes, which a slow but steady peer may take longer than
    the timeout to read (curl --limit-rate 1M was cut off at a 1 s timeout)."""
    while waiting():
        before = unsent()
        try:
            async with asyncio.timeout(timeout):
                await wait()
        except TimeoutError:
            if before is None or unsent() == before:
                raise


def unsent(transport: asyncio.WriteTransport, sock: Any) -> tuple[int, int] | None:
    """What has not reached the peer: the transport's buffer and the kernel's send queue of ``sock`` (SIOCOUTQ:
    sent but not acknowledged too); None when it cannot be read. A change in it is progress, for send timeouts."""
    try:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, AttributeError, ValueError):
        return None
    return transport.get_write_buffer_size(), queued
