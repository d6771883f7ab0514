"""Public-key pinning (HPKP-style, RFC 7469 §2.4): SHA-256 of a certificate's SubjectPublicKeyInfo, base64.

Compute a pin from a certificate as curl's ``--pinnedpubkey`` documents::

    openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der |
        openssl dgst -sha256 -binary | base64

Pin at least two keys (the live one and a backup kept offline) so a key rotation does not lock clients out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import warnings
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..enums import AlertDescription
from ..errors import CertificateError, ConfigError

__all__ = ["PinSet", "SinglePinWarning", "spki_sha256"]


class SinglePinWarning(UserWarning):
    """Only one pin: losing or rotating that key locks every client out. Add a backup pin."""


def spki_sha256(cert: x509.Certificate | bytes) -> str:
    """The base64 SHA-256 of the certificate's SubjectPublicKeyInfo (``cert`` as object or DER)."""
    if isinstance(cert, bytes | bytearray | memoryview):
        cert = x509.load_der_x509_certificate(bytes(cert))
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _normalise(pin: str) -> str:
    """Accept ``BASE64``, ``sha256//BASE64`` (curl), ``sha256/BASE64``, ``pin-sha256="BASE64"`` (HPKP) and
    ``pin-sha256: BASE64`` (what ``tlskit probe`` prints).

    Base64 may itself start with ``/``, so ``sha256//...`` is ambiguous: every reading that yields a 32-byte
    hash is tried, curl's first.
    """
    text = pin.strip()
    if text.startswith(("pin-sha256=", "pin-sha256:")):
        text = text[len("pin-sha256="):].strip()
    text = text.strip('"')
    candidates = [text.removeprefix(prefix) for prefix in ("sha256//", "sha256/") if text.startswith(prefix)]
    for candidate in [*candidates, text]:
        try:
            raw = base64.b64decode(candidate, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            return base64.b64encode(raw).decode()
    raise ConfigError(f"pin {pin!r} is not the base64 SHA-256 (32 bytes) of a SubjectPublicKeyInfo")


class PinSet:
    """A set of SPKI SHA-256 pins; a chain passes when one of its keys is pinned.

    Warns (:class:`SinglePinWarning`) when built with a single pin.
    """

    def __init__(self, pins: Iterable[str]) -> None:
        self.pins: frozenset[str] = frozenset(_normalise(p) for p in pins)
        if not self.pins:
            raise ConfigError("a pin set needs at least one pin")
        if len(self.pins) == 1:
            warnings.warn("only one SPKI pin is set: pin a backup key too, or a key rotation will lock "
                          "clients out (RFC 7469 §4.3)", SinglePinWarning, stacklevel=2)

    def check(self, chain: Sequence[x509.Certificate | bytes], *, leaf_only: bool = False) -> str:
        """Return the matching pin; ``bad_certificate`` naming every presented hash when none matches.

        Pass ``leaf_only=True`` when the chain was not validated against a CA: then only the leaf's key
        (proven by CertificateVerify) counts, since anyone can append a pinned CA's certificate.
        """
        certs = [x509.load_der_x509_certificate(bytes(c)) if isinstance(c, bytes | bytearray | memoryview)
                 else c for c in chain]
        candidates = certs[:1] if leaf_only else certs
        presented = []
        for cert in candidates:
            pin = spki_sha256(cert)
            if pin in self.pins:
                return pin
            presented.append(f"sha256/{pin} ({cert.subject.rfc4514_string() or '<empty subject>'})")
        raise CertificateError(AlertDescription.bad_certificate,
                               f"public key pin mismatch: presented {', '.join(presented) or 'no certificate'}; "
                               f"pinned {', '.join(sorted('sha256/' + p for p in self.pins))}")
