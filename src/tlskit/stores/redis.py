"""Fleet stores in Redis (DESIGN §4) through redis-py: the 0-RTT seen-set and a shared client session cache.

Install with ``pip install tlskit[fleet]``. Redis holds secrets here (PSKs in session tickets kept by the
client cache; ticket keys in ``tickets.redis``): keep it on a private network with a password or ACL user,
and use ``rediss://`` when the network is not yours.
"""

from __future__ import annotations

import json
import math

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..enums import CipherSuite
from .base import StoredTicket

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


class RedisReplayStore:
    """The 0-RTT seen-set shared by a fleet (RFC 8446 §8.2): ``SET prefix‖key 1 NX PX window``.

    Errors and timeouts propagate as ``redis.RedisError`` (or ``OSError``); the engine then refuses 0-RTT.
    """

    def __init__(self, client: redis.Redis, prefix: str = "tlskit:0rtt:") -> None:
        self._client = client
        self._prefix = prefix.encode()

    @classmethod
    def from_url(cls, url: str, prefix: str = "tlskit:0rtt:", *, timeout: float = DEFAULT_TIMEOUT) -> RedisReplayStore:
        return cls(redis_client(url, timeout=timeout), prefix)

    def check_and_insert(self, key: bytes, window_seconds: float) -> bool:
        window_ms = max(1, math.ceil(window_seconds * 1000))
        return bool(self._client.set(self._prefix + key, b"1", nx=True, px=window_ms))


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
    }).encode()


def _decode(raw: bytes) -> StoredTicket:
    d = json.loads(raw)
    return StoredTicket(
        ticket=bytes.fromhex(d["ticket"]), psk=bytes.fromhex(d["psk"]), cipher_suite=CipherSuite(d["cipher_suite"]),
        server_name=d["server_name"], alpn=d["alpn"], received_at=float(d["received_at"]),
        lifetime=int(d["lifetime"]), age_add=int(d["age_add"]), max_early_data_size=int(d["max_early_data_size"]),
    )
