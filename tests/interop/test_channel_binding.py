"""Exporters (RFC 8446 §7.5) and channel bindings (RFC 9266 tls-exporter, RFC 5929 tls-server-end-point),
checked against what OpenSSL computes for the same connection.

``openssl s_client``/``s_server -keymatexport LABEL -keymatexportlen N`` print the exporter value of their
connection ("Keying material: HEX"); ``openssl x509 -fingerprint`` hashes a certificate's DER. Lengths past
one hash block (48 bytes under SHA-256, 100 under SHA-384) take HKDF-Expand's second and third blocks.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.certs import KeyType, make_ca, make_leaf, write_pem
from tests.interop.conftest import Pki
from tests.interop.ours import OurServer, Served, server_config
from tests.interop.peers import OpenSSLServer, openssl_client, require
from tlskit.io.socket import TLSSocket, connect, wrap_socket
from tlskit.stores.memory import MemorySessionStore
from tlskit.tickets.keyring import TicketKey, TicketKeyRing

pytestmark = pytest.mark.interop

CB_LABEL = "EXPORTER-Channel-Binding"  # RFC 9266 §2
SUITES = {"TLS_AES_128_GCM_SHA256": 48, "TLS_AES_256_GCM_SHA384": 100}  # exporter lengths past one hash block


def keying_material(text: str) -> bytes:
    match = re.search(r"Keying material: ([0-9A-F]+)", text)
    assert match is not None, f"OpenSSL printed no keying material:\n{text}"
    return bytes.fromhex(match.group(1))


def fingerprint(cert: Path, digest: str) -> bytes:
    """``openssl x509 -fingerprint``: the hash of the (first) certificate's DER in ``cert``."""
    out = subprocess.run([require("openssl"), "x509", "-noout", "-fingerprint", f"-{digest}", "-in", str(cert)],
                         capture_output=True, text=True, check=True).stdout
    return bytes.fromhex(out.split("=", 1)[1].strip().replace(":", ""))


class Bindings:
    """A handler for ``OurServer`` that records the server's exporter values and channel bindings."""

    def __init__(self, label: bytes, length: int) -> None:
        self.label, self.length = label, length
        self.exported = b""
        self.tls_exporter: bytes | None = None
        self.end_point: bytes | Exception | None = None

    def __call__(self, tls: TLSSocket, served: Served) -> None:
        tls.do_handshake()
        self.exported = tls.export_keying_material(self.label, b"", self.length)
        self.tls_exporter = tls.get_channel_binding("tls-exporter")
        try:
            self.end_point = tls.get_channel_binding("tls-server-end-point")
        except ValueError as e:
            self.end_point = e
        while data := tls.recv(65536):
            served.received += data
            tls.sendall(data)


@pytest.mark.parametrize(("suite", "length"), SUITES.items())
def test_s_client_exports_what_our_server_exports(pki: Pki, suite: str, length: int) -> None:
    label = "EXPORTER-tlskit-interop"
    for name, size, server_label in ((CB_LABEL, 32, CB_LABEL), (label, length, label)):
        handler = Bindings(server_label.encode(), size)
        with OurServer(server_config(pki), handler) as server:
            result = openssl_client(server.port, cafile=pki.cafile, ciphersuites=suite, brief=False, data=b"x\n",
                                    expect=b"x", extra_args=["-keymatexport", name, "-keymatexportlen", str(size)])
            [served] = server.wait(1)
        assert result.returncode == 0 and served.error is None, (result.stderr, served.error)
        theirs = keying_material(result.stdout)
        assert len(theirs) == size and handler.exported == theirs, (name, suite)
        if name == CB_LABEL:
            assert handler.tls_exporter == theirs  # RFC 9266: tls-exporter is exactly this exporter
    assert handler.end_point == fingerprint(pki.cert, "sha256")  # our leaf, signed with ECDSA-SHA256


@pytest.mark.parametrize(("suite", "length"), SUITES.items())
def test_our_client_exports_what_s_server_exports(
    pki: Pki, launch: Callable[[OpenSSLServer], OpenSSLServer], suite: str, length: int
) -> None:
    for label, size in ((CB_LABEL, 32), ("EXPORTER-tlskit-interop", length)):
        server = launch(OpenSSLServer(pki.cert, pki.key, mode="plain", ciphersuites=suite,
                                      extra_args=["-keymatexport", label, "-keymatexportlen", str(size)]))
        with connect("127.0.0.1", server.port, server_name="localhost", cafile=pki.cafile, timeout=10) as tls:
            tls.do_handshake()
            ours = tls.export_keying_material(label.encode(), b"", size)
            binding = tls.get_channel_binding("tls-exporter")
            end_point = tls.get_channel_binding("tls-server-end-point")
            tls.sendall(b"hello\n")
            server.wait_for_output("hello")
        theirs = keying_material(server.output())
        assert len(theirs) == size and ours == theirs, (label, suite)
        if label == CB_LABEL:
            assert binding == theirs
        assert end_point == fingerprint(pki.cert, "sha256")


