"""What ``tlskit serve`` runs with: a TOML file (``tomllib``) with command-line flags on top, checked in full.

Every mistake becomes one ``SettingsError`` line naming the file, the line and the fix, e.g.
``site.toml:12: [[route]] #2: 'root' /srv/www is not a directory (create it, or point root elsewhere)``.
Paths in the file are relative to the file's directory. An example is in the README ("Serving").
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

from ..config import DEFAULT_CIPHER_SUITES
from ..crypto.groups import SUPPORTED_GROUPS
from ..crypto.suites import SUITES
from ..enums import CipherSuite, NamedGroup
from ..errors import ConfigError
from ..pki.identity import SpiffeAllowList
from ..tickets.rotation import check_rotation
from .target import normalize_path

__all__ = ["CertificateSpec", "Flags", "HTTPLimits", "Listener", "MetricsEndpoint", "ProxyRoute", "Route",
           "Settings", "SettingsError", "StaticRoute", "load_settings"]

# Post-quantum hybrid first: clients that offer it (Chromium, Firefox, OpenSSL 3.5) get it, as nginx does.
SERVE_GROUPS = (NamedGroup.X25519MLKEM768, NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1)
SERVE_ALPN = ("h2", "http/1.1")  # what ``tlskit serve`` speaks: only these may be negotiated


class SettingsError(ConfigError):
    """A bad configuration file or flag; the message is the one line to show the user."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Listener:
    address: str = "localhost"  # a name binds every address it resolves to (localhost: 127.0.0.1 and ::1)
    port: int = 8443
    ipv6_only: bool = True  # for "::": leave IPv4 to its own listener
    reuse_port: bool = False  # SO_REUSEPORT: several independent servers may bind the same port
    backlog: int = 1024
    origin: str = field(default="", compare=False)  # "site.toml:3: [[listen]] #1: " or "--host: ", for errors


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateSpec:
    """One chain and key; ``names`` (SNI, ``*.example.com`` wildcards) default to the leaf's DNS SANs."""

    cert: Path
    key: Path
    names: tuple[str, ...] = ()
    origin: str = field(default="", compare=False)  # "site.toml:7: [[certificate]] #1: ", to prefix a loading error


@dataclass(frozen=True, kw_only=True, slots=True)
class HTTPLimits:
    max_header_bytes: int = 16 * 1024  # request line + headers: more is 431
    max_body_bytes: int = 1 << 20  # request body: more is 413
    header_timeout: float = 10.0  # from a request's first byte to its last header: then 408
    idle_timeout: float = 60.0  # keep-alive wait for the next request
    handshake_timeout: float = 10.0
    max_requests_per_connection: int = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class StaticRoute:
    prefix: str = "/"
    hosts: tuple[str, ...] = ()  # Host header values this route answers; empty: any
    root: Path = Path(".")
    index: tuple[str, ...] = ("index.html",)
    listing: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class ProxyRoute:
    prefix: str = "/"
    hosts: tuple[str, ...] = ()
    upstream_host: str = "127.0.0.1"
    upstream_port: int = 80
    upstream_path: str = ""  # prepended to the request path (after the route prefix is kept)
    preserve_host: bool = True  # forward the client's Host; False sends the upstream's
    timeout: float = 30.0  # connect, and each read from and write to the upstream (504 past it)
    client_cert_header: str = "x-client-cert-subject"  # set from a verified client certificate (mTLS)


