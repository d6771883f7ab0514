"""Client revocation policy (tlskit.pki.revocation): staples, fetched OCSP, CRL files and distribution points."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.interop.peers import free_port
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, CertificateRevoked, ConfigError
from tlskit.pki import TrustStore
from tlskit.pki.ca import CertificateAuthority, parse_reason
from tlskit.pki.ocsp import build_request
from tlskit.pki.ocsp_http import OCSPHTTPServer
from tlskit.pki.revocation import RevocationPolicy

NOW = dt.datetime.now(dt.UTC)


@dataclass
class World:
    ca: CertificateAuthority
    server: OCSPHTTPServer
    good: list[x509.Certificate]  # leaf, intermediate
    revoked: list[x509.Certificate]

    def staple(self, leaf: x509.Certificate) -> bytes:
        return self.ca.responder().respond(build_request(leaf, self.ca.issuer))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    server = OCSPHTTPServer(responder=None)  # type: ignore[arg-type]
    ca = CertificateAuthority.init(tmp_path_factory.mktemp("rev") / "ca", intermediate=True,
                                   ocsp_url=server.url + "/", crl_url=server.url + "/crl.der")
    server.responder = ca.responder()
    server.routes["/crl.der"] = ("application/pkix-crl", ca.current_crl_der)
    good, bad = ca.issue(["good.test"]).certificate, ca.issue(["bad.test"]).certificate
    ca.revoke(bad.serial_number, parse_reason("keyCompromise"))
    ca.crl()
    with server:
        yield World(ca, server, [good, ca.issuer], [bad, ca.issuer])


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> World:
    """A CA whose certificates point at a responder that is not running."""
    url = f"http://127.0.0.1:{free_port()}"
    ca = CertificateAuthority.init(tmp_path_factory.mktemp("off") / "ca", intermediate=True, ocsp_url=url + "/",
                                   crl_url=url + "/crl.der")
    good, bad = ca.issue(["good.test"]).certificate, ca.issue(["bad.test"]).certificate
    ca.revoke(bad.serial_number)
    return World(ca, OCSPHTTPServer.__new__(OCSPHTTPServer), [good, ca.issuer], [bad, ca.issuer])


def _raises(policy: RevocationPolicy, chain: list[x509.Certificate], staple: bytes | None,
            alert: AlertDescription, **kw: object) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        policy.check(chain, staple, NOW, **kw)  # type: ignore[arg-type]
    assert info.value.description == alert
    return info.value


# --- stapled responses ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["soft-fail", "hard-fail", "must-staple"])
def test_good_staple_passes_silently(world: World, mode: str) -> None:
    assert RevocationPolicy(mode=mode).check(world.good, world.staple(world.good[0]), NOW) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["soft-fail", "hard-fail", "must-staple"])
def test_revoked_staple_is_certificate_revoked_in_every_mode(world: World, mode: str) -> None:
    with pytest.raises(CertificateRevoked) as info:
        RevocationPolicy(mode=mode).check(world.revoked, world.staple(world.revoked[0]), NOW)  # type: ignore[arg-type]
    assert info.value.description == AlertDescription.certificate_revoked and info.value.reason == "keyCompromise"


def test_mode_none_checks_nothing(world: World) -> None:
    assert RevocationPolicy(mode="none").check(world.revoked, world.staple(world.revoked[0]), NOW) == []


def test_invalid_staple_is_an_error_in_hard_fail_and_a_warning_in_soft_fail(world: World) -> None:
    wrong = world.staple(world.good[0])  # about another certificate
    _raises(RevocationPolicy(mode="hard-fail"), world.revoked, wrong, AlertDescription.bad_certificate_status_response)
    warnings = RevocationPolicy(mode="soft-fail").check(world.good, b"junk", NOW)
    assert any("ignoring the stapled OCSP response" in w for w in warnings)


def test_must_staple_requires_a_staple(world: World) -> None:
    err = _raises(RevocationPolicy(mode="must-staple", fetch_ocsp=True), world.good, None,
                  AlertDescription.bad_certificate_status_response)
    assert "stapled no OCSP response" in err.message


def test_staple_for_a_leaf_only_chain_uses_the_trust_store_for_the_issuer(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca")  # the root issues directly
    leaf = ca.issue(["leaf.test"]).certificate
    staple = ca.responder().respond(build_request(leaf, ca.issuer))
    policy = RevocationPolicy(mode="hard-fail")
    assert policy.check([leaf], staple, NOW, trust=TrustStore(roots=(ca.root,))) == []
    _raises(policy, [leaf], staple, AlertDescription.bad_certificate_status_response)


# --- fetched OCSP ----------------------------------------------------------------------------------------------


def test_fetched_ocsp_good_and_revoked(world: World) -> None:
    policy = RevocationPolicy(mode="hard-fail", fetch_ocsp=True)
    assert policy.check(world.good, None, NOW) == []
    with pytest.raises(CertificateRevoked):
        policy.check(world.revoked, None, NOW)


def test_unreachable_responder_warns_in_soft_fail_and_fails_in_hard_fail(offline: World) -> None:
    warnings = RevocationPolicy(mode="soft-fail", fetch_ocsp=True, timeout=2).check(offline.revoked, None, NOW)
    assert len(warnings) == 1 and "could not be established" in warnings[0] and "unreachable" in warnings[0]
    err = _raises(RevocationPolicy(mode="hard-fail", fetch_ocsp=True, timeout=2), offline.revoked, None,
                  AlertDescription.certificate_unknown)
    assert "unreachable" in err.message


def test_no_source_at_all_is_undetermined(world: World) -> None:
    assert "no stapled OCSP response" in RevocationPolicy(mode="soft-fail").check(world.good, None, NOW)[0]
    _raises(RevocationPolicy(mode="hard-fail"), world.good, None, AlertDescription.certificate_unknown)


def test_fetched_ocsp_answers_are_cached(world: World) -> None:
    calls: list[str] = []

    def fetcher(url: str, body: bytes | None) -> bytes:
        calls.append(url)
        assert body is not None
        return world.ca.responder().respond(body)

    policy = RevocationPolicy(mode="hard-fail", fetch_ocsp=True, fetcher=fetcher)
    policy.check(world.good, None, NOW)
    policy.check(world.good, None, NOW + dt.timedelta(minutes=10))
    assert len(calls) == 1


# --- CRLs -------------------------------------------------------------------------------------------------------


def test_crl_file_catches_a_revoked_certificate_and_clears_a_good_one(world: World) -> None:
    policy = RevocationPolicy(mode="hard-fail", crl_files=(world.ca.directory / "crl.pem",))
    assert policy.check(world.good, None, NOW) == []
    with pytest.raises(CertificateRevoked) as info:
        policy.check(world.revoked, None, NOW)
    assert "CRL" in info.value.message and "keyCompromise" in info.value.message


def test_crl_from_the_distribution_point(world: World) -> None:
    policy = RevocationPolicy(mode="hard-fail", fetch_crl=True)
    assert policy.check(world.good, None, NOW) == []
    with pytest.raises(CertificateRevoked):
        policy.check(world.revoked, None, NOW)


def test_stale_crl_does_not_count(world: World) -> None:
    policy = RevocationPolicy(mode="soft-fail", crl_files=(world.ca.directory / "crl.der",))
    warnings = policy.check(world.good, None, NOW + dt.timedelta(days=30))
    assert warnings and "stale" in warnings[0]


@pytest.mark.parametrize("mode", ["soft-fail", "hard-fail"])
@pytest.mark.parametrize("when", [dt.timedelta(days=30), -dt.timedelta(days=1)], ids=["stale", "not-yet-valid"])
def test_a_stale_crl_that_lists_a_certificate_still_revokes_it(world: World, mode: str, when: dt.timedelta) -> None:
    """Revocation is permanent (RFC 5280 §5.3.1) and `openssl verify` says "certificate revoked" with "CRL has
    expired": a week after `tlskit ca crl`, a revoked client got into `tlskit serve` (soft-fail: a warning)."""
    policy = RevocationPolicy(mode=mode, crl_files=(world.ca.directory / "crl.der",))  # type: ignore[arg-type]
    with pytest.raises(CertificateRevoked):
        policy.check(world.revoked, None, NOW + when)


