"""Revocation, stapling, pinning and SPIFFE allow-lists enforced inside real handshakes (our client and server
in memory, certificates from our own private CA)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pairing import pump
from tlskit.config import CertifiedKey, ClientAuth, ClientConfig, ServerConfig
from tlskit.connection import Connection
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, RemoteAlert
from tlskit.events import HandshakeComplete
from tlskit.pki.ca import CertificateAuthority, IssuedCertificate, parse_reason
from tlskit.pki.identity import SpiffeAllowList
from tlskit.pki.ocsp import build_request
from tlskit.pki.pinning import PinSet, spki_sha256
from tlskit.pki.revocation import RevocationPolicy
from tlskit.pki.verify import TrustStore


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("engine-pki") / "ca", intermediate=True)


_COUNTER = iter(range(1_000_000))


def issue(ca: CertificateAuthority, names: list[str], **kw: object) -> IssuedCertificate:
    """Issue under a fresh file name (the CA refuses to overwrite an issued certificate's files)."""
    return ca.issue(names, days=1, out=ca.directory / "issued" / f"t{next(_COUNTER)}", **kw)  # type: ignore[arg-type]


def key_for(issued: IssuedCertificate, staple: bytes | None = None) -> CertifiedKey:
    key = CertifiedKey.from_pem_files(issued.chain_path, issued.key_path)
    return CertifiedKey(chain=key.chain, private_key=key.private_key, ocsp_response=staple)


def trust(ca: CertificateAuthority) -> TrustStore:
    return TrustStore(roots=(ca.root,))


def staple(ca: CertificateAuthority, issued: IssuedCertificate) -> bytes:
    return ca.responder().respond(build_request(issued.certificate, ca.issuer))


def run(client: ClientConfig, server: ServerConfig) -> tuple[Connection, Connection]:
    c, s = Connection(client), Connection(server)
    c.start()
    pump(c, s)
    return c, s


def test_revoked_server_certificate_is_certificate_revoked_via_its_staple(ca: CertificateAuthority) -> None:
    bad = issue(ca, ["revoked.test"])
    ca.revoke(bad.serial, parse_reason("keyCompromise"))
    client = Connection(
        ClientConfig(server_name="revoked.test", trust=trust(ca), revocation=RevocationPolicy(mode="hard-fail"))
    )
    server = Connection(ServerConfig(certificates=(key_for(bad, staple(ca, bad)),)))
    client.start()
    server.receive_data(client.data_to_send())
    with pytest.raises(CertificateError) as info:
        client.receive_data(server.data_to_send())
    assert info.value.description is AlertDescription.certificate_revoked
    with pytest.raises(RemoteAlert) as seen:
        server.receive_data(client.data_to_send())
    assert seen.value.description is AlertDescription.certificate_revoked


def test_good_staple_passes_must_staple_and_is_exposed(ca: CertificateAuthority) -> None:
    good = issue(ca, ["good.test"])
    ocsp = staple(ca, good)
    c, _ = run(
        ClientConfig(server_name="good.test", trust=trust(ca), revocation=RevocationPolicy(mode="must-staple")),
        ServerConfig(certificates=(key_for(good, ocsp),)),
    )
    (done,) = [e for e in c.events() if isinstance(e, HandshakeComplete)]
    assert done.ocsp_response == ocsp


def test_must_staple_without_a_staple_fails(ca: CertificateAuthority) -> None:
    good = issue(ca, ["nostaple.test"])
    client = Connection(
        ClientConfig(server_name="nostaple.test", trust=trust(ca), revocation=RevocationPolicy(mode="must-staple"))
    )
    server = Connection(ServerConfig(certificates=(key_for(good),)))
    client.start()
    server.receive_data(client.data_to_send())
    with pytest.raises(CertificateError) as info:
        client.receive_data(server.data_to_send())
    assert info.value.description is AlertDescription.bad_certificate_status_response


def test_pins_accept_the_pinned_key_and_reject_another(ca: CertificateAuthority, tmp_path: Path) -> None:
    good = issue(ca, ["pinned.test"])
    other = issue(ca, ["pinned.test"])
    pins = PinSet([spki_sha256(good.certificate), spki_sha256(ca.root)])
    run(
        ClientConfig(server_name="pinned.test", trust=trust(ca), pins=pins), ServerConfig(certificates=(key_for(good),))
    )
    pins_leaf_only = PinSet([spki_sha256(good.certificate), "A" * 43 + "="])
    client = Connection(ClientConfig(server_name="pinned.test", trust=trust(ca), pins=pins_leaf_only))
    server = Connection(ServerConfig(certificates=(key_for(other),)))
    client.start()
    server.receive_data(client.data_to_send())
    with pytest.raises(CertificateError) as info:
        client.receive_data(server.data_to_send())
    assert info.value.description is AlertDescription.bad_certificate
    assert spki_sha256(other.certificate) in str(info.value)  # the message shows what was presented


@pytest.mark.parametrize(
    ("spiffe_id", "allowed"),
    [("spiffe://cluster.local/ns/default/sa/web", True), ("spiffe://cluster.local/ns/default/sa/db", False)],
)
def test_spiffe_allow_list_on_mutual_tls(ca: CertificateAuthority, spiffe_id: str, allowed: bool) -> None:
    server_cert = issue(ca, ["api.test"])
    client_cert = issue(ca, [], client=True, spiffe=spiffe_id)
    auth = ClientAuth(
        mode="required", trust=trust(ca), allowed_ids=SpiffeAllowList(["spiffe://cluster.local/ns/*/sa/web"])
    )
    client = Connection(ClientConfig(server_name="api.test", trust=trust(ca), certificate=key_for(client_cert)))
    server = Connection(ServerConfig(certificates=(key_for(server_cert),), client_auth=auth))
    client.start()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    if allowed:
        server.receive_data(client.data_to_send())
        assert server.handshake_complete
        return
    with pytest.raises(CertificateError) as info:
        server.receive_data(client.data_to_send())
    assert info.value.description is AlertDescription.access_denied
