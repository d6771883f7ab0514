"""``tlskit probe``: one handshake shown message by message (like ``openssl s_client -msg -status
-showcerts``): offered and chosen parameters, per-phase timings, the certificate chain, the OCSP staple,
the tickets, and whether resumption / 0-RTT work on a second connection."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import CertifiedKey, ClientConfig
from ..enums import CipherSuite, NamedGroup
from ..pki.verify import TrustStore
from .certinfo import describe_certificate, describe_ocsp
from .handshake import HandshakeTrace, run_handshake
from .summary import message_fields, message_line, version_name

__all__ = ["EXIT_CERTIFICATE", "EXIT_CONNECT", "EXIT_HANDSHAKE", "EXIT_OK", "ProbeOptions", "ProbeReport",
           "client_config", "parse_target", "probe", "render_probe", "resumption_support"]

EXIT_OK = 0
EXIT_HANDSHAKE = 1  # the TLS handshake failed (alert, protocol error, reset after ClientHello)
EXIT_CONNECT = 3  # DNS, TCP connect or timeout
EXIT_CERTIFICATE = 4  # handshake refused because the certificate did not verify


def parse_target(target: str, default_port: int = 443) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; ValueError for anything else (an empty
    host, a port that is no number in 1-65535, an unclosed bracket, a name with an empty or over-long label)."""
    bad = ValueError(f"bad target {target!r} (HOST[:PORT], [IPv6]:PORT; PORT 1-65535)")
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise bad
        text = rest[1:] if rest else str(default_port)
    elif target.count(":") == 1:
        host, text = target.split(":")
    else:
        host, text = target, str(default_port)
    if not host or not text.isdigit() or not 0 < int(text) < 65536:
        raise bad
    if not _resolvable(host):
        raise ValueError(f"bad target {target!r}: a label of the name is empty or over 63 characters "
                         "(RFC 1035 §2.3.4)")
    return host, int(text)


def _resolvable(host: str) -> bool:
    """Whether ``getaddrinfo`` can take ``host``: it IDNA-encodes names and raises UnicodeError, no OSError,
    for a label that is empty or too long."""
    try:
        host.encode("idna")
    except UnicodeError:
        return ":" in host  # an IPv6 literal is no name (and never encoded)
    return True


@dataclass(frozen=True, kw_only=True, slots=True)
class ProbeOptions:
    host: str
    port: int = 443
    sni: str | None = None  # default: the host; "" sends none
    alpn: tuple[str, ...] = ()
    suites: tuple[CipherSuite, ...] = ()
    groups: tuple[NamedGroup, ...] = ()
    key_share: tuple[NamedGroup, ...] = ()
    cafile: str | None = None
    insecure: bool = False
    client_cert: str | None = None
    client_key: str | None = None
    key_log: Callable[[str], None] | None = None
    timeout: float = 10.0
    resume: bool = False
    early_data: bool = False


def client_config(options: ProbeOptions) -> ClientConfig:
    """The ClientConfig a probe uses (raises ConfigError for bad names or files)."""
    kwargs: dict[str, Any] = {
        "server_name": options.host if options.sni is None else (options.sni or None),
        "alpn": options.alpn,
        "request_ocsp": True,
        "verify_peer": not options.insecure,
        "key_log": options.key_log,
    }
    if options.suites:
        kwargs["cipher_suites"] = options.suites
    if options.groups:
        kwargs["groups"] = options.groups
        kwargs["key_share_groups"] = options.key_share or options.groups[:1]
    elif options.key_share:
        kwargs["key_share_groups"] = options.key_share
    if options.cafile and not options.insecure:
        kwargs["trust"] = TrustStore.from_pem_file(options.cafile)
    if options.client_cert:
        kwargs["certificate"] = CertifiedKey.from_pem_files(options.client_cert,
                                                             options.client_key or options.client_cert)
    return ClientConfig(**kwargs)


def resumption_support() -> str | None:
    """None when the engine's ClientConfig can resume, else why not (resumption is being built)."""
    names = {f.name for f in dataclasses.fields(ClientConfig)}
    if "session_store" not in names:
        return "not supported yet: tlskit's client cannot resume sessions (no ClientConfig.session_store)"
    return None


