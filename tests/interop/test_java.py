"""tlskit against Java's JSSE (OpenJDK 17), both ways: ``java/TlsPeer.java`` as client and as server.

The Java side reports each connection as a JSON line (``JavaReport``: protocol, suite, peer subject, ALPN,
whether resumed); our side reports ``HandshakeComplete``. One JVM runs several client handshakes where the
options allow it: JDK 17 sets named groups per JVM only (``jdk.tls.namedGroups``), and sends a key share for
its first group alone.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import KeyType, make_ca, make_leaf, write_pem
from tests.interop.conftest import Pki, make_pki
from tests.interop.jsse import ClientJob, JavaReport, JavaServer, compile_peer, java_clients, jsse_version
from tests.interop.ours import GROUPS, SUITES, OurServer, Served, server_config
from tests.interop.peers import HOST
from tlskit.config import CertifiedKey, ClientAuth
from tlskit.enums import AlertDescription, NamedGroup, SignatureScheme
from tlskit.errors import CertificateError, RemoteAlert
from tlskit.events import HandshakeComplete
from tlskit.io.socket import connect, wrap_socket
from tlskit.pki.verify import TrustStore
from tlskit.stores.memory import MemorySessionStore
from tlskit.tickets.keyring import TicketKey, TicketKeyRing

JAVA = jsse_version()
PkiOf = Callable[[KeyType], Pki]
# JSSE's names for the groups (jdk.tls.namedGroups) are the IANA ones.
JAVA_GROUPS = {group: iana for _, group, iana in GROUPS}


@pytest.fixture(scope="session")
def classpath(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``TlsPeer.java`` compiled once per session (per xdist worker)."""
    return compile_peer(tmp_path_factory.mktemp("jsse"))


def ok(report: JavaReport) -> JavaReport:
    """``report`` once checked to be a TLS 1.3 handshake without error."""
    assert report.error_type is None, f"{JAVA}: {report.error_type}: {report.error_message}"
    assert report.protocol == "TLSv1.3", f"{JAVA}: {report}"
    return report


def negotiated(served: Served) -> HandshakeComplete:
    assert served.error is None, f"tlskit server failed against {JAVA}: {served.error!r}"
    assert served.negotiated is not None
    return served.negotiated


# ============================================================================ Java client, our server


def test_java_client_negotiates_each_suite_with_our_server(classpath: Path, pki: Pki) -> None:
    with OurServer(server_config(pki)) as server:
        jobs = [ClientJob(suite, server.port, pki.cafile, suites=[suite], send=suite) for suite in SUITES]
        reports = java_clients(classpath, jobs)
        served = server.wait(len(jobs))
    for job, done in zip(jobs, served, strict=True):
        [report] = reports[job.id]
        assert ok(report).suite == job.id and report.echo == f"{job.id}\n", f"{JAVA}: {report}"
        assert negotiated(done).cipher_suite is SUITES[job.id], JAVA
        assert done.received == f"{job.id}\n".encode()


@pytest.mark.parametrize("group", list(JAVA_GROUPS), ids=list(JAVA_GROUPS.values()))
def test_java_client_negotiates_each_group_with_our_server(classpath: Path, pki: Pki, group: NamedGroup) -> None:
    with OurServer(server_config(pki)) as server:
        reports = java_clients(classpath, [ClientJob("group", server.port, pki.cafile, send="group")],
                               named_groups=[JAVA_GROUPS[group]])
        [served] = server.wait(1)
    ok(reports["group"][0])
    assert (negotiated(served).group, negotiated(served).hello_retry) == (group, False), JAVA


SIGNATURES: list[tuple[KeyType, SignatureScheme]] = [
    ("ec256", SignatureScheme.ecdsa_secp256r1_sha256),
    ("rsa2048", SignatureScheme.rsa_pss_rsae_sha256),
]


