"""Paired client ↔ server ``Connection``s in memory (DESIGN §6): negotiation, record layer behaviour and the
post-handshake messages of RFC 8446, each asserted on both sides and, where it matters, on the wire."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest

from tests.pairing import (
    CCS_RECORD,
    KEY_LOG_LABELS,
    NAME,
    alert_seen_by_peer,
    certified,
    client_config,
    connect,
    events_of,
    fails_with,
    handshake,
    leaf,
    plaintext_alert,
    plaintext_handshake,
    protected_lengths,
    pss_oid_certified,
    records,
    server_config,
)
from tlskit.connection import Connection
from tlskit.crypto import keyschedule
from tlskit.crypto.suites import suite_params
from tlskit.enums import (
    AlertDescription,
    CipherSuite,
    ContentType,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    ProtocolVersion,
    SignatureScheme,
)
from tlskit.errors import AlertError, ConfigError, ConnectionClosedError, RemoteAlert, UnexpectedEOF
from tlskit.events import (
    AlertReceived,
    ApplicationData,
    ConnectionClosed,
    KeyUpdated,
    SessionTicketReceived,
)
from tlskit.messages import extensions as ext
from tlskit.messages.extensions import Extension
from tlskit.messages.handshake import ClientHello, NewSessionTicket, ServerHello
from tlskit.record import MAX_PLAINTEXT, RecordDecryptor, RecordEncryptor

S = SignatureScheme
SUITES = tuple(CipherSuite(s) for s in (0x1301, 0x1302, 0x1303))
GROUPS = (NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1, NamedGroup.X25519MLKEM768)
TAG = 16


def _server_for(scheme: SignatureScheme):
    """The certificate that signs with ``scheme`` (RSA-PSS keys for the rsa_pss_* schemes)."""
    if scheme in (S.rsa_pss_pss_sha256, S.rsa_pss_pss_sha384, S.rsa_pss_pss_sha512):
        return pss_oid_certified(schemes=(S.rsa_pss_pss_sha256, S.rsa_pss_pss_sha384, S.rsa_pss_pss_sha512))
    key_type = {
        S.ecdsa_secp256r1_sha256: "ec256",
        S.ecdsa_secp384r1_sha384: "ec384",
        S.ed25519: "ed25519",
    }.get(scheme, "rsa2048")
    return certified(key_type)


SCHEMES = (
    S.ecdsa_secp256r1_sha256,
    S.ecdsa_secp384r1_sha384,
    S.ed25519,
    S.rsa_pss_rsae_sha256,
    S.rsa_pss_rsae_sha384,
    S.rsa_pss_rsae_sha512,
    S.rsa_pss_pss_sha256,
    S.rsa_pss_pss_sha384,
    S.rsa_pss_pss_sha512,
)


def _exchange(pair, payload_c: bytes = b"ping", payload_s: bytes = b"pong") -> None:
    pair.client.send_data(payload_c)
    pair.server.send_data(payload_s)
    pair.pump()
    c, s = pair.collect()
    assert b"".join(e.data for e in events_of(s, ApplicationData)) == payload_c
    assert b"".join(e.data for e in events_of(c, ApplicationData)) == payload_s


# --- negotiation matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_every_suite_group_and_signature_scheme_negotiates(suite, group, scheme) -> None:
    pair = handshake(
        client_config(cipher_suites=(suite,), groups=(group,), key_share_groups=(group,),
                      signature_algorithms=(scheme,)),
        server_config(certificates=(_server_for(scheme),)),
    )
    for complete in (pair.client_complete, pair.server_complete):
        assert complete.version is ProtocolVersion.TLS1_3
        assert complete.cipher_suite is suite
        assert complete.group is group
        assert complete.signature_scheme is scheme
        assert not complete.hello_retry and not complete.resumed
    assert pair.client_complete.peer_certificates == _server_for(scheme).chain
    assert pair.server_complete.peer_certificates == ()
    _exchange(pair)
    for label, context in ((b"EXPORTER-test", b""), (b"EXPORTER-other", b"ctx")):
        assert pair.client.export_keying_material(label, context, 32) == pair.server.export_keying_material(
            label, context, 32
        )
    assert pair.client.export_keying_material(b"a", b"", 32) != pair.client.export_keying_material(b"b", b"", 32)


def test_default_configs_agree_on_aes128_the_pq_hybrid_and_the_certificates_scheme() -> None:
    """A default client sends X25519MLKEM768 and x25519 shares, hybrid first (as browsers and OpenSSL >= 3.5);
    a default server follows the client's order, so no HelloRetryRequest and post-quantum protection."""
    pair = handshake()
    assert pair.client_complete.cipher_suite is CipherSuite.TLS_AES_128_GCM_SHA256
    assert pair.client_complete.group is NamedGroup.X25519MLKEM768 and not pair.client_complete.hello_retry
    assert client_config().key_shares == (NamedGroup.X25519MLKEM768, NamedGroup.x25519)
    assert client_config(groups=(NamedGroup.secp384r1, NamedGroup.x25519)).key_shares == (NamedGroup.x25519,)
    assert client_config(groups=(NamedGroup.secp384r1,)).key_shares == (NamedGroup.secp384r1,)
    assert pair.client_complete.signature_scheme is S.ecdsa_secp256r1_sha256
    assert pair.client_complete.server_name == pair.server_complete.server_name == NAME


def test_traffic_secrets_match_across_the_pair() -> None:
    pair = handshake()
    _exchange(pair)
    c, s = pair.client.traffic_secrets(), pair.server.traffic_secrets()
    assert (c.write_secret, c.write_seq) == (s.read_secret, s.read_seq)
    assert (c.read_secret, c.read_seq) == (s.write_secret, s.write_seq)
    assert c.write_seq == 1


