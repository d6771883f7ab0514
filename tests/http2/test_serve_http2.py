"""HTTP/2 in `tlskit serve` (``--alpn h2``) against the ``h2`` package as the client over Python's ``ssl``: an
independent implementation of the framing, driven frame by frame. Many concurrent streams under small flow-
control windows, a client RST_STREAM, request bodies through the reverse proxy, a malformed preface, the idle
timeout, SIGTERM's GOAWAY and the client's with a stream in flight, and the stream errors that leave the
connection serving (431, REFUSED_STREAM over the stream limit, PROTOCOL_ERROR for a malformed request); in
process, RFC 8470's rule for streams in 0-RTT data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes

from tests.http2.peer import BIG, Client, no_traceback, serve_h2
from tests.served import ChannelTransport, EchoUpstream, Served
from tlskit.serve import http1
from tlskit.serve.accesslog import TLSFields
from tlskit.serve.channel import Channel
from tlskit.serve.http1 import ConnectionTracker, Router, TLSState
from tlskit.serve.http2 import MAX_CONCURRENT_STREAMS, serve_h2_connection
from tlskit.serve.settings import HTTPLimits, StaticRoute
from tlskit.serve.static import FileCache, StaticFiles


def test_forty_concurrent_streams_under_a_small_client_window(served: Served) -> None:
    """Each response is 300 KB through a 16 KiB stream window: the server waits for WINDOW_UPDATEs."""
    client = Client(served, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384})
    sids = [client.request("/big.bin" if i % 2 else "/index.html") for i in range(40)]
    client.pump(lambda: client.ended >= set(sids), timeout=30)
    for i, sid in enumerate(sids):
        assert client.status(sid) == 200
        assert bytes(client.bodies[sid]) == (BIG if i % 2 else b"<h1>h2</h1>\n")
    client.close()
    assert served.access(r'"GET /big\.bin HTTP/2\.0" 200 300000 ')["alpn"] == "h2"
    no_traceback(served)


def test_client_rst_stream_cancels_it_and_the_connection_goes_on(served: Served) -> None:
    client = Client(served, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
    client.consume = False  # the big response stalls on the client's window
    big = client.request("/big.bin")
    client.pump(lambda: big in client.headers)
    client.conn.reset_stream(big, ErrorCodes.CANCEL)
    client.consume = True
    client.flush()
    small = client.request("/index.html")
    client.pump(lambda: small in client.ended)
    assert client.status(small) == 200 and bytes(client.bodies[small]) == b"<h1>h2</h1>\n"
    assert len(client.bodies.get(big, b"")) <= 1024 and big not in client.ended
    client.close()
    served.access(r'"GET /index\.html HTTP/2\.0" 200 ')
    # cancelled, and logged as nginx logs it: the status that went out and the body bytes it got to send (the
    # client's window: what waited for it was counted too, 65536)
    logged = served.wait_log(r'"GET /big\.bin HTTP/2\.0" 200 ')
    assert int(logged.split('" 200 ')[1].split()[0]) <= 1024, logged
    no_traceback(served)


def test_malformed_preface_gets_goaway_and_close_without_traceback(served: Served) -> None:
    ctx = served.context()
    ctx.set_alpn_protocols(["h2"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", served.port), timeout=10),
                         server_hostname="localhost") as sock:
        assert sock.selected_alpn_protocol() == "h2"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # not the HTTP/2 connection preface
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    # The server's SETTINGS, then GOAWAY (type 7) with PROTOCOL_ERROR (1); then the connection closed.
    assert b"\x00\x00\x00\x01" in received and received[3] == 0x04, received[:64]
    goaway = received.find(b"\x07\x00\x00\x00\x00\x00")
    assert goaway > 0 and received[goaway + 10:goaway + 14] == b"\x00\x00\x00\x01", received
    time.sleep(0.3)
    no_traceback(served)


def test_responses_without_content_end_on_their_headers_frame(tmp_path: Path, root: Path, upstream: int) -> None:
    """RFC 9113 §8.1: HEAD of a file streamed from disk (over the in-memory cache's size), a proxied 204 and a
    proxied HEAD (the echo upstream answers 501) end with END_STREAM on HEADERS, no empty DATA frame after it (as
    nginx); a GET still has DATA."""
    served = serve_h2(tmp_path, toml=f'[[route]]\npath = "/api/"\nproxy = "http://127.0.0.1:{upstream}"\n'
                                   f'[[route]]\nroot = "{root}"\n')
    try:
        client = Client(served)
        head, get = client.request("/big.bin", "HEAD"), client.request("/big.bin")
        no_content, proxied_head = client.request("/api/204"), client.request("/api/x", "HEAD")
        sids = {head, get, no_content, proxied_head}
        client.pump(lambda: client.ended >= sids)
        assert [client.status(sid) for sid in (head, get, no_content, proxied_head)] == [200, 200, 204, 501]
        assert client.headers[head][b"content-length"] == b"%d" % len(BIG) and bytes(client.bodies[get]) == BIG
        assert client.ended_on_headers & sids == sids - {get}
        assert not client.bodies.keys() & (sids - {get})  # not even an empty DATA frame
        client.close()
        served.access(r'"HEAD /big\.bin HTTP/2\.0" 200 0 ')
    finally:
        served.stop()
    no_traceback(served)


def test_proxy_over_http2_forwards_request_bodies(tmp_path: Path, upstream: int) -> None:
    served = serve_h2(tmp_path, "--proxy", f"http://127.0.0.1:{upstream}")
    try:
        client = Client(served)
        sized = client.request("/api/a?x=1", "POST", b"hello upstream", ((b"content-length", b"14"),
                                                                         (b"cookie", b"a=1"), (b"cookie", b"b=2")))
        unsized = client.request("/api/b", "POST", b"no length")
        get = client.request("/api/c")
        client.pump(lambda: client.ended >= {sized, unsized, get})
        seen = {sid: json.loads(client.bodies[sid]) for sid in (sized, unsized, get)}
        assert [client.status(s) for s in (sized, unsized, get)] == [200, 200, 200]
        assert seen[sized]["body"] == "hello upstream" and seen[sized]["path"] == "/api/a?x=1"
        assert seen[sized]["headers"]["cookie"] == "a=1; b=2"
        assert seen[sized]["headers"]["x-forwarded-proto"] == "https"
        assert seen[unsized]["body"] == "no length" and seen[get]["method"] == "GET"
        client.close()
        served.access(r'"POST /api/a\?x=1 HTTP/2\.0" 200 ')
    finally:
        served.stop()
    no_traceback(served)


def test_a_client_that_keeps_to_the_stream_limit_is_never_refused_through_the_proxy(tmp_path: Path,
                                                                                      upstream: int) -> None:
    """§5.1.2 counts open and half-closed streams. A proxied stream's task went on after its END_STREAM (closing
    the upstream connection), and the tasks were counted: nghttp -m 300, which opens a stream as one ends, had 100
    of 300 refused. Here 100 streams stay in flight and each one that ends is replaced at once."""
    served = serve_h2(tmp_path, "--proxy", f"http://127.0.0.1:{upstream}")
    try:
        client = Client(served)
        client.pump(lambda: client.conn.remote_settings.max_concurrent_streams == MAX_CONCURRENT_STREAMS)
        in_flight = {client.request(f"/r{i}") for i in range(MAX_CONCURRENT_STREAMS)}
        done: set[int] = set()
        while len(done) < 3 * MAX_CONCURRENT_STREAMS and not client.reset:
            client.pump(lambda waiting=frozenset(in_flight): bool(waiting & (client.ended | client.reset.keys())))
            finished = in_flight & (client.ended | client.reset.keys())
            in_flight -= finished
            done |= finished
            for _ in finished:
                if len(done) + len(in_flight) < 3 * MAX_CONCURRENT_STREAMS:
                    in_flight.add(client.request(f"/r{len(done) + len(in_flight)}"))
        assert not client.reset, sorted(client.reset.items())[:5]
        assert all(client.status(sid) == 200 for sid in done)
        client.close()
    finally:
        served.stop()
    no_traceback(served)


def test_expect_100_continue_is_answered_before_the_body(tmp_path: Path, upstream: int) -> None:
    """RFC 9110 §10.1.1: a client that waits for 100 Continue gets it as soon as the route reads the body."""
    served = serve_h2(tmp_path, "--proxy", f"http://127.0.0.1:{upstream}")
    try:
        client = Client(served)
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                       (b":path", b"/up"), (b"content-length", b"4"), (b"expect", b"100-continue")])
        client.flush()
        client.pump(lambda: client.informational, timeout=3)
        assert client.informational == [(sid, b"100")] and sid not in client.headers
        client.conn.send_data(sid, b"body", end_stream=True)
        client.flush()
        client.pump(lambda: sid in client.ended)
        seen = json.loads(client.bodies[sid])
        assert client.status(sid) == 200 and seen["body"] == "body" and "expect" not in seen["headers"]
        client.close()
    finally:
        served.stop()
    no_traceback(served)


def test_goaway_after_a_connection_error_names_no_stream_it_did_not_serve(served: Served) -> None:
    """Valid requests and, in the same read, a header block h2 refuses as a connection error: the requests were
    never started, so the GOAWAY must not cover them (RFC 9113 §6.8), or the client could not safely retry them."""
    client = Client(served, strict=False)
    for _ in range(3):
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                       (b":path", b"/index.html")], end_stream=True)
    bad = client.conn.get_next_available_stream_id()
    client.conn.send_headers(bad, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                   (b":path", b"/index.html"), (b"content-length", b"abc")])
    client.flush()  # all four in one write
    client.pump(lambda: client.closed, timeout=5)
    assert client.goaway is not None and client.goaway[1] == ErrorCodes.PROTOCOL_ERROR
    assert client.goaway[0] < min(client.headers, default=bad), (client.goaway, sorted(client.headers))
    no_traceback(served)


@pytest.mark.parametrize(("frame", "code"), [
    # HEADERS (END_STREAM|END_HEADERS) on stream 1 whose block indexes entry 0 of the HPACK table (§4.3)
    (b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x80", ErrorCodes.COMPRESSION_ERROR),
    # HEADERS whose block is an integer that never ends (HPACK decoding error)
    (b"\x00\x00\x06\x01\x05\x00\x00\x00\x01" + b"\xff" * 6, ErrorCodes.COMPRESSION_ERROR),
    (b"\x00\x00\x06\x04\x01\x00\x00\x00\x00" + b"\x00\x01\x00\x00\x10\x00", ErrorCodes.FRAME_SIZE_ERROR),  # §6.5
    (b"\x00\x00\x07\x06\x00\x00\x00\x00\x00" + b"\x00" * 7, ErrorCodes.FRAME_SIZE_ERROR),  # PING of 7 (§6.7)
    # a SETTINGS frame on a stream is PROTOCOL_ERROR (§6.5), ACK and payload or not
    (b"\x00\x00\x06\x04\x01\x00\x00\x00\x01" + b"\x00\x01\x00\x00\x10\x00", ErrorCodes.PROTOCOL_ERROR),
], ids=["hpack-index-0", "hpack-endless-integer", "settings-ack-with-payload", "ping-of-seven-bytes",
        "settings-ack-on-a-stream"])
def test_connection_errors_carry_the_code_rfc9113_names(served: Served, frame: bytes, code: ErrorCodes) -> None:
    """The GOAWAY's error code is the one RFC 9113 gives for the fault, not PROTOCOL_ERROR for everything."""
    client = Client(served, strict=False)
    client.sock.sendall(frame)
    client.pump(lambda: client.closed, timeout=5)
    assert client.goaway is not None and client.goaway[1] == code, client.goaway
    no_traceback(served)


