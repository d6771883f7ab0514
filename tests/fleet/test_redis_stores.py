"""RedisReplayStore and RedisSessionStore against a real redis-server (issue 4 items 4 and 5)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from tests.fleet.conftest import RedisServer
from tests.interop.peers import free_port, wait_listening
from tlskit.enums import CipherSuite
from tlskit.errors import ConfigError
from tlskit.stores import ReplayClockSkew, ReplayHistoryUnknown, StoredTicket
from tlskit.stores.redis import RedisReplayStore, RedisSessionStore


def test_replay_store_accepts_each_key_once(redis_server: RedisServer, prefix: str) -> None:
    redis_server.age_replay_set(prefix)
    a = RedisReplayStore(redis_server.client(), prefix)
    b = RedisReplayStore(redis_server.client(), prefix)  # another node
    assert a.check_and_insert(b"binder-1", 10)
    assert not a.check_and_insert(b"binder-1", 10)
    assert not b.check_and_insert(b"binder-1", 10)
    assert b.check_and_insert(b"binder-2", 10)
    ttl = redis_server.client().pttl(prefix.encode() + b"binder-1")
    assert isinstance(ttl, int) and 9000 < ttl <= 10000


def test_replay_store_refuses_a_server_whose_clock_is_off_redis_s(redis_server: RedisServer, prefix: str) -> None:
    """Entries expire by Redis's clock, the age check runs on each server's: a server 25 s behind took a replayed
    0-RTT ClientHello once its entry had expired (fleet review). Past max_skew the store says so (and records the
    key all the same); within it, it answers as ever."""
    redis_server.age_replay_set(prefix)
    store = RedisReplayStore(redis_server.client(), prefix)
    with pytest.raises(ReplayClockSkew, match=r"-2\d\.\d s off Redis's"):
        store.check_and_insert(b"skewed", 30, now=time.time() - 25, max_skew=5)
    assert not store.check_and_insert(b"skewed", 30, now=time.time(), max_skew=5)  # recorded all the same
    assert store.check_and_insert(b"on-time", 30, now=time.time() + 1, max_skew=5)


def test_replay_store_accepts_again_after_the_window(redis_server: RedisServer, prefix: str) -> None:
    redis_server.age_replay_set(prefix)
    store = RedisReplayStore(redis_server.client(), prefix)
    assert store.check_and_insert(b"k", 0.1)
    assert not store.check_and_insert(b"k", 0.1)
    time.sleep(0.15)
    assert store.check_and_insert(b"k", 0.1)


def test_concurrent_nodes_accept_a_replayed_hello_once(redis_server: RedisServer, prefix: str) -> None:
    redis_server.age_replay_set(prefix)
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
    own_redis.age_replay_set(prefix)
    store = RedisReplayStore.from_url(own_redis.url, prefix)
    assert store.check_and_insert(b"k", 10)
    own_redis.stop()
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        store.check_and_insert(b"other", 10)
    assert time.monotonic() - started < 1.0


def test_replay_store_times_out_on_a_hung_redis(own_redis: RedisServer, prefix: str) -> None:
    own_redis.age_replay_set(prefix)
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


def test_a_new_replay_set_refuses_until_it_holds_a_window_of_history(redis_server: RedisServer, prefix: str) -> None:
    """RFC 8446 §8.2: a set that just began cannot tell a replay of an older ClientHello from a new one."""
    store = RedisReplayStore(redis_server.client(), prefix)
    with pytest.raises(ReplayHistoryUnknown, match=r"holds 0\.0 s of history"):
        store.check_and_insert(b"first", 0.3)
    assert not store.check_and_insert(b"first", 0.3)  # recorded all the same
    time.sleep(0.35)
    assert store.check_and_insert(b"second", 0.3)
    assert store.check_and_insert(b"mark", 7200, history_seconds=0.1)  # a ticket issued after the set began


def test_the_set_begins_when_a_node_starts_not_at_its_first_0rtt(redis_server: RedisServer, prefix: str) -> None:
    store = RedisReplayStore(redis_server.client(), prefix)
    time.sleep(0.35)
    assert 0.3 < store.history() < 5
    assert store.check_and_insert(b"first", 0.3)


@pytest.mark.parametrize("loss", ["flushall", "restart", "restart from a snapshot"])
def test_a_replay_set_that_lost_its_data_refuses_the_replay_it_would_have_caught(
    own_redis: RedisServer, prefix: str, loss: str
) -> None:
    """Redis restarted without persistence, flushed, or restarted from a snapshot older than the last writes:
    the entries are gone and a replayed ClientHello within its window was accepted a second time."""
    own_redis.age_replay_set(prefix)
    if loss == "restart from a snapshot":
        own_redis.client().save()  # the snapshot holds the epoch, not the entry written after it
    store = RedisReplayStore.from_url(own_redis.url, prefix)
    assert store.check_and_insert(b"binder", 10)
    match loss:
        case "flushall":
            own_redis.client().flushall()
        case "restart":
            own_redis.stop()
            own_redis.start()
        case "restart from a snapshot":  # SIGTERM saves nothing under --save "": the SAVE above is reloaded
            own_redis.stop()
            own_redis.start()
            assert own_redis.client().exists(prefix.encode() + b"epoch")
            assert not own_redis.client().exists(prefix.encode() + b"binder")
    with pytest.raises(ReplayHistoryUnknown):
        store.check_and_insert(b"binder", 10)
    assert not store.check_and_insert(b"binder", 10)


def test_a_clock_stepped_back_on_the_redis_host_begins_a_new_epoch(redis_server: RedisServer, prefix: str) -> None:
    """An epoch from the future (the host ran ahead, then NTP stepped it back) refused 0-RTT for as long as the
    step (an hour here), saying the set held "0.0 s" of history: it begins again, refusing one window."""
    redis_server.age_replay_set(prefix, -3600.0)
    store = RedisReplayStore(redis_server.client(), prefix)
    assert 0 <= store.history() < 5
    time.sleep(0.35)
    assert store.check_and_insert(b"k", 0.3)


def test_redis_cluster_needs_a_prefix_with_a_hash_tag(tmp_path: Path) -> None:
    """The check's two keys (the entry, the set's epoch) must share a slot: on a cluster every check failed
    ("all keys must map to the same key slot") and 0-RTT was refused for good."""
    exe = shutil.which("redis-server")
    assert exe is not None
    port, bus = free_port(), free_port()  # the bus port defaults to port + 10000: past 65535 for a high port
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                             "--cluster-port", str(bus),
                             "--cluster-config-file", str(tmp_path / "nodes.conf"), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc=proc, what="redis-server --cluster-enabled yes")
        plain = redis.Redis(port=port, socket_timeout=2)
        plain.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 10
        while plain.cluster("info")["cluster_state"] != "ok":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cluster = RedisCluster(host="127.0.0.1", port=port, socket_timeout=2)
        with pytest.raises(ConfigError, match="hash tag"):
            RedisReplayStore(cluster, "tlskit:0rtt:")  # type: ignore[arg-type]
        store = RedisReplayStore(cluster, "{tlskit:0rtt}:")  # type: ignore[arg-type]
        with pytest.raises(ReplayHistoryUnknown):
            store.check_and_insert(b"first", 0.3)
        time.sleep(0.35)
        assert store.check_and_insert(b"second", 0.3) and not store.check_and_insert(b"second", 0.3)
        cluster.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


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


def test_a_server_whose_clock_is_off_redis_s_refuses_0rtt(redis_server: RedisServer, prefix: str) -> None:
    """In the engine, with everything else consistent (the ticket, the client and the server on a clock 25 s behind
    Redis's, so the age check passes): that server refuses 0-RTT, as its age check and the store's expiry would
    disagree by 25 s; on Redis's time the same exchange is accepted."""
    from tests.pairing import events_of
    from tests.test_engine_resumption import EARLY_4K, Clock, early_server, first_connection, zero_rtt_attempt
    from tlskit.connection import Connection
    from tlskit.events import EarlyData
    from tlskit.stores.memory import MemorySessionStore

    redis_server.age_replay_set(prefix)
    store = RedisReplayStore(redis_server.client(), prefix)
    for offset, accepted in ((-25.0, False), (0.0, True)):
        tickets, clock = MemorySessionStore(), Clock()
        clock.now += offset
        first_connection(tickets, clock, early_data=EARLY_4K, replay_store=store)
        _, _, flight = zero_rtt_attempt(tickets, clock, early_server(clock, store))
        server = Connection(early_server(clock, store))  # type: ignore[arg-type]
        server.receive_data(flight)
        assert bool(events_of(server.events(), EarlyData)) is accepted, offset


def test_single_use_marks_outlive_the_ticket_by_the_clock_margin_and_a_skewed_server_is_refused(
        redis_server: RedisServer, prefix: str) -> None:
    """A single-use ticket's mark expired by Redis's clock when the claiming server reckoned the ticket expired, so
    a server 25 s behind took the ticket again after that (review). The mark now lives 2 * SINGLE_USE_SKEW longer,
    and a server further off than SINGLE_USE_SKEW is refused."""
    import hashlib

    from tests.test_tickets_single_use import state
    from tlskit.handshake.psk import SINGLE_USE_SKEW, claim_ticket

    redis_server.age_replay_set(prefix)
    store, client = RedisReplayStore(redis_server.client(), prefix), redis_server.client()
    now = time.time()
    ticket = state(issued_at=now - 58.5, lifetime=60)  # 1.5 s left by this server's clock
    assert claim_ticket(store, b"ticket", ticket, now)
    ttl = client.pttl(prefix.encode() + b"\x01" + hashlib.sha256(b"ticket").digest())
    assert isinstance(ttl, int) and ttl > (1.5 + 2 * SINGLE_USE_SKEW - 1) * 1000, ttl
    assert not claim_ticket(store, b"ticket", ticket, time.time() - 25)  # a server 25 s behind: still taken
    other = state(issued_at=now - 10, lifetime=60)
    assert not claim_ticket(store, b"other", other, time.time() - SINGLE_USE_SKEW - 15)  # too far off: refused
