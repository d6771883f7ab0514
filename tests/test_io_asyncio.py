"""The asyncio front end (tlskit.io.asyncio): streams over our protocol, against itself and Python's ssl."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

import tlskit
from tests.certs import make_ca, make_leaf, write_pem
from tlskit.config import CertifiedKey, ClientConfig, EarlyDataPolicy, ServerConfig
from tlskit.connection import Connection
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, HandshakeTimeout
from tlskit.events import ApplicationData, ConnectionClosed, HandshakeComplete
from tlskit.io.asyncio import open_connection, start_server
from tlskit.io.common import TLSSession
from tlskit.pki.verify import TrustStore
from tlskit.stores.memory import MemoryReplayStore, MemorySessionStore
from tlskit.tickets.keyring import TicketKey, TicketKeyRing

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class PKI:
    def __init__(self, tmp: Path) -> None:
        root = make_ca()
        self.leaf = make_leaf(root, ["localhost", "127.0.0.1"])
        self.trust = TrustStore(roots=(root.cert,))
        self.cert_pem, self.key_pem = self.leaf.write(tmp, "server")
        self.ca_pem = write_pem(tmp / "ca.pem", [root])
        self.server_config = ServerConfig(
            certificates=(CertifiedKey(chain=(self.leaf.der,), private_key=self.leaf.key),),
            alpn=("http/1.1",),
        )


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def _half_closing_request(pki: PKI, port: int) -> bytes:
    """A blocking tlskit client: sends b"request", shuts its write side (close_notify + FIN), reads to EOF."""
    with tlskit.connect("127.0.0.1", port, server_name="localhost", cafile=pki.ca_pem, timeout=10) as tls:
        tls.sendall(b"request")
        tls.shutdown(socket.SHUT_WR)
        answer = b""
        while data := tls.recv(4096):
            answer += data
        return answer


@contextlib.asynccontextmanager
async def serving(pki: PKI, handler: Handler, **kw: object) -> AsyncIterator[int]:
    server = await start_server(handler, "127.0.0.1", 0, config=pki.server_config, **kw)  # type: ignore[arg-type]
    async with server:
        yield server.sockets[0].getsockname()[1]


def test_asyncio_client_and_server_stream_data(pki: PKI) -> None:
    async def main() -> None:
        async with serving(pki, echo) as port:
            reader, writer = await open_connection("localhost", port, trust=pki.trust, alpn=["http/1.1"])
            tls = writer.get_extra_info("ssl_object")
            assert tls.version() == "TLSv1.3" and writer.get_extra_info("alpn") == "http/1.1"
            assert writer.get_extra_info("cipher") == tls.cipher()
            assert writer.get_extra_info("peercert")["subjectAltName"][0] == ("DNS", "localhost")
            assert writer.get_extra_info("peercert_der") == pki.leaf.der
            assert writer.get_extra_info("peername")[1] == port
            payload = bytes(range(256)) * 16384  # 4 MiB: exercises flow control both ways
            writer.write(payload)
            writer.write_eof()  # close_notify; the echo server sees EOF and closes
            echoed = await reader.read()
            assert echoed == payload
            writer.close()
            await writer.wait_closed()

    run(main())


def test_half_close_lets_the_server_answer_after_client_eof(pki: PKI) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's close_notify
        writer.write(b"got %d bytes" % len(request))
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with serving(pki, handler) as port:
            reader, writer = await open_connection("127.0.0.1", port, cafile=pki.ca_pem)
            writer.writelines([b"abc", b"def"])
            writer.write_eof()
            assert await reader.read() == b"got 6 bytes"
            writer.close()

    run(main())


def test_python_ssl_asyncio_client_against_our_server(pki: PKI) -> None:
    async def main() -> None:
        ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
        ctx.set_alpn_protocols(["http/1.1"])
        async with serving(pki, echo) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                           server_hostname="localhost")
            assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_our_asyncio_client_against_python_ssl_server(pki: PKI) -> None:
    async def main() -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert_pem, pki.key_pem)
        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await tlskit.open_connection("localhost", port, cafile=pki.ca_pem)  # as the README
            assert writer.get_extra_info("cipher")[1] == "TLSv1.3"
            writer.write(b"hello " * 1000)
            assert await reader.readexactly(6000) == b"hello " * 1000
            writer.close()
            await writer.wait_closed()

    run(main())


def test_client_handshake_timeout_against_a_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()  # Python 3.12.1+: Server.wait_closed() waits for every connection to close

    async def main() -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            started = time.monotonic()
            with pytest.raises(HandshakeTimeout):
                await open_connection("127.0.0.1", port, verify_peer=False, handshake_timeout=0.3)
            assert time.monotonic() - started < 2

    run(main())


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_cancelling_open_connection_while_it_connects_leaves_nothing_unretrieved(
        pki: PKI, monkeypatch: pytest.MonkeyPatch, use_uvloop: bool) -> None:
    """A timeout that fires as the TCP connection is made (the task cancelled inside create_connection, after
    connection_made): asyncio closes the transport, and the handshake's UnexpectedEOF went to a future nobody
    awaited ("Future exception was never retrieved"); as with asyncio+ssl, nothing is reported now."""
    import tlskit.io.asyncio as front

    victim: list[asyncio.Task[object]] = []
    made = front.TLSProtocol.connection_made

    def connection_made(self: front.TLSProtocol, transport: asyncio.BaseTransport) -> None:
        made(self, transport)
        if not self.session.conn.is_client:
            return
        victim[0].cancel()  # where asyncio.timeout() or wait_for can expire

    monkeypatch.setattr(front.TLSProtocol, "connection_made", connection_made)
    seen: list[dict[str, object]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: seen.append(context))
        async with serving(pki, echo) as port:
            victim.append(asyncio.ensure_future(tlskit.open_connection("localhost", port, trust=pki.trust)))
            with pytest.raises(asyncio.CancelledError):
                await victim[0]
            await asyncio.sleep(0.1)
            gc.collect()
            await asyncio.sleep(0.01)

    if use_uvloop:
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
    else:
        asyncio.run(main())
    assert not seen, [context.get("message") for context in seen]


def test_writes_after_close_or_failure_are_dropped_as_asyncio_does(pki: PKI) -> None:
    """asyncio's transports (ssl's too) drop what is written once the connection is closing or has failed, and
    report the failure from drain()/read(); they raised RuntimeError / ConnectionClosedError from write()."""
    async def garbage_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.transport._tls.raw_transport  # type: ignore[attr-defined]
        raw.write(b"\x17\x03\x03\x00\x20" + bytes(32))  # a record that cannot authenticate
        await reader.read()

    async def main() -> None:
        async with serving(pki, garbage_then_wait) as port:
            reader, writer = await tlskit.open_connection("localhost", port, trust=pki.trust)
            with pytest.raises(tlskit.AlertError, match="bad_record_mac"):
                await reader.read(100)
            writer.write(b"after the failure")  # dropped, not raised
            with pytest.raises(tlskit.AlertError):
                await writer.drain()
            writer.close()
            writer.write(b"after close")
        async with serving(pki, echo) as port:
            reader, writer = await tlskit.open_connection("localhost", port, trust=pki.trust)
            writer.write_eof()
            with pytest.raises(RuntimeError, match="write_eof"):
                writer.write(b"after write_eof")
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()

    run(main())


def test_a_buffered_protocol_app_gets_the_stream_in_its_own_buffers(pki: PKI) -> None:
    """asyncio.BufferedProtocol apps (get_buffer/buffer_updated) work over TLSProtocol as over asyncio's own
    transports; a 1000-byte buffer takes a 300 KB echo in pieces (it failed an assertion before)."""
    from tlskit.io.asyncio import TLSProtocol
    from tlskit.io.common import client_config

    payload = os.urandom(300_000)

    class Collector(asyncio.BufferedProtocol):
        def __init__(self) -> None:
            self.buffer = bytearray(1000)
            self.got = bytearray()
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            cast(asyncio.Transport, transport).write(payload)
            cast(asyncio.Transport, transport).write_eof()

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buffer)

        def buffer_updated(self, nbytes: int) -> None:
            self.got += self.buffer[:nbytes]

        def eof_received(self) -> bool:
            self.done.set_result(None)
            return False

    async def main() -> None:
        async with serving(pki, echo) as port:
            app = Collector()
            tls = TLSProtocol(TLSSession(client_config("localhost", server_name=None, cafile=None, trust=pki.trust,
                                                       alpn=(), config=None, overrides={})), app)
            await asyncio.get_running_loop().create_connection(lambda: tls, "127.0.0.1", port)
            await asyncio.wait_for(app.done, 10)
            assert bytes(app.got) == payload

    run(main())


def test_loop_sendfile_works_on_our_transport(pki: PKI, tmp_path: Path) -> None:
    """loop.sendfile(transport, file) (what aiohttp's FileResponse calls) sends the file as on asyncio's ssl
    transports; it raised RuntimeError "sendfile is not supported"."""
    data = os.urandom(1_500_000)
    path = tmp_path / "file.bin"
    path.write_bytes(data)

    async def send_file(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with path.open("rb") as f:
            sent = await asyncio.get_running_loop().sendfile(writer.transport, f)
        writer.write(str(sent).encode())
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with serving(pki, send_file) as port:
            reader, writer = await tlskit.open_connection("localhost", port, trust=pki.trust)
            got = await reader.read()
            assert got[: len(data)] == data and got[len(data):] == str(len(data)).encode()
            writer.close()

    run(main())


def test_server_drops_and_logs_a_client_that_never_says_hello(pki: PKI, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    async def main() -> None:
        async with serving(pki, echo, handshake_timeout=0.2) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            assert await reader.read() == b""  # the server closed on us
            assert time.monotonic() - started < 2
            writer.close()

    with caplog.at_level(logging.INFO, logger="tlskit.io"):
        run(main())
    [record] = [r for r in caplog.records if r.name == "tlskit.io"]
    assert record.levelno == logging.INFO  # client-caused, as nginx logs it (a scanner must not fill warnings)
    assert "127.0.0.1:" in record.getMessage() and "did not complete within 0.2 s" in record.getMessage()


def test_wrong_hostname_raises_and_the_server_logs_peer_and_sni(pki: PKI, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    async def main() -> None:
        async with serving(pki, echo) as port:
            with pytest.raises(CertificateError) as info:
                await open_connection("127.0.0.1", port, server_name="wrong.example", cafile=pki.ca_pem)
            assert info.value.description is AlertDescription.bad_certificate
            for _ in range(100):  # the server logs when the alert arrives
                if caplog.records:
                    break
                await asyncio.sleep(0.01)

    with caplog.at_level(logging.INFO, logger="tlskit.io"):
        run(main())
    [record] = [r for r in caplog.records if r.name == "tlskit.io"]
    message = record.getMessage()
    assert "TLS handshake with 127.0.0.1:" in message and "(SNI wrong.example) failed" in message


def _log_of_rejection_by_python_ssl(pki: PKI, caplog: pytest.LogCaptureFixture) -> str:
    """What our server logs when a Python ssl client (OpenSSL) rejects its certificate as unknown_ca."""
    ctx = ssl.create_default_context(cafile=str(write_pem(pki.ca_pem.parent / "other.pem", [make_ca()])))

    def client(port: int) -> None:  # blocking ssl: asyncio's ssl transport drops the alert on failure
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")

    async def main() -> None:
        async with serving(pki, echo) as port:
            await asyncio.to_thread(client, port)
            for _ in range(200):
                if caplog.records:
                    break
                await asyncio.sleep(0.01)

    with caplog.at_level(logging.INFO, logger="tlskit.io"):
        run(main())
    [record] = [r for r in caplog.records if r.name == "tlskit.io"]
    return record.getMessage()


def test_server_logs_a_client_that_does_not_trust_it(pki: PKI, caplog: pytest.LogCaptureFixture) -> None:
    message = _log_of_rejection_by_python_ssl(pki, caplog)
    assert "TLS handshake with 127.0.0.1:" in message and "(SNI localhost) failed: " in message


def test_server_log_names_the_alert_a_python_ssl_client_sent(pki: PKI, caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    assert "failed: peer sent alert unknown_ca" in _log_of_rejection_by_python_ssl(pki, caplog)


def test_server_session_names_the_sni_of_the_client_hello(pki: PKI) -> None:
    server = TLSSession(pki.server_config)
    client = TLSSession(ClientConfig(server_name="example.org", trust=pki.trust))
    client.start()
    server.receive(client.outgoing())
    assert server.client_server_name() == "example.org"


def _early_config(pki: PKI) -> ServerConfig:
    return dataclasses.replace(pki.server_config, ticket_keys=TicketKeyRing([TicketKey.generate(lambda n: b"k" * n)]),
                               early_data=EarlyDataPolicy(), replay_store=MemoryReplayStore())


class _EarlyClient:
    """Our sans-IO client on a socket, driven by hand: it resumes with 0-RTT data, and sends its Finished only
    when told, so a test sees what the server sends before the client's Finished exists."""

    def __init__(self, pki: PKI, store: MemorySessionStore, early: bytes) -> None:
        self.conn = Connection(ClientConfig(server_name="localhost", trust=pki.trust, alpn=("http/1.1",),
                                            session_store=store, early_data=True))
        self.conn.start()
        self.conn.send_data(early)  # before the handshake: 0-RTT
        self.done: HandshakeComplete | None = None
        self.received = b""
        self.closed = False
        self.sock = socket.socket()
        self.sock.setblocking(False)

    async def connect(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", port))
        await loop.sock_sendall(self.sock, self.conn.data_to_send())

    async def read(self, until: Callable[[], bool], timeout: float) -> bool:
        """Read and decrypt (sending nothing) until ``until()``; False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                while not until():
                    data = await loop.sock_recv(self.sock, 65536)
                    self.conn.receive_data(data)
                    for event in self.conn.events():
                        if isinstance(event, HandshakeComplete):
                            self.done = event
                        elif isinstance(event, ApplicationData):
                            self.received += event.data
                        elif isinstance(event, ConnectionClosed):
                            self.closed = True
                    if not data:
                        self.closed = True
                        return until()
        except TimeoutError:
            return False
        return True

    async def send_pending(self) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, self.conn.data_to_send())


async def _resumable(port: int, pki: PKI) -> MemorySessionStore:
    """A full handshake that leaves a 0-RTT ticket in the returned store."""
    store = MemorySessionStore()
    reader, writer = await open_connection("localhost", port, trust=pki.trust, alpn=["http/1.1"], session_store=store)
    writer.write(b"first")
    assert await reader.read() == b"reply to first"  # tickets arrived before the reply
    writer.close()
    return store


def test_server_answers_0rtt_data_in_half_rtt_data_before_the_clients_finished(pki: PKI) -> None:
    """``early_data=True``: the app is connected on accepted 0-RTT data and its reply goes out at once, as
    0.5-RTT data (RFC 8446 §2.3): the client has it before it sent its Finished. Its close waits for the
    handshake to complete."""
    seen: list[tuple[bytes, bool, int, bool]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        session = writer.get_extra_info("ssl_object")
        before = session.negotiated is None
        writer.write(b"reply to " + data)
        await writer.drain()  # nothing held: drain does not wait for the handshake
        seen.append((data, before, session.early_bytes, session.negotiated is None))
        writer.close()  # held: close_notify only after the client's Finished

    async def main() -> None:
        server = await start_server(handler, "127.0.0.1", 0, config=_early_config(pki), early_data=True)
        async with server:
            port = server.sockets[0].getsockname()[1]
            client = _EarlyClient(pki, await _resumable(port, pki), b"early request")
            with client.sock:
                await client.connect(port)
                # Our Finished is queued in client.conn, not sent: the reply came as 0.5-RTT data.
                assert await client.read(lambda: client.received == b"reply to early request", 10), client.received
                assert client.done is not None and client.done.resumed and client.done.early_data_accepted
                assert not await client.read(lambda: client.closed, 0.3), "the server closed before our Finished"
                await client.send_pending()  # EndOfEarlyData + Finished
                assert await client.read(lambda: client.closed, 10)
            assert client.received == b"reply to early request"

    run(main())
    assert seen[1] == (b"early request", True, len(b"early request"), True), seen


def test_server_holds_the_reply_where_the_engine_refuses_half_rtt_data(pki: PKI) -> None:
    """Where ``send_data`` refuses before the client's Finished (``ConfigError``, e.g. a client certificate
    pending), the front end holds the reply, ``drain()`` waits for the handshake, and the reply follows it."""
    seen: list[tuple[bool, bool]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        session = writer.get_extra_info("ssl_object")
        if session.negotiated is None:
            session.conn._half_rtt = False  # the engine's state while it waits for a client certificate
        before = session.negotiated is None
        writer.write(b"reply to " + data)
        await writer.drain()  # paused while held: returns once the handshake completed and the reply went out
        seen.append((before, session.negotiated is not None))
        writer.close()

    async def main() -> None:
        server = await start_server(handler, "127.0.0.1", 0, config=_early_config(pki), early_data=True)
        async with server:
            port = server.sockets[0].getsockname()[1]
            client = _EarlyClient(pki, await _resumable(port, pki), b"early request")
            with client.sock:
                await client.connect(port)
                assert not await client.read(lambda: bool(client.received), 0.5), "sent before our Finished"
                assert client.done is not None and client.done.early_data_accepted
                await client.send_pending()
                assert await client.read(lambda: client.closed, 10)
            assert client.received == b"reply to early request"

    run(main())
    assert seen[1] == (True, True), seen


def test_close_without_drain_delivers_everything_to_a_server_that_sent_tickets(pki: PKI) -> None:
    """The session tickets an OpenSSL server sends after the handshake sat unread when the client closed: the
    kernel answered the close with a reset, and the server lost what it had not read yet (114 KB of 1 MiB).
    As asyncio's ssl transport, close() now half-closes and reads on until the peer closes."""
    import threading

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_pem, pki.key_pem)
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[int] = []

    def serve() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as tls:
            tls.settimeout(10)
            total = 0
            with contextlib.suppress(OSError):
                while data := tls.recv(65536):
                    total += len(data)
            received.append(total)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def main() -> None:
        _, writer = await open_connection("127.0.0.1", listener.getsockname()[1], cafile=pki.ca_pem,
                                          server_name="localhost")
        writer.write(b"x" * (1 << 20))
        writer.close()  # no drain first: what is queued must still arrive whole
        await writer.wait_closed()

    try:
        run(main())
        thread.join(10)
    finally:
        listener.close()
    assert received == [1 << 20]


