"""tlskit against Mozilla NSS (Firefox's TLS stack, Debian's libnss3-tools), both ways: ``tstclnt`` to our
server and our client to ``selfserv``.

NSS reads trust anchors and identities from a database (``nss.NssDb``: certutil, pk12util). tstclnt sends a
request file on each of ``-L N`` connections in one process, so the later ones resume (``-u``) and may send it
as 0-RTT (``-Z``). tstclnt has no ALPN option; selfserv offers http/1.1 with ``-Q``. NSS 3.87 has no
X25519MLKEM768 and sends a key share for its first group alone, which is how HelloRetryRequest is reached
both ways.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.certs import KeyType, make_ca, make_leaf, write_pem
from tests.interop.conftest import Pki, make_pki
from tests.interop.nss import NssClientResult, NssDb, SelfServ, nss_version, tstclnt
from tests.interop.ours import GROUPS, SUITES, OurServer, Served, TlskitServe, http_hello, server_config
from tlskit.config import CertifiedKey, ClientAuth, EarlyDataPolicy, ServerConfig
from tlskit.enums import AlertDescription, NamedGroup, SignatureScheme
from tlskit.errors import CertificateError, RemoteAlert
from tlskit.events import HandshakeComplete
from tlskit.io.socket import connect
from tlskit.pki.ca import CertificateAuthority
from tlskit.pki.ocsp import build_request
from tlskit.pki.verify import TrustStore
from tlskit.stores.memory import MemoryReplayStore, MemorySessionStore
from tlskit.tickets.keyring import TicketKey, TicketKeyRing

NSS = nss_version()
PkiOf = Callable[[KeyType], Pki]
REQUEST = b"GET /nss HTTP/1.0\r\n\r\n"
KEX_BITS = {NamedGroup.x25519: 255, NamedGroup.secp256r1: 256, NamedGroup.secp384r1: 384}
NSS_CIPHERS = {"TLS_AES_128_GCM_SHA256": ("AES-GCM", 128), "TLS_AES_256_GCM_SHA384": ("AES-GCM", 256),
               "TLS_CHACHA20_POLY1305_SHA256": ("CHACHA20POLY1305", 256)}


@pytest.fixture(scope="module")
def request_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nss-request") / "request.txt"
    path.write_bytes(REQUEST)
    return path


@pytest.fixture(scope="module")
def db_for(tmp_path_factory: pytest.TempPathFactory, client_pki: Pki) -> Callable[[Pki], NssDb]:
    """``db_for(pki)``: a tstclnt database trusting ``pki``'s root and holding the client identity ``client``.
    One database per root: every interop PKI names its root alike, and NSS finds issuers by name."""
    made: dict[Path, NssDb] = {}

    def get(pki: Pki) -> NssDb:
        if pki.cafile not in made:
            db = NssDb(tmp_path_factory.mktemp("nss-client-db")).trust(pki.cafile, "root")
            made[pki.cafile] = db.add_identity(client_pki.cert, client_pki.key, "client")
        return made[pki.cafile]

    return get


@pytest.fixture(scope="module")
def client_db(db_for: Callable[[Pki], NssDb], pki: Pki) -> NssDb:
    return db_for(pki)


def served_ok(served: Served) -> HandshakeComplete:
    assert served.error is None, f"tlskit server failed against {NSS} tstclnt: {served.error!r}"
    assert served.negotiated is not None
    assert served.received == REQUEST, f"{NSS}: {served.received!r}"
    return served.negotiated


def answered(result: NssClientResult, connections: int = 1) -> None:
    assert result.stdout.count("tlskit says hello to GET /nss HTTP/1.0") == connections, f"{NSS}: {result.stdout}"


# ============================================================================ NSS tstclnt, our server


@pytest.mark.parametrize("suite", list(SUITES))
def test_tstclnt_negotiates_each_suite_with_our_server(pki: Pki, client_db: NssDb, request_file: Path,
                                                       suite: str) -> None:
    with OurServer(server_config(pki), http_hello) as server:
        result = tstclnt(server.port, client_db, request_file, suite=suite)
        [served] = server.wait(1)
    [report] = result.ok()
    answered(result)
    assert (report.cipher, report.cipher_bits) == NSS_CIPHERS[suite], f"{NSS}: {report}"
    assert served_ok(served).cipher_suite is SUITES[suite]
    assert served_ok(served).server_name == "localhost"


@pytest.mark.parametrize(("group", "iana"), [(g, iana) for _, g, iana in GROUPS], ids=[i for _, _, i in GROUPS])
def test_tstclnt_negotiates_each_group_with_our_server(pki: Pki, client_db: NssDb, request_file: Path,
                                                       group: NamedGroup, iana: str) -> None:
    with OurServer(server_config(pki), http_hello) as server:
        result = tstclnt(server.port, client_db, request_file, groups=[iana])
        [served] = server.wait(1)
    [report] = result.ok()
    assert report.key_exchange_bits == KEX_BITS[group], f"{NSS}: {report}"
    assert (served_ok(served).group, served_ok(served).hello_retry) == (group, False)


def test_tstclnt_gets_hello_retry_request_from_our_server(pki: Pki, client_db: NssDb, request_file: Path) -> None:
    # tstclnt sends a share for its first group (x25519) alone; we take only P-384, which it also lists.
    with OurServer(server_config(pki, groups=(NamedGroup.secp384r1,)), http_hello) as server:
        result = tstclnt(server.port, client_db, request_file, groups=["x25519", "secp384r1"])
        [served] = server.wait(1)
    [report] = result.ok()
    answered(result)
    assert report.key_exchange_bits == 384, f"{NSS}: {report}"
    assert (served_ok(served).group, served_ok(served).hello_retry) == (NamedGroup.secp384r1, True)


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """An RSA server PKI from tlskit.pki.ca, whose RSA leaves carry keyEncipherment: NSS's verifier (CERT_VerifyCert,
    which tstclnt uses; Firefox's mozilla::pkix does not) refuses an RSA server certificate without it
    (SEC_ERROR_INADEQUATE_KEY_USAGE), as tests.certs makes them."""
    base = tmp_path_factory.mktemp("nss-rsa-pki")
    ca = CertificateAuthority.init(base / "ca", name="tlskit nss RSA CA", intermediate=True)
    issued = ca.issue(["localhost", "127.0.0.1"], days=1, key_type="rsa")
    return Pki(cafile=write_pem(base / "root.pem", [ca.root]), cert=issued.chain_path, key=issued.key_path)


@pytest.mark.parametrize(("key_type", "scheme"), [("ec", SignatureScheme.ecdsa_secp256r1_sha256),
                                                  ("rsa", SignatureScheme.rsa_pss_rsae_sha256)])
def test_tstclnt_verifies_our_certificate(pki: Pki, rsa_pki: Pki, db_for: Callable[[Pki], NssDb],
                                          request_file: Path, key_type: str, scheme: SignatureScheme) -> None:
    server_pki = rsa_pki if key_type == "rsa" else pki
    with OurServer(server_config(server_pki), http_hello) as server:
        result = tstclnt(server.port, db_for(server_pki), request_file)
        [served] = server.wait(1)
    [report] = result.ok()
    assert (report.signature, report.subject) == (scheme.name, "CN=localhost"), f"{NSS}: {report}"
    assert served_ok(served).signature_scheme is scheme


def test_tstclnt_resumes_with_our_ticket(pki: Pki, client_db: NssDb, request_file: Path) -> None:
    config = server_config(pki, ticket_keys=TicketKeyRing([TicketKey.generate(os.urandom)]))
    with OurServer(config, http_hello) as server:
        result = tstclnt(server.port, client_db, request_file, connections=2, tickets=True)
        served = server.wait(2)
    assert [r.resumed for r in result.ok(2)] == [False, True], f"{NSS}: {result.stderr}"
    answered(result, 2)
    assert [served_ok(s).resumed for s in served] == [False, True], NSS


def test_tstclnt_sends_early_data_our_server_accepts(pki: Pki, client_db: NssDb, request_file: Path) -> None:
    config = server_config(pki, ticket_keys=TicketKeyRing([TicketKey.generate(os.urandom)]),
                           early_data=EarlyDataPolicy(), replay_store=MemoryReplayStore())
    with OurServer(config, http_hello) as server:
        result = tstclnt(server.port, client_db, request_file, connections=2, early_data=True)
        served = server.wait(2)
    reports = result.ok(2)
    answered(result, 2)
    assert not any(r.early_data_rejected for r in reports), f"{NSS}: {result.stderr}"
    first, second = (served_ok(s) for s in served)
    assert (first.early_data_accepted, second.resumed, second.early_data_accepted) == (False, True, True), NSS


@dataclass(frozen=True)
class StapledPki:
    ca: CertificateAuthority
    key: CertifiedKey
    staple: bytes  # a "good" OCSP response for key's leaf, from the CA's responder
    db: NssDb  # trusts the CA's root


@pytest.fixture(scope="module")
def stapled(tmp_path_factory: pytest.TempPathFactory) -> StapledPki:
    base = tmp_path_factory.mktemp("nss-stapled")
    ca = CertificateAuthority.init(base / "ca", name="tlskit nss CA", intermediate=True,
                                   ocsp_url="http://127.0.0.1:9/ocsp")
    issued = ca.issue(["localhost", "127.0.0.1"], days=1)
    staple = ca.responder().respond(build_request(issued.certificate, ca.issuer))
    db = NssDb(base / "db").trust(write_pem(base / "root.pem", [ca.root]), "stapling-root")
    return StapledPki(ca, CertifiedKey.from_pem_files(issued.chain_path, issued.key_path), staple, db)


def test_tstclnt_receives_the_staple_of_our_server(stapled: StapledPki, request_file: Path) -> None:
    config = ServerConfig(certificates=(stapled.key,), ocsp_staple=lambda key: stapled.staple)
    with OurServer(config, http_hello) as server:
        asked = tstclnt(server.port, stapled.db, request_file, ocsp=True)
        not_asked = tstclnt(server.port, stapled.db, request_file)
        server.wait(2)
    assert [r.stapled for r in asked.ok() + not_asked.ok()] == [1, 0], f"{NSS}: {asked.stderr}"


def test_tstclnt_client_certificate_with_our_server(pki: Pki, client_db: NssDb, client_pki: Pki,
                                                    request_file: Path) -> None:
    auth = ClientAuth(mode="required", trust=TrustStore.from_pem_file(client_pki.cafile))
    with OurServer(server_config(pki, client_auth=auth), http_hello) as server:
        result = tstclnt(server.port, client_db, request_file, nickname="client")
        [served] = server.wait(1)
    result.ok()
    answered(result)
    [leaf] = served_ok(served).peer_certificates
    assert leaf == CertifiedKey.from_pem_files(client_pki.cert, client_pki.key).chain[0], NSS


def test_tstclnt_with_another_trust_anchor_refuses_our_server(client_pki: Pki, request_file: Path,
                                                              tmp_path: Path) -> None:
    # The server's chain leads to a root tstclnt's database does not hold.
    stranger = make_pki(tmp_path / "stranger")
    with OurServer(server_config(stranger), http_hello) as server:
        result = tstclnt(server.port, NssDb(tmp_path / "db").trust(client_pki.cafile, "other"), request_file)
        [served] = server.wait(1)
    assert result.returncode != 0 and result.error == "SEC_ERROR_UNKNOWN_ISSUER", f"{NSS}: {result.stderr}"
    assert served.negotiated is None
    assert isinstance(served.error, RemoteAlert), f"{NSS}: {served.error!r}"
    assert served.error.description is AlertDescription.unknown_ca, f"{NSS}: {served.error!r}"


def test_tstclnt_fetches_a_file_from_tlskit_serve(pki: Pki, client_db: NssDb, tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "nss.txt").write_text("served by tlskit to NSS\n")
    request = tmp_path / "request.txt"
    request.write_bytes(b"GET /nss.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    with TlskitServe(root, pki) as serve:
        result = tstclnt(serve.port, client_db, request)
    result.ok()
    assert result.stdout.startswith("HTTP/1.1 200"), f"{NSS}: {result.stdout}"
    assert result.stdout.endswith("served by tlskit to NSS\n"), f"{NSS}: {result.stdout}"


# ============================================================================ our client, NSS selfserv


INTERMEDIATE = "tlskit nss intermediate"


@dataclass(frozen=True)
class NssServerPki:
    """A server PKI whose intermediate's key is in the database too (selfserv signs OCSP staples with it)."""

    cafile: Path
    db: NssDb  # identities "server" (ECDSA) and "rsa-server", and INTERMEDIATE (the issuing CA, with its key)


