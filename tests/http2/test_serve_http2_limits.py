"""HTTP/2 in `tlskit serve` under abuse and at its limits, against the ``h2`` package as the client: rapid reset,
shut flow-control windows, header-list limits, REFUSED_STREAM over the stream limit (however many come in one
read), malformed requests and trailers, floods of frames that carry nothing, and header blocks left open."""

from __future__ import annotations

import contextlib
import os
import select
import ssl
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from hpack.table import table_entry_size
from hyperframe.frame import DataFrame, GoAwayFrame

from tests.http2.peer import BIG, Client, no_traceback, serve_h2
from tests.served import Served
from tlskit.serve.h2frames import InboundFrames
from tlskit.serve.http2 import MAX_CONCURRENT_STREAMS


def test_rapid_reset_is_answered_with_goaway_and_reset_streams_are_forgotten(tmp_path: Path, root: Path) -> None:
    """CVE-2023-44487: streams opened and reset at once cost the server, not the client. A few are forgotten (the
    idle timeout still closes the connection afterwards: nothing is left in flight); hundreds end it."""
    served = serve_h2(tmp_path, str(root), toml="[http]\nidle_timeout = 0.5\n")
    try:
        client = Client(served)
        for _ in range(20):
            sid = client.request("/big.bin")
            client.conn.reset_stream(sid, ErrorCodes.CANCEL)
        client.flush()
        client.pump(lambda: client.goaway is not None and client.closed, timeout=5)
        assert client.goaway is not None and client.goaway[1] == ErrorCodes.NO_ERROR  # the idle timeout's

        flood = Client(served)
        cut_off = False
        try:
            for _ in range(400):
                sid = flood.request("/big.bin")
                flood.conn.reset_stream(sid, ErrorCodes.CANCEL)
                if sid % 64 == 1:
                    flood.flush()
            flood.flush()
            flood.pump(lambda: flood.goaway is not None and flood.closed, timeout=5)
        except (ConnectionError, ssl.SSLError):
            cut_off = True  # the server closed while we were still sending (its GOAWAY unread)
        # Without the limit the streams would just be served and reset, and only the idle timeout's NO_ERROR
        # GOAWAY would come.
        assert cut_off or (flood.goaway is not None and flood.goaway[1] == ErrorCodes.ENHANCE_YOUR_CALM)
        healthy = Client(served)
        sid = healthy.request("/index.html")
        healthy.pump(lambda: sid in healthy.ended)
        assert healthy.status(sid) == 200
    finally:
        served.stop()
    no_traceback(served)


def test_a_stream_whose_window_stays_shut_is_reset_with_cancel(tmp_path: Path, root: Path) -> None:
    """A client may keep a stream's window shut; after idle_timeout the server gives up on the stream with CANCEL
    (RFC 9113 §7: no longer needed), not INTERNAL_ERROR (it did not fail)."""
    served = serve_h2(tmp_path, str(root), toml="[http]\nidle_timeout = 0.5\n")
    try:
        client = Client(served)
        client.consume = False  # 300 KB through the initial 64 KiB window: the rest waits for credit never given
        stalled = client.request("/big.bin")
        client.pump(lambda: stalled in client.reset, timeout=5)
        assert client.reset[stalled] == ErrorCodes.CANCEL and client.status(stalled) == 200
        client.close()
    finally:
        served.stop()
    no_traceback(served)


