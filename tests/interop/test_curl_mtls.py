"""curl (libcurl on OpenSSL) against our in-process server requiring client certificates (mutual TLS).

Certificates come from our private CA (tlskit.pki.ca): curl without ``--cert`` is refused with the TLS 1.3
``certificate_required`` alert (RFC 8446 §4.4.2.4) and our server reports the same; with ``--cert/--key``
it is admitted and the application reads the client's SPIFFE ID from the verified leaf.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.interop.ours import OurServer, http_hello
from tests.interop.peers import curl_get, tool_version
from tlskit.config import CertifiedKey, ClientAuth, ServerConfig
from tlskit.enums import AlertDescription
from tlskit.errors import AlertError, CertificateError
from tlskit.pki.ca import CertificateAuthority, IssuedCertificate
from tlskit.pki.identity import SpiffeAllowList, peer_identity
from tlskit.pki.verify import TrustStore

CURL = tool_version("curl")
WEB = "spiffe://cluster.local/ns/default/sa/web"


@dataclass(frozen=True)
class Pki:
    """Our server's certificate (localhost) and key, the CA file curl trusts, and client certificates."""

    cafile: Path
    cert: Path
    key: Path
    trust: TrustStore
    client: IssuedCertificate  # SPIFFE ID WEB
    db_client: IssuedCertificate  # SPIFFE ID .../sa/db
    stranger: IssuedCertificate  # from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("curl-mtls")
    ca = CertificateAuthority.init(base / "ca", intermediate=True)
    server = ca.issue(["localhost", "127.0.0.1"], days=1, out=base / "server")
    other = CertificateAuthority.init(base / "other", name="some other CA")
    return Pki(
        cafile=ca.directory / "root.pem", cert=server.chain_path, key=server.key_path,
        trust=TrustStore(roots=(ca.root,)),
        client=ca.issue([], client=True, spiffe=WEB, days=1, out=base / "web"),
        db_client=ca.issue([], client=True, spiffe="spiffe://cluster.local/ns/default/sa/db", days=1,
                           out=base / "db"),
        stranger=other.issue([], client=True, spiffe=WEB, days=1, out=base / "stranger"),
    )


@pytest.fixture
def server(pki: Pki) -> Iterator[OurServer]:
    allowed = SpiffeAllowList(["spiffe://cluster.local/ns/*/sa/web"])
    auth = ClientAuth(mode="required", trust=pki.trust, allowed_ids=allowed)
    config = ServerConfig(certificates=(CertifiedKey.from_pem_files(pki.cert, pki.key),), client_auth=auth)
    with OurServer(config, http_hello) as ours:
        yield ours


def curl(server: OurServer, pki: Pki, client: IssuedCertificate | None) -> subprocess.CompletedProcess[str]:
    port = server.port
    cert = ("--cert", str(client.chain_path), "--key", str(client.key_path)) if client is not None else ()
    return curl_get(f"https://localhost:{port}/whoami", cacert=pki.cafile,
                    extra=("--resolve", f"localhost:{port}:127.0.0.1", "-v", "-w", "\n%{http_code}", *cert))


def test_curl_without_a_client_certificate_is_refused_with_certificate_required(server: OurServer, pki: Pki) -> None:
    result = curl(server, pki, None)
    # TLS 1.3: curl's handshake is over when it has sent its (empty) Certificate and Finished; the alert comes
    # when it reads the response: "OpenSSL SSL_read: ... tlsv13 alert certificate required", exit 56.
    assert result.returncode == 56, f"{CURL}: exit {result.returncode}\n{result.stderr}"
    assert re.search(r"alert certificate required", result.stderr), f"{CURL}:\n{result.stderr}"
    (served,) = server.wait(1)
    assert isinstance(served.error, AlertError), served.error
    assert served.error.description is AlertDescription.certificate_required
    assert served.negotiated is None and served.received == b""


def test_curl_with_a_client_certificate_is_admitted_and_its_spiffe_id_seen(server: OurServer, pki: Pki) -> None:
    result = curl(server, pki, pki.client)
    assert result.returncode == 0, f"{CURL}: exit {result.returncode}\n{result.stderr}"
    assert result.stdout == "tlskit says hello to GET /whoami HTTP/1.1\n\n200", f"{CURL}: {result.stdout!r}"
    (served,) = server.wait(1)
    assert served.error is None, served.error
    assert served.negotiated is not None
    chain = served.negotiated.peer_certificates
    assert chain[0] == pki.client.certificate.public_bytes(Encoding.DER)  # curl sends leaf then intermediate
    identity = peer_identity(x509.load_der_x509_certificate(chain[0]))
    assert identity.spiffe_id == WEB
    assert identity.serial == pki.client.serial


def test_curl_with_a_certificate_outside_the_allow_list_is_access_denied(server: OurServer, pki: Pki) -> None:
    result = curl(server, pki, pki.db_client)
    assert result.returncode != 0, f"{CURL}: {result.stdout!r}"
    assert "access denied" in result.stderr, f"{CURL}:\n{result.stderr}"
    (served,) = server.wait(1)
    assert isinstance(served.error, CertificateError) and served.error.description is AlertDescription.access_denied


def test_curl_with_a_certificate_from_another_ca_is_unknown_ca(server: OurServer, pki: Pki) -> None:
    result = curl(server, pki, pki.stranger)
    assert result.returncode != 0, f"{CURL}: {result.stdout!r}"
    assert "unknown ca" in result.stderr, f"{CURL}:\n{result.stderr}"
    (served,) = server.wait(1)
    assert isinstance(served.error, CertificateError) and served.error.description is AlertDescription.unknown_ca
