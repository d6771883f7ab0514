"""Certificates by server name (SNI, RFC 6066 §3) for ``ServerConfig.cert_resolver``.

Each name (exact, or a ``*.example.com`` wildcard covering one label) maps to the chains that answer it, so an
RSA and an ECDSA chain for the same names form a pair: the first whose key signs with a scheme the client
offered wins. A ClientHello without SNI, or naming nobody, gets the first certificate (nginx's default server).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from ..config import CertifiedKey
from ..enums import SignatureScheme
from ..errors import ConfigError
from .settings import CertificateSpec, SettingsError

_log = logging.getLogger("tlskit.serve")

__all__ = ["CertificateStore", "files_fingerprint"]

MIN_RSA_BITS = 2048  # OpenSSL 3 will not load a smaller one ("ee key too small": nginx, s_server do not start)


@dataclass(frozen=True, slots=True)
class CertificateStore:
    default: tuple[CertifiedKey, ...]
    exact: dict[str, tuple[CertifiedKey, ...]]
    wildcard: dict[str, tuple[CertifiedKey, ...]]  # "example.com" for "*.example.com"

    @classmethod
    def load(cls, specs: Sequence[CertificateSpec]) -> CertificateStore:
        """Load every chain and key; ``SettingsError`` names the file and what is wrong with it."""
        exact: dict[str, list[CertifiedKey]] = {}
        wildcard: dict[str, list[CertifiedKey]] = {}
        loaded: list[CertifiedKey] = []
        for spec in specs:
            try:
                ck = CertifiedKey.from_pem_files(spec.cert, spec.key)
            except ConfigError as e:  # its message names the PEM file and the problem; the origin, the setting
                raise SettingsError(f"{spec.origin}{e}") from None
            if isinstance(ck.private_key, rsa.RSAPrivateKey) and ck.private_key.key_size < MIN_RSA_BITS:
                raise SettingsError(f"{spec.origin}{spec.key}: a {ck.private_key.key_size}-bit RSA key, which clients "
                                    f"refuse (OpenSSL's default security level; CA/B Forum BR §6.1.5): issue the "
                                    f"certificate for a new key of {MIN_RSA_BITS} bits or more, or an ECDSA key")
            loaded.append(ck)
            for problem in _chain_problems(ck, spec.names):
                _log.warning("%s%s: %s", spec.origin, spec.cert, problem)
            for name in spec.names or _dns_names(ck.leaf):
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], []).append(ck)
                else:
                    exact.setdefault(name, []).append(ck)
        if not loaded:
            raise SettingsError("no certificate configured (add a [[certificate]] with cert and key)")
        kind = type(loaded[0].private_key)
        other = [c for c in loaded if not isinstance(c.private_key, kind)]
        default = (loaded[0], *other[:1])  # the first chain, plus one of another key type (RSA+ECDSA pair)
        return cls(default, {k: tuple(v) for k, v in exact.items()}, {k: tuple(v) for k, v in wildcard.items()})

    def candidates(self, server_name: str | None) -> tuple[CertifiedKey, ...]:
        if server_name:
            name = server_name.lower().rstrip(".")
            if name in self.exact:
                return self.exact[name]
            parent = name.partition(".")[2]
            if parent in self.wildcard:
                return self.wildcard[parent]
        return self.default

    def resolve(self, server_name: str | None, schemes: Sequence[SignatureScheme]) -> CertifiedKey | None:
        """The ``cert_resolver`` hook: a chain for this name whose key can sign one of ``schemes``."""
        found = self.candidates(server_name)
        offered = set(schemes)
        for ck in found:
            if offered.intersection(ck.schemes):
                return ck
        return found[0] if found else None  # the engine then sends the precise handshake_failure


def _dns_names(leaf: x509.Certificate) -> list[str]:
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in sans.get_values_for_type(x509.DNSName)]


def files_fingerprint(paths: Sequence[Path]) -> str:
    """Changes when any file is replaced, rewritten or removed (inode, size, mtime in ns), or a symlink on its
    path is pointed elsewhere (certbot's live/ -> archive/ renewal)."""
    h = hashlib.sha256()
    for path in paths:
        try:
            st = path.stat()
            h.update(f"{path}\0{os.path.realpath(path)}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()


def _chain_problems(ck: CertifiedKey, names: Sequence[str]) -> list[str]:
    """What every client will refuse about a chain, said at load time rather than at the first handshake (nginx
    does not check either): expired or not yet valid, a certificate not issued by the next, names it lacks."""
    problems = []
    now = dt.datetime.now(dt.UTC)
    certs = [x509.load_der_x509_certificate(der) for der in ck.chain]
    for cert in certs[:2]:  # the leaf and its issuer: further up, a client may take another path (cross-signs)
        label = cert.subject.rfc4514_string() or "<empty subject>"
        if cert.not_valid_after_utc < now:
            problems.append(f"{label} expired on {cert.not_valid_after_utc:%Y-%m-%d} (clients refuse it: renew it)")
        elif cert.not_valid_before_utc > now:
            problems.append(f"{label} is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
    for cert, issuer in itertools.pairwise(certs):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            problems.append(f"{cert.subject.rfc4514_string()} is not issued by the next certificate in the file "
                            f"({issuer.subject.rfc4514_string()}): put each certificate's issuer right after it")
            break
    listed = _dns_names(certs[0])
    for name in names:
        bare = name.lower().rstrip(".")
        if _is_ip(bare):
            continue  # an IP literal is matched against iPAddress SANs: not a DNS name to look for
        parent = bare.partition(".")[2]
        if bare not in listed and not (parent and not bare.startswith("*.") and f"*.{parent}" in listed):
            problems.append(f"names = [..., {name!r}]: the certificate is not for it (it names "
                            f"{', '.join(sorted(listed)) or 'no DNS name'}): clients asking for it will refuse it")
    return problems


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True
