"""Single-use tickets (RFC 8446 §8.1): each ticket resumes at most once, checked in the shared ReplayStore.

The store side (``psk.claim_ticket``, ``psk.ticket_use_key``, a replay store holding entries with different
windows), then the engine with ``ServerConfig.single_use_tickets``.
"""

from __future__ import annotations

import time

import pytest

from tests.pairing import client_config, handshake, server_config
from tlskit.config import EarlyDataPolicy, ServerConfig
from tlskit.connection import Connection
from tlskit.enums import CipherSuite, NamedGroup
from tlskit.events import EarlyData
from tlskit.handshake.psk import SessionState, claim_ticket, ticket_use_key
from tlskit.stores.memory import MemoryReplayStore, MemorySessionStore
from tlskit.tickets.keyring import TicketKey, TicketKeyRing


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


class BrokenStore:
    def check_and_insert(self, key: bytes, window_seconds: float, history_seconds: float | None = None,
                         **clock: float | None) -> bool:
        raise ConnectionError("redis is down")


class RecordingStore(MemoryReplayStore):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.calls: list[tuple[bytes, float, float | None]] = []

    def check_and_insert(self, key: bytes, window_seconds: float, history_seconds: float | None = None,
                         **clock: float | None) -> bool:
        self.calls.append((key, window_seconds, history_seconds))
        return super().check_and_insert(key, window_seconds, history_seconds, **clock)


def state(issued_at: float, lifetime: int = 7200) -> SessionState:
    return SessionState(suite=CipherSuite.TLS_AES_128_GCM_SHA256, psk=b"k" * 32, issued_at=issued_at,
                        authenticated_at=issued_at, age_add=7, lifetime=lifetime, max_early_data=0,
                        server_name="localhost", alpn=None)


# --- store side ------------------------------------------------------------------------------------------


def test_ticket_is_claimed_once_until_it_expires() -> None:
    clock = Clock(1000.0)
    store = MemoryReplayStore(clock=clock)
    st = state(issued_at=1000.0, lifetime=60)
    assert claim_ticket(store, b"ticket-1", st, clock())
    assert not claim_ticket(store, b"ticket-1", st, clock())
    assert claim_ticket(store, b"ticket-2", st, clock())  # another ticket is its own
    clock.now += 59.9
    assert not claim_ticket(store, b"ticket-1", st, clock())
    clock.now += 0.2  # expired: never claimed again (accept_psk refuses it anyway), and its mark is let go
    assert not claim_ticket(store, b"ticket-1", st, clock())
    assert store.check_and_insert(b"binder", 10) and len(store) == 1


def test_claim_window_is_the_ticket_remaining_lifetime_and_its_history_the_ticket_age() -> None:
    clock = Clock(5000.0)
    store = RecordingStore(clock)
    assert claim_ticket(store, b"t", state(issued_at=4000.0, lifetime=7200), clock())
    ((key, window, history),) = store.calls
    assert key == ticket_use_key(b"t") and window == pytest.approx(6200.0) and history == pytest.approx(1000.0)


def test_a_ticket_older_than_a_restarted_store_is_not_claimed_a_newer_one_is() -> None:
    """Single-use tickets (§8.1) with ticket keys that outlive the process: the store that recorded the first
    use of a ticket issued before the restart is gone, so that ticket could be resumed a second time."""
    clock = Clock(5000.0)
    store = MemoryReplayStore(clock=clock, replaces_lost=True)
    clock.now += 60
    assert not claim_ticket(store, b"old", state(issued_at=4000.0), clock())
    assert claim_ticket(store, b"new", state(issued_at=5030.0), clock())
    assert not claim_ticket(store, b"new", state(issued_at=5030.0), clock())


def test_expired_ticket_is_never_claimed() -> None:
    clock = Clock(10_000.0)
    store = RecordingStore(clock)
    assert not claim_ticket(store, b"t", state(issued_at=1000.0, lifetime=60), clock())
    assert store.calls == []


def test_claim_fails_closed() -> None:
    st = state(issued_at=time.time())
    assert not claim_ticket(BrokenStore(), b"t", st, time.time())
    assert not claim_ticket(None, b"t", st, time.time())
    full = MemoryReplayStore(max_entries=1)
    assert claim_ticket(full, b"a", st, time.time())
    assert not claim_ticket(full, b"b", st, time.time())  # OverflowError: refused, not forgotten

    class Truthy:  # e.g. an async store called without await: a coroutine, truthy every time (review)
        def check_and_insert(self, key: bytes, window_seconds: float, history_seconds: float | None = None,
                             **clock: float | None) -> object:
            return object()

    assert claim_ticket(Truthy(), b"t", st, time.time()) is False  # type: ignore[arg-type]