Route = StaticRoute | ProxyRoute


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricsEndpoint:
    address: str = "127.0.0.1"
    port: int = 9443


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    source: Path | None = None  # the TOML file, re-read on reload
    source_text: str = field(default="", compare=False, repr=False)  # its text as loaded (a worker's restart)
    listeners: tuple[Listener, ...] = (Listener(),)
    certificates: tuple[CertificateSpec, ...] = ()  # empty: the development CA's localhost certificate
    alpn: tuple[str, ...] = ("http/1.1",)
    cipher_suites: tuple[CipherSuite, ...] = DEFAULT_CIPHER_SUITES
    groups: tuple[NamedGroup, ...] = SERVE_GROUPS
    session_tickets: bool = True  # RFC 8446 §4.6.1 tickets, so clients resume (psk_dhe_ke)
    ticket_key_files: tuple[Path, ...] = ()  # nginx format, first encrypts; empty: one key made at start
    ticket_lifetime: int = 7200
    ticket_rotate: float | None = None  # seconds: keys made in memory and rotated (RotatingTicketKeys)
    early_data: bool = False  # 0-RTT (RFC 8446 §4.2.10) with RFC 8470 rules: safe methods only, else 425
    max_early_data_size: int = 16384
    early_data_window: float = 10.0  # seconds: ticket-age tolerance and how long a ClientHello is remembered
    redis: str | None = None  # fleet: ticket key ring (RedisTicketKeys; not with key files) and 0-RTT seen-set
    stapling: bool = True  # OCSP staples from the responder each leaf names (AIA), fetched in the background
    staple_file: Path | None = None  # a DER OCSP response kept fresh by something else (nginx ssl_stapling_file)
    client_ca: Path | None = None  # mTLS: PEM roots that issue client certificates
    client_crl: tuple[Path, ...] = ()  # mTLS: CRLs (DER or PEM) of those CAs: revoked clients are refused
    verify_client: str = "none"  # none | optional | required (with client_ca: required unless said otherwise)
    allow_spiffe: tuple[str, ...] = ()  # mTLS: SPIFFE IDs or patterns allowed in (access_denied otherwise)
    http: HTTPLimits = field(default_factory=HTTPLimits)
    routes: tuple[Route, ...] = (StaticRoute(),)
    metrics: MetricsEndpoint | None = None
    workers: int = 1
    uvloop: bool = True  # when installed
    access_log: bool = True
    log_json: bool = False
    drain_timeout: float = 10.0  # SIGTERM: how long open requests may finish
    cert_poll_interval: float = 2.0  # seconds between certificate mtime checks; 0 turns it off
    ktls: str = "auto"  # kernel TLS TX + sendfile: off | auto | require (tlskit.serve.ktls)
    # where each file setting read at build time came from, to prefix its loading errors: "site.toml:8: [tls]:
    # 'client_ca' " or "--client-ca: " (keys: ticket_key_files, staple_file, client_ca, client_crl)
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def watched_files(self) -> tuple[Path, ...]:
        """Files whose change triggers a reload: certificates, keys and the config file itself."""
        files = [p for spec in self.certificates for p in (spec.cert, spec.key)] + list(self.ticket_key_files)
        files += [p for p in (self.client_ca,) if p is not None] + list(self.client_crl)
        return tuple(files + ([self.source] if self.source else []))


@dataclass(frozen=True, kw_only=True, slots=True)
class Flags:
    """Command-line values; None means "not given", so the file (or the default) decides."""

    config: Path | None = None
    root: Path | None = None
    host: str | None = None
    port: int | None = None
    reuse_port: bool | None = None
    cert: Path | None = None
    key: Path | None = None
    alpn: tuple[str, ...] | None = None
    cipher_suites: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    proxy: str | None = None
    listing: bool | None = None
    workers: int | None = None
    metrics_port: int | None = None
    metrics_host: str | None = None
    log_json: bool | None = None
    access_log: bool | None = None
    ktls: str | None = None  # off | auto | require (tlskit.serve.ktls)
    ticket_keys: tuple[Path, ...] | None = None
    ticket_rotate: float | None = None
    early_data: bool | None = None
    early_data_window: float | None = None
    redis: str | None = None
    stapling: bool | None = None
    staple_file: Path | None = None
    client_ca: Path | None = None
    client_crl: tuple[Path, ...] | None = None
    verify_client: str | None = None
    allow_spiffe: tuple[str, ...] | None = None


_LIMITS = HTTPLimits()


def load_settings(flags: Flags, text: str | None = None) -> Settings:
    """Read ``flags.config`` (if any) and apply the flags; raise ``SettingsError`` with file:line and fix.
    ``text``: the file's content as read before (a restarted worker takes what its supervisor validated, not
    what the file holds now)."""
    doc: dict[str, Any] = {}
    where = _Where(None, "")
    base = Path.cwd()
    if flags.config is not None:
        path = flags.config.resolve()
        if text is None and path.exists() and not path.is_file():  # a FIFO would block here for good
            raise SettingsError(f"{flags.config}: not a regular file; give the path of a TOML config file")
        try:
            text = path.read_text(encoding="utf-8") if text is None else text
        except (OSError, UnicodeDecodeError) as e:
            raise SettingsError(f"{flags.config}: cannot read the config file ({_reason(e)})") from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            found = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
            detail = re.sub(r"\s*\(at line.*\)", "", str(e))
            line = f":{found.group(1)}" if found else ""
            col = f", column {found.group(2)}" if found else ""
            raise SettingsError(f"{flags.config}{line}: TOML syntax error{col}: {detail} (strings need quotes, "
                                f"tables [name], arrays of tables [[name]])") from None
        where = _Where(flags.config, text)
        base = path.parent
    return _build(doc, where, base, flags)


# --------------------------------------------------------------------------------------------- building