def test_a_connection_the_peer_closed_is_closed_even_if_the_handler_forgets_to(pki: PKI) -> None:
    """A handler written for asyncio+ssl need not close its writer: asyncio's ssl transport closes at the peer's
    EOF. Ours kept the connection half-open after curl's close_notify and FIN (CLOSE-WAIT, a descriptor each,
    wait_closed hanging on 3.12)."""
    writers: list[asyncio.StreamWriter] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(b"pong")
        await writer.drain()
        writers.append(writer)  # and returns without closing it

    def client(port: int) -> None:  # as curl: the answer, then close_notify and FIN without waiting for ours
        ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"ping")
            assert tls.recv(4) == b"pong"

    async def main() -> None:
        async with serving(pki, handler) as port:
            for _ in range(3):
                await asyncio.get_running_loop().run_in_executor(None, client, port)
            deadline = time.monotonic() + 5
            while not (len(writers) == 3 and all(w.transport.is_closing() for w in writers)):
                assert time.monotonic() < deadline, "the server kept connections its peers had closed"
                await asyncio.sleep(0.05)

    run(main())


def test_close_gives_up_on_a_peer_that_never_reads(pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio's ssl transport aborts after ssl_shutdown_timeout (30 s); ours kept the connection and megabytes
    of buffered data for good."""
    import tlskit.io.asyncio as tls_asyncio

    monkeypatch.setattr(tls_asyncio, "SHUTDOWN_TIMEOUT", 1.0)
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * (10 << 20))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        closed.set()

    async def main() -> None:
        async with serving(pki, handler) as port:
            loop = asyncio.get_running_loop()
            raw = socket.create_connection(("127.0.0.1", port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.setblocking(False)
            client = Connection(ClientConfig(server_name="localhost", trust=pki.trust))
            client.start()
            await loop.sock_sendall(raw, client.data_to_send())
            while not client.handshake_complete:
                client.receive_data(await loop.sock_recv(raw, 4096))
                if out := client.data_to_send():
                    await loop.sock_sendall(raw, out)
            started = time.monotonic()
            await asyncio.wait_for(closed.wait(), 10)  # and then reads nothing more
            assert time.monotonic() - started < 5
            raw.close()

    run(main())


def test_a_client_that_half_closes_tcp_after_close_notify_still_gets_its_answer(pki: PKI) -> None:
    """tlskit's blocking shutdown(SHUT_WR) sends close_notify and a TCP FIN, then reads: closing at the FIN (as the
    previous fix did) dropped an answer the handler wrote after an await."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()
        await asyncio.sleep(0.2)
        writer.write(b"ANSWER:" + request)
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with serving(pki, handler) as port:
            answer = await asyncio.to_thread(_half_closing_request, pki, port)
            assert answer == b"ANSWER:request"

    run(main())