def test_send_data_takes_any_bytes_like_object() -> None:
    """bytes, bytearray and memoryview (also one spanning several records) arrive as the same bytes."""
    pair = handshake()
    big = bytes(range(256)) * 100  # 25,600 bytes: two records
    for payload in (memoryview(b"view"), bytearray(b"array"), memoryview(big)):
        pair.client.send_data(payload)
        pair.pump()
        _, s = pair.collect()
        assert b"".join(e.data for e in events_of(s, ApplicationData)) == bytes(payload)


# --- HelloRetryRequest and preference order (§4.1.1, §4.1.4) ------------------------------------------


def test_hello_retry_request_when_client_sent_no_share_for_a_server_group() -> None:
    pair = handshake(
        client_config(groups=(NamedGroup.x25519, NamedGroup.secp256r1), key_share_groups=(NamedGroup.x25519,)),
        server_config(groups=(NamedGroup.secp256r1,)),
    )
    for complete in (pair.client_complete, pair.server_complete):
        assert complete.hello_retry
        assert complete.group is NamedGroup.secp256r1
    hrr, *_ = plaintext_handshake(bytes(pair.to_client))
    assert isinstance(hrr, ServerHello) and hrr.is_hello_retry_request
    hrr_exts = ext.extension_map(hrr.extensions)
    assert ext.parse_key_share_hrr(hrr_exts[ExtensionType.key_share]) is NamedGroup.secp256r1
    cookie = ext.parse_cookie(hrr_exts[ExtensionType.cookie])
    first, second = plaintext_handshake(bytes(pair.to_server))
    assert isinstance(first, ClientHello) and isinstance(second, ClientHello)
    assert ExtensionType.cookie not in ext.extension_map(first.extensions)
    second_exts = ext.extension_map(second.extensions)
    assert ext.parse_cookie(second_exts[ExtensionType.cookie]) == cookie
    (share,) = ext.parse_key_share_client(second_exts[ExtensionType.key_share])
    assert share.group is NamedGroup.secp256r1
    assert second.random == first.random and second.legacy_session_id == first.legacy_session_id
    _exchange(pair)


def test_hello_retry_request_without_cookie_when_disabled() -> None:
    pair = handshake(
        client_config(groups=(NamedGroup.x25519, NamedGroup.secp384r1), key_share_groups=(NamedGroup.x25519,)),
        server_config(groups=(NamedGroup.secp384r1,), hello_retry_cookie=False),
    )
    assert pair.client_complete.hello_retry and pair.client_complete.group is NamedGroup.secp384r1
    hrr, *_ = plaintext_handshake(bytes(pair.to_client))
    assert ExtensionType.cookie not in ext.extension_map(hrr.extensions)


@pytest.mark.parametrize(("server_order", "expected"), [(False, SUITES[1]), (True, SUITES[2])])
def test_suite_follows_client_order_unless_server_prefers_its_own(server_order, expected) -> None:
    pair = handshake(
        client_config(cipher_suites=SUITES),
        server_config(cipher_suites=(SUITES[2], SUITES[1]), prefer_server_order=server_order),
    )
    assert pair.client_complete.cipher_suite is pair.server_complete.cipher_suite is expected


@pytest.mark.parametrize(("server_order", "expected"), [(False, NamedGroup.x25519), (True, NamedGroup.secp384r1)])
def test_group_follows_client_order_unless_server_prefers_its_own(server_order, expected) -> None:
    both = (NamedGroup.x25519, NamedGroup.secp384r1)
    pair = handshake(
        client_config(groups=both, key_share_groups=both),
        server_config(groups=both[::-1], prefer_server_order=server_order),
    )
    assert pair.client_complete.group is pair.server_complete.group is expected
    assert not pair.client_complete.hello_retry


def test_server_prefers_a_group_the_client_sent_a_share_for_over_a_retry() -> None:
    pair = handshake(
        client_config(groups=(NamedGroup.x25519, NamedGroup.secp384r1), key_share_groups=(NamedGroup.x25519,)),
        server_config(groups=(NamedGroup.secp384r1, NamedGroup.x25519), prefer_server_order=True),
    )
    assert pair.client_complete.group is NamedGroup.x25519 and not pair.client_complete.hello_retry


# --- ALPN (RFC 7301) and SNI certificate selection ---------------------------------------------------


def test_alpn_server_picks_its_preferred_common_protocol() -> None:
    pair = handshake(client_config(alpn=("h2", "http/1.1")), server_config(alpn=("http/1.1", "h2")))
    assert pair.client_complete.alpn == pair.server_complete.alpn == "http/1.1"


def test_alpn_absent_when_only_one_side_configures_it() -> None:
    assert handshake(client_config(alpn=("h2",)), server_config()).client_complete.alpn is None
    assert handshake(client_config(), server_config(alpn=("h2",))).client_complete.alpn is None


def test_alpn_without_overlap_is_no_application_protocol() -> None:
    pair = connect(client_config(alpn=("h2",)), server_config(alpn=("http/1.1",)))
    wire = fails_with(pair.server, pair.client.data_to_send(), AlertDescription.no_application_protocol)
    assert plaintext_alert(wire) is AlertDescription.no_application_protocol
    assert alert_seen_by_peer(wire, pair.client) is AlertDescription.no_application_protocol


@pytest.fixture(scope="module")
def two_names_server():
    return server_config(certificates=(certified("rsa2048", ("rsa.example",)), certified("ec256", ("ec.example",))))


