"""In-process stores for one node (DESIGN §4): bounded and expiring."""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque
from collections.abc import Callable

from .base import ReplayHistoryUnknown, StoredTicket

STEP_TOLERANCE = 1.0  # seconds a caller's clock may go back against ours before it counts as a step (NTP slew)


class MemoryReplayStore:
    """A bounded, expiring seen-set for one process. When full it refuses new keys (``OverflowError``: the
    engine then declines 0-RTT, or the resumption of a single-use ticket) rather than forget a live entry.

    Entries may have different windows (ClientHello binders live ``freshness_window`` seconds, single-use
    ticket marks until the ticket expires, RFC 8446 §8.1), so expiry runs off a heap ordered by deadline.
    """

    def __init__(self, max_entries: int = 1_000_000, clock: Callable[[], float] = time.monotonic, *,
                 replaces_lost: bool = False) -> None:
        """``replaces_lost``: this store stands in for one whose entries are gone (a restarted server whose
        ticket keys outlive the process), so it holds no history from before it was made and refuses every key
        whose history would reach back that far (``ReplayHistoryUnknown``; RFC 8446 §8.2: "When
        implementations are freshly started, they SHOULD reject 0-RTT as long as any portion of their
        recording window overlaps the startup time")."""
        self._seen: dict[bytes, tuple[float, float]] = {}  # key -> (deadline by our clock, by the caller's)
        self._deadlines: list[tuple[float, bytes]] = []  # heap by our clock; stale pairs are skipped when popped
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._history_from: float | None = clock() if replaces_lost else None
        self._offset: float | None = None  # the caller's clock minus ours, at its highest
        self._stepped_until = -math.inf  # (our clock) refusing until then: the caller's clock stepped back
        self._stepped_by = 0.0

    def _watch_steps(self, mono: float, wall: float, window: float) -> None:
        """A caller's clock stepped back repeats times whose entries this store has let go (both deadlines were
        past): a ClientHello from then would pass the age check again, and be new here. Until the clock is past
        where it was (plus a window), every key is refused (``ReplayHistoryUnknown``)."""
        offset = wall - mono
        if self._offset is None or offset > self._offset:
            self._offset = offset
        elif self._offset - offset > STEP_TOLERANCE:
            self._stepped_by = self._offset - offset
            self._stepped_until = max(self._stepped_until, mono + self._stepped_by + window)
            self._offset = offset

    def check_and_insert(self, key: bytes, window_seconds: float, history_seconds: float | None = None, *,
                         now: float | None = None, max_skew: float | None = None) -> bool:
        """An entry lives until both its deadlines have passed: by this store's clock (monotonic) and by the
        caller's ``now`` (the clock its freshness check used, when given). A wall clock stepped back would
        otherwise take a ClientHello again after a monotonic expiry, and one stepped forward then back would
        have expired every entry by the caller's clock alone (§8.3)."""
        mono = self._clock()
        wall = mono if now is None else now
        with self._lock:
            self._watch_steps(mono, wall, window_seconds)
            seen, deadlines = self._seen, self._deadlines
            while deadlines and deadlines[0][0] <= mono:
                expires, old = heapq.heappop(deadlines)
                entry = seen.get(old)
                if entry is None or entry[0] != expires:
                    continue  # replaced since
                if entry[1] > wall:  # still live by the caller's clock: look again when that much has passed
                    again = max(mono + (entry[1] - wall), math.nextafter(mono, math.inf))  # (always later)
                    seen[old] = (again, entry[1])
                    heapq.heappush(deadlines, (again, old))
                    continue
                del seen[old]
            previous = seen.get(key)
            if previous is not None and (previous[0] > mono or previous[1] > wall):
                return False
            if len(seen) >= self._max:
                raise OverflowError("replay store is full")
            expires = mono + window_seconds
            seen[key] = (expires, wall + window_seconds)  # recorded even when refused below: its replay too
            heapq.heappush(deadlines, (expires, key))
        if mono < self._stepped_until:
            raise ReplayHistoryUnknown(f"the clock stepped back {self._stepped_by:.1f} s: keys it had let go of "
                                       "would be taken for new until it is past where it was (RFC 8446 §8.3)")
        if self._history_from is not None:
            held = mono - self._history_from
            needed = window_seconds if history_seconds is None else history_seconds
            if held < needed:  # a key the lost store saw in that time would be taken for new
                raise ReplayHistoryUnknown(
                    f"the replay set holds {held:.1f} s of history (it was started afresh), {needed:.1f} s needed"
                )
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
