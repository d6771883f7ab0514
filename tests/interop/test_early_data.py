"""0-RTT interop: our client sends early data to ``openssl s_server -early_data`` and ``gnutls-serv --earlydata``
(RFC 8446 §2.3, §4.2.10).

The first connection gets the peer's tickets (which carry ``max_early_data_size``); the second resumes one
and sends a request with the ClientHello. The front ends finish the handshake before returning, so the
sans-IO ``Connection`` is driven over a plain socket here: ``send_data`` before the handshake completes is
early data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.interop.conftest import Pki
from tests.interop.ours import raw_connection
from tests.interop.peers import TIMEOUT, GnuTLSServer, OpenSSLServer, PeerError, tool_version
from tlskit.config import ClientConfig
from tlskit.connection import Connection
from tlskit.enums import PskKeyExchangeMode
from tlskit.events import ApplicationData, Event, HandshakeComplete, SessionTicketReceived
from tlskit.pki.verify import TrustStore
from tlskit.stores.memory import MemorySessionStore

OPENSSL = tool_version("openssl")
GNUTLS_SERV = tool_version("gnutls-serv")


@dataclass
class Exchange:
    """What one connection of our client saw."""

    events: list[Event] = field(default_factory=list)

    @property
    def complete(self) -> HandshakeComplete:
        (done,) = [e for e in self.events if isinstance(e, HandshakeComplete)]
        return done

    @property
    def tickets(self) -> list[SessionTicketReceived]:
        return [e for e in self.events if isinstance(e, SessionTicketReceived)]

    @property
    def data(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, ApplicationData))


def client(pki: Pki, store: MemorySessionStore, **overrides: object) -> ClientConfig:
    return ClientConfig(server_name="localhost", trust=TrustStore.from_pem_file(pki.cafile), session_store=store,
                        **overrides)  # type: ignore[arg-type]


def exchange(
    port: int,
    config: ClientConfig,
    *,
    early: bytes = b"",
    until: Callable[[Exchange], bool],
    after: bytes = b"",
    timeout: float = TIMEOUT,
) -> Exchange:
    """Connect, send ``early`` as 0-RTT data with the ClientHello, ``after`` once the handshake is done, and
    read until ``until(exchange)`` holds; then close_notify and hang up."""
    conn = Connection(config)
    seen = Exchange()
    conn.start()
    if early:
        conn.send_data(early)  # before the handshake: early data (raises if the ticket does not allow it)
    deadline = time.monotonic() + timeout
    with raw_connection(port, timeout) as sock:
        sock.sendall(conn.data_to_send())
        sent_after = False
        while not until(seen):
            if time.monotonic() > deadline:
                raise PeerError(f"exchange did not finish; events so far: {seen.events}")
            data = sock.recv(65536)
            if not data:
                break
            try:
                conn.receive_data(data)
            finally:
                seen.events += conn.events()
            if conn.handshake_complete and after and not sent_after:
                conn.send_data(after)
                sent_after = True
            if out := conn.data_to_send():
                sock.sendall(out)
        conn.close()
        sock.sendall(conn.data_to_send())
    return seen


def got_tickets(seen: Exchange) -> bool:
    return bool(seen.tickets)


def handshake_done(seen: Exchange) -> bool:
    return any(isinstance(e, HandshakeComplete) for e in seen.events)


def first_connection(port: int, config: ClientConfig) -> Exchange:
    first = exchange(port, config, until=got_tickets)
    assert not first.complete.resumed
    assert first.tickets, "the server sent no ticket"
    return first


# ============================================================================== openssl s_server -early_data


def served(server: OpenSSLServer, count: int) -> str:
    """Wait until s_server has seen ``count`` connections end with our close_notify (it prints and flushes
    "DONE"); its output up to there. s_server writes the data it reads straight to fd 1 but its own lines
    through a buffer flushed at points like "DONE", so the data may come before the header that announces it
    ("Early data received:" is printed only when SSL_read_early_data returned data)."""
    return server.wait_for_output(rf"(?m)(?:[\s\S]*?^DONE$){{{count}}}", timeout=5).group(0)


def s_server(pki: Pki, *extra: str) -> OpenSSLServer:
    # plain mode: s_server prints what it reads, early data under an "Early data received:" header
    return OpenSSLServer(pki.cert, pki.key, mode="plain", extra_args=("-early_data", *extra))


def test_our_client_sends_early_data_to_s_server(pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer]) -> None:
    server = launch(s_server(pki))
    store = MemorySessionStore()
    first = first_connection(server.port, client(pki, store, early_data=True))
    assert first.tickets[0].max_early_data_size == 16384, f"{OPENSSL}: {first.tickets[0]}"
    assert "No early data received" in served(server, 1)

    early = b"GET /zero-rtt HTTP/1.1\r\nHost: localhost\r\n\r\n"
    second = exchange(server.port, client(pki, store, early_data=True), early=early, until=handshake_done)
    done = second.complete
    assert done.resumed and done.early_data_accepted, f"{OPENSSL} refused 0-RTT:\n{server.output()}"
    second_output = served(server, 2).split("DONE", 1)[1]
    assert "Early data received:" in second_output and "End of early data" in second_output, second_output
    assert second_output.count(early.decode()) == 1, second_output  # printed once: not resent as 1-RTT


def test_our_client_sends_early_data_with_psk_ke_to_s_server(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer]
) -> None:
    server = launch(s_server(pki, "-allow_no_dhe_kex"))
    store = MemorySessionStore()
    modes = (PskKeyExchangeMode.psk_ke,)
    first_connection(server.port, client(pki, store, early_data=True, psk_modes=modes))
    served(server, 1)
    second = exchange(server.port, client(pki, store, early_data=True, psk_modes=modes), early=b"psk_ke early\n",
                      until=handshake_done)
    done = second.complete
    assert done.resumed and done.early_data_accepted and done.group is None, f"{OPENSSL}: {server.output()}"
    second_output = served(server, 2).split("DONE", 1)[1]
    assert "Early data received:" in second_output and "psk_ke early" in second_output, second_output


def test_s_server_refuses_a_ticket_0rtt_twice_and_our_client_resends_it_as_1rtt(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer]
) -> None:
    # OpenSSL's anti-replay (on by default) accepts early data once per ticket. We offer the same ticket twice
    # (put back in the store): the second attempt must be refused, and the data resent after the handshake.
    server = launch(s_server(pki))
    store = MemorySessionStore()
    first_connection(server.port, client(pki, store, early_data=True))
    served(server, 1)
    key = client(pki, store, early_data=True).session_key or ""
    ticket = store.take(key, time.time())
    assert ticket is not None
    store.put(key, ticket)
    accepted = exchange(server.port, client(pki, store, early_data=True), early=b"once\n", until=handshake_done)
    assert accepted.complete.early_data_accepted, server.output()
    second_output = served(server, 2).split("DONE", 1)[1]
    assert "Early data received:" in second_output and "once" in second_output, second_output
    store.put(key, ticket)
    rejected = exchange(server.port, client(pki, store, early_data=True), early=b"twice\n", until=handshake_done)
    assert not rejected.complete.early_data_accepted, f"{OPENSSL} accepted a ticket's 0-RTT twice"
    third = served(server, 3).split("DONE", 2)[2]
    assert "Early data was rejected" in third, third
    assert "twice\n" in third  # resent as 1-RTT application data, which s_server prints


# ============================================================================== gnutls-serv --earlydata


def test_our_client_sends_early_data_to_gnutls_serv(pki: Pki, launch: Callable[[GnuTLSServer], GnuTLSServer]) -> None:
    # gnutls-serv --earlydata accepts 0-RTT but its echo loop never calls gnutls_record_recv_early_data, so the
    # early data is decrypted (a record it could not open would end the handshake with bad_record_mac) and
    # then dropped. What we can check: it accepted (EncryptedExtensions carried early_data), the handshake
    # completed after our EndOfEarlyData, and the 1-RTT data that follows is echoed on the same connection.
    server = launch(GnuTLSServer(pki.cert, pki.key, extra_args=("--earlydata",)))
    store = MemorySessionStore()
    first = first_connection(server.port, client(pki, store, early_data=True))
    assert first.tickets[0].max_early_data_size > 0, f"{GNUTLS_SERV}: {first.tickets[0]}"
    after = b"after the handshake\n"
    second = exchange(server.port, client(pki, store, early_data=True), early=b"gnutls early\n", after=after,
                      until=lambda s: len(s.data) >= len(after))
    done = second.complete
    assert done.resumed and done.early_data_accepted, f"{GNUTLS_SERV} refused 0-RTT:\n{server.output()}"
    assert second.data == after, f"{GNUTLS_SERV} echoed {second.data!r}"
    server.wait_for_output(r"\*\*\* This is a resumed session", timeout=5)


def test_gnutls_serv_without_earlydata_rejects_and_our_client_resends(
    pki: Pki, launch: Callable[[GnuTLSServer], GnuTLSServer]
) -> None:
    # A ticket that allows 0-RTT, offered to a server that no longer takes it: gnutls-serv skips the early
    # records (trial decryption), the handshake completes, and our client resends the data as 1-RTT.
    with GnuTLSServer(pki.cert, pki.key, extra_args=("--earlydata",)) as first_server:
        store = MemorySessionStore()
        first_connection(first_server.port, client(pki, store, early_data=True))
    server = launch(GnuTLSServer(pki.cert, pki.key))
    early = b"resent as 1-RTT\n"
    second = exchange(server.port, client(pki, store, early_data=True), early=early,
                      until=lambda s: len(s.data) >= len(early))
    assert not second.complete.early_data_accepted
    assert second.data == early, f"{GNUTLS_SERV} echoed {second.data!r}"
