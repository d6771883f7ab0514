"""Store protocols. Any backend (memory, Redis, Valkey, a cluster) that implements them drops in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..enums import CipherSuite


class ReplayStore(Protocol):
    """The 0-RTT seen-set (RFC 8446 §8.2): shared by every server that shares the ticket keys."""

    def check_and_insert(self, key: bytes, window_seconds: float) -> bool:
        """True if ``key`` was not seen within the window (and record it). Any exception means the store
        is unavailable, and the server then refuses 0-RTT (fail closed)."""
        ...


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

    def expired(self, now: float) -> bool:
        return now - self.received_at >= self.lifetime


class SessionStore(Protocol):
    """Client-side tickets per key: the client uses ``ClientConfig.session_key`` (the server name and a digest
    of the verification policy and client certificate the session was authenticated under)."""

    def put(self, server_name: str, ticket: StoredTicket) -> None: ...

    def take(self, server_name: str, now: float) -> StoredTicket | None:
        """A usable ticket for the server, removed from the store (tickets are single-use, §C.4)."""
        ...