def test_idle_connection_gets_goaway_after_idle_timeout(tmp_path: Path, root: Path) -> None:
    served = serve_h2(tmp_path, str(root), toml="[http]\nidle_timeout = 0.5\n")
    try:
        client = Client(served)
        sid = client.request("/index.html")
        client.pump(lambda: sid in client.ended)
        started = time.monotonic()
        client.pump(lambda: client.goaway is not None and client.closed, timeout=5)
        assert client.goaway is not None and client.goaway[1] == ErrorCodes.NO_ERROR
        assert client.goaway[0] == sid and 0.3 < time.monotonic() - started < 3
    finally:
        served.stop()


def test_sigterm_sends_goaway_and_finishes_the_stream_in_flight(tmp_path: Path, upstream: int) -> None:
    served = serve_h2(tmp_path, "--proxy", f"http://127.0.0.1:{upstream}")
    client = Client(served)
    seen = EchoUpstream.slow_arrivals
    slow = client.request("/slow")
    EchoUpstream.wait_slow(seen)  # at the upstream now: the server has started the stream
    served.signal(signal.SIGTERM)
    client.pump(lambda: client.goaway is not None)
    assert client.goaway is not None and client.goaway[0] == slow
    late = client.request("/late")  # after GOAWAY: refused, the client may retry it elsewhere
    client.pump(lambda: slow in client.ended and late in client.reset)
    assert client.status(slow) == 200 and json.loads(client.bodies[slow])["path"] == "/slow"
    assert client.reset[late] == ErrorCodes.REFUSED_STREAM
    client.pump(lambda: False)  # then the server closes the connection
    assert client.closed
    assert served.process.wait(timeout=10) == 0
    no_traceback(served)