@dataclass(kw_only=True, slots=True)
class ProbeReport:
    options: ProbeOptions
    first: HandshakeTrace
    second: HandshakeTrace | None = None
    second_note: str | None = None
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def exit_status(self) -> int:
        failure = self.first.failure
        if failure is None:
            return EXIT_OK
        if failure in ("resolve", "connect", "timeout") and self.first.first_byte_time is None:
            return EXIT_CONNECT
        return EXIT_CERTIFICATE if failure == "certificate" else EXIT_HANDSHAKE


def probe(options: ProbeOptions) -> ProbeReport:
    config = client_config(options)
    first = run_handshake(options.host, options.port, config, timeout=options.timeout, linger=0.3)
    report = ProbeReport(options=options, first=first)
    if (options.resume or options.early_data) and first.ok:
        why_not = resumption_support()
        if why_not is not None:
            report.second_note = why_not
        elif options.early_data and "early_data" not in {f.name for f in dataclasses.fields(ClientConfig)}:
            report.second_note = "0-RTT not supported yet: tlskit's client cannot send early data"
        elif not first.tickets:
            report.second_note = "the server sent no NewSessionTicket: nothing to resume with"
        else:
            report.second = _second_connection(options, config, first)
    return report


def _second_connection(options: ProbeOptions, config: ClientConfig, first: HandshakeTrace) -> HandshakeTrace:
    """Resume with a ticket of the first connection (and send 0-RTT data when asked)."""
    from ..stores.base import StoredTicket
    from ..stores.memory import MemorySessionStore

    store = MemorySessionStore()
    name = config.server_name or options.host
    key = config.session_key or name
    for t in first.tickets:
        store.put(key, StoredTicket(ticket=t.ticket.ticket, psk=t.psk, cipher_suite=t.cipher_suite,
                                     server_name=t.server_name, alpn=t.alpn, received_at=t.received_at,
                                     lifetime=t.ticket.lifetime, age_add=t.ticket.age_add,
                                     max_early_data_size=t.max_early_data_size))
    changes: dict[str, Any] = {"session_store": store}
    early = None
    if options.early_data:
        changes["early_data"] = True
        early = b"HEAD / HTTP/1.1\r\nHost: " + name.encode() + b"\r\nConnection: close\r\n\r\n"
    second_config = dataclasses.replace(config, **changes)
    return run_handshake(options.host, options.port, second_config, timeout=options.timeout, linger=0.2,
                         early_data=early)


# --- output ---------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def trace_json(trace: HandshakeTrace, now: dt.datetime) -> dict[str, Any]:
    done = trace.negotiated
    staple = trace.ocsp_staple()
    return {
        "host": trace.host,
        "port": trace.port,
        "address": trace.address,
        "ok": trace.ok,
        "failure": trace.failure,
        "error": trace.error,
        "alert_received": trace.alert_received.name if trace.alert_received else None,
        "alert_sent": trace.alert_sent.name if trace.alert_sent else None,
        "timings_ms": {k: None if v is None else round(v * 1000, 3) for k, v in (
            ("tcp_connect", trace.connect_time), ("first_byte", trace.first_byte_time),
            ("handshake_done", trace.handshake_time))},
        "negotiated": None if done is None else {
            "version": version_name(done.version),
            "cipher_suite": done.cipher_suite.name,
            "group": done.group.name if done.group is not None else None,
            "signature_scheme": done.signature_scheme.name if done.signature_scheme else None,
            "alpn": done.alpn,
            "server_name": done.server_name,
            "hello_retry": done.hello_retry,
            "resumed": done.resumed,
            "early_data_accepted": done.early_data_accepted,
        },
        "messages": [message_fields(m) for m in trace.tls.messages],
        "certificates": [describe_certificate(der, now) for der in trace.peer_chain()],
        "ocsp_staple": describe_ocsp(staple) if staple else None,
        "tickets": [{"lifetime": t.ticket.lifetime, "max_early_data_size": t.max_early_data_size,
                     "ticket_bytes": len(t.ticket.ticket)} for t in trace.tickets],
        "notes": trace.tls.notes,
    }


def report_json(report: ProbeReport) -> dict[str, Any]:
    out = trace_json(report.first, report.now)
    if report.options.resume or report.options.early_data:
        out["second_connection"] = {
            "note": report.second_note,
            "result": trace_json(report.second, report.now) if report.second is not None else None,
        }
    return out


