"""tlskit against GnuTLS, both ways: our client with ``gnutls-serv --echo``, our server with ``gnutls-cli``.

Suites and groups are forced on the GnuTLS side with priority strings; each test checks the session
description GnuTLS prints (``- Description: (TLS1.3-X.509)-(ECDHE-X25519)-(...)-(AES-128-GCM)``, from
gnutls-cli's report or gnutls-serv's per-connection log), what our side negotiated, and the data echoed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.certs import KeyType, make_ca, make_leaf, write_pem
from tests.interop.conftest import Pki
from tests.interop.ours import (
    GNUTLS_CIPHERS,
    GNUTLS_GROUPS,
    GROUPS,
    SUITES,
    OurServer,
    Served,
    application_data,
    sansio_exchange,
    server_config,
)
from tests.interop.peers import (
    GNUTLS_TLS13,
    GnuTLSServer,
    Negotiated,
    gnutls_client,
    negotiated,
    parse_gnutls_client,
    tool_version,
)
from tlskit.config import ClientConfig
from tlskit.enums import AlertDescription, NamedGroup, SignatureScheme
from tlskit.errors import CertificateError, RemoteAlert
from tlskit.events import HandshakeComplete, SessionTicketReceived
from tlskit.io.socket import connect
from tlskit.pki.verify import TrustStore
from tlskit.stores.memory import MemorySessionStore
from tlskit.tickets.keyring import TicketKey, TicketKeyRing

GNUTLS_CLI = tool_version("gnutls-cli")
GNUTLS_SERV = tool_version("gnutls-serv")
Launch = Callable[[GnuTLSServer], GnuTLSServer]
PkiOf = Callable[[KeyType], Pki]


def only_cipher(suite: str) -> str:
    return f"{GNUTLS_TLS13}:-CIPHER-ALL:+{GNUTLS_CIPHERS[suite]}"


def only_groups(*groups: NamedGroup) -> str:
    return f"{GNUTLS_TLS13}:-GROUP-ALL:" + ":".join(f"+GROUP-{GNUTLS_GROUPS[g]}" for g in groups)


# ============================================================================ our server, gnutls-cli


def cli_echo(server: OurServer, pki: Pki, data: bytes, priority: str = GNUTLS_TLS13) -> tuple[Negotiated, Served]:
    result = gnutls_client(server.port, cafile=pki.cafile, priority=priority, data=data, expect=data.strip())
    [served] = server.wait(1)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{GNUTLS_CLI} failed ({served.error!r}):\n{output}"
    assert served.error is None, f"tlskit server failed against {GNUTLS_CLI}: {served.error!r}"
    assert served.received == data, f"tlskit server received {served.received!r} from {GNUTLS_CLI}"
    assert data.decode() in result.stdout, f"{GNUTLS_CLI} did not get the echo:\n{output}"
    got = negotiated(result)
    assert got.protocol == "TLS1.3" and got.verified, f"{GNUTLS_CLI}:\n{output}"
    return got, served


@pytest.mark.parametrize("suite", list(SUITES))
def test_gnutls_cli_negotiates_each_suite_with_our_server(pki: Pki, suite: str) -> None:
    with OurServer(server_config(pki)) as server:
        got, served = cli_echo(server, pki, f"suite {suite}\n".encode(), only_cipher(suite))
    assert got.cipher == GNUTLS_CIPHERS[suite], f"{GNUTLS_CLI} reports {got}"
    assert served.negotiated is not None and served.negotiated.cipher_suite is SUITES[suite]


@pytest.mark.parametrize(("group", "iana"), [(g[1], g[2]) for g in GROUPS], ids=[g[2] for g in GROUPS])
def test_gnutls_cli_negotiates_each_group_with_our_server(pki: Pki, group: NamedGroup, iana: str) -> None:
    with OurServer(server_config(pki)) as server:
        got, served = cli_echo(server, pki, f"group {iana}\n".encode(), only_groups(group))
    assert got.group == iana, f"{GNUTLS_CLI} reports {got}"
    assert served.negotiated is not None
    assert (served.negotiated.group, served.negotiated.hello_retry) == (group, False)


SIGNATURES: list[tuple[KeyType, SignatureScheme, str]] = [
    ("ec256", SignatureScheme.ecdsa_secp256r1_sha256, "ECDSA-SECP256R1-SHA256"),
    ("ec384", SignatureScheme.ecdsa_secp384r1_sha384, "ECDSA-SECP384R1-SHA384"),
    ("ed25519", SignatureScheme.ed25519, "EdDSA-Ed25519"),
    ("rsa2048", SignatureScheme.rsa_pss_rsae_sha256, "RSA-PSS-RSAE-SHA256"),
]


@pytest.mark.parametrize(("key_type", "scheme", "gnutls_name"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_gnutls_cli_verifies_our_server_signature(
    pki_of: PkiOf, key_type: KeyType, scheme: SignatureScheme, gnutls_name: str
) -> None:
    pki = pki_of(key_type)
    with OurServer(server_config(pki)) as server:
        got, served = cli_echo(server, pki, f"signed by {key_type}\n".encode())
    assert got.signature == gnutls_name, f"{GNUTLS_CLI} reports {got}"
    assert served.negotiated is not None and served.negotiated.signature_scheme is scheme


def test_gnutls_cli_gets_hello_retry_request_from_our_server(pki: Pki) -> None:
    # GnuTLS sends one key share per key type: P-256 only here (P-384 is the same type), which we refuse.
    with OurServer(server_config(pki, groups=(NamedGroup.secp384r1,))) as server:
        got, served = cli_echo(server, pki, b"after HRR\n", only_groups(NamedGroup.secp256r1, NamedGroup.secp384r1))
    assert got.group == "secp384r1", f"{GNUTLS_CLI} reports {got}"
    assert served.negotiated is not None
    assert (served.negotiated.group, served.negotiated.hello_retry) == (NamedGroup.secp384r1, True)


def test_gnutls_cli_alpn_with_our_server(pki: Pki) -> None:
    with OurServer(server_config(pki, alpn=("http/1.1",))) as server:
        result = gnutls_client(server.port, cafile=pki.cafile, alpn=["h2", "http/1.1"], data=b"alpn\n",
                               expect=b"alpn")
        [served] = server.wait(1)
    assert negotiated(result).alpn == "http/1.1", f"{GNUTLS_CLI}: {result.stdout}"
    assert served.negotiated is not None and served.negotiated.alpn == "http/1.1"


def test_gnutls_cli_rejects_our_untrusted_certificate(pki: Pki, tmp_path: Path) -> None:
    root = make_ca("some foreign root")
    cert, key = make_leaf(root, names=["localhost"]).write(tmp_path, "server")
    foreign = Pki(cafile=write_pem(tmp_path / "ca.pem", [root]), cert=cert, key=key)
    with OurServer(server_config(foreign)) as server:
        result = gnutls_client(server.port, cafile=pki.cafile)
        [served] = server.wait(1)
    got = negotiated(result)
    assert result.returncode != 0 and not got.verified, f"{GNUTLS_CLI} accepted an untrusted chain"
    assert got.verify_error == "The certificate issuer is unknown.", f"{GNUTLS_CLI}: {got}"
    assert served.negotiated is None
    assert isinstance(served.error, RemoteAlert), f"{GNUTLS_CLI}: {served.error!r}"
    # GnuTLS answers an unknown issuer with bad_certificate (OpenSSL sends unknown_ca).
    assert served.error.description is AlertDescription.bad_certificate, served.error


# ============================================================================ our client, gnutls-serv


def serv_description(server: GnuTLSServer) -> Negotiated:
    """What gnutls-serv logged for the (single) connection it accepted."""
    server.wait_for_output(r"- Description: .+\n")
    return parse_gnutls_client(server.output())


def echo_with(server: GnuTLSServer, pki: Pki, data: bytes, **config: Any) -> HandshakeComplete:
    with connect("127.0.0.1", server.port, server_name="localhost", cafile=pki.cafile, timeout=10,
                 **config) as tls:
        tls.sendall(data)
        echoed = b""
        while len(echoed) < len(data) and (chunk := tls.recv(65536)):
            echoed += chunk
        done = tls.negotiated
    assert echoed == data, f"{GNUTLS_SERV} echoed {echoed!r}"
    assert done is not None
    return done


@pytest.mark.parametrize("suite", list(SUITES))
def test_our_client_negotiates_each_suite_with_gnutls_serv(pki: Pki, launch: Launch, suite: str) -> None:
    server = launch(GnuTLSServer(pki.cert, pki.key, priority=only_cipher(suite)))
    done = echo_with(server, pki, f"suite {suite}\n".encode())
    seen = serv_description(server)
    assert (seen.protocol, seen.cipher) == ("TLS1.3", GNUTLS_CIPHERS[suite]), f"{GNUTLS_SERV} logged {seen}"
    assert done.cipher_suite is SUITES[suite]


@pytest.mark.parametrize(("group", "iana"), [(g[1], g[2]) for g in GROUPS], ids=[g[2] for g in GROUPS])
def test_our_client_negotiates_each_group_with_gnutls_serv(
    pki: Pki, launch: Launch, group: NamedGroup, iana: str
) -> None:
    server = launch(GnuTLSServer(pki.cert, pki.key, priority=only_groups(group)))
    done = echo_with(server, pki, f"group {iana}\n".encode(), key_share_groups=(group,))
    seen = serv_description(server)
    assert seen.group == iana, f"{GNUTLS_SERV} logged {seen}"
    assert (done.group, done.hello_retry) == (group, False)


@pytest.mark.parametrize(("key_type", "scheme", "gnutls_name"),
                         [s for s in SIGNATURES if s[0] != "ed25519"],  # cryptography's verifier refuses Ed25519
                         ids=[s[0] for s in SIGNATURES if s[0] != "ed25519"])
def test_our_client_verifies_gnutls_serv_signature(
    pki_of: PkiOf, launch: Launch, key_type: KeyType, scheme: SignatureScheme, gnutls_name: str
) -> None:
    pki = pki_of(key_type)
    server = launch(GnuTLSServer(pki.cert, pki.key))
    done = echo_with(server, pki, f"signed by {key_type}\n".encode())
    assert serv_description(server).signature == gnutls_name, f"{GNUTLS_SERV}: {server.output()}"
    assert done.signature_scheme is scheme


def test_our_client_gets_hello_retry_request_from_gnutls_serv(pki: Pki, launch: Launch) -> None:
    server = launch(GnuTLSServer(pki.cert, pki.key, priority=only_groups(NamedGroup.secp384r1)))
    done = echo_with(server, pki, b"after HRR\n", key_share_groups=(NamedGroup.x25519,))
    assert serv_description(server).group == "secp384r1", f"{GNUTLS_SERV}: {server.output()}"
    assert (done.group, done.hello_retry) == (NamedGroup.secp384r1, True)


def test_our_client_alpn_with_gnutls_serv(pki: Pki, launch: Launch) -> None:
    server = launch(GnuTLSServer(pki.cert, pki.key, alpn=["http/1.1"]))
    done = echo_with(server, pki, b"alpn\n", alpn=("h2", "http/1.1"))
    assert done.alpn == "http/1.1", GNUTLS_SERV


def test_our_client_parses_gnutls_serv_session_tickets(pki: Pki, launch: Launch) -> None:
    server = launch(GnuTLSServer(pki.cert, pki.key, mode="http", priority=only_cipher("TLS_AES_128_GCM_SHA256")))
    config = ClientConfig(server_name="localhost", trust=TrustStore.from_pem_file(pki.cafile))
    events = sansio_exchange(server.port, config, b"GET / HTTP/1.0\r\n\r\n")
    page = application_data(events).decode("utf-8", "replace")
    assert page.startswith("HTTP/1.0 200 OK"), f"{GNUTLS_SERV}: {page[:300]}"
    assert "(TLS1.3-X.509)-(ECDHE-X25519)-(ECDSA-SECP256R1-SHA256)-(AES-128-GCM)" in page, page
    tickets = [e for e in events if isinstance(e, SessionTicketReceived)]
    assert tickets, f"{GNUTLS_SERV} sent no NewSessionTicket"
    for ticket in tickets:
        assert ticket.ticket.ticket and ticket.ticket.lifetime > 0
        assert len(ticket.psk) == 32 and ticket.server_name == "localhost"


def test_our_client_rejects_untrusted_gnutls_serv(pki: Pki, launch: Launch, tmp_path: Path) -> None:
    root = make_ca("some foreign root")
    cert, key = make_leaf(root, names=["localhost"]).write(tmp_path, "server")
    server = launch(GnuTLSServer(cert, key))
    with pytest.raises(CertificateError) as caught:
        echo_with(server, pki, b"never\n")
    assert caught.value.description is AlertDescription.unknown_ca
    # gnutls-serv logs that an alert came, not which one.
    server.wait_for_output(r"Error in handshake: A TLS fatal alert has been received", timeout=5)


def test_our_client_refused_by_tls12_only_gnutls_serv(pki: Pki, launch: Launch) -> None:
    # Unlike OpenSSL (protocol_version), GnuTLS picks TLS 1.2, finds none of our TLS 1.3-only suites usable
    # and refuses with handshake_failure.
    server = launch(GnuTLSServer(pki.cert, pki.key, priority="NORMAL:-VERS-ALL:+VERS-TLS1.2"))
    with pytest.raises(RemoteAlert) as caught:
        echo_with(server, pki, b"never\n")
    assert caught.value.description is AlertDescription.handshake_failure, f"{GNUTLS_SERV}: {server.output()}"
    server.wait_for_output(r"Error in handshake: No supported cipher suites have been found", timeout=5)


def test_gnutls_cli_resumes_with_our_ticket(pki: Pki) -> None:
    config = server_config(pki, ticket_keys=TicketKeyRing([TicketKey.generate(os.urandom)]))
    with OurServer(config) as server:
        result = gnutls_client(server.port, cafile=pki.cafile, extra_args=("--resume",), data=b"resumed?\n",
                               expect=b"resumed?")
        served = server.wait(2)
    output = result.stdout + result.stderr
    assert "*** This is a resumed session" in output, f"{GNUTLS_CLI} did not resume:\n{output}"
    assert [s.negotiated is not None and s.negotiated.resumed for s in served] == [False, True], served


def test_our_client_resumes_with_gnutls_serv_ticket(pki: Pki, launch: Launch) -> None:
    server = launch(GnuTLSServer(pki.cert, pki.key))
    store = MemorySessionStore()
    first = echo_with(server, pki, b"first\n", session_store=store)
    second = echo_with(server, pki, b"second\n", session_store=store)
    assert (first.resumed, second.resumed) == (False, True), GNUTLS_SERV
