"""``on_secret(level, direction, suite, secret)`` (DESIGN §2) reports every traffic secret as it is installed.

Checked against RFC 8448 §3's secrets (client and server side) and, for KeyUpdate, against HKDF-Expand-Label
computed with ``cryptography``'s HKDFExpand rather than our key schedule.
"""

from __future__ import annotations

import dataclasses

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from tests.pairing import client_config, handshake, server_config
from tests.test_rfc8448_engine import record, secret, section3_client, section3_server
from tlskit.config import ClientConfig, ServerConfig
from tlskit.connection import Connection
from tlskit.enums import CipherSuite, ContentType, Direction, EncryptionLevel
from tlskit.events import ApplicationData

Seen = list[tuple[EncryptionLevel, Direction, CipherSuite, bytes]]
AES128 = CipherSuite.TLS_AES_128_GCM_SHA256
HS, AP = EncryptionLevel.handshake, EncryptionLevel.application
READ, WRITE = Direction.read, Direction.write


def _hooked(conn: Connection) -> tuple[Connection, Seen]:
    seen: Seen = []
    config = dataclasses.replace(conn.config, on_secret=lambda *a: seen.append(a))
    return Connection(config, initial_state=conn._state), seen


def _expand(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label(secret, label, "", length) (§7.1) written out over cryptography's HKDFExpand."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes((len(full),)) + full + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def _traffic_update(secret_n: bytes) -> bytes:
    """application_traffic_secret_N+1 (§7.2)."""
    return _expand(secret_n, b"traffic upd", 32)


def test_client_reports_the_rfc_secrets_in_order() -> None:
    conn, seen = _hooked(section3_client()[0])
    conn.start()
    conn.receive_data(record(3, "server", "send handshake record", 0))
    conn.receive_data(record(3, "server", "send handshake record", 1))
    assert seen == [
        (HS, READ, AES128, secret(3, "server", "s hs traffic")),
        (HS, WRITE, AES128, secret(3, "server", "c hs traffic")),
        (AP, READ, AES128, secret(3, "server", "s ap traffic")),
        (AP, WRITE, AES128, secret(3, "server", "c ap traffic")),
    ]


def test_server_reports_the_rfc_handshake_secrets_and_a_working_application_secret() -> None:
    conn, seen = _hooked(section3_server()[0])
    conn.receive_data(record(3, "client", "send handshake record"))
    assert [s[:3] for s in seen] == [(HS, WRITE, AES128), (AP, WRITE, AES128), (HS, READ, AES128)]
    assert seen[0][3] == secret(3, "server", "s hs traffic")
    assert seen[2][3] == secret(3, "server", "c hs traffic")
    # The application secret depends on our EncryptedExtensions (not the RFC's): prove it by opening the
    # server's first 0.5-RTT record with keys derived from it by cryptography alone (§7.3, §5.3).
    conn.data_to_send()
    conn.send_data(b"half a round trip early")
    wire = conn.data_to_send()
    key, iv = _expand(seen[1][3], b"key", 16), _expand(seen[1][3], b"iv", 12)
    inner = AESGCM(key).decrypt(iv, wire[5:], wire[:5])  # sequence number 0: the nonce is the IV
    assert inner == b"half a round trip early" + bytes((ContentType.application_data,))


def test_key_update_reports_the_next_application_secrets_on_both_sides() -> None:
    client_seen: Seen = []
    server_seen: Seen = []
    pair = handshake(
        client_config(on_secret=lambda *a: client_seen.append(a)),
        server_config(on_secret=lambda *a: server_seen.append(a)),
    )
    client, server = pair.client, pair.server
    client_write = next(s for lvl, d, _, s in client_seen if (lvl, d) == (AP, WRITE))
    assert (AP, READ) in {(lvl, d) for lvl, d, _, s in server_seen if s == client_write}
    client.key_update(request_peer=True)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    updated = _traffic_update(client_write)
    assert client_seen[-2][:2] == (AP, WRITE) and client_seen[-2][3] == updated
    assert (AP, READ, client_seen[-2][2], updated) in server_seen
    server_write_0 = next(s for lvl, d, _, s in server_seen if (lvl, d) == (AP, WRITE))
    assert client_seen[-1] == (AP, READ, client_seen[-1][2], _traffic_update(server_write_0))
    client.send_data(b"after the update")
    server.receive_data(client.data_to_send())
    assert ApplicationData(data=b"after the update") in server.events()


def test_no_hook_by_default() -> None:
    assert ClientConfig(server_name="example.com").on_secret is None
    assert {f.name: f.default for f in dataclasses.fields(ServerConfig)}["on_secret"] is None
