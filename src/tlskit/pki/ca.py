"""A private certificate authority in a directory, like cfssl: init, issue, revoke, CRL, OCSP responder.

Directory layout (keys are PKCS#8 PEM, mode 0600; the directory itself is 0700)::

    DIR/ca.json                settings: key type, OCSP and CRL URLs put into issued certificates
    DIR/root.pem  root.key     the root CA; root.pem is the trust anchor to give to peers
    DIR/intermediate.pem .key  the issuing CA, when made with ``intermediate=True`` (else the root issues)
    DIR/ocsp-signer.pem .key   delegated OCSP responder certificate (made on demand, renewed before expiry)
    DIR/index.json             every issued certificate by serial: names, validity, revocation; CRL number
    DIR/certs/SERIAL.pem       a copy of every issued certificate
    DIR/issued/NAME.pem .key   default output of ``issue``: leaf then intermediate, and the leaf's key
    DIR/crl.pem  crl.der       the latest CRL of the issuing CA (RFC 5280 §5); crl.pem also the root's
    DIR/.lock                  fcntl lock held while allocating serials and rewriting index.json

Serials are 159-bit random numbers (CA/B Forum BR §7.1) chosen under the lock and checked against the
index, so concurrent ``issue`` runs never share one. Issued certificates are backdated (default 5 minutes)
so that peers whose clocks lag the CA's accept them at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from ..errors import ConfigError
from .identity import parse_spiffe_id
from .ocsp import CertStatus, OCSPResponder
from .serials import format_serial, parse_serial

__all__ = [
    "DEFAULT_BACKDATE",
    "REASONS",
    "CertificateAuthority",
    "IssuedCertificate",
    "Record",
    "format_serial",
    "parse_reason",
    "parse_serial",
]

KeyType = Literal["ec", "rsa"]
CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

DEFAULT_BACKDATE = dt.timedelta(minutes=5)
ROOT_LIFETIME = dt.timedelta(days=3650)
INTERMEDIATE_LIFETIME = dt.timedelta(days=1825)
CA_BACKDATE = dt.timedelta(hours=1)
OCSP_SIGNER_LIFETIME = dt.timedelta(days=90)
OCSP_SIGNER_RENEW = dt.timedelta(days=30)  # renew the delegated signer when less than this is left

REASONS: dict[str, x509.ReasonFlags] = {flag.value.lower(): flag for flag in x509.ReasonFlags
                                        if flag is not x509.ReasonFlags.remove_from_crl}
"""Revocation reasons by lower-cased RFC 5280 name (``keycompromise``); see :func:`parse_reason`."""

_SETTINGS, _INDEX, _LOCK = "ca.json", "index.json", ".lock"


@dataclass(frozen=True, kw_only=True, slots=True)
class Record:
    """One line of the index: an issued certificate and its revocation state."""

    serial: str  # upper-case hex, even length (as `openssl x509 -serial` prints it)
    subject: str
    names: list[str]
    profiles: list[str]  # "server" and/or "client"
    not_before: str  # ISO 8601 UTC
    not_after: str
    path: str  # relative to the CA directory
    revoked_at: str | None = None
    reason: str | None = None

    def status(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if dt.datetime.fromisoformat(self.not_after) < now else "valid"


@dataclass(frozen=True, kw_only=True, slots=True)
class IssuedCertificate:
    """What :meth:`CertificateAuthority.issue` made: the leaf, and where its chain and key were written."""

    serial: int
    certificate: x509.Certificate
    chain_path: Path  # leaf then the intermediate, if any (nginx ssl_certificate / tlskit --cert)
    key_path: Path


def parse_reason(text: str) -> x509.ReasonFlags:
    """``keyCompromise``, ``key-compromise`` and ``key_compromise`` all name RFC 5280's keyCompromise."""
    key = text.replace("-", "").replace("_", "").lower()
    if key not in REASONS:
        raise ConfigError(f"unknown revocation reason {text!r}; use one of "
                          f"{', '.join(flag.value for flag in REASONS.values())}")
    return REASONS[key]


