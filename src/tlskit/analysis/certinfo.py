"""Certificates and OCSP staples as the operator tools show them: names, validity with days left, key type,
signature algorithm, SPKI pin (RFC 7469 ``pin-sha256``), and the staple's status, times and signer
(RFC 6960 §4.2)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import ocsp

from ..pki.serials import format_serial

__all__ = ["describe_certificate", "describe_ocsp", "key_type", "spki_pin"]


def key_type(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def spki_pin(cert: x509.Certificate) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)), the ``pin-sha256`` of RFC 7469 and curl's ``--pinnedpubkey``."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)] + \
        [f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)]


def _signature_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    return getattr(oid, "_name", None) or oid.dotted_string


def describe_certificate(der: bytes, now: dt.datetime) -> dict[str, Any]:
    """A certificate's operator-relevant fields; ``days_left`` is negative once it expired."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as e:
        return {"error": f"unparsable certificate: {e}"}
    before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sans": _sans(cert),
        "serial": format_serial(cert.serial_number),
        "not_before": before.isoformat(),
        "not_after": after.isoformat(),
        "days_left": (after - now).days if now <= after else -((now - after).days + 1),
        "not_yet_valid_by_seconds": int((before - now).total_seconds()) if now < before else 0,
        "key": key_type(cert),
        "signature": _signature_name(cert),
        "self_signed": cert.issuer == cert.subject,
        "spki_sha256": spki_pin(cert),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def describe_ocsp(der: bytes) -> dict[str, Any]:
    """A stapled OCSPResponse: response status, certificate status, times, revocation, signer."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as e:
        return {"error": f"unparsable OCSP response: {e}"}
    out: dict[str, Any] = {"response_status": response.response_status.name.lower()}
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return out
    out["cert_status"] = response.certificate_status.name.lower()
    out["serial"] = format_serial(response.serial_number)
    out["produced_at"] = response.produced_at_utc.isoformat()
    out["this_update"] = response.this_update_utc.isoformat()
    next_update = response.next_update_utc
    out["next_update"] = next_update.isoformat() if next_update else None
    if response.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        revoked = response.revocation_time_utc
        out["revoked_at"] = revoked.isoformat() if revoked else None
        reason = response.revocation_reason
        out["reason"] = reason.name if reason else None
    if response.responder_name is not None:
        out["signer"] = response.responder_name.rfc4514_string()
    elif response.responder_key_hash is not None:
        out["signer"] = f"key sha1 {response.responder_key_hash.hex()}"
    if response.certificates:
        out["signer_certificate"] = response.certificates[0].subject.rfc4514_string()
    return out
