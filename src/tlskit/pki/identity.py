"""Who the peer is: subject, DNS/IP/URI SANs and the SPIFFE ID of an X.509-SVID, and an allow-list of them.

SPIFFE IDs follow the SPIFFE ID spec (``spiffe://trust-domain/path``: lower-case trust domain of
``[a-z0-9.-_]``, path segments of ``[A-Za-z0-9.-_]``, no empty, ``.`` or ``..`` segment, no query,
fragment, port or user info). An X.509-SVID carries exactly one URI SAN, its SPIFFE ID.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..enums import AlertDescription
from ..errors import CertificateError, ConfigError
from .pinning import spki_sha256

__all__ = ["PeerIdentity", "SpiffeAllowList", "SpiffeId", "parse_spiffe_id", "peer_identity"]

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed SPIFFE ID: ``spiffe://{trust_domain}{path}`` (path empty or starting with ``/``)."""

    trust_domain: str
    path: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse and validate a SPIFFE ID; ValueError says which rule of the SPIFFE ID spec it breaks."""
    if len(text.encode()) > _MAX_LENGTH:
        raise ValueError(f"SPIFFE ID is longer than {_MAX_LENGTH} bytes")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme != "spiffe":
        raise ValueError(f"{text!r} is not a SPIFFE ID: it must start with 'spiffe://' (lower case)")
    domain, slash, path = rest.partition("/")
    if not domain:
        raise ValueError(f"SPIFFE ID {text!r} has no trust domain")
    if not _TRUST_DOMAIN.fullmatch(domain):
        raise ValueError(f"SPIFFE ID {text!r}: trust domain {domain!r} may hold only lower-case letters, "
                         "digits, '.', '-' and '_' (no port, user info or upper case)")
    if not slash:
        return SpiffeId(domain, "")
    for segment in path.split("/"):
        if not segment:
            raise ValueError(f"SPIFFE ID {text!r} has an empty path segment or a trailing '/'")
        if segment in (".", ".."):
            raise ValueError(f"SPIFFE ID {text!r} has a '{segment}' path segment")
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(f"SPIFFE ID {text!r}: path segment {segment!r} may hold only letters, digits, "
                             "'.', '-' and '_' (no query or fragment)")
    return SpiffeId(domain, "/" + path)


@dataclass(frozen=True, kw_only=True, slots=True)
class PeerIdentity:
    """What an application may base authorisation on, taken from a verified leaf certificate."""

    subject: str  # RFC 4514
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    uris: tuple[str, ...]
    spiffe_id: str | None  # the one valid spiffe:// URI SAN, else None
    serial: int
    spki_sha256: str  # base64, as pinned by tlskit.pki.pinning


def peer_identity(cert: x509.Certificate) -> PeerIdentity:
    """The identity of a (verified) leaf certificate: subject, SANs and SPIFFE ID."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        dns, ips, uris = (), (), ()
    spiffe = [uri for uri in uris if uri.lower().startswith("spiffe://")]
    spiffe_id = None
    if len(spiffe) == 1 and len(uris) == 1:  # X.509-SVID §2: exactly one URI SAN
        try:
            spiffe_id = str(parse_spiffe_id(spiffe[0]))
        except ValueError:
            spiffe_id = None
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return PeerIdentity(
        subject=cert.subject.rfc4514_string(),
        common_name=str(common[0].value) if common else None,
        dns_names=dns, ip_addresses=ips, uris=uris, spiffe_id=spiffe_id, serial=cert.serial_number,
        spki_sha256=spki_sha256(cert),
    )


class SpiffeAllowList:
    """SPIFFE IDs a peer may have: exact IDs or patterns (Istio AuthorizationPolicy ``principals`` style).

    In a pattern the trust domain is matched exactly; each path segment is matched on its own, where
    ``*`` (or a glob such as ``web-*``) stays within one segment, and a final ``/**`` matches any number of
    further segments: ``spiffe://cluster.local/ns/*/sa/web``, ``spiffe://cluster.local/ns/prod/**``.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(patterns)
        if not self.patterns:
            raise ConfigError("a SPIFFE allow-list needs at least one ID or pattern (or use no allow-list)")
        self._compiled = [self._compile(p) for p in self.patterns]

    @staticmethod
    def _compile(pattern: str) -> tuple[str, tuple[str, ...], bool]:
        scheme, sep, rest = pattern.partition("://")
        domain, _, path = rest.partition("/")
        if not sep or scheme != "spiffe" or not _TRUST_DOMAIN.fullmatch(domain):
            raise ConfigError(f"SPIFFE pattern {pattern!r} must look like spiffe://trust.domain/path "
                              "(wildcards only in the path)")
        segments = tuple(path.split("/")) if path else ()
        recursive = bool(segments) and segments[-1] == "**"
        if recursive:
            segments = segments[:-1]
        for segment in segments:
            if not segment or "**" in segment or not re.fullmatch(r"[A-Za-z0-9._*?\[\]!-]+", segment):
                raise ConfigError(f"SPIFFE pattern {pattern!r}: bad path segment {segment!r} "
                                  "('**' is allowed only as the last segment)")
        return domain, segments, recursive

    def matches(self, spiffe_id: str | None) -> bool:
        """Whether ``spiffe_id`` (a valid SPIFFE ID) is allowed."""
        if spiffe_id is None:
            return False
        try:
            parsed = parse_spiffe_id(spiffe_id)
        except ValueError:
            return False
        segments = tuple(parsed.path.split("/")[1:]) if parsed.path else ()
        for domain, pattern, recursive in self._compiled:
            if domain != parsed.trust_domain:
                continue
            if len(segments) < len(pattern) or (len(segments) > len(pattern) and not recursive):
                continue
            if all(fnmatch.fnmatchcase(seg, pat) for seg, pat in zip(segments, pattern, strict=False)):
                return True
        return False

    def check(self, cert: x509.Certificate) -> PeerIdentity:
        """The peer's identity if its SPIFFE ID is allowed; else ``access_denied`` (RFC 8446 §6.2)."""
        identity = peer_identity(cert)
        if identity.spiffe_id is None:
            found = ", ".join(identity.uris) or "no URI SAN"
            raise CertificateError(AlertDescription.access_denied,
                                   f"peer certificate {identity.subject!r} has no SPIFFE ID (exactly one "
                                   f"spiffe:// URI SAN; found {found})")
        if not self.matches(identity.spiffe_id):
            raise CertificateError(AlertDescription.access_denied,
                                   f"SPIFFE ID {identity.spiffe_id} is not allowed (allowed: "
                                   f"{', '.join(self.patterns)})")
        return identity
