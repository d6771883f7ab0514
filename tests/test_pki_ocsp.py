"""OCSP (RFC 6960): our responder (direct, over HTTP, and queried by `openssl ocsp`) and verify_ocsp_response."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from tests.certs import make_ca, make_leaf
from tests.interop.peers import require
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, CertificateRevoked
from tlskit.pki.ca import CertificateAuthority, parse_reason
from tlskit.pki.ocsp import OCSPResponder, build_request, cert_id_hashes, verify_ocsp_response
from tlskit.pki.ocsp_http import OCSPHTTPServer, fetch, post_ocsp

BAD = AlertDescription.bad_certificate_status_response


class Clock:
    def __init__(self) -> None:
        self.t = dt.datetime.now(dt.UTC).timestamp()

    def __call__(self) -> float:
        return self.t

    @property
    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.t, dt.UTC)


@dataclass
class Setup:
    ca: CertificateAuthority
    good: x509.Certificate
    revoked: x509.Certificate
    stranger: x509.Certificate  # signed by the issuing CA's key but never recorded: "unknown"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    ca = CertificateAuthority.init(tmp_path_factory.mktemp("ocsp") / "ca", intermediate=True)
    good, revoked = ca.issue(["good.test"]).certificate, ca.issue(["revoked.test"]).certificate
    ca.revoke(revoked.serial_number, parse_reason("keyCompromise"))
    key = ca._issuer_key()
    stranger = (x509.CertificateBuilder().subject_name(good.subject).issuer_name(ca.issuer.subject)
                .public_key(good.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(good.not_valid_before_utc).not_valid_after(good.not_valid_after_utc)
                .sign(key, hashes.SHA256()))
    return Setup(ca, good, revoked, stranger)


def _respond(responder: OCSPResponder, cert: x509.Certificate, issuer: x509.Certificate,
             nonce: bytes | None = None) -> bytes:
    return responder.respond(build_request(cert, issuer, nonce=nonce))


def _bad(der: bytes, cert: x509.Certificate, issuer: x509.Certificate, now: dt.datetime,
         nonce: bytes | None = None) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        verify_ocsp_response(der, cert, issuer, now, nonce=nonce)
    assert info.value.description == BAD
    return info.value


# --- CertID ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()])
def test_cert_id_hashes_match_cryptography_request_builder(setup: Setup, algorithm: hashes.HashAlgorithm) -> None:
    request = ocsp.OCSPRequestBuilder().add_certificate(setup.good, setup.ca.issuer, algorithm).build()
    assert cert_id_hashes(setup.ca.issuer, algorithm) == (request.issuer_name_hash, request.issuer_key_hash)


# --- verify_ocsp_response ------------------------------------------------------------------------------------


def test_good_response_signed_by_the_issuer(setup: Setup) -> None:
    clock = Clock()
    responder = setup.ca.responder()
    responder.clock = clock
    status = verify_ocsp_response(_respond(responder, setup.good, setup.ca.issuer), setup.good, setup.ca.issuer,
                                  clock.now)
    assert status.status == "good" and status.signer == "issuer"
    assert status.next_update is not None and status.next_update - status.this_update == dt.timedelta(hours=1)


def test_good_response_signed_by_a_delegated_responder(setup: Setup) -> None:
    responder = setup.ca.responder(delegated=True)
    status = verify_ocsp_response(_respond(responder, setup.good, setup.ca.issuer), setup.good, setup.ca.issuer,
                                  dt.datetime.now(dt.UTC))
    assert status.status == "good" and status.signer.startswith("delegated responder")
    signer, _ = setup.ca.ocsp_signer()
    eku = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.OCSP_SIGNING in eku
    signer.extensions.get_extension_for_class(x509.OCSPNoCheck)


def test_a_running_delegated_responder_renews_its_signer(tmp_path: Path) -> None:
    """`ca ocsp-serve --delegated` made its 90-day signer once: after 91 days of uptime it still signed with it
    and every verifier (ours, openssl) refused the responses as signed by an expired responder."""
    clock = Clock()
    ca = CertificateAuthority.init(tmp_path / "ca", intermediate=True, clock=clock)
    leaf = ca.issue(["good.test"], days=365).certificate
    responder = ca.responder(delegated=True)
    first = ocsp.load_der_ocsp_response(_respond(responder, leaf, ca.issuer)).certificates[0]
    clock.t += 91 * 86400
    der = _respond(responder, leaf, ca.issuer)
    renewed = ocsp.load_der_ocsp_response(der).certificates[0]
    assert renewed.serial_number != first.serial_number and renewed.not_valid_after_utc > clock.now
    assert verify_ocsp_response(der, leaf, ca.issuer, clock.now).status == "good"


def test_revoked_response_raises_certificate_revoked_with_reason_and_time(setup: Setup) -> None:
    der = _respond(setup.ca.responder(), setup.revoked, setup.ca.issuer)
    with pytest.raises(CertificateRevoked) as info:
        verify_ocsp_response(der, setup.revoked, setup.ca.issuer, dt.datetime.now(dt.UTC))
    assert info.value.description == AlertDescription.certificate_revoked
    assert info.value.reason == "keyCompromise" and info.value.revoked_at is not None
    assert "revoked at" in info.value.message and "keyCompromise" in info.value.message


def test_serial_the_ca_never_issued_is_unknown(setup: Setup) -> None:
    der = _respond(setup.ca.responder(), setup.stranger, setup.ca.issuer)
    status = verify_ocsp_response(der, setup.stranger, setup.ca.issuer, dt.datetime.now(dt.UTC))
    assert status.status == "unknown"


def test_expired_and_premature_responses_are_rejected(setup: Setup) -> None:
    clock = Clock()
    responder = setup.ca.responder(validity=dt.timedelta(hours=1))
    responder.clock = clock
    der = _respond(responder, setup.good, setup.ca.issuer)
    late = clock.now + dt.timedelta(hours=1, minutes=6)
    assert "expired" in _bad(der, setup.good, setup.ca.issuer, late).message
    # within the 5-minute skew allowance on both sides
    verify_ocsp_response(der, setup.good, setup.ca.issuer, clock.now + dt.timedelta(hours=1, minutes=4))
    verify_ocsp_response(der, setup.good, setup.ca.issuer, clock.now - dt.timedelta(minutes=4))
    early = clock.now - dt.timedelta(minutes=6)
    assert "not yet valid" in _bad(der, setup.good, setup.ca.issuer, early).message


def test_response_about_another_certificate_is_rejected(setup: Setup) -> None:
    der = _respond(setup.ca.responder(), setup.good, setup.ca.issuer)
    assert "not certificate" in _bad(der, setup.revoked, setup.ca.issuer, dt.datetime.now(dt.UTC)).message


def test_response_signed_by_a_stranger_is_rejected(setup: Setup) -> None:
    other = make_ca("someone else")
    forged = OCSPResponder(issuer=setup.ca.issuer, signer_cert=other.cert, signer_key=other.key,
                           lookup=setup.ca.status)
    der = _respond(forged, setup.good, setup.ca.issuer)
    _bad(der, setup.good, setup.ca.issuer, dt.datetime.now(dt.UTC))


def test_delegate_issued_by_another_ca_is_rejected(setup: Setup) -> None:
    other = make_ca("someone else")
    delegate = make_leaf(other, ["ocsp.test"])
    forged = OCSPResponder(issuer=setup.ca.issuer, signer_cert=delegate.cert, signer_key=delegate.key,
                           lookup=setup.ca.status)
    err = _bad(_respond(forged, setup.good, setup.ca.issuer), setup.good, setup.ca.issuer, dt.datetime.now(dt.UTC))
    assert "did not issue" in err.message


def test_delegate_without_ocsp_signing_eku_is_rejected(setup: Setup, tmp_path: Path) -> None:
    issued = setup.ca.issue(["not-a-responder.test"], out=tmp_path / "x")
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(issued.key_path.read_bytes(), None)
    forged = OCSPResponder(issuer=setup.ca.issuer, signer_cert=issued.certificate, signer_key=key,  # type: ignore[arg-type]
                           lookup=setup.ca.status)
    err = _bad(_respond(forged, setup.good, setup.ca.issuer), setup.good, setup.ca.issuer, dt.datetime.now(dt.UTC))
    assert "OCSPSigning" in err.message


def test_nonce_is_echoed_and_checked(setup: Setup) -> None:
    now = dt.datetime.now(dt.UTC)
    der = _respond(setup.ca.responder(), setup.good, setup.ca.issuer, nonce=b"n" * 16)
    assert verify_ocsp_response(der, setup.good, setup.ca.issuer, now, nonce=b"n" * 16).status == "good"
    assert "another nonce" in _bad(der, setup.good, setup.ca.issuer, now, nonce=b"m" * 16).message
    plain = _respond(setup.ca.responder(), setup.good, setup.ca.issuer)
    assert "echo" in _bad(plain, setup.good, setup.ca.issuer, now, nonce=b"n" * 16).message


def test_garbage_and_unsuccessful_responses_are_rejected(setup: Setup) -> None:
    now = dt.datetime.now(dt.UTC)
    assert "not valid DER" in _bad(b"\x30\x03junk", setup.good, setup.ca.issuer, now).message
    try_later = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)
    from cryptography.hazmat.primitives.serialization import Encoding

    assert "TRY_LATER" in _bad(try_later.public_bytes(Encoding.DER), setup.good, setup.ca.issuer, now).message


def test_responder_answers_malformed_and_unauthorized(setup: Setup) -> None:
    responder = setup.ca.responder()
    assert ocsp.load_der_ocsp_response(responder.respond(b"nonsense")).response_status == \
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    other = make_ca("other")
    foreign = make_leaf(other, ["x.test"])
    answer = ocsp.load_der_ocsp_response(responder.respond(build_request(foreign.cert, other.cert)))
    assert answer.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    size = (n.bit_length() + 7) // 8
    length = bytes([n]) if n < 0x80 else bytes([0x80 | size]) + n.to_bytes(size, "big")
    return bytes([tag]) + length + content


def _request_with_extensions(cert: x509.Certificate, issuer: x509.Certificate, *extensions: bytes) -> bytes:
    """An OCSPRequest (RFC 6960 §4.1.1) for ``cert`` with these raw Extension DERs (cryptography's builder
    refuses duplicates, so it is written by hand)."""
    name_hash, key_hash = cert_id_hashes(issuer, hashes.SHA1())
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")
    cert_id = _der(0x30, _der(0x30, bytes.fromhex("06052b0e03021a0500")) + _der(0x04, name_hash)
                   + _der(0x04, key_hash) + _der(0x02, serial))
    tbs = _der(0x30, _der(0x30, _der(0x30, cert_id)) + _der(0xA2, _der(0x30, b"".join(extensions))))
    return _der(0x30, tbs)


NONCE = _der(0x30, bytes.fromhex("06092b0601050507300102") + _der(0x04, _der(0x04, b"A" * 16)))
CRITICAL_UNKNOWN = _der(0x30, bytes.fromhex("06042a030405") + bytes.fromhex("0101ff") + _der(0x04, b"\x05\x00"))


@pytest.mark.parametrize("extensions", [(NONCE, NONCE), (CRITICAL_UNKNOWN,)], ids=["two-nonces", "critical-unknown"])
def test_responder_answers_malformed_for_a_duplicate_or_unknown_critical_extension(
    setup: Setup, extensions: tuple[bytes, ...]
) -> None:
    """Two nonces crashed the handler thread (DuplicateExtension, no answer at all); an unknown critical
    extension was ignored (RFC 6960 §4.4 lets it be refused, as OpenSSL's responder does)."""
    responder = setup.ca.responder()
    assert ocsp.load_der_ocsp_response(responder.respond(_request_with_extensions(setup.good, setup.ca.issuer, NONCE))
                                       ).response_status == ocsp.OCSPResponseStatus.SUCCESSFUL  # the builder is right
    answer = responder.respond(_request_with_extensions(setup.good, setup.ca.issuer, *extensions))
    assert ocsp.load_der_ocsp_response(answer).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_a_response_with_an_unknown_cert_id_hash_is_a_certificate_error_and_stapling_goes_on(tmp_path: Path) -> None:
    """An unrecognised hash OID in the CertID raised cryptography's UnsupportedAlgorithm: it ended the stapling
    thread for every certificate, and RevocationPolicy raised it even in soft-fail."""
    import time

    from tlskit.pki.revocation import RevocationPolicy
    from tlskit.pki.stapling import StapleCache

    ca = CertificateAuthority.init(tmp_path / "ca", intermediate=True, ocsp_url="http://127.0.0.1:9/")
    setup = Setup(ca, ca.issue(["good.test"]).certificate, ca.issue(["r.test"]).certificate, ca.issuer)
    good = _respond(setup.ca.responder(), setup.good, setup.ca.issuer)
    sha1 = bytes.fromhex("06052b0e03021a")
    assert good.count(sha1) == 1
    odd = good.replace(sha1, bytes.fromhex("06052b0e03021b"))
    assert "cannot be read" in _bad(odd, setup.good, setup.ca.issuer, dt.datetime.now(dt.UTC)).message
    assert RevocationPolicy(mode="soft-fail").check([setup.good, setup.ca.issuer], odd, dt.datetime.now(dt.UTC))
    calls: list[float] = []

    def fetcher(url: str, der: bytes | None) -> bytes:
        calls.append(time.monotonic())
        return odd if len(calls) == 1 else good

    from cryptography.hazmat.primitives.serialization import Encoding

    chain = [setup.good.public_bytes(Encoding.DER), setup.ca.issuer.public_bytes(Encoding.DER)]
    cache = StapleCache(fetcher=fetcher, retry_interval=0.2, min_refresh=0.2)
    try:
        cache.staple_for(chain)
        deadline = time.monotonic() + 10
        while cache.staple_for(chain) is None:
            assert time.monotonic() < deadline, f"no staple after {len(calls)} fetches"
            time.sleep(0.05)
    finally:
        cache.close()


def test_rsa_ca_responses_verify(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "rsa", key_type="rsa")
    leaf = ca.issue(["rsa.test"]).certificate
    status = verify_ocsp_response(_respond(ca.responder(), leaf, ca.issuer), leaf, ca.issuer, dt.datetime.now(dt.UTC))
    assert status.status == "good"


# --- over HTTP -------------------------------------------------------------------------------------------------


def test_http_post_and_get_with_and_without_a_path_prefix(setup: Setup) -> None:
    routes = {"/crl.der": ("application/pkix-crl", setup.ca.current_crl_der)}
    with OCSPHTTPServer(setup.ca.responder(), routes=routes) as server:
        request = build_request(setup.good, setup.ca.issuer)
        now = dt.datetime.now(dt.UTC)
        assert verify_ocsp_response(post_ocsp(server.url + "/", request), setup.good, setup.ca.issuer,
                                    now).status == "good"
        encoded = base64.b64encode(request).decode()
        for path in (f"/{encoded}", f"/ocsp/{urllib.parse.quote(encoded, safe='')}"):
            answer = fetch(server.url + path)
            assert verify_ocsp_response(answer, setup.good, setup.ca.issuer, now).status == "good"
        crl = x509.load_der_x509_crl(fetch(server.url + "/crl.der"))
        assert crl.get_revoked_certificate_by_serial_number(setup.revoked.serial_number) is not None
        put = urllib.request.Request(server.url + "/", data=b"x", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(put, timeout=5)
        assert info.value.code == 405


def test_http_responder_listens_on_ipv6(setup: Setup) -> None:
    with OCSPHTTPServer(setup.ca.responder(), host="") as server:  # every IPv4 interface, as before
        assert server.server_address[0] == "0.0.0.0"
    with OCSPHTTPServer(setup.ca.responder(), host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        answer = post_ocsp(server.url + "/", build_request(setup.good, setup.ca.issuer))
        status = verify_ocsp_response(answer, setup.good, setup.ca.issuer, dt.datetime.now(dt.UTC))
        assert status.status == "good"


def test_fetch_reports_an_unreachable_responder_as_oserror() -> None:
    with OCSPHTTPServer(OCSPResponder.__new__(OCSPResponder)) as server:
        url = server.url
    with pytest.raises(OSError, match="cannot reach"):
        post_ocsp(url, b"x", timeout=2)


# --- checked by OpenSSL ------------------------------------------------------------------------------------------


def _openssl_ocsp(ca: CertificateAuthority, cert: Path, url: str) -> str:
    proc = subprocess.run(
        [require("openssl"), "ocsp", "-issuer", str(ca.directory / "intermediate.pem"), "-cert", str(cert),
         "-url", url, "-CAfile", str(ca.directory / "root.pem"), "-resp_text"],
        capture_output=True, text=True, timeout=30, check=False)
    return proc.stdout + proc.stderr


@pytest.mark.interop
@pytest.mark.parametrize("delegated", [False, True], ids=["ca-signed", "delegated"])
def test_openssl_ocsp_sees_good_and_revoked(tmp_path: Path, delegated: bool) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", intermediate=True)
    good, bad = ca.issue(["good.test"]), ca.issue(["bad.test"])
    ca.revoke(bad.serial, parse_reason("keyCompromise"))
    with OCSPHTTPServer(ca.responder(delegated=delegated)) as server:
        out = _openssl_ocsp(ca, good.chain_path, server.url + "/")
        assert "Response verify OK" in out and f"{good.chain_path}: good" in out
        assert "OCSP Response Status: successful (0x0)" in out and "Next Update:" in out
        out = _openssl_ocsp(ca, bad.chain_path, server.url + "/")
        assert "Response verify OK" in out and f"{bad.chain_path}: revoked" in out
        assert "Reason: keyCompromise" in out
