"""Failure paths of the engine (RFC 8446 §6.2): each test asserts the exception the failing side raises and
the exact alert it puts on the wire — read directly when it is unprotected, or by letting the peer decrypt it
and raise ``RemoteAlert`` when it is protected."""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
import time

import pytest

from tests.certs import make_leaf
from tests.pairing import (
    Pair,
    alert_seen_by_peer,
    capture_server_flight,
    certified,
    client_config,
    connect,
    craft_client_hello,
    craft_server_hello,
    fails_with,
    handshake,
    handshake_record,
    hello_retry_request,
    leaf,
    other_root,
    plaintext_alert,
    plaintext_handshake,
    pss_oid_certified,
    records,
    rsa_leaf_with_spki_algorithm,
    server_config,
    split_messages,
    started_client,
)
from tlskit.config import CertifiedKey
from tlskit.connection import Connection
from tlskit.enums import (
    AlertDescription,
    CipherSuite,
    ContentType,
    ExtensionType,
    KeyUpdateRequest,
    NamedGroup,
    ProtocolVersion,
    SignatureScheme,
)
from tlskit.errors import (
    AlertError,
    CertificateError,
    ConnectionClosedError,
    DecodeError,
    RemoteAlert,
    UnexpectedEOF,
)
from tlskit.events import AlertReceived, ApplicationData, ConnectionClosed
from tlskit.messages import extensions as ext
from tlskit.messages.extensions import Extension
from tlskit.messages.handshake import (
    DOWNGRADE_TLS11,
    DOWNGRADE_TLS12,
    Certificate,
    CertificateEntry,
    CertificateVerify,
    ClientHello,
    Finished,
    KeyUpdate,
    ServerHello,
)

A = AlertDescription
S = SignatureScheme
AES128, AES256, CHACHA = (CipherSuite(s) for s in (0x1301, 0x1302, 0x1303))


def _server() -> Connection:
    return Connection(server_config())


def _reframe(message: bytes, body: bytes) -> bytes:
    """``message``'s type with a new body and a matching length."""
    return message[:1] + len(body).to_bytes(3, "big") + body


# --- the server rejects a ClientHello --------------------------------------------------------------------


def test_server_rejects_client_hello_offering_only_tls12() -> None:
    hello = craft_client_hello(drop=[ExtensionType.supported_versions])
    wire = fails_with(_server(), handshake_record(hello.encode()), A.protocol_version)
    assert plaintext_alert(wire) is A.protocol_version


def test_server_rejects_supported_versions_without_tls13() -> None:
    only_12 = Extension(
        ExtensionType.supported_versions, ext.supported_versions_client_body([ProtocolVersion.TLS1_2])
    )
    hello = craft_client_hello(drop=[ExtensionType.supported_versions], extra=[only_12])
    wire = fails_with(_server(), handshake_record(hello.encode()), A.protocol_version)
    assert plaintext_alert(wire) is A.protocol_version


def test_server_rejects_client_hello_without_common_cipher_suite() -> None:
    pair = connect(client_config(cipher_suites=(AES128,)), server_config(cipher_suites=(CHACHA,)))
    wire = fails_with(pair.server, pair.client.data_to_send(), A.handshake_failure)
    assert plaintext_alert(wire) is A.handshake_failure
    with pytest.raises(RemoteAlert) as info:
        pair.client.receive_data(wire)
    assert info.value.description is A.handshake_failure
    assert pair.client.events()[0] == AlertReceived(description=A.handshake_failure)


def test_server_rejects_client_hello_without_common_group() -> None:
    pair = connect(
        client_config(groups=(NamedGroup.x25519,)), server_config(groups=(NamedGroup.secp256r1,))
    )
    wire = fails_with(pair.server, pair.client.data_to_send(), A.handshake_failure)
    assert plaintext_alert(wire) is A.handshake_failure


@pytest.mark.parametrize(
    "missing",
    [ExtensionType.key_share, ExtensionType.supported_groups, ExtensionType.signature_algorithms],
    ids=lambda e: e.name,
)
def test_server_rejects_client_hello_missing_a_required_extension(missing) -> None:
    hello = craft_client_hello(drop=[missing])
    wire = fails_with(_server(), handshake_record(hello.encode()), A.missing_extension)
    assert plaintext_alert(wire) is A.missing_extension


