"""HTTP/1.1 serving over ``Channel`` in process: requests split across reads and pipelined, the idle and
header timeouts (one deadline timer per connection), write flow control, drain, HTTP/1.0 and checked header
fields. A fake transport stands in for ``TLSProtocol``; ``StaticFiles`` serves a temporary directory."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import h11
import pytest

from tests.served import ChannelTransport
from tlskit.serve import http1
from tlskit.serve.accesslog import TLSFields
from tlskit.serve.channel import Channel
from tlskit.serve.http1 import ConnectionTracker, Exchange, Router, TLSState, checked, serve_connection
from tlskit.serve.settings import HTTPLimits, StaticRoute
from tlskit.serve.static import FileCache, StaticFiles

PAGE = b"<!doctype html><title>t</title>\n"
_FIELDS = TLSFields(version="TLSv1.3", suite="TLS_AES_128_GCM_SHA256", group="x25519", sni="localhost",
                    alpn="http/1.1", resumed=False, early_data=False, handshake_ms=1.0, client="-")
GET = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n"


class Conn:
    """One served connection: ``send`` request bytes, read ``statuses()``/``data``, ``closed`` when over."""

    def __init__(self, root: Path, limits: HTTPLimits, tracker: ConnectionTracker, *, log: bool = False,
                 listing: bool = False) -> None:
        router = Router((StaticFiles(StaticRoute(root=root, listing=listing), FileCache()),))
        self.transport = ChannelTransport()
        self.task: asyncio.Task[None] | None = None

        def connected(channel: Channel) -> asyncio.Task[None]:
            self.task = asyncio.get_running_loop().create_task(serve_connection(
                channel, TLSState(_FIELDS if log else None, early=False), router=lambda: router, limits=limits,
                tracker=tracker, metrics=None, log_access=log))
            return self.task

        self.channel = Channel(connected, send_timeout=limits.idle_timeout)
        self.transport.channel = self.channel
        self.channel.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.data_received(data)

    @property
    def data(self) -> bytes:
        return bytes(self.transport.data)

    def statuses(self) -> list[int]:
        return [int(s) for s in re.findall(rb"^HTTP/1\.1 (\d{3}) ", self.data, re.MULTILINE)]

    async def finished(self, timeout: float = 5) -> None:
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_bytes(PAGE)
    return tmp_path


def test_request_split_across_reads_is_answered_once_whole(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(), ConnectionTracker())
        for i in range(len(GET)):
            conn.send(GET[i:i + 1])
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert conn.statuses() == [200] and conn.data.endswith(PAGE)
        conn.send(b"")  # nothing: an empty read is not EOF
        conn.channel.eof_received()
        await conn.finished()

    run(go)


def test_pipelined_requests_are_answered_in_order(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(), ConnectionTracker())
        conn.send(GET + b"GET /missing HTTP/1.1\r\nHost: localhost\r\n\r\n" + GET[:20])
        await asyncio.sleep(0.01)
        assert conn.statuses() == [200, 404]
        conn.send(GET[20:] + b"HEAD /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await conn.finished()
        assert conn.statuses() == [200, 404, 200, 200]
        assert conn.data.lower().endswith(b"connection: close\r\n\r\n")  # HEAD: no body; the client asked to close

    run(go)


def test_idle_connection_closes_quietly_after_idle_timeout(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(idle_timeout=0.2, header_timeout=5), ConnectionTracker())
        conn.send(GET)
        await asyncio.sleep(0.1)
        started = asyncio.get_running_loop().time()
        await conn.finished()
        waited = asyncio.get_running_loop().time() - started
        assert conn.statuses() == [200] and 0.05 < waited < 1  # the idle clock starts after each response

    run(go)


def test_incomplete_head_gets_408_after_header_timeout(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(idle_timeout=60, header_timeout=0.2), ConnectionTracker())
        conn.send(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n")
        started = asyncio.get_running_loop().time()
        for _ in range(3):  # more bytes keep coming, but the head's deadline does not move
            await asyncio.sleep(0.05)
            conn.send(b"X-Slow: 1\r\n")
        await conn.finished()
        assert conn.statuses() == [408] and b"connection: close" in conn.data.lower()
        assert 0.15 < asyncio.get_running_loop().time() - started < 1

    run(go)


def test_access_log_times_a_408_from_its_first_byte_and_escapes_bytes_as_nginx(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """rt_ms of a request the client never finished counts from its first byte (it was 0); a target's or a
    header's non-ASCII bytes are logged ``\\xHH`` each, as nginx does (they were U+FFFD or latin-1 mojibake)."""
    async def go() -> None:
        conn = Conn(root, HTTPLimits(idle_timeout=60, header_timeout=0.3), ConnectionTracker(), log=True)
        conn.send(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: b\xc3\xbcro\r\n\r\n")
        conn.send(b"GET /index.html HTTP/1.1\r\n")
        await conn.finished()
        assert conn.statuses() == [200, 408]
        conn = Conn(root, HTTPLimits(), ConnectionTracker(), log=True)
        conn.send(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await conn.finished()
        assert conn.statuses() == [400]  # h11 takes no raw UTF-8 in a target

    caplog.set_level(logging.INFO, logger="tlskit.access")
    run(go)
    lines = [r.access.combined() for r in caplog.records if hasattr(r, "access")]  # type: ignore[attr-defined]
    assert len(lines) == 3, lines
    assert '"GET /index.html HTTP/1.1" 200 ' in lines[0] and '"b\\xc3\\xbcro"' in lines[0], lines[0]
    assert '"GET /index.html HTTP/1.1" 408 ' in lines[1], lines[1]
    rt_ms = float(re.findall(r" rt_ms=([0-9.]+) ", lines[1])[0])
    assert 250 < rt_ms < 2000, lines[1]
    assert '"GET /caf\\xc3\\xa9 HTTP/1.1" 400 ' in lines[2], lines[2]


def test_a_later_deadline_does_not_fire_early_and_an_earlier_one_does() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        channel = Channel(lambda _: None)
        channel.connection_made(ChannelTransport())
        channel.set_timeout(0.1)
        with pytest.raises(TimeoutError):
            await channel.read()
        channel.set_timeout(0.3)  # the timer armed for the old deadline is gone; a new one fires at 0.3 s
        reader = asyncio.ensure_future(channel.read())
        await asyncio.sleep(0.15)
        channel.set_timeout(0.5)  # moved later while waiting: the armed timer fires and re-arms
        await asyncio.sleep(0.25)
        assert not reader.done()
        channel.data_received(b"late but in time")
        assert await reader == b"late but in time"
        channel.set_timeout(10)
        started = loop.time()
        reader = asyncio.ensure_future(channel.read())
        await asyncio.sleep(0.01)
        channel.set_timeout(0.05)  # moved earlier: takes effect at the next wait
        channel.data_received(b"x")
        assert await reader == b"x"
        with pytest.raises(TimeoutError):
            await channel.read()
        assert loop.time() - started < 1

    run(go)


def test_response_waits_while_the_transport_is_paused(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(), ConnectionTracker())
        conn.channel.pause_writing()
        conn.send(GET + GET)
        await asyncio.sleep(0.05)
        assert conn.statuses() == [200]  # written, then waiting in drain(): the second is not answered yet
        conn.channel.resume_writing()
        await asyncio.sleep(0.05)
        assert conn.statuses() == [200, 200]

    run(go)


def test_a_client_that_stops_reading_is_cut_off_after_the_send_timeout(root: Path) -> None:
    """Like nginx's send_timeout: a response that cannot leave (the client reads nothing, the transport stays
    paused) ends the connection after ``idle_timeout`` instead of holding it and its task forever."""
    async def go() -> None:
        conn = Conn(root, HTTPLimits(idle_timeout=0.2), ConnectionTracker())
        conn.channel.pause_writing()
        conn.send(GET + GET)
        await conn.finished(timeout=3)
        assert conn.transport.closed.done() and conn.statuses() == [200]

    run(go)


def test_lost_connection_ends_a_paused_writer(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(), ConnectionTracker())
        conn.channel.pause_writing()
        conn.send(GET)
        await asyncio.sleep(0.01)
        conn.channel.connection_lost(ConnectionResetError("reset by peer"))
        await conn.finished()
        with pytest.raises(ConnectionResetError):
            conn.channel.write(b"more")

    run(go)


def test_drain_closes_idle_connections_and_lets_busy_ones_finish_with_close(root: Path) -> None:
    async def go() -> None:
        tracker = ConnectionTracker()
        idle, busy = Conn(root, HTTPLimits(), tracker), Conn(root, HTTPLimits(), tracker)
        idle.send(GET)
        busy.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")  # body to come
        await asyncio.sleep(0.01)
        assert len(tracker.open) == 2
        tracker.drain()
        await idle.finished()
        assert idle.statuses() == [200] and not tracker.empty.is_set()
        busy.send(b"cd" + GET)  # the request in progress is answered, with Connection: close; not the next
        await busy.finished()
        assert busy.statuses() == [200] and b"connection: close" in busy.data.lower()
        assert tracker.empty.is_set() and not tracker.open

    run(go)


def test_closing_waits_for_the_last_response_to_leave(root: Path) -> None:
    async def go() -> None:
        tracker = ConnectionTracker()
        conn = Conn(root, HTTPLimits(), tracker)
        conn.transport.buffered = 100  # the socket has not taken the response yet

        def close() -> None:  # the transport closes, but reports the connection lost only later
            conn.transport.closed.set_result(None)
            asyncio.get_running_loop().call_later(0.1, conn.channel.connection_lost, None)

        conn.transport.close = close  # type: ignore[method-assign]
        conn.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(0.05)
        assert conn.statuses() == [200] and len(tracker.open) == 1  # a draining server still waits for it
        await conn.finished()
        assert not tracker.open

    run(go)


def test_http_1_0_request_is_answered_and_closed(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(), ConnectionTracker())
        conn.send(b"GET /index.html HTTP/1.0\r\n\r\n")
        await conn.finished()
        assert conn.statuses() == [200] and conn.data.endswith(PAGE) and b"connection: close" in conn.data.lower()

    run(go)


def test_body_is_read_across_reads_and_a_too_large_one_is_413(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(max_body_bytes=10), ConnectionTracker())
        conn.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
        await asyncio.sleep(0.01)
        assert conn.statuses() == []  # the body is discarded before the answer: not all here yet
        conn.send(b"cdef" + b"GET /index.html HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        await asyncio.sleep(0.01)
        assert conn.statuses() == [200]
        conn.send(b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
        await conn.finished()
        assert conn.statuses() == [200, 413]

    run(go)


def test_a_whole_head_over_the_limit_in_one_read_is_431_and_a_small_one_is_not_measured(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(max_header_bytes=200), ConnectionTracker())
        conn.send(GET)  # under the limit whatever its fields: served
        big = b"GET /index.html HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 300 + b"\r\n\r\n"
        conn.send(big)  # arrived whole in one read, so h11 did not bound it: measured here
        await conn.finished()
        assert conn.statuses() == [200, 431]

    run(go)


def test_a_body_already_received_is_skipped_without_awaiting_and_a_late_one_is_read(root: Path) -> None:
    async def go() -> None:
        conn = Conn(root, HTTPLimits(), ConnectionTracker())
        conn.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + GET)
        await asyncio.sleep(0.01)
        assert conn.statuses() == [200, 200]
        conn.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na")
        await asyncio.sleep(0.01)
        assert conn.statuses() == [200, 200]  # the rest of the body first
        conn.send(b"bc")
        await asyncio.sleep(0.01)
        assert conn.statuses() == [200, 200, 200]

    run(go)


def test_skip_body_reports_whether_more_must_be_read() -> None:
    async def go() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert isinstance(conn.next_event(), h11.Request)
        channel = Channel(lambda _: None)
        exchange = Exchange(conn, channel, HTTPLimits(), close_after=False)
        assert exchange.skip_body() and conn.their_state is h11.DONE  # no body: nothing to wait for
        conn.send(h11.Response(status_code=204, headers=[]))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        assert isinstance(conn.next_event(), h11.Request)
        exchange = Exchange(conn, channel, HTTPLimits(), close_after=False)
        assert not exchange.skip_body() and conn.their_state is h11.SEND_BODY
        conn.receive_data(b"cd")
        assert exchange.skip_body() and conn.their_state is h11.DONE

    run(go)


def test_a_file_response_is_rebuilt_each_second_and_when_closing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        now = [1_700_000_000.0]
        monkeypatch.setattr(http1.time, "time", lambda: now[0])
        tracker = ConnectionTracker()
        conn = Conn(root, HTTPLimits(), tracker)
        conn.send(GET + GET)
        await asyncio.sleep(0.01)
        now[0] += 1
        conn.send(GET)
        await asyncio.sleep(0.01)
        tracker.draining = True  # the next response says Connection: close
        conn.send(GET)
        await conn.finished()
        dates = re.findall(rb"(?i)date: ([^\r]+)", bytes(conn.data))
        assert dates == [b"Tue, 14 Nov 2023 22:13:20 GMT"] * 2 + [b"Tue, 14 Nov 2023 22:13:21 GMT"] * 2
        closing = [b"connection: close" in r.lower() for r in bytes(conn.data).split(b"HTTP/1.1 ")[1:]]
        assert closing == [False, False, False, True]

    run(go)


def test_checked_fields_reject_what_h11_would() -> None:
    assert checked([("Content-Type", "text/plain"), ("content-length", "5")]) == (
        (b"content-type", b"content-type", b"text/plain"), (b"content-length", b"content-length", b"5"))
    with pytest.raises(h11.LocalProtocolError):
        checked([("location", "/a\r\nSet-Cookie: x=1")])
    with pytest.raises(h11.LocalProtocolError):
        checked([("bad name", "x")])


class _Raw(asyncio.Transport):
    """The TCP side under ``TLSProtocol``: each write is kept whole."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 50000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0


def test_first_response_leaves_with_the_tickets_and_close_notify_in_one_write(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlskit.config import ClientConfig
    from tlskit.connection import Connection
    from tlskit.events import ApplicationData, ConnectionClosed
    from tlskit.serve.server import ServeProcess, build_site
    from tlskit.serve.settings import Flags, load_settings

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the development CA's certificate

    async def go() -> None:
        flags = Flags(root=root, ktls="off", access_log=False)
        served = ServeProcess(build_site(load_settings(flags)), flags, [], watch=False)
        tls, raw = served._accept(), _Raw()
        tls.connection_made(raw)
        client = Connection(ClientConfig(server_name="localhost", verify_peer=False))
        client.start()
        tls.data_received(client.data_to_send())  # ClientHello
        client.receive_data(b"".join(raw.writes))  # the server's flight
        assert client.handshake_complete
        client.send_data(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        raw.writes.clear()
        tls.data_received(client.data_to_send())  # Finished and the request, in one TCP segment
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(raw.writes) == 1 and raw.closed  # tickets, response and close_notify: one send
        client.receive_data(raw.writes[0])
        events = client.events()
        response = b"".join(e.data for e in events if isinstance(e, ApplicationData))
        assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(PAGE)
        assert any(isinstance(e, ConnectionClosed) for e in events)

    run(go)


class _PausingRaw(_Raw):
    """Like uvloop's transport: asks the protocol to pause writing once it holds more than 64 KiB."""

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol, self.paused = protocol, False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        if sum(map(len, self.writes)) > 1 << 16 and not self.paused:
            self.paused = True
            self.protocol.pause_writing()


def test_a_large_first_response_with_the_finished_still_meets_flow_control(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flush deferred to send tickets with the first response must not hold a big response back from the
    transport's flow control: a 4 MiB file asked for together with the client's Finished reaches the socket in
    bounded writes, and the writer pauses instead of encrypting the whole file at once."""
    from tlskit.config import ClientConfig
    from tlskit.connection import Connection
    from tlskit.serve.server import ServeProcess, build_site
    from tlskit.serve.settings import Flags, load_settings

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (root / "big.bin").write_bytes(bytes(4 << 20))

    async def go() -> None:
        flags = Flags(root=root, ktls="off", access_log=False)
        served = ServeProcess(build_site(load_settings(flags)), flags, [], watch=False)
        tls = served._accept()
        raw = _PausingRaw(tls)
        tls.connection_made(raw)
        client = Connection(ClientConfig(server_name="localhost", verify_peer=False))
        client.start()
        tls.data_received(client.data_to_send())
        client.receive_data(b"".join(raw.writes))
        raw.writes.clear()
        client.send_data(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        tls.data_received(client.data_to_send())  # Finished and the request, in one TCP segment
        for _ in range(20):
            await asyncio.sleep(0)
        sent = sum(map(len, raw.writes))
        assert raw.paused and 0 < sent < 1 << 18, f"{sent} bytes reached the transport before it paused"
        tls.connection_lost(None)
        for _ in range(5):
            await asyncio.sleep(0)

    run(go)


def test_writing_to_a_closing_connection_is_a_reset_not_a_route_error() -> None:
    """A request that arrives just as SIGTERM's drain closes the connection: the answer meets a closing
    transport, which must end the connection quietly (ConnectionResetError), not look like a bug in a route."""

    async def go() -> None:
        channel = Channel(lambda _: None)
        transport = ChannelTransport(channel)
        channel.connection_made(transport)
        channel.write(b"fine while open")
        transport.close()  # closing; connection_lost comes later
        with pytest.raises(ConnectionResetError):
            channel.write(b"too late")
        assert transport.data == b"fine while open"

    run(go)


def test_per_request_responses_do_not_fill_the_response_cache(root: Path) -> None:
    """Range answers (and any route's own headers) are built per request: they must not take places in the
    per-second response cache meant for a file version's fields (which would evict those every 256)."""
    async def go() -> None:
        conn = Conn(root, HTTPLimits(), ConnectionTracker())
        conn.send(GET)  # the file's 200 fields: cached
        await asyncio.sleep(0.05)
        before = len(http1._responses)
        for i in range(20):
            conn.send(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nRange: bytes=%d-%d\r\n\r\n" % (i, i + 3))
        await asyncio.sleep(0.1)
        assert conn.data.count(b"HTTP/1.1 206 Partial Content\r\n") == 20
        assert len(http1._responses) == before

    run(go)


def test_a_response_is_logged_even_when_the_unread_request_body_then_stalls(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 405 to a POST whose body never finishes: the answer went out, so it is in the access log, and then the
    connection ends at the read timeout."""
    async def go() -> None:
        conn = Conn(root, HTTPLimits(idle_timeout=0.2), ConnectionTracker(), log=True)
        conn.send(b"POST /index.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\npartial")
        await conn.finished(timeout=3)
        assert conn.statuses() == [405]

    with caplog.at_level(logging.INFO, logger="tlskit.access"):
        run(go)
    assert any('"POST /index.html HTTP/1.1" 405' in r.getMessage() for r in caplog.records), caplog.text


def test_a_body_trickling_after_its_answer_is_discarded_for_a_bounded_time(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 405 to a POST whose body then comes a byte at a time, each within the read timeout: the server drops it
    for DISCARD_TIME in all (nginx's lingering_time), then ends the connection; it used to read for ever."""
    monkeypatch.setattr(http1, "DISCARD_TIME", 0.5)

    async def go() -> None:
        conn = Conn(root, HTTPLimits(idle_timeout=0.3), ConnectionTracker())
        conn.send(b"POST /index.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\nx")
        started = asyncio.get_running_loop().time()
        assert conn.task is not None
        while not conn.task.done() and asyncio.get_running_loop().time() - started < 3:
            conn.send(b"x")
            await asyncio.sleep(0.05)
        await conn.finished()
        assert conn.statuses() == [405] and asyncio.get_running_loop().time() - started < 1.5

    run(go)


def test_empty_lines_before_a_request_still_count_toward_the_0rtt_offset(root: Path) -> None:
    """The first 2 bytes were 0-RTT data and are an empty line (skipped, RFC 9112 §2.2): the POST after them
    began after the early data, so it is not answered 425 Too Early (it gets the static route's 405)."""
    async def go() -> None:
        router = Router((StaticFiles(StaticRoute(root=root), FileCache()),))
        transport = ChannelTransport()
        tasks: list[asyncio.Task[None]] = []

        def connected(channel: Channel) -> asyncio.Task[None]:
            state = TLSState(_FIELDS, early_bytes=lambda: 2, early=True)
            tasks.append(asyncio.get_running_loop().create_task(serve_connection(
                channel, state, router=lambda: router, limits=HTTPLimits(), tracker=ConnectionTracker(),
                metrics=None, log_access=False)))
            return tasks[-1]

        channel = Channel(connected, send_timeout=5)
        transport.channel = channel
        channel.connection_made(transport)
        channel.data_received(b"\r\n")
        await asyncio.sleep(0.01)
        channel.data_received(b"POST /index.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        await asyncio.sleep(0.05)
        assert re.findall(rb"^HTTP/1\.1 (\d{3}) ", bytes(transport.data), re.MULTILINE) == [b"405"]
        channel.close()

    run(go)



def _answers(root: Path, *requests: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """(status, headers, body) of each GET, sent pipelined on one connection to a listing StaticFiles route."""
    async def go() -> bytes:
        conn = Conn(root, HTTPLimits(), ConnectionTracker(), listing=True)
        conn.send(b"".join(requests) + b"GET /end HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await conn.finished()
        return conn.data

    data = asyncio.run(asyncio.wait_for(go(), 20))
    client = h11.Connection(h11.CLIENT)
    client.receive_data(data)
    out = []
    for _ in requests:
        client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        client.send(h11.EndOfMessage())
        response = client.next_event()
        assert isinstance(response, h11.Response), response
        body = b""
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data), event
            body += event.data
        out.append((response.status_code, dict(response.headers), body))
        client.start_next_cycle()
    return out


def _get(path: bytes, *headers: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def test_an_index_file_is_held_to_the_rules_of_any_file(tmp_path: Path) -> None:
    """An index.html symlink to a file outside the root (or to a private key) was served: the direct URL of the
    same file is 404 (symlinks leading out of the root; keys by content)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    (root / "leak").mkdir()
    (root / "leak" / "index.html").symlink_to(outside / "passwd")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (root / "keys").mkdir()
    (root / "keys" / "ca.key").write_bytes(key)
    (root / "key").mkdir()
    (root / "key" / "index.html").symlink_to(root / "keys" / "ca.key")
    (root / "fine").mkdir()
    (root / "fine" / "index.html").write_bytes(PAGE)
    (root / "page.html.en").write_bytes(PAGE)  # content negotiation's naming: the link's name gives the type
    (root / "lang").mkdir()
    (root / "lang" / "index.html").symlink_to(root / "page.html.en")
    answers = _answers(root, _get(b"/leak/"), _get(b"/key/"), _get(b"/fine/"), _get(b"/lang/"))
    assert [a[0] for a in answers] == [404, 404, 200, 200]
    assert b"root:x" not in answers[0][2] and b"PRIVATE KEY" not in answers[1][2] and answers[2][2] == PAGE
    assert answers[3][1][b"content-type"].startswith(b"text/html") and answers[3][2] == PAGE


def test_listing_copes_with_odd_names_loops_and_a_directory_that_went_away(tmp_path: Path) -> None:
    """A file name that is not UTF-8, or a symlink loop, made the listing a 500 with a traceback, and the file
    was unreachable; a listed directory removed within the lookup cache's second was a 500 too (nginx: 404)."""
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / os.fsdecode(b"\xff\xfe.txt")).write_bytes(b"bytes name\n")
    (tmp_path / "odd" / "self").symlink_to(tmp_path / "odd" / "self")
    (tmp_path / "odd" / "out").symlink_to("/")
    (tmp_path / "odd" / "ok.txt").write_bytes(b"ok\n")
    (tmp_path / os.fsdecode(b"\xffdir")).mkdir()
    listing, odd_file, odd_dir = _answers(tmp_path, _get(b"/odd/"), _get(b"/odd/%ff%fe.txt"), _get(b"/%ffdir"))
    assert odd_dir[0] == 301 and odd_dir[1][b"location"] == b"/%FFdir/"  # (was a 404)
    assert listing[0] == 200 and b'href="%FF%FE.txt"' in listing[2] and b'href="ok.txt"' in listing[2]
    assert b'href="self"' not in listing[2] and b'href="out/"' not in listing[2]  # a loop; out of the root
    assert odd_file[0] == 200 and odd_file[2] == b"bytes name\n"

    async def go() -> list[int]:
        (tmp_path / "gone").mkdir()
        conn = Conn(tmp_path, HTTPLimits(), ConnectionTracker(), listing=True)
        conn.send(_get(b"/gone/"))
        await asyncio.sleep(0.05)
        (tmp_path / "gone").rmdir()  # the lookup of /gone/ is cached for a second
        conn.send(_get(b"/gone/").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        await conn.finished()
        return conn.statuses()

    assert asyncio.run(asyncio.wait_for(go(), 20)) == [200, 404]


def test_ranges_with_leading_zeros_a_suffix_of_an_empty_file_and_repeated_validators(tmp_path: Path) -> None:
    """RFC 9110 §14.1.1: positions are 1*DIGIT (zeros allowed: they were read as 10^18, giving the whole file
    or a false 416); a suffix range of an empty file is satisfiable, answered whole (was 416); §5.3: repeated
    If-None-Match lines are one list (only the first was read); §13.1.3: a date that is not GMT is ignored."""
    data = bytes(range(256)) * 4
    (tmp_path / "file.bin").write_bytes(data)
    (tmp_path / "empty.txt").write_bytes(b"")
    first = _answers(tmp_path, _get(b"/file.bin"))[0]
    etag = first[1][b"etag"]
    answers = _answers(
        tmp_path,
        _get(b"/file.bin", b"Range: bytes=-0000000000000000000005"),
        _get(b"/file.bin", b"Range: bytes=0-0000000000000000000009"),
        _get(b"/file.bin", b"Range: bytes=00000000000000000000000000001-2"),
        _get(b"/empty.txt", b"Range: bytes=-5"),
        _get(b"/file.bin", b'If-None-Match: "x"', b"If-None-Match: " + etag),
        _get(b"/file.bin", b"If-Modified-Since: Sun, 06 Nov 2094 08:49:37 +0800"),
    )
    assert [(a[0], a[1].get(b"content-range")) for a in answers[:3]] == [
        (206, b"bytes 1019-1023/1024"), (206, b"bytes 0-9/1024"), (206, b"bytes 1-2/1024")]
    assert answers[0][2] == data[-5:] and answers[1][2] == data[:10] and answers[2][2] == data[1:3]
    assert answers[3][0] == 200 and answers[3][2] == b""
    assert answers[4][0] == 304
    assert answers[5][0] == 200 and answers[5][2] == data


@pytest.mark.parametrize("reads", [True, False], ids=["slow-but-steady-reader", "reader-that-stopped"])
def test_a_closing_connection_keeps_sending_while_the_client_reads(reads: bool) -> None:
    """A connection closed with a reply still in its buffers (idle timeout, drain) is aborted only after
    send_timeout without progress, as ``drain`` counts it: asyncio writes again only once the kernel freed a third
    of the send buffer, which a slow but steady reader may take longer than send_timeout to free (a 6 MB file at
    1 MB/s was cut off 160 KiB before its end under a 1 s idle timeout). A client that stopped reading is cut off."""
    size = 600_000
    got = bytearray()

    def client(port: int, stopped: threading.Event) -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.connect(("127.0.0.1", port))
            if not reads:
                stopped.wait(10)
                return
            while True:
                time.sleep(0.02)  # ~16 KiB per 20 ms: 0.8 MB/s, about 0.8 s for the whole reply
                try:
                    chunk = sock.recv(16384)
                except ConnectionResetError:
                    return
                if not chunk:
                    return
                got.extend(chunk)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[float] = loop.create_future()

        async def reply(channel: Channel) -> None:
            channel.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
            channel.write(os.urandom(size))  # most of it stays in the transport's buffer
            start = loop.time()
            await channel.close_gracefully()
            closed.set_result(loop.time() - start)

        tasks: list[asyncio.Task[None]] = []
        server = await loop.create_server(
            lambda: Channel(lambda ch: tasks.append(asyncio.ensure_future(reply(ch))), send_timeout=0.3),
            "127.0.0.1", 0)
        stopped = threading.Event()
        thread = threading.Thread(target=client, args=(server.sockets[0].getsockname()[1], stopped))
        thread.start()
        took = await closed
        stopped.set()
        await asyncio.to_thread(thread.join, 10)
        server.close()
        if reads:
            assert len(got) == size and took > 0.3, (len(got), took)  # longer than send_timeout, not cut off
        else:
            assert 0.25 < took < 2, took

    run(go)


_CASES = [  # (request, status, header fields, fast): each as `tlskit serve` or a route may send it
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [("content-length", "3")], True),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200, [("content-length", "3")], False),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200,
     [("content-length", "3"), ("Connection", "close")], True),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [("content-length", "3"), ("connection", "close")], True),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [("content-length", "3"), ("connection", "keep-alive")], False),
    (b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [("content-length", "3")], True),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 204, [], False),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 304, [("etag", '"x"')], False),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [], False),  # no length: chunked
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [("transfer-encoding", "chunked"), ("content-length", "3")], False),
    (b"GET / HTTP/1.0\r\n\r\n", 200, [("content-length", "3")], False),  # HTTP/1.0: h11 closes, adds Connection
    (b"GET / HTTP/1.0\r\n\r\n", 200, [], False),
]


@pytest.mark.parametrize(("request_bytes", "status", "headers", "fast"), _CASES)
def test_h11_sends_the_same_bytes_without_the_clean_up(request_bytes: bytes, status: int,
                                                       headers: list[tuple[str, str]], fast: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``ServerConnection`` skips h11's second validation of a response only where h11's rebuilt response
    would be the same: the bytes on the wire and h11's states afterwards are h11's own, for each kind of
    response (h11 is the reference here); ``fast`` says whether the shortcut must have been taken."""
    fell_back = []
    clean_up = h11.Connection._clean_up_response_headers_for_sending

    def spy(self: h11.Connection, response: h11.Response) -> h11.Response:
        fell_back.append(response.status_code)
        return clean_up(self, response)

    def exchange(kind: type[h11.Connection]) -> tuple[bytes, object, object, bool]:
        conn = kind(h11.SERVER)
        conn.receive_data(request_bytes)
        request = conn.next_event()
        assert isinstance(request, h11.Request) and conn.next_event() == h11.EndOfMessage()
        out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
        if status not in (204, 304) and request.method != b"HEAD":
            out += conn.send(h11.Data(data=b"abc")) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        return out, conn.our_state, conn.their_state, conn._cstate.keep_alive

    expected = exchange(h11.Connection)
    monkeypatch.setattr(h11.Connection, "_clean_up_response_headers_for_sending", spy)
    assert exchange(http1.ServerConnection) == expected
    assert (not fell_back) == fast, f"h11's clean-up {'skipped' if not fell_back else 'ran'}"


@pytest.mark.parametrize(("headers", "parts"), [
    ([("content-length", "6")], [b"abc", b"def"]),  # the whole length, in two parts
    ([("content-length", "2")], [b"abc"]),  # over the length: h11's LocalProtocolError, our state ERROR
    ([], [b"abc", b""]),  # chunked (no length); an empty part
    (None, [b"abc"]),  # before the response: not in SEND_BODY, h11's own path and error
])
def test_send_body_is_h11s_data_event(headers: list[tuple[str, str]] | None, parts: list[bytes]) -> None:
    """``ServerConnection.send_body`` (the body writer without the state machine) sends the bytes h11 sends
    for ``Data`` and leaves h11's states as h11 does, its errors included."""
    def exchange(fast: bool) -> tuple[bytes, str, object, object]:
        conn = http1.ServerConnection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert isinstance(conn.next_event(), h11.Request) and conn.next_event() == h11.EndOfMessage()
        out, error = b"", ""
        try:
            if headers is not None:
                out += conn.send(h11.Response(status_code=200, headers=headers)) or b""
            for part in parts:
                out += b"".join(conn.send_body(part) if fast else conn.send_with_data_passthrough(h11.Data(data=part))
                                or [])
            out += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as e:
            error = str(e)
        return out, error, conn.our_state, conn.their_state

    assert exchange(fast=True) == exchange(fast=False)


@pytest.mark.parametrize("request_bytes", [b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                                           b"GET / HTTP/1.0\r\n\r\n"])
def test_a_response_to_a_closing_client_says_close_itself(request_bytes: bytes,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that asked to close (or speaks HTTP/1.0) gets ``Connection: close`` from ``Exchange`` itself, so
    h11's clean-up (which would add it by rebuilding and validating the response again) is skipped, and the
    bytes are those h11 would send."""
    fell_back = []
    clean_up = h11.Connection._clean_up_response_headers_for_sending

    def spy(self: h11.Connection, response: h11.Response) -> h11.Response:
        fell_back.append(response.status_code)
        return clean_up(self, response)

    async def go() -> None:
        monkeypatch.setattr(http1.time, "time", lambda: 1_700_000_000.0)
        date = http1.http_date()
        reference = h11.Connection(h11.SERVER)
        reference.receive_data(request_bytes)
        reference.next_event(), reference.next_event()
        expected = b"".join(reference.send(event) or b"" for event in (
            h11.Response(status_code=200, headers=[("content-length", "3"), ("date", date), ("server", "tlskit")],
                         reason=b"OK"),
            h11.Data(data=b"abc"), h11.EndOfMessage()))
        conn = http1.ServerConnection(h11.SERVER)
        conn.receive_data(request_bytes)
        assert isinstance(conn.next_event(), h11.Request) and conn.next_event() == h11.EndOfMessage()
        channel = Channel(lambda _: None)
        transport = ChannelTransport(channel)
        channel.connection_made(transport)
        monkeypatch.setattr(h11.Connection, "_clean_up_response_headers_for_sending", spy)
        Exchange(conn, channel, HTTPLimits(), close_after=False).respond(200, checked([("content-length", "3")]),
                                                                          b"abc")
        assert bytes(transport.data) == expected and b"Connection: close\r\n" in expected
        assert not fell_back and conn.our_state is h11.MUST_CLOSE

    run(go)