class CertificateAuthority:
    """A CA directory (see the module docstring). Open one with ``CertificateAuthority(DIR)``."""

    def __init__(self, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.clock = clock
        try:
            self.settings: dict[str, Any] = json.loads((self.directory / _SETTINGS).read_text())
        except FileNotFoundError:
            if (self.directory / "root.key").exists():  # init stopped between the root key and ca.json
                raise ConfigError(f"{self.directory} holds root.key but no {_SETTINGS}: a `tlskit ca init` that did "
                                  "not finish; restore ca.json from a backup, or move the directory away and run "
                                  "init again") from None
            raise ConfigError(f"{self.directory} is not a CA directory (no {_SETTINGS}); create one with "
                              f"`tlskit ca init {self.directory}`") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.directory / _SETTINGS}: {exc}") from None
        if not isinstance(self.settings, dict) or self.settings.get("key_type") not in ("ec", "rsa") \
                or not isinstance(self.settings.get("name"), str):
            raise ConfigError(f"{self.directory / _SETTINGS} is damaged (needs key_type \"ec\" or \"rsa\" and a name); "
                              "restore it from a backup")
        self.root = _load_cert(self.directory / "root.pem")
        stem = "intermediate" if self.settings.get("intermediate") else "root"
        self.issuer = _load_cert(self.directory / f"{stem}.pem")
        self._issuer_key_path = self.directory / f"{stem}.key"
        self._index_cache: tuple[tuple[int, int], dict[str, Any]] | None = None

    # --- creation ---------------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        *,
        name: str = "tlskit private CA",
        key_type: KeyType = "ec",
        intermediate: bool = False,
        ocsp_url: str | None = None,
        crl_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> CertificateAuthority:
        """Create a CA in ``directory`` (new or empty): a root and, optionally, an issuing intermediate."""
        path = Path(directory)
        for url, what in ((ocsp_url, "--ocsp-url"), (crl_url, "--crl-url")):
            if url is not None and not url.lower().startswith(("http://", "https://")):
                raise ConfigError(f"{what} {url!r} must be an http:// or https:// URL")
        if (path / _SETTINGS).exists():
            raise ConfigError(f"{path} already holds a CA ({_SETTINGS} exists); choose another directory")
        if (path / "root.key").exists():
            raise ConfigError(f"{path} holds root.key but no {_SETTINGS}: an earlier init did not finish; move the "
                              "directory away (it holds a private key) and run init again")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (path / "certs").mkdir(mode=0o700, exist_ok=True)
        now = _now(clock)
        root_key = _new_key(key_type, ca=True)
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root")])
        root = _ca_certificate(root_name, root_key, root_name, root_key, now, ROOT_LIFETIME, path_length=None)
        _write_key(path / "root.key", root_key)
        _write_certs(path / "root.pem", [root])
        if intermediate:
            key = _new_key(key_type, ca=True)
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} intermediate")])
            cert = _ca_certificate(subject, key, root_name, root_key, now, INTERMEDIATE_LIFETIME, path_length=0)
            _write_key(path / "intermediate.key", key)
            _write_certs(path / "intermediate.pem", [cert])
        settings = {"version": 1, "name": name, "key_type": key_type, "intermediate": intermediate,
                    "ocsp_url": ocsp_url, "crl_url": crl_url, "created": now.isoformat()}
        _atomic_write(path / _INDEX, json.dumps({"crl_number": 1, "certificates": {}}, indent=1).encode())
        _atomic_write(path / _SETTINGS, json.dumps(settings, indent=1).encode())
        return cls(path, clock=clock)

    # --- issuing ----------------------------------------------------------------------------------------

    @property
    def chain(self) -> list[x509.Certificate]:
        """The certificates a server sends after its leaf: the intermediate, or nothing."""
        return [self.issuer] if self.issuer != self.root else []

    def issue(
        self,
        names: Sequence[str],
        *,
        server: bool | None = None,
        client: bool = False,
        spiffe: str | None = None,
        days: int = 90,
        backdate: dt.timedelta = DEFAULT_BACKDATE,
        key_type: KeyType | None = None,
        out: str | os.PathLike[str] | None = None,
    ) -> IssuedCertificate:
        """Issue a leaf for ``names`` (DNS names, IP literals, URIs) and write PREFIX.pem and PREFIX.key.

        ``server`` defaults to True unless only ``client`` is asked for; ``spiffe`` adds a URI SAN after
        checking it is a SPIFFE ID. notBefore is ``now - backdate``; notAfter ``now + days``.
        """
        if not names and spiffe is None:
            raise ConfigError("give at least one NAME (DNS name or IP address) or a --spiffe ID")
        if days < 1:
            raise ConfigError("--days must be at least 1")
        if backdate < dt.timedelta(0):
            raise ConfigError("--backdate must not be negative")
        server = (not client) if server is None else server
        if not server and not client:
            raise ConfigError("a certificate must be for server or client authentication (or both)")
        sans = [_general_name(name) for name in names]
        if spiffe is not None:
            try:
                parse_spiffe_id(spiffe)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            sans.append(x509.UniformResourceIdentifier(spiffe))
        prefix = Path(out) if out is not None else self.directory / "issued" / _slug(names[0] if names else spiffe)
        chain_path, key_path = prefix.with_name(prefix.name + ".pem"), prefix.with_name(prefix.name + ".key")
        for existing in (chain_path, key_path):
            if existing.exists():
                raise ConfigError(f"{existing} exists; remove it or choose another --out PREFIX")
        key = _new_key(key_type or self.settings["key_type"], ca=False)
        now = _now(self.clock)
        common = next((n for n in names if len(n) <= 64), None)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)] if common else [])
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            _base_builder(subject, key, self.issuer.subject, self.issuer.public_key(), now - backdate,
                          now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            # RFC 5280 §4.2.1.6: with an empty subject the SAN carries the identity and must be critical
            .add_extension(x509.SubjectAlternativeName(sans), critical=common is None)
        )
        if url := self.settings.get("ocsp_url"):
            builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))]), critical=False)
        if url := self.settings.get("crl_url"):
            builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None,
                crl_issuer=None)]), critical=False)
        issuer_key = self._issuer_key()
        with self._locked():
            index = self._read_index()
            serial = x509.random_serial_number()
            while format_serial(serial) in index["certificates"]:
                serial = x509.random_serial_number()
            cert = builder.serial_number(serial).sign(issuer_key, hashes.SHA256())
            relative = f"certs/{format_serial(serial)}.pem"
            _write_certs(self.directory / relative, [cert])
            record = Record(serial=format_serial(serial), subject=subject.rfc4514_string(),
                            names=[*names, *([spiffe] if spiffe else [])],
                            profiles=["server"] * server + ["client"] * client,
                            not_before=cert.not_valid_before_utc.isoformat(),
                            not_after=cert.not_valid_after_utc.isoformat(), path=relative)
            index["certificates"][record.serial] = asdict(record)
            self._write_index(index)
        prefix.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_key(key_path, key)
        _write_certs(chain_path, [cert, *self.chain])
        return IssuedCertificate(serial=serial, certificate=cert, chain_path=chain_path, key_path=key_path)

    # --- revocation -------------------------------------------------------------------------------------

    def revoke(self, serial: int, reason: x509.ReasonFlags = x509.ReasonFlags.unspecified) -> Record:
        """Mark ``serial`` revoked now (idempotent: a second revoke keeps the first time and reason)."""
        with self._locked():
            index = self._read_index()
            entry = index["certificates"].get(format_serial(serial))
            if entry is None:
                raise ConfigError(f"serial {format_serial(serial)} was not issued by this CA (see `tlskit ca list "
                                  f"{self.directory}`)")
            if entry["revoked_at"] is None:
                entry["revoked_at"] = _now(self.clock).isoformat()
                entry["reason"] = reason.value
                self._write_index(index)
        return Record(**entry)

    def records(self) -> list[Record]:
        """Every certificate this CA issued, oldest first."""
        entries = self._read_index()["certificates"].values()
        return [Record(**e) for e in entries]  # index.json keeps issuing order

    def status(self, serial: int) -> CertStatus | None:
        """Good or revoked for a serial this CA issued; None for one it never issued."""
        entry = self._read_index()["certificates"].get(format_serial(serial))
        if entry is None:
            return None
        if entry["revoked_at"] is None:
            return CertStatus()
        return CertStatus(revoked_at=dt.datetime.fromisoformat(entry["revoked_at"]),
                          reason=parse_reason(entry["reason"]) if entry["reason"] else None)

    def crl(self, *, days: int = 7) -> x509.CertificateRevocationList:
        """Sign a CRL of every revoked serial with nextUpdate ``days`` ahead; write crl.pem and crl.der.

        With an intermediate, crl.pem also holds the root's CRL (of the intermediates it revoked: none), as
        verifiers that check the whole chain want (nginx's ssl_crl, ``openssl verify -crl_check_all``)."""
        if days < 1:
            raise ConfigError("a CRL must be valid for at least one day")
        issuer_key = self._issuer_key()
        now = _now(self.clock)
        with self._locked():
            index = self._read_index()
            number = int(index.get("crl_number", 1))
            index["crl_number"] = number + 1
            builder = _crl_builder(self.issuer, issuer_key, now, days, number)
            for entry in index["certificates"].values():
                if entry["revoked_at"] is None:
                    continue
                revoked = (x509.RevokedCertificateBuilder().serial_number(int(entry["serial"], 16))
                           .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"])))
                if entry["reason"] and entry["reason"] != x509.ReasonFlags.unspecified.value:
                    revoked = revoked.add_extension(x509.CRLReason(parse_reason(entry["reason"])), critical=False)
                builder = builder.add_revoked_certificate(revoked.build())
            crl = builder.sign(issuer_key, hashes.SHA256())
            pem = crl.public_bytes(serialization.Encoding.PEM)
            if self.issuer != self.root:
                root_number = int(index.get("root_crl_number", 1))
                index["root_crl_number"] = root_number + 1
                root_key = _load_key(self.directory / "root.key")
                root_crl = _crl_builder(self.root, root_key, now, days, root_number).sign(root_key, hashes.SHA256())
                pem += root_crl.public_bytes(serialization.Encoding.PEM)
            _atomic_write(self.directory / "crl.pem", pem, mode=0o644)
            _atomic_write(self.directory / "crl.der", crl.public_bytes(serialization.Encoding.DER), mode=0o644)
            self._write_index(index)
        return crl

    def current_crl_der(self) -> bytes:
        """The DER CRL to serve at the distribution point, re-signed once past half its lifetime."""
        now = _now(self.clock)
        try:
            crl = x509.load_der_x509_crl((self.directory / "crl.der").read_bytes())
            next_update = crl.next_update_utc
            fresh = next_update is not None and now < crl.last_update_utc + (next_update - crl.last_update_utc) / 2
        except (OSError, ValueError):
            fresh = False
        if not fresh:
            self.crl()
        return (self.directory / "crl.der").read_bytes()

    # --- OCSP -------------------------------------------------------------------------------------------

    def ocsp_signer(self) -> tuple[x509.Certificate, CAKey]:
        """The delegated OCSP signing certificate (id-kp-OCSPSigning, id-pkix-ocsp-nocheck) and key.

        Made on first use and re-issued when less than 30 days of its 90 are left.
        """
        cert_path, key_path = self.directory / "ocsp-signer.pem", self.directory / "ocsp-signer.key"
        now = _now(self.clock)
        with self._locked():
            if cert_path.exists() and key_path.exists():
                cert = _load_cert(cert_path)
                if cert.not_valid_after_utc - now > OCSP_SIGNER_RENEW and cert.issuer == self.issuer.subject:
                    return cert, _load_key(key_path)
            key = _new_key(self.settings["key_type"], ca=False)
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.settings['name']} OCSP responder")])
            issuer_key = self._issuer_key()
            cert = (
                _base_builder(subject, key, self.issuer.subject, self.issuer.public_key(), now - DEFAULT_BACKDATE,
                              now + OCSP_SIGNER_LIFETIME)
                .serial_number(x509.random_serial_number())
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(digital_signature=True), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
                .add_extension(x509.OCSPNoCheck(), critical=False)
                .sign(issuer_key, hashes.SHA256())
            )
            key_path.unlink(missing_ok=True)
            _write_key(key_path, key)
            _atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cert, key

    def responder(self, *, delegated: bool = False, validity: dt.timedelta = dt.timedelta(hours=1)
                  ) -> OCSPResponder:
        """An OCSP responder for this CA's certificates, signed by the issuing CA or a delegated signer."""
        if not delegated:
            return OCSPResponder(issuer=self.issuer, signer_cert=self.issuer, signer_key=self._issuer_key(),
                                 lookup=self.status, validity=validity, clock=self.clock)
        current = [self.ocsp_signer()]
        lock = threading.Lock()

        def signer() -> tuple[x509.Certificate, CAKey]:
            """The delegated signer, renewed (``ocsp_signer``) once it is within its renewal window."""
            with lock:
                if current[0][0].not_valid_after_utc - _now(self.clock) <= OCSP_SIGNER_RENEW:
                    current[0] = self.ocsp_signer()
                return current[0]

        return OCSPResponder(issuer=self.issuer, signer_cert=current[0][0], signer_key=current[0][1],
                             lookup=self.status, validity=validity, clock=self.clock, signer=signer)

    # --- storage ----------------------------------------------------------------------------------------

    def _issuer_key(self) -> CAKey:
        return _load_key(self._issuer_key_path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _read_index(self) -> dict[str, Any]:
        """index.json, re-read only when it changed on disk (so a responder sees revocations at once)."""
        path = self.directory / _INDEX
        try:
            info = path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
            if self._index_cache is not None and self._index_cache[0] == stamp:
                return _copy(self._index_cache[1])  # a private copy for the caller to edit
            index: dict[str, Any] = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the CA index {path}: {exc}") from None
        if not isinstance(index, dict) or not isinstance(index.get("certificates"), dict):
            raise ConfigError(f"the CA index {path} is damaged (no \"certificates\" table); restore it from a backup")
        for key, entry in index["certificates"].items():
            if not isinstance(entry, dict) or set(entry) != _RECORD_FIELDS or not isinstance(entry["serial"], str):
                missing = sorted(_RECORD_FIELDS - set(entry)) if isinstance(entry, dict) else "all"
                raise ConfigError(f"the CA index {path} is damaged (entry {key!r}: missing or unknown fields, missing "
                                  f"{missing}); restore it from a backup")
        self._index_cache = (stamp, index)
        return _copy(index)

    def _write_index(self, index: dict[str, Any]) -> None:
        _atomic_write(self.directory / _INDEX, json.dumps(index, indent=1).encode())
        self._index_cache = None


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(Record))


