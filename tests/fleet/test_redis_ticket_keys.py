"""RedisTicketKeys against a real redis-server (issue 4 item 5): one ring for the fleet, one rotation."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from tests.fleet.conftest import RedisServer
from tlskit.errors import ConfigError
from tlskit.tickets import open_ticket, seal_ticket
from tlskit.tickets.redis import RedisTicketKeys

HOUR = 3600.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def node(server: RedisServer, prefix: str, clock: Clock, **options: float) -> RedisTicketKeys:
    return RedisTicketKeys(server.client(), prefix=prefix, clock=clock, **options)  # type: ignore[arg-type]


def test_a_ticket_sealed_on_node_a_opens_on_node_b(redis_server: RedisServer, prefix: str) -> None:
    clock = Clock()
    a, b = node(redis_server, prefix, clock), node(redis_server, prefix, clock)
    assert a.state.current.name == b.state.current.name and a.version == b.version == 1
    ticket = seal_ticket(a.encryption_key(), b"state", os.urandom)
    assert open_ticket(b, ticket) == b"state"


def test_exactly_one_node_performs_each_rotation(redis_server: RedisServer, prefix: str) -> None:
    clock = Clock()
    nodes = [node(redis_server, prefix, clock) for _ in range(8)]
    before = nodes[0].state.current
    clock.now += HOUR
    start = threading.Barrier(len(nodes))
    results: list[bool] = []

    def rotate(n: RedisTicketKeys) -> None:
        start.wait()
        results.append(n.tick())

    threads = [threading.Thread(target=rotate, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    for n in nodes:
        n.refresh()
    assert {n.version for n in nodes} == {2}
    assert {n.state.current.name for n in nodes} == {nodes[0].state.current.name}
    assert nodes[0].state.previous is not None and nodes[0].state.previous.name == before.name
    assert sum(n.rotations for n in nodes) == 1


def test_a_node_that_rotated_early_is_understood_by_one_that_has_not_refreshed(
    redis_server: RedisServer, prefix: str
) -> None:
    early, late = Clock(), Clock()
    a, b = node(redis_server, prefix, early), node(redis_server, prefix, late)
    early.now += HOUR + 30  # a's clock runs ahead
    assert a.tick()
    ticket = seal_ticket(a.encryption_key(), b"state", os.urandom)
    assert b.version == 1  # b has not looked at Redis since: it knew the new key as "next"
    assert open_ticket(b, ticket) == b"state"


def test_tickets_under_the_previous_key_resume_and_older_ones_do_not(
    redis_server: RedisServer, prefix: str
) -> None:
    clock = Clock()
    a, b = node(redis_server, prefix, clock), node(redis_server, prefix, clock)
    ticket = seal_ticket(a.encryption_key(), b"state", os.urandom)
    clock.now += HOUR
    assert a.tick() != b.tick()
    assert open_ticket(b, ticket) == b"state"
    clock.now += HOUR
    a.tick(), b.tick()
    a.refresh(), b.refresh()
    assert open_ticket(a, ticket) is None and open_ticket(b, ticket) is None


def test_a_held_lock_defers_rotation_until_it_expires(redis_server: RedisServer, prefix: str) -> None:
    clock = Clock()
    a = node(redis_server, prefix, clock)
    client = redis_server.client()
    client.set(prefix + "lock", "another-node", px=300)
    clock.now += HOUR
    assert not a.tick() and a.version == 1
    client.delete(prefix + "lock")
    clock.now += 2  # the node looks again shortly after a lost race
    assert a.tick() and a.version == 2


def test_node_keeps_serving_with_cached_keys_when_redis_stops(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    a = node(own_redis, prefix, clock)
    ticket = seal_ticket(a.encryption_key(), b"state", os.urandom)
    current = a.state.current.name
    own_redis.stop()
    caplog.set_level(logging.INFO, logger="tlskit.tickets.redis")
    for _ in range(3):
        clock.now += 1500  # past the rotation time: no rotation without Redis
        assert a.encryption_key().name == current
        assert open_ticket(a, ticket) == b"state"
    assert not a.reachable
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1 and "serving with the 2 keys this node holds" in warnings[0].getMessage()
    own_redis.start()  # empty: the node puts back the keys it holds, so fleet tickets keep resuming
    clock.now += 10
    a.tick()
    assert a.reachable and any("reachable again" in r.getMessage() for r in caplog.records)
    b = node(own_redis, prefix, clock)  # finds the rotation overdue and does it
    assert b.version == 2 and b.state.previous is not None and b.state.previous.name == current
    assert open_ticket(b, ticket) == b"state"


def test_node_starting_without_redis_seals_locally_then_joins_the_ring(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    fleet = node(own_redis, prefix, clock)
    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="tlskit.tickets.redis"):
        lonely = node(own_redis, prefix, clock)
    assert "Redis unreachable at start" in caplog.text
    assert lonely.encryption_key().name != fleet.state.current.name
    own_redis.start()
    fleet.refresh()  # puts the ring back
    clock.now += 10
    lonely.tick()
    assert lonely.encryption_key().name == fleet.state.current.name


def test_a_node_that_seeds_the_ring_keeps_its_keys_and_never_publishes_zeros(
    own_redis: RedisServer, prefix: str
) -> None:
    """A node that started without Redis seeded the ring from its own keys when Redis came back, then "reused"
    the loaded copy and wiped it — the same objects: its keys became zeros (every handshake failed, and a
    ticket sealed under zeros, forgeable by anyone, opened), and the next re-seed published the zeros to the
    whole fleet. Zeros from Redis are refused, and a wiped key opens nothing."""
    clock = Clock()
    own_redis.stop()
    lonely = node(own_redis, prefix, clock)
    own_redis.start()
    clock.now += 10
    lonely.tick()  # Redis is back with no ring: this node creates it from the keys it holds
    clock.now += 10
    lonely.tick()
    key = lonely.encryption_key()
    assert not key.wiped
    assert open_ticket(lonely, seal_ticket(lonely.encryption_key(), b"state", os.urandom)) == b"state"
    own_redis.client().flushall()  # Redis lost the ring (a restart without persistence)
    clock.now += 10
    lonely.refresh()  # puts the ring back from the keys it holds
    stored = own_redis.client().hget(prefix + "ring", "current")
    assert isinstance(stored, bytes) and any(stored[-32:])  # not the zero key
    forged_under_zeros = key.name + bytes(12) + b"\x00" * 32
    assert open_ticket(lonely, forged_under_zeros) is None
    own_redis.client().hset(prefix + "ring", "current", key.name + bytes(64))  # an all-zero key in the ring
    lonely.refresh()
    assert not lonely.encryption_key().wiped


def test_unusable_ring_in_redis_is_logged_and_cached_keys_serve(
    redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    a = node(redis_server, prefix, clock)
    current = a.encryption_key().name
    redis_server.client().hset(prefix + "ring", "current", b"short")
    with caplog.at_level(logging.ERROR, logger="tlskit.tickets.redis"):
        a.refresh()
    assert "is unusable" in caplog.text
    assert a.encryption_key().name == current


def test_rotation_interval_must_be_shorter_than_ticket_lifetime(redis_server: RedisServer, prefix: str) -> None:
    with pytest.raises(ConfigError, match="not shorter than the ticket lifetime"):
        node(redis_server, prefix, Clock(), rotation_interval=HOUR, ticket_lifetime=HOUR)


def test_background_refresher_keeps_accesses_off_redis(redis_server: RedisServer, prefix: str) -> None:
    clock = Clock()
    a = node(redis_server, prefix, clock)
    a.start_refresher(period=0.01)
    try:
        clock.now += HOUR
        for _ in range(500):
            if a.version == 2:
                break
            threading.Event().wait(0.01)
        assert a.version == 2
    finally:
        a.close()
    assert a.state.current.wiped
