"""One server process: TLS on already-bound sockets, HTTP routes, reload and graceful shutdown.

Everything a config produces is one immutable ``Site``; a reload (SIGHUP, or a watched certificate/config
file changing) builds a new ``Site`` first and swaps it in only if that worked, so a broken certificate
leaves the old one serving. Connections keep the ``Site`` they were accepted with. SIGTERM stops accepting,
closes idle keep-alive connections, and gives requests in flight ``drain_timeout`` seconds.

What must outlive a reload lives in ``Stateful``, handed from one ``Site`` to the next while its settings
stay the same: rotating or Redis-shared ticket keys (a reload must not orphan every ticket), the 0-RTT replay
store (a reload must not forget which ClientHellos it saw) and the OCSP staple cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ..config import CertifiedKey, ClientAuth, EarlyDataPolicy, ServerConfig
from ..errors import ConfigError, TLSError, UnexpectedEOF
from ..io.asyncio import TLSProtocol
from ..io.common import TLSSession, with_env_key_log
from ..pki.identity import SpiffeAllowList
from ..pki.revocation import RevocationPolicy
from ..pki.serials import format_serial
from ..pki.verify import TrustStore
from ..tickets.files import load_key_files
from ..tickets.keyring import TicketKey, TicketKeyRing
from . import ktls
from .accesslog import AccessEntry, TLSFields, access_log
from .certstore import CertificateStore, files_fingerprint
from .channel import Channel
from .devca import RENEW_BEFORE, DevCertificate, dev_certificate
from .http1 import ConnectionTracker, Route, Router, TLSState, serve_connection
from .http2 import serve_h2_connection
from .metrics import SILENT_CLOSE, ServeMetrics
from .proxy import ReverseProxy
from .settings import CertificateSpec, Flags, Settings, SettingsError, StaticRoute, load_settings
from .stateful import Stateful
from .static import Secrets, StaticFiles

__all__ = ["ServeProcess", "Site", "build_site", "reload_error"]

_log = logging.getLogger("tlskit.serve")
RENEWAL_CHECK_SECONDS = 3600.0  # how often a running server looks at its development leaf's expiry


@dataclass(frozen=True, slots=True)
class Site:
    """A loaded configuration: the engine config (certificates by SNI), the routes, what to watch."""

    settings: Settings
    config: ServerConfig
    router: Router
    certificates: CertificateStore
    dev: DevCertificate | None  # the development CA's certificate, when no certificate was configured
    ticket_key: TicketKey | None  # the key made at start when no ticket key files are configured
    stateful: Stateful = dataclasses.field(default_factory=Stateful)

    def watched_files(self) -> tuple[Path, ...]:
        dev = (self.dev.cert, self.dev.key) if self.dev else ()
        return (*self.settings.watched_files(), *dev)

    def renewal_due(self, now: dt.datetime) -> bool:
        """The development leaf is within ``RENEW_BEFORE`` of expiry: a reload re-issues it (a server that runs
        for months would otherwise serve it expired; renewal happened only at start and on reload)."""
        if self.dev is None:
            return False
        try:
            leaf = x509.load_pem_x509_certificates(self.dev.cert.read_bytes())[0]
        except (OSError, ValueError):
            return True  # gone or damaged: the reload says why
        return leaf.not_valid_after_utc - RENEW_BEFORE <= now

    def chains(self) -> list[CertifiedKey]:
        """Every certificate chain served, once each."""
        chains = {id(ck): ck for group in (self.certificates.default, *self.certificates.exact.values(),
                                           *self.certificates.wildcard.values()) for ck in group}
        return list(chains.values())

    def start(self) -> None:
        """In the serving process: the Redis key refresher, the first OCSP fetch for each certificate."""
        self.stateful.start(self.chains())


def reload_changes(old: Site, new: Site) -> str:
    """What a reload changed, for its log line: settings by name, certificates by leaf (names, serial, expiry)."""
    parts = [f.name for f in dataclasses.fields(Settings)
             if f.compare and getattr(old.settings, f.name) != getattr(new.settings, f.name)]
    before = {ck.chain[0]: ck for ck in old.chains()}
    after = {ck.chain[0]: ck for ck in new.chains()}
    parts += [f"new certificate {_leaf_summary(ck)}" for leaf, ck in after.items() if leaf not in before]
    parts += [f"certificate {_leaf_summary(ck)} removed" for leaf, ck in before.items() if leaf not in after]
    parts += [f"chain of {_leaf_summary(ck)} changed" for leaf, ck in after.items()
              if leaf in before and ck.chain != before[leaf].chain]
    old_keys, new_keys = _key_names(old.config.ticket_keys), _key_names(new.config.ticket_keys)
    if old_keys and new_keys and old_keys != new_keys:  # (key files re-read: a rotation is worth seeing)
        parts.append(f"ticket keys now {', '.join(new_keys)} (encrypting with the first; were {', '.join(old_keys)})")
    return "; ".join(parts) if parts else "no change"


def _key_names(keys: object) -> tuple[str, ...]:
    """The names of a fixed key ring's keys (hex, as `tlskit stek show`), first the encrypting one."""
    return tuple(key.name.hex() for key in keys.keys) if isinstance(keys, TicketKeyRing) else ()