def test_java_client_verifies_our_ecdsa_and_rsa_certificates(classpath: Path, pki_of: PkiOf) -> None:
    with OurServer(server_config(pki_of("ec256"))) as ec, OurServer(server_config(pki_of("rsa2048"))) as rsa:
        servers = {"ec256": ec, "rsa2048": rsa}
        reports = java_clients(classpath, [ClientJob(key_type, servers[key_type].port, pki_of(key_type).cafile,
                                                     send=key_type) for key_type, _ in SIGNATURES])
        served = {key_type: server.wait(1)[0] for key_type, server in servers.items()}
    for key_type, scheme in SIGNATURES:
        [report] = reports[key_type]
        assert ok(report).peer == "CN=localhost" and report.echo == f"{key_type}\n", f"{JAVA}: {report}"
        assert negotiated(served[key_type]).signature_scheme is scheme, JAVA


def test_java_client_gets_hello_retry_request_from_our_server(classpath: Path, pki: Pki) -> None:
    # JSSE's default list starts with x25519 and it sends that share alone; we take only P-384.
    with OurServer(server_config(pki, groups=(NamedGroup.secp384r1,))) as server:
        reports = java_clients(classpath, [ClientJob("hrr", server.port, pki.cafile, send="after-HRR")])
        [served] = server.wait(1)
    assert ok(reports["hrr"][0]).echo == "after-HRR\n", JAVA
    assert (negotiated(served).group, negotiated(served).hello_retry) == (NamedGroup.secp384r1, True), JAVA


def test_java_client_alpn_with_our_server(classpath: Path, pki: Pki) -> None:
    with OurServer(server_config(pki, alpn=("http/1.1",))) as server:
        reports = java_clients(classpath, [ClientJob("alpn", server.port, pki.cafile, alpn=["h2", "http/1.1"],
                                                     send="alpn")])
        [served] = server.wait(1)
    assert ok(reports["alpn"][0]).alpn == "http/1.1", JAVA
    assert negotiated(served).alpn == "http/1.1", JAVA


# JSSE updates its sending keys once this many bytes went out under them (a java.security property; 2^37 by default).
SMALL_KEY_LIMITS = {"jdk.tls.keyLimits": "AES/GCM/NoPadding KeyUpdate 2^12, ChaCha20-Poly1305 KeyUpdate 2^12"}


def test_java_client_key_update_with_our_server(classpath: Path, pki: Pki) -> None:
    line = "x" * 99
    with OurServer(server_config(pki)) as server:
        reports = java_clients(classpath, [ClientJob("update", server.port, pki.cafile, send=line, repeat=200)],
                               security=SMALL_KEY_LIMITS)
        [served] = server.wait(1)
    assert ok(reports["update"][0]).echo == f"{line}\n" * 200, f"{JAVA} did not get 20 kB back"
    assert served.received == f"{line}\n".encode() * 200
    start, end = served.secrets_at_handshake, served.secrets_at_end
    assert start is not None and end is not None
    assert end.read_secret != start.read_secret, f"{JAVA} sent no KeyUpdate (jdk.tls.keyLimits)"


def test_java_client_resumes_with_our_ticket(classpath: Path, pki: Pki) -> None:
    config = server_config(pki, ticket_keys=TicketKeyRing([TicketKey.generate(os.urandom)]))
    with OurServer(config) as server:
        reports = java_clients(classpath, [ClientJob("resume", server.port, pki.cafile, connections=2,
                                                     send="resume")])
        served = server.wait(2)
    assert [ok(report).resumed for report in reports["resume"]] == [False, True], f"{JAVA}: {reports}"
    assert [negotiated(s).resumed for s in served] == [False, True], JAVA
    # The resumed session still names the server the first handshake verified.
    assert reports["resume"][1].peer == "CN=localhost", JAVA


def test_java_client_certificate_with_our_server(classpath: Path, pki: Pki, client_pki: Pki) -> None:
    auth = ClientAuth(mode="required", trust=TrustStore.from_pem_file(client_pki.cafile))
    with OurServer(server_config(pki, client_auth=auth)) as server:
        reports = java_clients(classpath, [ClientJob("mtls", server.port, pki.cafile, cert=client_pki.cert,
                                                     key=client_pki.key, send="mtls")])
        [served] = server.wait(1)
    assert ok(reports["mtls"][0]).echo == "mtls\n", JAVA
    [leaf] = negotiated(served).peer_certificates
    assert leaf == CertifiedKey.from_pem_files(client_pki.cert, client_pki.key).chain[0], JAVA


