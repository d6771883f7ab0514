"""How the blocking front end ends a connection after its fatal alert (RFC 8446 §6.2): the peer must get to read
it, even when the peer is still sending (a raw TCP peer here, so that it can keep writing what we never read)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

import tlskit
import tlskit.io.socket
from tests.certs import make_ca, make_leaf
from tlskit import CertifiedKey, ServerConfig, listen
from tlskit.enums import AlertDescription
from tlskit.errors import AlertError
from tlskit.io import common


def test_after_a_fatal_alert_the_client_half_closes_instead_of_resetting() -> None:
    """The client fails on the server's first record while 256 KB more of the server's bytes wait unread, and the
    server goes on writing: closing then made the kernel reset the connection, and a server still writing failed
    with a broken pipe (Java's JSSE reported exactly that, not our alert). connect() half-closes and reads on
    until the server closes (ALERT_LINGER at most)."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, object] = {}

    def server() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(65536)  # the ClientHello
            conn.sendall(b"\x17\x03\x03\x00\x05hello" + bytes(256 * 1024))  # application data before a ServerHello
            try:
                received = conn.recv(65536)  # the alert: the client has failed (and, before the fix, closed)
                for _ in range(128):  # still writing (8 MB, past the buffers): a reset fails these writes
                    conn.sendall(bytes(64 * 1024))
                conn.shutdown(socket.SHUT_WR)
                while chunk := conn.recv(65536):
                    received += chunk
                seen["received"] = received
            except OSError as e:
                seen["error"] = e

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    try:
        with pytest.raises(AlertError) as caught:
            tlskit.connect("127.0.0.1", listener.getsockname()[1], server_name="localhost", timeout=5)
        thread.join(5)
    finally:
        listener.close()
    assert caught.value.description is AlertDescription.unexpected_message
    assert "error" not in seen, seen["error"]
    received = seen["received"]
    assert isinstance(received, bytes) and received[:1] == b"\x15" and received[-2:] == b"\x02\x0a", received


def test_a_server_closing_after_its_alert_does_not_wait_for_the_client(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """close() must not hang (a selector loop, or a sequential accept loop, stalled on each bad client): after
    our alert it drops what has arrived and closes, whether or not the client closes; only connect() lingers."""
    monkeypatch.setattr(common, "ALERT_LINGER", 5.0)
    monkeypatch.setattr(tlskit.io.socket, "ALERT_LINGER", 5.0)
    ca = make_ca("alerts root")
    cert, key = make_leaf(ca, ["localhost"]).write(tmp_path, "server")
    with listen("127.0.0.1", 0, ServerConfig(certificates=[CertifiedKey.from_pem_files(cert, key)])) as server:
        client = socket.create_connection(server.getsockname()[:2])
        try:
            client.sendall(b"\x16\x03\x01\x00\x05" + bytes(5))  # a handshake message of type 0: unexpected_message
            tls, _ = server.accept()
            with pytest.raises(AlertError) as caught:
                tls.do_handshake()
            started = time.monotonic()
            tls.close()  # the client keeps its socket open and reads nothing
            took = time.monotonic() - started
            assert client.recv(64)[:1] == b"\x15"  # it still gets the alert
        finally:
            client.close()
    assert caught.value.description is AlertDescription.unexpected_message
    assert took < 2, took