def _build(doc: dict[str, Any], where: _Where, base: Path, flags: Flags) -> Settings:
    top = _Table(doc, where, "", None, base)
    server = top.table("server")
    tls = top.table("tls")
    http = top.table("http")
    metrics_t = top.table("metrics") if "metrics" in doc else None
    listen_tables = top.tables("listen")
    listeners = tuple(_listener(t) for t in listen_tables)
    for i, listener in enumerate(listeners):  # nginx: "duplicate listen options"
        if listener.port and any((earlier.address, earlier.port) == (listener.address, listener.port)
                                 for earlier in listeners[:i]):
            listen_tables[i].fail("port", f"{listener.address} port {listener.port} is already a [[listen]] above")
    certificates = tuple(_certificate(t) for t in top.tables("certificate"))
    route_tables = top.tables("route")
    routes = tuple(_route(t) for t in route_tables)
    for i, r in enumerate(routes):  # nginx: "duplicate location"; here the second would never be reached
        for earlier in routes[:i]:
            if (earlier.prefix, sorted(earlier.hosts)) == (r.prefix, sorted(r.hosts)):
                route_tables[i].fail("path", f"{r.prefix!r} is already the path of an earlier [[route]] with the "
                                             "same hosts: that one would always answer (remove one, or give hosts)")
    top.finish(("server", "tls", "http", "metrics", "listen", "certificate", "route"))

    limits = HTTPLimits(
        max_header_bytes=http.integer("max_header_bytes", _LIMITS.max_header_bytes, 1024, 1 << 20),
        max_body_bytes=http.integer("max_body_bytes", _LIMITS.max_body_bytes, 0, 1 << 40),
        header_timeout=http.number("header_timeout", _LIMITS.header_timeout),
        idle_timeout=http.number("idle_timeout", _LIMITS.idle_timeout),
        handshake_timeout=http.number("handshake_timeout", _LIMITS.handshake_timeout),
        max_requests_per_connection=http.integer("max_requests_per_connection",
                                             _LIMITS.max_requests_per_connection, 1, 1 << 30),
    )
    http.finish()
    alpn = tuple(tls.strings("alpn", ("http/1.1",)))
    for protocol in alpn:
        if protocol not in SERVE_ALPN:
            tls.fail("alpn", f"{protocol!r} is not served here: use {' and/or '.join(SERVE_ALPN)}")
    suites = _named(tls, "cipher_suites", flags.cipher_suites, CipherSuite, SUITES, DEFAULT_CIPHER_SUITES)
    groups = _named(tls, "groups", flags.groups, NamedGroup, SUPPORTED_GROUPS, SERVE_GROUPS)
    tickets = tls.flag("session_tickets", True)
    ticket_files = tuple(tls.file_list("ticket_key_files"))
    ticket_lifetime = tls.integer("ticket_lifetime", 7200, 1, 604800)
    security = _tls_security(tls, flags, tickets, ticket_files, ticket_lifetime)
    tls.finish()
    settings = Settings(
        source=where.file.resolve() if where.file else None,
        source_text=where.text,
        listeners=listeners or (Listener(),),
        certificates=certificates,
        alpn=flags.alpn or alpn,
        cipher_suites=suites,
        groups=groups,
        ticket_lifetime=ticket_lifetime,
        **security,
        http=limits,
        routes=routes or (StaticRoute(root=base),),
        metrics=_metrics(metrics_t, flags),
        workers=_workers(server, flags, security),
        uvloop=server.flag("uvloop", True),
        access_log=_flag(flags.access_log, server.flag("access_log", True)),
        log_json=_flag(flags.log_json, server.flag("log_json", False)),
        drain_timeout=server.number("drain_timeout", 10.0),
        cert_poll_interval=server.number("cert_poll_interval", 2.0, minimum=0.0),
        ktls=_flag(flags.ktls, server.text("ktls", "auto")),
    )
    if flags.ktls is None and settings.ktls not in ("off", "auto", "require"):
        server.fail("ktls", f"{settings.ktls!r}: use \"off\", \"auto\" or \"require\"")
    server.finish()
    settings = _apply_flags(settings, flags)
    from .listeners import metrics_port_clash  # (it imports this module)

    if (clash := metrics_port_clash(settings)) is not None:
        if flags.metrics_port is not None or metrics_t is None:
            raise SettingsError(f"--metrics-port: {clash}")
        metrics_t.fail("port", clash)
    return settings


