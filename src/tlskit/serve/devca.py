"""The development CA behind zero-config ``tlskit serve`` (mkcert's model): one CA per user, made once.

The CA (ECDSA P-256, ten years) lives in the user's data directory with its key kept 0600; a leaf for
``localhost``, ``127.0.0.1`` and ``::1`` signed by it is re-issued when it nears expiry or when the CA
changed. Clients trust the CA file (``curl --cacert``), so a renewed leaf needs no new trust step.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ConfigError

__all__ = ["DEV_NAMES", "DevCertificate", "data_dir", "dev_certificate"]

DEV_NAMES = ("localhost", "127.0.0.1", "::1")
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=90)
RENEW_BEFORE = dt.timedelta(days=30)  # re-issue the leaf when less than this is left (as ACME clients do)


@dataclass(frozen=True, slots=True)
class DevCertificate:
    """Paths of the development CA certificate (what clients trust) and the localhost leaf it signed."""

    ca_cert: Path
    cert: Path  # leaf then CA, as a server sends it
    key: Path


def data_dir() -> Path:
    """``$XDG_DATA_HOME/tlskit``, else ``~/.local/share/tlskit`` (XDG Base Directory spec, which says to ignore a
    relative XDG_DATA_HOME: it would put the CA key under the directory being served)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "tlskit"


def dev_certificate(directory: Path | None = None, *, now: dt.datetime | None = None) -> DevCertificate:
    """The CA and a current localhost leaf, creating either when missing, unusable or (leaf) near expiry."""
    directory = directory or data_dir()
    now = now or dt.datetime.now(dt.UTC)
    paths = DevCertificate(directory / "dev-ca.pem", directory / "localhost.pem", directory / "localhost-key.pem")
    ca_key_path = directory / "dev-ca-key.pem"
    try:
        return _dev_certificate(directory, paths, ca_key_path, now)
    except OSError as e:
        raise ConfigError(f"{e.filename or directory}: {e.strerror or e} (the development CA lives in {directory}; "
                          "make it a writable directory, or set XDG_DATA_HOME elsewhere)") from None


def _dev_certificate(directory: Path, paths: DevCertificate, ca_key_path: Path, now: dt.datetime) -> DevCertificate:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = _load_pair(paths.ca_cert, ca_key_path)
    if ca is None and (paths.ca_cert.exists() or ca_key_path.exists()):
        # Clients trust this CA: a silent new one would make every one of them fail. Say so instead.
        raise ConfigError(f"{paths.ca_cert}: the development CA is damaged (unreadable, or not matching "
                          f"{ca_key_path.name}); delete both files to make a new CA, then trust the new "
                          f"{paths.ca_cert.name} again")
    if ca is None or ca[0].not_valid_after_utc - RENEW_BEFORE <= now:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (_ca_certificate(ca_key, now), ca_key)
        _write_key(ca_key_path, ca_key)
        paths.ca_cert.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    leaf = _load_pair(paths.cert, paths.key)
    if leaf is None or not _leaf_current(leaf[0], ca[0], now):
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf_certificate(leaf_key, ca[0], ca[1], now)
        _write_key(paths.key, leaf_key)
        paths.cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, ca[0])))
    return paths


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an older file may have kept wider permissions
        f.write(pem)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The certificate (first in the file) and its EC key, or None when either is missing or they differ."""
    try:
        cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    fmt, enc = serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.DER
    if cert.public_key().public_bytes(enc, fmt) != key.public_key().public_bytes(enc, fmt):
        return None
    return cert, key


def _leaf_current(leaf: x509.Certificate, ca: x509.Certificate, now: dt.datetime) -> bool:
    """Signed by this CA and not within ``RENEW_BEFORE`` of expiry."""
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return leaf.not_valid_after_utc - RENEW_BEFORE > now


def _key_usage(*, sign_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=sign_certs, crl_sign=sign_certs, encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    user = os.environ.get("USER") or "user"
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlskit development CA"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"tlskit development CA ({user})"),
    ])
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign_certs=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                      now: dt.datetime) -> x509.Certificate:
    sans: list[x509.GeneralName] = [x509.DNSName(DEV_NAMES[0])]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in DEV_NAMES[1:]]
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + LEAF_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
