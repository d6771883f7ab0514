"""Throw-away PKI for tests: roots, intermediates and leaves made with ``cryptography``.

    root = make_ca("tlskit test root")
    inter = make_ca("tlskit test intermediate", issuer=root)
    leaf = make_leaf(inter, names=["localhost", "127.0.0.1"], key_type="rsa2048")
    cert_pem, key_pem = leaf.write(tmp_path, "server", chain=[inter])  # server.pem: leaf+inter

Key types: ``ec256``, ``ec384``, ``ed25519``, ``rsa2048`` and ``rsapss`` (an RSA-2048 key whose
certificates it issues are signed with RSASSA-PSS rather than PKCS#1 v1.5). Names that parse as IP
addresses become iPAddress SANs, the rest dNSName SANs. Certificates follow RFC 5280 §4.2 closely enough
for WebPKI verifiers (``cryptography.x509.verification``, OpenSSL): SKI/AKI, critical BasicConstraints and
KeyUsage, serverAuth (and optionally clientAuth) EKU on leaves.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec256", "ec384", "ed25519", "rsa2048", "rsapss", "rsa1024"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey

DEFAULT_LIFETIME = dt.timedelta(days=30)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key (a CA or a leaf)."""

    cert: x509.Certificate
    key: PrivateKey
    key_type: KeyType

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write(self, directory: Path, stem: str, *, chain: Sequence[Issued] = ()) -> tuple[Path, Path]:
        """Write ``stem.pem`` (this cert, then ``chain``) and ``stem.key`` (PKCS#8) into ``directory``."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        write_pem(cert_path, [self, *chain])
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


def write_pem(path: Path, certs: Iterable[Issued | x509.Certificate]) -> Path:
    """Write certificates as concatenated PEM (a CA bundle or a full chain) and return ``path``."""
    path.write_bytes(b"".join(c.pem if isinstance(c, Issued) else
                              c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def make_key(key_type: KeyType) -> PrivateKey:
    """A fresh private key of ``key_type``."""
    match key_type:
        case "ec256":
            return ec.generate_private_key(ec.SECP256R1())
        case "ec384":
            return ec.generate_private_key(ec.SECP384R1())
        case "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
        case "rsa2048" | "rsapss":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        case "rsa1024":  # too weak for WebPKI: for tests that it is refused
            return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    raise ValueError(f"unknown key type {key_type!r}")


def make_ca(
    common_name: str = "tlskit test root",
    *,
    issuer: Issued | None = None,
    key_type: KeyType = "ec256",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    path_length: int | None = None,
) -> Issued:
    """A self-signed root CA, or an intermediate CA when ``issuer`` is given."""
    key = make_key(key_type)
    builder = _builder(common_name, key, issuer, not_before, not_after)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    builder = builder.add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                                    critical=True)
    return _sign(builder, key, key_type, issuer)


def make_leaf(
    ca: Issued | None,
    names: Sequence[str] = ("localhost",),
    *,
    key_type: KeyType = "ec256",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    common_name: str | None = None,
    client_auth: bool = False,
    server_auth: bool = True,
) -> Issued:
    """An end-entity certificate issued by ``ca`` (None: self-signed) with ``names`` as SANs (IP literals become
    iPAddress)."""
    key = make_key(key_type)
    common_name = common_name or (names[0] if names else "tlskit test leaf")
    builder = _builder(common_name, key, ca, not_before, not_after)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    builder = builder.add_extension(_key_usage(digital_signature=True), critical=True)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server_auth + [ExtendedKeyUsageOID.CLIENT_AUTH] * client_auth
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                                        critical=False)
    return _sign(builder, key, key_type, ca)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
               ) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


def _builder(common_name: str, key: PrivateKey, issuer: Issued | None,
             not_before: dt.datetime | None, not_after: dt.datetime | None) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_before = not_before or now - dt.timedelta(hours=1)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after or not_before + DEFAULT_LIFETIME)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    signer_public = issuer.key.public_key() if issuer else public_key
    return builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_public),
                                 critical=False)


def _sign(builder: x509.CertificateBuilder, key: PrivateKey, key_type: KeyType, issuer: Issued | None
          ) -> Issued:
    signer_key, signer_type = (issuer.key, issuer.key_type) if issuer else (key, key_type)
    algorithm: hashes.SHA256 | hashes.SHA384 | None = {"ed25519": None, "ec384": hashes.SHA384()}.get(
        signer_type, hashes.SHA256()
    )
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    cert = builder.sign(signer_key, algorithm, rsa_padding=pss if signer_type == "rsapss" else None)
    return Issued(cert, key, key_type)