def _apply_flags(s: Settings, flags: Flags) -> Settings:
    changes: dict[str, Any] = {}
    if flags.host is not None or flags.port is not None or flags.reuse_port is not None:
        # --host names the one address to listen on; --port and --reuse-port apply to every [[listen]], whose
        # other settings (ipv6_only, backlog) stay (they were reset to the defaults, and listeners dropped)
        listeners = s.listeners[:1] if flags.host is not None else s.listeners
        if flags.host is not None and (problem := _address_problem(flags.host)) is not None:
            raise SettingsError(f"--host: {problem}")
        moved = [dataclasses.replace(
            listener,
            origin="--host: " if flags.host is not None else listener.origin,
            address=flags.host if flags.host is not None else listener.address,
            port=flags.port if flags.port is not None else listener.port,
            reuse_port=flags.reuse_port if flags.reuse_port is not None else listener.reuse_port,
        ) for listener in listeners]
        # two addresses' listeners moved to one port stay two; one address twice becomes one
        changes["listeners"] = tuple({(lst.address, lst.port): lst for lst in reversed(moved)}.values())[::-1]
    if (flags.cert is None) != (flags.key is None):
        raise SettingsError("give both --cert and --key, or neither (the development CA then issues a localhost "
                            "certificate)")
    if flags.cert is not None and flags.key is not None:
        for flag, path in (("--cert", flags.cert), ("--key", flags.key)):
            if not path.is_file():  # (a FIFO would block the reading for good)
                raise SettingsError(f"{flag}: {path} is not a readable file (PEM)")
        changes["certificates"] = (CertificateSpec(cert=flags.cert.absolute(), key=flags.key.absolute(),
                                                   origin="--cert/--key: "),)
    if flags.proxy is not None:
        changes["routes"] = (_proxy_from_url(flags.proxy, "--proxy", ProxyRoute()),)
    elif flags.root is not None or flags.listing is not None:
        root = flags.root.resolve() if flags.root is not None else None
        routes = list(s.routes)
        for i, r in enumerate(routes):
            if isinstance(r, StaticRoute) and r.prefix == "/" and not r.hosts:
                routes[i] = StaticRoute(prefix="/", root=root or r.root, index=r.index,
                                        listing=r.listing if flags.listing is None else flags.listing)
                break
        else:
            routes.append(StaticRoute(root=root or Path.cwd(), listing=bool(flags.listing)))
        changes["routes"] = tuple(routes)
    for r in changes.get("routes", ()):
        if isinstance(r, StaticRoute) and not r.root.is_dir():
            raise SettingsError(f"{r.root}: not a directory to serve (give an existing directory as ROOT)")
    return dataclasses.replace(s, **changes) if changes else s