def _serve_in_process(root: Path, state: TLSState, transport_type: type[ChannelTransport]
                      ) -> tuple[Channel, ChannelTransport, asyncio.Task[None]]:
    """``serve_h2_connection`` of static files under ``root`` on a ``Channel`` over ``transport_type`` (in the
    running loop); the task that serves it."""
    router = Router((StaticFiles(StaticRoute(root=root), FileCache()),))
    task: list[asyncio.Task[None]] = []
    channel = Channel(lambda ch: task.append(asyncio.get_running_loop().create_task(serve_h2_connection(
        ch, state, router=lambda: router, limits=HTTPLimits(), tracker=ConnectionTracker(), metrics=None,
        log_access=False))))
    transport = transport_type(channel)
    channel.connection_made(transport)
    return channel, transport, task[0]


def test_early_data_streams_follow_rfc8470_get_served_post_425(root: Path) -> None:
    """Streams whose HEADERS arrived in 0-RTT data: GET is served, POST gets 425 Too Early (in process)."""

    async def run() -> tuple[dict[int, int], bytes]:
        state = TLSState(None, early_bytes=lambda: 1 << 20, early=True,
                         make=lambda: TLSFields(version="TLSv1.3", suite="-", group="-", sni="-", alpn="h2",
                                                resumed=True, early_data=True, handshake_ms=0.0, client="-"))
        channel, transport, task = _serve_in_process(root, state, ChannelTransport)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        request = [(b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/index.html")]
        client.send_headers(1, [(b":method", b"GET"), *request], end_stream=True)
        client.send_headers(3, [(b":method", b"POST"), *request], end_stream=True)
        channel.data_received(client.data_to_send())  # all of it in the early data
        statuses: dict[int, int] = {}
        body = b""
        for _ in range(100):
            await asyncio.sleep(0.01)
            for event in client.receive_data(bytes(transport.data)):
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
            transport.data.clear()
            if len(statuses) == 2 and body:
                break
        transport.close()
        await asyncio.wait_for(task, 5)
        return statuses, body

    statuses, body = asyncio.run(run())
    assert statuses == {1: 200, 3: 425}
    assert body == b"<h1>h2</h1>\n"


def test_streams_queue_nothing_while_the_transport_is_paused(root: Path) -> None:
    """A client that opens its windows wide and reads nothing: once the transport pauses, no stream adds to its
    buffer (each of 100 streams queued a 64 KiB chunk first: 13 MB per connection; in process, a transport that
    pauses past 64 KiB stands in for the client's full socket)."""

    class Stalled(ChannelTransport):
        def write(self, data: bytes | bytearray | memoryview) -> None:
            super().write(data)
            if len(self.data) > 1 << 16 and self.channel is not None and not self.channel.paused:
                self.channel.pause_writing()

    async def run() -> int:
        state = TLSState(TLSFields(version="TLSv1.3", suite="-", group="-", sni="-", alpn="h2", resumed=False,
                                   early_data=False, handshake_ms=0.0, client="-"))
        channel, transport, task = _serve_in_process(root, state, Stalled)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        client.increment_flow_control_window(2**31 - 1 - 65535)
        for n in range(50):
            client.send_headers(1 + 2 * n, [(b":method", b"GET"), (b":scheme", b"https"),
                                            (b":authority", b"localhost"), (b":path", b"/big.bin")], end_stream=True)
        channel.data_received(client.data_to_send())
        await asyncio.sleep(0.5)
        queued = len(transport.data)
        transport.close()
        await asyncio.wait_for(task, 5)
        return queued

    queued = asyncio.run(run())
    assert (1 << 16) < queued < 4 * (1 << 16), queued  # about the high-water mark and one batch, not 50 x 64 KiB


def test_a_stream_reads_no_more_of_a_file_than_the_client_windows_take(root: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A client opening streams of a large file with INITIAL_WINDOW_SIZE 0 had each read a 64 KiB chunk it could not
    send (100 streams: 7.5 MB a connection, held until the idle timeout): reads wait for the window and take what
    it allows (in process, counting the bytes ``os.pread`` returns)."""
    read: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: read.append(len(b := real_pread(fd, n, offset))) or b)

    async def run() -> tuple[int, int]:
        state = TLSState(TLSFields(version="TLSv1.3", suite="-", group="-", sni="-", alpn="h2", resumed=False,
                                   early_data=False, handshake_ms=0.0, client="-"))
        channel, transport, task = _serve_in_process(root, state, ChannelTransport)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        for n in range(20):
            client.send_headers(1 + 2 * n, [(b":method", b"GET"), (b":scheme", b"https"),
                                            (b":authority", b"localhost"), (b":path", b"/big.bin")], end_stream=True)
        channel.data_received(client.data_to_send())
        loop, heads, seen = asyncio.get_running_loop(), set(), 0
        deadline = loop.time() + 5
        while len(heads) < 20 and loop.time() < deadline:  # every stream has answered its head, then waits
            await asyncio.sleep(0.01)
            events = client.receive_data(bytes(transport.data[seen:]))
            seen = len(transport.data)
            heads |= {e.stream_id for e in events if isinstance(e, h2.events.ResponseReceived)}
        shut = sum(read)
        client.increment_flow_control_window(1000, stream_id=1)
        channel.data_received(client.data_to_send())
        while sum(read) < 1000 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for _ in range(10):  # a few more turns of the loop: nothing else may be read
            await asyncio.sleep(0)
        opened = sum(read)
        transport.close()
        await asyncio.wait_for(task, 5)
        return shut, opened

    shut, opened = asyncio.run(run())
    assert shut == 0 and opened == 1000, (shut, opened)  # not 20 x 64 KiB, then exactly what one window allowed


def test_a_request_body_trickling_in_is_discarded_for_a_bounded_time(root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A GET whose body comes a byte at a time, each within the read timeout: the static route drops the body
    before answering, for http1.DISCARD_TIME in all as over HTTP/1.1, then resets the stream (CANCEL); it used to
    read for as long as the client kept sending (in process, DISCARD_TIME 0.5 s)."""
    monkeypatch.setattr(http1, "DISCARD_TIME", 0.5)

    async def run() -> tuple[dict[int, int], float]:
        state = TLSState(TLSFields(version="TLSv1.3", suite="-", group="-", sni="-", alpn="h2", resumed=False,
                                   early_data=False, handshake_ms=0.0, client="-"))
        channel, transport, task = _serve_in_process(root, state, ChannelTransport)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        client.initiate_connection()
        client.send_headers(1, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                (b":path", b"/index.html"), (b"content-length", b"1000")])
        loop = asyncio.get_running_loop()
        started, reset, seen = loop.time(), {}, 0
        while not reset and loop.time() - started < 3:
            client.send_data(1, b"x")
            channel.data_received(client.data_to_send())
            await asyncio.sleep(0.05)
            events = client.receive_data(bytes(transport.data[seen:]))
            seen = len(transport.data)
            reset = {e.stream_id: e.error_code for e in events if isinstance(e, h2.events.StreamReset)}
        took = loop.time() - started
        transport.close()
        await asyncio.wait_for(task, 5)
        return reset, took

    reset, took = asyncio.run(run())
    assert reset == {1: ErrorCodes.CANCEL} and took < 2, (reset, took)
