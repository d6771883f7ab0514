"""In-process stores for one node (DESIGN §4): bounded and expiring."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from .base import StoredTicket


class MemoryReplayStore:
    """A bounded seen-set; when full the oldest entries go first (they are the closest to expiring)."""

    def __init__(self, max_entries: int = 1_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def check_and_insert(self, key: bytes, window_seconds: float) -> bool:
        now = self._clock()
        with self._lock:
            seen = self._seen
            while seen:
                oldest, expires = next(iter(seen.items()))
                if expires > now:
                    break
                del seen[oldest]
            previous = seen.get(key)
            if previous is not None and previous > now:
                return False
            seen[key] = now + window_seconds
            seen.move_to_end(key)
            if len(seen) > self._max:
                # Full: refuse rather than forget a live entry (fail closed for 0-RTT).
                del seen[key]
                raise OverflowError("replay store is full")
            return True

    def __len__(self) -> int:
        return len(self._seen)


class MemorySessionStore:
    """Tickets per server name, newest last, at most ``per_server`` each."""

    def __init__(self, per_server: int = 4) -> None:
        self._tickets: dict[str, deque[StoredTicket]] = {}
        self._per_server = per_server
        self._lock = threading.Lock()

    def put(self, server_name: str, ticket: StoredTicket) -> None:
        with self._lock:
            self._tickets.setdefault(server_name, deque(maxlen=self._per_server)).append(ticket)

    def take(self, server_name: str, now: float) -> StoredTicket | None:
        with self._lock:
            queue = self._tickets.get(server_name)
            while queue:
                ticket = queue.pop()
                if not ticket.expired(now):
                    return ticket
            return None