def test_ticket_use_key_never_collides_with_a_binder() -> None:
    key = ticket_use_key(b"identity")
    assert len(key) == 33  # binders stored by the 0-RTT check are 32 (SHA-256) or 48 (SHA-384) bytes
    assert key != ticket_use_key(b"identity2") and key == ticket_use_key(b"identity")


def test_replay_store_expires_short_entries_behind_a_long_one() -> None:
    # Ticket marks (hours) and ClientHello binders (seconds) share one store: a long-lived entry must not
    # keep the short ones behind it alive.
    clock = Clock(0.0)
    store = MemoryReplayStore(clock=clock)
    assert store.check_and_insert(b"ticket-mark", 7200)
    for i in range(100):
        assert store.check_and_insert(b"binder-%d" % i, 10)
    clock.now = 11
    assert store.check_and_insert(b"binder-new", 10)
    assert len(store) == 2  # the 100 expired binders went; the ticket mark and the new binder stay
    assert not store.check_and_insert(b"ticket-mark", 7200)
    assert store.check_and_insert(b"binder-0", 10)  # expired: accepted again


def test_replay_store_reinserts_an_expired_key_with_its_new_window() -> None:
    clock = Clock(0.0)
    store = MemoryReplayStore(clock=clock)
    assert store.check_and_insert(b"k", 5)
    clock.now = 6
    assert store.check_and_insert(b"k", 100)
    clock.now = 50  # the stale heap entry of the first insert (deadline 5) must not remove the live one
    assert store.check_and_insert(b"other", 1)
    assert not store.check_and_insert(b"k", 100)


# --- engine ----------------------------------------------------------------------------------------------------

RING = TicketKeyRing([TicketKey.from_bytes(bytes([3]) * 80)])


def single_use_server(clock: Clock, store: object | None = None, **overrides: object) -> ServerConfig:
    settings: dict[str, object] = {
        "ticket_keys": RING,
        "clock": clock,
        "replay_store": store if store is not None else MemoryReplayStore(clock=clock),
        "single_use_tickets": True,
    }
    settings.update(overrides)
    return server_config(**settings)


def ticketed_store(clock: Clock) -> MemorySessionStore:
    tickets = MemorySessionStore()
    first = handshake(client_config(session_store=tickets, clock=clock), server_config(ticket_keys=RING, clock=clock))
    assert not first.server_complete.resumed
    return tickets


def test_single_use_ticket_resumes_once_then_full_handshake() -> None:
    clock = Clock()
    tickets = ticketed_store(clock)
    ticket = tickets.take(client_config().session_key or "", clock())
    assert ticket is not None
    cfg = single_use_server(clock)
    for expect_resumed in (True, False):
        only_this = MemorySessionStore()
        # the client (or an attacker with its PSK) offers the same ticket
        only_this.put(client_config().session_key or "", ticket)
        pair = handshake(client_config(session_store=only_this, clock=clock), cfg)
        assert pair.server_complete.resumed is expect_resumed
        assert pair.client_complete.resumed is expect_resumed


def test_single_use_ticket_is_not_resumed_when_the_store_is_down() -> None:
    clock = Clock()
    tickets = ticketed_store(clock)
    pair = handshake(client_config(session_store=tickets, clock=clock), single_use_server(clock, BrokenStore()))
    assert not pair.server_complete.resumed  # fail closed: a full handshake, not an unchecked resumption


def test_single_use_ticket_survives_hello_retry_request() -> None:
    # The ticket is offered in both ClientHellos of one connection: claimed once, resumed once.
    clock = Clock()
    tickets = ticketed_store(clock)
    pair = handshake(client_config(session_store=tickets, clock=clock),
                     single_use_server(clock, groups=(NamedGroup.secp256r1,)))
    assert pair.server_complete.resumed and pair.server_complete.hello_retry


def test_single_use_ticket_gives_0rtt_once_even_in_a_fresh_client_hello() -> None:
    # The binder check stops byte-for-byte replays; single use also stops a new ClientHello (new binder)
    # with a ticket that has been used before.
    clock = Clock()
    tickets = MemorySessionStore()
    early = EarlyDataPolicy(max_early_data_size=1024)
    handshake(client_config(session_store=tickets, clock=clock),
              server_config(ticket_keys=RING, clock=clock, early_data=early, replay_store=MemoryReplayStore()))
    ticket = tickets.take(client_config().session_key or "", clock())
    assert ticket is not None and ticket.max_early_data_size == 1024
    cfg = single_use_server(clock, early_data=early)
    accepted = []
    for _ in range(2):
        only_this = MemorySessionStore()
        only_this.put(client_config().session_key or "", ticket)
        client = Connection(client_config(session_store=only_this, clock=clock, early_data=True))
        client.start()
        client.send_data(b"GET / HTTP/1.1\r\n\r\n")
        server = Connection(cfg)
        server.receive_data(client.data_to_send())
        accepted.append(any(isinstance(e, EarlyData) for e in server.events()))
    assert accepted == [True, False]