@pytest.mark.parametrize(
    ("name", "scheme", "key_type"),
    [("rsa.example", S.rsa_pss_rsae_sha256, "rsa2048"), ("ec.example", S.ecdsa_secp256r1_sha256, "ec256")],
)
def test_sni_selects_the_certificate_for_the_name(two_names_server, name, scheme, key_type) -> None:
    pair = handshake(client_config(server_name=name), two_names_server)
    assert pair.client_complete.peer_certificates == (leaf(key_type, (name,)).der,)
    assert pair.client_complete.signature_scheme is scheme
    assert pair.server_complete.server_name == name


@pytest.mark.parametrize(
    ("client_schemes", "expected"),
    [
        ((S.rsa_pss_rsae_sha256, S.rsa_pss_rsae_sha384), S.rsa_pss_rsae_sha256),
        ((S.ecdsa_secp256r1_sha256,), S.ecdsa_secp256r1_sha256),
        ((S.ed25519, S.rsa_pss_rsae_sha512), S.ed25519),
    ],
)
def test_signature_algorithms_select_among_certificates_for_one_name(client_schemes, expected) -> None:
    names = ("multi.example",)
    server = server_config(
        certificates=(certified("ec256", names), certified("ed25519", names), certified("rsa2048", names))
    )
    pair = handshake(client_config(server_name="multi.example", signature_algorithms=client_schemes), server)
    assert pair.client_complete.signature_scheme is expected


def test_cert_resolver_is_asked_with_the_name_and_schemes() -> None:
    asked = []

    def resolver(name, schemes):
        asked.append((name, tuple(schemes)))
        return certified("ed25519")

    pair = handshake(client_config(signature_algorithms=(S.ed25519,)), server_config(cert_resolver=resolver))
    assert asked == [(NAME, (S.ed25519,))]
    assert pair.client_complete.signature_scheme is S.ed25519


def test_no_certificate_for_the_client_schemes_is_handshake_failure() -> None:
    pair = connect(client_config(signature_algorithms=(S.ed25519,)), server_config())
    wire = fails_with(pair.server, pair.client.data_to_send(), AlertDescription.handshake_failure)
    assert plaintext_alert(wire) is AlertDescription.handshake_failure


# --- RFC 8449 record_size_limit and padding (§5.4) --------------------------------------------------------


def test_record_size_limit_caps_the_servers_protected_records() -> None:
    pair = handshake(client_config(record_size_limit=256), server_config())
    pair.server.send_data(bytes(5000))
    _, to_client = pair.pump()
    # TLSInnerPlaintext = content + type byte (+ padding) <= 256, so a record is at most 256 + tag bytes.
    lengths = protected_lengths(bytes(pair.to_client))
    assert lengths and max(lengths) <= 256 + TAG
    assert len(protected_lengths(to_client)) >= 5000 // 255
    c, _ = pair.collect()
    assert b"".join(e.data for e in events_of(c, ApplicationData)) == bytes(5000)


def test_record_size_limit_echo_in_encrypted_extensions_caps_the_client() -> None:
    pair = handshake(client_config(record_size_limit=1024), server_config(record_size_limit=300))
    pair.client.send_data(bytes(4000))
    to_server, _ = pair.pump()
    assert max(protected_lengths(to_server)) <= 300 + TAG
    assert max(protected_lengths(bytes(pair.to_client))) <= 1024 + TAG
    _, s = pair.collect()
    assert b"".join(e.data for e in events_of(s, ApplicationData)) == bytes(4000)


def test_a_client_whose_limit_was_echoed_refuses_larger_records() -> None:
    """Negotiated (the server echoed it in EncryptedExtensions), the client's limit holds for every record after:
    a server that sends more is record_overflow (RFC 8449 §4). Not negotiated, it binds nothing (OpenSSL 3.0
    interop test)."""
    pair = handshake(client_config(record_size_limit=256), server_config())
    assert pair.server._write is not None
    pair.server._write.max_fragment = MAX_PLAINTEXT  # a server ignoring the limit it agreed to
    pair.server.send_data(bytes(1000))
    with pytest.raises(AlertError) as raised:
        pair.client.receive_data(pair.server.data_to_send())
    assert raised.value.description is AlertDescription.record_overflow


def test_without_record_size_limit_the_server_sends_full_records() -> None:
    pair = handshake()
    pair.server.send_data(bytes(MAX_PLAINTEXT))
    _, to_client = pair.pump()
    assert protected_lengths(to_client) == [MAX_PLAINTEXT + 1 + TAG]


@pytest.mark.parametrize("pad_to", [256, 100])
def test_padding_makes_protected_records_multiples_of_pad_to(pad_to) -> None:
    pair = handshake(client_config(pad_to=pad_to), server_config(pad_to=pad_to))
    for size in (0, 1, 5, pad_to - 1, pad_to, 3 * pad_to + 7):
        pair.client.send_data(b"c" * size)
        pair.server.send_data(b"s" * size)
    pair.client.close()
    pair.pump()
    for wire in (bytes(pair.to_server), bytes(pair.to_client)):
        lengths = protected_lengths(wire)
        assert lengths, "no protected records"
        assert all((n - TAG) % pad_to == 0 for n in lengths), lengths
    _, s = pair.collect()
    expected = b"c" * (1 + 5 + pad_to - 1 + pad_to + 3 * pad_to + 7)
    assert b"".join(e.data for e in events_of(s, ApplicationData)) == expected


def test_padding_never_exceeds_the_record_limit() -> None:
    pair = handshake(client_config(record_size_limit=200), server_config(pad_to=128))
    pair.server.send_data(bytes(1000))
    _, to_client = pair.pump()
    assert max(protected_lengths(to_client)) <= 200 + TAG


def test_send_data_of_nothing_sends_nothing() -> None:
    pair = handshake()
    pair.client.send_data(b"")
    assert pair.client.data_to_send() == b""


