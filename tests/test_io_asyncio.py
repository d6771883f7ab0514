"""The asyncio front end (tlskit.io.asyncio): streams over our protocol, against itself and Python's ssl."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.certs import make_ca, make_leaf, write_pem
from tlskit.config import CertifiedKey, ClientConfig, ServerConfig
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, HandshakeTimeout
from tlskit.io.asyncio import open_connection, start_server
from tlskit.io.common import TLSSession
from tlskit.pki.verify import TrustStore

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
            reader, writer = await open_connection("localhost", port, cafile=pki.ca_pem)
            assert writer.get_extra_info("cipher")[1] == "TLSv1.3"
            writer.write(b"hello " * 1000)
            assert await reader.readexactly(6000) == b"hello " * 1000
            writer.close()
            await writer.wait_closed()

    run(main())


def test_client_handshake_timeout_against_a_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def main() -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            started = time.monotonic()
            with pytest.raises(HandshakeTimeout):
                await open_connection("127.0.0.1", port, verify_peer=False, handshake_timeout=0.3)
            assert time.monotonic() - started < 2

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
    assert record.levelno == logging.WARNING
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


def test_server_app_reads_0rtt_data_before_the_handshake_completes_and_its_reply_waits(pki: PKI) -> None:
    """``early_data=True``: the app is connected on accepted 0-RTT data; what it writes goes out after the
    client's Finished, and its close follows that."""
    import dataclasses

    from tlskit.config import EarlyDataPolicy
    from tlskit.connection import Connection
    from tlskit.events import ApplicationData, ConnectionClosed, HandshakeComplete
    from tlskit.stores.memory import MemoryReplayStore, MemorySessionStore
    from tlskit.tickets.keyring import TicketKey, TicketKeyRing

    config = dataclasses.replace(pki.server_config, ticket_keys=TicketKeyRing([TicketKey.generate(lambda n: b"k" * n)]),
                                 early_data=EarlyDataPolicy(), replay_store=MemoryReplayStore())
    seen: list[tuple[bytes, bool, int]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        session = writer.get_extra_info("ssl_object")
        seen.append((data, session.negotiated is None, session.early_bytes))
        writer.write(b"reply to " + data)
        writer.close()  # held too: the reply and close_notify leave after the handshake

    async def main() -> None:
        store = MemorySessionStore()
        server = await start_server(handler, "127.0.0.1", 0, config=config, early_data=True)
        async with server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await open_connection("localhost", port, trust=pki.trust, alpn=["http/1.1"],
                                                   session_store=store)
            writer.write(b"first")
            assert await reader.read() == b"reply to first"  # tickets arrived before the reply
            writer.close()
            client = Connection(ClientConfig(server_name="localhost", trust=pki.trust, alpn=("http/1.1",),
                                             session_store=store, early_data=True))
            client.start()
            client.send_data(b"early request")  # before the handshake: 0-RTT
            loop = asyncio.get_running_loop()
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.setblocking(False)
                await loop.sock_sendall(sock, client.data_to_send())
                received, done = b"", None
                while not client.closed:
                    data = await loop.sock_recv(sock, 65536)
                    client.receive_data(data)
                    await loop.sock_sendall(sock, client.data_to_send())
                    for event in client.events():
                        if isinstance(event, HandshakeComplete):
                            done = event
                        elif isinstance(event, ApplicationData):
                            received += event.data
                        elif isinstance(event, ConnectionClosed) or not data:
                            client.close()
                    if not data:
                        break
            assert done is not None and done.resumed and done.early_data_accepted
            assert received == b"reply to early request"

    run(main())
    assert seen[1] == (b"early request", True, len(b"early request")), seen
