"""Client revocation policy: stapled OCSP, fetched OCSP and CRLs (RFC 6960, RFC 5280 §6.3, RFC 7633).

Called after the chain verified. Sources, in order: the stapled response (verified exactly as the server's
stapler does), CRLs from files and, optionally, from the certificates' distribution points, then, optionally,
the leaf's OCSP responder. A "revoked" from any source is :class:`CertificateRevoked` in every mode but
"none". Modes differ only in what happens when the status cannot be established:

- ``none``: nothing is checked.
- ``soft-fail``: warnings are returned (what browsers do): an unreachable responder does not block.
- ``hard-fail``: an invalid staple is ``bad_certificate_status_response``; an undetermined status, or a
  certificate marked must-staple (TLS feature, RFC 7633) without a staple, is an error.
- ``must-staple``: the server must staple a valid, good response, whatever the certificate says.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.hashes import SHA256

from ..enums import AlertDescription
from ..errors import CertificateError, CertificateRevoked, ConfigError
from .ocsp import (
    DEFAULT_SKEW,
    MAX_AGE_WITHOUT_NEXT_UPDATE,
    OCSPStatus,
    build_request,
    ocsp_urls,
    reason_name,
    verify_ocsp_response,
)
from .ocsp_http import OCSP_REQUEST_TYPE, fetch
from .serials import format_serial
from .verify import TrustStore

__all__ = ["HttpFetcher", "Mode", "RevocationPolicy", "crl_urls"]

Mode = Literal["none", "soft-fail", "hard-fail", "must-staple"]
_MODES = ("none", "soft-fail", "hard-fail", "must-staple")

HttpFetcher = Callable[[str, bytes | None], bytes]
"""``fetcher(url, body)``: POST a DER OCSPRequest (``body``), or GET a CRL (``body`` None); OSError on failure."""

_BAD = AlertDescription.bad_certificate_status_response
_MAX_PATH = 8  # certificates from the leaf up (as the verifier's max_chain_depth)
_MAX_URLS = 2  # distribution points / responders asked per certificate: each may take the whole timeout


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The http(s) URLs of the certificate's CRL distribution points (RFC 5280 §4.2.1.13)."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [name.value for point in points for name in point.full_name or ()
            if isinstance(name, x509.UniformResourceIdentifier)
            and name.value.lower().startswith(("http://", "https://"))]


def _must_staple(cert: x509.Certificate) -> bool:
    try:
        features = cert.extensions.get_extension_for_class(x509.TLSFeature).value
    except x509.ExtensionNotFound:
        return False
    return x509.TLSFeatureType.status_request in features


def _label(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string() or '<empty subject>'!r} (serial {format_serial(cert.serial_number)})"


def _default_fetcher(timeout: float) -> HttpFetcher:
    return lambda url, body: fetch(url, body, content_type=OCSP_REQUEST_TYPE, timeout=timeout)


class _Cache:
    """CRLs by file (path, mtime, size) or URL, and fetched OCSP answers by certificate, until they expire."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[str, tuple[tuple[int, int], list[x509.CertificateRevocationList]]] = {}
        self.urls: dict[str, x509.CertificateRevocationList] = {}
        self.ocsp: dict[bytes, OCSPStatus] = {}