# --- middlebox compatibility (§D.4) ------------------------------------------------------------------


def test_middlebox_compat_sends_one_change_cipher_spec_each_way_and_echoes_session_id() -> None:
    pair = handshake(client_config(middlebox_compat=True), server_config(middlebox_compat=True))
    for wire in (bytes(pair.to_server), bytes(pair.to_client)):
        assert [r for r in records(wire) if r[0] == ContentType.change_cipher_spec] == [(20, b"\x01")]
    assert CCS_RECORD in bytes(pair.to_client)
    (hello,) = plaintext_handshake(bytes(pair.to_server))
    (server_hello,) = plaintext_handshake(bytes(pair.to_client))
    assert len(hello.legacy_session_id) == 32
    assert server_hello.legacy_session_id == hello.legacy_session_id
    # The server's CCS follows its ServerHello directly (§D.4).
    kinds = [t for t, _ in records(bytes(pair.to_client))]
    assert kinds[:3] == [ContentType.handshake, ContentType.change_cipher_spec, ContentType.application_data]


def test_middlebox_compat_off_sends_no_change_cipher_spec_and_empty_session_id() -> None:
    pair = handshake(client_config(middlebox_compat=False), server_config(middlebox_compat=True))
    for wire in (bytes(pair.to_server), bytes(pair.to_client)):
        assert all(t != ContentType.change_cipher_spec for t, _ in records(wire))
    (hello,) = plaintext_handshake(bytes(pair.to_server))
    (server_hello,) = plaintext_handshake(bytes(pair.to_client))
    assert hello.legacy_session_id == server_hello.legacy_session_id == b""


def test_middlebox_compat_with_hello_retry_sends_one_ccs_each_way() -> None:
    pair = handshake(
        client_config(groups=(NamedGroup.x25519, NamedGroup.secp256r1), key_share_groups=(NamedGroup.x25519,)),
        server_config(groups=(NamedGroup.secp256r1,)),
    )
    for wire in (bytes(pair.to_server), bytes(pair.to_client)):
        assert sum(t == ContentType.change_cipher_spec for t, _ in records(wire)) == 1


def test_first_client_hello_record_uses_legacy_version_0x0301() -> None:
    pair = handshake()
    assert bytes(pair.to_server[:3]) == b"\x16\x03\x01"
    assert bytes(pair.to_client[:3]) == b"\x16\x03\x03"


# --- delivery patterns ---------------------------------------------------------------------------------


def test_handshake_and_data_survive_one_byte_at_a_time_delivery() -> None:
    pair = handshake(client_config(alpn=("h2",)), server_config(alpn=("h2",)), chunk=1)
    assert pair.client_complete.alpn == "h2"
    pair.client.send_data(b"x" * 3000)
    pair.server.send_data(b"y" * 3000)
    pair.pump(chunk=1)
    c, s = pair.collect()
    assert b"".join(e.data for e in events_of(s, ApplicationData)) == b"x" * 3000
    assert b"".join(e.data for e in events_of(c, ApplicationData)) == b"y" * 3000


def test_hello_retry_handshake_one_byte_at_a_time() -> None:
    pair = handshake(
        client_config(groups=(NamedGroup.x25519, NamedGroup.X25519MLKEM768), key_share_groups=(NamedGroup.x25519,)),
        server_config(groups=(NamedGroup.X25519MLKEM768,)),
        chunk=1,
    )
    assert pair.client_complete.hello_retry and pair.server_complete.group is NamedGroup.X25519MLKEM768


def test_coalesced_flights_and_data_in_one_delivery() -> None:
    pair = connect(client_config(), server_config())
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    assert pair.client.handshake_complete
    # Client Finished, data, a KeyUpdate, more data and close_notify reach the server in one call.
    pair.client.send_data(b"first")
    pair.client.key_update(request_peer=False)
    pair.client.send_data(b"second")
    pair.client.close()
    pair.server.receive_data(pair.client.data_to_send())
    events = pair.server.events()
    assert pair.server.handshake_complete
    assert [type(e).__name__ for e in events] == [
        "HandshakeComplete", "ApplicationData", "KeyUpdated", "ApplicationData", "ConnectionClosed"
    ]
    assert events[1].data == b"first" and events[3].data == b"second"


def test_hello_retry_handshake_takes_exactly_five_flights() -> None:
    """ClientHello, HRR (+CCS), ClientHello, server flight, client Finished: each one delivery (§2.1)."""
    pair = connect(
        client_config(groups=(NamedGroup.x25519, NamedGroup.secp256r1), key_share_groups=(NamedGroup.x25519,)),
        server_config(groups=(NamedGroup.secp256r1,)),
    )
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    pair.server.receive_data(pair.client.data_to_send())
    assert pair.client.handshake_complete and pair.server.handshake_complete
    assert pair.server.data_to_send() == b"" and pair.client.data_to_send() == b""


def test_one_mebibyte_is_split_into_full_records_and_reassembled() -> None:
    pair = handshake()
    data = bytes(range(256)) * 4096
    pair.client.send_data(data)
    to_server, _ = pair.pump()
    lengths = protected_lengths(to_server)
    assert len(lengths) == len(data) // MAX_PLAINTEXT
    assert all(n == MAX_PLAINTEXT + 1 + TAG for n in lengths)
    _, s = pair.collect()
    received = events_of(s, ApplicationData)
    assert b"".join(e.data for e in received) == data
    assert all(len(e.data) <= MAX_PLAINTEXT for e in received)


# --- KeyUpdate (§4.6.3) --------------------------------------------------------------------------------