def _copy(index: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(index))
    return copied


# --- certificate building -----------------------------------------------------------------------------------


def _now(clock: Callable[[], float]) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(clock()), dt.UTC)


def _new_key(key_type: str, *, ca: bool) -> CAKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072 if ca else 2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ConfigError(f"unknown key type {key_type!r}; use 'ec' (ECDSA P-256) or 'rsa'")


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False, ca: bool = False
               ) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
                         key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False)


def _base_builder(subject: x509.Name, key: CAKey, issuer_name: x509.Name, issuer_public: Any,
                  not_before: dt.datetime, not_after: dt.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
    )


def _ca_certificate(subject: x509.Name, key: CAKey, issuer_name: x509.Name, issuer_key: CAKey,
                    now: dt.datetime, lifetime: dt.timedelta, *, path_length: int | None) -> x509.Certificate:
    builder = (
        _base_builder(subject, key, issuer_name, issuer_key.public_key(), now - CA_BACKDATE, now + lifetime)
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(digital_signature=True, ca=True), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    """An IP literal becomes iPAddress, ``scheme://...`` a URI, anything else a (possibly wildcard) dNSName."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if "://" in name:
        return x509.UniformResourceIdentifier(name)
    try:
        label = name.rstrip(".").encode("idna").decode("ascii") if not name.startswith("*.") else \
            "*." + name[2:].rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise ConfigError(f"{name!r} is neither a DNS name nor an IP address") from None
    if not _DNS_NAME.fullmatch(label):
        raise ConfigError(f"{name!r} is neither a DNS name nor an IP address")
    if label.rsplit(".", 1)[-1].isdigit():  # RFC 3696 §2: a top-level domain is never all digits
        raise ConfigError(f"{name!r} is not a valid IP address, and a DNS name never ends in an all-digit label")
    if label.startswith("*.") and label.count(".") < 2:
        raise ConfigError(f"{name!r}: a wildcard needs two labels after '*.' (like *.example.com); clients refuse "
                          "one for a whole top-level domain")
    return x509.DNSName(label.lower())


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


def _slug(name: str | None) -> str:
    text = (name or "cert").rsplit("/", 1)[-1].replace("*", "wildcard")
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "cert"


# --- files --------------------------------------------------------------------------------------------------


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load CA certificate {path}: {exc}") from None


def _load_key(path: Path) -> CAKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load CA key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}; a tlskit CA uses ECDSA or RSA keys")
    return key


def _write_key(path: Path, key: CAKey) -> None:
    """Write a PKCS#8 PEM key, created 0600 and never over an existing file."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; refusing to overwrite a private key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_certs(path: Path, certs: Sequence[x509.Certificate]) -> None:
    _atomic_write(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs), mode=0o644)


def _atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _crl_builder(issuer: x509.Certificate, key: CAKey, now: dt.datetime, days: int,
                 number: int) -> x509.CertificateRevocationListBuilder:
    """A CRL of ``issuer`` (RFC 5280 §5): lastUpdate now, nextUpdate ``days`` ahead, CRL number, AKI."""
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
