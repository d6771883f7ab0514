"""Store protocols. Any backend (memory, Redis, Valkey, a cluster) that implements them drops in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..enums import CipherSuite


class ReplayStore(Protocol):
    """The 0-RTT seen-set (RFC 8446 §8.2): shared by every server that shares the ticket keys."""

    def check_and_insert(self, key: bytes, window_seconds: float, history_seconds: float | None = None, *,
                         now: float | None = None, max_skew: float | None = None) -> bool:
        """True if ``key`` was not seen within the window (and record it for ``window_seconds``).

        ``history_seconds`` (default: the window): how far back an earlier insertion of ``key`` could lie. A
        store that does not hold that much history (it was just made, or lost its entries) cannot say the key
        is new and raises ``ReplayHistoryUnknown``. ``now`` is the caller's clock, the one its freshness check
        used: a store with a clock of its own (Redis) raises ``ReplayClockSkew`` when the two differ by more than
        ``max_skew`` seconds and keeps entries that much longer either way, a store in the caller's process times
        its entries by ``now`` as well as its own clock. Any exception means the store cannot vouch for the key,
        and the server then refuses 0-RTT, or the single-use ticket (fail closed)."""
        ...


class ReplayClockSkew(Exception):
    """The server's clock and the shared replay store's differ by more than the freshness check allows: the
    store's entries would expire before that server's check stops taking the same ClientHello (RFC 8446 §8.3),
    so the server refuses 0-RTT until its clock is right (NTP)."""


class ReplayHistoryUnknown(Exception):
    """The store holds less history than a check needs: it is new, or lost its entries (a restart without
    persistence, a flush, an eviction). RFC 8446 §8.2: "When implementations are freshly started, they SHOULD
    reject 0-RTT as long as any portion of their recording window overlaps the startup time"."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredTicket:
    """What a client keeps of a NewSessionTicket to resume later (§4.6.1)."""

    ticket: bytes
    psk: bytes
    cipher_suite: CipherSuite
    server_name: str | None
    alpn: str | None
    received_at: float
    lifetime: int
    age_add: int
    max_early_data_size: int
    peer_chain: tuple[bytes, ...] = ()  # the server's chain as it was verified: a resumed session reports it (§4.6.1)

    def __post_init__(self) -> None:
        """A store that keeps tickets as JSON or in a database hands back lists, ints and buffers; the engine
        (checked at run time when compiled) takes bytes, tuples and the enum."""
        for name in ("ticket", "psk"):
            value = getattr(self, name)
            if isinstance(value, bytearray | memoryview):
                object.__setattr__(self, name, bytes(value))
        if not isinstance(self.peer_chain, tuple) or not all(type(c) is bytes for c in self.peer_chain):
            object.__setattr__(self, "peer_chain", tuple(bytes(c) for c in self.peer_chain))
        if not isinstance(self.cipher_suite, CipherSuite):
            object.__setattr__(self, "cipher_suite", CipherSuite(self.cipher_suite))

    def expired(self, now: float) -> bool:
        return now - self.received_at >= self.lifetime


class SessionStore(Protocol):
    """Client-side tickets per key: the client uses ``ClientConfig.session_key`` (the server name and a digest
    of the verification policy and client certificate the session was authenticated under)."""

    def put(self, server_name: str, ticket: StoredTicket) -> None: ...

    def take(self, server_name: str, now: float) -> StoredTicket | None:
        """A usable ticket for the server, removed from the store (tickets are single-use, §C.4)."""
        ...