def _leaf_summary(ck: CertifiedKey) -> str:
    leaf = x509.load_der_x509_certificate(ck.chain[0])
    names = ",".join(ck.dns_names[:3]) + (",..." if len(ck.dns_names) > 3 else "") or leaf.subject.rfc4514_string()
    return f"{names} (serial {format_serial(leaf.serial_number)}, expires {leaf.not_valid_after_utc:%Y-%m-%d})"


def build_site(settings: Settings, ticket_key: TicketKey | None = None, *, previous: Site | None = None) -> Site:
    """Load certificates and build routes; ``SettingsError`` (one line) for anything unusable.

    ``ticket_key``: the generated ticket key to keep (a reload, a worker of a supervisor), else a new one.
    ``previous``: the site being replaced, whose ticket keys, replay store and staple cache carry over.
    """
    try:
        ktls.check_mode(settings.ktls)
    except ConfigError as e:
        raise SettingsError(f"{settings.source or 'settings'}: {e}") from None
    dev = None
    specs = settings.certificates
    if not specs:
        dev = dev_certificate()
        specs = (CertificateSpec(cert=dev.cert, key=dev.key),)
    store = CertificateStore.load(specs)
    where = f"{settings.source or 'settings'}: "
    stateful = Stateful.carry(previous.stateful if previous is not None else None, settings)
    keys = stateful.ticket_keys
    if keys is None and settings.session_tickets and settings.ticket_key_files:
        try:
            keys = load_key_files(settings.ticket_key_files)
        except ConfigError as e:  # its message names the key file; the origin, the setting or flag
            stateful.close_except(previous.stateful if previous is not None else None)
            raise SettingsError(f"{settings.origins.get('ticket_key_files', '')}{e}") from None
        ticket_key = None
    elif keys is None and settings.session_tickets:
        ticket_key = ticket_key or TicketKey.generate(os.urandom, time.time())
        keys = TicketKeyRing([ticket_key])
    else:
        ticket_key = None
    try:
        auth = None
        if settings.verify_client != "none" and settings.client_ca is not None:
            allowed = SpiffeAllowList(settings.allow_spiffe) if settings.allow_spiffe else None
            # As nginx's ssl_crl: a client whose chain lacks a current CRL for any certificate is refused (fail closed).
            where = settings.origins.get("client_crl", "")  # the setting's file and line, or the flag
            revocation = (RevocationPolicy(mode="hard-fail", crl_files=settings.client_crl, crl_check_all=True)
                          if settings.client_crl else None)
            where = settings.origins.get("client_ca", "")
            trust = TrustStore.from_pem_file(settings.client_ca)
            where = f"{settings.source or 'settings'}: "
            auth = ClientAuth(mode=settings.verify_client,  # type: ignore[arg-type]  # checked by settings
                              trust=trust, allowed_ids=allowed, revocation=revocation)
            if revocation is not None and auth.trust is not None:
                issuers = revocation.crl_issuers()
                for ca in auth.trust.roots:
                    if ca.subject not in issuers:  # e.g. crl.der of a two-tier CA: the intermediate's only
                        _log.warning("--client-crl holds no CRL of %s (from --client-ca): every client whose chain "
                                     "it signs is refused, as with nginx's ssl_crl; give its CRL too (tlskit ca "
                                     "crl writes it into crl.pem)", ca.subject.rfc4514_string())
        early = (EarlyDataPolicy(max_early_data_size=settings.max_early_data_size,
                                 freshness_window=settings.early_data_window) if settings.early_data else None)
        config = ServerConfig(cert_resolver=store.resolve, certificates=store.default, alpn=settings.alpn,
                              cipher_suites=settings.cipher_suites, groups=settings.groups, ticket_keys=keys,
                              ticket_lifetime=settings.ticket_lifetime, early_data=early,
                              replay_store=stateful.replay_store, ocsp_staple=stateful.staples,
                              client_auth=auth)
    except ConfigError as e:
        stateful.close_except(previous.stateful if previous is not None else None)
        raise SettingsError(f"{where}{e}") from None
    secrets = _secrets(settings, specs, dev)
    routes: list[Route] = [StaticFiles(r, secrets=secrets) if isinstance(r, StaticRoute) else ReverseProxy(r)
                           for r in settings.routes]
    return Site(settings, with_env_key_log(config), Router(tuple(routes)), store, dev, ticket_key, stateful)