@pytest.mark.parametrize("initiator", ["client", "server"])
def test_key_update_with_update_requested_makes_the_peer_update_too(initiator) -> None:
    pair = handshake()
    first = pair.client if initiator == "client" else pair.server
    before = first.traffic_secrets()
    first.key_update(request_peer=True)
    pair.pump()
    c, s = pair.collect()
    first_events, second_events = (c, s) if initiator == "client" else (s, c)
    assert events_of(first_events, KeyUpdated) == [
        KeyUpdated(received=False, update_requested=True),
        KeyUpdated(received=True, update_requested=False),
    ]
    assert sorted(map(repr, events_of(second_events, KeyUpdated))) == sorted(map(repr, [
        KeyUpdated(received=True, update_requested=True),
        KeyUpdated(received=False, update_requested=False),
    ]))
    after = first.traffic_secrets()
    params = suite_params(before.cipher_suite)
    assert after.write_secret == keyschedule.next_traffic_secret(params, before.write_secret)
    assert after.read_secret == keyschedule.next_traffic_secret(params, before.read_secret)
    assert after.write_seq == 0
    _exchange(pair)


def test_key_update_request_is_reported_before_the_answering_update() -> None:
    pair = handshake()
    pair.client.key_update(request_peer=True)
    pair.pump()
    _, s = pair.collect()
    assert events_of(s, KeyUpdated) == [
        KeyUpdated(received=True, update_requested=True),
        KeyUpdated(received=False, update_requested=False),
    ]


def test_a_burst_of_update_requests_gets_one_answer() -> None:
    """§4.6.3: requests received while our answer has not gone out share it (a peer sending thousands made us
    derive and send one KeyUpdate each); the next request after it went out gets its own."""
    pair = handshake()
    for _ in range(30):  # (past 32 in a row without data it is a flood: test_engine_failures)
        pair.client.key_update(request_peer=True)
    pair.server.receive_data(pair.client.data_to_send())
    answer = pair.server.data_to_send()
    s = pair.server.events()
    updates = events_of(s, KeyUpdated)
    assert updates.count(KeyUpdated(received=True, update_requested=True)) == 30
    assert updates.count(KeyUpdated(received=False, update_requested=False)) == 1 and len(updates) == 31
    pair.client.receive_data(answer)
    pair.client.key_update(request_peer=True)
    pair.server.receive_data(pair.client.data_to_send())
    assert events_of(pair.server.events(), KeyUpdated) == [
        KeyUpdated(received=True, update_requested=True), KeyUpdated(received=False, update_requested=False)]
    pair.client.receive_data(pair.server.data_to_send())
    pair.client.events()
    _exchange(pair)


def test_answers_to_our_own_update_requests_are_no_flood() -> None:
    """A client asking for 40 updates while the server sends nothing back got 40 KeyUpdates in a row and took
    them for a flood (OpenSSL answers each request); 33 unrequested ones still are one."""
    pair = handshake()
    for _ in range(40):
        pair.client.send_data(b"x")
        pair.client.key_update(request_peer=True)
        pair.server.receive_data(pair.client.data_to_send())
        pair.client.receive_data(pair.server.data_to_send())  # one answer per request: nothing coalesced
    assert events_of(pair.client.events(), KeyUpdated).count(KeyUpdated(received=True, update_requested=False)) == 40
    for _ in range(32):
        pair.server.key_update(request_peer=False)
    pair.client.receive_data(pair.server.data_to_send())
    pair.server.key_update(request_peer=False)
    with pytest.raises(AlertError):
        pair.client.receive_data(pair.server.data_to_send())


def test_key_update_without_request_changes_only_one_direction() -> None:
    pair = handshake()
    server_write = pair.server.traffic_secrets().write_secret
    pair.client.key_update(request_peer=False)
    pair.pump()
    c, s = pair.collect()
    assert events_of(c, KeyUpdated) == [KeyUpdated(received=False, update_requested=False)]
    assert events_of(s, KeyUpdated) == [KeyUpdated(received=True, update_requested=False)]
    assert pair.server.traffic_secrets().write_secret == server_write
    _exchange(pair)


def test_many_key_updates_in_a_row() -> None:
    pair = handshake()
    for i in range(20):
        (pair.client if i % 2 else pair.server).key_update(request_peer=i % 3 == 0)
        pair.client.send_data(b"%d" % i)
    pair.pump()
    _, s = pair.collect()
    assert b"".join(e.data for e in events_of(s, ApplicationData)) == b"".join(b"%d" % i for i in range(20))
    assert pair.client.traffic_secrets().write_secret == pair.server.traffic_secrets().read_secret


def test_automatic_key_update_after_the_configured_number_of_records() -> None:
    pair = handshake(client_config(key_update_after_records=5), server_config(key_update_after_records=5))
    sent = [b"message %d" % i for i in range(23)]
    for m in sent:
        pair.client.send_data(m)
        pair.server.send_data(m)
    pair.pump()
    c, s = pair.collect()
    for events in (c, s):
        assert b"".join(e.data for e in events_of(events, ApplicationData)) == b"".join(sent)
        own = [e for e in events_of(events, KeyUpdated) if not e.received]
        peer = [e for e in events_of(events, KeyUpdated) if e.received]
        assert len(own) >= 4 and len(peer) >= 4
        assert not any(e.update_requested for e in own + peer)


def _records_per_key(wire: bytes, suite: CipherSuite, secret: bytes) -> list[int]:
    """Open a direction's protected records as a key log reader would, following its KeyUpdates."""
    params = suite_params(suite)
    decryptor, counts = RecordDecryptor(params, secret), [0]
    for _, fragment in records(wire):
        content_type, content = decryptor.open(b"\x17\x03\x03" + len(fragment).to_bytes(2, "big"), fragment)
        counts[-1] += 1
        if content_type is ContentType.handshake and content[0] == HandshakeType.key_update:
            secret = keyschedule.next_traffic_secret(params, secret)
            decryptor = RecordDecryptor(params, secret)
            counts.append(0)
    return counts


