"""tlskit against OpenSSL's command line tools, both ways.

Our server (``tlskit.io.socket.listen`` in a background thread, echoing) against ``openssl s_client``; our
client (``tlskit.io.socket.connect`` or the sans-IO ``Connection``) against ``openssl s_server -www``. Each
test checks what the OpenSSL side itself reports it negotiated (``negotiated()`` / the status page
``s_server -www`` returns), what our side reports, and that application data went through.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.certs import KeyType, make_ca, make_leaf, write_pem
from tests.interop.conftest import Pki
from tests.interop.ours import (
    GROUPS,
    SUITES,
    InteractiveClient,
    OurServer,
    Served,
    application_data,
    read_all,
    s_client_argv,
    sansio_exchange,
    server_config,
)
from tests.interop.peers import (
    OpenSSLServer,
    negotiated,
    openssl_client,
    parse_openssl_client,
    run_client,
    tool_version,
)
from tlskit.config import CertifiedKey, ClientConfig, ServerConfig
from tlskit.enums import AlertDescription, CipherSuite, NamedGroup, SignatureScheme
from tlskit.errors import AlertError, CertificateError, RemoteAlert
from tlskit.events import HandshakeComplete, SessionTicketReceived
from tlskit.io.socket import TLSSocket, connect
from tlskit.pki.verify import TrustStore
from tlskit.stores.memory import MemorySessionStore
from tlskit.tickets.keyring import TicketKey, TicketKeyRing

OPENSSL = tool_version("openssl")
GET = b"GET / HTTP/1.0\r\n\r\n"
PkiOf = Callable[[KeyType], Pki]

# key type -> (the scheme our server must sign with, s_client's "Signature type", its "Hash used")
SCHEMES: list[tuple[KeyType, SignatureScheme, str, str]] = [
    ("ec256", SignatureScheme.ecdsa_secp256r1_sha256, "ECDSA", "SHA256"),
    ("ec384", SignatureScheme.ecdsa_secp384r1_sha384, "ECDSA", "SHA384"),
    ("ed25519", SignatureScheme.ed25519, "ed25519", "UNDEF"),
    ("rsa2048", SignatureScheme.rsa_pss_rsae_sha256, "RSA-PSS", "SHA256"),
    ("rsa2048", SignatureScheme.rsa_pss_rsae_sha384, "RSA-PSS", "SHA384"),
    ("rsa2048", SignatureScheme.rsa_pss_rsae_sha512, "RSA-PSS", "SHA512"),
]


def echo_through(server: OurServer, pki: Pki, data: bytes, **client_args: Any) -> tuple[Negotiation, Served]:
    """s_client sends ``data`` to our echo server and waits for it back; both sides' view of it."""
    result = openssl_client(server.port, cafile=pki.cafile, data=data, expect=data.strip(), **client_args)
    [served] = server.wait(1)
    assert result.returncode == 0, f"{OPENSSL} s_client failed:\n{result.stderr}\nserver: {served.error!r}"
    assert served.error is None, f"tlskit server failed against {OPENSSL}: {served.error!r}"
    assert served.received == data, f"tlskit server received {served.received!r} from {OPENSSL}"
    assert data.decode() in result.stdout, f"{OPENSSL} s_client did not get the echo: {result.stdout!r}"
    assert served.negotiated is not None
    return Negotiation(result), served


