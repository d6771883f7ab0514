"""A ticket key ring shared by a fleet through Redis (DESIGN §4), so any node resumes any node's tickets.

The ring is one hash, ``PREFIX ring``: ``current``, ``previous``, ``next`` (nginx 80-byte layout),
``rotated_at``, ``interval`` and ``version``. Every node loads it, refreshes it at least every
``refresh_interval`` and at each rotation time, and seals with ``current``. When a rotation is due, the node
that wins ``SET PREFIX lock TOKEN NX PX lock_timeout`` rotates (``next`` becomes ``current``, a new ``next``);
the write is also conditional on ``version``, so even a lock that expired mid-rotation cannot rotate twice.
Because ``next`` is published one interval before anyone seals with it, every node can already open the
tickets of a node whose clock rotated a little early.

A node that cannot reach Redis keeps serving with the keys it holds (and logs it once per outage); if it
cannot reach Redis at start, it seals with a local key until Redis is back (those tickets resume only on
that node). The ring is plaintext in Redis: see ``tlskit.stores.redis`` about securing it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from ..errors import ConfigError
from ..stores.redis import DEFAULT_TIMEOUT, redis_client
from .keyring import TicketKey
from .rotation import DEFAULT_ROTATION, WIPE_DELAY, KeyGraveyard, RingState, check_rotation, retired

log = logging.getLogger("tlskit.tickets.redis")

_CAS = """
if (redis.call('HGET', KEYS[1], 'version') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_UNAVAILABLE = (redis.RedisError, OSError)


class RedisTicketKeys:
    """``TicketKeys`` whose three-key ring lives in Redis and rotates once per interval for the whole fleet.

    ``lazy=True`` refreshes on access when a refresh is due (one Redis round trip, bounded by the client's
    socket timeout); servers on an event loop should pass ``lazy=False`` and call ``start_refresher()`` (a
    thread) or ``tick()`` from an executor. Thread-safe; retired keys are wiped as in
    ``RotatingTicketKeys``.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "tlskit:stek:",
        rotation_interval: float = DEFAULT_ROTATION,
        ticket_lifetime: float = 7200.0,
        refresh_interval: float = 60.0,
        retry_interval: float = 5.0,
        lock_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
        lazy: bool = True,
        wipe_delay: float = WIPE_DELAY,
    ) -> None:
        check_rotation(rotation_interval, ticket_lifetime)
        if not 0 < refresh_interval < rotation_interval:
            raise ConfigError(f"refresh_interval {refresh_interval:g}s must be shorter than the rotation interval")
        self.rotation_interval = rotation_interval
        self._client = client
        self._ring_key = prefix + "ring"
        self._lock_key = prefix + "lock"
        self._refresh_every = refresh_interval
        self._retry_every = retry_interval
        self._lock_ms = max(1, math.ceil(lock_timeout * 1000))
        self._clock = clock
        self._random = random
        self._lazy = lazy
        self._cas = client.register_script(_CAS)
        self._unlock = client.register_script(_UNLOCK)
        self._mutex = threading.Lock()
        self._graveyard = KeyGraveyard(wipe_delay)
        self._state: RingState | None = None
        self._version = 0
        self._next_check = 0.0
        self._reachable = True
        self._last_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rotations = 0  # rotations this node performed
        now = clock()
        self._refresh(now)
        if self._state is None:
            self._state = _fresh_ring(random, now, rotation_interval)
            log.warning("ticket keys: Redis unreachable at start (%s); sealing with a local key until it is back "
                        "(those tickets resume in this process only)", self._last_error or "no answer")

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT, **options: Any) -> RedisTicketKeys:
        """``redis://[user:password@]host:port/db`` (or ``rediss://``) with ``redis_client``'s fail-fast
        timeouts; ``options`` as for the constructor."""
        return cls(redis_client(url, timeout=timeout), **options)

    # TicketKeys

    def encryption_key(self) -> TicketKey:
        if self._lazy:
            self.tick()
        return self._ring().current

    def decryption_key(self, name: bytes) -> TicketKey | None:
        if self._lazy:
            self.tick()
        return self._ring().decryption_key(name)

    # schedule

    @property
    def state(self) -> RingState:
        return self._ring()

    @property
    def version(self) -> int:
        """The ring version last loaded from Redis (0: never loaded)."""
        return self._version

    @property
    def reachable(self) -> bool:
        return self._reachable

    def tick(self) -> bool:
        """Refresh (and rotate, if this node wins) when due; never waits for another thread doing it.
        Returns True if this call rotated the fleet's ring."""
        now = self._clock()
        if now < self._next_check:
            if self._graveyard.due(now):
                with self._mutex:
                    self._graveyard.sweep(now)
            return False
        if not self._mutex.acquire(blocking=False):
            return False  # another thread is talking to Redis; keep serving with what we have
        try:
            return self._refresh(now)
        finally:
            self._mutex.release()

    def refresh(self) -> bool:
        """Load the ring now (rotating it if due), whatever the schedule says."""
        with self._mutex:
            return self._refresh(self._clock())

    def start_refresher(self, period: float = 1.0) -> threading.Thread:
        """Call ``tick()`` every ``period`` seconds from a daemon thread; accesses then never touch Redis."""
        self._lazy = False
        self._thread = threading.Thread(target=self._run, args=(period,), name="tlskit-ticket-keys", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Stop the refresher and wipe every key this node holds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._mutex:
            self._graveyard.wipe_all()
            if self._state is not None:
                _wipe_ring(self._state)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.tick()

    def _ring(self) -> RingState:
        state = self._state
        if state is None:  # only while __init__ runs
            raise RuntimeError("ticket key ring not loaded")
        return state

    # Redis (callers hold self._mutex, or are __init__)

    def _refresh(self, now: float) -> bool:
        rotated = False
        try:
            loaded = self._load()
            if loaded is None:
                loaded = self._create(now)
            elif now >= loaded[0].rotated_at + self.rotation_interval:
                loaded, rotated = self._rotate(loaded, now)
        except _UNAVAILABLE as e:
            self._unreachable(e, now)
            return False
        except ValueError as e:
            log.error("ticket keys: the ring in Redis at %s is unusable (%s); serving with the keys this node "
                      "holds. Delete the key to let the fleet create a new ring.", self._ring_key, e)
            self._next_check = now + self._retry_every
            return False
        if loaded is None:  # another node is creating the ring
            self._next_check = now + min(1.0, self._retry_every)
            return False
        ring, version = loaded
        if not self._reachable:
            log.warning("ticket keys: Redis reachable again; ring version %d", version)
            self._reachable = True
        self._adopt(ring, version, now)
        due = ring.rotated_at + self.rotation_interval
        # Past due but not rotated: another node holds the lock; look again shortly.
        self._next_check = min(due, now + self._refresh_every) if due > now else now + min(1.0, self._retry_every)
        return rotated

    def _unreachable(self, error: BaseException, now: float) -> None:
        self._last_error = error
        self._next_check = now + self._retry_every
        if self._reachable and self._state is not None:
            state = self._state
            log.warning("ticket keys: Redis unreachable (%s); serving with the %d keys this node holds "
                        "(current %s), no rotation until it is back", error,
                        sum(k is not None for k in (state.current, state.previous, state.next)),
                        state.current.name.hex())
        self._reachable = False

    def _load(self) -> tuple[RingState, int] | None:
        raw = self._client.hgetall(self._ring_key)
        if not isinstance(raw, dict):
            raise ValueError(f"HGETALL returned {type(raw).__name__}")
        if not raw:
            return None
        fields = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}
        try:
            previous = fields.get("previous", b"")
            ring = RingState(
                current=_key(fields["current"], "current"),
                previous=_key(previous, "previous") if previous else None,
                next=_key(fields["next"], "next"),
                rotated_at=float(fields["rotated_at"]),
                rotation_interval=float(fields.get("interval", self.rotation_interval)),
            )
            return ring, int(fields["version"])
        except KeyError as e:
            raise ValueError(f"field {e} missing") from None

    def _locked(self) -> str | None:
        token = self._random(16).hex()
        return token if self._client.set(self._lock_key, token, nx=True, px=self._lock_ms) else None

    def _create(self, now: float) -> tuple[RingState, int] | None:
        """Make the ring: from the keys this node holds (Redis lost it) or new ones."""
        token = self._locked()
        if token is None:
            return None
        try:
            held = self._state
            usable = held is not None and not any(k is not None and k.wiped for k in (held.current, held.previous,
                                                                                     held.next))
            seed = held if held is not None and usable else _fresh_ring(self._random, now, self.rotation_interval)
            if not self._write(seed, 0):
                return self._load()
            log.info("ticket keys: created the ring in Redis at %s (current %s)", self._ring_key,
                     seed.current.name.hex())
            return seed, 1
        finally:
            self._unlock(keys=[self._lock_key], args=[token])

    def _rotate(self, loaded: tuple[RingState, int], now: float) -> tuple[tuple[RingState, int], bool]:
        token = self._locked()
        if token is None:
            return loaded, False
        try:
            fresh = self._load()  # another node may have rotated between our read and the lock
            if fresh is None or fresh[1] != loaded[1]:
                return (fresh or loaded), False
            ring, version = fresh
            elapsed = now - ring.rotated_at
            steps = max(1, min(3, math.floor(elapsed / self.rotation_interval)))
            for _ in range(steps):
                ring = ring.rotated(TicketKey.generate(self._random, now), now)
            ring = RingState(current=ring.current, previous=ring.previous, next=ring.next, rotated_at=now,
                             rotation_interval=self.rotation_interval)
            if not self._write(ring, version):
                return (self._load() or loaded), False
            self.rotations += 1
            log.info("ticket keys: rotated the fleet's ring to version %d (current %s)", version + 1,
                     ring.current.name.hex())
            return (ring, version + 1), True
        finally:
            self._unlock(keys=[self._lock_key], args=[token])

    def _write(self, ring: RingState, version: int) -> bool:
        previous = ring.previous.to_bytes() if ring.previous is not None else b""
        args: list[bytes | str | int | float] = [
            str(version),
            "current", ring.current.to_bytes(), "previous", previous, "next", ring.next.to_bytes(),
            "rotated_at", repr(ring.rotated_at), "interval", repr(self.rotation_interval),
            "version", str(version + 1),
        ]
        return bool(self._cas(keys=[self._ring_key], args=args))

    def _adopt(self, ring: RingState, version: int, now: float) -> None:
        """Swap in the loaded ring, keeping the key objects we already hold (fewer copies to wipe)."""
        old = self._state
        if old is not None:
            held = {k.name: k for k in (old.current, old.previous, old.next) if k is not None}

            def reuse(key: TicketKey) -> TicketKey:
                mine = held.get(key.name)
                # ``mine is key``: the ring we just wrote from our own state (``_create``) — wiping the copy
                # would wipe the key in use, and the next ``_create`` would publish zeros as the fleet's key
                if mine is not None and mine is not key and mine.to_bytes() == key.to_bytes():
                    key.wipe()
                    return mine
                return key

            ring = RingState(current=reuse(ring.current),
                             previous=reuse(ring.previous) if ring.previous is not None else None,
                             next=reuse(ring.next), rotated_at=ring.rotated_at,
                             rotation_interval=ring.rotation_interval)
            self._graveyard.bury(retired(old, ring), now)
        self._graveyard.sweep(now)
        self._state = ring
        self._version = version


def _key(value: bytes | str, slot: str) -> TicketKey:
    data = bytearray(value.encode("latin-1") if isinstance(value, str) else value)
    try:
        key = TicketKey.from_bytes(data, source=f"ring slot {slot!r}")
    except ConfigError as e:
        raise ValueError(str(e)) from None
    finally:
        data[:] = bytes(len(data))
    if key.wiped:  # zeros are a known key: whoever reads this code could seal tickets the fleet opens
        raise ValueError(f"ring slot {slot!r} holds an all-zero AES key")
    return key


def _fresh_ring(random: Callable[[int], bytes], now: float, interval: float) -> RingState:
    return RingState(current=TicketKey.generate(random, now), previous=None, next=TicketKey.generate(random, now),
                     rotated_at=now, rotation_interval=interval)


def _wipe_ring(ring: RingState) -> None:
    for key in (ring.current, ring.previous, ring.next):
        if key is not None:
            key.wipe()
