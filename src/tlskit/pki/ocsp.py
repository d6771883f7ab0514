"""OCSP (RFC 6960): build requests, answer them as a responder, and verify responses.

A response is accepted only when it is signed by the certificate's issuer or by a delegated responder that
the issuer certified for id-kp-OCSPSigning (§4.2.2.2), names exactly the certificate asked about (CertID:
hash of the issuer's name and key, serial), and is current: thisUpdate not in the future and nextUpdate not
in the past, both give or take ``skew``. HTTP transport is in :mod:`tlskit.pki.ocsp_http`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, SignatureAlgorithmOID

from ..enums import AlertDescription
from ..errors import CertificateError, CertificateRevoked
from .serials import format_serial

__all__ = [
    "DEFAULT_SKEW",
    "CertStatus",
    "OCSPResponder",
    "OCSPStatus",
    "build_request",
    "cert_id_hashes",
    "ocsp_urls",
    "reason_name",
    "verify_ocsp_response",
]

DEFAULT_SKEW = dt.timedelta(minutes=5)
"""Clock-skew tolerance applied to thisUpdate/nextUpdate and to a delegated responder's validity."""
MAX_AGE_WITHOUT_NEXT_UPDATE = dt.timedelta(days=1)
"""A response with no nextUpdate (RFC 6960 §4.2.2.1: newer information is always available) is trusted
for this long after its thisUpdate."""

_BAD = AlertDescription.bad_certificate_status_response
_ENC_DER = Encoding.DER
_SPKI = PublicFormat.SubjectPublicKeyInfo


@dataclass(frozen=True, kw_only=True, slots=True)
class OCSPStatus:
    """A verified, current OCSP answer that is not "revoked" (revoked raises :class:`CertificateRevoked`)."""

    status: Literal["good", "unknown"]
    serial: int
    this_update: dt.datetime
    next_update: dt.datetime | None
    produced_at: dt.datetime
    signer: str  # "issuer" or "delegated responder 'CN=...'"
    der: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class CertStatus:
    """What a responder knows about one serial: good, or revoked at a time with an optional reason."""

    revoked_at: dt.datetime | None = None
    reason: x509.ReasonFlags | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def reason_name(reason: x509.ReasonFlags | None) -> str:
    """The RFC 5280 §5.3.1 name of a revocation reason (``keyCompromise``); ``unspecified`` for None."""
    return reason.value if reason is not None else "unspecified"


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The http(s) OCSP responder URLs in the certificate's Authority Information Access (RFC 5280 §4.2.2.1)."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [d.access_location.value for d in aia
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
            and d.access_location.value.lower().startswith(("http://", "https://"))]


# --- CertID (RFC 6960 §4.1.1) ----------------------------------------------------------------------------


def _der_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER TLV at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    return tag, pos, pos + length


def _public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's bits (tag, length and unused-bits octet excluded), as hashed."""
    spki = cert.public_key().public_bytes(_ENC_DER, _SPKI)
    _, start, _ = _der_header(spki, 0)  # SubjectPublicKeyInfo SEQUENCE
    _, _, alg_end = _der_header(spki, start)  # AlgorithmIdentifier
    tag, bits_start, bits_end = _der_header(spki, alg_end)
    if tag != 0x03:
        raise ValueError("SubjectPublicKeyInfo without a BIT STRING")
    return spki[bits_start + 1:bits_end]


def cert_id_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CertID for certificates issued by ``issuer``."""
    name_hash = hashes.Hash(algorithm)
    name_hash.update(issuer.subject.public_bytes())
    key_hash = hashes.Hash(algorithm)
    key_hash.update(_public_key_bits(issuer))
    return name_hash.finalize(), key_hash.finalize()


def build_request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None,
                  algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    """A DER OCSPRequest for ``cert`` (SHA-1 CertID by default, as RFC 5019 clients and OpenSSL use)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(_ENC_DER)


# --- verification -----------------------------------------------------------------------------------------


def verify_ocsp_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    now: dt.datetime,
    *,
    nonce: bytes | None = None,
    skew: dt.timedelta = DEFAULT_SKEW,
) -> OCSPStatus:
    """Verify a DER OCSPResponse about ``cert`` (RFC 6960 §3.2) and return its good/unknown status.

    Raises :class:`CertificateRevoked` (``certificate_revoked``) when it says revoked, and
    :class:`CertificateError` with ``bad_certificate_status_response`` when it is malformed, unsuccessful,
    about another certificate, badly signed, stale or premature, or (``nonce`` given) does not echo it.
    """
    try:
        return _verify_ocsp_response(der, cert, issuer, now, nonce, skew)
    except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:  # fields decoded lazily
        raise CertificateError(_BAD, f"OCSP response cannot be read: {exc}") from None