def render_trace(trace: HandshakeTrace, now: dt.datetime, out: Callable[[str], None]) -> None:
    where = f"{trace.host}:{trace.port}" + (f" ({trace.address})" if trace.address else "")
    out(f"* Connecting to {where}")
    if trace.connect_time is not None:
        out(f"* TCP connected in {_ms(trace.connect_time)}")
    for message in trace.tls.messages:
        arrow = ">>>" if message.direction == "client" else "<<<"
        when = f"{message.time * 1000:8.1f} ms" if message.time is not None else " " * 11
        out(f"{when} {arrow} [{message.epoch}] {message_line(message)}")
    done = trace.negotiated
    if done is not None:
        group = done.group.name if done.group is not None else "none (psk_ke)"
        sig = done.signature_scheme.name if done.signature_scheme else "-"
        out(f"* Negotiated {version_name(done.version)} {done.cipher_suite.name}, group {group}, signature {sig}")
        out(f"  ALPN: {done.alpn or '(none)'}   SNI: {done.server_name or '(none)'}   "
            f"HelloRetryRequest: {'yes' if done.hello_retry else 'no'}   resumed: {'yes' if done.resumed else 'no'}")
    out(f"* Timings: TCP connect {_ms(trace.connect_time)}, first byte {_ms(trace.first_byte_time)}, "
        f"handshake done {_ms(trace.handshake_time)}")
    chain = trace.peer_chain()
    if chain:
        out(f"* Certificate chain ({len(chain)}):")
        for depth, der in enumerate(chain):
            info = describe_certificate(der, now)
            if "error" in info:
                out(f"  {depth} {info['error']}")
                continue
            days = info["days_left"]
            state = f"{days} days left" if days >= 0 else f"EXPIRED {-days} days ago"
            if info["not_yet_valid_by_seconds"]:
                state = f"NOT YET VALID for {info['not_yet_valid_by_seconds']} s"
            out(f"  {depth} subject: {info['subject']}")
            out(f"    issuer:  {info['issuer']}")
            if info["sans"]:
                out(f"    SANs:    {', '.join(info['sans'])}")
            out(f"    valid:   {info['not_before']} .. {info['not_after']} ({state})")
            out(f"    key:     {info['key']}   signature: {info['signature']}")
            out(f"    pin-sha256: {info['spki_sha256']}")
    staple = trace.ocsp_staple()
    if staple:
        ocsp = describe_ocsp(staple)
        status = ocsp.get("cert_status", ocsp.get("response_status"))
        out(f"* OCSP staple: {status}" + (f", produced {ocsp['produced_at']}" if "produced_at" in ocsp else "")
            + (f", next update {ocsp['next_update']}" if ocsp.get("next_update") else "")
            + (f", signer {ocsp['signer']}" if "signer" in ocsp else "")
            + (f", revoked at {ocsp['revoked_at']} ({ocsp.get('reason')})" if "revoked_at" in ocsp else ""))
    elif done is not None:
        out("* OCSP staple: none")
    if trace.tickets:
        lifetimes = sorted({t.ticket.lifetime for t in trace.tickets})
        early = max(t.max_early_data_size for t in trace.tickets)
        out(f"* Session tickets: {len(trace.tickets)} (lifetime {', '.join(map(str, lifetimes))} s"
            + (f", 0-RTT up to {early} bytes)" if early else ", no 0-RTT)"))
    elif done is not None:
        out("* Session tickets: none received")
    for note in trace.tls.notes:
        out(f"* note: {note}")
    if trace.failure is not None:
        out(f"! Handshake failed ({trace.failure}): {trace.error}")


def render_probe(report: ProbeReport, out: Callable[[str], None]) -> None:
    render_trace(report.first, report.now, out)
    if report.options.resume or report.options.early_data:
        what = "0-RTT" if report.options.early_data else "Resumption"
        if report.second is None:
            out(f"* {what}: {report.second_note or 'not tried (the first handshake failed)'}")
        else:
            out("")
            out(f"* {what}: second connection")
            render_trace(report.second, report.now, out)
            done = report.second.negotiated
            if done is not None:
                verdict = "resumed" if done.resumed else "NOT resumed (full handshake)"
                if report.options.early_data:
                    verdict += ", 0-RTT " + ("accepted" if done.early_data_accepted else "rejected")
                out(f"* {what}: {verdict}")
