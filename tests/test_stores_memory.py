"""One-node stores (DESIGN §4): the bounded, expiring 0-RTT seen-set and the client session cache."""

from __future__ import annotations

import pytest

from tlskit.enums import CipherSuite
from tlskit.stores import MemoryReplayStore, MemorySessionStore, ReplayHistoryUnknown, StoredTicket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_replay_store_accepts_a_client_hello_once_within_the_window() -> None:
    clock = Clock()
    store = MemoryReplayStore(clock=clock)
    assert store.check_and_insert(b"binder-a", 10)
    assert not store.check_and_insert(b"binder-a", 10)
    assert store.check_and_insert(b"binder-b", 10)
    clock.now += 9.9
    assert not store.check_and_insert(b"binder-a", 10)


def test_replay_store_forgets_entries_after_the_window() -> None:
    clock = Clock()
    store = MemoryReplayStore(clock=clock)
    store.check_and_insert(b"a", 10)
    clock.now += 10
    assert store.check_and_insert(b"a", 10)
    clock.now += 20
    store.check_and_insert(b"c", 10)
    assert len(store) == 1  # expired entries are dropped, not kept


def test_full_replay_store_fails_closed_until_entries_expire() -> None:
    clock = Clock()
    store = MemoryReplayStore(max_entries=2, clock=clock)
    assert store.check_and_insert(b"a", 10) and store.check_and_insert(b"b", 10)
    with pytest.raises(OverflowError):  # the engine refuses 0-RTT on any store error
        store.check_and_insert(b"c", 10)
    assert not store.check_and_insert(b"a", 10)  # the live entries were not forgotten
    clock.now += 10
    assert store.check_and_insert(b"c", 10)


def _ticket(n: int, received_at: float = 100.0, lifetime: int = 60) -> StoredTicket:
    return StoredTicket(ticket=bytes([n]) * 8, psk=b"p" * 32, cipher_suite=CipherSuite.TLS_AES_128_GCM_SHA256,
                        server_name="example.com", alpn=None, received_at=received_at, lifetime=lifetime,
                        age_add=n, max_early_data_size=0)


def test_session_store_hands_out_the_newest_ticket_once() -> None:
    store = MemorySessionStore(per_server=2)
    for n in (1, 2, 3):
        store.put("example.com", _ticket(n))
    assert store.take("example.com", 110) == _ticket(3)
    assert store.take("example.com", 110) == _ticket(2)
    assert store.take("example.com", 110) is None  # 1 fell out: two per server
    assert store.take("other.example", 110) is None


def test_session_store_skips_expired_tickets() -> None:
    store = MemorySessionStore()
    store.put("example.com", _ticket(1, lifetime=1000))
    store.put("example.com", _ticket(2, lifetime=5))
    assert store.take("example.com", 200) == _ticket(1, lifetime=1000)


def test_a_store_that_replaces_a_lost_one_refuses_keys_whose_history_it_lacks() -> None:
    """RFC 8446 §8.2: a restarted server forgot which ClientHellos it saw, so a replay of one accepted before the
    restart would be taken for new; `tlskit serve` refused nothing after a restart."""
    now = [1000.0]
    store = MemoryReplayStore(clock=lambda: now[0], replaces_lost=True)
    with pytest.raises(ReplayHistoryUnknown, match=r"0\.0 s of history"):
        store.check_and_insert(b"hello", 20.0)
    now[0] += 19.9
    with pytest.raises(ReplayHistoryUnknown):
        store.check_and_insert(b"other", 20.0)
    now[0] += 0.2
    assert store.check_and_insert(b"hello", 20.0) and not store.check_and_insert(b"hello", 20.0)
    assert MemoryReplayStore(clock=lambda: now[0]).check_and_insert(b"x", 20.0)  # the library default: no guard


def test_a_key_refused_for_lack_of_history_is_still_recorded() -> None:
    """A ClientHello refused 19 s after the start and replayed at 21 s must not pass: its client already sent
    the request again after the handshake, so accepting the replay would run it twice."""
    now = [1000.0]
    store = MemoryReplayStore(clock=lambda: now[0], replaces_lost=True)
    now[0] += 19.0
    with pytest.raises(ReplayHistoryUnknown):
        store.check_and_insert(b"hello", 20.0)
    now[0] += 2.0
    assert not store.check_and_insert(b"hello", 20.0)


def test_history_is_per_check_a_ticket_mark_needs_the_history_since_its_ticket_was_issued() -> None:
    """Single-use tickets (§8.1): a ticket issued an hour before the restart may have been used then, one issued
    after it cannot have been; the long window of the mark must not block the latter."""
    now = [1000.0]
    store = MemoryReplayStore(clock=lambda: now[0], replaces_lost=True)
    now[0] += 60.0
    with pytest.raises(ReplayHistoryUnknown):
        store.check_and_insert(b"mark-old", 7200.0, history_seconds=3660.0)
    assert store.check_and_insert(b"mark-new", 7200.0, history_seconds=30.0)
    assert not store.check_and_insert(b"mark-new", 7200.0, history_seconds=31.0)


def test_an_entry_looked_at_again_is_always_later_by_the_store_s_clock() -> None:
    """Re-queued by the caller's clock (still live there), an entry's next look must be strictly later by the
    store's clock: at a large clock value the difference rounded away, and the store popped it for ever (review)."""
    store = MemoryReplayStore(clock=lambda: 1e17)  # (floats 16 apart there: + 0.2 is lost, the deadline is now)
    assert store.check_and_insert(b"k", 0.2, now=0.1)
    assert not store.check_and_insert(b"k", 0.2, now=0.15)  # still live by the caller's clock (no endless loop)
