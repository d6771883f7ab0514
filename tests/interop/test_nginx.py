"""nginx (Debian package) with certificates from our private CA (tlskit.pki.ca) and our blocking client.

mTLS: ``ssl_verify_client on`` with our CA. nginx finishes the TLS 1.3 handshake whatever the client sent and
refuses at the HTTP layer: ``400 No required SSL certificate was sent`` without a certificate, ``400 The SSL
certificate error`` for one it cannot verify (its verify callback accepts everything and the request phase
reads the verification result).

Stapling: ``ssl_stapling_file`` staples a DER response made by our responder verbatim (nginx does not check
it, so a revoked staple reaches the client); ``ssl_stapling_responder`` + ``ssl_stapling_verify`` fetch from
our OCSP responder over HTTP and staple from the second handshake on (nginx fetches in the background on the
first), and refuse to staple a "revoked" answer at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.interop.ours import read_all
from tests.interop.peers import HOST, TIMEOUT, NginxServer, PeerError, tool_version
from tlskit.config import CertifiedKey
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, CertificateRevoked
from tlskit.events import HandshakeComplete
from tlskit.io.socket import connect
from tlskit.pki.ca import CertificateAuthority, IssuedCertificate, parse_reason
from tlskit.pki.ocsp import build_request
from tlskit.pki.ocsp_http import OCSPHTTPServer
from tlskit.pki.revocation import RevocationPolicy
from tlskit.pki.verify import TrustStore, clear_cache

NGINX = tool_version("nginx")
WEB = "spiffe://cluster.local/ns/default/sa/web"


class LateResponder:
    """Stands in for the CA's responder until the CA exists (its OCSP URL must name the server's port)."""

    ca: CertificateAuthority | None = None

    def respond(self, request_der: bytes) -> bytes:
        assert self.ca is not None
        return self.ca.responder().respond(request_der)

    def respond_get(self, path: str) -> bytes:
        assert self.ca is not None
        return self.ca.responder().respond_get(path)


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    ocsp_url: str
    server: IssuedCertificate  # localhost, 127.0.0.1
    client: IssuedCertificate  # SPIFFE ID WEB
    stranger: IssuedCertificate  # a client certificate from another CA
    trust_file: Path  # root then intermediate: for ssl_trusted_certificate

    @property
    def trust(self) -> TrustStore:
        return TrustStore(roots=(self.ca.root,))

    def issue_server(self, tag: str) -> IssuedCertificate:
        return self.ca.issue(["localhost", "127.0.0.1"], days=1, out=self.ca.directory / "issued" / tag)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    base = tmp_path_factory.mktemp("nginx-pki")
    late = LateResponder()
    with OCSPHTTPServer(late) as responder:
        url = f"{responder.url}/ocsp"
        ca = CertificateAuthority.init(base / "ca", name="tlskit nginx CA", intermediate=True, ocsp_url=url)
        late.ca = ca
        other = CertificateAuthority.init(base / "other", name="some other CA")
        trust_file = base / "trusted.pem"
        trust_file.write_bytes(b"".join((ca.directory / f"{n}.pem").read_bytes() for n in ("root", "intermediate")))
        yield Pki(
            ca=ca,
            ocsp_url=url,
            server=ca.issue(["localhost", "127.0.0.1"], days=1, out=base / "server"),
            client=ca.issue([], client=True, spiffe=WEB, days=1, out=base / "client"),
            stranger=other.issue([], client=True, spiffe=WEB, days=1, out=base / "stranger"),
            trust_file=trust_file,
        )


@pytest.fixture(autouse=True)
def _fresh_verdicts() -> None:
    clear_cache()


def certified(issued: IssuedCertificate) -> CertifiedKey:
    return CertifiedKey.from_pem_files(issued.chain_path, issued.key_path)


@dataclass(frozen=True)
class Reply:
    status: int
    body: str
    negotiated: HandshakeComplete


def get(port: int, pki: Pki, **config: Any) -> Reply:
    """``GET /`` with our client (verifying nginx against our CA); ``config`` sets ClientConfig fields."""
    with connect(HOST, port, server_name="localhost", trust=pki.trust, timeout=TIMEOUT, **config) as tls:
        negotiated = tls.negotiated
        assert negotiated is not None
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        head, _, body = read_all(tls).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return Reply(status, body.decode("utf-8", "replace"), negotiated)


# --- mutual TLS: ssl_verify_client on ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_nginx(pki: Pki) -> Iterator[NginxServer]:
    with NginxServer(pki.server.chain_path, pki.server.key_path, client_ca=pki.ca.directory / "root.pem") as nginx:
        yield nginx


def test_client_certificate_from_our_ca_gets_in(mtls_nginx: NginxServer, pki: Pki) -> None:
    reply = get(mtls_nginx.port, pki, certificate=certified(pki.client))
    assert reply.status == 200, f"{NGINX}: {reply}\n{mtls_nginx.error_log()}"
    assert reply.body.startswith("verify=SUCCESS"), f"{NGINX}: {reply.body!r}"
    assert reply.negotiated.peer_certificates[0] == pki.server.certificate.public_bytes(Encoding.DER)


def test_no_client_certificate_is_refused_with_400_after_the_handshake(mtls_nginx: NginxServer, pki: Pki) -> None:
    reply = get(mtls_nginx.port, pki)
    assert reply.status == 400, f"{NGINX}: {reply}"
    assert "No required SSL certificate was sent" in reply.body, f"{NGINX}: {reply.body!r}"
    mtls_nginx.wait_for_output("client sent no required SSL certificate")


def test_client_certificate_from_another_ca_is_refused_with_400(mtls_nginx: NginxServer, pki: Pki) -> None:
    reply = get(mtls_nginx.port, pki, certificate=certified(pki.stranger))
    assert reply.status == 400, f"{NGINX}: {reply}"
    assert "The SSL certificate error" in reply.body, f"{NGINX}: {reply.body!r}"
    mtls_nginx.wait_for_output(
        r"client SSL certificate verify error: \(\d+:unable to (verify the first|get local issuer) certificate\)")


# --- OCSP stapling: ssl_stapling_file ----------------------------------------------------------------------


def staple_file(pki: Pki, issued: IssuedCertificate, path: Path) -> bytes:
    der = pki.ca.responder().respond(build_request(issued.certificate, pki.ca.issuer))
    path.write_bytes(der)
    return der


def test_must_staple_client_accepts_the_staple_nginx_serves_from_a_file(pki: Pki, tmp_path: Path) -> None:
    staple = staple_file(pki, pki.server, tmp_path / "good.der")
    with NginxServer(pki.server.chain_path, pki.server.key_path, stapling_file=tmp_path / "good.der") as nginx:
        reply = get(nginx.port, pki, revocation=RevocationPolicy(mode="must-staple"))
    assert reply.status == 200
    assert reply.negotiated.ocsp_response == staple, f"{NGINX} stapled something else"


def test_revoked_staple_from_nginx_fails_our_client_with_certificate_revoked(pki: Pki, tmp_path: Path) -> None:
    revoked = pki.issue_server("revoked-file")
    pki.ca.revoke(revoked.serial, parse_reason("keyCompromise"))
    staple_file(pki, revoked, tmp_path / "revoked.der")
    with (NginxServer(revoked.chain_path, revoked.key_path, stapling_file=tmp_path / "revoked.der") as nginx,
          pytest.raises(CertificateRevoked) as info):
        get(nginx.port, pki, revocation=RevocationPolicy(mode="must-staple"))
    assert info.value.description is AlertDescription.certificate_revoked
    assert "keyCompromise" in str(info.value), str(info.value)


def test_client_without_status_request_gets_no_staple(pki: Pki, tmp_path: Path) -> None:
    staple_file(pki, pki.server, tmp_path / "good.der")
    with NginxServer(pki.server.chain_path, pki.server.key_path, stapling_file=tmp_path / "good.der") as nginx:
        reply = get(nginx.port, pki)
    assert reply.status == 200 and reply.negotiated.ocsp_response is None


# --- OCSP stapling: nginx fetching from our responder ------------------------------------------------------


def fetched_staple(port: int, pki: Pki, nginx: NginxServer) -> bytes:
    """Connect until nginx staples (it fetches in the background after the first handshake asks)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        reply = get(port, pki, request_ocsp=True)
        if reply.negotiated.ocsp_response is not None:
            return reply.negotiated.ocsp_response
        if time.monotonic() > deadline:
            raise PeerError(f"{NGINX} never stapled a response from {pki.ocsp_url}:\n{nginx.error_log()}")
        time.sleep(0.05)


