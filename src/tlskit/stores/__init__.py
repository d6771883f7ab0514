"""Pluggable stores (DESIGN §4): 0-RTT replay protection and client session caches."""

from .base import ReplayClockSkew, ReplayHistoryUnknown, ReplayStore, SessionStore, StoredTicket
from .memory import MemoryReplayStore, MemorySessionStore

__all__ = [
    "MemoryReplayStore", "MemorySessionStore", "ReplayClockSkew", "ReplayHistoryUnknown", "ReplayStore",
    "SessionStore", "StoredTicket",
]