@pytest.fixture(scope="module")
def server_pki(tmp_path_factory: pytest.TempPathFactory, client_pki: Pki) -> NssServerPki:
    directory = tmp_path_factory.mktemp("nss-server-pki")
    root = make_ca("tlskit nss root")
    inter = make_ca(INTERMEDIATE, issuer=root)
    db = NssDb(directory / "db").trust(client_pki.cafile, "client-root", "T,,")
    # NSS gives every certificate of one subject the same nickname: the two leaves need different names.
    for key_type, nickname in (("ec256", "server"), ("rsa2048", "rsa-server")):
        leaf = make_leaf(inter, names=["localhost", "127.0.0.1"], key_type=key_type,  # type: ignore[arg-type]
                         common_name=f"{nickname} localhost")
        db.add_identity(*leaf.write(directory, nickname, chain=[inter]), nickname)
    # The leaves' PKCS#12 files brought the intermediate under its subject's name; this adds its key.
    db.add_identity(*inter.write(directory, "inter"), "inter")
    return NssServerPki(cafile=write_pem(directory / "ca.pem", [root]), db=db)


@pytest.fixture(scope="module")
def selfserv(server_pki: NssServerPki) -> Iterator[SelfServ]:
    """One selfserv (ECDSA P-256, ALPN http/1.1, tickets) for the module's simple tests."""
    with SelfServ(server_pki.db, "server", alpn=True) as server:
        yield server