def test_streams_finish_when_the_client_returns_credit_a_window_at_a_time(tmp_path: Path, root: Path) -> None:
    """WINDOW_UPDATEs that arrive while a stream waits for the transport must not be lost (clients often give a
    window's credit back at once when it is used up)."""
    served = serve_h2(tmp_path, str(root), toml="[http]\nidle_timeout = 4\n")
    window = 100_000
    try:
        client = Client(served, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}, rcvbuf=16384)
        client.consume = False
        client.conn.increment_flow_control_window((1 << 31) - 1 - 65535)
        sids = [client.request("/big.bin") for _ in range(80)]
        time.sleep(0.5)  # the server fills the socket and waits for the transport
        unacked: dict[int, int] = {}
        deadline = time.monotonic() + 15
        while len(client.ended | set(client.reset)) < len(sids) and time.monotonic() < deadline:
            before = {sid: len(client.bodies.get(sid, b"")) for sid in sids}

            def progressed(before: dict[int, int] = before) -> bool:
                return any(len(client.bodies.get(s, b"")) != before[s] for s in sids)

            client.pump(progressed, timeout=5)
            for sid in sids:
                unacked[sid] = unacked.get(sid, 0) + len(client.bodies.get(sid, b"")) - before[sid]
                if unacked[sid] >= window:
                    client.conn.acknowledge_received_data(unacked.pop(sid), sid)
            client.flush()
        assert client.reset == {} and client.ended == set(sids)
        assert all(bytes(client.bodies[sid]) == BIG for sid in sids)
    finally:
        served.stop()


def test_header_list_limit_is_enforced_and_proxy_refuses_what_http11_cannot_carry(tmp_path: Path,
                                                                                 upstream: int) -> None:
    served = serve_h2(tmp_path, "--proxy", f"http://127.0.0.1:{upstream}")
    try:
        client = Client(served)
        odd = client.request("/api/x", headers=((b"x(y", b"1"),))  # a valid HTTP/2 name, not an HTTP/1.1 token
        spaced = client.request("/api/a b")
        client.pump(lambda: {odd, spaced} <= client.ended)
        assert [client.status(odd), client.status(spaced)] == [400, 400]
        # Over four times max_header_bytes (16 KiB) the HPACK decoder stops mid-block: the connection ends.
        huge = client.request("/api/y", headers=((b"x-big", b"v" * 100_000),))
        client.pump(lambda: client.goaway is not None, timeout=5)
        assert client.goaway is not None and client.goaway[1] == ErrorCodes.ENHANCE_YOUR_CALM
        assert huge not in client.headers
    finally:
        served.stop()
    no_traceback(served)


def test_header_list_over_the_limit_gets_431_and_the_connection_goes_on(served: Served) -> None:
    """RFC 9113 §10.5.1: a field block over SETTINGS_MAX_HEADER_LIST_SIZE (max_header_bytes, 16 KiB) is decoded, so
    the HPACK tables stay in step, and answered 431 on its stream; the next request on the connection is served."""
    client = Client(served)
    big = client.request("/index.html", headers=((b"x-big", b"v" * 20_000),))
    client.pump(lambda: big in client.ended)
    assert client.status(big) == 431
    after = client.request("/index.html", headers=((b"x-small", b"v" * 100),))
    client.pump(lambda: after in client.ended)
    assert client.status(after) == 200 and bytes(client.bodies[after]) == b"<h1>h2</h1>\n"
    assert client.goaway is None and not client.closed
    client.close()
    served.access(r'"GET /index\.html HTTP/2\.0" 431 ')
    no_traceback(served)


def test_client_goaway_lets_the_stream_in_flight_finish_then_the_server_closes(served: Served) -> None:
    """RFC 9113 §6.8: a client's GOAWAY (last stream 0: it takes no pushed streams) ends the connection once the
    server has answered the streams it is processing; the rest of a stalled response still follows the client's
    WINDOW_UPDATEs. A stream the client opens after its GOAWAY is refused."""
    client = Client(served, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384})
    client.consume = False  # the response stalls on the client's window
    big = client.request("/big.bin")
    client.pump(lambda: len(client.bodies.get(big, b"")) >= 16384)
    client.send_goaway()
    late = client.request("/index.html")
    client.consume = True
    client.conn.acknowledge_received_data(len(client.bodies[big]), big)
    client.flush()
    client.pump(lambda: big in client.ended and late in client.reset)
    assert client.status(big) == 200 and bytes(client.bodies[big]) == BIG
    assert client.reset[late] == ErrorCodes.REFUSED_STREAM
    client.pump(lambda: False)  # then the server closes the connection
    assert client.closed and client.goaway == (big, ErrorCodes.NO_ERROR)
    served.access(r'"GET /big\.bin HTTP/2\.0" 200 300000 ')
    no_traceback(served)


