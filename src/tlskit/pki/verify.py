"""Certificate chain verification for the handshake (RFC 8446 §4.4.2.4, RFC 5280 §6, RFC 6125 §6).

Path building, signatures, CA constraints and EKU are left to ``cryptography.x509.verification``; this
module adds what its single ``VerificationError`` cannot say: the precise alert of RFC 8446 §6.2
(``unknown_ca``, ``certificate_expired``, ``bad_certificate``) and a message naming the fix. When the
verifier refuses a chain we diagnose it ourselves (validity windows, a name-less re-verification, a walk of
the issuer links) instead of parsing its error text.

Successful verdicts are cached (LRU, :data:`CACHE_SIZE` entries) as "valid from S until T", where the
window is the intersection of the verified path's validity periods; a hit re-checks ``now`` against it.

Clock skew: with ``skew=S`` seconds a certificate is accepted from S seconds before its notBefore until S
seconds after its notAfter (peers whose clocks lag or lead ours; the mTLS incident of a client certificate
"not yet valid" on a server whose clock was behind the CA's). The verifier is run at the instant nearest
``now`` at which every presented certificate is valid, which is never more than S from ``now``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ed448, ed25519, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    ServerVerifier,
    Store,
    Subject,
    VerificationError,
)

from ..enums import AlertDescription
from ..errors import CertificateError, ConfigError, TLSError
from .subjectnames import check_subject_constraints

__all__ = ["CACHE_SIZE", "TrustStore", "clear_cache", "verify_client_chain", "verify_client_path",
           "verify_server_chain", "verify_server_path"]

CACHE_SIZE = 1024
_SHA256 = SHA256()
_PEM_MARKER = b"-----BEGIN CERTIFICATE-----"
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSDs
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrustStore:
    """The trust anchors a peer's chain must lead to (RFC 5280 §6.1.1 (d))."""

    roots: tuple[x509.Certificate, ...]
    fingerprint: bytes = field(init=False, repr=False, compare=False)  # SHA-256 over the roots' DER
    store: Store = field(init=False, repr=False, compare=False)
    root_ders: frozenset[bytes] = field(init=False, repr=False, compare=False)  # "is this leaf a root?"

    def __post_init__(self) -> None:
        if not self.roots:
            raise ConfigError("TrustStore needs at least one root certificate")
        digest = hashlib.sha256()
        for root in self.roots:
            digest.update(root.fingerprint(_SHA256))
        object.__setattr__(self, "fingerprint", digest.digest())
        object.__setattr__(self, "store", Store(list(self.roots)))
        object.__setattr__(self, "root_ders", frozenset(root.public_bytes(Encoding.DER) for root in self.roots))

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "PEM data") -> TrustStore:
        """Trust every certificate in a PEM bundle (other PEM blocks, e.g. keys, are skipped)."""
        if _PEM_MARKER not in data:
            hint = " (looks like DER: convert with `openssl x509 -inform der`)" if data[:1] == b"\x30" else ""
            raise ConfigError(f"{source} contains no '{_PEM_MARKER.decode()}' block{hint}; "
                              "give a PEM bundle of CA certificates")
        try:
            roots = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ConfigError(f"{source} is not a valid PEM certificate bundle ({exc}); "
                              "check it with `openssl crl2pkcs7 -nocrl -certfile FILE`") from None
        return cls(roots=tuple(roots))

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str]) -> TrustStore:
        """Trust every certificate in the PEM file at ``path``; ConfigError names the file and the fix."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read trust file {os.fspath(path)!r}: {exc.strerror or exc}; "
                              "give the path of a PEM bundle of CA certificates") from None
        return cls.from_pem(data, source=f"trust file {os.fspath(path)!r}")

    @classmethod
    def system(cls) -> TrustStore:
        """The platform's roots, found as OpenSSL (and so Python's ``ssl`` and curl) finds them:
        ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` when set, else the OS bundle (where ``update-ca-certificates``
        puts local roots), else certifi's bundle. Loaded once per value of those variables."""
        paths = ssl.get_default_verify_paths()
        return _system_store(os.environ.get(paths.openssl_cafile_env), os.environ.get(paths.openssl_capath_env))


@lru_cache(maxsize=8)
def _system_store(cafile_env: str | None, capath_env: str | None) -> TrustStore:
    roots: list[x509.Certificate] = []
    if cafile_env and os.path.isfile(cafile_env):
        roots += _quiet_store(Path(cafile_env).read_bytes(), f"SSL_CERT_FILE {cafile_env!r}").roots
    if capath_env:  # OpenSSL's hashed directory (c_rehash): every certificate file in it, unusable ones skipped
        for directory in capath_env.split(os.pathsep):
            with contextlib.suppress(OSError):
                for entry in sorted(Path(directory).iterdir()):
                    with contextlib.suppress(OSError, ConfigError):
                        if entry.is_file() and entry.stat().st_size < (1 << 20):
                            data = entry.read_bytes()
                            if b"-----BEGIN CERTIFICATE-----" in data:
                                roots += _quiet_store(data, f"{entry}").roots
    if roots:
        return TrustStore(roots=tuple(dict.fromkeys(roots)))
    paths = ssl.get_default_verify_paths()
    candidates = [*_SYSTEM_BUNDLES, paths.cafile or "", paths.openssl_cafile]
    with contextlib.suppress(ImportError):
        import certifi

        candidates.append(certifi.where())
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return _quiet_store(Path(candidate).read_bytes(), f"trust file {candidate!r}")
    raise ConfigError("no system CA bundle found (tried SSL_CERT_FILE, SSL_CERT_DIR, " + ", ".join(_SYSTEM_BUNDLES) +
                      " and certifi); install ca-certificates or certifi, or use TrustStore.from_pem_file()")


def _quiet_store(pem: bytes, source: str) -> TrustStore:
    with warnings.catch_warnings():  # some OS bundles carry roots with negative serials
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return TrustStore.from_pem(pem, source=source)


# --- verification -------------------------------------------------------------------------------------


def _verify_server_chain(
    chain: Sequence[bytes],
    *,
    server_name: str | None,
    trust: TrustStore,
    now: dt.datetime,
    max_chain_depth: int = 8,
    skew: float = 0.0,
) -> tuple[x509.Certificate, ...]:
    """Verify the server's Certificate (leaf DER first, RFC 8446 §4.4.2) and return the path built: the leaf,
    the intermediates it chains through and the trust anchor (only the leaf when the leaf itself is trusted).

    ``server_name`` is a DNS name or an IP literal (matched against dNSName / iPAddress SANs, RFC 6125
    §6.4). ``None`` skips only the identity check: path, validity, CA constraints and the serverAuth EKU
    are still enforced (for callers that authenticate the peer otherwise, e.g. by pinning).
    ``skew``: clock-skew tolerance in seconds on every validity period of the path (module docstring).
    Raises :class:`CertificateError` with the RFC 8446 §6.2 alert; ConfigError for an invalid name.
    """
    if not chain:  # §4.4.2.4: an empty server Certificate message is a decode_error
        raise CertificateError(AlertDescription.decode_error, "server sent an empty certificate chain")
    subject, name = _subject(server_name)
    now = _utc(now)
    tolerance = _tolerance(skew)
    key = ("server", tuple(bytes(der) for der in chain), name, trust.fingerprint, max_chain_depth)
    if (cached := _cache_get(key, now, tolerance)) is not None:
        return cached
    certs = _parse(chain, max_chain_depth)
    _check_window(certs[0], now, tolerance=tolerance)
    if bytes(chain[0]) in trust.root_ders:
        # The leaf itself is trusted (a self-signed server certificate given as the CA file, as curl and
        # OpenSSL accept): no path to build, but its name, purpose and key are checked as for any leaf.
        if subject is not None and not _named(certs[0], subject):
            raise CertificateError(
                AlertDescription.bad_certificate, f"certificate is for {_describe_sans(certs[0])}, not {name!r}"
            )
        _check_trusted_leaf(certs[0], ExtendedKeyUsageOID.SERVER_AUTH)
        return (certs[0],)
    builder = _builder(trust, _verification_time(certs, trust, now, tolerance), max_chain_depth)
    try:
        if subject is None:
            path = _nameless_server_verify(builder, certs)
        else:
            path = _server_verifier(builder, subject, server_name).verify(certs[0], certs[1:])
    except VerificationError as exc:
        if subject is not None:
            try:
                _nameless_server_verify(builder, certs)
            except VerificationError:
                pass
            else:
                if not _named(certs[0], subject):  # guard: the two verifiers disagree otherwise
                    wanted = f"certificate is for {_describe_sans(certs[0])}, not {name!r}"
                    raise CertificateError(AlertDescription.bad_certificate, wanted) from None
        raise _safe_diagnose(certs, trust, now, tolerance, exc, ExtendedKeyUsageOID.SERVER_AUTH) from None
    if subject is not None and not _named(certs[0], subject):  # a wildcard right above a TLD (*.com)
        raise CertificateError(AlertDescription.bad_certificate,
                               f"certificate is for {_describe_sans(certs[0])}, not {name!r} (a wildcard needs two "
                               "labels after it, as OpenSSL and curl require)")
    _check_leaf(certs[0], None)
    check_subject_constraints(path, _label)
    _cache_put(key, path)
    return tuple(path)


def _verify_client_chain(
    chain: Sequence[bytes],
    *,
    trust: TrustStore,
    now: dt.datetime,
    max_chain_depth: int = 8,
    skew: float = 0.0,
) -> tuple[x509.Certificate, ...]:
    """Verify a client's Certificate for mutual TLS (RFC 8446 §4.4.2.4) and return the path built (leaf first).

    The leaf needs clientAuth if it has an EKU (WebPKI client profile); unlike a server's, it need not have a
    subjectAltName (CN-only client certificates, as OpenSSL and nginx accept: names identify it, not match). An empty
    chain is ``certificate_required``; callers with optional client auth should not call this for it.
    ``skew``: clock-skew tolerance in seconds, as for :func:`verify_server_chain`.
    """
    if not chain:
        raise CertificateError(AlertDescription.certificate_required, "client sent no certificate")
    now = _utc(now)
    tolerance = _tolerance(skew)
    key = ("client", tuple(bytes(der) for der in chain), None, trust.fingerprint, max_chain_depth)
    if (cached := _cache_get(key, now, tolerance)) is not None:
        return cached
    certs = _parse(chain, max_chain_depth)
    _check_window(certs[0], now, tolerance=tolerance)
    if bytes(chain[0]) in trust.root_ders:  # a self-signed client certificate listed as trusted (as OpenSSL)
        _check_trusted_leaf(certs[0], ExtendedKeyUsageOID.CLIENT_AUTH)
        return (certs[0],)
    builder = _builder(trust, _verification_time(certs, trust, now, tolerance), max_chain_depth)
    builder = builder.extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_CLIENT_EE_POLICY)
    try:
        verified = builder.build_client_verifier().verify(certs[0], certs[1:])
    except VerificationError as exc:
        raise _safe_diagnose(certs, trust, now, tolerance, exc, ExtendedKeyUsageOID.CLIENT_AUTH) from None
    except TypeError as exc:  # the verifier reads the subject: a name attribute of a type its OID cannot have
        raise CertificateError(AlertDescription.bad_certificate, f"malformed certificate: {exc}") from None
    _check_leaf(certs[0], None)
    check_subject_constraints(verified.chain, _label)  # its subject: a SAN-less client's CN is its identity
    _cache_put(key, verified.chain)
    return tuple(verified.chain)


def _check_trusted_leaf(cert: x509.Certificate, purpose: x509.ObjectIdentifier) -> None:
    """A leaf that is itself a trust anchor: no path to build, but its purpose and key are checked as for any
    leaf, and a critical extension we do not know refuses it (RFC 5280 §4.2; OpenSSL: unhandled critical)."""
    _check_leaf(cert, purpose)
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.digital_signature:  # a CA certificate (keyCertSign), keyEncipherment only
        raise CertificateError(AlertDescription.bad_certificate,
                               f"{_label(cert)} may not sign (keyUsage without digitalSignature; RFC 8446 §4.4.2.2)")
    unknown = [e.oid.dotted_string for e in cert.extensions
               if e.critical and isinstance(e.value, x509.UnrecognizedExtension)]
    if unknown:
        raise CertificateError(AlertDescription.unsupported_certificate,
                               f"{_label(cert)} has a critical extension we do not know: {', '.join(unknown)}")


@lru_cache(maxsize=256)
def _subject(server_name: str | None) -> tuple[Subject | None, str | None]:
    """The verifier subject for ``server_name`` and its normalised text (A-label, lower case); cached, as a
    client names the same few servers again and again."""
    if server_name is None:
        return None, None
    literal = server_name.strip("[]")
    try:
        ip = ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        return x509.IPAddress(ip), str(ip)
    host = server_name[:-1] if server_name.endswith(".") else server_name  # one trailing dot: the root
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        name = ""
    if not name or name.endswith(".") or ".." in name:
        raise ConfigError(f"server_name {server_name!r} is not a valid host name")
    return x509.DNSName(name), name


def _server_verifier(builder: PolicyBuilder, subject: Subject, server_name: str | None) -> ServerVerifier:
    try:
        return builder.build_server_verifier(subject)
    except ValueError:
        raise ConfigError(f"server_name {server_name!r} is not a valid DNS name or IP address") from None


def _utc(now: dt.datetime) -> dt.datetime:
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


_NO_SKEW = dt.timedelta(0)


def _tolerance(skew: float) -> dt.timedelta:
    if skew == 0:
        return _NO_SKEW
    if not 0 <= skew <= 86400:  # also refuses NaN
        raise ConfigError(f"clock skew tolerance {skew!r} must be between 0 and 86400 seconds")
    return dt.timedelta(seconds=skew)


def _verification_time(certs: list[x509.Certificate], trust: TrustStore, now: dt.datetime,
                       tolerance: dt.timedelta) -> dt.datetime:
    """``now`` moved by at most ``tolerance`` into the validity periods of the certificates that may be on
    the path: the presented ones and the roots that issued one of them, each only if its period comes within
    ``tolerance`` of ``now`` (an unused extra certificate long expired, e.g. a stale cross-sign, is ignored;
    a certificate further off fails anyway, with its own message from the diagnosis)."""
    if not tolerance:
        return now
    issuers = {cert.issuer for cert in certs}
    candidates = certs + [root for root in trust.roots if root.subject in issuers]
    low, high = now - tolerance, now + tolerance
    near = [c for c in candidates if c.not_valid_before_utc <= high and c.not_valid_after_utc >= low]
    if not near:
        return now
    start = max(c.not_valid_before_utc for c in near)
    end = min(c.not_valid_after_utc for c in near)
    if start > end:  # no single instant suits them all; let the verifier and the diagnosis say why
        return now
    return min(max(now, start), end)


def _parse(chain: Sequence[bytes], max_chain_depth: int) -> list[x509.Certificate]:
    # leaf + up to max_chain_depth intermediates + an optional (ignored) root
    if len(chain) > max_chain_depth + 2:
        limit = max_chain_depth + 2
        raise CertificateError(AlertDescription.bad_certificate,
                               f"chain has {len(chain)} certificates, more than the limit of {limit}")
    certs = []
    for index, der in enumerate(chain):
        try:
            certs.append(x509.load_der_x509_certificate(bytes(der)))
        except (ValueError, x509.InvalidVersion) as exc:
            which = "leaf certificate" if index == 0 else f"certificate #{index} of the chain"
            raise CertificateError(AlertDescription.bad_certificate,
                                   f"{which} is not valid DER: {exc}") from None
    return certs


def _builder(trust: TrustStore, now: dt.datetime, max_chain_depth: int) -> PolicyBuilder:
    return PolicyBuilder().store(trust.store).time(now).max_chain_depth(max_chain_depth)


def _require_server_auth(policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    # Same rule as build_server_verifier: an EKU must list serverAuth (anyExtendedKeyUsage is not enough).
    if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise ValueError("leaf EKU lacks serverAuth")


_SERVER_EE_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_server_auth
)


# A client certificate may lack a subjectAltName (OpenSSL's and nginx's mTLS accept CN-only certificates: from
# `openssl req`, Kubernetes user certificates); the rest of the WebPKI end-entity profile holds.
_CLIENT_EE_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
)


def _nameless_server_verify(builder: PolicyBuilder, certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """Server-profile path validation with no identity: the client verifier with a serverAuth EE policy."""
    builder = builder.extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                                         ee_policy=_SERVER_EE_POLICY)
    return builder.build_client_verifier().verify(certs[0], certs[1:]).chain


# --- diagnosis: turn a refusal into the right alert ----------------------------------------------------


def _label(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string() or "<empty subject>")


def _check_window(cert: x509.Certificate, now: dt.datetime, role: str = "certificate", *,
                  tolerance: dt.timedelta = _NO_SKEW) -> None:
    """certificate_expired (§6.2) if ``now`` is outside the validity period (RFC 5280 §4.1.2.5) widened by
    ``tolerance`` on both ends; the message gives the real distance from ``now``, and the tolerance."""
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    allowed = f" (beyond the {_seconds(tolerance)}-second clock-skew tolerance)" if tolerance else ""
    if now < before - tolerance:
        seconds = int((before - now).total_seconds())
        raise CertificateError(AlertDescription.certificate_expired,
                               f"{role} {_label(cert)} is not yet valid (clock skew?) by {seconds} seconds"
                               f"{allowed}: valid from {before:%Y-%m-%d %H:%M:%S}Z")
    if now > after + tolerance:
        seconds = int((now - after).total_seconds())
        raise CertificateError(AlertDescription.certificate_expired,
                               f"{role} {_label(cert)} expired at {after:%Y-%m-%d %H:%M:%S}Z, "
                               f"{seconds} seconds ago{allowed}")


def _seconds(delta: dt.timedelta) -> str:
    value = delta.total_seconds()
    return str(int(value)) if value == int(value) else f"{value:g}"


def _describe_sans(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return f"{_label(cert)} with no subjectAltName"
    names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    names += [f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)]
    return ", ".join(names) or f"{_label(cert)} with no DNS or IP subjectAltName"


_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


def _eku_name(oid: x509.ObjectIdentifier) -> str:
    return _EKU_NAMES.get(oid, oid.dotted_string)


def _named(cert: x509.Certificate, subject: Subject) -> bool:
    """RFC 6125 §6.4: an iPAddress SAN equal to an IP subject; for a DNS name an equal dNSName (case-insensitive)
    or a wildcard as the whole left-most label, standing for one label, with two or more labels after it
    (``*.example.com``, never ``*.com`` or ``f*.example.com``; OpenSSL's and curl's rule)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if isinstance(subject, x509.IPAddress):
        return subject.value in san.get_values_for_type(x509.IPAddress)
    name = subject.value.lower()
    for pattern in san.get_values_for_type(x509.DNSName):
        pattern = pattern.lower().rstrip(".")
        if pattern == name:
            return True
        if pattern.startswith("*.") and pattern.count(".") >= 2 and "*" not in pattern[1:]:
            first, dot, rest = name.partition(".")
            if dot and first and rest == pattern[2:]:
                return True
    return False


def _check_leaf(leaf: x509.Certificate, purpose: x509.ObjectIdentifier | None) -> None:
    """What the WebPKI policy leaves unchecked on a leaf: its key (RSA under 2048 bits or DSA: refused, as
    OpenSSL's "EE certificate key too weak") and, for a leaf trusted directly (no path built), its EKU."""
    try:
        key = leaf.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise CertificateError(AlertDescription.unsupported_certificate,
                               f"{_label(leaf)} has a public key of an unsupported type") from None
    if isinstance(key, dsa.DSAPublicKey) or (isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048):
        weak = "a DSA key" if isinstance(key, dsa.DSAPublicKey) else f"a {key.key_size}-bit RSA key"
        raise CertificateError(AlertDescription.unsupported_certificate,
                               f"{_label(leaf)} has {weak}, too weak (CA/B Forum BR §6.1.5)")
    if purpose is None:
        return
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if purpose not in eku:
        raise CertificateError(AlertDescription.bad_certificate,
                               f"{_label(leaf)} is not for {_eku_name(purpose)} (extendedKeyUsage: "
                               f"{', '.join(map(_eku_name, eku))}; RFC 5280 §4.2.1.12)")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _safe_diagnose(certs: list[x509.Certificate], trust: TrustStore, now: dt.datetime, tolerance: dt.timedelta,
                   exc: VerificationError, purpose: x509.ObjectIdentifier) -> CertificateError:
    """``_diagnose``, but a certificate whose names cryptography cannot parse is ``bad_certificate``."""
    try:
        return _diagnose(certs, trust, now, tolerance, exc, purpose)
    except (*_MALFORMED, TypeError) as malformed:  # TypeError: a name attribute of a type its OID cannot have
        return CertificateError(AlertDescription.bad_certificate, f"malformed certificate: {malformed}")


def _diagnose(certs: list[x509.Certificate], trust: TrustStore, now: dt.datetime, tolerance: dt.timedelta,
              exc: VerificationError, purpose: x509.ObjectIdentifier) -> CertificateError:
    """Walk issuer links from the leaf to say why the verifier refused (RFC 8446 §6.2 alert)."""
    roots = {root.fingerprint(_SHA256): root for root in trust.roots}
    pool = certs[1:] + list(trust.roots)
    cert, seen, path = certs[0], {certs[0].fingerprint(_SHA256)}, [certs[0]]
    while cert.fingerprint(_SHA256) not in roots:
        named = [
            c
            for c in pool
            if c.subject == cert.issuer
            and c.fingerprint(_SHA256) not in seen
            and (c.fingerprint(_SHA256) not in roots or _key_ids_match(cert, c))
        ]
        if not named:
            if cert.issuer == cert.subject:
                reason = f"{_label(cert)} is self-signed and not in the trust store"
            else:
                reason = (f"issuer {cert.issuer.rfc4514_string()!r} of {_label(cert)} is neither in the "
                          "chain nor in the trust store (unknown CA, or a missing intermediate)")
            return CertificateError(AlertDescription.unknown_ca, reason)
        signed = [c for c in named if _issued_by(cert, c)]
        if not signed:
            return CertificateError(AlertDescription.bad_certificate,
                                    f"signature on {_label(cert)} does not verify with the key of its issuer "
                                    f"{cert.issuer.rfc4514_string()!r}")
        cert = next((c for c in signed if _in_window(c, now, tolerance)), signed[0])
        seen.add(cert.fingerprint(_SHA256))
        path.append(cert)
        try:
            role = "trusted root" if cert.fingerprint(_SHA256) in roots else "CA certificate"
            _check_window(cert, now, role, tolerance=tolerance)
        except CertificateError as expired:
            return expired
    try:
        if purpose == ExtendedKeyUsageOID.SERVER_AUTH:  # (a client certificate need not have one)
            certs[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return CertificateError(AlertDescription.bad_certificate,
                                f"{_label(certs[0])} has no subjectAltName; names are matched only against "
                                "SANs (RFC 6125 §6.4.4)")
    try:
        eku = certs[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if purpose not in eku:
            return CertificateError(AlertDescription.bad_certificate,
                                    f"{_label(certs[0])} is not for {_eku_name(purpose)} (extendedKeyUsage: "
                                    f"{', '.join(map(_eku_name, eku))}; RFC 5280 §4.2.1.12)")
    for link in path:
        if unsupported := _unsupported_key(link):
            return CertificateError(AlertDescription.unsupported_certificate,
                                    f"{_label(link)} has {unsupported}, which WebPKI does not allow")
    return CertificateError(AlertDescription.bad_certificate, f"chain rejected: {exc}")


def _unsupported_key(cert: x509.Certificate) -> str | None:
    """Keys ``cryptography``'s WebPKI policy forbids (CA/B Forum BR §6.1.5): EdDSA, DSA, RSA < 2048."""
    key = cert.public_key()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PublicKey):
        return "an Ed448 key"
    if isinstance(key, dsa.DSAPublicKey):
        return "a DSA key"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        return f"a {key.key_size}-bit RSA key"
    return None


def _in_window(cert: x509.Certificate, now: dt.datetime, tolerance: dt.timedelta = _NO_SKEW) -> bool:
    return cert.not_valid_before_utc - tolerance <= now <= cert.not_valid_after_utc + tolerance


# --- verdict cache -------------------------------------------------------------------------------------

_cache: OrderedDict[Hashable, tuple[tuple[x509.Certificate, ...], dt.datetime, dt.datetime]] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_get(key: Hashable, now: dt.datetime, tolerance: dt.timedelta = _NO_SKEW
               ) -> tuple[x509.Certificate, ...] | None:
    with _cache_lock:
        entry = _cache.get(key)
        if entry is None:
            return None
        path, valid_from, valid_until = entry
        if not valid_from - tolerance <= now <= valid_until + tolerance:
            del _cache[key]  # re-verify so the caller gets the precise certificate_expired message
            return None
        _cache.move_to_end(key)
        return path


def _cache_put(key: Hashable, path: Sequence[x509.Certificate]) -> None:
    valid_from = max(c.not_valid_before_utc for c in path)
    valid_until = min(c.not_valid_after_utc for c in path)
    with _cache_lock:
        _cache[key] = (tuple(path), valid_from, valid_until)
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget every cached verdict (tests; after replacing a TrustStore's files)."""
    with _cache_lock:
        _cache.clear()


def _key_ids_match(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """RFC 5280 §4.2.1.1: when both carry key identifiers, the AKI must name the issuer's SKI; a CA that only
    shares the issuer's name is not the issuer (unknown_ca, as OpenSSL says), not a bad signature."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return True
    return aki is None or aki == ski


# What cryptography raises for certificates it parses lazily (names, extensions) or refuses while verifying.
# (UnsupportedAlgorithm: a key cryptography cannot load, met when a candidate issuer is tried.)
_MALFORMED = (ValueError, KeyError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.UnsupportedGeneralNameType,
              VerificationError)


def verify_server_chain(
    chain: Sequence[bytes],
    *,
    server_name: str | None,
    trust: TrustStore,
    now: dt.datetime,
    max_chain_depth: int = 8,
    skew: float = 0.0,
) -> x509.Certificate:
    """Verify a server's Certificate chain (RFC 8446 §4.4.2) and return the leaf; see ``verify_server_path``."""
    return verify_server_path(chain, server_name=server_name, trust=trust, now=now, max_chain_depth=max_chain_depth,
                              skew=skew)[0]


def verify_server_path(
    chain: Sequence[bytes],
    *,
    server_name: str | None,
    trust: TrustStore,
    now: dt.datetime,
    max_chain_depth: int = 8,
    skew: float = 0.0,
) -> tuple[x509.Certificate, ...]:
    """Verify a server's Certificate chain and return the path the verifier built (leaf first, anchor last):
    what revocation must check, rather than the list the server sent (which may carry decoys).

    A certificate that cryptography cannot parse or refuses outright is ``bad_certificate`` (§6.2), never an
    exception of cryptography's own.
    """
    try:
        return _verify_server_chain(
            chain, server_name=server_name, trust=trust, now=now, max_chain_depth=max_chain_depth, skew=skew
        )
    except TLSError:  # our own verdicts, and ConfigError (a ValueError) for a bad server_name
        raise
    except _MALFORMED as malformed:
        raise CertificateError(AlertDescription.bad_certificate, f"malformed certificate: {malformed}") from None


def verify_client_chain(
    chain: Sequence[bytes],
    *,
    trust: TrustStore,
    now: dt.datetime,
    max_chain_depth: int = 8,
    skew: float = 0.0,
) -> x509.Certificate:
    """Verify a client's Certificate chain for mutual TLS (§4.4.2.4) and return the leaf."""
    return verify_client_path(chain, trust=trust, now=now, max_chain_depth=max_chain_depth, skew=skew)[0]


def verify_client_path(
    chain: Sequence[bytes],
    *,
    trust: TrustStore,
    now: dt.datetime,
    max_chain_depth: int = 8,
    skew: float = 0.0,
) -> tuple[x509.Certificate, ...]:
    """Verify a client's Certificate chain for mutual TLS and return the path built (leaf first)."""
    try:
        return _verify_client_chain(chain, trust=trust, now=now, max_chain_depth=max_chain_depth, skew=skew)
    except TLSError:
        raise
    except _MALFORMED as malformed:
        raise CertificateError(AlertDescription.bad_certificate, f"malformed certificate: {malformed}") from None
