"""RedisReplayStore and RedisSessionStore against a real redis-server (issue 4 items 4 and 5)."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from tests.fleet.conftest import RedisServer
from tlskit.enums import CipherSuite
from tlskit.stores import StoredTicket
from tlskit.stores.redis import RedisReplayStore, RedisSessionStore


def test_replay_store_accepts_each_key_once(redis_server: RedisServer, prefix: str) -> None:
    a = RedisReplayStore(redis_server.client(), prefix)
    b = RedisReplayStore(redis_server.client(), prefix)  # another node
    assert a.check_and_insert(b"binder-1", 10)
    assert not a.check_and_insert(b"binder-1", 10)
    assert not b.check_and_insert(b"binder-1", 10)
    assert b.check_and_insert(b"binder-2", 10)
    ttl = redis_server.client().pttl(prefix.encode() + b"binder-1")
    assert isinstance(ttl, int) and 9000 < ttl <= 10000


def test_replay_store_accepts_again_after_the_window(redis_server: RedisServer, prefix: str) -> None:
    store = RedisReplayStore(redis_server.client(), prefix)
    assert store.check_and_insert(b"k", 0.1)
    assert not store.check_and_insert(b"k", 0.1)
    time.sleep(0.15)
    assert store.check_and_insert(b"k", 0.1)


def test_concurrent_nodes_accept_a_replayed_hello_once(redis_server: RedisServer, prefix: str) -> None:
    stores = [RedisReplayStore(redis_server.client(), prefix) for _ in range(12)]
    start = threading.Barrier(len(stores))
    results: list[bool] = []

    def check(store: RedisReplayStore) -> None:
        start.wait()
        results.append(store.check_and_insert(b"same-binder", 10))

    threads = [threading.Thread(target=check, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 11 + [True]


def test_replay_store_raises_quickly_when_redis_is_down(own_redis: RedisServer, prefix: str) -> None:
    store = RedisReplayStore.from_url(own_redis.url, prefix)
    assert store.check_and_insert(b"k", 10)
    own_redis.stop()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        store.check_and_insert(b"other", 10)
    assert time.monotonic() - started < 1.0


def test_replay_store_times_out_on_a_hung_redis(own_redis: RedisServer, prefix: str) -> None:
    store = RedisReplayStore.from_url(own_redis.url, prefix, timeout=0.2)
    assert store.check_and_insert(b"k", 10)
    own_redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            store.check_and_insert(b"other", 10)
        assert time.monotonic() - started < 0.5
    finally:
        own_redis.resume()


def _ticket(n: int, received_at: float = 100.0, lifetime: int = 60) -> StoredTicket:
    return StoredTicket(ticket=bytes([n]) * 40, psk=bytes([n]) * 32, cipher_suite=CipherSuite.TLS_AES_256_GCM_SHA384,
                        server_name="example.com", alpn="h2", received_at=received_at, lifetime=lifetime,
                        age_add=0xFFFFFFF0 + n, max_early_data_size=16384)


def test_session_store_shares_tickets_and_hands_each_out_once(redis_server: RedisServer, prefix: str) -> None:
    a = RedisSessionStore(redis_server.client(), prefix, per_server=2)
    b = RedisSessionStore(redis_server.client(), prefix, per_server=2)
    for n in (1, 2, 3):
        a.put("example.com", _ticket(n))
    assert b.take("example.com", 110) == _ticket(3)
    assert a.take("example.com", 110) == _ticket(2)
    assert b.take("example.com", 110) is None


def test_session_store_skips_expired_tickets(redis_server: RedisServer, prefix: str) -> None:
    store = RedisSessionStore(redis_server.client(), prefix)
    store.put("example.com", _ticket(1, lifetime=1000))
    store.put("example.com", _ticket(2, lifetime=5))
    assert store.take("example.com", 200) == _ticket(1, lifetime=1000)
    ttl = redis_server.client().ttl(prefix + "example.com")
    assert ttl == -2  # emptied list is gone