def test_java_client_with_another_trust_anchor_refuses_our_server(classpath: Path, pki: Pki,
                                                                  client_pki: Pki) -> None:
    with OurServer(server_config(pki)) as server:
        reports = java_clients(classpath, [ClientJob("untrusted", server.port, client_pki.cafile)])
        [served] = server.wait(1)
    [report] = reports["untrusted"]
    assert report.error_type == "javax.net.ssl.SSLHandshakeException", f"{JAVA}: {report}"
    # JDK 17.0.21 puts the alert it sends first: "(certificate_unknown) PKIX path building failed: ..."
    message = report.error_message or ""
    assert message.removeprefix("(certificate_unknown) ").startswith("PKIX path"), f"{JAVA}: {report}"
    assert served.negotiated is None
    # JSSE answers any chain its trust manager refuses with certificate_unknown (OpenSSL: unknown_ca).
    assert isinstance(served.error, RemoteAlert), f"{JAVA}: {served.error!r}"
    assert served.error.description is AlertDescription.certificate_unknown, f"{JAVA}: {served.error!r}"


# ============================================================================ our client, Java server


@pytest.fixture(scope="module")
def java_server(classpath: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JavaServer, Pki]]:
    """One JSSE server (ECDSA P-256, ALPN http/1.1) for the module's tests; its PKI."""
    pki = make_pki(tmp_path_factory.mktemp("java-server-pki"))
    with JavaServer(classpath, pki.cert, pki.key, alpn=["http/1.1"]) as server:
        yield server, pki


def echo_with(server: JavaServer, cafile: Path, data: bytes, **config: Any) -> tuple[HandshakeComplete, JavaReport]:
    """Our client's handshake with ``server`` and an echo of ``data``; our view and the server's report."""
    before = len(server.reports())
    with connect("127.0.0.1", server.port, server_name="localhost", cafile=cafile, timeout=10, **config) as tls:
        tls.sendall(data)
        echoed = b""
        while len(echoed) < len(data) and (chunk := tls.recv(65536)):
            echoed += chunk
        done = tls.negotiated
    assert echoed == data, f"{JAVA} echoed {echoed!r}"
    assert done is not None
    return done, ok(server.wait_reports(before + 1)[before])


@pytest.mark.parametrize("suite", list(SUITES))
def test_our_client_negotiates_each_suite_with_java_server(java_server: tuple[JavaServer, Pki], suite: str) -> None:
    server, pki = java_server
    done, report = echo_with(server, pki.cafile, f"suite {suite}\n".encode(), cipher_suites=(SUITES[suite],))
    assert report.suite == suite and report.sni == "localhost", f"{JAVA}: {report}"
    assert done.cipher_suite is SUITES[suite]


@pytest.mark.parametrize("group", list(JAVA_GROUPS), ids=list(JAVA_GROUPS.values()))
def test_our_client_negotiates_each_group_with_java_server(java_server: tuple[JavaServer, Pki],
                                                           group: NamedGroup) -> None:
    # JSSE does not say which group it used: offering that group alone is what makes it the one.
    server, pki = java_server
    done, _ = echo_with(server, pki.cafile, f"group {group.name}\n".encode(), groups=(group,))
    assert (done.group, done.hello_retry) == (group, False), JAVA


def test_our_client_gets_hello_retry_request_from_java_server(java_server: tuple[JavaServer, Pki]) -> None:
    # JDK 17 has no X25519MLKEM768: a share for it alone gets a HelloRetryRequest for a group it has.
    server, pki = java_server
    groups = (NamedGroup.X25519MLKEM768, NamedGroup.secp256r1)
    done, _ = echo_with(server, pki.cafile, b"after HRR\n", groups=groups, key_share_groups=groups[:1])
    assert (done.group, done.hello_retry) == (NamedGroup.secp256r1, True), JAVA


def test_our_client_alpn_with_java_server(java_server: tuple[JavaServer, Pki]) -> None:
    server, pki = java_server
    done, report = echo_with(server, pki.cafile, b"alpn\n", alpn=("h2", "http/1.1"))
    assert done.alpn == report.alpn == "http/1.1", f"{JAVA}: {report}"