def test_server_rejects_duplicate_extension() -> None:
    twice = Extension(ExtensionType.supported_groups, ext.supported_groups_body([NamedGroup.x25519]))
    hello = craft_client_hello(extra=[twice])
    wire = fails_with(_server(), handshake_record(hello.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_server_rejects_key_share_for_a_group_not_in_supported_groups() -> None:
    hello = craft_client_hello(client_config(groups=(NamedGroup.x25519, NamedGroup.secp256r1)))
    groups_only_p256 = Extension(ExtensionType.supported_groups, ext.supported_groups_body([NamedGroup.secp256r1]))
    hello = dataclasses.replace(
        hello,
        extensions=tuple(groups_only_p256 if e.type is ExtensionType.supported_groups else e for e in hello.extensions),
    )
    wire = fails_with(_server(), handshake_record(hello.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_server_rejects_non_null_compression() -> None:
    hello = craft_client_hello(legacy_compression_methods=b"\x01\x00")
    wire = fails_with(_server(), handshake_record(hello.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


@pytest.mark.parametrize("cut", [1, 2, 10, 60])
def test_server_rejects_truncated_client_hello_as_decode_error(cut) -> None:
    message = craft_client_hello().encode()
    truncated = _reframe(message, message[4:-cut])
    wire = fails_with(_server(), handshake_record(truncated), A.decode_error, DecodeError)
    assert plaintext_alert(wire) is A.decode_error


@pytest.mark.parametrize("extra", [b"\x00", b"\x00\x00\x00\x00", b"junk"])
def test_server_rejects_client_hello_with_trailing_bytes_as_decode_error(extra) -> None:
    message = craft_client_hello().encode()
    wire = fails_with(_server(), handshake_record(_reframe(message, message[4:] + extra)), A.decode_error)
    assert plaintext_alert(wire) is A.decode_error


def test_server_rejects_trailing_bytes_inside_an_extension_as_decode_error() -> None:
    sloppy = Extension(ExtensionType.supported_groups, ext.supported_groups_body([NamedGroup.x25519]) + b"\x00")
    hello = craft_client_hello(drop=[ExtensionType.supported_groups], extra=[sloppy])
    wire = fails_with(_server(), handshake_record(hello.encode()), A.decode_error)
    assert plaintext_alert(wire) is A.decode_error


def _server_awaiting_client_finished():
    """A pair where the client has read the server's flight (so it can open the server's protected
    records) but its Finished was never delivered."""
    pair = connect(client_config(), server_config())
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    pair.client.data_to_send()
    return pair


def test_server_rejects_a_second_client_hello_when_no_retry_was_asked() -> None:
    pair = _server_awaiting_client_finished()
    # The server expects the client's Finished under the client handshake key: plaintext is refused.
    wire = fails_with(pair.server, handshake_record(craft_client_hello().encode()), A.unexpected_message)
    assert alert_seen_by_peer(wire, pair.client) is A.unexpected_message


# --- record layer (§5) ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"\x17\x03\x03" + (2**14 + 257).to_bytes(2, "big"),
        b"\x16\x03\x03" + (2**14 + 1).to_bytes(2, "big"),
        b"\x15\x03\x03\xff\xff",
    ],
    ids=["application_data", "handshake", "alert"],
)
def test_oversized_record_is_record_overflow(header) -> None:
    wire = fails_with(_server(), header, A.record_overflow)
    assert plaintext_alert(wire) is A.record_overflow


def test_unknown_record_content_type_is_unexpected_message() -> None:
    wire = fails_with(_server(), b"\x19\x03\x03\x00\x01\x00", A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


def test_record_with_a_non_tls_version_is_decode_error() -> None:
    wire = fails_with(_server(), b"\x16\x04\x03\x00\x01\x01", A.decode_error)
    assert plaintext_alert(wire) is A.decode_error


@pytest.mark.parametrize("record", [b"\x16\x03\x03\x00\x00", b"\x15\x03\x03\x00\x00", b"\x14\x03\x03\x00\x00"],
                         ids=["handshake", "alert", "change_cipher_spec"])
def test_zero_length_plaintext_record_is_unexpected_message(record: bytes) -> None:
    """§5.1 forbids them (§5: a ChangeCipherSpec other than 0x01 is unexpected_message); OpenSSL answers so."""
    wire = fails_with(_server(), record, A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


@pytest.mark.parametrize("inner_type", [0x16, 0x15], ids=["handshake", "alert"])
def test_zero_length_protected_handshake_or_alert_is_unexpected_message(inner_type: int) -> None:
    """§5.4: "if such a message is received, ... MUST terminate the connection with an unexpected_message alert"
    (it was decode_error)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from tlskit.crypto.keyschedule import traffic_key_iv
    from tlskit.crypto.suites import suite_params

    pair = handshake()
    secrets = pair.client.traffic_secrets()
    key, iv = traffic_key_iv(suite_params(secrets.cipher_suite), secrets.write_secret)
    inner = bytes((inner_type,))  # TLSInnerPlaintext with no content: just its type
    header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
    nonce = (int.from_bytes(iv, "big") ^ secrets.write_seq).to_bytes(12, "big")
    fails_with(pair.server, header + AESGCM(key).encrypt(nonce, inner, header), A.unexpected_message)


@pytest.mark.parametrize("record", [b"\x17\x03\x03\x00\x05hello", b"\x17\x03\x03\x00\x00"], ids=["five", "empty"])
def test_application_data_before_the_handshake_is_unexpected_message(record: bytes) -> None:
    """An empty one too (found by fuzzing): it was skipped as rejected 0-RTT data costing nothing, so an
    unauthenticated peer could hold a handshake open with 5-byte records for ever."""
    wire = fails_with(_server(), record, A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message
    client, _ = started_client()
    wire = fails_with(client, record, A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


def test_tampered_ciphertext_is_bad_record_mac() -> None:
    pair = handshake()
    pair.client.send_data(b"attack at dawn")
    record = bytearray(pair.client.data_to_send())
    record[8] ^= 0x01
    wire = fails_with(pair.server, bytes(record), A.bad_record_mac)
    assert alert_seen_by_peer(wire, pair.client) is A.bad_record_mac


def test_tampered_record_header_is_bad_record_mac() -> None:
    """The header is the AEAD's additional data (§5.2): changing the version bytes breaks the tag."""
    pair = handshake()
    pair.server.send_data(b"x")
    record = bytearray(pair.server.data_to_send())
    record[2] = 0x01
    wire = fails_with(pair.client, bytes(record), A.bad_record_mac)
    assert alert_seen_by_peer(wire, pair.server) is A.bad_record_mac


def test_replayed_record_is_bad_record_mac() -> None:
    pair = handshake()
    pair.client.send_data(b"once")
    record = pair.client.data_to_send()
    pair.server.receive_data(record)
    wire = fails_with(pair.server, record, A.bad_record_mac)
    assert alert_seen_by_peer(wire, pair.client) is A.bad_record_mac


def test_tampered_client_finished_record_is_bad_record_mac() -> None:
    pair = connect(client_config(), server_config())
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    flight = bytearray(pair.client.data_to_send())
    flight[-1] ^= 0x80
    wire = fails_with(pair.server, bytes(flight), A.bad_record_mac)
    assert alert_seen_by_peer(wire, pair.client) is A.bad_record_mac


@pytest.mark.parametrize("fragment", [b"\x02", b"\x01\x01", b"\x00"])
def test_change_cipher_spec_with_a_wrong_body_is_unexpected_message(fragment) -> None:
    pair = _server_awaiting_client_finished()
    ccs = b"\x14\x03\x03" + len(fragment).to_bytes(2, "big") + fragment
    wire = fails_with(pair.server, ccs, A.unexpected_message)
    assert alert_seen_by_peer(wire, pair.client) is A.unexpected_message


def test_change_cipher_spec_with_a_wrong_body_before_keys_is_unexpected_message() -> None:
    client, _ = started_client()
    wire = fails_with(client, b"\x14\x03\x03\x00\x01\x02", A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


def test_change_cipher_spec_before_client_hello_is_unexpected_message() -> None:
    wire = fails_with(_server(), b"\x14\x03\x03\x00\x01\x01", A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


def test_change_cipher_spec_after_the_handshake_is_unexpected_message() -> None:
    pair = handshake()
    wire = fails_with(pair.server, b"\x14\x03\x03\x00\x01\x01", A.unexpected_message)
    assert alert_seen_by_peer(wire, pair.client) is A.unexpected_message


def test_change_cipher_spec_inside_a_split_handshake_message_is_unexpected_message() -> None:
    """§5.1: handshake messages must not be interleaved with other record types, the compatibility CCS
    included."""
    client = Connection(client_config())  # offers an x25519 share; the server wants P-256: HelloRetryRequest
    server = Connection(server_config(groups=(NamedGroup.secp256r1,)))
    client.start()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    (second_hello,) = [payload for kind, payload in records(client.data_to_send()) if kind == 22]  # handshake
    server.receive_data(handshake_record(second_hello[: len(second_hello) // 2]))  # incomplete; a CCS is now
    assert not server.closed and not server.data_to_send()  # allowed (§D.4), just not inside a message
    wire = fails_with(server, b"\x14\x03\x03\x00\x01\x01", A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


def test_plaintext_handshake_record_after_keys_is_unexpected_message() -> None:
    pair = handshake()
    wire = fails_with(pair.client, handshake_record(bytes((24, 0, 0, 1, 0))), A.unexpected_message)
    assert alert_seen_by_peer(wire, pair.server) is A.unexpected_message


def test_malformed_alert_record_is_decode_error() -> None:
    client, _ = started_client()
    wire = fails_with(client, b"\x15\x03\x03\x00\x03\x02\x28\x00", A.decode_error)
    assert plaintext_alert(wire) is A.decode_error


def craft_client_hello_record() -> bytes:
    return handshake_record(craft_client_hello().encode())


# --- handshake framing ---------------------------------------------------------------------------------


def test_unknown_handshake_message_type_is_unexpected_message() -> None:
    wire = fails_with(_server(), handshake_record(b"\x63\x00\x00\x02hi"), A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


def test_unknown_handshake_message_in_the_encrypted_flight_is_unexpected_message() -> None:
    client, server, flight = capture_server_flight()
    wire = fails_with(client, flight.replace(0, b"\x63\x00\x00\x00"), A.unexpected_message)
    assert alert_seen_by_peer(wire, server) is A.unexpected_message


@pytest.mark.parametrize(
    ("message_type", "expected"),
    [(1, A.decode_error), (0x63, A.unexpected_message)],
    ids=["client_hello", "unknown_type"],
)
def test_handshake_message_longer_than_max_handshake_message_is_refused_at_its_header(
    message_type, expected
) -> None:
    server = Connection(server_config(max_handshake_message=4096))
    header = bytes((message_type,)) + (4097).to_bytes(3, "big")
    wire = fails_with(server, handshake_record(header), expected)
    assert plaintext_alert(wire) is expected


def test_default_limit_refuses_a_16_mib_handshake_message() -> None:
    wire = fails_with(_server(), handshake_record(b"\x01\xff\xff\xff"), A.decode_error)
    assert plaintext_alert(wire) is A.decode_error


def test_server_out_of_order_message_is_unexpected_message() -> None:
    wire = fails_with(_server(), handshake_record(Finished(verify_data=bytes(32)).encode()), A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


# --- the client rejects the server's certificate ------------------------------------------------------


def _client_rejects_flight(client_cfg, server_cfg, description: A, error: type = CertificateError) -> A:
    """The client fails on the server's flight with ``error``; returns the alert the server then reads
    (protected under the client handshake key, §6)."""
    pair = connect(client_cfg, server_cfg)
    pair.server.receive_data(pair.client.data_to_send())
    wire = fails_with(pair.client, pair.server.data_to_send(), description, error)
    return alert_seen_by_peer(wire, pair.server)


def test_wrong_hostname_is_bad_certificate() -> None:
    alert = _client_rejects_flight(client_config(server_name="www.example.com"), server_config(), A.bad_certificate)
    assert alert is A.bad_certificate


def test_unknown_ca_is_unknown_ca() -> None:
    stranger = make_leaf(other_root(), ["localhost"])
    server = server_config(certificates=(CertifiedKey(chain=(stranger.der,), private_key=stranger.key),))
    assert _client_rejects_flight(client_config(), server, A.unknown_ca) is A.unknown_ca


def test_expired_certificate_is_certificate_expired() -> None:
    after = leaf("ec256").cert.not_valid_after_utc + dt.timedelta(days=1)
    alert = _client_rejects_flight(client_config(clock=after.timestamp), server_config(), A.certificate_expired)
    assert alert is A.certificate_expired


def test_not_yet_valid_certificate_is_certificate_expired() -> None:
    before = leaf("ec256").cert.not_valid_before_utc - dt.timedelta(days=1)
    alert = _client_rejects_flight(client_config(clock=before.timestamp), server_config(), A.certificate_expired)
    assert alert is A.certificate_expired


def test_verify_peer_false_accepts_an_untrusted_certificate() -> None:
    stranger = make_leaf(other_root(), ["elsewhere"])
    server = server_config(certificates=(CertifiedKey(chain=(stranger.der,), private_key=stranger.key),))
    pair = handshake(client_config(verify_peer=False, trust=None), server)
    assert pair.client_complete.peer_certificates == (stranger.der,)


def test_server_reports_the_clients_certificate_alert() -> None:
    pair = connect(client_config(server_name="www.example.com"), server_config())
    pair.server.receive_data(pair.client.data_to_send())
    with pytest.raises(CertificateError):
        pair.client.receive_data(pair.server.data_to_send())
    with pytest.raises(RemoteAlert) as info:
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.description is A.bad_certificate


def test_server_reports_an_unprotected_alert_sent_before_the_clients_handshake_key() -> None:
    pair = _server_awaiting_client_finished()
    with pytest.raises(RemoteAlert) as info:
        pair.server.receive_data(b"\x15\x03\x03\x00\x02\x02\x2a")
    assert info.value.description is A.bad_certificate


# --- certificates that parse lazily (found by tests/test_fuzz.py) -------------------------------------

UNKNOWN_KEY_ALGORITHM = bytes.fromhex("300b06092b0601040182371501")  # 1.3.6.1.4.1.311.21.1, not a key type


def _flight_with_leaf_edit(old: bytes, new: bytes, client_cfg=None):
    """The server flight with the first ``old`` in the leaf certificate replaced by ``new`` (same length)."""
    client, server, flight = capture_server_flight(client_cfg or client_config())
    certificate = split_messages(flight.messages)[1]
    assert len(old) == len(new) and old in certificate
    return client, server, flight.replace(1, certificate.replace(old, new, 1))


_ISSUER_CN = b"\x0c\x17tlskit paired-test root"


@pytest.mark.parametrize("verify_peer", [True, False], ids=["verify", "no-verify"])
def test_certificate_with_an_invalid_x509_version_is_bad_certificate(verify_peer) -> None:
    cfg = client_config(verify_peer=verify_peer, trust=None if not verify_peer else client_config().trust)
    client, server, wire = _flight_with_leaf_edit(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x03", cfg)
    out = fails_with(client, wire, A.bad_certificate)
    assert alert_seen_by_peer(out, server) is A.bad_certificate


@pytest.mark.parametrize(
    "new",
    [b"\x0d" + _ISSUER_CN[1:], _ISSUER_CN[:2] + b"\x80" + _ISSUER_CN[3:]],
    ids=["unknown-string-tag", "invalid-utf8"],
)
def test_malformed_issuer_name_in_the_leaf_is_bad_certificate(new) -> None:
    client, server, wire = _flight_with_leaf_edit(_ISSUER_CN, new)
    out = fails_with(client, wire, A.bad_certificate)
    assert alert_seen_by_peer(out, server) is A.bad_certificate


@pytest.mark.parametrize("verify_peer", [True, False], ids=["verify", "no-verify"])
def test_leaf_with_an_unknown_public_key_algorithm_is_refused_with_an_alert(verify_peer) -> None:
    der = rsa_leaf_with_spki_algorithm(UNKNOWN_KEY_ALGORITHM)
    client, server, flight = capture_server_flight(
        client_config(verify_peer=verify_peer, trust=None if not verify_peer else client_config().trust),
        server_config(certificates=(certified("rsa2048"),)),
    )
    leaf_only = Certificate(entries=(CertificateEntry(cert_data=der),)).encode()
    with pytest.raises(AlertError) as info:
        client.receive_data(flight.replace(1, leaf_only))
    assert info.value.description is A.unsupported_certificate  # §6.2: "a certificate of an unsupported type"
    assert alert_seen_by_peer(client.data_to_send(), server) is info.value.description


# --- the client rejects a tampered or forged server flight -------------------------------------------


def test_tampered_server_finished_is_decrypt_error() -> None:
    client, server, flight = capture_server_flight()
    finished = split_messages(flight.messages)[3]
    forged = bytearray(finished)
    forged[-1] ^= 0x01
    wire = fails_with(client, flight.replace(3, bytes(forged)), A.decrypt_error)
    assert alert_seen_by_peer(wire, server) is A.decrypt_error


def test_server_finished_of_the_wrong_length_is_decode_error() -> None:
    client, server, flight = capture_server_flight(client_config(cipher_suites=(AES256,)))
    short = Finished(verify_data=bytes(32)).encode()  # SHA-384 suite needs 48 bytes
    wire = fails_with(client, flight.replace(3, short), A.decode_error)
    assert alert_seen_by_peer(wire, server) is A.decode_error


@pytest.mark.parametrize("key_type", ["ec256", "ed25519", "rsa2048"])
def test_tampered_certificate_verify_signature_is_decrypt_error(key_type) -> None:
    client, server, flight = capture_server_flight(server_cfg=server_config(certificates=(certified(key_type),)))
    cv = CertificateVerify.decode(split_messages(flight.messages)[2][4:])
    signature = bytearray(cv.signature)
    signature[len(signature) // 2] ^= 0x04
    forged = CertificateVerify(algorithm=cv.algorithm, signature=bytes(signature)).encode()
    wire = fails_with(client, flight.replace(2, forged), A.decrypt_error)
    assert alert_seen_by_peer(wire, server) is A.decrypt_error


def test_certificate_verify_with_a_scheme_the_client_did_not_offer_is_illegal_parameter() -> None:
    client, server, flight = capture_server_flight(client_config(signature_algorithms=(S.ecdsa_secp256r1_sha256,)))
    cv = CertificateVerify.decode(split_messages(flight.messages)[2][4:])
    forged = CertificateVerify(algorithm=S.ed25519, signature=cv.signature).encode()
    wire = fails_with(client, flight.replace(2, forged), A.illegal_parameter)
    assert alert_seen_by_peer(wire, server) is A.illegal_parameter


def test_certificate_verify_scheme_that_does_not_fit_the_key_is_illegal_parameter() -> None:
    client, server, flight = capture_server_flight()
    cv = CertificateVerify.decode(split_messages(flight.messages)[2][4:])
    forged = CertificateVerify(algorithm=S.ecdsa_secp384r1_sha384, signature=cv.signature).encode()
    wire = fails_with(client, flight.replace(2, forged), A.illegal_parameter)
    assert alert_seen_by_peer(wire, server) is A.illegal_parameter


def test_missing_certificate_verify_is_unexpected_message() -> None:
    client, server, flight = capture_server_flight()
    ee, cert, _, fin = split_messages(flight.messages)
    wire = fails_with(client, flight.wire(ee + cert + fin), A.unexpected_message)
    assert alert_seen_by_peer(wire, server) is A.unexpected_message


def test_empty_server_certificate_is_decode_error() -> None:
    client, server, flight = capture_server_flight()
    wire = fails_with(client, flight.replace(1, b"\x0b\x00\x00\x04\x00\x00\x00\x00"), A.decode_error)
    assert alert_seen_by_peer(wire, server) is A.decode_error


def test_encrypted_extensions_with_unrequested_alpn_is_unsupported_extension() -> None:
    client, server, flight = capture_server_flight()
    alpn = Extension(ExtensionType.application_layer_protocol_negotiation, ext.alpn_body(["h2"]))
    ee = b"\x08" + (2 + 4 + len(alpn.data)).to_bytes(3, "big") + (4 + len(alpn.data)).to_bytes(2, "big")
    ee += int(alpn.type).to_bytes(2, "big") + len(alpn.data).to_bytes(2, "big") + alpn.data
    wire = fails_with(client, flight.replace(0, ee), A.unsupported_extension)
    assert alert_seen_by_peer(wire, server) is A.unsupported_extension


def test_handshake_message_spanning_the_server_hello_key_change_is_unexpected_message() -> None:
    """§5.1: a handshake message may not span a key change; ServerHello plus a fragment of the next one."""
    client, hello = started_client()
    sh = craft_server_hello(hello).encode()
    wire = fails_with(client, handshake_record(sh + b"\x08\x00"), A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


def _record_with(message, extensions) -> bytes:
    """``message`` (a ClientHello or ServerHello) with other extensions, in a plaintext record."""
    return handshake_record(dataclasses.replace(message, extensions=tuple(extensions)).encode())


# --- the client rejects a forged ServerHello --------------------------------------------------------


def test_server_hello_with_a_suite_the_client_did_not_offer_is_illegal_parameter() -> None:
    client, hello = started_client(client_config(cipher_suites=(AES128,)))
    sh = craft_server_hello(hello, cipher_suite=AES256)
    wire = fails_with(client, handshake_record(sh.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_server_hello_not_echoing_the_session_id_is_illegal_parameter() -> None:
    client, hello = started_client()
    sh = craft_server_hello(hello, legacy_session_id=bytes(32))
    wire = fails_with(client, handshake_record(sh.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


@pytest.mark.parametrize("sentinel", [DOWNGRADE_TLS12, DOWNGRADE_TLS11], ids=["tls12", "tls11"])
def test_downgrade_sentinel_in_a_tls12_server_hello_is_illegal_parameter(sentinel) -> None:
    client, hello = started_client()
    sh = craft_server_hello(hello, random=bytes(24) + sentinel, extensions=())
    wire = fails_with(client, handshake_record(sh.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_tls12_server_hello_without_sentinel_is_protocol_version() -> None:
    client, hello = started_client()
    sh = craft_server_hello(hello, extensions=())
    wire = fails_with(client, handshake_record(sh.encode()), A.protocol_version)
    assert plaintext_alert(wire) is A.protocol_version


def test_server_hello_selecting_tls12_in_supported_versions_is_illegal_parameter() -> None:
    client, hello = started_client()
    base = craft_server_hello(hello)
    exts = tuple(
        Extension(e.type, b"\x03\x03") if e.type is ExtensionType.supported_versions else e for e in base.extensions
    )
    wire = fails_with(client, _record_with(base, exts), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_server_hello_without_key_share_is_missing_extension() -> None:
    client, hello = started_client()
    base = craft_server_hello(hello)
    exts = tuple(e for e in base.extensions if e.type is not ExtensionType.key_share)
    wire = fails_with(client, _record_with(base, exts), A.missing_extension)
    assert plaintext_alert(wire) is A.missing_extension


def test_server_hello_with_an_unoffered_extension_is_unsupported_extension() -> None:
    client, hello = started_client(client_config(alpn=()))
    base = craft_server_hello(hello)
    extra = Extension(ExtensionType.application_layer_protocol_negotiation, ext.alpn_body(["h2"]))
    sh = dataclasses.replace(base, extensions=(*base.extensions, extra))
    wire = fails_with(client, handshake_record(sh.encode()), A.unsupported_extension)
    assert plaintext_alert(wire) is A.unsupported_extension


def test_server_hello_key_share_for_an_unoffered_group_is_illegal_parameter() -> None:
    client, hello = started_client(
        client_config(groups=(NamedGroup.x25519, NamedGroup.secp256r1), key_share_groups=(NamedGroup.x25519,))
    )
    from tlskit.messages.extensions import KeyShareEntry

    p256_share = KeyShareEntry(NamedGroup.secp256r1, leaf_public_point())
    base = craft_server_hello(hello)
    exts = tuple(
        Extension(ExtensionType.key_share, ext.key_share_server_body(p256_share))
        if e.type is ExtensionType.key_share
        else e
        for e in base.extensions
    )
    wire = fails_with(client, _record_with(base, exts), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def leaf_public_point() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def test_invalid_x25519_share_in_server_hello_is_illegal_parameter() -> None:
    client, hello = started_client()
    from tlskit.messages.extensions import KeyShareEntry

    base = craft_server_hello(hello)
    exts = tuple(
        Extension(ExtensionType.key_share, ext.key_share_server_body(KeyShareEntry(NamedGroup.x25519, bytes(32))))
        if e.type is ExtensionType.key_share
        else e
        for e in base.extensions
    )
    wire = fails_with(client, _record_with(base, exts), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


# --- HelloRetryRequest misuse (§4.1.4) -----------------------------------------------------------------

RETRY_CLIENT = dict(
    groups=(NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1), key_share_groups=(NamedGroup.x25519,)
)


def test_second_hello_retry_request_is_unexpected_message() -> None:
    client, hello = started_client(client_config(**RETRY_CLIENT))
    client.receive_data(handshake_record(hello_retry_request(hello, NamedGroup.secp256r1, cookie=b"c1")))
    retried = plaintext_handshake(client.data_to_send())
    (second,) = retried
    assert ext.parse_cookie(ext.extension_map(second.extensions)[ExtensionType.cookie]) == b"c1"
    again = hello_retry_request(second, NamedGroup.secp384r1)
    wire = fails_with(client, handshake_record(again), A.unexpected_message)
    assert plaintext_alert(wire) is A.unexpected_message


def test_hello_retry_request_for_a_group_already_shared_is_illegal_parameter() -> None:
    client, hello = started_client(client_config(**RETRY_CLIENT))
    wire = fails_with(client, handshake_record(hello_retry_request(hello, NamedGroup.x25519)), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_hello_retry_request_for_an_unoffered_group_is_illegal_parameter() -> None:
    client, hello = started_client(client_config(groups=(NamedGroup.x25519,)))
    wire = fails_with(client, handshake_record(hello_retry_request(hello, NamedGroup.secp256r1)), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_a_cookie_too_large_to_echo_is_illegal_parameter() -> None:
    """A 65,400-byte cookie cannot fit the second ClientHello's extensions (at most 65,535 bytes): encoding it
    raised OverflowError (no alert, not a tlskit error); 60,000 bytes still go through."""
    client, hello = started_client(client_config(**RETRY_CLIENT))
    client.receive_data(handshake_record(hello_retry_request(hello, NamedGroup.secp256r1, cookie=b"c" * 60_000)))
    retried = [m for m in plaintext_handshake(client.data_to_send()) if isinstance(m, ClientHello)]
    assert len(ext.parse_cookie(ext.extension_map(retried[0].extensions)[ExtensionType.cookie])) == 60_000
    client, hello = started_client(client_config(**RETRY_CLIENT))
    big = hello_retry_request(hello, NamedGroup.secp256r1, cookie=b"c" * 65_400)
    fails_with(client, handshake_record(big), A.illegal_parameter)


def test_server_hello_after_retry_with_another_suite_is_illegal_parameter() -> None:
    client, hello = started_client(client_config(cipher_suites=(AES128, CHACHA), **RETRY_CLIENT))
    client.receive_data(handshake_record(hello_retry_request(hello, NamedGroup.secp256r1)))
    (second,) = plaintext_handshake(client.data_to_send())
    sh = craft_server_hello(second, cipher_suite=CHACHA)
    wire = fails_with(client, handshake_record(sh.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_server_rejects_second_client_hello_without_its_cookie() -> None:
    pair = connect(client_config(**RETRY_CLIENT), server_config(groups=(NamedGroup.secp256r1,)))
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    (second,) = plaintext_handshake(pair.client.data_to_send())
    exts = tuple(e for e in second.extensions if e.type is not ExtensionType.cookie)
    wire = fails_with(pair.server, _record_with(second, exts), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_server_rejects_second_client_hello_with_a_new_random() -> None:
    pair = connect(client_config(**RETRY_CLIENT), server_config(groups=(NamedGroup.secp256r1,)))
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    (second,) = plaintext_handshake(pair.client.data_to_send())
    forged = dataclasses.replace(second, random=bytes(32))
    wire = fails_with(pair.server, handshake_record(forged.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_server_rejects_second_client_hello_with_the_wrong_share() -> None:
    pair = connect(client_config(**RETRY_CLIENT), server_config(groups=(NamedGroup.secp256r1,)))
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    (second,) = plaintext_handshake(pair.client.data_to_send())
    first_share = craft_client_hello(client_config(**RETRY_CLIENT))
    forged = dataclasses.replace(
        second,
        extensions=tuple(
            next(x for x in first_share.extensions if x.type is ExtensionType.key_share)
            if e.type is ExtensionType.key_share
            else e
            for e in second.extensions
        ),
    )
    wire = fails_with(pair.server, handshake_record(forged.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


# --- after a fatal error --------------------------------------------------------------------------------


def test_after_a_fatal_error_the_alert_is_queued_once_and_the_connection_refuses_use() -> None:
    server = _server()
    with pytest.raises(AlertError):
        server.receive_data(b"\x19\x03\x03\x00\x01\x00")
    events = server.events()
    assert len(events) == 1 and isinstance(events[0], ConnectionClosed)
    assert events[0].alert is A.unexpected_message and not events[0].by_peer
    assert plaintext_alert(server.data_to_send()) is A.unexpected_message
    assert server.data_to_send() == b""
    assert server.closed
    with pytest.raises(ConnectionClosedError):
        server.receive_data(craft_client_hello_record())
    with pytest.raises(ConnectionClosedError):
        server.receive_data(b"")
    with pytest.raises(ConnectionClosedError):
        server.send_data(b"x")
    server.close()
    assert server.data_to_send() == b""


def test_after_a_fatal_error_post_handshake_the_connection_refuses_use() -> None:
    pair = handshake()
    with pytest.raises(AlertError):
        pair.server.receive_data(b"\x17\x03\x03\x00\x20" + bytes(32))
    assert alert_seen_by_peer(pair.server.data_to_send(), pair.client) is A.bad_record_mac
    for conn in (pair.server, pair.client):
        assert conn.closed
        with pytest.raises(ConnectionClosedError):
            conn.send_data(b"x")
        with pytest.raises(ConnectionClosedError):
            conn.key_update()
        with pytest.raises(ConnectionClosedError):
            conn.receive_data(b"\x17")


def test_remote_alert_closes_the_receiving_side() -> None:
    pair = handshake()
    with pytest.raises(AlertError):
        pair.server.receive_data(b"\x19\x03\x03\x00\x01\x00")
    assert alert_seen_by_peer(pair.server.data_to_send(), pair.client) is A.unexpected_message
    assert pair.client.closed
    received, closed = pair.client.events()
    assert received == AlertReceived(description=A.unexpected_message)
    assert isinstance(closed, ConnectionClosed) and closed.by_peer and closed.alert is A.unexpected_message
    assert isinstance(closed.error, RemoteAlert)
    assert pair.client.data_to_send() == b""  # no alert answers an alert
    with pytest.raises(ConnectionClosedError):
        pair.client.receive_data(b"x")


def test_unprotected_alert_after_the_handshake_is_unexpected_message() -> None:
    pair = handshake()
    wire = fails_with(pair.client, b"\x15\x03\x03\x00\x02\x02\x28", A.unexpected_message)
    assert alert_seen_by_peer(wire, pair.server) is A.unexpected_message


@pytest.mark.parametrize("side", ["server", "client"])
def test_eof_during_the_handshake_is_unexpected_eof(side) -> None:
    if side == "server":
        conn = _server()
        conn.receive_data(craft_client_hello_record()[:20])
    else:
        conn, _ = started_client()
    with pytest.raises(UnexpectedEOF):
        conn.receive_data(b"")
    assert conn.data_to_send() == b""
    (event,) = conn.events()
    assert isinstance(event, ConnectionClosed) and event.by_peer and isinstance(event.error, UnexpectedEOF)
    with pytest.raises(ConnectionClosedError):
        conn.receive_data(b"more")


# --- RSA-PSS key families (§4.2.3) --------------------------------------------------------------------


def test_certified_key_for_a_pss_oid_certificate_offers_rsa_pss_pss_schemes() -> None:
    assert pss_oid_certified().schemes == (S.rsa_pss_pss_sha256, S.rsa_pss_pss_sha384, S.rsa_pss_pss_sha512)


def test_client_rejects_rsae_signature_from_a_pss_oid_certificate() -> None:
    server = server_config(certificates=(pss_oid_certified(schemes=(S.rsa_pss_rsae_sha256,)),))
    assert _client_rejects_flight(client_config(), server, A.illegal_parameter, AlertError) is A.illegal_parameter


def test_client_rejects_pss_signature_from_an_rsa_encryption_certificate() -> None:
    rsa = certified("rsa2048")
    forged = CertifiedKey(chain=rsa.chain, private_key=rsa.private_key, schemes=(S.rsa_pss_pss_sha256,))
    server = server_config(certificates=(forged,))
    assert _client_rejects_flight(client_config(), server, A.illegal_parameter, AlertError) is A.illegal_parameter



def test_a_ticket_with_an_extension_tickets_may_not_carry_is_illegal_parameter() -> None:
    """§4.2: a recognised extension in a message it is not specified for (NewSessionTicket: early_data only);
    it was accepted and the ticket stored. Unknown ones are ignored (§4.2, clients MUST ignore them)."""
    from tlskit.messages.handshake import NewSessionTicket

    pair = handshake()
    assert pair.server._write is not None
    unknown = NewSessionTicket(lifetime=60, age_add=1, nonce=b"\x00", ticket=b"t",
                               extensions=(Extension(ExtensionType.of(0x7A7A), b""),))
    pair.client.receive_data(pair.server._write.seal(ContentType.handshake, unknown.encode()))
    ticket = NewSessionTicket(lifetime=60, age_add=1, nonce=b"\x01", ticket=b"t",
                              extensions=(Extension(ExtensionType.key_share, b"\x00\x1d"),))
    fails_with(pair.client, pair.server._write.seal(ContentType.handshake, ticket.encode()), A.illegal_parameter)


def test_a_client_hello_with_oid_filters_is_illegal_parameter() -> None:
    """§4.2: oid_filters belongs in CertificateRequest only: a recognised extension in the wrong message."""
    hello = craft_client_hello(extra=[Extension(ExtensionType.oid_filters, b"\x00\x00")])
    wire = fails_with(_server(), handshake_record(hello.encode()), A.illegal_parameter)
    assert plaintext_alert(wire) is A.illegal_parameter


def test_a_hello_repeating_a_group_thousands_of_times_costs_linear_time() -> None:
    """x25519 listed 16,000 times and 4,600 shares for unknown groups: each repeat rescanned every share, 1.3 s
    of CPU for one 64 KB ClientHello (ten of them stalled `tlskit serve` for 15 s). Now deduplicated and
    indexed: the server answers with a HelloRetryRequest for x25519 at once, as OpenSSL does."""
    unknown = range(0x7000, 0x7000 + 4600)
    groups_body = struct.pack(f">H{16000 + len(unknown)}H", 2 * (16000 + len(unknown)), *([0x001D] * 16000), *unknown)
    shares = b"".join(struct.pack(">HHB", g, 1, 0) for g in unknown)
    hostile = craft_client_hello(
        drop=[ExtensionType.supported_groups, ExtensionType.key_share],
        extra=[Extension(ExtensionType.supported_groups, groups_body),
               Extension(ExtensionType.key_share, len(shares).to_bytes(2, "big") + shares)],
    )
    server = _server()
    started = time.process_time()
    server.receive_data(handshake_record(hostile.encode()))
    spent = time.process_time() - started
    (retry,) = plaintext_handshake(server.data_to_send())[:1]
    assert isinstance(retry, ServerHello) and retry.is_hello_retry_request
    assert ext.parse_key_share_hrr(ext.extension_map(retry.extensions)[ExtensionType.key_share]) is NamedGroup.x25519
    assert spent < 0.4, f"{spent:.2f} s of CPU for one ClientHello"  # quadratic: 1.3 s here; linear: ~0.02 s


def _sealed(pair: Pair, content_type: ContentType, data: bytes, n: int) -> bytes:
    """``n`` records of ``data`` from the client (KeyUpdates through its API: each changes its write key)."""
    if content_type is ContentType.handshake:
        for _ in range(n):
            pair.client.key_update(request_peer=False)
        return pair.client.data_to_send()
    assert pair.client._write is not None
    return b"".join(pair.client._write.seal(content_type, data) for _ in range(n))


@pytest.mark.parametrize(("content_type", "data"), [
    (ContentType.application_data, b""),
    (ContentType.alert, bytes((1, AlertDescription.user_canceled))),
    (ContentType.handshake, KeyUpdate(request_update=KeyUpdateRequest.update_not_requested).encode()),
], ids=["empty-application-data", "user-canceled", "key-update"])
def test_a_flood_of_records_that_carry_nothing_is_unexpected_message(content_type: ContentType, data: bytes) -> None:
    """Each costs a record's work (a KeyUpdate a key derivation) for nothing: 32 in a row pass, as in OpenSSL
    and BoringSSL, then unexpected_message (they were accepted without limit at ~400x the CPU per byte)."""
    pair = handshake()
    pair.server.receive_data(_sealed(pair, content_type, data, 32) + _sealed(pair, ContentType.application_data,
                                                                            b"x", 1))
    assert [e.data for e in pair.server.events() if isinstance(e, ApplicationData)] == [b"x"]  # data resets
    pair.server.receive_data(_sealed(pair, content_type, data, 32))
    fails_with(pair.server, _sealed(pair, content_type, data, 1), A.unexpected_message)


def test_a_flood_of_change_cipher_spec_during_the_handshake_is_unexpected_message() -> None:
    """§5 says to drop them, not how many: OpenSSL gives up after 32."""
    _client, hello = started_client()
    server = _server()
    server.receive_data(handshake_record(hello.encode()) + b"\x14\x03\x03\x00\x01\x01" * 32)
    fails_with(server, b"\x14\x03\x03\x00\x01\x01", A.unexpected_message)
