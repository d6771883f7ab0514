"""Fuzzing the engine's ``receive_data`` with hypothesis (DESIGN §6): whatever arrives, only ``TLSError``s
may escape, an ``AlertError`` leaves its alert queued for the peer, and a failed connection refuses further
input. Inputs are random bytes and mutations (bit flips, truncation, length tweaks, insertions) of a real
ClientHello, a real server flight (mutated inside its encryption and sealed again, so that the handshake
parser is reached rather than just the record MAC) and a real client Finished flight."""

from __future__ import annotations

import functools
import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.pairing import (
    CCS_RECORD,
    DeterministicRandom,
    ServerFlight,
    capture_server_flight,
    certified,
    client_config,
    connect,
    handshake_record,
    key_log_secret,
    records,
    server_config,
)
from tlskit.config import ClientConfig, ServerConfig
from tlskit.connection import Connection
from tlskit.crypto.suites import suite_params
from tlskit.enums import ContentType, NamedGroup
from tlskit.errors import AlertError, ConnectionClosedError, TLSError
from tlskit.record import RecordEncryptor

# TLSKIT_FUZZ_EXAMPLES=5000 runs a longer campaign; the default keeps this file under ~10 s.
FUZZ = settings(
    max_examples=int(os.environ.get("TLSKIT_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _client_cfg() -> ClientConfig:
    """Fresh deterministic randomness each time: every client sends the same ClientHello."""
    return client_config(random=DeterministicRandom(b"fuzz client"), alpn=("h2",), groups=(NamedGroup.x25519,))


def _server_cfg() -> ServerConfig:
    """Every server answers that ClientHello with the same flight: x25519 (X25519MLKEM768's encapsulation draws
    its own randomness) and Ed25519 (deterministic signatures), so a recorded client flight verifies in a fresh
    server and mutations of it reach the handshake messages, not only the record MAC."""
    return server_config(random=DeterministicRandom(b"fuzz server"), alpn=("h2",), groups=(NamedGroup.x25519,),
                         certificates=(certified("ed25519"),))


@functools.cache
def _recorded() -> tuple[bytes, ServerFlight, ServerFlight]:
    """The ClientHello record, the server's first flight and the client's Finished flight, recorded once."""
    _, _, flight = capture_server_flight(_client_cfg(), _server_cfg())
    hello = _fresh_client().data_to_send()
    pair = connect(_client_cfg(), _server_cfg())
    assert pair.client.data_to_send() == hello
    pair.server.receive_data(hello)
    pair.client.receive_data(pair.server.data_to_send())
    assert pair.client.handshake_complete
    second = pair.client.data_to_send()
    plaintext = b"".join(
        bytes((t, 3, 3)) + len(f).to_bytes(2, "big") + f
        for t, f in records(second)
        if t != ContentType.application_data
    )
    assert plaintext == CCS_RECORD
    secret = key_log_secret(pair.client_key_log, "CLIENT_HANDSHAKE_TRAFFIC_SECRET")
    params = suite_params(pair.client.negotiated.cipher_suite)
    finished = _open(second[len(plaintext):], params, secret)
    client_flight = ServerFlight(plaintext, finished, params, secret)
    # The sealed flights replay into fresh connections.
    pair.server.receive_data(client_flight.wire())
    assert pair.server.handshake_complete
    fresh = Connection(_server_cfg())
    fresh.receive_data(hello)
    assert fresh.data_to_send() == flight.wire()  # the same flight, byte for byte
    fresh.receive_data(client_flight.wire())
    assert fresh.handshake_complete
    check = _fresh_client()
    check.data_to_send()
    check.receive_data(flight.wire())
    assert check.handshake_complete
    return hello, flight, client_flight


def _open(wire: bytes, params, secret: bytes) -> bytes:
    from tlskit.record import RecordDecryptor

    decryptor = RecordDecryptor(params, secret)
    out = b""
    for _, fragment in records(wire):
        _, content = decryptor.open(b"\x17\x03\x03" + len(fragment).to_bytes(2, "big"), fragment)
        out += content
    return out


def _fresh_client() -> Connection:
    client = Connection(_client_cfg())
    client.start()
    return client


def _server_after_hello() -> Connection:
    server = Connection(_server_cfg())
    server.receive_data(_recorded()[0])
    server.data_to_send()
    return server


def feed(conn: Connection, chunks: list[bytes]) -> None:
    """Deliver ``chunks``; any failure must be a TLSError that leaves the connection closed."""
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
    except TLSError as error:
        # internal_error is what a bug becomes on the wire (connection._internal_error): still a bug to find
        assert error.__cause__ is None or isinstance(error.__cause__, TLSError), repr(error.__cause__)
        assert conn.closed
        if isinstance(error, AlertError):
            alert = conn.data_to_send()
            assert alert, "an AlertError must queue its alert"
            if alert[-7:-2] == b"\x15\x03\x03\x00\x02":
                assert alert[-1] == error.description
        with pytest.raises(ConnectionClosedError):
            conn.receive_data(b"\x16\x03\x03\x00\x01\x00")
    else:
        conn.data_to_send()
        conn.events()


@st.composite
def mutations(draw, original: bytes) -> bytes:
    """``original`` with 1..4 edits: bit flips, truncation, length-field tweaks, insertions, deletions."""
    buf = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        pos = draw(st.integers(0, len(buf) - 1))
        kind = draw(st.sampled_from(["flip", "truncate", "length", "insert", "delete", "byte"]))
        if kind == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "length":
            width = draw(st.sampled_from([1, 2, 3]))
            field = buf[pos : pos + width]
            delta = draw(st.sampled_from([-256, -2, -1, 1, 2, 127, 256, 0x8000]))
            value = (int.from_bytes(field, "big") + delta) % (1 << (8 * len(field)))
            buf[pos : pos + width] = value.to_bytes(len(field), "big")
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        else:
            buf[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    return bytes(buf)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if a < b] or [data]


# --- (a) random bytes -----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(min_size=1, max_size=600), st.lists(st.integers(0, 600), max_size=3))
def test_server_survives_random_bytes(data, cuts) -> None:
    feed(Connection(_server_cfg()), _chunked(data, cuts))


@FUZZ
@given(st.binary(min_size=1, max_size=600), st.lists(st.integers(0, 600), max_size=3))
def test_client_survives_random_bytes(data, cuts) -> None:
    feed(_fresh_client(), _chunked(data, cuts))


@FUZZ
@given(
    st.sampled_from([20, 21, 22, 23]),
    st.one_of(st.integers(0, 30), st.sampled_from([1, 2, 4, 8, 11, 13, 15, 20, 24])),
    st.binary(max_size=400),
)
def test_both_sides_survive_random_records_and_handshake_messages(content_type, msg_type, body) -> None:
    message = bytes((msg_type,)) + len(body).to_bytes(3, "big") + body
    payload = message if content_type == 22 else body or b"\x00"
    record = bytes((content_type, 3, 3)) + len(payload).to_bytes(2, "big") + payload
    feed(Connection(_server_cfg()), [record])
    feed(_fresh_client(), [record])


# --- (b) mutated ClientHello -----------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_server_survives_mutated_client_hello_records(data) -> None:
    feed(Connection(_server_cfg()), [data.draw(mutations(_recorded()[0]))])


@FUZZ
@given(st.data())
def test_server_survives_mutated_client_hello_messages(data) -> None:
    message = _recorded()[0][5:]
    mutated = data.draw(mutations(message))
    assume(mutated)
    feed(Connection(_server_cfg()), [handshake_record(mutated)])


# --- (b) mutated server flight ---------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_client_survives_mutated_server_hello(data) -> None:
    flight = _recorded()[1]
    mutated = data.draw(mutations(flight.plaintext))
    feed(_fresh_client(), [mutated + flight.wire()[len(flight.plaintext):]])


@FUZZ
@given(st.data())
def test_client_survives_mutated_encrypted_server_flight(data) -> None:
    flight = _recorded()[1]
    mutated = data.draw(mutations(flight.messages))
    assume(mutated)
    feed(_fresh_client(), [flight.wire(mutated)])


@FUZZ
@given(st.data())
def test_client_survives_mutated_flight_ciphertext(data) -> None:
    flight = _recorded()[1]
    feed(_fresh_client(), [data.draw(mutations(flight.wire()))])


@FUZZ
@given(st.data())
def test_server_survives_mutated_client_finished_flight(data) -> None:
    client_flight = _recorded()[2]
    mutated = data.draw(mutations(client_flight.messages))
    assume(mutated)
    feed(_server_after_hello(), [client_flight.wire(mutated)])


# --- after the handshake: arbitrary protected records -------------------------------------------------


def _established_pair():
    pair = connect(_client_cfg(), _server_cfg())
    pair.pump()
    assert pair.client.handshake_complete and pair.server.handshake_complete
    return pair


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))
@given(
    st.sampled_from(["client", "server"]),
    st.lists(
        st.tuples(st.sampled_from([0, 20, 21, 22, 23, 24, 255]), st.binary(max_size=64), st.integers(0, 40)),
        min_size=1,
        max_size=3,
    ),
)
def test_established_connections_survive_arbitrary_protected_records(side, contents) -> None:
    pair = _established_pair()
    receiver, sender = (pair.client, pair.server) if side == "client" else (pair.server, pair.client)
    secrets = sender.traffic_secrets()
    encryptor = RecordEncryptor(suite_params(secrets.cipher_suite), secrets.write_secret)
    encryptor.seq = secrets.write_seq
    wire = b""
    for content_type, body, padding in contents:
        # Seal by hand so that any inner type, empty bodies and zero padding reach the receiver.
        inner = body + bytes((content_type,)) + bytes(padding)
        header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
        seq = encryptor.seq
        encryptor.seq += 1
        nonce = (encryptor._iv ^ seq).to_bytes(12, "big")
        wire += header + encryptor._aead.encrypt(nonce, inner, header)
    feed(receiver, [wire])
