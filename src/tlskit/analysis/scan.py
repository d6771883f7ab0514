"""``tlskit scan``: what a server accepts, enumerated with a bounded number of connections (like nmap's
``ssl-enum-ciphers``): protocol versions (TLS 1.0/1.1 flagged as deprecated by RFC 8996), TLS 1.3 suites,
groups (hybrids included), signature schemes, HelloRetryRequest behaviour, TLS 1.2 suites in server order,
and from one full handshake: ALPN, OCSP stapling, ticket lifetime, certificate expiry; then a grade."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import ClientConfig
from ..enums import CipherSuite, NamedGroup, ProtocolVersion, SignatureScheme
from ..errors import CertificateError, ConfigError
from ..pki.verify import TrustStore, verify_server_chain
from .certinfo import describe_certificate, describe_ocsp
from .clienthello import TLS12_SUITES, Answer, HelloSpec, fetch_legacy_chain, send_hello
from .handshake import HandshakeTrace, run_handshake
from .summary import version_name

__all__ = ["EXIT_CONNECT", "EXIT_INCOMPLETE", "EXIT_OK", "EXIT_WEAK", "ScanOptions", "ScanReport", "render_scan",
           "scan", "scan_json"]

EXIT_OK = 0  # grade A or B
EXIT_WEAK = 1  # grade C or worse (deprecated versions, weak suites, certificate problems)
EXIT_CONNECT = 3  # nothing answered
EXIT_INCOMPLETE = 4  # grade A or B so far, but the connection budget ran out before every check

SUITES_13 = (0x1301, 0x1302, 0x1303, 0x1304, 0x1305)
GROUPS = (NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1, NamedGroup.secp521r1, NamedGroup.x448,
          NamedGroup.X25519MLKEM768, NamedGroup.ffdhe2048, NamedGroup.ffdhe3072)
SCHEMES = (
    SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384,
    SignatureScheme.ecdsa_secp521r1_sha512, SignatureScheme.ed25519, SignatureScheme.ed448,
    SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512,
    SignatureScheme.rsa_pss_pss_sha256,
)
VERSIONS = (ProtocolVersion.TLS1_3, ProtocolVersion.TLS1_2, ProtocolVersion.TLS1_1, ProtocolVersion.TLS1_0)
_GRADES = "ABCDEF"


@dataclass(frozen=True, kw_only=True, slots=True)
class ScanOptions:
    host: str
    port: int = 443
    sni: str | None = None
    cafile: str | None = None
    timeout: float = 5.0
    max_connections: int = 60
    tls12_rounds: int = 21  # TLS 1.2 suites enumerated in preference order, one connection each (20 known)


@dataclass(kw_only=True, slots=True)
class ScanReport:
    options: ScanOptions
    versions: dict[str, Answer] = field(default_factory=dict)
    suites13: dict[str, Answer] = field(default_factory=dict)
    groups: dict[str, Answer] = field(default_factory=dict)
    schemes: dict[str, Answer] = field(default_factory=dict)
    suites12: list[str] = field(default_factory=list)
    tls12_server_order: bool | None = None  # the server picks by its own order (None: not tested)
    full: HandshakeTrace | None = None
    legacy_chain: tuple[bytes, ...] = ()  # a TLS 1.2-only server's chain, read from its plaintext Certificate
    unchecked: str | None = None  # why the certificate could not be looked at
    unresolved: str | None = None  # "cannot resolve HOST: ...": nothing was scanned
    trusted: str | None = None  # None when the chain verified, else why not
    connections: int = 0
    skipped: list[str] = field(default_factory=list)
    findings: list[tuple[str, str]] = field(default_factory=list)  # (grade cap, reason)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def grade(self) -> str:
        """A (best) to F from the findings; "-" when no version was accepted: nothing answered to grade."""
        if not any(a.accepted for a in self.versions.values()):
            return "-"
        worst = max((_GRADES.index(g) for g, _ in self.findings), default=0)
        return _GRADES[worst]

    @property
    def complete(self) -> bool:
        """Every check ran: an untested check is no pass, so a grade without them is provisional (at best). The
        certificate left unchecked (tlskit's client could not finish a handshake) is one of them."""
        return not self.not_tested

    @property
    def not_tested(self) -> list[str]:
        """The checks left out: by the connection budget, and the certificate when it could not be looked at."""
        return self.skipped + ([self.unchecked] if self.unchecked is not None else [])

    @property
    def exit_status(self) -> int:
        if not any(a.accepted for a in self.versions.values()):
            return EXIT_CONNECT
        if self.grade not in "AB":
            return EXIT_WEAK  # untested checks can only lower it
        return EXIT_OK if self.complete else EXIT_INCOMPLETE


class _Budget:
    def __init__(self, report: ScanReport) -> None:
        self.report = report

    def hello(self, label: str, spec: HelloSpec) -> Answer | None:
        report = self.report
        if report.connections >= report.options.max_connections:
            report.skipped.append(label)
            return None
        report.connections += 1
        return send_hello(report.options.host, report.options.port, spec, timeout=report.options.timeout)


def scan(options: ScanOptions, progress: Callable[[str], None] | None = None) -> ScanReport:
    """Raises ConfigError, before any connection, for a ``cafile`` that cannot be used."""
    trust = TrustStore.from_pem_file(options.cafile) if options.cafile else None
    report = ScanReport(options=options)
    try:  # once, not once per version: four "Name or service not known" lines read as four refusals
        socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:  # UnicodeError: a name IDNA cannot encode (an empty or long label)
        report.unresolved = f"cannot resolve {options.host}: {getattr(e, 'strerror', None) or e}"
        return report
    budget = _Budget(report)
    sni = options.host if options.sni is None else (options.sni or None)
    say = progress or (lambda _: None)
    say("protocol versions")
    for version in VERSIONS:  # TLS 1.3 offers every suite and group the later probes ask about, one share
        spec = HelloSpec(version=version, server_name=sni, suites=SUITES_13, groups=GROUPS) \
            if version == ProtocolVersion.TLS1_3 else HelloSpec(version=version, server_name=sni)
        answer = budget.hello(version_name(version), spec)
        if answer is not None:
            report.versions[version_name(version)] = answer
    first = report.versions.get("TLSv1.0")
    if first is not None and first.kind in ("connect", "timeout") and all(
            a.kind in ("connect", "timeout") for a in report.versions.values()):
        return report
    tls13 = _accepts(report.versions.get("TLSv1.3"), ProtocolVersion.TLS1_3)
    if tls13:
        say("TLS 1.3 cipher suites")
        for suite in SUITES_13:
            answer = budget.hello(CipherSuite(suite).name, HelloSpec(server_name=sni, suites=[suite], groups=GROUPS))
            if answer is not None:
                report.suites13[CipherSuite(suite).name] = answer
        say("groups")
        for group in GROUPS:  # no key share: a server that supports the group answers with a HelloRetryRequest
            answer = budget.hello(group.name, HelloSpec(server_name=sni, groups=[group], key_shares=[],
                                                        suites=SUITES_13))
            if answer is not None:
                report.groups[group.name] = answer
        say("signature schemes")
        for scheme in SCHEMES:
            answer = budget.hello(scheme.name, HelloSpec(server_name=sni, signature_algorithms=[scheme],
                                                         suites=SUITES_13, groups=GROUPS))
            if answer is not None:
                report.schemes[scheme.name] = answer
    if _accepts(report.versions.get("TLSv1.2"), ProtocolVersion.TLS1_2):
        say("TLS 1.2 cipher suites")
        _enumerate_tls12(report, budget, sni)
        if not tls13 and report.connections < options.max_connections:  # no TLS 1.3 handshake to take it from
            say("certificate")
            report.connections += 1
            spec = HelloSpec(version=ProtocolVersion.TLS1_2, server_name=sni)
            report.legacy_chain, why = fetch_legacy_chain(options.host, options.port, spec, timeout=options.timeout)
            report.trusted = _verify_chain(report.legacy_chain, sni, trust, report.now) \
                if report.legacy_chain else f"no certificate received ({why})"
    if tls13 and report.connections < options.max_connections:
        say("full handshake")
        report.connections += 1
        try:
            config = ClientConfig(server_name=sni, verify_peer=False, request_ocsp=True, alpn=("h2", "http/1.1"))
        except ConfigError:
            config = ClientConfig(verify_peer=False, request_ocsp=True, alpn=("h2", "http/1.1"))
        report.full = run_handshake(options.host, options.port, config, timeout=options.timeout, linger=0.3)
        if report.full.peer_chain():
            report.trusted = _verify(report.full, sni, trust, report.now)
        elif report.full.error:  # tlskit's client could not finish (a CCM- or X448-only server): no verdict
            report.unchecked = f"certificate not checked: tlskit's client could not complete a handshake " \
                               f"({report.full.error})"
    _grade(report)
    return report


def _enumerate_tls12(report: ScanReport, budget: _Budget, sni: str | None) -> None:
    """The TLS 1.2 suites the server accepts, most preferred first: offer all, drop the one it picks, again. Then
    one hello with the first two swapped tells whether that order is the server's or follows ours."""
    remaining = list(TLS12_SUITES)
    picked: list[int] = []
    for _ in range(report.options.tls12_rounds):
        answer = budget.hello("TLS 1.2 suites", HelloSpec(version=ProtocolVersion.TLS1_2, server_name=sni,
                                                          suites=remaining))
        if answer is None or answer.kind != "server_hello" or answer.cipher_suite not in remaining:
            break
        picked.append(answer.cipher_suite)
        remaining.remove(answer.cipher_suite)
        if not remaining:
            break
    report.suites12 = [TLS12_SUITES[s] for s in picked]
    if len(picked) >= 2:
        answer = budget.hello("TLS 1.2 suite order", HelloSpec(version=ProtocolVersion.TLS1_2, server_name=sni,
                                                               suites=[picked[1], picked[0]]))
        if answer is not None and answer.kind == "server_hello":
            report.tls12_server_order = answer.cipher_suite == picked[0]


def _accepts(answer: Answer | None, version: int) -> bool:
    """The server agreed to ``version``: a ServerHello, or a HelloRetryRequest (TLS 1.3 only, §4.1.4)."""
    return answer is not None and answer.accepted and answer.version == version


def _verify(trace: HandshakeTrace, sni: str | None, trust: TrustStore | None, now: dt.datetime) -> str | None:
    chain = trace.peer_chain()
    if not chain:
        return f"no certificate received ({trace.error or 'handshake failed'})"
    return _verify_chain(chain, sni, trust, now)


def _verify_chain(chain: Sequence[bytes], sni: str | None, trust: TrustStore | None,
                  now: dt.datetime) -> str | None:
    try:
        verify_server_chain(chain, server_name=sni, trust=trust or TrustStore.system(), now=now)
    except (CertificateError, ConfigError) as e:
        return e.message if isinstance(e, CertificateError) else str(e)
    return None


def _grade(report: ScanReport) -> None:
    add = report.findings.append
    if not any(a.accepted for a in report.versions.values()):
        return  # nothing speaks TLS here: nothing to grade
    for name in ("TLSv1.0", "TLSv1.1"):
        answer = report.versions.get(name)
        if answer is not None and answer.kind == "server_hello" and version_name(answer.version or 0) == name:
            add(("C", f"{name} is enabled: deprecated by RFC 8996"))
    if not _accepts(report.versions.get("TLSv1.3"), ProtocolVersion.TLS1_3):
        add(("B", "TLS 1.3 is not supported"))
    for suite in report.suites12:
        if "3DES" in suite or "RC4" in suite:
            add(("F" if "RC4" in suite else "C", f"weak TLS 1.2 suite {suite}"))
        elif suite.startswith("TLS_RSA_"):
            add(("B", f"TLS 1.2 suite without forward secrecy: {suite}"))
    if report.trusted is not None:
        add(("F", f"certificate not trusted: {report.trusted}"))
    chain = report.full.peer_chain() if report.full is not None else report.legacy_chain
    if chain:
        leaf = describe_certificate(chain[0], report.now)
        if "days_left" in leaf and 0 <= leaf["days_left"] < 14:
            add(("B", f"certificate expires in {leaf['days_left']} days"))


def _answer_json(answer: Answer) -> dict[str, Any]:
    return {"accepted": answer.accepted, "kind": answer.kind,
            "version": version_name(answer.version) if answer.version else None,
            "cipher_suite": CipherSuite(answer.cipher_suite).name if answer.cipher_suite is not None else None,
            "group": answer.group.name if answer.group is not None else None,
            "alert": answer.alert.name if answer.alert is not None else None,
            "cookie": answer.cookie, "detail": answer.detail or None}


def _hrr(report: ScanReport) -> dict[str, Any]:
    retries = [a for a in report.groups.values() if a.kind == "hello_retry"]
    return {"sends_hello_retry_request": bool(retries), "cookie": any(a.cookie for a in retries)}


def _full(report: ScanReport) -> dict[str, Any] | None:
    trace = report.full
    if trace is None:
        return None
    staple = trace.ocsp_staple()
    chain = trace.peer_chain()
    done = trace.negotiated
    return {
        "ok": trace.ok,
        "error": trace.error,
        "alpn": done.alpn if done else None,
        "ocsp_staple": describe_ocsp(staple) if staple else None,
        "ticket_lifetimes": sorted({t.ticket.lifetime for t in trace.tickets}),
        "early_data_offered": max((t.max_early_data_size for t in trace.tickets), default=0),
        "early_data_accepted": "not tested: tlskit's client cannot send 0-RTT yet",
        "certificate": describe_certificate(chain[0], report.now) if chain else None,
        "trusted": None if report.unchecked else report.trusted is None,
        "trust_error": report.trusted or report.unchecked,
    }


def _legacy(report: ScanReport) -> dict[str, Any] | None:
    """The certificate of a server without TLS 1.3 (from its TLS 1.2 Certificate message)."""
    if report.full is not None or not report.suites12:
        return None
    chain = report.legacy_chain
    return {"certificate": describe_certificate(chain[0], report.now) if chain else None,
            "trusted": report.trusted is None, "trust_error": report.trusted}


def scan_json(report: ScanReport) -> dict[str, Any]:
    return {
        "host": report.options.host,
        "port": report.options.port,
        "grade": report.grade,
        "grade_complete": report.complete,
        "findings": [{"grade": g, "reason": r} for g, r in report.findings],
        "versions": {k: _answer_json(v) for k, v in report.versions.items()},
        "deprecated_versions_enabled": [f.split()[0] for g, f in report.findings if "RFC 8996" in f],
        "tls13_suites": {k: _answer_json(v) for k, v in report.suites13.items()},
        "groups": {k: _answer_json(v) for k, v in report.groups.items()},
        "signature_schemes": {k: _answer_json(v) for k, v in report.schemes.items()},
        "hello_retry": _hrr(report),
        "tls12_suites": report.suites12,
        "tls12_server_order": report.tls12_server_order,
        "handshake": _full(report),
        "tls12_certificate": _legacy(report),
        "connections": report.connections,
        "not_tested": report.not_tested,
        "error": report.unresolved,
    }


def render_scan(report: ScanReport, out: Callable[[str], None]) -> None:
    data = scan_json(report)
    if report.unresolved is not None:
        out(f"{report.options.host}:{report.options.port}: {report.unresolved}")
        return
    out(f"{report.options.host}:{report.options.port}")
    out("  protocol versions:")
    for name, answer in report.versions.items():
        ok = answer.accepted and version_name(answer.version or 0) == name
        verdict = "accepted" if ok else f"refused ({answer.alert.name if answer.alert else answer.kind})"
        if answer.kind in ("connect", "timeout") and answer.detail:  # "Name or service not known": no server
            verdict = f"no answer ({answer.kind}: {answer.detail})"
        deprecated = "  <- deprecated (RFC 8996)" if ok and name in ("TLSv1.0", "TLSv1.1") else ""
        out(f"    {name}: {verdict}{deprecated}")
    if report.suites13:
        out("  TLSv1.3 cipher suites:")
        for name, answer in report.suites13.items():
            out(f"    {name}: {'accepted' if answer.accepted else 'refused'}")
    if report.groups:
        accepted = [n for n, a in report.groups.items() if a.accepted]
        out(f"  groups: {', '.join(accepted) or 'none'}")
        out(f"    refused: {', '.join(n for n, a in report.groups.items() if not a.accepted) or 'none'}")
    if report.schemes:
        out(f"  signature schemes: {', '.join(n for n, a in report.schemes.items() if a.accepted) or 'none'}")
    hrr = data["hello_retry"]
    if report.groups:
        out(f"  HelloRetryRequest: {'yes' if hrr['sends_hello_retry_request'] else 'no'}"
            + (" (with cookie)" if hrr["cookie"] else ""))
    if report.suites12:
        order = {True: "the server's order", False: "the client's order: the server follows it",
                 None: "order not tested"}[report.tls12_server_order]
        out(f"  TLSv1.2 cipher suites ({order}):")
        for suite in report.suites12:
            out(f"    {suite}")
    legacy = data["tls12_certificate"]
    if legacy is not None:
        cert = legacy["certificate"]
        if cert and "days_left" in cert:
            out(f"  certificate (TLS 1.2): {cert['subject']}, {cert['key']}, expires {cert['not_after']} "
                f"({cert['days_left']} days)")
        out(f"  trusted: {'yes' if legacy['trusted'] else 'NO: ' + str(legacy['trust_error'])}")
    full = data["handshake"]
    if full is not None:
        out(f"  ALPN (offered h2, http/1.1): {full['alpn'] or 'none'}")
        staple = full["ocsp_staple"]
        out(f"  OCSP stapling: {staple.get('cert_status', staple.get('response_status')) if staple else 'no'}")
        lifetimes = full["ticket_lifetimes"]
        out(f"  session tickets: {', '.join(f'{x} s' for x in lifetimes) if lifetimes else 'none'}"
            + (f"; 0-RTT offered up to {full['early_data_offered']} bytes" if full["early_data_offered"] else ""))
        cert = full["certificate"]
        if cert and "days_left" in cert:
            out(f"  certificate: {cert['subject']}, {cert['key']}, expires {cert['not_after']} "
                f"({cert['days_left']} days)")
        if not full["ok"]:
            out(f"  full handshake with tlskit's client: FAILED ({full['error']})")
        trusted = full["trusted"]
        verdict = "not checked" if trusted is None else "yes" if trusted else f"NO: {full['trust_error']}"
        out(f"  trusted: {verdict}")
    out(f"  connections used: {report.connections}"
        + (f" (budget reached; not tested: {', '.join(report.skipped)})" if report.skipped else ""))
    for grade, reason in report.findings:
        out(f"  [{grade}] {reason}")
    if report.grade == "-":
        out("  grade: - (no TLS version was accepted: nothing to grade)")
    elif not report.complete:
        left = [f"{len(report.skipped)} check(s) not tested within --max-connections"] if report.skipped else []
        left += [report.unchecked] if report.unchecked is not None else []
        out(f"  grade: {report.grade} (provisional: at best {report.grade}; {'; '.join(left)})")
    else:
        out(f"  grade: {report.grade}")
