"""tlskit against Python's ``ssl`` module (CPython's binding of the system OpenSSL), both ways.

Both stacks answer the same questions (``version()``, ``cipher()``, ``selected_alpn_protocol()``,
``getpeercert()``); the answers must agree, and data must flow both ways.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.interop.conftest import Pki
from tests.interop.ours import SUITES, OurServer, server_config
from tlskit.enums import AlertDescription, NamedGroup
from tlskit.errors import RemoteAlert
from tlskit.io.common import peer_cert_dict
from tlskit.io.socket import TLSSocket, connect

SSL_VERSION = ssl.OPENSSL_VERSION
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: many full records each way


def ssl_client_context(pki: Pki, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def exchange(tls: ssl.SSLSocket | TLSSocket, data: bytes) -> bytes:
    """Send ``data`` to an echo peer and read the same amount back."""
    tls.sendall(data)
    got = bytearray()
    while len(got) < len(data):
        chunk = tls.recv(65536)
        assert chunk, f"peer closed after {len(got)} of {len(data)} bytes"
        got += chunk
    return bytes(got)


# ============================================================================ our server, ssl client


@pytest.mark.parametrize("suite", list(SUITES))
def test_ssl_client_with_our_server(pki: Pki, suite: str) -> None:
    with OurServer(server_config(pki, cipher_suites=(SUITES[suite],))) as server:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            ssl_client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert exchange(tls, PAYLOAD) == PAYLOAD, SSL_VERSION
            ssl_view = (tls.version(), tls.cipher(), tls.getpeercert())
        [served] = server.wait(1)
    assert served.error is None and served.received == PAYLOAD, served.error
    assert ssl_view[0] == "TLSv1.3" == served.version, SSL_VERSION
    assert ssl_view[1] == served.cipher, f"ssl ({SSL_VERSION}) says {ssl_view[1]}, tlskit {served.cipher}"
    assert ssl_view[1] is not None and ssl_view[1][0] == suite
    subject = dict(item for rdn in ssl_view[2]["subject"] for item in rdn)  # type: ignore[index]
    assert subject["commonName"] == "localhost"


def test_ssl_client_alpn_and_hello_retry_with_our_server(pki: Pki) -> None:
    config = server_config(pki, alpn=("http/1.1",), groups=(NamedGroup.secp384r1,))  # ssl shares x25519 first
    with OurServer(config) as server:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            ssl_client_context(pki, ["h2", "http/1.1"]).wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert exchange(tls, b"hello") == b"hello"
            alpn = tls.selected_alpn_protocol()
        [served] = server.wait(1)
    assert served.negotiated is not None
    assert alpn == served.negotiated.alpn == "http/1.1", SSL_VERSION
    assert (served.negotiated.group, served.negotiated.hello_retry) == (NamedGroup.secp384r1, True), SSL_VERSION


def test_ssl_client_rejecting_our_name_sends_an_alert_we_report(pki: Pki) -> None:
    with OurServer(server_config(pki)) as server:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
        ):
            ssl_client_context(pki).wrap_socket(raw, server_hostname="wrong.example")
        [served] = server.wait(1)
    assert served.negotiated is None
    assert isinstance(served.error, RemoteAlert), f"{SSL_VERSION}: {served.error!r}"
    assert served.error.description is AlertDescription.bad_certificate, f"{SSL_VERSION}: {served.error!r}"


# ============================================================================ our client, ssl server


@dataclass
class SslServer:
    """A Python ``ssl`` echo server on a thread; one connection at a time, each recorded."""

    pki: Pki
    alpn: list[str] | None = None
    port: int = 0
    seen: list[tuple[str | None, tuple[str, str, int] | None, str | None]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def serve(self, listener: socket.socket, context: ssl.SSLContext) -> None:
        try:
            raw, _ = listener.accept()
            raw.settimeout(10)
            with context.wrap_socket(raw, server_side=True) as tls:
                self.seen.append((tls.version(), tls.cipher(), tls.selected_alpn_protocol()))
                while data := tls.recv(65536):
                    tls.sendall(data)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(exc)
        finally:
            self.done.set()


@pytest.fixture
def ssl_server(pki: Pki) -> Iterator[SslServer]:
    server = SslServer(pki)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(pki.cert), str(pki.key))
    context.set_alpn_protocols(["http/1.1"])
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        server.port = listener.getsockname()[1]
        thread = threading.Thread(target=server.serve, args=(listener, context), daemon=True)
        thread.start()
        yield server
        thread.join(timeout=10)


@pytest.mark.parametrize("suite", list(SUITES))
def test_our_client_with_ssl_server(pki: Pki, ssl_server: SslServer, suite: str) -> None:
    with connect("127.0.0.1", ssl_server.port, server_name="localhost", cafile=pki.cafile, timeout=10,
                 cipher_suites=(SUITES[suite],), alpn=["h2", "http/1.1"]) as tls:
        assert exchange(tls, PAYLOAD) == PAYLOAD, SSL_VERSION
        ours = (tls.version(), tls.cipher(), tls.selected_alpn_protocol())
        cert = tls.getpeercert()
    assert ssl_server.done.wait(10) and not ssl_server.errors, ssl_server.errors
    assert [ours] == ssl_server.seen, f"tlskit {ours} vs ssl ({SSL_VERSION}) {ssl_server.seen}"
    assert ours[1] is not None and ours[1][0] == suite
    assert isinstance(cert, dict) and ("DNS", "localhost") in cert["subjectAltName"]


def test_our_client_key_update_with_ssl_server(pki: Pki, ssl_server: SslServer) -> None:
    with connect("127.0.0.1", ssl_server.port, server_name="localhost", cafile=pki.cafile, timeout=10) as tls:
        assert exchange(tls, b"before") == b"before"
        start = tls.conn.traffic_secrets()
        tls.key_update(request_peer=True)
        assert exchange(tls, b"after") == b"after", f"ssl ({SSL_VERSION}) stopped after our KeyUpdate"
        end = tls.conn.traffic_secrets()
    assert end.write_secret != start.write_secret and end.read_secret != start.read_secret
    assert ssl_server.done.wait(10) and not ssl_server.errors, ssl_server.errors


def test_getpeercert_matches_ssl(pki: Pki) -> None:
    """Our ``getpeercert()`` dict for the server leaf equals what ``ssl`` makes of the same certificate."""
    with OurServer(server_config(pki)) as server:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            ssl_client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            theirs = tls.getpeercert()
            tls.sendall(b"x")
            tls.recv(1)
        server.wait(1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(str(pki.cert), str(pki.key))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        probe = SslServer(pki)
        thread = threading.Thread(target=probe.serve, args=(listener, context), daemon=True)
        thread.start()
        with connect("127.0.0.1", listener.getsockname()[1], server_name="localhost", cafile=pki.cafile,
                     timeout=10) as ours_tls:
            ours = ours_tls.getpeercert()
        thread.join(timeout=10)
    assert isinstance(ours, dict) and isinstance(theirs, dict)
    # serialNumber: same number; its spelling is checked (and currently differs) in the test below.
    assert int(ours.pop("serialNumber"), 16) == int(theirs.pop("serialNumber"), 16)
    assert ours == theirs, f"ssl ({SSL_VERSION}) says {theirs}"


def test_getpeercert_serial_number_spelled_as_ssl(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "serial test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x123).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem = tmp_path / "serial.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    theirs = ssl._ssl._test_decode_cert(str(pem))  # type: ignore[attr-defined]  # what getpeercert() returns
    ours = peer_cert_dict(cert.public_bytes(serialization.Encoding.DER))
    assert theirs["serialNumber"] == "0123"
    assert ours["serialNumber"] == theirs["serialNumber"], f"ssl ({SSL_VERSION})"