def _tls_security(t: _Table, flags: Flags, tickets: bool, ticket_files: tuple[Path, ...],
                  lifetime: int) -> dict[str, Any]:
    """Ticket keys, 0-RTT, Redis, stapling and mTLS from ``[tls]`` and the flags, with the combinations that
    cannot work refused in one line (a flag's name when the flag caused it, else the file and line)."""
    def refuse(key: str, flag: str, message: str) -> NoReturn:
        if flag:
            raise SettingsError(f"{flag}: {message}")
        t.fail(key, message)

    if flags.ticket_keys is not None:
        ticket_files = tuple(p.absolute() for p in flags.ticket_keys)
        for path in ticket_files:
            if not path.is_file():
                raise SettingsError(f"--ticket-key: {path} is not a readable file (make one with "
                                    f"`tlskit stek new {path}`)")
    rotate_flag = "--ticket-rotate" if flags.ticket_rotate is not None else ""
    rotate = flags.ticket_rotate if flags.ticket_rotate is not None else _duration(t, "ticket_rotate")
    early = _flag(flags.early_data, t.flag("early_data", False))
    max_early = t.integer("max_early_data_size", 16384, 1, 1 << 24)
    window = flags.early_data_window if flags.early_data_window is not None else t.number("early_data_window", 10.0)
    if not 0.5 <= window <= 60:
        refuse("early_data_window", "--early-data-window" if flags.early_data_window is not None else "",
               f"{window:g} s: give 0.5 to 60 seconds (RFC 8446 §8.3 suggests about 10)")
    redis_flag = "--redis" if flags.redis is not None else ""
    redis = flags.redis if flags.redis is not None else t.text("redis", "") or None
    stapling = _flag(flags.stapling, t.flag("stapling", True))
    staple_file = flags.staple_file.absolute() if flags.staple_file is not None else (
        t.file("staple_file") if "staple_file" in t.data else None)
    t.used.add("staple_file")
    client_ca = flags.client_ca.absolute() if flags.client_ca is not None else (
        t.file("client_ca") if "client_ca" in t.data else None)
    t.used.add("client_ca")
    client_crl = (tuple(p.absolute() for p in flags.client_crl) if flags.client_crl is not None
                  else tuple(t.file_list("client_crl", "tlskit ca crl CA_DIR")))
    verify_flag = "--verify-client" if flags.verify_client is not None else ""
    verify = flags.verify_client or t.text("verify_client", "required" if client_ca else "none")
    spiffe_flag = "--allow-spiffe" if flags.allow_spiffe is not None else ""
    allow = flags.allow_spiffe if flags.allow_spiffe is not None else tuple(t.strings("allow_spiffe"))

    if flags.staple_file is not None and not flags.staple_file.is_file():
        raise SettingsError(f"--staple-file: {flags.staple_file} is not a readable file (a DER OCSP response)")
    if flags.client_ca is not None and not flags.client_ca.is_file():
        raise SettingsError(f"--client-ca: {flags.client_ca} is not a readable file (PEM CA certificates)")
    for crl in flags.client_crl or ():
        if not crl.is_file():
            raise SettingsError(f"--client-crl: {crl} is not a readable file (a CRL, e.g. from `tlskit ca crl`)")
    if client_crl and client_ca is None:
        refuse("client_crl", "--client-crl" if flags.client_crl else "", "checks client certificates: give "
                                                                          "--client-ca FILE too")
    if staple_file is not None and not stapling:
        refuse("staple_file", "--staple-file" if flags.staple_file is not None else "",
               "staples, so it cannot go with stapling turned off (--no-stapling, or stapling = false)")
    if verify not in ("none", "optional", "required"):
        refuse("verify_client", verify_flag, f"{verify!r}: use optional or required (with a client CA)")
    if verify != "none" and client_ca is None:
        refuse("verify_client", verify_flag, "needs the CAs that issue client certificates (--client-ca FILE, "
                                             "or client_ca in [tls])")
    if allow and verify == "none":
        refuse("allow_spiffe", spiffe_flag, "checks client certificates: give --client-ca FILE too")
    for pattern in allow:
        try:
            SpiffeAllowList([pattern])
        except ConfigError as e:
            refuse("allow_spiffe", spiffe_flag, str(e))
    if redis is not None:
        try:
            parts = urlsplit(redis)
            usable = parts.scheme in ("redis", "rediss", "unix") and bool(parts.hostname or parts.path)
        except ValueError:  # e.g. "redis://[::1" (an unclosed IPv6 literal)
            usable = False
        if not usable:
            refuse("redis", redis_flag, f"{redacted(redis)!r} is not a Redis URL "
                                        "(redis://[user:password@]host:port/db, rediss:// for TLS)")
        problem = _redis_url_problem(redis)
        if problem is not None:
            refuse("redis", redis_flag, f"{redacted(redis)!r}: {problem}")
    uses = [(key, flag, given) for key, flag, value, given in (
        ("ticket_key_files", "--ticket-key", ticket_files, flags.ticket_keys is not None),
        ("ticket_rotate", "--ticket-rotate", rotate, bool(rotate_flag)),
        ("redis", "--redis", redis, bool(redis_flag)),
        ("early_data", "--early-data", early, bool(flags.early_data))) if value]
    # With client certificates a ticket carries the client's chain, checked again (trust, allow_spiffe) when it
    # resumes; a session without one never resumes under verify_client = "required" (the engine's rule).
    if uses and not tickets:
        key, flag, given = uses[0]
        refuse(key, flag if given else "", "needs session tickets, but [tls] session_tickets is false")
    if ticket_files and rotate is not None:  # (with --redis, the files' keys are used and Redis holds the replay set)
        refuse("ticket_key_files", rotate_flag, "ticket key files are rotated outside the server (`tlskit stek "
               "rotate`); --ticket-rotate makes its own keys: give one or the other")
    if rotate is not None:
        try:
            check_rotation(rotate, lifetime)
        except ConfigError as e:
            refuse("ticket_rotate", rotate_flag, str(e))
    origins = {key: f"{flag}: " if given else t.origin(key) for key, flag, given in (
        ("ticket_key_files", "--ticket-key", flags.ticket_keys is not None),
        ("staple_file", "--staple-file", flags.staple_file is not None),
        ("client_ca", "--client-ca", flags.client_ca is not None),
        ("client_crl", "--client-crl", flags.client_crl is not None))}
    return {"session_tickets": tickets, "ticket_key_files": ticket_files, "origins": origins,
            "ticket_rotate": rotate, "early_data": early, "max_early_data_size": max_early,
            "early_data_window": window, "redis": redis,
            "stapling": stapling, "staple_file": staple_file, "client_ca": client_ca, "client_crl": client_crl,
            "verify_client": verify, "allow_spiffe": allow}