def test_close_after_the_app_paused_reading_does_not_wait_for_the_timeout(pki: PKI) -> None:
    """A handler that read 10 bytes of a 600 KB upload paused the transport's reading; close() then waited the
    whole 30 s for a close it could not see."""
    took: list[float] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(10)
        await asyncio.sleep(0.3)  # the rest of the upload fills the reader: reading pauses
        writer.write(b"done")
        started = time.monotonic()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        took.append(time.monotonic() - started)

    def client(port: int) -> None:
        with tlskit.connect("127.0.0.1", port, server_name="localhost", cafile=pki.ca_pem, timeout=10) as tls:
            tls.sendall(b"x" * 600_000)
            assert tls.recv(4) == b"done"

    async def main() -> None:
        async with serving(pki, handler) as port:
            await asyncio.get_running_loop().run_in_executor(None, client, port)
            deadline = time.monotonic() + 10
            while not took:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    run(main())
    assert took[0] < 5, took


def test_close_after_the_peer_closed_tcp_does_not_wait_for_the_timeout(pki: PKI) -> None:
    """Once the peer's close_notify and FIN have arrived there is nothing left to read: close() half-closed and
    then waited the whole 30 s for a FIN it had already seen (a client that read to EOF; a handler answering
    after the client's SHUT_WR)."""
    took: list[float] = []

    async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(b"pong")
        writer.close()

    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()
        await asyncio.sleep(0.2)  # the client's FIN arrives meanwhile
        writer.write(b"ANSWER:" + request)
        started = time.monotonic()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        took.append(time.monotonic() - started)

    async def main() -> None:
        async with serving(pki, answer_and_close) as port:
            reader, writer = await open_connection("127.0.0.1", port, cafile=pki.ca_pem)
            writer.write(b"ping")
            assert await reader.read() == b"pong"
            started = time.monotonic()
            writer.close()
            await writer.wait_closed()
            assert time.monotonic() - started < 5
        async with serving(pki, answer_after_eof) as port:
            assert await asyncio.to_thread(_half_closing_request, pki, port) == b"ANSWER:request"
            deadline = time.monotonic() + 10
            while not took:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

    run(main())
    assert took[0] < 5, took


