"""The TLS state of a serving process that must outlive a reload: ticket keys that rotate in memory or live in
Redis, the 0-RTT replay store, the OCSP staple cache.

A reload builds a new ``Site``; ``Stateful.carry`` hands each part over when the settings it depends on are
unchanged (so tickets keep resuming, a replayed ClientHello stays refused, staples stay cached) and makes a
new one otherwise. ``start`` runs once the process serves (the Redis refresher thread, the first staple
fetches); ``close_except`` wipes keys and stops threads of the parts the next site did not take over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..config import CertifiedKey
from ..errors import ConfigError
from ..pki.stapling import StapleCache, StapleFile, staple_from_file
from ..stores.base import ReplayClockSkew, ReplayHistoryUnknown, ReplayStore
from ..stores.memory import MemoryReplayStore
from ..tickets.keyring import TicketKeys
from ..tickets.rotation import DEFAULT_ROTATION, RotatingTicketKeys
from .settings import Settings, SettingsError, redacted

__all__ = ["FailFastReplayStore", "Stateful"]

_log = logging.getLogger("tlskit.serve")


class FailFastReplayStore:
    """A shared replay store that, once it failed, refuses for ``cooldown`` seconds without asking again.

    The engine checks the store inside the handshake, on the event loop: a Redis that hangs would otherwise
    cost every 0-RTT handshake the client's timeout. Refusing means 0-RTT is declined (RFC 8446 §8: fail
    closed) and the handshake goes on as 1-RTT.
    """

    def __init__(self, store: ReplayStore, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.store, self.cooldown, self.clock = store, cooldown, clock
        self._until = 0.0

    def check_and_insert(self, key: bytes, window_seconds: float, history_seconds: float | None = None, *,
                         now: float | None = None, max_skew: float | None = None) -> bool:
        started = self.clock()
        if started < self._until:
            raise ConnectionError(f"the replay store failed less than {self.cooldown:g} s ago")
        try:
            return self.store.check_and_insert(key, window_seconds, history_seconds, now=now, max_skew=max_skew)
        except (ReplayHistoryUnknown, ReplayClockSkew):
            raise  # it answered: not a failure to back off from
        except Exception:
            self._until = started + self.cooldown
            raise


class Stateful:
    """Ticket keys (None: key files or one generated key, see ``build_site``), replay store, staple hook."""

    def __init__(self, keys_spec: tuple[Any, ...] = (), ticket_keys: TicketKeys | None = None,
                 replay_spec: tuple[Any, ...] = (), replay_store: ReplayStore | None = None,
                 staple_spec: tuple[Any, ...] = (), staples: StapleCache | StapleFile | None = None) -> None:
        self.keys_spec, self.ticket_keys = keys_spec, ticket_keys
        self.replay_spec, self.replay_store = replay_spec, replay_store
        self.staple_spec, self.staples = staple_spec, staples
        self._refreshing = False

    @classmethod
    def carry(cls, previous: Stateful | None, settings: Settings) -> Stateful:
        s = settings
        keys_spec = (s.session_tickets, s.ticket_rotate, s.redis, s.ticket_lifetime, bool(s.ticket_key_files))
        replay_spec = (s.early_data, s.redis)
        staple_spec = (s.stapling, s.staple_file)
        new = cls(keys_spec, None, replay_spec, None, staple_spec, None)
        try:
            if previous is not None and previous.keys_spec == keys_spec:
                new.ticket_keys, new._refreshing = previous.ticket_keys, previous._refreshing
            else:
                new.ticket_keys = _ticket_keys(s)
            if previous is not None and previous.replay_spec == replay_spec:
                new.replay_store = previous.replay_store
            elif s.early_data:
                new.replay_store = (FailFastReplayStore(_redis_replay(s.redis)) if s.redis
                                    else MemoryReplayStore(replaces_lost=True))  # §8.2
                if s.ticket_key_files and not s.redis:  # DESIGN §3: shared by every server sharing the keys
                    _log.warning("0-RTT with ticket key files: the replay set is this server's own, so servers "
                                 "sharing these keys each take a replayed ClientHello once; give them one with "
                                 "--redis URL (the keys still come from the files)")
            if previous is not None and previous.staple_spec == staple_spec:
                new.staples = previous.staples
            elif s.stapling:
                new.staples = _staple_file(s) if s.staple_file is not None else StapleCache()
        except BaseException:
            new.close_except(previous)
            raise
        return new

    def start(self, certificates: Iterable[CertifiedKey]) -> None:
        """In the serving process: refresh Redis keys from a thread, start fetching staples for each chain."""
        refresher = getattr(self.ticket_keys, "start_refresher", None)
        if refresher is not None and not self._refreshing:
            refresher()
            self._refreshing = True
        if isinstance(self.staples, StapleCache):
            for key in certificates:
                self.staples.staple_for(key.chain)  # registers it: the first fetch starts now, not at a handshake

    def close_except(self, keep: Stateful | None) -> None:
        """Stop threads and wipe keys of every part ``keep`` does not share."""
        for mine, theirs in ((self.ticket_keys, keep.ticket_keys if keep else None),
                             (self.staples, keep.staples if keep else None)):
            close = getattr(mine, "close", None)
            if mine is not None and mine is not theirs and close is not None:
                close()


def _staple_file(s: Settings) -> StapleFile:
    """``staple_file``, its loading error prefixed by the setting's file and line (or the flag)."""
    assert s.staple_file is not None
    try:
        return staple_from_file(s.staple_file)
    except ConfigError as e:  # names the DER file and the fix
        raise SettingsError(f"{s.origins.get('staple_file', '')}{e}") from None


def _ticket_keys(s: Settings) -> TicketKeys | None:
    if not s.session_tickets or s.ticket_key_files or (s.redis is None and s.ticket_rotate is None):
        return None  # (key files: ``build_site`` loads them; Redis, if given, holds only the replay set)
    interval = s.ticket_rotate or DEFAULT_ROTATION
    if s.redis is None:
        return RotatingTicketKeys(rotation_interval=interval, ticket_lifetime=s.ticket_lifetime)
    try:
        from ..tickets.redis import RedisTicketKeys
    except ImportError:
        raise SettingsError("--redis needs redis-py: pip install 'tlskit[fleet]'") from None
    try:
        keys = RedisTicketKeys.from_url(s.redis, rotation_interval=interval, ticket_lifetime=s.ticket_lifetime,
                                        lazy=False)
    except (ValueError, ConfigError) as e:
        raise SettingsError(f"--redis {redacted(s.redis)}: {e}") from None
    if keys.reachable:
        _log.info("ticket keys: shared through Redis (ring version %d)", keys.version)
    return keys


def _redis_replay(url: str) -> ReplayStore:
    try:
        from ..stores.redis import RedisReplayStore
    except ImportError:
        raise SettingsError("--redis needs redis-py: pip install 'tlskit[fleet]'") from None
    try:
        return RedisReplayStore.from_url(url)
    except ValueError as e:
        raise SettingsError(f"--redis {redacted(url)}: {e}") from None