def test_automatic_key_update_keeps_each_key_under_the_limit_for_small_writes() -> None:
    pair = handshake(client_config(key_update_after_records=5))
    secret = bytes.fromhex(pair.client_key_log[2].split()[2])
    assert pair.client_key_log[2].startswith("CLIENT_TRAFFIC_SECRET_0 ")
    for i in range(30):
        pair.client.send_data(b"%d" % i)
    to_server, _ = pair.pump()
    counts = _records_per_key(to_server, pair.client_complete.cipher_suite, secret)
    assert len(counts) > 5 and max(counts) <= 5, counts


def test_automatic_key_update_keeps_each_key_under_the_limit_for_one_large_write() -> None:
    pair = handshake(client_config(key_update_after_records=8))
    secret = bytes.fromhex(pair.client_key_log[2].split()[2])
    pair.client.send_data(bytes(40 * MAX_PLAINTEXT))
    to_server, _ = pair.pump()
    _, s = pair.collect()
    assert b"".join(e.data for e in events_of(s, ApplicationData)) == bytes(40 * MAX_PLAINTEXT)
    counts = _records_per_key(to_server, pair.client_complete.cipher_suite, secret)
    assert max(counts) <= 8, counts


# --- close_notify (§6.1) --------------------------------------------------------------------------------


def test_close_notify_half_close_lets_the_other_side_keep_sending() -> None:
    pair = handshake()
    pair.client.close()
    pair.pump()
    _, s = pair.collect()
    assert s == [ConnectionClosed(by_peer=True, alert=AlertDescription.close_notify)]
    with pytest.raises(ConnectionClosedError):
        pair.client.send_data(b"after close")
    pair.server.send_data(b"still talking")
    pair.pump()
    c, _ = pair.collect()
    assert c == [ApplicationData(data=b"still talking")]
    assert not pair.client.closed and not pair.server.closed
    pair.server.close()
    pair.pump()
    c, _ = pair.collect()
    assert c == [ConnectionClosed(by_peer=True, alert=AlertDescription.close_notify)]
    assert pair.client.closed and pair.server.closed


def test_close_notify_is_a_protected_warning_alert() -> None:
    pair = handshake()
    pair.client.close()
    wire = pair.client.data_to_send()
    assert [t for t, _ in records(wire)] == [ContentType.application_data]
    pair.client.close()  # idempotent
    assert pair.client.data_to_send() == b""


def test_key_update_request_after_our_close_is_not_answered() -> None:
    pair = handshake()
    pair.client.close()
    pair.pump()
    pair.server.key_update(request_peer=True)
    pair.pump()
    c, _ = pair.collect()
    assert c == [KeyUpdated(received=True, update_requested=True)]
    assert pair.client.data_to_send() == b""


def test_eof_after_the_handshake_is_reported_as_a_truncation_event() -> None:
    pair = handshake()
    pair.client.receive_data(b"")
    (event,) = pair.client.events()
    assert isinstance(event, ConnectionClosed) and event.by_peer and event.alert is None
    assert isinstance(event.error, UnexpectedEOF)


def test_user_api_misuse_is_config_error() -> None:
    client = Connection(client_config())
    with pytest.raises(ConfigError):
        client.send_data(b"too early")
    with pytest.raises(ConfigError):
        client.export_keying_material(b"x", b"", 16)
    with pytest.raises(ConfigError):
        client.traffic_secrets()
    client.start()
    with pytest.raises(ConfigError):
        client.start()


# --- NewSessionTicket on the client (§4.6.1) ----------------------------------------------------------
# The server does not issue tickets yet, so the test seals a hand-built NewSessionTicket with the server's
# current write secret and sequence number (from the public ``traffic_secrets()``) and delivers it.


def _seal_as(conn: Connection, content: bytes, content_type: ContentType = ContentType.handshake) -> bytes:
    secrets = conn.traffic_secrets()
    encryptor = RecordEncryptor(suite_params(secrets.cipher_suite), secrets.write_secret)
    encryptor.seq = secrets.write_seq
    return encryptor.seal(content_type, content)


def test_client_reports_a_new_session_ticket_with_its_resumption_psk() -> None:
    now = time.time()
    pair = handshake(client_config(alpn=("h2",), clock=lambda: now), server_config(alpn=("h2",)))
    tickets = [
        NewSessionTicket(lifetime=7200, age_add=0x01020304, nonce=b"\x00", ticket=b"T" * 40),
        NewSessionTicket(
            lifetime=604800, age_add=0, nonce=b"\x01", ticket=b"U" * 5,
            extensions=(Extension(ExtensionType.early_data, ext.early_data_nst_body(16384)),),
        ),
    ]
    pair.client.receive_data(_seal_as(pair.server, b"".join(t.encode() for t in tickets)))
    first, second = pair.client.events()
    assert isinstance(first, SessionTicketReceived) and isinstance(second, SessionTicketReceived)
    assert (first.ticket, second.ticket) == tuple(tickets)
    assert (first.max_early_data_size, second.max_early_data_size) == (0, 16384)
    assert first.cipher_suite is pair.client_complete.cipher_suite
    assert first.server_name == NAME and first.alpn == "h2"
    assert first.received_at == now
    assert len(first.psk) == 32 and first.psk != second.psk