@contextlib.contextmanager
def told_by_the_supervisor(worker: bool) -> Iterator[None]:
    """In a worker, no warnings while its site is built: the supervisor built it from the same configuration and
    told them (once, not once per process); errors still show."""
    if not worker:
        yield
        return
    logger = logging.getLogger("tlskit.serve")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _secrets(settings: Settings, specs: Sequence[CertificateSpec], dev: DevCertificate | None) -> Secrets:
    """The key files no static route may send, with a warning for each that sits under a static root."""
    keys = [spec.key for spec in specs] + list(settings.ticket_key_files)
    if settings.source is not None:  # the config may hold a Redis password
        keys.append(settings.source)
    secrets = Secrets(keys, [dev.key.parent] if dev is not None else [])
    for route in settings.routes:
        if isinstance(route, StaticRoute):
            root = route.root.resolve()
            for key in keys[:len(specs) + len(settings.ticket_key_files)]:
                if key.resolve().is_relative_to(root):
                    _log.warning("%s is under the static root %s: it is never served, but keep keys outside "
                                 "what a server publishes", key, root)
    return secrets


_NO_TLS = TLSFields(version="-", suite="-", group="-", sni="-", alpn="-", resumed=False, early_data=False,
                    handshake_ms=0.0, client="-")
_PLAIN_HTTP_BODY = b"400 Bad Request: this port speaks HTTPS; use https:// in the URL\n"
_PLAIN_HTTP_REPLY = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(_PLAIN_HTTP_BODY), _PLAIN_HTTP_BODY))


class _ServedTLS(TLSProtocol):
    """``TLSProtocol`` that remembers when TCP was accepted, for the handshake time (``perf_counter``: uvloop's
    clock ticks in milliseconds, too coarse for the sub-millisecond histogram buckets). (The event loops set
    TCP_NODELAY on accepted connections themselves.)"""

    accepted_at = 0.0
    handshake_seconds = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted_at = time.perf_counter()
        super().connection_made(transport)