def test_nginx_staples_what_our_responder_answers_and_our_must_staple_client_accepts_it(pki: Pki) -> None:
    issued = pki.issue_server("fetched-good")
    with NginxServer(issued.chain_path, issued.key_path, stapling_responder=pki.ocsp_url,
                     stapling_trust=pki.trust_file) as nginx:
        fetched_staple(nginx.port, pki, nginx)
        reply = get(nginx.port, pki, revocation=RevocationPolicy(mode="must-staple"))
    assert reply.status == 200
    assert reply.negotiated.ocsp_response is not None
    response = x509.ocsp.load_der_ocsp_response(reply.negotiated.ocsp_response)
    assert response.serial_number == issued.serial
    assert response.certificate_status is x509.ocsp.OCSPCertStatus.GOOD


def test_nginx_does_not_staple_a_revoked_answer_so_must_staple_fails(pki: Pki) -> None:
    issued = pki.issue_server("fetched-revoked")
    pki.ca.revoke(issued.serial, parse_reason("superseded"))
    with NginxServer(issued.chain_path, issued.key_path, stapling_responder=pki.ocsp_url,
                     stapling_trust=pki.trust_file) as nginx:
        get(nginx.port, pki, request_ocsp=True)  # triggers nginx's fetch
        nginx.wait_for_output(r'certificate status "revoked" in the OCSP response')
        with pytest.raises(CertificateError) as info:
            get(nginx.port, pki, revocation=RevocationPolicy(mode="must-staple"))
    assert info.value.description is AlertDescription.bad_certificate_status_response
