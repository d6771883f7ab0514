"""CertificateVerify signatures (RFC 8446 §4.2.3, §4.4.3).

``cryptography`` loads keys with the RSASSA-PSS OID (id-RSASSA-PSS) as plain ``RSAPrivateKey`` /
``RSAPublicKey`` and cannot tell them apart from rsaEncryption keys. So ``schemes_for_key`` offers the
rsa_pss_rsae_* schemes for every RSA key unless the caller says the key is a PSS-OID key (``pss_oid``,
known from the certificate's SubjectPublicKeyInfo), and ``verify`` accepts both families for an RSA key
unless told which it is.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from ..enums import AlertDescription
from ..enums import SignatureScheme as S
from ..errors import AlertError, ConfigError

__all__ = [
    "CERT_SIGNATURE_SCHEMES",
    "TLS13_SIGNATURE_SCHEMES",
    "certificate_verify_input",
    "schemes_for_key",
    "sign",
    "verify",
]

TLS13_SIGNATURE_SCHEMES: tuple[S, ...] = (
    S.ecdsa_secp256r1_sha256,
    S.ecdsa_secp384r1_sha384,
    S.ed25519,
    S.rsa_pss_rsae_sha256,
    S.rsa_pss_rsae_sha384,
    S.rsa_pss_rsae_sha512,
    S.rsa_pss_pss_sha256,
    S.rsa_pss_pss_sha384,
    S.rsa_pss_pss_sha512,
)

CERT_SIGNATURE_SCHEMES: tuple[S, ...] = (
    *TLS13_SIGNATURE_SCHEMES,
    S.rsa_pkcs1_sha256,
    S.rsa_pkcs1_sha384,
    S.rsa_pkcs1_sha512,
)

_SERVER_CONTEXT = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00"
_CLIENT_CONTEXT = b" " * 64 + b"TLS 1.3, client CertificateVerify\x00"

_ECDSA: dict[S, tuple[type[ec.EllipticCurve], hashes.HashAlgorithm]] = {
    S.ecdsa_secp256r1_sha256: (ec.SECP256R1, hashes.SHA256()),
    S.ecdsa_secp384r1_sha384: (ec.SECP384R1, hashes.SHA384()),
    S.ecdsa_secp521r1_sha512: (ec.SECP521R1, hashes.SHA512()),
}
_ECDSA_ALGORITHM: dict[S, ec.ECDSA] = {s: ec.ECDSA(h) for s, (_, h) in _ECDSA.items()}  # immutable: built once
_ECDSA_BY_CURVE: dict[str, S] = {
    "secp256r1": S.ecdsa_secp256r1_sha256,
    "secp384r1": S.ecdsa_secp384r1_sha384,
    "secp521r1": S.ecdsa_secp521r1_sha512,
}

_RSA_PSS: dict[S, tuple[hashes.HashAlgorithm, bool]] = {  # scheme -> (hash, PSS-OID key)
    S.rsa_pss_rsae_sha256: (hashes.SHA256(), False),
    S.rsa_pss_rsae_sha384: (hashes.SHA384(), False),
    S.rsa_pss_rsae_sha512: (hashes.SHA512(), False),
    S.rsa_pss_pss_sha256: (hashes.SHA256(), True),
    S.rsa_pss_pss_sha384: (hashes.SHA384(), True),
    S.rsa_pss_pss_sha512: (hashes.SHA512(), True),
}


def certificate_verify_input(server: bool, transcript_hash: bytes) -> bytes:
    """The signed content: 64 spaces, context string, 0x00, transcript hash (§4.4.3)."""
    return (_SERVER_CONTEXT if server else _CLIENT_CONTEXT) + transcript_hash


def _pss(hash_algorithm: hashes.HashAlgorithm) -> padding.PSS:
    """RSASSA-PSS with MGF1 over the same hash and salt length = hash length (§4.2.3)."""
    return padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)


def schemes_for_key(private_key: PrivateKeyTypes, *, pss_oid: bool = False) -> tuple[S, ...]:
    """The CertificateVerify schemes ``private_key`` can produce, preferred first; () if none."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        scheme = _ECDSA_BY_CURVE.get(private_key.curve.name)
        return () if scheme is None else (scheme,)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return (S.ed25519,)
    if isinstance(private_key, rsa.RSAPrivateKey):
        # EMSA-PSS needs emLen >= hLen + sLen + 2 with sLen = hLen (RFC 8017 §9.1.1).
        em_len = (private_key.key_size - 1 + 7) // 8
        return tuple(
            scheme
            for scheme, (hash_algorithm, is_pss) in _RSA_PSS.items()
            if is_pss == pss_oid and em_len >= 2 * hash_algorithm.digest_size + 2
        )
    return ()


def sign(private_key: PrivateKeyTypes, scheme: S, data: bytes) -> bytes:
    """Sign ``data`` (a ``certificate_verify_input``); ``ConfigError`` if the key cannot do ``scheme``."""
    if scheme in _ECDSA and isinstance(private_key, ec.EllipticCurvePrivateKey):
        if isinstance(private_key.curve, _ECDSA[scheme][0]):
            return private_key.sign(data, _ECDSA_ALGORITHM[scheme])
    elif scheme in _RSA_PSS and isinstance(private_key, rsa.RSAPrivateKey):
        hash_algorithm = _RSA_PSS[scheme][0]
        return private_key.sign(data, _pss(hash_algorithm), hash_algorithm)
    elif scheme == S.ed25519 and isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    raise ConfigError(f"a {type(private_key).__name__} cannot sign with {scheme.name}")


def verify(
    public_key: PublicKeyTypes, scheme: S, data: bytes, signature: bytes, *, pss_oid: bool | None = None
) -> None:
    """Check a CertificateVerify signature (§4.4.3).

    ``illegal_parameter`` if ``scheme`` does not fit the key or is not allowed in TLS 1.3 CertificateVerify;
    ``decrypt_error`` if the signature is wrong. ``pss_oid`` (None = unknown) pins the RSA scheme family.
    """
    try:
        if scheme in _ECDSA and isinstance(public_key, ec.EllipticCurvePublicKey):
            if isinstance(public_key.curve, _ECDSA[scheme][0]):
                public_key.verify(signature, data, _ECDSA_ALGORITHM[scheme])
                return
        elif scheme in _RSA_PSS and isinstance(public_key, rsa.RSAPublicKey):
            hash_algorithm, is_pss = _RSA_PSS[scheme]
            if pss_oid is None or pss_oid == is_pss:
                public_key.verify(signature, data, _pss(hash_algorithm), hash_algorithm)
                return
        elif scheme == S.ed25519 and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
            return
    except (InvalidSignature, ValueError):
        raise AlertError(AlertDescription.decrypt_error, f"bad {scheme.name} signature") from None
    raise AlertError(
        AlertDescription.illegal_parameter,
        f"{scheme.name} is not a TLS 1.3 CertificateVerify scheme for a {type(public_key).__name__}",
    )