def test_client_rejects_a_ticket_lifetime_over_seven_days() -> None:
    pair = handshake()
    body = NewSessionTicket(lifetime=604801, age_add=0, nonce=b"", ticket=b"t").encode()
    wire = fails_with(pair.client, _seal_as(pair.server, body), AlertDescription.illegal_parameter)
    assert alert_seen_by_peer(wire, pair.server) is AlertDescription.illegal_parameter


def test_server_rejects_a_new_session_ticket_from_the_client() -> None:
    pair = handshake()
    body = NewSessionTicket(lifetime=1, age_add=0, nonce=b"", ticket=b"t").encode()
    wire = fails_with(pair.server, _seal_as(pair.client, body), AlertDescription.unexpected_message)
    assert alert_seen_by_peer(wire, pair.client) is AlertDescription.unexpected_message


def test_key_update_not_at_a_record_boundary_is_unexpected_message() -> None:
    pair = handshake()
    ku = bytes((HandshakeType.key_update, 0, 0, 1, 0))
    partial = NewSessionTicket(lifetime=1, age_add=0, nonce=b"", ticket=b"t").encode()[:5]
    wire = fails_with(pair.client, _seal_as(pair.server, ku + partial), AlertDescription.unexpected_message)
    assert alert_seen_by_peer(wire, pair.server) is AlertDescription.unexpected_message


def test_key_update_with_an_invalid_request_value_is_illegal_parameter() -> None:
    pair = handshake()
    wire = fails_with(pair.server, _seal_as(pair.client, bytes((24, 0, 0, 1, 2))), AlertDescription.illegal_parameter)
    assert alert_seen_by_peer(wire, pair.client) is AlertDescription.illegal_parameter


def test_user_canceled_is_reported_without_closing() -> None:
    pair = handshake()
    pair.client.receive_data(_seal_as(pair.server, b"\x01\x5a", ContentType.alert))
    assert pair.client.events() == [AlertReceived(description=AlertDescription.user_canceled)]
    assert not pair.client.closed
    pair.client.send_data(b"still here")  # (the server's own sequence number is now behind; not used)
    pair.server.receive_data(pair.client.data_to_send())
    assert pair.server.events() == [ApplicationData(data=b"still here")]


def test_records_after_close_notify_are_ignored() -> None:
    pair = handshake()
    pair.server.send_data(b"before")
    pair.server.close()
    wire = pair.server.data_to_send()
    late = _seal_as(pair.server, b"after close_notify", ContentType.application_data)
    pair.client.receive_data(wire + late)
    events = pair.client.events()
    assert events == [
        ApplicationData(data=b"before"),
        ConnectionClosed(by_peer=True, alert=AlertDescription.close_notify),
    ]


def test_data_after_close_notify_is_neither_buffered_nor_checked() -> None:
    """§6.1: everything after the peer's close_notify is ignored — later calls are not framed or kept."""
    pair = handshake()
    pair.server.close()
    pair.client.receive_data(pair.server.data_to_send())
    late = _seal_as(pair.server, b"z" * 1000, ContentType.application_data)
    for _ in range(50):
        pair.client.receive_data(late * 3 + b"\xff garbage that is not a record")
    assert pair.client.buffered_input == 0 and not pair.client.closed
    assert pair.client.events() == [ConnectionClosed(by_peer=True, alert=AlertDescription.close_notify)]
    pair.client.send_data(b"half-closed: we may still send")
    pair.server.receive_data(pair.client.data_to_send())
    assert ApplicationData(data=b"half-closed: we may still send") in pair.server.events()


def test_encrypted_extensions_with_a_list_of_groups() -> None:
    """Configs given lists rather than tuples still work (the EncryptedExtensions cache keys on them)."""
    pair = handshake(server_cfg=server_config(send_supported_groups=True, groups=[NamedGroup.x25519]))
    assert pair.server_complete.group is NamedGroup.x25519


# --- key log (NSS format) -------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_key_log_has_five_nss_lines_keyed_by_the_client_random(suite) -> None:
    pair = handshake(client_config(cipher_suites=(suite,)))
    (hello,) = plaintext_handshake(bytes(pair.to_server))
    hash_len = suite_params(suite).hash_len
    for lines in (pair.client_key_log, pair.server_key_log):
        assert sorted(line.split()[0] for line in lines) == sorted(KEY_LOG_LABELS)
        for line in lines:
            assert re.fullmatch(r"[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]+", line), line
            _, random, secret = line.split()
            assert random == hello.random.hex()
            assert len(secret) == 2 * hash_len
    assert sorted(pair.client_key_log) == sorted(pair.server_key_log)
    exporter = next(x for x in pair.client_key_log if x.startswith("EXPORTER_SECRET "))
    params = suite_params(suite)
    assert pair.client.export_keying_material(b"lbl", b"", 16) == keyschedule.export_keying_material(
        params, bytes.fromhex(exporter.split()[2]), b"lbl", b"", 16
    )


def test_a_failing_callback_ends_the_handshake_with_internal_error_not_a_bare_exception() -> None:
    """A ``key_log`` that raises (a full disk) mid-handshake: the server sends internal_error (RFC 8446 §6.2)
    and raises a typed AlertError whose cause is the callback's exception; the connection is dead."""
    def full_disk(line: str) -> None:
        raise OSError(28, "No space left on device")

    client = Connection(client_config())
    server = Connection(dataclasses.replace(server_config(), key_log=full_disk))
    client.start()
    with pytest.raises(AlertError) as info:
        server.receive_data(client.data_to_send())
    assert info.value.description is AlertDescription.internal_error
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == 28
    assert server.closed and isinstance(server.events()[-1], ConnectionClosed)
    wire = server.data_to_send()
    with pytest.raises(RemoteAlert) as seen:
        client.receive_data(wire)
    assert seen.value.description is AlertDescription.internal_error, wire.hex()
    with pytest.raises(ConnectionClosedError):
        server.receive_data(b"\x16\x03\x03\x00\x01\x00")


