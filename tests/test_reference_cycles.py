"""A finished connection leaves no reference cycle behind: its objects are freed when it ends, by reference
counting, not later by the garbage collector.

Each connection used to be one big cycle (``TLSProtocol`` <-> ``TLSTransport``, the app and its transport, the
server's "connected" closure), so the whole connection (engine, record layer, buffers, transports, task) waited
for a collection: gen-0 collections every dozen connections, ~5% of a ``tlskit serve`` worker's CPU, and
~10% more CPU per connection from memory not reused while hot. These tests run real connections (Python's
``ssl`` and ``h2`` as clients, tlskit's asyncio client) with the collector off, then ask it what became garbage:
nothing of tlskit's may be among it. Both event loops: asyncio's and uvloop's transports let go of their
protocol differently.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import h2.connection
import h2.events
import pytest

from tests.certs import make_ca, make_leaf, write_pem
from tlskit.config import CertifiedKey, ServerConfig
from tlskit.io.asyncio import open_connection, start_server

PAGE = b"<!doctype html><title>cycles</title>\n"
LOOPS = ["asyncio", "uvloop"]


def _tlskit_garbage() -> collections.Counter[str]:
    """What a full collection finds unreachable (kept by DEBUG_SAVEALL), counted by type, tlskit's types only."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                                    if type(o).__module__.startswith("tlskit"))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _run(kind: str, main: Callable[[], Awaitable[None]]) -> None:
    factory = None
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(main(), 30))


# --- the clients (blocking, in a thread: Python's ssl and h2, an independent implementation) -------------------


def _context(alpn: str = "http/1.1") -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


def _read_until_closed(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _http1(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            _context().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")  # keep-alive
        tls.sendall(b"GET /missing HTTP/1.1\r\nHost: localhost\r\n\r\n")
        tls.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = _read_until_closed(tls)
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b"HTTP/1.1 404" in answer, answer[:200]


def _h2(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            _context("h2").wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", "/index.html"), (":scheme", "https"),
                              (":authority", "localhost")], end_stream=True)
        tls.sendall(conn.data_to_send())
        body, ended = b"", False
        while not ended:
            data = tls.recv(65536)
            assert data, "the server closed before the response ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                ended |= isinstance(event, h2.events.StreamEnded)
            tls.sendall(conn.data_to_send())
        conn.close_connection()
        tls.sendall(conn.data_to_send())
    assert body == PAGE


def _failures(port: int) -> None:
    """Connections that end without a request: garbage for a ClientHello, plain HTTP, a silent TCP probe, a
    client that resets mid-handshake."""
    for first in (b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            if first:
                raw.sendall(first)
                raw.recv(4096)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        ctx = _context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        raw.sendall(outgoing.read())
        raw.recv(4096)  # the server's flight: then a reset instead of our Finished
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


# --- the tests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LOOPS)
def test_served_connections_leave_no_cycles(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            collector_off: None) -> None:
    """``tlskit serve``'s connections (HTTP/1.1 keep-alive, HTTP/2, failed and abandoned handshakes, plain
    HTTP) are freed when they end."""
    from tlskit.serve.server import ServeProcess, build_site
    from tlskit.serve.settings import Flags, load_settings

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the development CA's home
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(PAGE)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]

    async def main() -> None:
        flags = Flags(root=root, ktls="off", access_log=True, alpn=("h2", "http/1.1"))
        served = ServeProcess(build_site(load_settings(flags)), flags, [listener], watch=False,
                              reload_signal=False)
        running = asyncio.create_task(served.run())
        try:
            for client in (_http1, _h2, _failures, _http1):
                await asyncio.to_thread(client, port)
            for _ in range(200):  # the server sees the last connections end
                if not served.tracker.open:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            garbage = _tlskit_garbage()
            assert not garbage, f"left for the garbage collector: {dict(garbage)}"
        finally:
            served.stop()
            await running

    _run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_stream_connections_leave_no_cycles(kind: str, tmp_path: Path, collector_off: None) -> None:
    """``start_server``/``open_connection`` (tlskit on both ends): both sides' objects are freed at the end."""
    root = make_ca()
    leaf = make_leaf(root, ["localhost"])
    cafile = write_pem(tmp_path / "ca.pem", [root])
    config = ServerConfig(certificates=(CertifiedKey(chain=(leaf.der,), private_key=leaf.key),))

    async def main() -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await start_server(echo, "127.0.0.1", 0, config=config)
        port = server.sockets[0].getsockname()[1]
        try:
            for _ in range(3):
                reader, writer = await open_connection("127.0.0.1", port, server_name="localhost",
                                                       cafile=cafile)
                writer.write(b"ping")
                assert await reader.read() == b"ping"
                writer.close()
                await writer.wait_closed()
            del reader, writer
            await asyncio.sleep(0.1)
            garbage = _tlskit_garbage()
            assert not garbage, f"left for the garbage collector: {dict(garbage)}"
        finally:
            server.close()
            await server.wait_closed()

    _run(kind, main)
