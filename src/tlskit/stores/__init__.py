"""Pluggable stores (DESIGN §4): 0-RTT replay protection and client session caches."""

from .base import ReplayStore, SessionStore, StoredTicket
from .memory import MemoryReplayStore, MemorySessionStore

__all__ = ["MemoryReplayStore", "MemorySessionStore", "ReplayStore", "SessionStore", "StoredTicket"]
