"""Logging for ``tlskit serve``: the access log (Apache/nginx "combined" plus TLS fields) and JSON lines.

A text access line reads
``127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 14 "-" "curl/8.14" tls=TLSv1.3
suite=TLS_AES_128_GCM_SHA256 group=X25519MLKEM768 sni=localhost alpn=http/1.1 resumed=0 early=0 hs_ms=1.9
client=- rt_ms=0.4``; with ``--log-json`` every log record (access or not) is one JSON object per line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..events import HandshakeComplete
from ..pki.identity import peer_identity

__all__ = ["AccessEntry", "TLSFields", "access_log", "setup_logging"]

access_log = logging.getLogger("tlskit.access")


@dataclass(frozen=True, kw_only=True, slots=True)
class TLSFields:
    """What one connection negotiated; logged with each of its requests."""

    version: str
    suite: str
    group: str
    sni: str
    alpn: str
    resumed: bool
    early_data: bool
    handshake_ms: float
    client: str  # the client certificate's subject CN (mTLS), or "-"
    ktls: str = "off"  # kernel TLS offload: "tx" (records sealed by the kernel, files by sendfile) or "off"
    client_id: str = "-"  # the client certificate's SPIFFE ID (mTLS), or "-"
    client_xfcc: str = ""  # the client certificate as Envoy's X-Forwarded-Client-Cert element, for upstreams

    @classmethod
    def from_handshake(cls, done: HandshakeComplete, handshake_seconds: float) -> TLSFields:
        client_id, xfcc = client_certificate(done.peer_certificates)
        return cls(
            version="TLSv1.3" if done.version.value == 0x0304 else done.version.name,
            suite=done.cipher_suite.name,
            group=done.group.name if done.group is not None else "-",
            sni=done.server_name or "-",
            alpn=done.alpn or "-",
            resumed=done.resumed,
            early_data=done.early_data_accepted,
            handshake_ms=round(handshake_seconds * 1000, 3),
            client=client_identity(done.peer_certificates),
            client_id=client_id,
            client_xfcc=xfcc,
        )


def client_identity(chain: tuple[bytes, ...]) -> str:
    """The leaf's subject common name (else the whole RFC 4514 subject), or "-" without a certificate."""
    if not chain:
        return "-"
    try:
        subject = x509.load_der_x509_certificate(chain[0]).subject
    except ValueError:
        return "-"
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else subject.rfc4514_string()
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def client_certificate(chain: tuple[bytes, ...]) -> tuple[str, str]:
    """(SPIFFE ID or "-", Envoy ``X-Forwarded-Client-Cert`` element: Hash, Subject, URI and DNS SANs)."""
    if not chain:
        return "-", ""
    try:
        identity = peer_identity(x509.load_der_x509_certificate(chain[0]))
    except ValueError:
        return "-", ""
    parts = [f"Hash={hashlib.sha256(chain[0]).hexdigest()}", f'Subject="{_xfcc_quote(identity.subject)}"']
    parts += [f"URI={_xfcc_value(u)}" for u in identity.uris] + [f"DNS={_xfcc_value(d)}" for d in identity.dns_names]
    return identity.spiffe_id or "-", ";".join(parts)


def _xfcc_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _xfcc_value(text: str) -> str:
    return f'"{_xfcc_quote(text)}"' if any(c in text for c in ',;="') else text


@dataclass(frozen=True, kw_only=True, slots=True)
class AccessEntry:
    peer: str  # client address without the port
    time: float
    method: str
    target: str
    http_version: str
    status: int
    size: int
    referer: str
    user_agent: str
    request_ms: float
    tls: TLSFields
    request_line: str | None = None  # logged instead of method, target and version: a request we could not read

    def __str__(self) -> str:
        return self.combined()

    def combined(self) -> str:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(self.time))
        t = self.tls
        line = (f"{_quote(self.method)} {_quote(self.target)} HTTP/{self.http_version}" if self.request_line is None
                else _quote(self.request_line) or "-")
        return (f'{self.peer} - - [{stamp}] "{line}" '
                f'{self.status} {self.size} "{_quote(self.referer)}" "{_quote(self.user_agent)}" '
                f"tls={t.version} suite={t.suite} group={t.group} sni={_token(t.sni)} alpn={_token(t.alpn)} "
                f"resumed={int(t.resumed)} early={int(t.early_data)} hs_ms={t.handshake_ms} "
                f"client={_quote(_utf8(t.client_id if t.client_id != '-' else t.client)).replace(' ', '_')} "
                f"rt_ms={self.request_ms} ktls={t.ktls}")

    def fields(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["tls"] = asdict(self.tls)
        del fields["tls"]["client_xfcc"]
        return fields


def _quote(text: str) -> str:
    """Escape what would break or blur a log line as nginx does, byte by byte with ``\\xHH``: quotes, backslash,
    control characters and every byte from 0x7F (a request's bytes arrive decoded as latin-1, one character per
    byte; text, such as a certificate's subject, goes through ``_utf8`` first)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if " " <= c < "\x7f" and c not in '"\\' else _byte_escaped(c) for c in text) or "-"


def _byte_escaped(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass"))


def _utf8(text: str) -> str:
    """Text as its UTF-8 bytes, one character per byte (for ``_quote``: "ü" is logged ``\\xc3\\xbc``)."""
    return text if text.isascii() else text.encode("utf-8", "surrogatepass").decode("latin-1")


def _token(text: str) -> str:
    """A ``key=value`` field a client chose (SNI): escaped as ``_quote``, spaces too."""
    return _quote(text).replace(" ", "\\x20")


def printable(text: str) -> str:
    """``text`` with control characters (CR, LF, ESC ...) as ``\\xHH``: what a peer put in a log message (its SNI,
    a certificate subject) cannot start a line of its own or drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = getattr(record, "access", None)
        if isinstance(entry, AccessEntry):
            return entry.combined()
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)  # (a traceback, appended after this, keeps its lines)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        """The traceback's own lines kept; an exception's text (which may carry a peer's bytes) on one line."""
        out = []
        for part in traceback.TracebackException(*ei).format():
            if part.startswith(("  ", "\n", "Traceback ")):  # frames, chaining text: structural newlines
                out += [printable(line) for line in part.removesuffix("\n").split("\n")]
            else:
                out.append(printable(part.rstrip("\n")))  # "ValueError: ..." whatever its text holds
        return "\n".join(out)


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}"
                    + time.strftime("%z", time.localtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        entry = getattr(record, "access", None)
        if isinstance(entry, AccessEntry):
            fields = entry.fields()
            del fields["time"]  # one type per key in every line: the ISO "time" above (when it was logged)
            out.update(fields)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def setup_logging(*, json_lines: bool, quiet: bool) -> None:
    """Everything to stderr; ``quiet`` keeps warnings and up (so no access log)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if json_lines else
                         _TextFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