def test_a_file_that_is_not_a_crl_is_refused_when_the_policy_is_made(world: World, tmp_path: Path) -> None:
    """It was accepted, then each handshake logged "cannot load CRL file" and, soft-failing, let revoked
    certificates in."""
    cert = tmp_path / "cert.pem"
    cert.write_bytes(world.good[0].public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError, match="holds no CRL"):
        RevocationPolicy(mode="hard-fail", crl_files=(cert,))


def test_a_pem_file_with_several_crls_uses_each(world: World, tmp_path: Path) -> None:
    """`tlskit ca crl` of a two-tier CA writes the intermediate's CRL and the root's into crl.pem (nginx sets
    CRL_CHECK_ALL and wants both)."""
    other = CertificateAuthority.init(tmp_path / "other", intermediate=True)
    other.crl()
    both = tmp_path / "both.pem"
    both.write_bytes((other.directory / "crl.pem").read_bytes() + (world.ca.directory / "crl.pem").read_bytes())
    policy = RevocationPolicy(mode="hard-fail", crl_files=(both,))
    with pytest.raises(CertificateRevoked):
        policy.check(world.revoked, None, NOW)
    assert policy.check(world.good, None, NOW) == []


def test_crl_signed_by_another_ca_does_not_count(world: World, tmp_path: Path) -> None:
    other = CertificateAuthority.init(tmp_path / "other", intermediate=True)
    other.crl()
    policy = RevocationPolicy(mode="soft-fail", crl_files=(other.directory / "crl.pem",))
    assert policy.check(world.revoked, None, NOW)  # a warning, not a pass and not a crash