def test_a_client_refused_after_its_finished_gets_the_alert_not_a_reset(pki: PKI) -> None:
    """A TLS 1.3 client sends its request right after its Finished. Refusing it (no client certificate), the
    server wrote the alert and closed at once: the request arriving then made the kernel reset the connection,
    and curl lost the alert in about half the runs ("getpeername() failed"; openssl s_server: never)."""
    import shutil
    import subprocess

    from tlskit.config import ClientAuth

    curl = shutil.which("curl")
    assert curl, "curl is installed by .ci/run"
    config = dataclasses.replace(pki.server_config, client_auth=ClientAuth(mode="required", trust=pki.trust),
                                 alpn=("h2", "http/1.1"))  # (curl then sends its HTTP/2 preface at once)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise AssertionError("the handshake must fail")

    def client(port: int) -> str:
        return subprocess.run([curl, "-sS", "--http2", "-o", "/dev/null", "--cacert", str(pki.ca_pem),
                               f"https://localhost:{port}/"], capture_output=True, text=True, timeout=20).stderr

    async def main() -> None:
        server = await start_server(handler, "127.0.0.1", 0, config=config)
        async with server:
            port = server.sockets[0].getsockname()[1]
            loop = asyncio.get_running_loop()
            seen = [await loop.run_in_executor(None, client, port) for _ in range(20)]
            assert all("alert certificate required" in error for error in seen), seen

    asyncio.run(asyncio.wait_for(main(), 60))