class Negotiation:
    """``negotiated()`` of an s_client run plus the lines it does not parse."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.text = f"{result.stdout}\n{result.stderr}"
        self.got = negotiated(result)

    def line(self, label: str) -> str | None:
        match = re.search(rf"^{re.escape(label)}: (.+)$", self.text, re.MULTILINE)
        return match.group(1).strip() if match else None


# ============================================================================ our server, openssl s_client


@pytest.mark.parametrize("suite", list(SUITES))
def test_s_client_negotiates_each_suite_with_our_server(pki: Pki, suite: str) -> None:
    with OurServer(server_config(pki)) as server:
        seen, served = echo_through(server, pki, f"suite {suite}\n".encode(), ciphersuites=suite)
    assert (seen.got.protocol, seen.got.cipher, seen.got.verified) == ("TLSv1.3", suite, True), OPENSSL
    assert served.negotiated is not None and served.negotiated.cipher_suite is SUITES[suite]


@pytest.mark.parametrize(("openssl_group", "group", "iana"), GROUPS, ids=[g[2] for g in GROUPS])
def test_s_client_negotiates_each_group_with_our_server(pki: Pki, openssl_group: str, group: NamedGroup,
                                                         iana: str) -> None:
    with OurServer(server_config(pki)) as server:
        seen, served = echo_through(server, pki, f"group {iana}\n".encode(), groups=openssl_group)
    assert seen.got.group == iana, f"{OPENSSL} s_client reports group {seen.got.group}"
    assert served.negotiated is not None
    assert (served.negotiated.group, served.negotiated.hello_retry) == (group, False)


@pytest.mark.parametrize(("key_type", "scheme", "openssl_type", "openssl_hash"), SCHEMES,
                         ids=[f"{s[0]}-{s[1].name}" for s in SCHEMES])
def test_s_client_verifies_each_signature_scheme_of_our_server(
    pki_of: PkiOf, key_type: KeyType, scheme: SignatureScheme, openssl_type: str, openssl_hash: str
) -> None:
    pki = pki_of(key_type)
    with OurServer(server_config(pki)) as server:
        seen, served = echo_through(server, pki, f"signed {scheme.name}\n".encode(), sigalgs=scheme.name)
    assert seen.got.verified, f"{OPENSSL} did not verify our {key_type} CertificateVerify: {seen.text}"
    assert seen.got.signature == openssl_type, f"{OPENSSL} s_client reports signature type {seen.got.signature}"
    assert seen.line("Hash used") == openssl_hash, f"{OPENSSL}: {seen.text}"
    assert served.negotiated is not None and served.negotiated.signature_scheme is scheme


def test_s_client_key_share_for_another_group_gets_hello_retry_request(pki: Pki) -> None:
    # OpenSSL sends a key share for its first group only: P-256 here, which our server does not accept.
    with OurServer(server_config(pki, groups=(NamedGroup.x25519,))) as server:
        seen, served = echo_through(server, pki, b"after HRR\n", groups="P-256:X25519")
    assert seen.got.group == "x25519", f"{OPENSSL} s_client reports group {seen.got.group}"
    assert served.negotiated is not None
    assert (served.negotiated.group, served.negotiated.hello_retry) == (NamedGroup.x25519, True)


def test_s_client_alpn_with_our_server(pki: Pki) -> None:
    with OurServer(server_config(pki, alpn=("http/1.1",))) as server:
        seen, served = echo_through(server, pki, b"alpn\n", alpn=["h2", "http/1.1"], brief=False)
    assert seen.got.alpn == "http/1.1", f"{OPENSSL} s_client reports ALPN {seen.got.alpn}"
    assert served.negotiated is not None and served.negotiated.alpn == "http/1.1"


def test_s_client_alpn_without_overlap_gets_no_application_protocol(pki: Pki) -> None:
    with OurServer(server_config(pki, alpn=("http/1.1",))) as server:
        result = openssl_client(server.port, cafile=pki.cafile, alpn=["h2"])
        [served] = server.wait(1)
    assert result.returncode != 0
    assert "alert no application protocol" in result.stderr, f"{OPENSSL}: {result.stderr}"
    assert isinstance(served.error, AlertError)
    assert served.error.description is AlertDescription.no_application_protocol


def test_s_client_sni_selects_our_certificate(tmp_path: Path) -> None:
    root = make_ca("tlskit sni root")
    leaves = {name: make_leaf(root, names=[name]) for name in ("alpha.test", "beta.test")}
    keys = {name: CertifiedKey(chain=(leaf.der,), private_key=leaf.key) for name, leaf in leaves.items()}
    cafile = write_pem(tmp_path / "ca.pem", [root])
    asked: list[str | None] = []

    def resolve(server_name: str | None, schemes: object) -> CertifiedKey | None:
        asked.append(server_name)
        return keys.get(server_name or "")

    pki = Pki(cafile=cafile, cert=Path(), key=Path())
    for name in ("beta.test", "alpha.test"):
        with OurServer(ServerConfig(cert_resolver=resolve)) as server:
            seen, served = echo_through(server, pki, f"sni {name}\n".encode(), servername=name)
        assert seen.got.verified, f"{OPENSSL} did not accept the certificate for {name}: {seen.text}"
        assert seen.line("Peer certificate") == f"CN = {name}", f"{OPENSSL}: {seen.text}"
        assert served.negotiated is not None and served.negotiated.server_name == name
    assert asked == ["beta.test", "alpha.test"]
    with OurServer(ServerConfig(cert_resolver=resolve)) as server:  # a trailing dot: OpenSSL's servers take it
        seen, served = echo_through(server, pki, b"sni with a dot\n", servername="alpha.test.",
                                    extra_args=["-verify_hostname", "alpha.test"])  # its check keeps the dot
    assert seen.got.verified and served.negotiated is not None, f"{OPENSSL}: {seen.text}"
    assert served.negotiated.server_name == "alpha.test" and asked[-1] == "alpha.test"


@pytest.mark.parametrize("command", ["k", "K"], ids=["k-update_not_requested", "K-update_requested"])
def test_s_client_key_update_with_our_server(pki: Pki, command: str) -> None:
    with OurServer(server_config(pki)) as server:
        with InteractiveClient(s_client_argv(server.port, pki.cafile)) as client:
            client.send_line(b"before update\n")
            client.wait_for("stdout", "before update")
            client.send_line(command.encode() + b"\n")
            client.wait_for("stderr", "KEYUPDATE")
            client.send_line(b"after update\n")
            client.wait_for("stdout", "after update")
            status = client.close()
        [served] = server.wait(1)
    assert status == 0, f"{OPENSSL}: {client.stderr()}"
    assert served.error is None and served.received == b"before update\nafter update\n", served
    start, end = served.secrets_at_handshake, served.secrets_at_end
    assert start is not None and end is not None
    assert end.read_secret != start.read_secret, f"{OPENSSL}'s KeyUpdate did not change our receiving key"
    # 'K' asks us to update too (update_requested); 'k' does not.
    assert (end.write_secret != start.write_secret) == (command == "K")


# ----------------------------------------------------------------------------- failures, our server


def _rejected_by_s_client(server_pki: Pki, cafile: Path) -> tuple[str, Served]:
    with OurServer(server_config(server_pki)) as server:
        result = openssl_client(server.port, cafile=cafile, extra_args=("-msg",))
        [served] = server.wait(1)
    assert result.returncode != 0, f"{OPENSSL} s_client accepted a certificate it should not"
    return result.stdout + result.stderr, served


def _other_name_pki(directory: Path) -> Pki:
    directory.mkdir()
    root = make_ca("tlskit other-name root")
    cert, key = make_leaf(root, names=["other.example"]).write(directory, "server")
    return Pki(cafile=write_pem(directory / "ca.pem", [root]), cert=cert, key=key)


def _foreign_ca_pki(directory: Path) -> Pki:
    directory.mkdir()
    root = make_ca("some foreign root")
    cert, key = make_leaf(root, names=["localhost"]).write(directory, "server")
    return Pki(cafile=write_pem(directory / "ca.pem", [root]), cert=cert, key=key)


def test_s_client_rejects_our_certificate_for_another_name_with_bad_certificate(tmp_path: Path) -> None:
    wrong = _other_name_pki(tmp_path / "wrong")
    text, served = _rejected_by_s_client(wrong, wrong.cafile)
    assert parse_openssl_client(text).verify_error == "hostname mismatch", f"{OPENSSL}: {text}"
    # What OpenSSL sends for X509_V_ERR_HOSTNAME_MISMATCH, read from its own -msg trace:
    assert ">>> TLS 1.3, Alert [length 0002], fatal bad_certificate" in text, f"{OPENSSL}: {text}"
    assert served.negotiated is None and served.error is not None


def test_s_client_rejects_our_untrusted_certificate_with_unknown_ca(pki: Pki, tmp_path: Path) -> None:
    foreign = _foreign_ca_pki(tmp_path / "foreign")
    text, served = _rejected_by_s_client(foreign, pki.cafile)
    assert parse_openssl_client(text).verify_error == "unable to get local issuer certificate", text
    assert ">>> TLS 1.3, Alert [length 0002], fatal unknown_ca" in text, f"{OPENSSL}: {text}"
    assert served.negotiated is None and served.error is not None


# Regression: a client's certificate alert comes in plaintext (it has not switched to its handshake key)
# and must surface as RemoteAlert, not as our unexpected_message (fixed in ff24ff8).


def test_our_server_reports_s_clients_bad_certificate_alert(tmp_path: Path) -> None:
    wrong = _other_name_pki(tmp_path / "wrong")
    _, served = _rejected_by_s_client(wrong, wrong.cafile)
    assert isinstance(served.error, RemoteAlert), f"against {OPENSSL}: {served.error!r}"
    assert served.error.description is AlertDescription.bad_certificate


def test_our_server_reports_s_clients_unknown_ca_alert(pki: Pki, tmp_path: Path) -> None:
    foreign = _foreign_ca_pki(tmp_path / "foreign")
    _, served = _rejected_by_s_client(foreign, pki.cafile)
    assert isinstance(served.error, RemoteAlert), f"against {OPENSSL}: {served.error!r}"
    assert served.error.description is AlertDescription.unknown_ca


def test_s_client_tls12_only_gets_protocol_version_from_our_server(pki: Pki) -> None:
    with OurServer(server_config(pki)) as server:
        argv = s_client_argv(server.port, pki.cafile)
        argv[argv.index("-tls1_3")] = "-tls1_2"
        result = run_client(argv)
        [served] = server.wait(1)
    assert result.returncode != 0
    assert "alert protocol version" in result.stderr, f"{OPENSSL}: {result.stderr}"
    assert isinstance(served.error, AlertError) and not isinstance(served.error, RemoteAlert)
    assert served.error.description is AlertDescription.protocol_version


# ============================================================================ our client, openssl s_server


def www_get(port: int, pki: Pki, request: bytes = GET, **config: Any) -> tuple[bytes, TLSSocket]:
    """Our client fetches the s_server -www status page; the page and the (closed) socket."""
    with connect("127.0.0.1", port, server_name="localhost", cafile=pki.cafile, timeout=10, **config) as tls:
        tls.sendall(request)
        page = read_all(tls)
    return page, tls


def check_page(page: bytes, suite: str) -> str:
    text = page.decode("utf-8", "replace")
    assert text.startswith("HTTP/1.0 200 ok"), f"{OPENSSL} s_server answered {text[:200]!r}"
    seen = parse_openssl_client(text)  # the page carries "New, TLSv1.3, Cipher is ..."
    assert (seen.protocol, seen.cipher) == ("TLSv1.3", suite), f"{OPENSSL} s_server page: {text}"
    return text


# key type -> the scheme a default s_server signs with for us
DEFAULT_SCHEME: dict[KeyType, SignatureScheme] = {
    "ec256": SignatureScheme.ecdsa_secp256r1_sha256,
    "ec384": SignatureScheme.ecdsa_secp384r1_sha384,
    "rsa2048": SignatureScheme.rsa_pss_rsae_sha256,
}


@pytest.mark.parametrize("key_type", list(DEFAULT_SCHEME))
@pytest.mark.parametrize(("openssl_group", "group", "iana"), GROUPS, ids=[g[2] for g in GROUPS])
@pytest.mark.parametrize("suite", list(SUITES))
def test_our_client_against_s_server_suite_group_key(
    pki_of: PkiOf, launch: Callable[[OpenSSLServer], OpenSSLServer], suite: str, openssl_group: str,
    group: NamedGroup, iana: str, key_type: KeyType,
) -> None:
    pki = pki_of(key_type)
    server = launch(OpenSSLServer(pki.cert, pki.key, ciphersuites=suite, groups=openssl_group))
    page, tls = www_get(server.port, pki, key_share_groups=(group,))
    text = check_page(page, suite)
    assert f"Shared groups: {iana}" in text, f"{OPENSSL} s_server page: {text}"
    done = tls.negotiated
    assert done is not None
    assert (done.cipher_suite, done.group, done.hello_retry) == (SUITES[suite], group, False), done
    assert done.signature_scheme is DEFAULT_SCHEME[key_type]


@pytest.mark.parametrize("scheme", [SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384,
                                    SignatureScheme.rsa_pss_rsae_sha512], ids=lambda s: s.name)
def test_our_client_verifies_s_server_rsa_pss_schemes(
    pki_of: PkiOf, launch: Callable[[OpenSSLServer], OpenSSLServer], scheme: SignatureScheme
) -> None:
    pki = pki_of("rsa2048")
    server = launch(OpenSSLServer(pki.cert, pki.key, sigalgs=scheme.name))
    page, tls = www_get(server.port, pki, signature_algorithms=(scheme,))
    check_page(page, "TLS_AES_128_GCM_SHA256")
    assert tls.negotiated is not None and tls.negotiated.signature_scheme is scheme, OPENSSL


def test_our_client_gets_hello_retry_request_from_s_server(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer]
) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key, groups="P-384"))
    page, tls = www_get(server.port, pki, key_share_groups=(NamedGroup.x25519,))
    text = check_page(page, "TLS_AES_128_GCM_SHA256")
    assert "Shared groups: secp384r1" in text, f"{OPENSSL}: {text}"
    assert tls.negotiated is not None
    assert (tls.negotiated.group, tls.negotiated.hello_retry) == (NamedGroup.secp384r1, True), OPENSSL


@pytest.mark.parametrize("limit", [512, 4096])
def test_our_record_size_limit_binds_only_a_server_that_echoed_it(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer], limit: int
) -> None:
    """RFC 8449 §4: the limit holds once negotiated. OpenSSL 3.0 ignores the extension and sends records up to
    2^14 (its Certificate is ~900 bytes, its status page over 4 KB): we took them for record_overflow."""
    server = launch(OpenSSLServer(pki.cert, pki.key))
    page, _ = www_get(server.port, pki, record_size_limit=limit)
    check_page(page, "TLS_AES_128_GCM_SHA256")
    assert len(page) > limit, OPENSSL


def test_our_client_alpn_with_s_server(pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer]) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key, alpn=["http/1.1"]))
    page, tls = www_get(server.port, pki, alpn=["h2", "http/1.1"])
    check_page(page, "TLS_AES_128_GCM_SHA256")
    assert tls.selected_alpn_protocol() == "http/1.1", OPENSSL


@pytest.mark.parametrize("request_peer", [False, True], ids=["update_not_requested", "update_requested"])
def test_our_client_key_update_with_s_server(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer], request_peer: bool
) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key, mode="rev"))
    with connect("127.0.0.1", server.port, server_name="localhost", cafile=pki.cafile, timeout=10) as tls:
        tls.sendall(b"before\n")
        assert tls.recv(100) == b"erofeb\n", OPENSSL
        start = tls.conn.traffic_secrets()
        tls.key_update(request_peer=request_peer)
        tls.sendall(b"after\n")
        assert tls.recv(100) == b"retfa\n", f"{OPENSSL} s_server did not answer after our KeyUpdate"
        end = tls.conn.traffic_secrets()
    assert end.write_secret != start.write_secret
    assert (end.read_secret != start.read_secret) == request_peer, f"{OPENSSL} answered update_requested?"


def test_our_client_parses_s_server_session_tickets(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer]
) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key, ciphersuites="TLS_AES_256_GCM_SHA384"))
    config = ClientConfig(server_name="localhost", trust=TrustStore.from_pem_file(pki.cafile))
    events = sansio_exchange(server.port, config, GET)
    check_page(application_data(events), "TLS_AES_256_GCM_SHA384")
    [done] = [e for e in events if isinstance(e, HandshakeComplete)]
    tickets = [e for e in events if isinstance(e, SessionTicketReceived)]
    assert len(tickets) == 2, f"{OPENSSL} s_server sends two tickets by default; we saw {len(tickets)}"
    for ticket in tickets:
        assert ticket.cipher_suite is CipherSuite.TLS_AES_256_GCM_SHA384 is done.cipher_suite
        assert len(ticket.psk) == 48  # SHA-384 resumption PSK (§4.6.1)
        assert ticket.ticket.lifetime == 7200, "OpenSSL's default session timeout"
        assert ticket.ticket.ticket, "empty ticket"
        assert ticket.server_name == "localhost"
        assert ticket.max_early_data_size == 0
    assert tickets[0].ticket.nonce != tickets[1].ticket.nonce
    assert tickets[0].psk != tickets[1].psk


# ----------------------------------------------------------------------------- failures, our client


def test_our_client_rejects_untrusted_s_server_with_unknown_ca(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer], tmp_path: Path
) -> None:
    foreign = _foreign_ca_pki(tmp_path / "foreign")
    server = launch(OpenSSLServer(foreign.cert, foreign.key))
    with pytest.raises(CertificateError) as caught:
        www_get(server.port, pki)
    assert caught.value.description is AlertDescription.unknown_ca, caught.value
    server.wait_for_output(r"alert unknown ca")  # "...:tlsv1 alert unknown ca:...SSL alert number 48"
    assert "SSL alert number 48" in server.output(), f"{OPENSSL}: {server.output()}"


def test_our_client_rejects_s_server_from_same_named_foreign_ca_with_unknown_ca(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer], tmp_path: Path
) -> None:
    from tests.interop.conftest import make_pki

    twin = make_pki(tmp_path / "twin")  # same CA names as ``pki``, different keys
    server = launch(OpenSSLServer(twin.cert, twin.key))
    with pytest.raises(CertificateError) as caught:
        www_get(server.port, pki)
    assert caught.value.description is AlertDescription.unknown_ca, f"{caught.value} ({OPENSSL} says unknown_ca)"


def test_our_client_rejects_s_server_certificate_for_another_name(
    launch: Callable[[OpenSSLServer], OpenSSLServer], tmp_path: Path
) -> None:
    wrong = _other_name_pki(tmp_path / "wrong")
    server = launch(OpenSSLServer(wrong.cert, wrong.key))
    with pytest.raises(CertificateError) as caught:
        www_get(server.port, wrong)
    assert caught.value.description is AlertDescription.bad_certificate, caught.value
    server.wait_for_output(r"alert bad certificate")
    assert "SSL alert number 42" in server.output(), f"{OPENSSL}: {server.output()}"


def test_our_client_against_tls12_only_s_server_gets_protocol_version(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer]
) -> None:
    # We offer only TLS 1.3 (supported_versions = [0x0304]); a TLS 1.2-only OpenSSL refuses that itself with
    # protocol_version, so the alert is the peer's (RemoteAlert), not one we raise.
    server = launch(OpenSSLServer(pki.cert, pki.key, tls13_only=False, extra_args=("-tls1_2",)))
    with pytest.raises(RemoteAlert) as caught:
        www_get(server.port, pki)
    assert caught.value.description is AlertDescription.protocol_version, caught.value
    server.wait_for_output(r"unsupported protocol")


# ============================================================================ resumption (tickets) both ways


def ticket_server_config(pki: Pki) -> ServerConfig:
    keys = TicketKeyRing([TicketKey.generate(os.urandom)])
    return server_config(pki, ticket_keys=keys)


def test_s_client_parses_our_tickets_and_resumes(pki: Pki, tmp_path: Path) -> None:
    session = tmp_path / "session.pem"
    config = ticket_server_config(pki)
    with OurServer(config) as server:
        first, _ = echo_through(server, pki, b"first\n", brief=False, extra_args=("-sess_out", str(session)))
    arrived = first.text.count("Post-Handshake New Session Ticket arrived")
    assert arrived == 2, f"{OPENSSL} saw {arrived} of our 2 tickets:\n{first.text}"
    assert "TLS session ticket lifetime hint: 7200 (seconds)" in first.text, f"{OPENSSL}: {first.text}"
    assert session.stat().st_size > 0, f"{OPENSSL} stored no session"
    with OurServer(config) as server:
        second, served = echo_through(server, pki, b"second\n", brief=False, extra_args=("-sess_in", str(session)))
    assert re.search(r"^Reused, TLSv1\.3, Cipher is ", second.text, re.MULTILINE), f"{OPENSSL}: {second.text}"
    assert served.negotiated is not None and served.negotiated.resumed, "our server did not resume"


def test_our_client_resumes_with_s_server_ticket(pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer]) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key))
    store = MemorySessionStore()
    first_page, first = www_get(server.port, pki, session_store=store)
    assert "New, TLSv1.3" in check_page(first_page, "TLS_AES_128_GCM_SHA256")
    assert first.negotiated is not None and not first.negotiated.resumed
    second_page, second = www_get(server.port, pki, session_store=store)
    text = second_page.decode("utf-8", "replace")
    assert text.startswith("HTTP/1.0 200 ok"), text[:200]
    assert "Reused, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256" in text, f"{OPENSSL} did not resume: {text}"
    assert second.negotiated is not None and second.negotiated.resumed, OPENSSL
