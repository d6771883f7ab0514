"""How the blocking front end ends a connection after its fatal alert (RFC 8446 §6.2): the peer must get to read
it, even when the peer is still sending (a raw TCP peer here, so that it can keep writing what we never read)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import tlskit
from tlskit.enums import AlertDescription
from tlskit.errors import AlertError


def test_after_a_fatal_alert_the_client_half_closes_instead_of_resetting() -> None:
    """The client fails on the server's first record while 256 KB more of the server's bytes wait unread: closing
    then made the kernel reset the connection, and a server still writing failed with a broken pipe before it read
    the alert (Java's JSSE reported exactly that). The client half-closes and reads on until the server closes."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, object] = {}

    def server() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(65536)  # the ClientHello
            conn.sendall(b"\x17\x03\x03\x00\x05hello" + bytes(256 * 1024))  # application data before a ServerHello
            try:
                time.sleep(0.2)  # the client has failed and closed by now
                conn.sendall(bytes(64 * 1024))  # still writing
                received = b""
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
