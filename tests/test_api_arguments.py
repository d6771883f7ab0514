"""Mistakes a library user makes with tlskit's API, told at the call with what to do, and never a connection left
silently broken (found by a review of tlskit used as a library: ``alpn="h2"`` offered "h" and "2", a str given to
``send_data`` advanced the record sequence number and every later record failed at the peer, a wrong-typed config
field failed deep inside or as internal_error at the first handshake)."""

from __future__ import annotations

import array
import asyncio
import socket
from typing import Any

import pytest

import tlskit
from tests.pairing import client_config, handshake, records, server_config
from tlskit import ClientConfig, Connection, EarlyDataPolicy, ServerConfig, listen, start_server, wrap_server_socket
from tlskit.enums import CipherSuite, NamedGroup
from tlskit.errors import AlertError, ConfigError, ConnectionClosedError
from tlskit.events import ApplicationData


@pytest.mark.parametrize(("field", "value", "says"), [
    ("alpn", "h2", "alpn takes a sequence"),
    ("alpn", ("h2", b"http/1.1"), "protocol names as str"),
    ("trust", "ca.pem", "TrustStore.from_pem_file"),
    ("cipher_suites", ("TLS_AES_128_CCM_SHA256",), "not supported"),
    ("groups", ("x25518",), "is not a NamedGroup name; use some of ['x25519'"),
    ("certificate", ("key",), "CertifiedKey.from_pem_files"),
    ("certificates", ["key"], "CertifiedKey objects"),
    ("server_name", b"localhost", "server_name takes a str"),
    ("pad_to", -1, "pad_to must be"),
])
def test_a_client_config_mistake_is_a_config_error_saying_what_to_give(field: str, value: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace("[", r"\[")):
        client_config(**{field: value})


@pytest.mark.parametrize(("field", "value", "says"), [
    ("alpn", "h2", "alpn takes a sequence"),
    ("certificates", object(), "certificates takes a sequence"),
    ("ticket_count", -1, "ticket_count must be 0..16"),
    ("client_auth", "required", "client_auth takes a ClientAuth"),
])
def test_a_server_config_mistake_is_a_config_error(field: str, value: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        server_config(**{field: value})


def test_early_data_policy_bounds() -> None:
    with pytest.raises(ConfigError, match="max_early_data_size"):
        EarlyDataPolicy(max_early_data_size=-1)
    with pytest.raises(ConfigError, match="freshness_window"):
        EarlyDataPolicy(freshness_window=0)


def test_names_are_taken_for_members_and_lists_become_tuples() -> None:
    config = client_config(cipher_suites=["TLS_AES_256_GCM_SHA384"], groups=["x25519", NamedGroup.secp256r1],
                           alpn=["h2"])
    assert config.cipher_suites == (CipherSuite.TLS_AES_256_GCM_SHA384,)
    assert config.groups == (NamedGroup.x25519, NamedGroup.secp256r1) and config.alpn == ("h2",)
    hash(config.alpn)  # (a list made the config unhashable)
    done = handshake(config, server_config(alpn=["h2"])).client_complete
    assert done.cipher_suite is CipherSuite.TLS_AES_256_GCM_SHA384 and done.alpn == "h2"


def test_send_and_receive_data_refuse_what_is_not_bytes_and_the_connection_goes_on() -> None:
    pair = handshake(client_config(), server_config())
    for wrong in ("text", [1, 2, 3], 7):
        with pytest.raises(TypeError):
            pair.client.send_data(wrong)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            pair.server.receive_data(wrong)  # type: ignore[arg-type]
    wide = array.array("I", [0x01020304, 0x05060708])  # counted in bytes (8), not items (2)
    pair.client.send_data(memoryview(wide))
    pair.client.send_data(bytearray(b" and more"))
    pair.pump()
    _, server_events = pair.collect()
    got = b"".join(e.data for e in server_events if isinstance(e, ApplicationData))
    assert got == wide.tobytes() + b" and more" and pair.server.error is None and pair.client.error is None


def test_exporter_arguments() -> None:
    pair = handshake(client_config(), server_config())
    client, server = pair.client, pair.server
    assert client.export_keying_material(b"EXPERIMENTAL x", None, 32) == server.export_keying_material(
        b"EXPERIMENTAL x", b"", 32)  # §7.5: no context and an empty one are the same
    with pytest.raises(TypeError):
        client.export_keying_material("label", b"", 32)  # type: ignore[arg-type]
    for length in (0, -1, 255 * 32 + 1):
        with pytest.raises(ValueError, match="length"):
            client.export_keying_material(b"EXPERIMENTAL x", b"", length)
    with pytest.raises(AlertError):  # a plaintext record after the keys: unexpected_message, the connection ends
        server.receive_data(b"\x15\x03\x03\x00\x02\x02\x28")
    with pytest.raises(ConnectionClosedError):
        server.export_keying_material(b"EXPERIMENTAL x", b"", 32)


def test_a_client_config_where_a_server_one_belongs_is_a_type_error() -> None:
    client = ClientConfig(server_name="localhost", verify_peer=False)
    with pytest.raises(TypeError, match="Connection takes"):
        Connection("localhost")  # type: ignore[arg-type]
    a, b = socket.socketpair()
    with a, b, pytest.raises(TypeError, match="ServerConfig"):
        wrap_server_socket(a, client)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ServerConfig"):
        listen("127.0.0.1", 0, client)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ServerConfig"):
        asyncio.run(start_server(lambda r, w: None, "127.0.0.1", 0, config=client))  # type: ignore[arg-type]
    assert isinstance(server_config(), ServerConfig)


def test_close_before_the_handshake_completes_cancels_it() -> None:
    """§6.1: user_canceled, then close_notify, and the handshake goes no further. The client used to send a bare
    close_notify, then go on: HandshakeComplete, and its Finished sent after its own close_notify."""
    client, server = Connection(client_config()), Connection(server_config())
    client.start()
    server.receive_data(client.data_to_send())
    client.close()
    assert records(client.data_to_send()) == [(21, b"\x01\x5a"), (21, b"\x01\x00")]  # warning user_canceled, close
    client.receive_data(server.data_to_send())  # the server's flight: dropped
    assert client.data_to_send() == b"" and client.events() == [] and not client.handshake_complete
    client.receive_data(b"")  # the server closes: nothing to complain about
    assert client.closed and client.error is None


def test_the_front_end_clients_refuse_a_string_alpn_and_0rtt_they_cannot_send() -> None:
    with pytest.raises(ConfigError, match="alpn takes a sequence"):
        tlskit.connect("127.0.0.1", 9, alpn="h2")  # (before connecting: port 9 is never tried)
    with pytest.raises(ConfigError, match="do not send 0-RTT"):
        tlskit.connect("127.0.0.1", 9, early_data=True)
    with pytest.raises(ConfigError, match="alpn takes a sequence"):
        asyncio.run(tlskit.open_connection("127.0.0.1", 9, alpn="http/1.1"))