def test_close_after_the_peer_closed_still_gives_up_on_a_peer_that_never_reads(
        pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that half-closes (close_notify and FIN) and then reads nothing: closing without the half-close
    (the peer had closed) left asyncio's close() waiting for 20 MB to drain, unbounded."""
    import threading

    import tlskit.io.asyncio as tls_asyncio

    monkeypatch.setattr(tls_asyncio, "SHUTDOWN_TIMEOUT", 1.0)
    took: list[float] = []
    release = threading.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        await asyncio.sleep(0.3)  # the client's FIN arrives meanwhile
        writer.write(b"x" * (20 << 20))
        started = time.monotonic()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        took.append(time.monotonic() - started)

    def client(port: int) -> None:
        with tlskit.connect("127.0.0.1", port, server_name="localhost", cafile=pki.ca_pem, timeout=10) as tls:
            tls.sendall(b"request")
            tls.shutdown(socket.SHUT_WR)
            release.wait(15)  # reads nothing

    async def main() -> None:
        async with serving(pki, handler) as port:
            done = asyncio.get_running_loop().run_in_executor(None, client, port)
            deadline = time.monotonic() + 8
            while not took and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            release.set()
            await done

    run(main())
    assert took and took[0] < 5, took


def test_a_server_side_bug_is_logged_as_an_error_with_its_traceback(pki: PKI, caplog: pytest.LogCaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine turns a bug (here a key_log callback that raises) into internal_error: the client is told, and
    the server logs it as its own trouble (ERROR, with the traceback), not as a client's failure at INFO."""
    def broken_key_log(line: str) -> None:
        raise KeyError("a bug in the key log writer")

    monkeypatch.setattr(pki, "server_config", dataclasses.replace(pki.server_config, key_log=broken_key_log))

    async def main() -> None:
        async with serving(pki, echo) as port:
            with pytest.raises(tlskit.RemoteAlert) as info:
                await open_connection("127.0.0.1", port, server_name="localhost", cafile=pki.ca_pem)
            assert info.value.description is AlertDescription.internal_error

    with caplog.at_level(logging.INFO, logger="tlskit.io"):
        run(main())
    [record] = [r for r in caplog.records if r.name == "tlskit.io"]
    assert record.levelno == logging.ERROR and record.exc_info is not None, record
    assert isinstance(record.exc_info[1], KeyError) and "internal_error" in record.getMessage()


@pytest.mark.parametrize("half_close", [False, True])
def test_a_client_answers_the_servers_close_notify_unless_it_half_closes(pki: PKI, half_close: bool) -> None:
    """Against Python's ssl server: after its close_notify, our client stayed half-open until the app closed, so
    the server's wait_closed() hung (30 s) and is_closing() told a connection pool nothing (review). It now closes
    as ssl's client does; half_close=True keeps the write side open until the app closes."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_pem, pki.key_pem)
    took: list[float] = []

    async def main() -> None:
        closed = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"bye")
            writer.close()
            started = time.monotonic()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            closed.set_result(time.monotonic() - started)

        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await open_connection("127.0.0.1", port, server_name="localhost", cafile=pki.ca_pem,
                                                   half_close=half_close)
            assert await reader.read() == b"bye"
            await asyncio.sleep(0.5)  # the app does nothing more for a while
            assert writer.is_closing() is not half_close
            writer.close()
            took.append(await asyncio.wait_for(closed, 10))

    run(main())
    assert (took[0] > 0.4) if half_close else (took[0] < 0.4), took  # closed by the app, or at once


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_start_tls_upgrades_a_plain_asyncio_connection(pki: PKI, use_uvloop: bool) -> None:
    """STARTTLS over asyncio streams (asyncio's StreamWriter.start_tls has no tlskit transport to give): the
    plain exchange, then a handshake on the same connection with Python's ssl, whose server upgrades with
    loop.start_tls; the new streams carry TLS (review)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_pem, pki.key_pem)

    async def main() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert await reader.readline() == b"STARTTLS\r\n"
            writer.write(b"220 go ahead\r\n")
            await writer.drain()
            await writer.start_tls(ctx)
            line = await reader.readline()
            writer.write(line.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"STARTTLS\r\n")
            assert await reader.readline() == b"220 go ahead\r\n"
            tls_reader, tls_writer = await tlskit.start_tls(writer, server_name="localhost", cafile=pki.ca_pem)
            assert tls_writer.get_extra_info("cipher")[1] == "TLSv1.3"
            tls_writer.write(b"ehlo over tls\n")
            assert await tls_reader.readline() == b"EHLO OVER TLS\n"
            tls_writer.close()
            await tls_writer.wait_closed()
            # the usual `finally: writer.close(); await writer.wait_closed()` on the old streams ends too
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 5)
            # a failed handshake (the server is not trusted) aborts the connection and ends the old streams
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"STARTTLS\r\n")
            assert await reader.readline() == b"220 go ahead\r\n"
            with pytest.raises(CertificateError):
                await tlskit.start_tls(writer, server_name="localhost")  # the system roots: not our test CA
            await asyncio.wait_for(writer.wait_closed(), 5)

    if use_uvloop:
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(asyncio.wait_for(main(), 20))
    else:
        run(main())