def test_bad_configuration_is_reported() -> None:
    with pytest.raises(ConfigError, match="revocation mode"):
        RevocationPolicy(mode="strict")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="does not exist"):
        RevocationPolicy(crl_files=("/nonexistent.crl",))


def test_only_the_verified_path_is_checked_not_certificates_a_server_appends(world: World) -> None:
    """A server appended a certificate on no path whose CRL distribution points named URLs of its choosing: the
    client fetched them (blind requests, before CertificateVerify)."""
    from tests.certs import make_ca

    stranger = make_ca("junk root")
    junk = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "junk")]))
            .issuer_name(stranger.cert.subject).public_key(stranger.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier("http://attacker.invalid/crl")], None, None, None)]), critical=False)
            .sign(stranger.key, hashes.SHA256()))  # type: ignore[arg-type]
    asked: list[str] = []

    def fetcher(url: str, body: bytes | None) -> bytes:
        asked.append(url)
        if body is None:
            return world.ca.current_crl_der()
        raise OSError("no OCSP here")

    policy = RevocationPolicy(mode="hard-fail", fetch_crl=True, fetcher=fetcher)
    assert policy.check([*world.good, junk, stranger.cert], None, NOW) == []
    assert asked and not any("attacker" in url for url in asked), asked


def test_a_fetch_is_bounded_as_a_whole_not_per_read(tmp_path: Path) -> None:
    """urllib's timeout bounds each read: a responder trickling a byte every 0.2 s kept a handshake waiting for
    as long as it liked (past the client's own handshake timeout)."""
    import socket
    import threading
    import time

    from tlskit.pki.ocsp_http import fetch

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(OSError, match="no answer in time"):
            fetch(f"http://127.0.0.1:{listener.getsockname()[1]}/crl.der", timeout=1.0)
        assert time.monotonic() - started < 5  # the old per-read timeout: 1000 bytes x 0.2 s = 200 s
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_decoy_intermediate_cannot_hide_a_revoked_one(tmp_path: Path) -> None:
    """The server may send extra certificates (§4.4.2). A decoy with the real intermediate's subject and key,
    issued by an attacker's root, was taken for the intermediate when revocation rebuilt the path from the list
    sent: the root's CRL revoking the real intermediate was never consulted and the handshake succeeded."""
    from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

    from tests.certs import make_ca
    from tests.pairing import connect
    from tlskit.config import CertifiedKey, ClientConfig, ServerConfig

    ca = CertificateAuthority.init(tmp_path / "ca", intermediate=True)
    issued = ca.issue(["localhost"])
    root_key = load_pem_private_key((ca.directory / "root.key").read_bytes(), None)
    root_crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.root.subject)
                .last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + dt.timedelta(days=1))
                .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(ca.issuer.serial_number)
                                         .revocation_date(NOW - dt.timedelta(hours=1)).build())
                .sign(root_key, hashes.SHA256()))  # type: ignore[arg-type]
    ca.crl()
    crls = tmp_path / "crls.pem"
    crls.write_bytes((ca.directory / "crl.pem").read_bytes() + root_crl.public_bytes(Encoding.PEM))
    evil = make_ca("evil root")
    decoy = (x509.CertificateBuilder().subject_name(ca.issuer.subject).issuer_name(evil.cert.subject)
             .public_key(ca.issuer.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(evil.key, hashes.SHA256()))  # type: ignore[arg-type]
    key = load_pem_private_key(issued.key_path.read_bytes(), None)
    der = [issued.certificate.public_bytes(Encoding.DER)]
    policy = RevocationPolicy(mode="hard-fail", crl_files=(crls,))
    client = ClientConfig(server_name="localhost", trust=TrustStore(roots=(ca.root,)), revocation=policy)
    for chain in ((*der, ca.issuer.public_bytes(Encoding.DER)),
                  (*der, decoy.public_bytes(Encoding.DER), evil.cert.public_bytes(Encoding.DER),
                   ca.issuer.public_bytes(Encoding.DER))):
        server = ServerConfig(certificates=(CertifiedKey(chain=chain, private_key=key),))  # type: ignore[arg-type]
        pair = connect(client, server)
        with pytest.raises(CertificateRevoked):
            pair.pump()


def _one_shot_server(answers: list[bytes], seen: list[bytes]) -> tuple[int, object]:
    """A loopback server answering each connection with the next of ``answers`` (b"" closes at once; None-like
    b"SILENT" accepts and says nothing); the request heads go to ``seen``."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        for answer in answers:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                if answer != b"SILENT":
                    seen.append(conn.recv(65536))
                    conn.sendall(answer)
                else:
                    conn.recv(65536)
                    threading.Event().wait(3)
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_fetch_follows_odd_redirects_bounds_a_silent_tls_handshake_and_says_what_went_wrong() -> None:
    """The h11 client (cut off as a whole) raised UnicodeEncodeError for `Location: /café`, ValueError for an
    unclosed IPv6 literal, took 5 s for a 3 s timeout when the TLS handshake hung, refused a 203, and said
    "malformed HTTP" for a server that closed without answering."""
    import time

    from tlskit.pki.ocsp_http import fetch

    seen: list[bytes] = []
    port, _ = _one_shot_server([b"HTTP/1.1 302 Found\r\nLocation: /caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n",
                                b"HTTP/1.1 203 Non-Authoritative\r\nContent-Length: 2\r\n\r\nok"], seen)
    assert fetch(f"http://127.0.0.1:{port}/crl", timeout=5) == b"ok"
    assert seen[1].startswith(b"GET /caf%C3%A9 HTTP/1.1"), seen  # as curl sends it
    port, _ = _one_shot_server([b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\nContent-Length: 0\r\n\r\n"], seen)
    with pytest.raises(OSError, match="which is not a URL"):
        fetch(f"http://127.0.0.1:{port}/crl", timeout=5)
    with pytest.raises(OSError, match="host name is invalid"):
        fetch("http://a..b/crl", timeout=5)  # (UnicodeError from the IDNA codec)
    port, _ = _one_shot_server([b""], seen)
    with pytest.raises(OSError, match="closed the connection without an answer"):
        fetch(f"http://127.0.0.1:{port}/crl", timeout=5)
    port, _ = _one_shot_server([b"SILENT"], seen)
    started = time.monotonic()
    with pytest.raises(OSError, match="no answer in time"):
        fetch(f"https://127.0.0.1:{port}/crl", timeout=1)
    assert time.monotonic() - started < 2


def test_an_https_fetch_works_with_descriptors_past_1023() -> None:
    """tlskit serve raises its open-file limit, so a busy server's fetch socket can be descriptor 1500:
    select.select() refused it ("filedescriptor out of range"), which ended the stapling or CRL fetch."""
    import os
    import resource
    import time

    from tlskit.pki.ocsp_http import fetch

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.fail(f"this test needs a hard open-file limit of 2048 (it is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        seen: list[bytes] = []
        port, _ = _one_shot_server([b"SILENT"], seen)
        started = time.monotonic()
        with pytest.raises(OSError, match="no answer in time"):
            fetch(f"https://127.0.0.1:{port}/crl", timeout=1)
        assert time.monotonic() - started < 2
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _root_crl(ca: CertificateAuthority, *, revoked: tuple[int, ...] = (), next_update: dt.timedelta) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

    root_key = load_pem_private_key((ca.directory / "root.key").read_bytes(), None)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.root.subject)
               .last_update(NOW - dt.timedelta(days=10)).next_update(NOW + next_update))
    for serial in revoked:
        builder = builder.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                                  .revocation_date(NOW - dt.timedelta(days=9)).build())
    return builder.sign(root_key, hashes.SHA256()).public_bytes(Encoding.PEM)  # type: ignore[arg-type]


def test_crl_check_all_needs_a_current_crl_for_the_intermediate_too_as_nginx_ssl_crl(world: World,
                                                                                      tmp_path: Path) -> None:
    """`serve --client-crl` checked only the leaf: with the intermediate's CRL alone, or a root CRL long stale,
    clients were admitted, where nginx's ssl_crl (CRL_CHECK_ALL) refuses them ("unable to get certificate CRL",
    "CRL has expired"); a revoked intermediate went unnoticed without the root's CRL."""
    trust = TrustStore(roots=(world.ca.root,))
    intermediate_only = world.ca.directory / "crl.der"
    both = world.ca.directory / "crl.pem"
    intermediate_pem = x509.load_der_x509_crl(intermediate_only.read_bytes()).public_bytes(serialization.Encoding.PEM)
    stale = tmp_path / "stale.pem"
    stale.write_bytes(intermediate_pem + _root_crl(world.ca, next_update=-dt.timedelta(days=1)))
    revoked_intermediate = tmp_path / "revoked.pem"
    revoked_intermediate.write_bytes(intermediate_pem + _root_crl(world.ca, revoked=(world.ca.issuer.serial_number,),
                                                                  next_update=dt.timedelta(days=1)))

    def policy(path: Path, mode: str = "hard-fail", check_all: bool = True) -> RevocationPolicy:
        return RevocationPolicy(mode=mode, crl_files=(path,), crl_check_all=check_all)  # type: ignore[arg-type]

    assert policy(intermediate_only, check_all=False).check(world.good, None, NOW, trust=trust) == []
    error = _raises(policy(intermediate_only), world.good, None, AlertDescription.certificate_unknown, trust=trust)
    assert "no CRL of its issuer" in error.message and "crl.pem" in error.message
    assert "no CRL of its issuer" in policy(intermediate_only, "soft-fail").check(world.good, None, NOW,
                                                                                  trust=trust)[0]
    error = _raises(policy(stale), world.good, None, AlertDescription.certificate_unknown, trust=trust)
    assert "stale" in error.message
    assert policy(both).check(world.good, None, NOW, trust=trust) == []
    with pytest.raises(CertificateRevoked):
        policy(both).check(world.revoked, None, NOW, trust=trust)
    for check_all in (True, False):
        with pytest.raises(CertificateRevoked, match="is revoked"):
            policy(revoked_intermediate, check_all=check_all).check(world.good, None, NOW, trust=trust)