def redacted(url: str) -> str:
    """``url`` with its password as ``***``: what a message or log line may show of a Redis URL."""
    url = re.sub(r"^([^:/]*://[^/@]*?:)[^/]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _redis_url_problem(url: str) -> str | None:
    """What redis-py makes of the URL, without connecting: a bad port or an option it does not know (it would
    fail at the first command, in the middle of serving). None when fine, or when redis-py is not installed."""
    try:
        import redis
    except ImportError:
        return None  # said where Redis is first used (pip install tlskit[fleet])
    try:
        client = redis.Redis.from_url(url)
        client.connection_pool.make_connection()  # builds the connection object (checks its options), connects nothing
        client.close()
    except (ValueError, TypeError, redis.RedisError) as e:
        return f"{e}: give redis://[user:password@]host:port/db with only the options redis.from_url knows"
    return None


def _duration(t: _Table, key: str) -> float | None:
    """``ticket_rotate = "1h"`` (or seconds as a number)."""
    value = t._get(key, None, (int, float, str), 'a duration such as "1h" or a number of seconds')
    if value is None:
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            t.fail(key, f"must be a finite number of seconds above 0, not {value}")
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if match is None:
        t.fail(key, f"{value!r} is not a duration (e.g. \"1h\", \"90m\", 3600)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def per_process_state(s: Settings) -> str | None:
    """What in ``s`` lives in each process and must not be split across workers (see ``_workers``)."""
    return _per_process(s.early_data, s.ticket_rotate, s.redis)


def _per_process(early_data: bool, ticket_rotate: float | None, redis: str | None) -> str | None:
    """``early_data`` (a memory replay set) or ``ticket_rotate`` (keys made in memory) when Redis does not share
    them, else None."""
    if redis is not None:
        return None
    return "early_data" if early_data else "ticket_rotate" if ticket_rotate else None


def _workers(server: _Table, flags: Flags, security: dict[str, Any]) -> int:
    """One process per core, except where per-process state would be wrong across processes: a memory
    replay store (a replayed 0-RTT ClientHello would be accepted once per worker) and keys rotated in
    memory (each worker would make its own, so tickets would not resume on another worker)."""
    state = _per_process(security["early_data"], security["ticket_rotate"], security["redis"])
    local = "--" + state.replace("_", "-") if state else None
    given = flags.workers if flags.workers is not None else server.data.get("workers")
    default = 1 if local else os.cpu_count() or 1
    workers = _flag(flags.workers, server.integer("workers", default, 1, 1024))
    if local and isinstance(given, int) and given > 1:
        message = (f"{local} keeps its state in each process, so with {given} workers a replayed 0-RTT request "
                   "could be accepted once per worker" if local == "--early-data" else
                   f"{local} makes keys in each process, so with {given} workers tickets would not resume across "
                   "them")
        fix = "; share it through --redis URL, or run one worker"
        if flags.workers is not None:
            raise SettingsError(f"--workers {given}: {message}{fix}")
        server.fail("workers", f"is {given}, but {message}{fix}")
    return workers


def _flag(flag: T | None, value: T) -> T:
    return value if flag is None else flag


def _address_problem(address: str) -> str | None:
    """Why ``address`` cannot be a listener's address, or None."""
    if not address.strip():
        return "is empty: name an address (\"0.0.0.0\" and \"::\" are every interface) or a host name"
    try:
        ipaddress.ip_address(address.partition("%")[0])  # an IPv6 literal may name its interface (fe80::1%eth0)
    except ValueError:  # a host name for getaddrinfo to resolve (my_host, an IDN), not a mistyped address
        if re.fullmatch(r"[0-9.]+|.*[:\s/\[\]].*", address):
            return f"{address!r} is neither an IP address nor a host name (IPv6 without brackets: ::1)"
    return None


def _listener(t: _Table) -> Listener:
    address = t.text("address", "localhost")
    problem = _address_problem(address)
    if problem is not None:
        t.fail("address", problem)
    listener = Listener(address=address, port=t.integer("port", 8443, 0, 65535),
                        ipv6_only=t.flag("ipv6_only", True), reuse_port=t.flag("reuse_port", False),
                        backlog=t.integer("backlog", 1024, 1, 1 << 16),
                        origin=f"{t.where.prefix(t.name, t.index, 'address')}{t.label()}: ")
    t.finish()
    return listener


def _certificate(t: _Table) -> CertificateSpec:
    spec = CertificateSpec(cert=t.file("cert"), key=t.file("key"), names=tuple(n.lower() for n in t.strings("names")),
                           origin=f"{t.where.prefix(t.name, t.index, None)}{t.label()}: ")
    for name in spec.names:
        if "*" in name and not (name.startswith("*.") and "*" not in name[2:]):
            t.fail("names", f"{name!r} is not a usable wildcard (only a leading '*.', e.g. '*.example.com')")
    t.finish()
    return spec


def _route(t: _Table) -> Route:
    prefix = t.text("path", "/")
    if not prefix.startswith("/"):
        t.fail("path", f"{prefix!r} must start with '/' (e.g. path = \"/api/\")")
    try:
        prefix = normalize_path(prefix)  # requests are matched normalized: "/%7Euser/" is "/~user/"
    except ValueError as e:
        t.fail("path", f"{prefix!r}: {e}")
    # IPv6 literals bracketed, as Host headers and absolute targets name them
    hosts = tuple(_route_host(t, h) for h in map(str.lower, t.strings("hosts")))
    if "proxy" in t.data and "root" in t.data:
        t.fail("proxy", "a route has either root (static files) or proxy (upstream URL), not both")
    route: Route
    if "proxy" in t.data:
        base = ProxyRoute(prefix=prefix, hosts=hosts, preserve_host=t.flag("preserve_host", True),
                          timeout=t.number("timeout", 30.0),
                          client_cert_header=t.text("client_cert_header", "x-client-cert-subject").lower())
        route = _proxy_from_url(t.text("proxy", ""), "proxy", base, t)
    else:
        root = t.directory("root") if "root" in t.data else t.base
        route = StaticRoute(prefix=prefix, hosts=hosts, root=root,
                            index=tuple(t.strings("index", ("index.html",))), listing=t.flag("listing", False))
    t.finish()
    return route


def _route_host(t: _Table, host: str) -> str:
    """A ``hosts`` entry: a name or an IP literal (IPv6 kept in brackets, as Host carries it); a port (the
    Host's port is not matched) or a space could never match."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        if not re.fullmatch(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?\.?", host):
            t.fail("hosts", f"{host!r} can never match a request: give exact names without a port, spaces or "
                            "wildcards (the Host header's port is not compared), like \"example.com\" or \"[::1]\"")
        return host
    return f"[{bare}]" if ip.version == 6 else bare  # as written: Host carries it so (curl: [::ffff:127.0.0.1])


def _proxy_from_url(url: str, what: str, base: ProxyRoute, t: _Table | None = None) -> ProxyRoute:
    try:
        parts = urlsplit(url)
        port = parts.port if parts.port is not None else 80
    except ValueError:  # a port that is no number, an unclosed "[::1"
        parts, port = urlsplit(""), -1
    odd = re.search(r"[\s\x00-\x1f\x7f]", url)  # (a space in the path made every request a 400, at run time)
    if (parts.scheme != "http" or not parts.hostname or port <= 0 or parts.query or parts.fragment or odd
            or parts.username is not None):
        message = f"{url!r} is not an upstream URL (use http://host:port[/path], no spaces, credentials, query or " \
                  "fragment; the upstream speaks HTTP/1.1)"
        if t is not None:
            t.fail(what, message)
        raise SettingsError(f"{what}: {message}")
    return ProxyRoute(prefix=base.prefix, hosts=base.hosts, upstream_host=parts.hostname, upstream_port=port,
                      upstream_path=parts.path.rstrip("/"), preserve_host=base.preserve_host, timeout=base.timeout,
                      client_cert_header=base.client_cert_header)


def _metrics(t: _Table | None, flags: Flags) -> MetricsEndpoint | None:
    if t is None and flags.metrics_port is None:
        return None
    address = t.text("address", "127.0.0.1") if t else "127.0.0.1"
    port = t.integer("port", 9443, 0, 65535) if t else 9443
    if t:
        t.finish()
    return MetricsEndpoint(address=flags.metrics_host or address,
                           port=flags.metrics_port if flags.metrics_port is not None else port)


E = TypeVar("E", CipherSuite, NamedGroup)
T = TypeVar("T")


def _named(t: _Table, key: str, flag: Sequence[str] | None, enum: type[E], supported: Any,
           default: tuple[E, ...]) -> tuple[E, ...]:
    """Suites or groups by IANA name (case-insensitive), keeping only ones the engine implements."""
    from_file = t.strings(key, None)
    names = list(flag) if flag is not None else from_file
    if names is None:
        return default
    by_name = {m.name.lower(): m for m in enum if m in supported}
    values: list[E] = []
    for name in names:
        member = by_name.get(name.lower())
        if member is None:
            message = f"{name!r} is not supported; use some of: {', '.join(m.name for m in by_name.values())}"
            if flag is not None:  # the flags: --ciphers and --groups, colon- or comma-separated
                option = "--ciphers" if key == "cipher_suites" else f"--{key.replace('_', '-')}"
                raise SettingsError(f"{option}: {message}")
            t.fail(key, message)
        values.append(member)
    if not values:
        t.fail(key, "is empty: name at least one")
    return tuple(values)


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e)


# --------------------------------------------------------------------------------------------- locating


@dataclass(frozen=True, slots=True)
class _Where:
    file: Path | None
    text: str

    def line(self, table: str, index: int | None, key: str | None) -> int | None:
        """The line of ``key`` in ``[table]`` (the ``index``-th ``[[table]]``), or of the header itself."""
        header = None
        seen = -1
        current = ""
        for number, raw in enumerate(self.text.splitlines(), 1):
            line = raw.strip()
            if m := re.fullmatch(r"\[\[\s*([\w.-]+)\s*\]\](\s*#.*)?", line):
                current = m.group(1)
                if current == table:
                    seen += 1
                    if index is not None and seen == index:
                        header = number
                continue
            if m := re.fullmatch(r"\[\s*([\w.-]+)\s*\](\s*#.*)?", line):
                current = m.group(1)
                if current == table and index is None:
                    header = number
                continue
            in_table = current == table and (index is None or seen == index)
            if key is not None and in_table and re.match(rf"[\"']?{re.escape(key)}[\"']?\s*=", line):
                return number
        return header

    def prefix(self, table: str, index: int | None, key: str | None) -> str:
        if self.file is None:
            return ""
        line = self.line(table, index, key)
        if line is None and key is not None:  # a table where a value belongs: point at its header
            line = self.line(key, None, None) or self.line(key, 0, None)
        return f"{self.file}:{line}: " if line else f"{self.file}: "


class _Table:
    """One TOML table with typed getters whose errors carry the file and line; ``finish`` rejects extras."""

    def __init__(self, data: Any, where: _Where, name: str, index: int | None, base: Path) -> None:
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        self.where, self.name, self.index, self.base = where, name, index, base
        self.used: set[str] = set()
        if not isinstance(data, dict):
            self.fail(None, f"must be a table ([{name}] or [[{name}]])")

    def label(self) -> str:
        if not self.name:
            return "top level"
        return f"[[{self.name}]] #{self.index + 1}" if self.index is not None else f"[{self.name}]"

    def origin(self, key: str | None) -> str:
        """The start of a message about ``key``: ``site.toml:8: [tls]: 'client_ca' ``."""
        what = f"'{key}' " if key else ""
        return f"{self.where.prefix(self.name, self.index, key)}{self.label()}: {what}"

    def fail(self, key: str | None, message: str) -> NoReturn:
        raise SettingsError(f"{self.origin(key)}{message}")

    def table(self, key: str) -> _Table:
        value = self.data.get(key, {})
        if isinstance(value, list):
            self.fail(key, f"must be written [{key}], not [[{key}]]")
        return _Table(value, self.where, key, None, self.base)

    def tables(self, key: str) -> list[_Table]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.fail(key, f"must be written [[{key}]] (one per {key}), not [{key}]")
        return [_Table(v, self.where, key, i, self.base) for i, v in enumerate(value)]

    def _get(self, key: str, default: T, kind: type | tuple[type, ...], expect: str) -> T:
        self.used.add(key)
        if key not in self.data:
            return default
        value: Any = self.data[key]
        if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
            self.fail(key, f"must be {expect}, not {value!r}")
        return cast(T, value)

    def text(self, key: str, default: str) -> str:
        return self._get(key, default, str, "a string in quotes")

    def flag(self, key: str, default: bool) -> bool:
        return self._get(key, default, bool, "true or false")

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._get(key, default, int, "a whole number")
        if not low <= value <= high:
            self.fail(key, f"must be between {low} and {high}, not {value}")
        return value

    def number(self, key: str, default: float, minimum: float = 0.001) -> float:
        value = float(self._get(key, default, (int, float), "a number of seconds"))
        if not math.isfinite(value) or value < minimum:  # TOML has nan and inf
            self.fail(key, f"must be a finite number, at least {minimum}, not {value}")
        return value

    def strings(self, key: str, default: Any = ()) -> Any:
        value = self._get(key, default, (list, str), 'a list of strings, e.g. ["a", "b"]')
        if isinstance(value, str):
            value = [value]
        if value is not None and not all(isinstance(v, str) for v in value):
            self.fail(key, f'must be a list of strings, e.g. ["a", "b"], not {value!r}')
        return value

    def _path(self, key: str, check: Callable[[Path], bool], problem: str) -> Path:
        if key not in self.data:
            self.fail(None, f"needs '{key}' (a path, relative to the config file)")
        path = (self.base / self.text(key, "")).absolute()  # as written: a symlink swap (certbot) is a change
        if not check(path):
            self.fail(key, f"{path} {problem}")
        return path

    def file(self, key: str) -> Path:
        return self._path(key, Path.is_file, "is not a readable file (check the path)")

    def file_list(self, key: str, make: str = "tlskit stek new {path}") -> list[Path]:
        paths = [(self.base / name).absolute() for name in self.strings(key)]
        for path in paths:
            if not path.is_file():
                self.fail(key, f"{path} is not a readable file (make one with `{make.format(path=path)}`)")
        return paths

    def directory(self, key: str) -> Path:
        return self._path(key, Path.is_dir, "is not a directory (create it, or point root elsewhere)")

    def finish(self, also: Sequence[str] = ()) -> None:
        unknown = sorted(set(self.data) - self.used - set(also))
        if unknown:
            known = sorted(self.used | set(also))
            self.fail(unknown[0], f"is not a known setting (known here: {', '.join(known)})")
