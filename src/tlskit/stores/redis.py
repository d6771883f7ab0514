"""Fleet stores in Redis (DESIGN §4) through redis-py: the 0-RTT seen-set and a shared client session cache.

Install with ``pip install tlskit[fleet]``. Redis holds secrets here (PSKs in session tickets kept by the
client cache; ticket keys in ``tickets.redis``): keep it on a private network with a password or ACL user,
and use ``rediss://`` when the network is not yours.
"""

from __future__ import annotations

import contextlib
import json
import math
import re

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..enums import CipherSuite
from ..errors import ConfigError
from .base import ReplayClockSkew, ReplayHistoryUnknown, StoredTicket

DEFAULT_TIMEOUT = 0.25  # seconds; a handshake waits at most this long for a store that is down


def redis_client(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> redis.Redis:
    """A client that fails fast: short connect and socket timeouts, no retries (the caller falls back)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )


# KEYS[1]: the entry, KEYS[2]: the epoch, "RUN_ID:MS" (the Redis process, and its time in ms, when this set began);
# ARGV: window ms, history ms. Returns {1: new, 0: seen within the window, -N: new to a set that holds only N ms
# of history; Redis's time in ms}. The epoch starts again when it is missing (first use, a flush, a restart
# without persistence) or names another process (a restart that reloaded a snapshot older than the last
# writes, a failover to a replica): either may have lost entries. One script, so the check and the insert are
# atomic.
_EPOCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or '?'
local function began()
  local epoch = redis.call('GET', KEYS[2])
  local at = epoch and epoch:sub(1, #run_id + 1) == run_id .. ':' and tonumber(epoch:sub(#run_id + 2))
  if not at or at > now then  -- (a clock stepped back: the epoch's age is unknown, begin again)
    redis.call('SET', KEYS[2], run_id .. ':' .. now)
    at = now
  end
  return at
end
"""
_BEGIN = _EPOCH + "return now - began()"
_CHECK_AND_INSERT = _EPOCH + """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return {0, now}
end
local held = now - began()
if held < tonumber(ARGV[2]) then
  return {-math.max(1, held), now}
end
return {1, now}
"""


class RedisReplayStore:
    """The 0-RTT seen-set shared by a fleet (RFC 8446 §8.2): ``SET prefix‖key 1 NX PX window``.

    The set keeps an epoch key (``prefix‖epoch``, no expiry): the Redis process (its ``run_id``) and its time
    when the set began. When Redis may have lost entries — the epoch is gone (``FLUSHALL``, a restart without
    persistence) or names another process (a restart from a snapshot older than the last writes, a failover to a
    replica) — the next check starts a new epoch, and until the set holds enough history again (a window; for
    a single-use ticket, its age) every check raises ``ReplayHistoryUnknown`` and 0-RTT is refused, so a
    ClientHello seen before the loss cannot pass as new (a clock stepped back on the Redis host begins a new
    epoch too). Needs Redis ≥ 5 (or Valkey); run it with ``maxmemory-policy noeviction``: an eviction policy
    that spares keys without expiry drops entries and keeps the epoch. With Redis Cluster the prefix needs a
    hash tag (``{tlskit:0rtt}:``), so the whole set lives in one slot.

    Errors and timeouts propagate as ``redis.RedisError`` (or ``OSError``); the engine then refuses 0-RTT.
    """

    def __init__(self, client: redis.Redis, prefix: str = "tlskit:0rtt:") -> None:
        if _is_cluster(client) and not re.search(r"\{[^{}]+\}", prefix):
            raise ConfigError(f"replay store prefix {prefix!r}: with Redis Cluster give a prefix with a hash tag, "
                              "e.g. '{tlskit:0rtt}:' (an entry and the set's epoch key must share a slot)")
        self._client = client
        self._prefix = prefix.encode()
        self.epoch_key = self._prefix + b"epoch"  # entries are prefix‖32 to 49 bytes: never this name
        self._script = client.register_script(_CHECK_AND_INSERT)
        self._begin = client.register_script(_BEGIN)
        with contextlib.suppress(redis.RedisError, OSError):  # down: the first check begins it
            self.history()

    def history(self) -> float:
        """Seconds of history the set holds (beginning it if it has none, or lost its data)."""
        return int(self._begin(keys=[self.epoch_key, self.epoch_key])) / 1000

    @classmethod
    def from_url(cls, url: str, prefix: str = "tlskit:0rtt:", *, timeout: float = DEFAULT_TIMEOUT) -> RedisReplayStore:
        return cls(redis_client(url, timeout=timeout), prefix)

    def check_and_insert(self, key: bytes, window_seconds: float, history_seconds: float | None = None, *,
                         now: float | None = None, max_skew: float | None = None) -> bool:
        """As ``ReplayStore``. Entries expire by Redis's clock, not the servers': a caller's ``now`` further than
        ``max_skew`` from it raises ``ReplayClockSkew`` (the entry is recorded all the same), and entries live,
        and history is needed, 2 * ``max_skew`` longer, as servers within that of Redis's clock (each checked) may
        take a key that much later (or have taken it that much earlier) than the caller reckons."""
        margin = 2 * max_skew if now is not None and max_skew is not None else 0.0
        window_ms = max(1, math.ceil((window_seconds + margin) * 1000))
        history_ms = window_ms if history_seconds is None else max(0, math.ceil((history_seconds + margin) * 1000))
        reply = self._script(keys=[self._prefix + key, self.epoch_key], args=[window_ms, history_ms])
        answer, redis_ms = int(reply[0]), int(reply[1])
        if now is not None and max_skew is not None and abs(now * 1000 - redis_ms) > max_skew * 1000:
            raise ReplayClockSkew(
                f"this server's clock is {(now * 1000 - redis_ms) / 1000:+.1f} s off Redis's; the replay check "
                f"allows {max_skew:g} s (run NTP on both)")
        if answer < 0:
            raise ReplayHistoryUnknown(
                f"the replay set in Redis holds {-answer / 1000:.1f} s of history (new, or its data was lost: "
                f"a restart without persistence, a flush, an eviction), {history_ms / 1000:.1f} s needed"
            )
        return answer == 1

def _is_cluster(client: object) -> bool:
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover - redis-py without cluster support
        return False
    return isinstance(client, RedisCluster)


class RedisSessionStore:
    """A client ``SessionStore`` shared by a fleet of clients (e.g. proxies to one upstream).

    ``take`` pops atomically, so a ticket is used by one client only (single use, RFC 8446 §C.4). Each
    server name keeps its newest ``per_server`` tickets; the list expires with the longest-lived one.
    """

    def __init__(self, client: redis.Redis, prefix: str = "tlskit:sessions:", *, per_server: int = 4) -> None:
        self._client = client
        self._prefix = prefix
        self._per_server = per_server

    @classmethod
    def from_url(cls, url: str, prefix: str = "tlskit:sessions:", *, timeout: float = DEFAULT_TIMEOUT,
                 per_server: int = 4) -> RedisSessionStore:
        return cls(redis_client(url, timeout=timeout), prefix, per_server=per_server)

    def put(self, server_name: str, ticket: StoredTicket) -> None:
        key = self._prefix + server_name
        pipe = self._client.pipeline(transaction=True)
        pipe.rpush(key, _encode(ticket))
        pipe.ltrim(key, -self._per_server, -1)
        pipe.expire(key, max(1, ticket.lifetime), gt=True)
        pipe.expire(key, max(1, ticket.lifetime), nx=True)
        pipe.execute()

    def take(self, server_name: str, now: float) -> StoredTicket | None:
        key = self._prefix + server_name
        while True:
            raw = self._client.rpop(key)
            if raw is None:
                return None
            if isinstance(raw, str):  # a client made with decode_responses=True
                raw = raw.encode()
            if not isinstance(raw, bytes):
                raise TypeError(f"RPOP returned {type(raw).__name__}")
            try:
                ticket = _decode(raw)
            except (ValueError, KeyError, TypeError):
                continue  # not ours, or an older format: skip it
            if not ticket.expired(now):
                return ticket


def _encode(t: StoredTicket) -> bytes:
    return json.dumps({
        "ticket": t.ticket.hex(), "psk": t.psk.hex(), "cipher_suite": int(t.cipher_suite),
        "server_name": t.server_name, "alpn": t.alpn, "received_at": t.received_at, "lifetime": t.lifetime,
        "age_add": t.age_add, "max_early_data_size": t.max_early_data_size,
        "peer_chain": [der.hex() for der in t.peer_chain],
    }).encode()


def _decode(raw: bytes) -> StoredTicket:
    d = json.loads(raw)
    return StoredTicket(
        ticket=bytes.fromhex(d["ticket"]), psk=bytes.fromhex(d["psk"]), cipher_suite=CipherSuite(d["cipher_suite"]),
        server_name=d["server_name"], alpn=d["alpn"], received_at=float(d["received_at"]),
        lifetime=int(d["lifetime"]), age_add=int(d["age_add"]), max_early_data_size=int(d["max_early_data_size"]),
        peer_chain=tuple(bytes.fromhex(der) for der in d.get("peer_chain", ())),
    )
