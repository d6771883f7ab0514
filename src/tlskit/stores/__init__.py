"""Pluggable stores (DESIGN §4): 0-RTT replay protection and client session caches."""

from .base import ReplayHistoryUnknown, ReplayStore, SessionStore, StoredTicket
from .memory import MemoryReplayStore, MemorySessionStore

__all__ = [
    "MemoryReplayStore", "MemorySessionStore", "ReplayHistoryUnknown", "ReplayStore", "SessionStore", "StoredTicket",
]