def test_our_own_error_mid_handshake_is_raised_as_it_is_and_the_connection_is_dead() -> None:
    """A ConfigError (the caller's mistake, here from a key_log) mid-handshake was raised with the connection left
    half-alive: its ServerHello queued, no alert, and the next bytes parsed as a new ClientHello (review)."""
    def refusing(line: str) -> None:
        raise ConfigError("key log file is read-only")

    client = Connection(client_config())
    server = Connection(dataclasses.replace(server_config(), key_log=refusing))
    client.start()
    with pytest.raises(ConfigError, match="read-only"):
        server.receive_data(client.data_to_send())
    assert server.closed
    with pytest.raises(RemoteAlert) as seen:
        client.receive_data(server.data_to_send())
    assert seen.value.description is AlertDescription.internal_error
    with pytest.raises(ConnectionClosedError):
        server.receive_data(client.data_to_send() or b"\x16\x03\x03\x00\x01\x00")


def test_key_log_secrets_decrypt_the_server_flight() -> None:
    pair = handshake()
    line = next(x for x in pair.client_key_log if x.startswith("SERVER_TRAFFIC_SECRET_0 "))
    pair.server.send_data(b"visible to a key log reader")
    _, wire = pair.pump()
    decryptor = RecordDecryptor(suite_params(pair.client_complete.cipher_suite), bytes.fromhex(line.split()[2]))
    ((_, fragment),) = records(wire)
    assert decryptor.open(wire[:5], fragment) == (ContentType.application_data, b"visible to a key log reader")


# --- connections refuse to go on after an AlertError --------------------------------------------------


def test_alert_error_on_the_client_is_reported_as_connection_closed_event() -> None:
    pair = connect(client_config(server_name="other.example"), server_config())
    pair.server.receive_data(pair.client.data_to_send())
    with pytest.raises(AlertError):
        pair.client.receive_data(pair.server.data_to_send())
    (event,) = pair.client.events()
    assert isinstance(event, ConnectionClosed) and not event.by_peer
    assert event.alert is AlertDescription.bad_certificate


def test_message_trace_sees_every_handshake_message_in_order() -> None:
    seen: list[tuple[str, bool, int]] = []
    client_cfg = client_config(message_trace=lambda sent, raw: seen.append(("client", sent, raw[0])))
    server_cfg = server_config(message_trace=lambda sent, raw: seen.append(("server", sent, raw[0])))
    handshake(client_cfg, server_cfg)
    client_view = [(sent, kind) for who, sent, kind in seen if who == "client"]
    assert client_view == [(True, 1), (False, 2), (False, 8), (False, 11), (False, 15), (False, 20), (True, 20)]
    server_sent = [kind for who, sent, kind in seen if who == "server" and sent]
    assert server_sent == [2, 8, 11, 15, 20]


def test_alpn_is_known_before_the_handshake_completes() -> None:
    """RFC 7301: the server settles ALPN with its flight — before the client's Finished, so 0-RTT data can be
    routed by it — and the client learns it from EncryptedExtensions."""
    pair = connect(client_config(alpn=("h2", "http/1.1")), server_config(alpn=("http/1.1", "h2")))
    assert pair.client.alpn is None and pair.server.alpn is None
    pair.server.receive_data(pair.client.data_to_send())  # ClientHello -> the server's whole flight
    assert pair.server.alpn == "http/1.1" and not pair.server.handshake_complete
    pair.client.receive_data(pair.server.data_to_send())
    assert pair.client.alpn == "http/1.1"
    pair.server.receive_data(pair.client.data_to_send())
    assert pair.server.handshake_complete and pair.server.negotiated is not None
    assert pair.server.negotiated.alpn == pair.server.alpn
    plain = handshake()  # no ALPN offered: none settled
    assert plain.client.alpn is None and plain.server.alpn is None


# --- the name the client sends and checks (RFC 6066 §3, RFC 6125) ---------------------------------------


def test_sni_is_the_a_label_without_trailing_dot_and_never_an_ip_literal() -> None:
    """Bracketed IPv6 literals sent "[::1]" as SNI, non-ASCII names crashed with UnicodeEncodeError, and a
    trailing dot went on the wire (curl strips it; RFC 6066 §3: "without a trailing dot")."""
    from tlskit.handshake.client import sni_host

    assert sni_host("[::1]") is None and sni_host("::1") is None and sni_host("192.0.2.1") is None
    assert sni_host("a.example.") == "a.example" and sni_host("Example.COM") == "Example.COM"
    assert sni_host("bücher.example") == "xn--bcher-kva.example"
    for name in ("[::1]", "bücher.example", "a.example."):
        client = Connection(client_config(server_name=name))
        client.start()
        (hello,) = plaintext_handshake(client.data_to_send())
        sent = ext.extension_map(hello.extensions).get(ExtensionType.server_name)
        assert (ext.parse_server_name(sent) if sent else None) == sni_host(name)
    with pytest.raises(ConfigError, match="not a valid host name"):
        client_config(server_name="bad\u00fc..name")


def test_check_hostname_false_accepts_any_name_with_a_trusted_chain() -> None:
    """As ssl's check_hostname=False: a chain to a trusted root is enough (it still checked the name)."""
    pair = handshake(client_config(server_name="not-the-name.example", check_hostname=False), server_config())
    assert pair.client_complete is not None
    with pytest.raises(AlertError) as raised:
        handshake(client_config(server_name="not-the-name.example"), server_config())
    assert raised.value.description is AlertDescription.bad_certificate
