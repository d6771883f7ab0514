"""Smoke tests of the interop harness itself: real peers talking to each other, no tlskit involved.

They prove that launching, talking to, parsing and capturing third-party peers works before our own
stack is plugged in, so an interop failure elsewhere points at tlskit, not at the plumbing.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.interop.conftest import Pki, make_pki
from tests.interop.peers import (
    GNUTLS_TLS13,
    GnuTLSServer,
    OpenSSLServer,
    capture,
    curl_get,
    free_port,
    gnutls_client,
    is_listening,
    negotiated,
    openssl_client,
    tool_version,
    tshark,
    tshark_decrypt,
)

T = TypeVar("T")
Launch = Callable[[T], T]

GET = b"GET / HTTP/1.0\r\n\r\n"


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert not is_listening(port)
    with socket.create_server(("127.0.0.1", port)):
        assert is_listening(port)


def test_openssl_client_gets_openssl_www_page(pki: Pki) -> None:
    with OpenSSLServer(pki.cert, pki.key, mode="www") as server:
        result = openssl_client(server.port, cafile=pki.cafile, data=GET, wait_for_close=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.0 200 ok"), result.stdout[:200]
    got = negotiated(result)
    assert (got.protocol, got.cipher, got.group) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384", "x25519")
    assert got.verified and got.verify_error is None
    assert got.signature == "ECDSA"


@pytest.mark.parametrize(
    ("suite", "group", "expected_group"),
    [
        ("TLS_AES_128_GCM_SHA256", "X25519", "x25519"),
        ("TLS_CHACHA20_POLY1305_SHA256", "P-256", "secp256r1"),
        ("TLS_AES_256_GCM_SHA384", "P-384", "secp384r1"),
    ],
)
def test_openssl_negotiates_requested_suite_and_group(
    pki: Pki, launch: Launch[OpenSSLServer], suite: str, group: str, expected_group: str
) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key, mode="rev", ciphersuites=suite, groups=group))
    result = openssl_client(
        server.port, cafile=pki.cafile, ciphersuites=suite, groups=group, data=b"hello\n", expect=b"olleh"
    )
    assert "olleh" in result.stdout
    got = negotiated(result)
    assert (got.protocol, got.cipher, got.group, got.verified) == ("TLSv1.3", suite, expected_group, True)


def test_openssl_reports_alpn_in_full_output(pki: Pki, launch: Launch[OpenSSLServer]) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key, alpn=["h2", "http/1.1"]))
    result = openssl_client(server.port, cafile=pki.cafile, alpn=["http/1.1"], brief=False)
    assert result.returncode == 0, result.stderr
    assert negotiated(result).alpn == "http/1.1"


def test_openssl_client_rejects_wrong_name(pki: Pki, launch: Launch[OpenSSLServer]) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key))
    result = openssl_client(server.port, cafile=pki.cafile, servername="wrong.example")
    assert result.returncode != 0
    got = negotiated(result)
    assert not got.verified
    assert got.verify_error == "hostname mismatch"


def test_openssl_server_plain_mode_exchanges_data(pki: Pki, launch: Launch[OpenSSLServer]) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key, mode="plain", naccept=1))

    def answer() -> None:  # once the client's data has arrived, reply through s_server's stdin
        server.wait_for_output("ping from client")
        server.send(b"pong\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    result = openssl_client(server.port, cafile=pki.cafile, data=b"ping from client\n", expect=b"pong")
    thread.join(timeout=20)
    assert "pong" in result.stdout


def test_gnutls_cli_echo_through_gnutls_serv(pki: Pki, launch: Launch[GnuTLSServer]) -> None:
    server = launch(GnuTLSServer(pki.cert, pki.key, mode="echo"))
    priority = GNUTLS_TLS13 + ":-CIPHER-ALL:+AES-128-GCM:-GROUP-ALL:+GROUP-X25519"
    result = gnutls_client(server.port, cafile=pki.cafile, priority=priority, data=b"echo me\n", expect=b"echo me")
    assert result.returncode == 0, result.stdout + result.stderr
    got = negotiated(result)
    assert (got.protocol, got.cipher, got.group, got.verified) == ("TLS1.3", "AES-128-GCM", "x25519", True)
    assert got.signature == "ECDSA-SECP256R1-SHA256"


def test_gnutls_cli_rejects_untrusted_server(pki: Pki, launch: Launch[GnuTLSServer], tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other")
    server = launch(GnuTLSServer(pki.cert, pki.key))
    result = gnutls_client(server.port, cafile=other.cafile)
    assert result.returncode != 0
    assert not negotiated(result).verified


def test_cross_openssl_client_to_gnutls_http(pki: Pki, launch: Launch[GnuTLSServer]) -> None:
    server = launch(GnuTLSServer(pki.cert, pki.key, mode="http", alpn=["http/1.1"]))
    result = openssl_client(server.port, cafile=pki.cafile, data=GET, wait_for_close=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.0 200 OK")
    assert negotiated(result).protocol == "TLSv1.3"


def test_cross_gnutls_client_to_openssl_rev(pki: Pki, launch: Launch[OpenSSLServer]) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key, mode="rev", groups="P-256"))
    result = gnutls_client(server.port, cafile=pki.cafile, data=b"abc\n", expect=b"cba")
    assert "cba" in result.stdout
    got = negotiated(result)
    assert (got.protocol, got.group, got.verified) == ("TLS1.3", "secp256r1", True)


def test_curl_against_openssl_www(pki: Pki, launch: Launch[OpenSSLServer]) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key))
    result = curl_get(
        f"https://localhost:{server.port}/",
        cacert=pki.cafile,
        extra=("--resolve", f"localhost:{server.port}:127.0.0.1", "-w", "\n%{http_code}"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("200")
    assert "TLSv1.3" in result.stdout  # the s_server status page names the protocol


def test_python_ssl_client_against_openssl(pki: Pki, launch: Launch[OpenSSLServer]) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key))
    context = ssl.create_default_context(cafile=str(pki.cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.3"
        tls.sendall(GET)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200 ok")


def test_capture_and_decrypt_curl_session(pki: Pki, launch: Launch[OpenSSLServer], tmp_path: Path) -> None:
    server = launch(OpenSSLServer(pki.cert, pki.key))
    keylog = tmp_path / "keylog.txt"
    with capture(server.port, pcap=tmp_path / "session.pcap") as pcap:
        result = curl_get(
            f"https://localhost:{server.port}/index.html",
            cacert=pki.cafile,
            keylog=keylog,
            extra=("--resolve", f"localhost:{server.port}:127.0.0.1", "--http1.1"),
        )
        assert result.returncode == 0, result.stderr
    assert "CLIENT_TRAFFIC_SECRET_0" in keylog.read_text()
    request_lines = tshark_decrypt(pcap, keylog, port=server.port)
    assert "GET /index.html HTTP/1.1" in request_lines
    # Control: without the key log nothing decrypts, so the line above came from decryption.
    undecrypted = tshark(pcap, "-Y", "http", "-T", "fields", "-e", "http.request.uri", tls_port=server.port, app="http")
    assert undecrypted.stdout.strip() == ""
    assert "Client Hello" in tshark(pcap, "-Y", "tls.handshake", tls_port=server.port).stdout


def test_tool_versions_are_known() -> None:
    for tool in ("openssl", "gnutls-cli", "curl", "tshark", "tcpdump"):
        assert tool_version(tool) not in ("missing", "unknown"), tool
