"""Ticket keys rotated in process on a schedule (one node; ``tickets.redis`` shares a ring across a fleet).

Three keys: ``current`` seals new tickets, ``previous`` still opens the tickets of the last interval, and
``next`` is made one interval ahead (so a fleet can know it before any node seals with it). At each rotation
previous is retired, current becomes previous, next becomes current and a new next is made. A ticket thus
opens for at least one interval and at most two, which is why the interval must be shorter than the ticket
lifetime: a key that outlives every ticket it sealed is a key that was never rotated.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ConfigError
from .keyring import TicketKey

DEFAULT_ROTATION = 3600.0
MIN_ROTATION, MAX_ROTATION = 3600.0, 86400.0
WIPE_DELAY = 60.0  # a retired key may still be in a handshake's hands for a moment; wiped after this


def check_rotation(rotation_interval: float, ticket_lifetime: float) -> None:
    """Refuse schedules outside 1 to 24 h, or not shorter than the ticket lifetime (RFC 8446 §4.6.1 caps that at
    7 days). ``ServerConfig`` calls this for any ``ticket_keys`` with a ``rotation_interval``."""
    if not MIN_ROTATION <= rotation_interval <= MAX_ROTATION:
        raise ConfigError(f"ticket key rotation every {rotation_interval:g}s: choose 3600..86400 (1 to 24 hours)")
    if rotation_interval >= ticket_lifetime:
        raise ConfigError(
            f"ticket key rotation every {rotation_interval:g}s is not shorter than the ticket lifetime "
            f"{ticket_lifetime:g}s: rotate more often or issue longer-lived tickets"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class RingState:
    """A snapshot of a three-key ring and its schedule (what ``stek show`` and the Redis ring hold)."""

    current: TicketKey
    previous: TicketKey | None
    next: TicketKey
    rotated_at: float
    rotation_interval: float

    @property
    def rotation_due(self) -> float:
        return self.rotated_at + self.rotation_interval

    def decryption_key(self, name: bytes) -> TicketKey | None:
        for key in (self.current, self.previous, self.next):
            if key is not None and key.name == name:
                return key
        return None

    def rotated(self, new_next: TicketKey, at: float) -> RingState:
        return RingState(current=self.next, previous=self.current, next=new_next, rotated_at=at,
                         rotation_interval=self.rotation_interval)


class KeyGraveyard:
    """Retired keys, wiped once ``WIPE_DELAY`` has passed (a handshake may hold one for a moment)."""

    def __init__(self, delay: float = WIPE_DELAY) -> None:
        self._delay = delay
        self._keys: list[tuple[float, TicketKey]] = []

    def bury(self, keys: list[TicketKey], now: float) -> None:
        self._keys.extend((now + self._delay, k) for k in keys)

    def due(self, now: float) -> bool:
        keys = self._keys
        return bool(keys) and keys[0][0] <= now

    def sweep(self, now: float) -> None:
        if self._keys and self._keys[0][0] <= now:
            due = [k for t, k in self._keys if t <= now]
            self._keys = [(t, k) for t, k in self._keys if t > now]
            for key in due:
                key.wipe()

    def wipe_all(self) -> None:
        for _, key in self._keys:
            key.wipe()
        self._keys.clear()


def retired(before: RingState | None, after: RingState) -> list[TicketKey]:
    """Keys of ``before`` that ``after`` no longer holds."""
    if before is None:
        return []
    kept = {k.name for k in (after.current, after.previous, after.next) if k is not None}
    return [k for k in (before.current, before.previous, before.next) if k is not None and k.name not in kept]


class RotatingTicketKeys:
    """``TicketKeys`` that rotate every ``rotation_interval`` seconds (default 1 h, 1 to 24 h).

    Sans-IO friendly: rotation happens on access when due (``lazy=True``) or when the owner calls
    ``tick()``; time and randomness are injected. Thread-safe. Retired keys are overwritten in place
    ``WIPE_DELAY`` seconds after they leave the ring — best effort: Python cannot reach copies made by
    ``random``, by the garbage-collected ``bytes`` of a sealing call or by the OS (swap, core dumps).
    """

    def __init__(
        self,
        *,
        rotation_interval: float = DEFAULT_ROTATION,
        ticket_lifetime: float = 7200.0,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
        lazy: bool = True,
        wipe_delay: float = WIPE_DELAY,
    ) -> None:
        check_rotation(rotation_interval, ticket_lifetime)
        self.rotation_interval = rotation_interval
        self._clock = clock
        self._random = random
        self._lazy = lazy
        self._lock = threading.Lock()
        self._graveyard = KeyGraveyard(wipe_delay)
        now = clock()
        self._state = RingState(current=TicketKey.generate(random, now), previous=None,
                                next=TicketKey.generate(random, now), rotated_at=now,
                                rotation_interval=rotation_interval)

    def encryption_key(self) -> TicketKey:
        if self._lazy:
            self.tick()
        return self._state.current

    def decryption_key(self, name: bytes) -> TicketKey | None:
        if self._lazy:
            self.tick()
        return self._state.decryption_key(name)

    @property
    def state(self) -> RingState:
        """The ring now (rotated first if due and ``lazy``)."""
        if self._lazy:
            self.tick()
        return self._state

    def tick(self) -> int:
        """Rotate as many times as the clock says are due (at most three: then every key is new); returns
        how many rotations happened."""
        now = self._clock()
        if now < self._state.rotation_due and not self._graveyard.due(now):
            return 0
        with self._lock:
            self._graveyard.sweep(now)
            state = self._state
            steps = 0
            while now >= state.rotation_due and steps < 3:
                state = state.rotated(TicketKey.generate(self._random, now), state.rotation_due)
                steps += 1
            if now >= state.rotation_due:  # idle for longer than three intervals: restart the schedule
                skipped = math.floor((now - state.rotated_at) / self.rotation_interval)
                state = RingState(current=state.current, previous=state.previous, next=state.next,
                                  rotated_at=state.rotated_at + skipped * self.rotation_interval,
                                  rotation_interval=self.rotation_interval)
            if steps:
                self._graveyard.bury(retired(self._state, state), now)
                self._state = state
            return steps

    def rotate(self) -> None:
        """Rotate now (an operator's "the key may have leaked"); the schedule restarts from now."""
        with self._lock:
            now = self._clock()
            state = self._state.rotated(TicketKey.generate(self._random, now), now)
            self._graveyard.bury(retired(self._state, state), now)
            self._state = state

    def close(self) -> None:
        """Wipe every key now; the ring is unusable afterwards."""
        with self._lock:
            self._graveyard.wipe_all()
            for key in (self._state.current, self._state.previous, self._state.next):
                if key is not None:
                    key.wipe()