def test_our_client_resumes_with_java_server_ticket(java_server: tuple[JavaServer, Pki]) -> None:
    server, pki = java_server
    store = MemorySessionStore()
    first, first_report = echo_with(server, pki.cafile, b"first\n", session_store=store)
    second, second_report = echo_with(server, pki.cafile, b"second\n", session_store=store)
    assert (first.resumed, second.resumed) == (False, True), JAVA
    assert (first_report.resumed, second_report.resumed) == (False, True), f"{JAVA}: {second_report}"


@pytest.mark.parametrize("request_peer", [False, True], ids=["update_not_requested", "update_requested"])
def test_our_client_key_update_with_java_server(java_server: tuple[JavaServer, Pki], request_peer: bool) -> None:
    server, pki = java_server
    with connect("127.0.0.1", server.port, server_name="localhost", cafile=pki.cafile, timeout=10) as tls:
        tls.sendall(b"before\n")
        assert tls.recv(100) == b"before\n", JAVA
        start = tls.conn.traffic_secrets()
        tls.key_update(request_peer=request_peer)
        tls.sendall(b"after\n")
        assert tls.recv(100) == b"after\n", f"{JAVA} did not answer after our KeyUpdate"
        end = tls.conn.traffic_secrets()
    assert end.write_secret != start.write_secret
    assert (end.read_secret != start.read_secret) == request_peer, f"{JAVA} answered update_requested?"


@pytest.mark.parametrize(("key_type", "scheme"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_our_client_verifies_java_server_signature(classpath: Path, pki_of: PkiOf, key_type: KeyType,
                                                   scheme: SignatureScheme) -> None:
    pki = pki_of(key_type)
    with JavaServer(classpath, pki.cert, pki.key) as server:
        done, _ = echo_with(server, pki.cafile, f"signed by {key_type}\n".encode())
    assert done.signature_scheme is scheme, JAVA


def test_our_client_certificate_with_java_server(classpath: Path, pki: Pki, client_pki: Pki) -> None:
    identity = CertifiedKey.from_pem_files(client_pki.cert, client_pki.key)
    with JavaServer(classpath, pki.cert, pki.key, client_auth="need", client_ca=client_pki.cafile) as server:
        _, report = echo_with(server, pki.cafile, b"mtls\n", certificate=identity)
        with pytest.raises(RemoteAlert) as caught:
            echo_with(server, pki.cafile, b"no certificate\n")
        refused = server.wait_reports(2)[1]
    assert report.peer == "CN=tlskit interop client", f"{JAVA}: {report}"
    # An empty Certificate got bad_certificate from JSSE up to JDK 17.0.20; 17.0.21 sends what RFC 8446 §4.4.2.4
    # says, certificate_required, and names that alert first in its message.
    alert = caught.value.description
    assert alert in (AlertDescription.bad_certificate, AlertDescription.certificate_required), f"{JAVA}: {caught.value}"
    assert refused.error_message in ("Empty client certificate chain",
                                     f"({alert.name}) Empty client certificate chain"), f"{JAVA}: {refused}"


def test_our_client_refuses_java_server_certificate_for_another_name(classpath: Path, tmp_path: Path) -> None:
    root = make_ca("tlskit interop root")
    cert, key = make_leaf(root, names=["other.example"]).write(tmp_path, "server")
    cafile = write_pem(tmp_path / "ca.pem", [root])
    with JavaServer(classpath, cert, key) as server, socket.create_connection((HOST, server.port), timeout=10) as raw:
        tls = wrap_socket(raw, server_name="localhost", cafile=cafile, do_handshake=False)
        with pytest.raises(CertificateError) as caught:
            tls.do_handshake()
        # The socket stays open until JSSE has read our alert: closed with the rest of JSSE's flight unread, it
        # would reset the connection, and JSSE, still writing that flight, then fails with "Broken pipe".
        [report] = server.wait_reports(1)
    assert caught.value.description is AlertDescription.bad_certificate, caught.value
    assert report.error_type == "javax.net.ssl.SSLHandshakeException", f"{JAVA}: {report}"
    assert report.error_message in ("Received fatal alert: bad_certificate",  # JDK 17.0.21 names the alert first
                                    "(bad_certificate) Received fatal alert: bad_certificate"), f"{JAVA}: {report}"