def _verify_ocsp_response(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime,
                          nonce: bytes | None, skew: dt.timedelta) -> OCSPStatus:
    now = now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)
    try:
        response = ocsp.load_der_ocsp_response(bytes(der))
    except ValueError as exc:
        raise CertificateError(_BAD, f"OCSP response is not valid DER: {exc}") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise CertificateError(_BAD, f"OCSP responder answered {response.response_status.name} "
                                     "instead of a status (RFC 6960 §2.3)")
    single = _matching_single(response, cert, issuer)
    signer = _check_signature(response, issuer, now, skew)
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > now + skew:
        raise CertificateError(_BAD, f"OCSP response is not yet valid: thisUpdate {_fmt(this_update)} is "
                                     f"{int((this_update - now).total_seconds())} s in the future (clock skew?)")
    expires = next_update if next_update is not None else this_update + MAX_AGE_WITHOUT_NEXT_UPDATE
    if expires < now - skew:
        raise CertificateError(_BAD, f"OCSP response expired: nextUpdate {_fmt(expires)} is "
                                     f"{int((now - expires).total_seconds())} s in the past")
    if nonce is not None:
        _check_nonce(response, nonce)
    if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
        revoked_at, reason = single.revocation_time_utc, single.revocation_reason
        raise CertificateRevoked(
            f"certificate {_label(cert)} (serial {format_serial(cert.serial_number)}) is revoked: OCSP says revoked at "
            f"{_fmt(revoked_at) if revoked_at else '?'} for {reason_name(reason)}",
            serial=cert.serial_number, revoked_at=revoked_at, reason=reason_name(reason))
    status: Literal["good", "unknown"] = (
        "good" if single.certificate_status == ocsp.OCSPCertStatus.GOOD else "unknown")
    return OCSPStatus(status=status, serial=cert.serial_number, this_update=this_update,
                      next_update=next_update, produced_at=response.produced_at_utc, signer=signer,
                      der=bytes(der))


def _matching_single(response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
                     ) -> ocsp.OCSPSingleResponse:
    """The SingleResponse whose CertID is ``cert``'s; a response about other certificates is refused."""
    serials = []
    for single in response.responses:
        serials.append(single.serial_number)
        if single.serial_number != cert.serial_number:
            continue
        if (single.issuer_name_hash, single.issuer_key_hash) == cert_id_hashes(issuer, single.hash_algorithm):
            return single
    about = ", ".join(format_serial(s) for s in serials) or "nothing"
    raise CertificateError(_BAD, f"OCSP response is about serial {about}, not certificate {_label(cert)} "
                                 f"(serial {format_serial(cert.serial_number)}) issued by {_label(issuer)}")


def _responder_is(response: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if response.responder_name is not None:
        return response.responder_name == cert.subject
    return response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _check_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: dt.datetime,
                     skew: dt.timedelta) -> str:
    """Verify the response signature (RFC 6960 §4.2.2.2) and say who signed: the issuer or its delegate."""
    if _responder_is(response, issuer) and _signed_by(response, issuer):
        return "issuer"
    for candidate in response.certificates:
        if not _responder_is(response, candidate):
            continue
        who = f"delegated responder {_label(candidate)}"
        try:
            candidate.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise CertificateError(_BAD, f"OCSP response is signed by {who}, which {_label(issuer)} did not "
                                         "issue; only the issuer may delegate OCSP signing") from None
        try:
            eku = candidate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise CertificateError(_BAD, f"OCSP response is signed by {who}, which lacks the "
                                         "id-kp-OCSPSigning extended key usage")
        if not candidate.not_valid_before_utc - skew <= now <= candidate.not_valid_after_utc + skew:
            raise CertificateError(_BAD, f"OCSP response is signed by {who}, valid only "
                                         f"{_fmt(candidate.not_valid_before_utc)} to "
                                         f"{_fmt(candidate.not_valid_after_utc)}")
        if not _signed_by(response, candidate):
            raise CertificateError(_BAD, f"OCSP response signature does not verify with the key of {who}")
        return who
    raise CertificateError(_BAD, f"OCSP response is not signed by the issuer {_label(issuer)} nor by a "
                                 "responder it delegated (RFC 6960 §4.2.2.2)")


def _signed_by(response: ocsp.OCSPResponse, signer: x509.Certificate) -> bool:
    key = signer.public_key()
    data, signature = response.tbs_response_bytes, response.signature
    try:
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
            return True
        algorithm = response.signature_hash_algorithm
        if algorithm is None:
            return False
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if response.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
                pad = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.AUTO)
            key.verify(signature, data, pad, algorithm)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True