def fetch(port: int, cafile: Path, **config: Any) -> tuple[HandshakeComplete, bytes]:
    """Our client's handshake with selfserv and its answer to ``REQUEST`` (it closes after answering)."""
    with connect("127.0.0.1", port, server_name="localhost", cafile=cafile, timeout=10, **config) as tls:
        tls.sendall(REQUEST)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        done = tls.negotiated
    assert done is not None
    assert answer.startswith(b"HTTP/1.0 200 OK") and REQUEST in answer, f"{NSS} selfserv answered {answer!r}"
    return done, answer


@pytest.mark.parametrize("suite", list(SUITES))
def test_our_client_negotiates_each_suite_with_selfserv(selfserv: SelfServ, server_pki: NssServerPki,
                                                        suite: str) -> None:
    done, _ = fetch(selfserv.port, server_pki.cafile, cipher_suites=(SUITES[suite],))
    assert done.cipher_suite is SUITES[suite], NSS


@pytest.mark.parametrize("group", [g for _, g, _ in GROUPS], ids=[i for _, _, i in GROUPS])
def test_our_client_negotiates_each_group_with_selfserv(selfserv: SelfServ, server_pki: NssServerPki,
                                                        group: NamedGroup) -> None:
    done, _ = fetch(selfserv.port, server_pki.cafile, groups=(group,))
    assert (done.group, done.hello_retry) == (group, False), NSS