def test_client_goaway_is_kept_from_h2_whatever_the_reads() -> None:
    """The server keeps the client's GOAWAY from h2 (which would stop reading the connection): found in every
    chunking of the bytes, also after a header block in CONTINUATION frames; everything else passes on intact."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
                            (b":path", b"/"), (b"x-big", b"v" * 40_000)])  # HEADERS and CONTINUATIONs
    client.send_data(1, b"d" * 5000, end_stream=True)
    before = client.data_to_send()
    client.ping(b"12345678")
    after = client.data_to_send()
    sent = before + GoAwayFrame(0, last_stream_id=0, error_code=0, additional_data=b"bye").serialize() + after
    for size in (1, 5, 9, 17, 4096, len(sent)):
        inbound, passed, goaways = InboundFrames(blocks_per_part=MAX_CONCURRENT_STREAMS), b"", []
        for i in range(0, len(sent), size):
            for part in inbound.split(sent[i:i + size], 16384):
                if isinstance(part, GoAwayFrame):
                    goaways.append((len(passed), part.additional_data))
                else:
                    passed += part
        assert passed == before + after and goaways == [(len(before), b"bye")], size


def test_streams_over_max_concurrent_streams_are_refused_not_the_connection(served: Served) -> None:
    """RFC 9113 §5.1.2: HEADERS over SETTINGS_MAX_CONCURRENT_STREAMS is a stream error (REFUSED_STREAM); once the
    client has reset its streams in flight, a new one on the same connection is served. When the connection ends,
    one log line names the peer, SNI and how many streams were refused why."""
    client = Client(served, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
    client.consume = False  # every response stalls on its stream's window: the stream stays open
    client.conn.increment_flow_control_window((1 << 31) - 1 - 65535)  # but not on the connection's
    # All sent before the client has read the server's SETTINGS: h2 would not open more than the limit after.
    sids = [client.request("/big.bin") for _ in range(MAX_CONCURRENT_STREAMS + 3)]
    accepted, refused = sids[:MAX_CONCURRENT_STREAMS], sids[MAX_CONCURRENT_STREAMS:]
    client.pump(lambda: set(accepted) <= client.headers.keys() and set(refused) <= client.reset.keys())
    assert [client.reset[sid] for sid in refused] == [ErrorCodes.REFUSED_STREAM] * 3
    assert all(client.status(sid) == 200 for sid in accepted) and not client.reset.keys() & set(accepted)
    for sid in accepted:
        client.conn.reset_stream(sid, ErrorCodes.CANCEL)
    after = client.request("/index.html")  # in the same read as the resets
    client.pump(lambda: after in client.ended)
    assert client.status(after) == 200 and client.goaway is None
    client.close()
    served.wait_log(r"127\.0\.0\.1 sni=localhost: HTTP/2 streams refused: 3 over SETTINGS_MAX_CONCURRENT_STREAMS$")
    no_traceback(served)


def test_over_300_streams_in_one_read_are_refused_each_not_the_connection(served: Served) -> None:
    """RFC 9113 §5.1.2 asks for REFUSED_STREAM on each stream over the limit, however many arrive at once. h2
    ends the connection past its own ceiling (300 open streams) within one receive_data: the server feeds it the
    read in runs, refusing the streams of one before h2 counts the next. (A client with no history of served
    requests would trip the rapid-reset defence instead: this one has served 150 first.)"""
    client = Client(served)
    warm = [client.request("/index.html") for _ in range(MAX_CONCURRENT_STREAMS)]
    client.pump(lambda: client.ended >= set(warm))
    warm += [client.request("/index.html") for _ in range(50)]
    client.pump(lambda: client.ended >= set(warm))
    settings = client.conn.remote_settings  # lift h2's own limit: it would refuse to open more than 100
    settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 1000
    settings.acknowledge()
    burst = []
    for _ in range(320):  # encoded, not sent: all in one write of ~5 KB, one TLS record, one read
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                       (b":path", b"/index.html")], end_stream=True)
        burst.append(sid)
    client.flush()
    client.pump(lambda: client.ended | client.reset.keys() >= set(burst) or client.closed)
    assert client.goaway is None and not client.closed
    served_now = [sid for sid in burst if sid in client.ended]
    assert len(served_now) == MAX_CONCURRENT_STREAMS and all(client.status(sid) == 200 for sid in served_now)
    assert [client.reset[sid] for sid in burst if sid not in client.ended] == [ErrorCodes.REFUSED_STREAM] * 220
    after = client.request("/index.html")
    client.pump(lambda: after in client.ended)
    assert client.status(after) == 200
    client.close()
    no_traceback(served)


def test_malformed_request_headers_reset_their_stream_only(served: Served) -> None:
    """RFC 9113 §8.1.1: a malformed request (no :path, an uppercase field name) is a stream error: RST_STREAM with
    PROTOCOL_ERROR, and the other streams on the connection are served."""
    client = Client(served, strict=False)
    no_path = client.conn.get_next_available_stream_id()
    client.conn.send_headers(no_path, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost")],
                             end_stream=True)
    upper = client.request("/index.html", headers=((b"X-Upper", b"1"),))
    with_body = client.request("/index.html", "POST", b"x" * 1000, headers=((b"Bad", b"1"),))
    ok = client.request("/index.html")
    client.pump(lambda: {no_path, upper, with_body} <= client.reset.keys() and ok in client.ended)
    assert [client.reset[sid] for sid in (no_path, upper, with_body)] == [ErrorCodes.PROTOCOL_ERROR] * 3
    assert client.status(ok) == 200 and client.goaway is None
    again = client.request("/index.html")
    client.pump(lambda: again in client.ended)
    assert client.status(again) == 200
    client.close()
    no_traceback(served)


def test_data_the_client_had_in_flight_on_a_stream_the_server_reset_is_ignored(served: Served) -> None:
    """RFC 9113 §5.1: frames on a stream after we sent its RST_STREAM are ignored. h2 answered each DATA frame with
    RST_STREAM (STREAM_CLOSED): as many frames back as the client had in flight. Their bytes still go back to the
    connection window (else 17 MB would be a FLOW_CONTROL_ERROR)."""
    client = Client(served, strict=False)
    refused = client.conn.get_next_available_stream_id()
    client.conn.send_headers(refused, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                       (b":path", b"/"), (b"X-Upper", b"1")])  # malformed: PROTOCOL_ERROR
    client.flush()
    client.pump(lambda: refused in client.reset)
    assert client.reset[refused] == ErrorCodes.PROTOCOL_ERROR
    in_flight = b"".join(DataFrame(refused, data=b"x" * 16384).serialize() for _ in range(3))
    client.sock.sendall(in_flight * 350)  # 17 MB: over the connection window (16 MiB) unless credit comes back
    after = client.request("/index.html")  # after the DATA frames: its answer comes after their RSTs
    client.pump(lambda: after in client.ended)
    assert client.status(after) == 200
    assert client.reset_frames == [refused] and client.goaway is None
    client.close()
    no_traceback(served)


def test_malformed_trailers_count_as_resets_so_a_flood_ends_the_connection(served: Served) -> None:
    """A stream whose trailers are malformed (a pseudo-header in them) is reset by the server after its task
    started: it costs the server as a client's RST_STREAM does, so hundreds of them are rapid reset
    (CVE-2023-44487) and end the connection with ENHANCE_YOUR_CALM, while a few leave it serving."""
    client = Client(served, strict=False)
    few = []
    for _ in range(3):
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"),
                                       (b":authority", b"localhost"), (b":path", b"/index.html")])
        client.conn.send_data(sid, b"x")
        client.conn.send_headers(sid, [(b":path", b"/again")], end_stream=True)
        few.append(sid)
    client.flush()
    client.pump(lambda: set(few) <= client.reset.keys())
    assert [client.reset[sid] for sid in few] == [ErrorCodes.PROTOCOL_ERROR] * 3 and client.goaway is None
    cut_off = False
    try:
        for i in range(400):
            sid = client.conn.get_next_available_stream_id()
            client.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"),
                                           (b":authority", b"localhost"), (b":path", b"/index.html")])
            client.conn.send_headers(sid, [(b":path", b"/again")], end_stream=True)
            if i % 32 == 31:  # read the resets, or h2 stops us at the server's MAX_CONCURRENT_STREAMS
                client.flush()
                client.pump(lambda sid=sid: sid in client.reset or client.closed)
                if client.closed:
                    break
        client.flush()
        client.pump(lambda: client.goaway is not None and client.closed, timeout=10)
    except (ConnectionError, ssl.SSLError):
        cut_off = True  # closed while we were still sending
    # Without counting them, every stream is reset and the connection stays open (the pump times out).
    assert cut_off or (client.goaway is not None and client.goaway[1] == ErrorCodes.ENHANCE_YOUR_CALM)
    no_traceback(served)


def test_streams_refused_while_draining_after_a_client_goaway_stay_bounded(served: Served) -> None:
    """After a client's GOAWAY the server drains: new streams are refused. A client that keeps opening them while
    one stream stays in flight (its window shut) is cut off like a rapid-reset flood, not refused forever. The
    refusals are summed up in one log line naming the peer and SNI, not written to the access log."""
    client = Client(served, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
    client.consume = False
    slow = client.request("/big.bin")
    client.pump(lambda: slow in client.headers)
    client.send_goaway()
    cut_off = False
    try:
        for i in range(1000):
            sid = client.request("/index.html")
            if i % 32 == 31:  # read the refusals, or h2 stops us at the server's MAX_CONCURRENT_STREAMS
                client.pump(lambda sid=sid: sid in client.reset or client.closed)
                if client.closed:
                    break
        client.pump(lambda: client.closed, timeout=10)
    except (ConnectionError, ssl.SSLError):
        cut_off = True
    assert cut_off or (client.closed and client.goaway is not None
                       and client.goaway[1] == ErrorCodes.ENHANCE_YOUR_CALM)
    served.wait_log(r"127\.0\.0\.1 sni=localhost: HTTP/2 streams refused: 2\d\d after GOAWAY$")
    assert not any('"GET /index.html' in line for line in served.log)
    no_traceback(served)


def test_cookie_crumbs_count_as_separate_fields_against_the_header_list_limit(served: Served) -> None:
    """RFC 9113 §6.5.2 counts 32 octets per field; h2 joins cookie crumbs (§8.2.3) into one field, so the server
    counts each crumb again: 600 one-byte cookies (23,579 bytes as sent, over the 16 KiB limit) get 431."""
    client = Client(served)
    sid = client.request("/index.html", headers=tuple((b"cookie", b"c") for _ in range(600)))
    client.pump(lambda: sid in client.ended)
    assert client.status(sid) == 431
    ok = client.request("/index.html", headers=tuple((b"cookie", b"c") for _ in range(100)))
    client.pump(lambda: ok in client.ended)
    assert client.status(ok) == 200
    client.close()
    no_traceback(served)


def test_path_must_be_origin_form_and_is_routed_normalized(served: Served) -> None:
    """RFC 9113 §8.3.1: ``:path`` is origin form (or "*"); an absolute URL there gets 400 on its stream. Dot
    segments are resolved before routing, as over HTTP/1.1."""
    client = Client(served, strict=False)
    absolute = client.request("https://public.example/index.html")
    dotted = client.request("/x/../%69ndex.html")
    above = client.request("/../index.html")
    client.pump(lambda: {absolute, dotted, above} <= client.ended)
    assert [client.status(s) for s in (absolute, dotted, above)] == [400, 200, 400]
    client.close()
    no_traceback(served)


def test_a_path_with_raw_utf8_is_logged_byte_by_byte(served: Served) -> None:
    """h2 (unlike h11) takes any bytes in :path; the access log shows them as nginx does, ``\\xHH`` each."""
    client = Client(served)
    sid = client.request("/caf\u00e9", headers=((b"user-agent", "\u00fc".encode()),))
    client.pump(lambda: sid in client.ended)
    assert client.status(sid) == 404
    client.close()
    served.wait_log(r'"GET /caf\\xc3\\xa9 HTTP/2\.0" 404 .* "\\xc3\\xbc" ')


def test_a_stream_of_oversized_header_lists_ends_the_connection(served: Served) -> None:
    """Each list over max_header_bytes was checked whole by h2 before its 431 (in Python, 7 requests' worth of CPU
    for a list an HPACK reference makes 60 KB out of a few bytes), and the next came at once: they now count as
    streams that served nothing, and a run of them ends the connection (nginx: at the first)."""
    client = Client(served)
    header = ((b"x-big", b"v" * 16_500),)
    sent = []
    for _ in range(260):
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                       (b":path", b"/index.html"), *header], end_stream=True)
        sent.append(sid)
        if len(sent) % 20 == 0:
            client.flush()
            client.pump(lambda: client.goaway is not None or all(s in client.ended for s in sent), timeout=20)
            if client.goaway is not None or client.closed:
                break
    client.flush()
    client.pump(lambda: client.goaway is not None, timeout=20)
    assert client.goaway is not None and client.goaway[1] == ErrorCodes.ENHANCE_YOUR_CALM
    assert all(client.status(s) == 431 for s in sent if s in client.headers)
    client.close()
    no_traceback(served)


def test_a_header_block_left_open_is_bounded_in_size_and_time(tmp_path: Path, root: Path) -> None:
    """HEADERS without END_HEADERS then CONTINUATION frames: about 1 MB of header block per connection was held
    (16 KB advertised), and one CONTINUATION a minute kept a connection open for an hour (header_timeout was
    never applied to HTTP/2)."""
    from hyperframe.frame import ContinuationFrame, HeadersFrame

    served = serve_h2(tmp_path, str(root), toml="[http]\nheader_timeout = 1\nidle_timeout = 30\n")
    try:
        for slow, empty in ((False, False), (True, False), (True, True)):  # empty: fragments of zero bytes
            client = Client(served)
            client.flush()
            opening = HeadersFrame(1, data=b"" if empty else client.conn.encoder.encode(
                [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/")]))
            client.sock.sendall(opening.serialize())
            started = time.monotonic()
            if slow:
                client.pump(lambda c=client: bool(c.conn.remote_settings), timeout=5)
                for _ in range(20):  # one empty CONTINUATION every 0.4 s, until the server answers
                    if select.select([client.sock], [], [], 0.4)[0]:
                        break  # (writing on would meet a closed socket: its RST drops the GOAWAY unread)
                    client.sock.sendall(ContinuationFrame(1, data=b"").serialize())
            else:
                with contextlib.suppress(OSError):
                    for _ in range(10):
                        client.sock.sendall(ContinuationFrame(1, data=b"\x00" * 16_000).serialize())
            with contextlib.suppress(OSError):  # (its acknowledgements may meet the closed connection)
                client.pump(lambda c=client: c.goaway is not None, timeout=10)
            assert client.goaway is not None, slow
            assert client.goaway[1] == (ErrorCodes.PROTOCOL_ERROR if slow else ErrorCodes.ENHANCE_YOUR_CALM)
            if slow:
                assert time.monotonic() - started < 3  # header_timeout = 1 (it was the 30 s idle timeout, renewed)
            client.close()
        no_traceback(served)
    finally:
        served.stop()


def _unknown_frame() -> bytes:
    return (0).to_bytes(3, "big") + bytes([0x20, 0]) + (0).to_bytes(4, "big")  # type 0x20: to be ignored


@pytest.mark.parametrize("kind", ["empty-data", "window-update", "priority", "unknown", "ping", "data-on-closed"])
def test_a_flood_of_frames_that_carry_nothing_ends_the_connection(served: Served, kind: str) -> None:
    """Each was processed without limit (CVE-2019-9518/-9515/-9512): one connection held the worker at 100%
    CPU and another connection's request took 3 s instead of 0.1; nginx says "http2 flood detected". A few
    hundred of them (a client's normal use) leave the connection serving."""
    from hyperframe.frame import DataFrame, PingFrame, PriorityFrame, WindowUpdateFrame

    client = Client(served)
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"),
                                   (b":path", b"/index.html")])  # its body stays open
    client.flush()
    done = client.request("/index.html")
    client.pump(lambda: done in client.ended)  # a stream closed both ways: DATA on it gets h2's RST_STREAM each

    def frame(i: int) -> bytes:
        match kind:
            case "empty-data":
                return DataFrame(sid).serialize()
            case "data-on-closed":
                return DataFrame(done, data=b"x").serialize()
            case "window-update":
                return WindowUpdateFrame(0, window_increment=1).serialize()
            case "priority":
                return PriorityFrame(sid + 2 * (i % 50 + 1), depends_on=0, stream_weight=16).serialize()
            case "unknown":
                return _unknown_frame()
            case _:
                return PingFrame(0, opaque_data=i.to_bytes(8, "big")).serialize()

    def send(count: int) -> None:
        for start_at in range(0, count, 500):
            client.sock.sendall(b"".join(frame(i) for i in range(start_at, min(count, start_at + 500))))
            while select.select([client.sock], [], [], 0)[0] or client.sock.pending():  # read the PING ACKs
                data = client.sock.recv(65536)
                if not data:
                    client.closed = True
                    return
                client.conn.receive_data(client._without_goaway(data))  # (h2 answers nothing to PING ACKs)

    send(300)
    assert client.goaway is None and not client.closed
    other = client.request("/index.html")
    client.pump(lambda: other in client.ended)  # still serving
    try:
        send(12_000)
        client.pump(lambda: client.goaway is not None or client.closed, timeout=10)
    except (ConnectionError, ssl.SSLError):
        pass  # closed while we were still sending
    assert client.goaway is not None and client.goaway[1] == ErrorCodes.ENHANCE_YOUR_CALM, client.goaway
    served.wait_log(r"HTTP/2 connection ended: a flood of \d+ frames that carry nothing")
    no_traceback(served)