def _pki(directory: Path, issuer_key: KeyType) -> Pki:
    """A ``localhost`` ECDSA leaf straight under a root whose key is ``issuer_key`` (so it signs the leaf with
    that key's hash: SHA-384 for P-384, none for Ed25519)."""
    directory.mkdir(parents=True, exist_ok=True)
    root = make_ca(f"tlskit {issuer_key} root", key_type=issuer_key)
    cert, key = make_leaf(root, names=["localhost", "127.0.0.1"]).write(directory, "server")
    return Pki(cafile=write_pem(directory / "ca.pem", [root]), cert=cert, key=key)


def test_server_end_point_uses_the_certificates_signature_hash(
    tmp_path: Path, launch: Callable[[OpenSSLServer], OpenSSLServer]
) -> None:
    pki = _pki(tmp_path / "p384", "ec384")
    server = launch(OpenSSLServer(pki.cert, pki.key))
    with connect("127.0.0.1", server.port, server_name="localhost", cafile=pki.cafile, timeout=10) as tls:
        tls.do_handshake()
        assert tls.get_channel_binding("tls-server-end-point") == fingerprint(pki.cert, "sha384")


def test_server_end_point_is_undefined_for_an_ed25519_signed_certificate(tmp_path: Path) -> None:
    pki = _pki(tmp_path / "ed", "ed25519")
    handler = Bindings(CB_LABEL.encode(), 32)
    with OurServer(server_config(pki), handler) as server:  # (our client refuses Ed25519 CAs, as WebPKI does)
        with connect("127.0.0.1", server.port, server_name="localhost", verify_peer=False, timeout=10) as tls:
            with pytest.raises(ValueError, match="not defined for this certificate's signature algorithm"):
                tls.get_channel_binding("tls-server-end-point")
            assert tls.get_channel_binding("tls-exporter") == tls.export_keying_material(CB_LABEL.encode(), b"", 32)
        server.wait(1)
    assert isinstance(handler.end_point, ValueError)


def test_tls_unique_and_unknown_types_are_refused_and_nothing_is_bound_before_the_handshake(pki: Pki) -> None:
    with OurServer(server_config(pki)) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), 10)
        with wrap_socket(sock, server_name="localhost", cafile=pki.cafile, do_handshake=False) as tls:
            assert tls.get_channel_binding("tls-exporter") is None  # as ssl: None until the handshake is done
            assert tls.session_reused is False
            tls.do_handshake()
            with pytest.raises(ValueError, match=r"tls-unique.*not defined for TLS 1\.3"):
                tls.get_channel_binding()  # ssl's default type
            with pytest.raises(ValueError, match="'tls-foo' channel binding type not implemented"):
                tls.get_channel_binding("tls-foo")
            assert tls.compression() is None
        server.wait(1)


def test_a_resumed_server_keeps_the_exporter_binding_but_not_its_certificate(pki: Pki) -> None:
    config = server_config(pki, ticket_keys=TicketKeyRing([TicketKey.generate(os.urandom)]))
    store = MemorySessionStore()
    handlers = [Bindings(CB_LABEL.encode(), 32), Bindings(CB_LABEL.encode(), 32)]
    for handler in handlers:
        with OurServer(config, handler) as server:
            with connect("127.0.0.1", server.port, server_name="localhost", cafile=pki.cafile, timeout=10,
                         session_store=store) as tls:
                tls.sendall(b"ping")
                assert tls.recv(4) == b"ping"  # (reading takes in the server's tickets)
                binding = tls.get_channel_binding("tls-exporter")
                client_end_point = tls.get_channel_binding("tls-server-end-point")
                reused = tls.session_reused
            server.wait(1)
        assert binding == handler.tls_exporter
        assert client_end_point == fingerprint(pki.cert, "sha256")  # the client keeps the chain in its ticket
    assert reused is True
    assert handlers[0].end_point == fingerprint(pki.cert, "sha256")
    assert isinstance(handlers[1].end_point, ValueError) and "resumed" in str(handlers[1].end_point)
    assert handlers[0].tls_exporter != handlers[1].tls_exporter  # a binding per connection, not per session
