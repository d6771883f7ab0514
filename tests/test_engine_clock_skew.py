"""Clock-skew tolerance inside real handshakes (ClientAuth.clock_skew, ClientConfig.clock_skew): a CA whose
clock runs two minutes ahead of ours issues with notBefore = its now (no backdate), so its certificates are
"not yet valid" here for two minutes; three minutes of tolerance admit them, none refuses them.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from tests.pairing import pump
from tlskit.config import CertifiedKey, ClientAuth, ClientConfig, ServerConfig
from tlskit.connection import Connection
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError
from tlskit.pki.ca import CertificateAuthority, IssuedCertificate
from tlskit.pki.verify import TrustStore, clear_cache

AHEAD = 120.0  # seconds the CA's clock leads ours
TOLERANT = 180.0  # seconds of clock skew admitted


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("skew") / "ca", intermediate=True,
                                     clock=lambda: time.time() + AHEAD)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def issue(ca: CertificateAuthority, tmp_path: Path, names: list[str], *, client: bool = False,
          spiffe: str | None = None) -> CertifiedKey:
    """A certificate with notBefore = the CA's now, two minutes in our future."""
    out = tmp_path / (names[0].split(".")[0] if names else "client")
    issued: IssuedCertificate = ca.issue(names, client=client, spiffe=spiffe, days=1, backdate=dt.timedelta(0),
                                         out=out)
    return CertifiedKey.from_pem_files(issued.chain_path, issued.key_path)


def run(client: ClientConfig, server: ServerConfig) -> tuple[Connection, Connection]:
    c, s = Connection(client), Connection(server)
    c.start()
    pump(c, s)
    return c, s


def test_server_tolerates_a_client_certificate_from_a_ca_ahead_of_it(ca: CertificateAuthority, tmp_path: Path) -> None:
    trust = TrustStore(roots=(ca.root,))
    server_cert = ca.issue(["api.test"], days=1, out=tmp_path / "api")  # default backdate: valid here already
    client_cert = issue(ca, tmp_path, [], client=True, spiffe="spiffe://cluster.local/ns/default/sa/web")
    server_key = CertifiedKey.from_pem_files(server_cert.chain_path, server_cert.key_path)
    client = ClientConfig(server_name="api.test", trust=trust, certificate=client_cert)
    tolerant = ServerConfig(certificates=(server_key,),
                            client_auth=ClientAuth(mode="required", trust=trust, clock_skew=TOLERANT))
    _, s = run(client, tolerant)
    assert s.handshake_complete
    clear_cache()
    strict = ServerConfig(certificates=(server_key,), client_auth=ClientAuth(mode="required", trust=trust))
    c, s = Connection(client), Connection(strict)
    c.start()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    with pytest.raises(CertificateError) as info:
        s.receive_data(c.data_to_send())
    assert info.value.description is AlertDescription.certificate_expired
    assert "not yet valid (clock skew?)" in info.value.message


def test_client_tolerates_a_server_certificate_from_a_ca_ahead_of_it(ca: CertificateAuthority, tmp_path: Path) -> None:
    trust = TrustStore(roots=(ca.root,))
    server = ServerConfig(certificates=(issue(ca, tmp_path, ["fresh.test"]),))
    c, _ = run(ClientConfig(server_name="fresh.test", trust=trust, clock_skew=TOLERANT), server)
    assert c.handshake_complete
    clear_cache()
    c = Connection(ClientConfig(server_name="fresh.test", trust=trust))
    s = Connection(server)
    c.start()
    s.receive_data(c.data_to_send())
    with pytest.raises(CertificateError) as info:
        c.receive_data(s.data_to_send())
    assert info.value.description is AlertDescription.certificate_expired