def test_our_client_gets_hello_retry_request_from_selfserv(selfserv: SelfServ, server_pki: NssServerPki) -> None:
    # NSS 3.87 has no X25519MLKEM768: a share for it alone gets a HelloRetryRequest for a group it has.
    groups = (NamedGroup.X25519MLKEM768, NamedGroup.secp256r1)
    done, _ = fetch(selfserv.port, server_pki.cafile, groups=groups, key_share_groups=groups[:1])
    assert (done.group, done.hello_retry) == (NamedGroup.secp256r1, True), NSS


def test_our_client_alpn_with_selfserv(selfserv: SelfServ, server_pki: NssServerPki) -> None:
    done, _ = fetch(selfserv.port, server_pki.cafile, alpn=("h2", "http/1.1"))
    assert done.alpn == "http/1.1", NSS


def test_our_client_resumes_with_selfserv_ticket(selfserv: SelfServ, server_pki: NssServerPki) -> None:
    store = MemorySessionStore()
    before = selfserv.resumed()
    first, _ = fetch(selfserv.port, server_pki.cafile, session_store=store)
    second, _ = fetch(selfserv.port, server_pki.cafile, session_store=store)
    assert (first.resumed, second.resumed) == (False, True), NSS
    selfserv.wait_for_output(rf"{before + 1} stateless resumes")


def test_our_client_verifies_selfserv_rsa_certificate(server_pki: NssServerPki) -> None:
    with SelfServ(server_pki.db, "rsa-server") as server:
        done, _ = fetch(server.port, server_pki.cafile)
    assert done.signature_scheme is SignatureScheme.rsa_pss_rsae_sha256, NSS


def test_our_client_certificate_with_selfserv(server_pki: NssServerPki, client_pki: Pki) -> None:
    identity = CertifiedKey.from_pem_files(client_pki.cert, client_pki.key)
    with SelfServ(server_pki.db, "server", require_client_cert=True) as server:
        fetch(server.port, server_pki.cafile, certificate=identity)
        with pytest.raises(RemoteAlert) as caught:
            fetch(server.port, server_pki.cafile)
        errors = server.wait_errors(1)
    assert caught.value.description is AlertDescription.certificate_required, f"{NSS}: {caught.value}"
    assert errors == ["SSL_ERROR_NO_CERTIFICATE"], f"{NSS}: {server.output()}"


def test_our_client_refuses_selfserv_certificate_from_another_root(selfserv: SelfServ, client_pki: Pki) -> None:
    before = len(selfserv.errors())  # (counted first: selfserv may report before our client returns)
    with pytest.raises(CertificateError) as caught:
        fetch(selfserv.port, client_pki.cafile)
    assert caught.value.description is AlertDescription.unknown_ca, caught.value
    assert selfserv.wait_errors(before + 1)[before] == "SSL_ERROR_UNKNOWN_CA_ALERT", f"{NSS}: {selfserv.output()}"