class ServeProcess:
    """Serves ``sockets`` until SIGTERM/SIGINT (or ``stop()``); reloads on SIGHUP and file changes."""

    def __init__(self, site: Site, flags: Flags, sockets: list[socket.socket], *,
                 metrics: ServeMetrics | None = None, watch: bool = True, reload_signal: bool = True,
                 worker: bool = False) -> None:
        self.site = site
        self.flags = flags
        self.sockets = sockets
        self.metrics = metrics
        self.watch = watch
        self.reload_signal = reload_signal
        self.worker = worker  # of a supervisor, which counts the reloads and tells the configuration's warnings
        self._seen = ""  # the watched files' fingerprint as of the last reload (or start)
        self.tracker = ConnectionTracker()
        self._stopping: asyncio.Event | None = None
        self._servers: list[asyncio.Server] = []
        self.early_reload: Callable[[], bool] = lambda: False  # a SIGHUP came before run() could handle it

    async def run(self, ready: Callable[[], None] = lambda: None) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        # asyncio listens again, with a backlog of 100 unless told: the configured one (the largest, as the
        # sockets a worker inherits no longer say which listener they came from)
        backlog = max((listener.backlog for listener in self.site.settings.listeners), default=1024)
        for sock in self.sockets:
            self._servers.append(await loop.create_server(self._accept, sock=sock, backlog=backlog))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if self.reload_signal:
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
            if self.early_reload():  # one came while starting (a worker that was being started)
                loop.call_soon(self.reload, "SIGHUP while starting")
        poller = asyncio.create_task(self._poll_files()) if self.watch else None
        self.site.start()
        ready()
        try:
            await self._stopping.wait()
        finally:
            if poller:
                poller.cancel()
            # While draining: SIGHUP (a certbot hook, logrotate) must not kill the process mid-download, and a
            # second SIGTERM/SIGINT ends the drain now, cleanly (it was the default action: exit 129, a traceback).
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._force)
            loop.add_signal_handler(signal.SIGHUP, _log.info, "SIGHUP ignored: shutting down")
            try:
                await self._drain()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            self.site.stateful.close_except(None)

    def stop(self) -> None:
        if self._stopping is not None and not self._stopping.is_set():
            open_now = len(self.tracker.open)
            _log.info("shutting down: no new connections; %d open, %s", open_now,
                      f"given up to {self.site.settings.drain_timeout:.0f} s to finish" if open_now else "exiting")
            self._stopping.set()

    def _force(self) -> None:
        """A second SIGTERM/SIGINT while draining: close what is still open now."""
        _log.warning("second stop signal: closing %d connection(s) now", len(self.tracker.open))
        for entry in list(self.tracker.open.values()):
            entry.channel.abort()

    def reload(self, why: str) -> bool:
        """Build the new site from the config file and flags; keep the old one on any error."""
        self._seen = files_fingerprint(self.site.watched_files())  # the poller does not reload this again
        try:
            with told_by_the_supervisor(self.worker):
                site = build_site(load_settings(self.flags), self.site.ticket_key, previous=self.site)
        except Exception as e:  # whatever went wrong, the server that runs keeps running
            _log.error("reload (%s) failed, still serving the previous configuration: %s", why, reload_error(e))
            if self.metrics and not self.worker:
                self.metrics.reloads.labels("failed").inc()
            return False
        old, new = self.site.settings, site.settings
        fixed = [name for name, changed in (
            ("[[listen]]", new.listeners != old.listeners), ("workers", new.workers != old.workers),
            ("[metrics]", new.metrics != old.metrics), ("log_json", new.log_json != old.log_json),
            ("uvloop", new.uvloop != old.uvloop)) if changed]
        if fixed:
            _log.warning("reload (%s): changes to %s take effect after a restart", why, ", ".join(fixed))
        self.site.stateful.close_except(site.stateful)
        old_site, self.site = self.site, site
        site.start()
        _log.info("reloaded (%s): %d certificate(s), %d route(s); %s", why, len(site.chains()),
                  len(site.settings.routes), reload_changes(old_site, site))
        self._seen = files_fingerprint(site.watched_files())
        if self.metrics and not self.worker:
            self.metrics.reloads.labels("ok").inc()
        return True

    async def _poll_files(self) -> None:
        """Reload when a certificate, key or the config file changes (mtime/size/inode), checked by polling."""
        interval = self.site.settings.cert_poll_interval
        if interval <= 0:
            return
        self._seen = files_fingerprint(self.site.watched_files())
        next_renewal_check = 0.0
        while True:
            await asyncio.sleep(self.site.settings.cert_poll_interval or interval)
            if files_fingerprint(self.site.watched_files()) != self._seen:  # reload() updates _seen (SIGHUP too)
                self.reload("files changed")
            elif time.monotonic() >= next_renewal_check:
                next_renewal_check = time.monotonic() + RENEWAL_CHECK_SECONDS
                if self.site.renewal_due(dt.datetime.now(dt.UTC)):
                    self.reload("development certificate renewal")

    def _accept(self) -> TLSProtocol:
        site = self.site

        def connected(channel: Channel) -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(self._connection(channel, tls, site))

        channel = Channel(connected, send_timeout=site.settings.http.idle_timeout)
        tls = _ServedTLS(TLSSession(site.config), channel,
                         handshake_timeout=site.settings.http.handshake_timeout, on_handshake=self._handshake_ended,
                         ktls=ktls.option(site.settings.ktls), early_data=site.settings.early_data,
                         plain_http_reply=_PLAIN_HTTP_REPLY)
        return tls

    def _handshake_ended(self, protocol: TLSProtocol, error: TLSError | None) -> None:
        assert isinstance(protocol, _ServedTLS)
        protocol.handshake_seconds = time.perf_counter() - protocol.accepted_at
        plain = error is not None and protocol.session.plain_http()
        if plain:  # answered with an HTTP 400: a request like any other in the log and the metrics (as nginx)
            self._log_plain_http(protocol)
        if self.metrics is None:
            return
        done = protocol.session.negotiated
        if error is None and done is not None:
            self.metrics.handshake_done(done, protocol.handshake_seconds)
            self.metrics.ktls.labels(ktls.label(protocol.extra_info("ktls"))).inc()
        elif plain:
            self.metrics.handshake_failures.labels("plain_http").inc()
            self.metrics.requests.labels("400").inc()
        elif isinstance(error, UnexpectedEOF) and protocol.session.received_nothing():
            self.metrics.handshake_failures.labels(SILENT_CLOSE).inc()  # a TCP probe: no handshake was tried
        elif error is not None:
            self.metrics.handshake_failed(error)

    def _log_plain_http(self, protocol: _ServedTLS) -> None:
        if not (self.site.settings.access_log and access_log.isEnabledFor(logging.INFO)):
            return
        peer = protocol.raw_transport.get_extra_info("peername") if protocol.raw_transport is not None else None
        line = protocol.session.first_bytes().partition(b"\r\n")[0].partition(b"\n")[0][:1024]
        access = AccessEntry(peer=str(peer[0]) if isinstance(peer, tuple) else "-", time=time.time(), method="-",
                             target="-", http_version="-", status=400, size=len(_PLAIN_HTTP_BODY), referer="-",
                             user_agent="-", request_ms=0.0, tls=_NO_TLS, request_line=line.decode("latin-1"))
        access_log.info("%s", access, extra={"access": access})

    async def _connection(self, channel: Channel, tls: _ServedTLS, site: Site) -> None:
        def fields() -> TLSFields | None:
            done = tls.session.negotiated
            if done is None:
                return None
            return dataclasses.replace(TLSFields.from_handshake(done, tls.handshake_seconds),
                                       ktls=ktls.label(tls.extra_info("ktls")))

        async def handshake() -> TLSFields:
            await tls.wait_handshake()
            done = fields()
            assert done is not None
            return done

        # Connected on 0-RTT data (``early_data``), the handshake may still be running; the protocol follows
        # the ALPN the engine settled with its flight (``Connection.alpn``), so 0-RTT requests over h2 too are
        # answered as 0.5-RTT data (RFC 8470 still applies).
        negotiated = tls.session.negotiated
        state = TLSState(make=fields, early=negotiated is None or negotiated.early_data_accepted,
                         early_bytes=lambda: tls.early_bytes, handshake=handshake,
                         client_auth=site.config.client_auth is not None,
                         server_name=lambda: tls.session.client_server_name() or "-")
        serve = serve_h2_connection if tls.session.conn.alpn == "h2" else serve_connection
        try:
            await serve(channel, state, router=lambda: self.site.router, limits=site.settings.http,  # reloads too
                        tracker=self.tracker, metrics=self.metrics, log_access=site.settings.access_log)
        finally:
            channel.release()

    async def _drain(self) -> None:
        for server in self._servers:
            server.close()
        self.tracker.drain()
        try:
            async with asyncio.timeout(self.site.settings.drain_timeout):
                await self.tracker.empty.wait()
        except TimeoutError:
            _log.warning("%d connection(s) still busy after %.0f s: closing them", len(self.tracker.open),
                         self.site.settings.drain_timeout)
            for entry in list(self.tracker.open.values()):
                entry.channel.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await self.tracker.empty.wait()


def reload_error(e: Exception) -> str:
    """A reload failure in one line: ours say the fix; anything else is named by its type (traceback at debug)."""
    if isinstance(e, ConfigError | OSError):
        return str(e)
    _log.debug("reload failure", exc_info=e)
    return f"{type(e).__name__}: {e} (an unexpected error: please report it)"
