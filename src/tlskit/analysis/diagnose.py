"""``tlskit diagnose``: the root cause of TLS handshake failures, from a live server (running the probes
needed to tell causes apart), from saved ``openssl s_client`` output, or from HAProxy logs.

Every finding names one cause of :data:`CAUSES`, with the line that shows it and the fix.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import CertifiedKey, ClientConfig
from ..enums import AlertDescription, HandshakeType, NamedGroup, ProtocolVersion
from ..errors import CertificateError, ConfigError
from ..pki.verify import TrustStore, verify_server_chain
from .certinfo import describe_certificate, describe_ocsp
from .clienthello import Answer, HelloSpec, send_hello
from .handshake import HandshakeTrace, run_handshake
from .summary import version_name

__all__ = ["CAUSES", "Diagnosis", "Finding", "diagnose_haproxy", "diagnose_live", "diagnose_s_client",
           "diagnosis_json", "render_diagnosis"]


@dataclass(frozen=True, slots=True)
class Cause:
    title: str
    fix: str


CAUSES: dict[str, Cause] = {
    "cipher_mismatch": Cause("no common cipher suite or group",
                             "offer/enable a shared TLS 1.3 suite and group (TLS_AES_128_GCM_SHA256, x25519 or "
                             "secp256r1); check `ciphersuites`/`groups` on both sides"),
    "version_mismatch": Cause("no common protocol version",
                              "make the versions overlap: compare the server's (ssl-min-ver/ssl-max-ver, "
                              "ssl_protocols, MinProtocol) with the client's; TLS 1.2 and 1.3 on both is safest"),
    "server_lacks_version": Cause("the server does not speak the version the client offers (TLS 1.3)",
                                  "enable TLS 1.3 on the server (or allow TLS 1.2 on the client); check "
                                  "ssl-max-ver/ssl_protocols/MaxProtocol on the server"),
    "client_lacks_version": Cause("the client offers only versions the server refuses (TLS 1.2 or older)",
                                  "allow TLS 1.3 on the client (or TLS 1.2 on the server); check the client's "
                                  "maximum version (-tls1_2, MaxProtocol) and the server's ssl-min-ver/MinProtocol"),
    "legacy_only": Cause("server speaks only TLS 1.0/1.1 (deprecated, RFC 8996)",
                         "upgrade the server's TLS library/config to TLS 1.2+ and preferably 1.3"),
    "expired": Cause("certificate expired", "renew the certificate (and automate renewal, e.g. ACME)"),
    "not_yet_valid": Cause("certificate not yet valid (clock skew?)",
                           "fix the clock (NTP) on the client or server, or wait until notBefore"),
    "unknown_ca": Cause("certificate issued by an unknown CA",
                        "use a certificate from a CA the clients trust, or give clients the CA (--cafile)"),
    "missing_intermediate": Cause("intermediate certificate missing from the chain",
                                  "serve the full chain (leaf then intermediates: fullchain.pem)"),
    "hostname_mismatch": Cause("certificate does not name the host",
                               "reissue with the host in subjectAltName, or connect with the right SNI/name"),
    "plain_http": Cause("no TLS on this port (plain HTTP or another protocol answered)",
                        "use the TLS port, or enable TLS on this listener (https:// vs http:// mix-up)"),
    "no_certificate": Cause("server sent no certificate",
                            "configure a certificate for this listener/SNI name"),
    "client_cert_required": Cause("server requires a client certificate",
                                  "present a client certificate (--cert/--key) issued by a CA the server trusts"),
    "client_cert_rejected": Cause("server rejected the client certificate",
                                  "use a client certificate from the CA the server trusts (its ca-file), "
                                  "not expired, with clientAuth EKU"),
    "server_cert_rejected": Cause("the client rejected the server's certificate",
                                  "the clients must trust the CA that issued it (their CA bundle) and the server "
                                  "must send its full chain (leaf then intermediates: fullchain.pem) with the name "
                                  "they connect to in subjectAltName; the client's log says which"),
    "revoked": Cause("certificate revoked", "replace the revoked certificate (on a server, also remove the stale "
                                            "OCSP staple)"),
    "middlebox": Cause("middlebox interference (TLS 1.3 hello reset/mangled while TLS 1.2 works)",
                       "update or bypass the interfering proxy/firewall/IDS; ask its vendor for TLS 1.3 support"),
    "connection_refused": Cause("nothing listens on the port", "check host, port and that the service runs"),
    "unresolvable": Cause("the host name does not resolve", "check the name's spelling and DNS (dig/getent hosts)"),
    "timeout": Cause("no answer in time (filtered port or stalled handshake)",
                     "check firewalls and that the server completes handshakes (load, timeouts)"),
    "client_closed_handshake": Cause("the client closed the connection during the handshake",
                                     "check the client's log: it probably refused this server's certificate "
                                     "(untrusted CA, incomplete chain, wrong name) or protocol; scanners and "
                                     "health checks that only open a connection do this too"),
    "handshake_failure_unlogged": Cause("handshake failure without a logged reason",
                                        "HAProxy < 2.7 logs no reason: add an error-log-format with "
                                        "%[ssl_fc_err_str] and %[ssl_c_err] (2.7+), or run `tlskit diagnose "
                                        "HOST:PORT`"),
    "unknown": Cause("unrecognised failure", "look at the example line; run `tlskit probe HOST:PORT`"),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    cause: str
    example: str  # the line (or probe result) that shows it
    detail: str = ""
    source: str = ""  # "run 3", "line 17", "probe"


@dataclass(kw_only=True, slots=True)
class Diagnosis:
    source: str
    findings: list[Finding] = field(default_factory=list)
    healthy: int = 0  # runs/lines/probes that show no failure
    probes: list[str] = field(default_factory=list)  # live mode: what was tried
    recognised: int | None = None  # logs: the lines in the expected format (0: not this kind of log)

    def counts(self) -> list[tuple[str, int]]:
        return Counter(f.cause for f in self.findings).most_common()

    @property
    def exit_status(self) -> int:
        """0 no failure found, 1 failures found and explained, 3 no input line recognised, 4 failures we could
        not explain."""
        if self.recognised == 0:
            return 3
        if not self.findings:
            return 0
        return 4 if all(f.cause == "unknown" for f in self.findings) else 1


# --- OpenSSL text (s_client output, HAProxy error strings) ---------------------------------------

Side = Literal["client", "server"]  # which end of the handshake wrote the text

# Most specific first: a run matching several (e.g. a verify error and the alert it caused) takes the first.
# Each rule names the cause as the client sees it (s_client output) and as the server sees it (a HAProxy log):
# OpenSSL's "alert X" reasons are alerts *received*, so in a server's log they are the client's complaint about
# the server, and in s_client output the server's complaint about the client.
_RULES: list[tuple[str, str, re.Pattern[str]]] = [
    (as_client, as_server, re.compile(pattern, re.IGNORECASE)) for as_client, as_server, pattern in (
        ("revoked", "revoked", r"certificate revoked|Cert Status: revoked|verify error:num=23:"),
        ("not_yet_valid", "not_yet_valid", r"verify error:num=9:|certificate is not yet valid"),
        ("expired", "expired", r"verify error:num=10:|certificate has expired|alert certificate expired"),
        ("hostname_mismatch", "hostname_mismatch", r"verify error:num=62:|hostname mismatch"),
        ("missing_intermediate", "missing_intermediate", r"verify error:num=21:|"
                                                         r"unable to verify the first certificate"),
        ("unknown_ca", "unknown_ca", r"verify error:num=(?:2|18|19|20):|self[- ]signed certificate|"
                                     r"unable to get local issuer"),
        ("client_cert_required", "client_cert_required", r"alert certificate required|"
                                                         r"peer did not return a certificate|certificate required"),
        ("client_cert_rejected", "client_cert_rejected", r"SSL client certificate not trusted|"
                                                         r"SSL client CA chain cannot be verified"),
        ("client_cert_rejected", "server_cert_rejected", r"alert unknown ca|alert bad certificate|"
                                                         r"alert access denied|alert certificate unknown|"
                                                         r"alert unsupported certificate"),
        # the server's log: the client refused the version the server chose (below the client's minimum)
        ("version_mismatch", "server_lacks_version", r"alert protocol version"),
        ("version_mismatch", "version_mismatch", r"unsupported protocol|no protocols available|wrong ssl version|"
                                                 r"version too low"),
        ("cipher_mismatch", "cipher_mismatch", r"alert handshake failure|no shared cipher|no suitable key share|"
                                               r"no cipher match|no ciphers available|no shared group|"
                                               r"insufficient security"),
        ("plain_http", "plain_http", r"wrong version number|packet length too long|http request|"
                                     r"record layer failure|unknown protocol"),
        ("connection_refused", "connection_refused", r"errno=111|Connection refused"),
        ("middlebox", "middlebox", r"errno=104|Connection reset by peer|unexpected eof while reading"),
        ("timeout", "timeout", r"Timeout during SSL handshake|timed out"),
        ("client_closed_handshake", "client_closed_handshake", r"Connection closed during SSL handshake"),
        ("handshake_failure_unlogged", "handshake_failure_unlogged", r": SSL handshake failure\s*$"),
    )]
# A received alert about a certificate names whose certificate the peer refused.
_RECEIVED_ALERT = re.compile(r"alert (certificate (?:expired|revoked)|unknown ca|bad certificate|access denied|"
                             r"certificate unknown|unsupported certificate)", re.IGNORECASE)

# s_client shows the version it tried in a failed run: "Protocol  : TLSv1.2" (its maximum, in SSL-Session), or
# for TLS 1.3 the early data status.
_OFFERED_BELOW_13 = re.compile(r"^\s*Protocol\s*: (?:TLSv1(?:\.[012])?|SSLv3)\s*$", re.MULTILINE)
_OFFERED_13 = re.compile(r"^Early data was not sent|^\s*Protocol\s*: TLSv1\.3\s*$", re.MULTILINE)
_LEGACY_SUCCESS = re.compile(r"^(?:Protocol version: |\s*Protocol\s*: |New, )(TLSv1(?:\.1)?)(?![.\d])", re.MULTILINE)
_SUCCESS = re.compile(r"^Verification: OK|Verify return code: 0 \(ok\)", re.MULTILINE)
_LEAF_ISSUER_UNKNOWN = re.compile(r"^depth=0 .*\n(?:verify error:num=20:|verify error:num=21:)", re.MULTILINE)
_NOT_BEFORE = re.compile(r"v:NotBefore: (\w{3} +\d+ [\d:]+ \d{4}) GMT")


def classify_text(text: str, side: Side) -> tuple[str, str] | None:
    """(cause, the line showing it) for one block of OpenSSL-style text written by ``side``, or None if it
    shows none."""
    for as_client, as_server, pattern in _RULES:
        for line in text.splitlines():
            if pattern.search(line):
                return (as_client if side == "client" else as_server), line.strip()
    return None


def _received_alert_detail(line: str, side: Side) -> str:
    """Whose certificate a received certificate alert is about, or ""."""
    match = _RECEIVED_ALERT.search(line)
    if match is None:
        return ""
    if side == "client":
        return f"the server sent alert {match.group(1)}: it refused the client certificate"
    return f"the client sent alert {match.group(1)}: it refused this server's certificate"


def _skew(text: str, now: dt.datetime) -> str:
    """How far in the future the leaf's notBefore is (s_client prints it in the chain with -showcerts or
    by default in OpenSSL >= 3.0)."""
    match = _NOT_BEFORE.search(text)
    if not match:
        return ""
    not_before = dt.datetime.strptime(match.group(1), "%b %d %H:%M:%S %Y").replace(tzinfo=dt.UTC)
    seconds = int((not_before - now).total_seconds())
    if seconds <= 0:
        return f"notBefore {not_before:%Y-%m-%d %H:%M:%S}Z has passed since (the client's clock was behind)"
    return f"valid from {not_before:%Y-%m-%d %H:%M:%S}Z: a clock {_duration(seconds)} ahead would accept it"


def _duration(seconds: int) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds} s"


def split_s_client_runs(text: str) -> list[str]:
    """Concatenated ``openssl s_client`` outputs, one string per run (a run starts at ``CONNECTED(`` or
    ``Connecting to``, or at a connect error)."""
    runs: list[list[str]] = []
    starts = re.compile(r"^(?:CONNECTED\(|Connecting to |connect:errno=|\S*:error:.*:connect)")
    previous_start = False
    for line in text.splitlines():
        is_start = bool(starts.match(line))
        if (is_start and not previous_start) or not runs:
            # `>> runs.txt 2>&1`: a run's stderr (depth=, verify error) is written before its buffered stdout,
            # so the lines of that kind that end the previous run are this one's
            carried: list[str] = []
            if runs and line.startswith("CONNECTED("):
                while runs[-1] and _STDERR_LINE.match(runs[-1][-1]):
                    carried.insert(0, runs[-1].pop())
            runs.append(carried)
        previous_start = is_start and line.startswith("Connecting to ")
        runs[-1].append(line)
    return ["\n".join(run) for run in runs if any(r.strip() for r in run)]


_STDERR_LINE = re.compile(r"^(?:depth=\d|verify (?:error|return):|not(?:After|Before)=|Can.t use SSL_get_servername"
                          r"|\S*:error:[0-9A-F]+:)")


def diagnose_s_client(text: str, *, now: dt.datetime | None = None) -> Diagnosis:
    now = now or dt.datetime.now(dt.UTC)
    diagnosis = Diagnosis(source="openssl s_client output")
    for number, run in enumerate(split_s_client_runs(text), 1):
        legacy = _LEGACY_SUCCESS.search(run)
        found = classify_text(run, "client")
        if found is None and legacy is not None:
            found = ("legacy_only", legacy.group(0).strip())
        if found is None:
            if _SUCCESS.search(run) or "CONNECTION ESTABLISHED" in run or "New, TLSv1.3" in run:
                diagnosis.healthy += 1
                continue
            last = next((line for line in reversed(run.splitlines()) if line.strip()), "")
            found = ("unknown", last.strip())
        cause, line = found
        if cause == "unknown_ca" and _LEAF_ISSUER_UNKNOWN.search(run):
            cause = "missing_intermediate"  # the leaf's own issuer is missing: the chain stops at the leaf
        if cause == "version_mismatch":  # which side lacks the other's version tells which fix applies
            if _OFFERED_BELOW_13.search(run):
                cause = "client_lacks_version"
            elif _OFFERED_13.search(run):
                cause = "server_lacks_version"
        detail = _skew(run, now) if cause == "not_yet_valid" else _received_alert_detail(line, "client")
        diagnosis.findings.append(Finding(cause=cause, example=line, detail=detail, source=f"run {number}"))
    return diagnosis


# --- HAProxy logs ------------------------------------------------------------------------------------

# HAProxy's fixed format for failed handshakes (before 2.7, and without error-log-format since):
#   <client ip>:<port> [<accept date>] <frontend>/<bind>: <message>
# after any syslog prefix. Custom error-log-format lines are matched by the OpenSSL reason they carry.
_HAPROXY_LINE = re.compile(r"(?P<client>[\d.:a-fA-F\[\]]+:\d+) \[(?P<date>\d\d/\w{3}/\d{4}:[\d:.]+)\] (?P<rest>.*)$")
# The fixed format's "<frontend>/<bind>: <message>"; other lines (request logs, custom error-log-format) are
# handshake failures only if they carry an OpenSSL error code or say so: frontend names often say "tls".
_HAPROXY_FIXED = re.compile(r"^\S+/\S+: (?P<message>.+)$")
_HAPROXY_CUSTOM_TLS = re.compile(r"SSL handshake|(?:^|[/:( ])[0-9A-F]{8}:[A-Za-z ]")
_HAPROXY_TLS = re.compile(r"SSL|TLS|handshake|certificate|alert|cipher|protocol|error:0A", re.IGNORECASE)


def diagnose_haproxy(lines: Iterable[str]) -> Diagnosis:
    """Classify the SSL handshake failure lines of a HAProxy log; other lines are skipped."""
    diagnosis = Diagnosis(source="HAProxy log", recognised=0)
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        match = _HAPROXY_LINE.search(line)
        if match is None:
            continue
        diagnosis.recognised = (diagnosis.recognised or 0) + 1
        fixed = _HAPROXY_FIXED.match(match.group("rest"))
        if not (_HAPROXY_TLS.search(fixed.group("message")) if fixed else _HAPROXY_CUSTOM_TLS.search(line)):
            continue
        found = classify_text(match.group("rest"), "server")  # HAProxy is the server: alerts came from clients
        cause = found[0] if found is not None else "unknown"
        detail = _received_alert_detail(found[1], "server") if found is not None else ""
        diagnosis.findings.append(Finding(cause=cause, example=line.strip(), detail=detail, source=f"line {number}"))
    return diagnosis


# --- live ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class LiveOptions:
    host: str
    port: int
    sni: str | None = None
    cafile: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = 5.0


def diagnose_live(options: LiveOptions) -> Diagnosis:
    """Run the probes that tell causes apart: a full handshake with tlskit's client (chain verified
    separately, so one connection shows every certificate problem), then crafted hellos as needed."""
    now = dt.datetime.now(dt.UTC)
    # a --cafile that cannot be read is the caller's mistake (ConfigError), found before any connection
    trust = TrustStore.from_pem_file(options.cafile) if options.cafile else None
    sni = options.host if options.sni is None else (options.sni or None)
    diagnosis = Diagnosis(source=f"live {options.host}:{options.port}")
    say = diagnosis.probes.append
    certificate = None
    if options.client_cert:
        certificate = CertifiedKey.from_pem_files(options.client_cert, options.client_key or options.client_cert)
    config = ClientConfig(server_name=sni, verify_peer=False, request_ocsp=True, certificate=certificate)
    trace = run_handshake(options.host, options.port, config, timeout=options.timeout, linger=0.2)
    say(f"tlskit TLS 1.3 handshake: {'completed' if trace.ok else f'{trace.failure}: {trace.error}'}")

    def add(cause: str, example: str, detail: str = "") -> Diagnosis:
        diagnosis.findings.append(Finding(cause=cause, example=example, detail=detail, source="probe"))
        return diagnosis

    if trace.failure == "resolve":  # it was reported as a timeout, with a firewall to check
        return add("unresolvable", trace.error or "")
    if trace.failure == "connect":
        refused = "refused" in (trace.error or "").lower()
        return add("connection_refused" if refused else "timeout", trace.error or "")
    if trace.failure == "timeout" and trace.first_byte_time is None:
        return add("timeout", trace.error or "")
    if trace.received and trace.received[:1] not in (b"\x15", b"\x16"):
        return add("plain_http", f"reply to ClientHello is not TLS: {trace.received[:40]!r}")
    if trace.server_sent(HandshakeType.certificate_request) and not trace.ok:
        alert = trace.alert_received
        if certificate is None:
            return add("client_cert_required", f"server sent CertificateRequest, then alert "
                                               f"{alert.name if alert else trace.error}")
        example = f"client certificate sent, server answered alert {alert.name if alert else trace.error}"
        if alert is AlertDescription.certificate_revoked:
            return add("revoked", example, "the server says the client certificate is revoked")
        if alert is AlertDescription.certificate_expired:
            return add("expired", example, "the server says the client certificate has expired (or its clock "
                                           "is wrong)")
        return add("client_cert_rejected", example)
    if trace.server_sent(HandshakeType.server_hello):
        chain = trace.peer_chain()
        if not chain:
            return add("no_certificate", trace.error or "no Certificate message") if not trace.ok else diagnosis
        _check_certificate(trace, chain, sni, trust, now, add)
        if not diagnosis.findings:
            if trace.ok:
                diagnosis.healthy += 1
            else:
                add("unknown", trace.error or "handshake failed after ServerHello")
        return diagnosis
    # No ServerHello: an alert, a reset or a close right after our ClientHello.
    return _hello_refused(options, sni, trace, add, say)


def _check_certificate(trace: HandshakeTrace, chain: tuple[bytes, ...], sni: str | None, trust: TrustStore | None,
                       now: dt.datetime, add: Callable[[str, str, str], Any]) -> None:
    staple = trace.ocsp_staple()
    if staple:
        ocsp = describe_ocsp(staple)
        if ocsp.get("cert_status") == "revoked":
            add("revoked", f"OCSP staple: revoked at {ocsp.get('revoked_at')} ({ocsp.get('reason')})", "")
    try:
        verify_server_chain(chain, server_name=sni, trust=trust or TrustStore.system(), now=now)
    except ConfigError as e:
        add("unknown", str(e), "")
    except CertificateError as e:
        leaf = describe_certificate(chain[0], now)
        message = e.message
        if "not yet valid" in message:
            add("not_yet_valid", message, f"the leaf is valid from {leaf.get('not_before')}: "
                                          f"{_duration(leaf.get('not_yet_valid_by_seconds', 0))} in the future")
        elif e.description is AlertDescription.certificate_expired:
            add("expired", message, f"leaf notAfter {leaf.get('not_after')}")
        elif e.description is AlertDescription.unknown_ca:
            issuers_missing = len(chain) == 1 and not leaf.get("self_signed")
            add("missing_intermediate" if issuers_missing else "unknown_ca", message, "")
        elif " not '" in message or "is for" in message:
            add("hostname_mismatch", message, "")
        elif e.description is AlertDescription.certificate_revoked:
            add("revoked", message, "")
        else:
            add("unknown", message, "")


def _hello_refused(options: LiveOptions, sni: str | None, trace: HandshakeTrace,
                   add: Callable[..., Diagnosis], say: Callable[[str], None]) -> Diagnosis:
    def probe(label: str, spec: HelloSpec) -> Answer:
        answer = send_hello(options.host, options.port, spec, timeout=options.timeout)
        say(f"{label}: {answer.kind}" + (f" {answer.alert.name}" if answer.alert else "")
            + (f" version {answer.version:#06x}" if answer.version else ""))
        return answer

    wide = probe("TLS 1.3 hello, every suite and group, 1.2 allowed", HelloSpec(
        server_name=sni, suites=(0x1301, 0x1302, 0x1303, 0x1304, 0x1305), also_tls12=True,
        groups=(NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1, NamedGroup.secp521r1,
                NamedGroup.x448, NamedGroup.X25519MLKEM768, NamedGroup.ffdhe2048)))
    example = trace.error or ""
    if wide.kind == "server_hello" and wide.version == ProtocolVersion.TLS1_3:
        return add("cipher_mismatch", example, "the server accepts TLS 1.3 with suite "
                   f"{wide.cipher_suite:#06x} / group {wide.group.name if wide.group else '?'}, "
                   "which tlskit's client did not offer")
    if wide.kind == "hello_retry":
        return add("cipher_mismatch", example, f"the server wants group {wide.group.name if wide.group else '?'}")
    if wide.kind == "server_hello" and (wide.version or 0) < ProtocolVersion.TLS1_2:
        return add("legacy_only", example, f"the server answers only {_version(wide.version)} (RFC 8996)")
    if wide.kind == "server_hello":
        return add("server_lacks_version", example, "the server negotiates TLS 1.2 only; tlskit speaks TLS 1.3")
    tls12 = probe("TLS 1.2 hello (no supported_versions)", HelloSpec(version=ProtocolVersion.TLS1_2,
                                                                     server_name=sni))
    if tls12.kind == "server_hello" and (tls12.version or 0) < ProtocolVersion.TLS1_2:
        return add("legacy_only", example, f"the server answers only {_version(tls12.version)} (deprecated "
                                           "by RFC 8996)")
    if tls12.kind == "server_hello":
        if trace.failure in ("reset", "eof") or wide.kind in ("reset", "eof", "not_tls"):
            return add("middlebox", example, "a TLS 1.3 ClientHello is cut off while a TLS 1.2 one gets a "
                                             "ServerHello: something on the path does not understand TLS 1.3")
        return add("server_lacks_version", example, "the server speaks TLS 1.2 but refuses TLS 1.3 hellos")
    for version in (ProtocolVersion.TLS1_1, ProtocolVersion.TLS1_0):
        old = probe(f"{version.name} hello", HelloSpec(version=version, server_name=sni))
        if old.kind == "server_hello":
            return add("legacy_only", example, f"the server answers only {_version(old.version)} (deprecated "
                                               "by RFC 8996)")
    if trace.alert_received in (AlertDescription.handshake_failure, AlertDescription.insufficient_security):
        return add("cipher_mismatch", example, "every hello was refused with handshake_failure")
    if trace.alert_received is AlertDescription.protocol_version:
        return add("version_mismatch", example, "")
    if trace.failure in ("reset", "eof"):
        return add("middlebox", example, "the connection is cut after every ClientHello")
    return add("unknown", example)


def _version(value: int | None) -> str:
    return version_name(value) if value else "?"


# --- output --------------------------------------------------------------------------------------


def diagnosis_json(diagnosis: Diagnosis) -> dict[str, Any]:
    counts = diagnosis.counts()
    examples = {c: next(f for f in diagnosis.findings if f.cause == c) for c, _ in counts}
    return {
        "source": diagnosis.source,
        "failures": len(diagnosis.findings),
        "healthy": diagnosis.healthy,
        "counts": dict(counts),
        "top": [{"cause": c, "count": n, "title": CAUSES[c].title, "example": examples[c].example,
                 "detail": examples[c].detail, "where": examples[c].source, "fix": CAUSES[c].fix}
                for c, n in counts[:3]],
        "findings": [{"cause": f.cause, "example": f.example, "detail": f.detail, "where": f.source}
                     for f in diagnosis.findings],
        "probes": diagnosis.probes,
        "lines_recognised": diagnosis.recognised,
    }


def render_diagnosis(diagnosis: Diagnosis, out: Callable[[str], None]) -> None:
    data = diagnosis_json(diagnosis)
    if diagnosis.recognised == 0:
        out(f"{data['source']}: no line recognised (expected `<client>:<port> [<date>] <frontend>/<bind>: "
            "<message>` after any syslog prefix): nothing diagnosed")
        return
    recognised = f" in {diagnosis.recognised} recognised line(s)" if diagnosis.recognised is not None else ""
    out(f"{data['source']}: {data['failures']} failure(s){recognised}, {data['healthy']} without failure")
    for probe_line in diagnosis.probes:
        out(f"  probe: {probe_line}")
    if not diagnosis.findings:
        out("no handshake failure found")
        return
    out("causes:")
    for cause, count in diagnosis.counts():
        out(f"  {count:5d}  {cause}: {CAUSES[cause].title}")
    out("top causes:")
    for rank, item in enumerate(data["top"], 1):
        out(f"  {rank}. {item['title']} ({item['count']}x)")
        out(f"     e.g. [{item['where']}] {item['example']}")
        if item["detail"]:
            out(f"     {item['detail']}")
        out(f"     fix: {item['fix']}")
