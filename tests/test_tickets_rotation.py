"""In-process ticket key rotation (issue 4 item 2): schedule, lifetime rule, wiping, thread safety."""

from __future__ import annotations

import os
import threading

import pytest

from tlskit.errors import ConfigError
from tlskit.tickets import TicketKey, open_ticket, seal_ticket
from tlskit.tickets.rotation import RotatingTicketKeys, check_rotation

HOUR = 3600.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_default_rotation_is_one_hour() -> None:
    assert RotatingTicketKeys().rotation_interval == HOUR


@pytest.mark.parametrize(
    ("interval", "lifetime", "message"),
    [
        (7200, 7200, "is not shorter than the ticket lifetime 7200s"),
        (86400, 7200, "is not shorter than the ticket lifetime"),
        (1800, 7200, "choose 3600..86400 (1 to 24 hours)"),
        (90000, 604800, "choose 3600..86400 (1 to 24 hours)"),
    ],
)
def test_schedules_outside_the_rules_are_refused(interval: float, lifetime: float, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        RotatingTicketKeys(rotation_interval=interval, ticket_lifetime=lifetime)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_longest_schedule_with_a_longer_lifetime_is_accepted() -> None:
    check_rotation(24 * HOUR, 7 * 24 * HOUR)


def test_tickets_under_the_previous_key_open_and_older_ones_do_not() -> None:
    clock = Clock()
    keys = RotatingTicketKeys(clock=clock, ticket_lifetime=2 * HOUR)
    ticket = seal_ticket(keys.encryption_key(), b"state", os.urandom)
    clock.now += HOUR - 1
    assert open_ticket(keys, ticket) == b"state"
    clock.now += 1  # first rotation: the sealing key is now previous
    assert keys.state.previous is not None and keys.state.previous.name == ticket[:16]
    assert open_ticket(keys, ticket) == b"state"
    clock.now += HOUR  # second rotation: retired
    assert open_ticket(keys, ticket) is None


def test_next_key_is_known_one_interval_before_it_seals() -> None:
    clock = Clock()
    keys = RotatingTicketKeys(clock=clock)
    upcoming = keys.state.next
    assert keys.decryption_key(upcoming.name) is upcoming
    clock.now += HOUR
    assert keys.encryption_key() is upcoming


def test_lazy_false_rotates_only_on_tick() -> None:
    clock = Clock()
    keys = RotatingTicketKeys(clock=clock, lazy=False)
    first = keys.encryption_key()
    clock.now += 3 * HOUR
    assert keys.encryption_key() is first
    assert keys.tick() == 3
    assert keys.encryption_key() is not first
    assert keys.tick() == 0


def test_after_a_long_idle_every_key_is_new_and_the_schedule_restarts() -> None:
    clock = Clock()
    keys = RotatingTicketKeys(clock=clock)
    old = {k.name for k in (keys.state.current, keys.state.next)}
    clock.now += 10.5 * HOUR
    state = keys.state
    assert old.isdisjoint(k.name for k in (state.current, state.previous, state.next) if k is not None)
    assert clock.now < state.rotation_due <= clock.now + HOUR


def test_manual_rotation_restarts_the_schedule() -> None:
    clock = Clock()
    keys = RotatingTicketKeys(clock=clock)
    clock.now += 600
    before = keys.encryption_key()
    keys.rotate()
    assert keys.state.previous is before
    assert keys.state.rotation_due == clock.now + HOUR


def test_retired_keys_are_wiped_after_the_grace_delay() -> None:
    clock = Clock()
    keys = RotatingTicketKeys(clock=clock, wipe_delay=60)
    first = keys.encryption_key()
    clock.now += 2 * HOUR
    keys.tick()
    assert not first.wiped  # a handshake may still hold it for a moment
    clock.now += 61
    keys.tick()
    assert first.wiped and not any(first.hmac_key)
    assert not keys.encryption_key().wiped


def test_a_wiped_key_never_seals() -> None:
    key = TicketKey.generate(os.urandom)
    key.wipe()
    with pytest.raises(RuntimeError, match="retired and wiped"):
        seal_ticket(key, b"state", os.urandom)


def test_key_repr_shows_the_name_but_no_secret() -> None:
    key = TicketKey.generate(os.urandom)
    text = repr(key)
    assert repr(bytes(key.aes_key)) not in text and "aes_key" not in text and "hmac_key" not in text


def test_close_wipes_every_key() -> None:
    keys = RotatingTicketKeys()
    held = [keys.state.current, keys.state.next]
    keys.close()
    assert all(k.wiped for k in held)


def test_concurrent_handshakes_across_rotations_see_a_consistent_ring() -> None:
    clock = Clock()
    keys = RotatingTicketKeys(clock=clock, wipe_delay=3 * HOUR)
    errors: list[BaseException] = []
    start = threading.Barrier(9)

    def handshakes() -> None:
        start.wait()
        try:
            for _ in range(300):
                ticket = seal_ticket(keys.encryption_key(), b"s", os.urandom)
                assert open_ticket(keys, ticket) == b"s"  # sealed at most one rotation ago
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=handshakes) for _ in range(8)]
    for t in threads:
        t.start()
    start.wait()
    for _ in range(50):
        clock.now += HOUR
    for t in threads:
        t.join()
    assert errors == []


def test_sealing_reuses_one_aead_per_key_object_and_never_another_keys() -> None:
    """``ticket_aead`` caches the AES-GCM object per key object: the same bytes as a fresh one; another key
    object under the same name (a reload, a fleet key) gets its own; ``wipe`` drops it."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from tlskit.tickets.keyring import _AEADS, TicketKeyRing
    from tlskit.tickets.sealing import seal_tickets

    name = os.urandom(16)
    first = TicketKey(name=name, aes_key=bytearray(os.urandom(32)))
    nonces = os.urandom(24)
    sealed = seal_tickets(first, [b"state one", b"state two"], nonces)
    assert sealed == [name + nonces[i * 12 : (i + 1) * 12]
                      + AESGCM(bytes(first.aes_key)).encrypt(nonces[i * 12 : (i + 1) * 12], s, name)
                      for i, s in enumerate([b"state one", b"state two"])]
    assert seal_tickets(first, [b"state one"], nonces[:12]) == sealed[:1]  # from the cached object: same bytes
    assert open_ticket(TicketKeyRing([first]), sealed[1]) == b"state two"
    second = TicketKey(name=name, aes_key=os.urandom(32))  # same name, another secret
    assert open_ticket(TicketKeyRing([second]), sealed[0]) is None
    resealed = seal_tickets(second, [b"state one"], nonces[:12])
    assert resealed != sealed[:1]
    assert open_ticket(TicketKeyRing([second]), resealed[0]) == b"state one"
    assert open_ticket(TicketKeyRing([first]), resealed[0]) is None
    seal_tickets(first, [b"x"], nonces[:12])
    assert _AEADS[name][0] is first
    first.wipe()
    assert name not in _AEADS  # the AES-GCM object's copy of the secret is dropped with it
    with pytest.raises(RuntimeError, match="wiped"):
        seal_tickets(first, [b"x"], nonces[:12])
    assert open_ticket(TicketKeyRing([first]), sealed[0]) is None