@dataclass(frozen=True, kw_only=True)
class RevocationPolicy:
    """How a client checks that the server's (or a server that the client's) certificate is not revoked."""

    mode: Mode = "soft-fail"
    crl_files: tuple[str | os.PathLike[str], ...] = ()
    # Every certificate of the path below the root must be covered by a current CRL of its issuer, not only the
    # leaf (OpenSSL's X509_V_FLAG_CRL_CHECK_ALL, which nginx's ssl_crl sets): a revoked intermediate is found.
    crl_check_all: bool = False
    fetch_ocsp: bool = False
    fetch_crl: bool = False
    fetcher: HttpFetcher | None = None
    timeout: float = 5.0
    skew: dt.timedelta = DEFAULT_SKEW
    _cache: _Cache = field(default_factory=_Cache, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigError(f"revocation mode {self.mode!r} is not one of {', '.join(_MODES)}")
        object.__setattr__(self, "crl_files", tuple(self.crl_files))
        for path in self.crl_files:
            if not Path(path).is_file():
                raise ConfigError(f"CRL file {os.fspath(path)!r} does not exist")
            try:  # a file that is no CRL would check nothing at every handshake: refuse it now
                self._load_crl_file(Path(path))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"CRL file {os.fspath(path)!r} holds no CRL (PEM 'X509 CRL' blocks or DER): "
                                  f"{exc}; make one with `tlskit ca crl CA_DIR` or `openssl ca -gencrl`") from None

    def crl_issuers(self) -> set[x509.Name]:
        """Who issued the CRLs of ``crl_files`` (to tell at start which CA has none)."""
        return {crl.issuer for path in self.crl_files for crl in self._load_crl_file(Path(path))}

    def check(
        self,
        chain: Sequence[x509.Certificate | bytes],
        staple: bytes | None,
        now: dt.datetime,
        *,
        trust: TrustStore | None = None,
    ) -> list[str]:
        """Check a verified chain (leaf first); return warnings, raise when the mode says so.

        ``staple`` is the DER OCSPResponse the server stapled (``HandshakeComplete.ocsp_response``).
        ``trust`` supplies the leaf's issuer when the chain stops at the leaf. Raises
        :class:`CertificateRevoked` (``certificate_revoked``), :class:`CertificateError` with
        ``bad_certificate_status_response`` (bad or missing staple when required) or ``certificate_unknown``
        (hard-fail: status undetermined).
        """
        if self.mode == "none":
            return []
        now = now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)
        certs = [c if isinstance(c, x509.Certificate) else x509.load_der_x509_certificate(bytes(c)) for c in chain]
        if not certs:
            raise ConfigError("RevocationPolicy.check needs at least the leaf certificate")
        strict = self.mode in ("hard-fail", "must-staple")
        leaf = certs[0]
        path, issuers = self._path(certs, trust)
        warnings: list[str] = []
        problems: list[str] = []
        determined = self._check_staple(leaf, issuers[0], staple, now, strict, warnings, problems)
        for cert, issuer in zip(path, issuers, strict=True):
            if issuer is None or cert.subject == cert.issuer:
                continue
            if cert is leaf:
                determined = self._check_crls(cert, issuer, now, problems) or determined
            elif not self.crl_check_all:
                self._check_crls(cert, issuer, now, warnings)
            elif not self._check_crls(cert, issuer, now, ca_problems := list[str]()):
                message = (f"revocation status of {_label(cert)} could not be established: "
                           + ("; ".join(ca_problems) or f"no CRL of its issuer {_label(issuer)}")
                           + " (every certificate of the chain needs its issuer's current CRL, as with nginx's "
                             "ssl_crl: `tlskit ca crl` writes the root's and the intermediate's into crl.pem)")
                if strict:
                    raise CertificateError(AlertDescription.certificate_unknown, message)
                warnings.append(message)
        if not determined and self.fetch_ocsp and issuers[0] is not None:
            determined = self._fetch_ocsp(leaf, issuers[0], now, problems)
        if not determined:
            message = (f"revocation status of {_label(leaf)} could not be established: "
                       + ("; ".join(problems) or "no stapled OCSP response and no CRL or OCSP source to ask"))
            if strict:
                raise CertificateError(AlertDescription.certificate_unknown, message)
            warnings.append(message)
        return warnings

    # --- sources ------------------------------------------------------------------------------------------

    def _path(self, certs: list[x509.Certificate], trust: TrustStore | None
              ) -> tuple[list[x509.Certificate], list[x509.Certificate | None]]:
        """The leaf and the issuers that sign it up to a root, each with its issuer (None where none is known).
        Only these are checked: a server may append certificates that are on no path, and their distribution
        points must not be fetched."""
        path, issuers = [certs[0]], []
        while True:
            issuer = self._issuer_of(path[-1], certs, trust)
            issuers.append(issuer)
            if issuer is None or issuer in path or issuer.subject == issuer.issuer or len(path) >= _MAX_PATH:
                return path, issuers
            path.append(issuer)

    @staticmethod
    def _issuer_of(cert: x509.Certificate, certs: list[x509.Certificate], trust: TrustStore | None
                   ) -> x509.Certificate | None:
        candidates = [*certs, *(trust.roots if trust is not None else ())]
        for candidate in candidates:
            if candidate.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return candidate
        return None

    def _check_staple(self, leaf: x509.Certificate, issuer: x509.Certificate | None, staple: bytes | None,
                      now: dt.datetime, strict: bool, warnings: list[str], problems: list[str]) -> bool:
        """Verify the staple; True when it says good. Raises per the mode."""
        required = self.mode == "must-staple" or (self.mode == "hard-fail" and _must_staple(leaf))
        why = "the policy is must-staple" if self.mode == "must-staple" else \
            "the certificate is marked must-staple (TLS feature status_request, RFC 7633)"
        if staple is None:
            if required:
                raise CertificateError(_BAD, f"server stapled no OCSP response for {_label(leaf)}, but {why}")
            if _must_staple(leaf):
                warnings.append(f"{_label(leaf)} is marked must-staple but the server stapled no OCSP response")
            return False
        if issuer is None:
            message = f"cannot verify the stapled OCSP response: the issuer of {_label(leaf)} is unknown"
            if strict:
                raise CertificateError(_BAD, message)
            problems.append(message)
            return False
        try:
            status = verify_ocsp_response(staple, leaf, issuer, now, skew=self.skew)
        except CertificateRevoked:
            raise
        except CertificateError as exc:
            if strict:
                raise
            warnings.append(f"ignoring the stapled OCSP response: {exc.message}")
            return False
        if status.status == "good":
            return True
        if required:
            raise CertificateError(_BAD, f"stapled OCSP response says 'unknown' for {_label(leaf)}, but {why}")
        problems.append("the stapled OCSP response says 'unknown'")
        return False

    def _check_crls(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime,
                    problems: list[str]) -> bool:
        """True when a current CRL of ``issuer`` covers ``cert`` and does not list it; revoked raises.

        A CRL the issuer signed that lists the certificate revokes it even when the CRL is stale or not yet
        valid: revocation is permanent (RFC 5280 §5.3.1; openssl verify says both). Staleness only means the
        CRL cannot vouch for a certificate it does not list."""
        covered = False
        for crl, source in self._crls_for(cert, issuer, now, problems):
            if crl.issuer != cert.issuer:
                continue
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                problems.append(f"CRL {source} is not signed by {_label(issuer)}")
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            next_update = crl.next_update_utc or crl.last_update_utc + MAX_AGE_WITHOUT_NEXT_UPDATE
            if entry is None and next_update < now - self.skew:
                problems.append(f"CRL {source} is stale: nextUpdate {next_update:%Y-%m-%d %H:%M:%S}Z has passed")
                continue
            if entry is None and crl.last_update_utc > now + self.skew:
                problems.append(f"CRL {source} is not yet valid (lastUpdate in the future: clock skew?)")
                continue
            if entry is not None:
                try:
                    reason: x509.ReasonFlags | None = entry.extensions.get_extension_for_class(
                        x509.CRLReason).value.reason
                except x509.ExtensionNotFound:
                    reason = None
                revoked_at = entry.revocation_date_utc
                raise CertificateRevoked(
                    f"certificate {_label(cert)} is revoked: CRL {source} lists it since "
                    f"{revoked_at:%Y-%m-%d %H:%M:%S}Z for {reason_name(reason)}",
                    serial=cert.serial_number, revoked_at=revoked_at, reason=reason_name(reason))
            covered = True
        return covered

    def _crls_for(self, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime,
                  problems: list[str]) -> list[tuple[x509.CertificateRevocationList, str]]:
        found = []
        for path in self.crl_files:
            try:
                found += [(crl, repr(os.fspath(path))) for crl in self._load_crl_file(Path(path))]
            except (OSError, ValueError) as exc:
                problems.append(f"cannot load CRL file {os.fspath(path)!r}: {exc}")
        if self.fetch_crl:
            for url in crl_urls(cert)[:_MAX_URLS]:
                try:
                    found.append((self._fetch_crl(url, now), url))
                except (OSError, ValueError) as exc:
                    problems.append(f"cannot fetch CRL {url}: {exc}")
        return found

    def _load_crl_file(self, path: Path) -> list[x509.CertificateRevocationList]:
        """Every CRL in the file (a PEM file may hold several, e.g. an intermediate's and its root's)."""
        info = path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        key = os.fspath(path)
        with self._cache.lock:
            cached = self._cache.files.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        crls = _parse_crls(path.read_bytes())
        with self._cache.lock:
            self._cache.files[key] = (stamp, crls)
        return crls

    def _fetch_crl(self, url: str, now: dt.datetime) -> x509.CertificateRevocationList:
        with self._cache.lock:
            cached = self._cache.urls.get(url)
        if cached is not None and cached.next_update_utc is not None and now < cached.next_update_utc:
            return cached
        try:
            crl = _parse_crl((self.fetcher or _default_fetcher(self.timeout))(url, None))
        except (OSError, ValueError):
            if cached is not None:  # a stale-but-cached CRL is judged (and refused) by the caller
                return cached
            raise
        with self._cache.lock:
            self._cache.urls[url] = crl
        return crl

    def _fetch_ocsp(self, leaf: x509.Certificate, issuer: x509.Certificate, now: dt.datetime,
                    problems: list[str]) -> bool:
        key = leaf.fingerprint(SHA256())
        with self._cache.lock:
            cached = self._cache.ocsp.get(key)
        if cached is not None and now < (cached.next_update or cached.this_update + MAX_AGE_WITHOUT_NEXT_UPDATE):
            return cached.status == "good"
        urls = ocsp_urls(leaf)
        if not urls:
            problems.append(f"{_label(leaf)} names no OCSP responder")
            return False
        request = build_request(leaf, issuer)
        for url in urls[:_MAX_URLS]:
            try:
                der = (self.fetcher or _default_fetcher(self.timeout))(url, request)
                status = verify_ocsp_response(der, leaf, issuer, now, skew=self.skew)
            except CertificateRevoked:  # (before OSError: certificate errors are OSErrors too)
                raise
            except CertificateError as exc:
                problems.append(f"OCSP responder {url}: {exc.message}")
                continue
            except OSError as exc:
                problems.append(f"OCSP responder {url} unreachable: {exc}")
                continue
            with self._cache.lock:
                self._cache.ocsp[key] = status
            if status.status == "good":
                return True
            problems.append(f"OCSP responder {url} says 'unknown'")
        return False


def _parse_crl(data: bytes) -> x509.CertificateRevocationList:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def _parse_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """The CRLs of a file: PEM blocks (one or more), or one DER CRL."""
    if not data.lstrip().startswith(b"-----BEGIN"):
        return [x509.load_der_x509_crl(data)]
    blocks = _PEM_CRL.findall(data)
    if not blocks:
        raise ValueError("no '-----BEGIN X509 CRL-----' block")
    return [x509.load_pem_x509_crl(block) for block in blocks]

