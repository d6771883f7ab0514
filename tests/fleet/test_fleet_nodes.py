"""Two server processes sharing one real redis-server (issue 4 item 7): any node resumes any node's tickets,
a replayed 0-RTT ClientHello is accepted once fleet-wide, and without Redis 0-RTT is refused but 1-RTT works.
Clients: ours (sans-IO over sockets), ``openssl s_client`` and ``gnutls-cli``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.conftest import RedisServer
from tests.fleet.nodes import Node
from tests.interop.conftest import Pki, make_pki
from tests.interop.peers import require, run_client
from tlskit.config import ClientConfig
from tlskit.connection import Connection
from tlskit.events import ApplicationData, ConnectionClosed, Event, HandshakeComplete, SessionTicketReceived
from tlskit.pki.verify import TrustStore
from tlskit.stores import MemorySessionStore

REQUEST = b"GET /fleet HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("fleet-pki"))


@pytest.fixture
def fleet(redis_server: RedisServer, prefix: str, pki: Pki) -> Iterator[tuple[Node, Node]]:
    redis_server.age_replay_set(prefix + "0rtt:")  # a fleet that has run for a while (a new set refuses 0-RTT)
    with Node(redis_server.url, prefix, pki.cert, pki.key) as a, Node(redis_server.url, prefix, pki.cert, pki.key) as b:
        yield a, b


def client_config(pki: Pki, store: MemorySessionStore, *, early_data: bool = False) -> ClientConfig:
    return ClientConfig(server_name="localhost", trust=TrustStore.from_pem_file(pki.cafile), session_store=store,
                        early_data=early_data)


def drive(port: int, conn: Connection, flight: bytes, request: bytes | None = REQUEST) -> list[Event]:
    """Run ``conn`` (started; ``flight`` is its first flight) against ``port`` until the node closes;
    ``request`` goes out after the handshake (None: it went out as 0-RTT data)."""
    events: list[Event] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(flight)
        while not any(isinstance(e, ConnectionClosed) for e in events):
            data = sock.recv(65536)
            conn.receive_data(data)
            events += conn.events()
            if conn.handshake_complete and request is not None:
                conn.send_data(request)
                request = None
            if out := conn.data_to_send():
                sock.sendall(out)
            if not data:
                break
    return events


def exchange(port: int, config: ClientConfig) -> list[Event]:
    conn = Connection(config)
    conn.start()
    return drive(port, conn, conn.data_to_send())


def zero_rtt(config: ClientConfig) -> tuple[Connection, bytes]:
    """A started client that put ``REQUEST`` in 0-RTT; returns it with its first flight's bytes."""
    conn = Connection(config)
    conn.start()
    conn.send_data(REQUEST)
    return conn, conn.data_to_send()


def replay(port: int, flight: bytes) -> bytes:
    """Send captured bytes as an attacker would (no keys, so no Finished follows); the node's first answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(flight)
        return sock.recv(65536)


def completed(events: list[Event]) -> HandshakeComplete:
    [done] = [e for e in events if isinstance(e, HandshakeComplete)]
    return done


def echoed(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ApplicationData))


def test_ticket_issued_by_node_a_resumes_on_node_b(fleet: tuple[Node, Node], pki: Pki) -> None:
    a, b = fleet
    store = MemorySessionStore()
    first = exchange(a.port, client_config(pki, store))
    assert not completed(first).resumed
    assert len([e for e in first if isinstance(e, SessionTicketReceived)]) == 2
    second = exchange(b.port, client_config(pki, store))
    assert completed(second).resumed and echoed(second) == REQUEST
    assert b.finished(1)[0] == f"done resumed=1 early=0 group={completed(second).group.name}"


def test_zero_rtt_hello_replayed_to_a_then_b_and_a_again_is_accepted_once(
    fleet: tuple[Node, Node], pki: Pki
) -> None:
    a, b = fleet
    store = MemorySessionStore()
    exchange(a.port, client_config(pki, store))  # A's connection 1: the ticket
    client, flight = zero_rtt(client_config(pki, store, early_data=True))
    genuine = drive(a.port, client, flight, request=None)  # A's connection 2
    assert completed(genuine).early_data_accepted and echoed(genuine) == REQUEST
    assert f"early {REQUEST.hex()}" in a.finished(2)
    for node, n in ((b, 1), (a, 3), (a, 4)):
        answer = replay(node.port, flight)
        assert answer[:1] == b"\x16"  # the node answers with its ServerHello: the handshake goes on as 1-RTT
        lines = node.finished(n)
        assert not any(line.startswith("early") for line in lines), (node.port, n, lines)


def test_without_redis_zero_rtt_is_refused_and_1rtt_still_works(own_redis: RedisServer, prefix: str, pki: Pki) -> None:
    with Node(own_redis.url, prefix, pki.cert, pki.key) as a, Node(own_redis.url, prefix, pki.cert, pki.key) as b:
        store = MemorySessionStore()
        exchange(a.port, client_config(pki, store))
        own_redis.stop()
        client, flight = zero_rtt(client_config(pki, store, early_data=True))
        events = drive(b.port, client, flight, request=None)
        done = completed(events)
        assert done.resumed and not done.early_data_accepted  # the keys B holds still open A's ticket
        assert echoed(events) == REQUEST  # our client resent the refused 0-RTT request as 1-RTT
        assert b.finished(1)[0].startswith("done resumed=1 early=0")
        fresh = exchange(a.port, client_config(pki, MemorySessionStore()))
        assert not completed(fresh).resumed and echoed(fresh) == REQUEST


@pytest.mark.interop
def test_openssl_s_client_resumes_with_0rtt_on_the_other_node(
    fleet: tuple[Node, Node], pki: Pki, tmp_path: Path
) -> None:
    a, b = fleet
    session, early = tmp_path / "session.pem", tmp_path / "early.txt"
    early.write_bytes(REQUEST)
    base = [require("openssl"), "s_client", "-tls1_3", "-CAfile", str(pki.cafile), "-servername", "localhost",
            "-verify_return_error", "-ign_eof"]
    first = run_client([*base, "-connect", f"127.0.0.1:{a.port}", "-sess_out", str(session)], data=b"hello\n")
    assert first.returncode == 0 and "New, TLSv1.3" in first.stdout, first.stdout + first.stderr
    second = run_client([*base, "-connect", f"127.0.0.1:{b.port}", "-sess_in", str(session),
                         "-early_data", str(early)])
    text = second.stdout + second.stderr
    assert "Reused, TLSv1.3" in text and "Early data was accepted" in text, text
    assert REQUEST.decode().strip() in second.stdout
    assert f"early {REQUEST.hex()}" in b.finished(1)
    assert "done resumed=1 early=1 group=x25519" in b.finished(1)


@pytest.mark.interop
def test_gnutls_cli_resumes_with_early_data(fleet: tuple[Node, Node], pki: Pki, tmp_path: Path) -> None:
    a, _ = fleet
    early = tmp_path / "early.txt"
    early.write_bytes(REQUEST)
    result = run_client([require("gnutls-cli"), "-p", str(a.port), f"--x509cafile={pki.cafile}",
                         "--sni-hostname=localhost", "--resume", f"--earlydata={early}", "127.0.0.1"])
    assert "*** This is a resumed session" in result.stdout, result.stdout + result.stderr
    assert f"early {REQUEST.hex()}" in a.finished(2)
    assert a.finished(2)[-2] == "done resumed=1 early=1 group=secp256r1"  # psk_dhe_ke: forward secret
