"""A self-signed development certificate for localhost, kept in the user's data directory and reused.

Like mkcert without a CA: one ECDSA P-256 certificate for ``localhost``, ``127.0.0.1`` and ``::1``, which a
client trusts by naming it as its CA file (``curl --cacert``). It is replaced when near expiry.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEV_NAMES", "data_dir", "dev_certificate"]

DEV_NAMES = ("localhost", "127.0.0.1", "::1")
LIFETIME = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=7)


def data_dir() -> Path:
    """``$XDG_DATA_HOME/tlskit``, else ``~/.local/share/tlskit`` (XDG Base Directory spec)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "tlskit"


def dev_certificate(directory: Path | None = None) -> tuple[Path, Path]:
    """(certificate PEM, private key PEM) paths, generated on first use; the key file is mode 0600."""
    directory = directory or data_dir()
    cert_path, key_path = directory / "localhost.pem", directory / "localhost-key.pem"
    if _usable(cert_path, key_path):
        return cert_path, key_path
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an older file may have kept wider permissions
        f.write(key_pem)
    cert_path.write_bytes(_self_signed(key).public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _usable(cert_path: Path, key_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return False
    fmt, enc = serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.DER
    same_key = cert.public_key().public_bytes(enc, fmt) == key.public_key().public_bytes(enc, fmt)
    return same_key and cert.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.UTC)


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlskit development certificate"),
        x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
    ])
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in DEV_NAMES[1:]]
    public = key.public_key()
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
