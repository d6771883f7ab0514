"""Server-side OCSP stapling (RFC 6066 §8, RFC 8446 §4.4.2.1): fetch, verify, cache and refresh staples.

``StapleCache`` is a ``ServerConfig.ocsp_staple`` hook. The first handshake for a certificate registers it
and returns None at once (no handshake waits on a responder); a background thread then fetches the response
from the leaf's AIA OCSP URL, verifies it (signature, CertID, status good, time window) and caches it. It is
refreshed at half its lifetime, with jitter so a fleet does not hit the responder at the same second. When
the responder is down or answers badly, the last good staple is served until its nextUpdate and then
stapling stops; an invalid, revoked or expired response is never stapled. Everything is logged to
``tlskit.pki.stapling``.

``staple_from_file`` is nginx's ``ssl_stapling_file``: a DER OCSPResponse kept up to date by something else.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509 import ocsp

from ..errors import CertificateError, CertificateRevoked, ConfigError
from .ocsp import MAX_AGE_WITHOUT_NEXT_UPDATE, OCSPStatus, build_request, ocsp_urls, verify_ocsp_response
from .ocsp_http import post_ocsp
from .serials import format_serial

if TYPE_CHECKING:
    from ..config import CertifiedKey

__all__ = ["Fetcher", "StapleCache", "StapleFile", "staple_from_file"]

Fetcher = Callable[[str, bytes], bytes]
"""``fetcher(url, der_ocsp_request) -> der_ocsp_response``; raises OSError when the responder is unreachable."""

_log = logging.getLogger("tlskit.pki.stapling")


def _expiry(status: OCSPStatus) -> dt.datetime:
    return status.next_update or status.this_update + MAX_AGE_WITHOUT_NEXT_UPDATE


def _label(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string() or '<empty subject>'} (serial {format_serial(cert.serial_number)})"


@dataclass(slots=True)
class _Entry:
    leaf: x509.Certificate
    issuer: x509.Certificate
    urls: list[str]
    staple: OCSPStatus | None = None
    refresh_at: float = 0.0
    failures: int = 0
    in_flight: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class StapleCache:
    """``ServerConfig(ocsp_staple=StapleCache())``: fetched, verified, refreshed OCSP staples per leaf.

    ``fetcher`` defaults to an HTTP POST with urllib (``timeout`` seconds). ``background=False`` runs no
    thread: call :meth:`refresh` (one chain, now) or :meth:`refresh_due` (every entry whose time came) from
    your own scheduler. ``clock`` is injectable for tests, like the engine's.
    """

    def __init__(
        self,
        *,
        fetcher: Fetcher | None = None,
        clock: Callable[[], float] = time.time,
        background: bool = True,
        timeout: float = 5.0,
        retry_interval: float = 60.0,
        max_retry_interval: float = 600.0,
        jitter: float = 0.1,
        min_refresh: float = 10.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.fetcher: Fetcher = fetcher or (lambda url, der: post_ocsp(url, der, timeout=timeout))
        self.clock, self.background, self.rng = clock, background, rng
        self.retry_interval, self.max_retry_interval = retry_interval, max_retry_interval
        self.jitter, self.min_refresh = jitter, min_refresh
        self._entries: dict[bytes, _Entry | None] = {}  # leaf DER -> entry (None: cannot staple it)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    # --- the hook -----------------------------------------------------------------------------------------

    def __call__(self, key: CertifiedKey) -> bytes | None:
        """The staple for ``key``'s leaf, or None (none yet, responder down past expiry, or no OCSP URL)."""
        return self.staple_for(key.chain)

    def staple_for(self, chain: Sequence[bytes]) -> bytes | None:
        """Like calling the cache with a CertifiedKey, for a DER chain (leaf first, then its issuer)."""
        entry = self._entry(chain)
        if entry is None:
            return None
        now = self.clock()
        staple = entry.staple
        if staple is not None and now >= _expiry(staple).timestamp():
            with entry.lock:
                if entry.staple is staple:
                    _log.error("OCSP staple for %s expired at %s and could not be refreshed: not stapling",
                               _label(entry.leaf), _expiry(staple))
                    entry.staple = None
            staple = None
        if self.background and now >= entry.refresh_at and not entry.in_flight:
            self._wake()
        return staple.der if staple is not None else None

    # --- refreshing ---------------------------------------------------------------------------------------

    def refresh(self, chain: Sequence[bytes]) -> bytes | None:
        """Fetch and verify a response for ``chain`` now (blocking); return the staple now in use."""
        entry = self._entry(chain)
        if entry is None:
            return None
        self._refresh(entry)
        return self.staple_for(chain)

    def refresh_due(self) -> None:
        """Refresh, in this thread, every entry whose refresh time has come."""
        now = self.clock()
        for entry in [e for e in list(self._entries.values()) if e is not None and e.refresh_at <= now]:
            self._refresh(entry)

    def close(self) -> None:
        """Stop the background thread (staples already cached are kept)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _entry(self, chain: Sequence[bytes]) -> _Entry | None:
        leaf_der = bytes(chain[0])
        try:
            return self._entries[leaf_der]
        except KeyError:
            pass
        entry = self._make_entry(chain)
        with self._cond:
            entry = self._entries.setdefault(leaf_der, entry)
        if entry is not None and self.background:
            self._wake()
        return entry

    @staticmethod
    def _make_entry(chain: Sequence[bytes]) -> _Entry | None:
        leaf = x509.load_der_x509_certificate(bytes(chain[0]))
        urls = ocsp_urls(leaf)
        if not urls:
            _log.info("certificate %s names no OCSP responder (AIA): not stapling", _label(leaf))
            return None
        issuer = next((cert for cert in (x509.load_der_x509_certificate(bytes(d)) for d in chain[1:])
                       if cert.subject == leaf.issuer), None)
        if issuer is None:
            _log.warning("the chain of %s does not include its issuer %r, needed to verify OCSP responses: "
                         "not stapling (append the issuer's certificate after the leaf in the certificate file: "
                         "the intermediate, or the root when the root issued the leaf)", _label(leaf),
                         leaf.issuer.rfc4514_string())
            return None
        return _Entry(leaf=leaf, issuer=issuer, urls=urls)

    def _refresh(self, entry: _Entry) -> None:
        with entry.lock:
            if entry.in_flight:
                return
            entry.in_flight = True
        try:
            fresh, error, revoked = self._fetch(entry)
        finally:
            entry.in_flight = False
        now = self.clock()
        with entry.lock:
            if fresh is not None:
                entry.staple, entry.failures = fresh, 0
                lifetime = _expiry(fresh).timestamp() - fresh.this_update.timestamp()
                half = fresh.this_update.timestamp() + lifetime / 2
                jitter = (self.rng() * 2 - 1) * self.jitter * lifetime
                entry.refresh_at = min(max(half + jitter, now + self.min_refresh), _expiry(fresh).timestamp())
                _log.info("OCSP staple for %s refreshed: good, valid until %s, next refresh in %d s",
                          _label(entry.leaf), _expiry(fresh), entry.refresh_at - now)
                return
            entry.failures += 1
            delay = min(self.retry_interval * 2 ** (entry.failures - 1), self.max_retry_interval)
            entry.refresh_at = now + delay
            kept = None if revoked else entry.staple  # never keep serving "good" for a revoked certificate
            if kept is not None and now < _expiry(kept).timestamp():
                # one more try before the kept staple runs out, however long the back-off has grown
                entry.refresh_at = min(entry.refresh_at, max(now + self.min_refresh, _expiry(kept).timestamp() - 60))
                delay = entry.refresh_at - now
                _log.warning("OCSP refresh for %s failed (%s); keeping the last good staple until %s, retrying "
                             "in %d s", _label(entry.leaf), error, _expiry(kept), delay)
            else:
                entry.staple = None
                _log.error("OCSP refresh for %s failed (%s); not stapling, retrying in %d s",
                           _label(entry.leaf), error, delay)

    def _fetch(self, entry: _Entry) -> tuple[OCSPStatus | None, str, bool]:
        request = build_request(entry.leaf, entry.issuer)
        errors = []
        for url in entry.urls:
            try:
                der = self.fetcher(url, request)
                now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
                status = verify_ocsp_response(der, entry.leaf, entry.issuer, now)
            except CertificateRevoked as exc:  # (before OSError: certificate errors are OSErrors too)
                return None, f"{url}: {exc.message}", True
            except CertificateError as exc:
                errors.append(f"{url}: {exc.message}")
                continue
            except OSError as exc:
                errors.append(f"{url}: {exc}")
                continue
            if status.status != "good":
                errors.append(f"{url}: responder says {status.status}")
                continue
            return status, "", False
        return None, "; ".join(errors), False

    # --- background thread -------------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            if self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tlskit-ocsp-stapling", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = self.clock()
                entries = [e for e in self._entries.values() if e is not None]
                due = [e for e in entries if e.refresh_at <= now and not e.in_flight]
                if not due:
                    upcoming = min((e.refresh_at for e in entries), default=now + 60.0)
                    self._cond.wait(timeout=min(max(upcoming - now, 0.05), 60.0))
                    continue
            for entry in due:
                try:
                    self._refresh(entry)
                except Exception:  # one certificate's bad answer must not end stapling for all of them
                    _log.exception("OCSP refresh for %s failed unexpectedly", _label(entry.leaf))
                    with entry.lock:
                        entry.failures += 1
                        entry.refresh_at = self.clock() + self.max_retry_interval


class StapleFile:
    """nginx ``ssl_stapling_file``: staple the DER OCSPResponse in ``path`` (re-read when it changes).

    The response is verified against the leaf and issuer of each CertifiedKey it is asked for; one that is
    invalid, not good, about another certificate or expired is not stapled (and logged once per change).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        """Refuses (``ConfigError``) a file that is there but holds no DER OCSP response, as nginx does at start
        (a missing one is waited for)."""
        self.path, self.clock = Path(path), clock
        self._stamp: tuple[int, int] | None = None
        self._der: bytes | None = None
        self._verdicts: dict[bytes, OCSPStatus | None] = {}
        self._lock = threading.Lock()
        try:
            ocsp.load_der_ocsp_response(self.path.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it does not parse as one"
            raise ConfigError(f"{self.path}: not a DER OCSP response ({why}); fetch one with "
                              "`openssl ocsp -issuer ISSUER -cert CERT -url URL -respout FILE`") from None

    def __call__(self, key: CertifiedKey) -> bytes | None:
        return self.staple_for(key.chain)

    def staple_for(self, chain: Sequence[bytes]) -> bytes | None:
        with self._lock:
            self._reload()
            if self._der is None:
                return None
            leaf_der = bytes(chain[0])
            if leaf_der not in self._verdicts:
                self._verdicts[leaf_der] = self._verify(self._der, chain)
            status = self._verdicts[leaf_der]
        if status is None or self.clock() >= _expiry(status).timestamp():
            return None
        return status.der

    def _reload(self) -> None:
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                self._der, self._stamp, self._verdicts = self.path.read_bytes(), stamp, {}
        except OSError as exc:
            if self._der is not None or self._stamp != (0, 0):
                _log.error("cannot read OCSP staple file %s: %s; not stapling", self.path, exc.strerror or exc)
            self._der, self._stamp, self._verdicts = None, (0, 0), {}

    def _verify(self, der: bytes, chain: Sequence[bytes]) -> OCSPStatus | None:
        leaf = x509.load_der_x509_certificate(bytes(chain[0]))
        issuer = next((cert for cert in (x509.load_der_x509_certificate(bytes(d)) for d in chain[1:])
                       if cert.subject == leaf.issuer), None)
        if issuer is None:
            _log.error("staple file %s: the chain of %s lacks its issuer, so the response cannot be verified; "
                       "not stapling", self.path, _label(leaf))
            return None
        try:
            status = verify_ocsp_response(der, leaf, issuer, dt.datetime.fromtimestamp(self.clock(), dt.UTC))
        except CertificateError as exc:
            _log.error("staple file %s is not usable for %s: %s", self.path, _label(leaf), exc.message)
            return None
        if status.status != "good":
            _log.error("staple file %s says %s for %s; not stapling", self.path, status.status, _label(leaf))
            return None
        return status


def staple_from_file(path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> StapleFile:
    """A ``ServerConfig.ocsp_staple`` hook serving the DER OCSP response in ``path`` (nginx ssl_stapling_file)."""
    return StapleFile(path, clock=clock)