def _check_nonce(response: ocsp.OCSPResponse, nonce: bytes) -> None:
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        raise CertificateError(_BAD, "OCSP response does not echo our nonce (RFC 8954), so it may be a "
                                     "replay") from None
    if echoed != nonce:
        raise CertificateError(_BAD, "OCSP response carries another nonce than ours: a replayed response")


# --- responder --------------------------------------------------------------------------------------------


class OCSPResponder:
    """Answers OCSPRequests about certificates ``issuer`` issued (RFC 6960 §2.2), signed by ``signer_cert``.

    ``signer_cert`` is the issuer itself or a delegated responder certificate it issued (with
    id-kp-OCSPSigning), which is then included in the response. ``lookup(serial)`` returns a
    :class:`CertStatus`, or None for a serial the CA never issued (answered "unknown").
    """

    def __init__(
        self,
        *,
        issuer: x509.Certificate,
        signer_cert: x509.Certificate,
        signer_key: CertificateIssuerPrivateKeyTypes,
        lookup: Callable[[int], CertStatus | None],
        validity: dt.timedelta = dt.timedelta(hours=1),
        clock: Callable[[], float] = time.time,
        signer: Callable[[], tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]] | None = None,
    ) -> None:
        """``signer``: called per response for the (certificate, key) to sign with, when it changes while the
        responder runs (a delegated signer renewed before it expires); else ``signer_cert``/``signer_key``."""
        self.issuer, self.signer_cert, self.signer_key = issuer, signer_cert, signer_key
        self.lookup, self.validity, self.clock = lookup, validity, clock
        self._signer = signer

    def respond(self, request_der: bytes) -> bytes:
        """The DER OCSPResponse for a DER OCSPRequest (malformedRequest / unauthorized when it must)."""
        try:
            request = ocsp.load_der_ocsp_request(bytes(request_der))
            algorithm = request.hash_algorithm
            extensions = request.extensions  # decoded here: a duplicate extension is malformed too
            nonce: x509.OCSPNonce | None = None
            for extension in extensions:
                if isinstance(extension.value, x509.OCSPNonce):
                    nonce = extension.value
                elif extension.critical:  # RFC 6960 §4.4: a critical extension we do not know
                    return self._unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        except (ValueError, UnsupportedAlgorithm, NotImplementedError, x509.DuplicateExtension):
            return self._unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)  # NotImplemented: several CertIDs
        expected = cert_id_hashes(self.issuer, algorithm)
        if (request.issuer_name_hash, request.issuer_key_hash) != expected:
            return self._unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        now = dt.datetime.fromtimestamp(int(self.clock()), dt.UTC)
        known = self.lookup(request.serial_number)
        if known is None:
            status, revoked_at, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        elif known.revoked:
            status, revoked_at, reason = ocsp.OCSPCertStatus.REVOKED, known.revoked_at, known.reason
        else:
            status, revoked_at, reason = ocsp.OCSPCertStatus.GOOD, None, None
        if reason == x509.ReasonFlags.unspecified:
            reason = None  # RFC 5280 §5.3.1: reason code unspecified SHOULD be absent
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=expected[0], issuer_key_hash=expected[1], serial_number=request.serial_number,
            algorithm=algorithm, cert_status=status, this_update=now, next_update=now + self.validity,
            revocation_time=revoked_at, revocation_reason=reason,
        )
        signer_cert, signer_key = self._signer() if self._signer is not None else (self.signer_cert, self.signer_key)
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, signer_cert)
        if signer_cert != self.issuer:  # a delegated responder: its certificate goes with the response
            builder = builder.certificates([signer_cert])
        if nonce is not None:
            builder = builder.add_extension(nonce, critical=False)
        algorithm_out = None if isinstance(signer_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) \
            else hashes.SHA256()
        return builder.sign(signer_key, algorithm_out).public_bytes(_ENC_DER)

    def respond_get(self, path: str) -> bytes:
        """Answer ``GET {url}/{url-encoding of base-64 of the DER request}`` (RFC 6960 Appendix A.1).

        The responder may sit under a path prefix, and some clients leave ``/`` unescaped in the base-64,
        so every suffix of the path is tried.
        """
        segments = urllib.parse.unquote(path.split("?", 1)[0]).lstrip("/").split("/")
        for start in range(len(segments)):
            candidate = "/".join(segments[start:])
            try:
                der = base64.b64decode(candidate + "=" * (-len(candidate) % 4), validate=True)
                ocsp.load_der_ocsp_request(der)
            except (ValueError, binascii.Error, UnsupportedAlgorithm, NotImplementedError):
                continue
            return self.respond(der)
        return self._unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)

    @staticmethod
    def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(_ENC_DER)


# --- small shared bits -------------------------------------------------------------------------------------


def _label(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string() or "<empty subject>")


def _fmt(when: dt.datetime) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S}Z"