def test_a_client_that_returns_credit_for_every_data_frame_is_not_a_flood(tmp_path: Path, root: Path) -> None:
    """A slow client with a 1 KiB window that sends a stream and a connection WINDOW_UPDATE for each DATA frame
    was cut off as a flood after 10 MB (found by the diff review): its updates are what our DATA frames ask."""
    (root / "large.bin").write_bytes(os.urandom(12 << 20))
    served = serve_h2(tmp_path, str(root))
    try:
        client = Client(served, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
        client.consume = False
        sid = client.request("/large.bin")
        received = 0
        deadline = time.monotonic() + 120
        while sid not in client.ended and not client.closed:
            assert time.monotonic() < deadline
            data = client.sock.recv(65536)
            if not data:
                break
            for event in client.conn.receive_data(client._without_goaway(data)):
                if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                    received += len(event.data)
                    client.conn.increment_flow_control_window(event.flow_controlled_length)
                    client.conn.increment_flow_control_window(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    client.ended.add(event.stream_id)
            client.flush()
        assert client.goaway is None and received == 12 << 20
    finally:
        served.stop()


def test_the_response_header_table_stays_small_whatever_the_client_allows(served: Served) -> None:
    """A client announcing SETTINGS_HEADER_TABLE_SIZE 2^31-1 made every new response field value (each Range's
    Content-Range here) a table entry for good, each response costing more than the last (h2's encoder searches its
    table linearly): the encoder keeps to 4096 bytes (RFC 7541 §4.2), evicting, and the client's decoder agrees."""
    client = Client(served, {h2.settings.SettingCodes.HEADER_TABLE_SIZE: 2**31 - 1})
    try:
        for batch in range(4):
            sids = {client.request("/big.bin", headers=((b"range", b"bytes=%d-%d" % (n, n)),)): n
                    for n in range(batch * 50, batch * 50 + 50)}
            client.pump(lambda sids=sids: all(sid in client.ended for sid in sids))
            for sid, n in sids.items():
                assert client.status(sid) == 206 and bytes(client.bodies[sid]) == BIG[n:n + 1]
                assert client.headers[sid][b"content-range"] == b"bytes %d-%d/%d" % (n, n, len(BIG))
        entries = client.conn.decoder.header_table.dynamic_entries
        held = sum(table_entry_size(name, value) for name, value in entries)
        assert 0 < held <= 4096, held  # 200 Content-Ranges are ~12 kB of entries
    finally:
        client.close()
    no_traceback(served)
