"""Handshake messages (RFC 8446 §4): encode/decode round trips over generated fields, strict decoding, and
the messages of RFC 8448 §3 (simple 1-RTT) and §5 (HelloRetryRequest) decoded and re-encoded byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.vectors import rfc8448
from tlskit.codec import Reader, Writer
from tlskit.enums import (
    AlertDescription,
    CipherSuite,
    ExtensionType,
    HandshakeType,
    KeyUpdateRequest,
    NamedGroup,
    ProtocolVersion,
    PskKeyExchangeMode,
    SignatureScheme,
)
from tlskit.errors import AlertError, DecodeError
from tlskit.messages import extensions as ext
from tlskit.messages.extensions import Extension, KeyShareEntry, PskIdentity
from tlskit.messages.handshake import (
    HRR_RANDOM,
    Certificate,
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    EndOfEarlyData,
    Finished,
    HandshakeBuffer,
    KeyUpdate,
    NewSessionTicket,
    ServerHello,
    decode_handshake,
)

FAST = settings(max_examples=60, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def opaque(max_size: int, min_size: int = 0) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


@st.composite
def extension_blocks(draw, allowed: st.SearchStrategy[int] = u16) -> tuple[Extension, ...]:
    types = draw(st.lists(allowed, unique=True, max_size=6))
    return tuple(Extension(ExtensionType(t), draw(opaque(40))) for t in types)


client_hellos = st.builds(
    ClientHello,
    legacy_version=u16,
    random=opaque(32, 32),
    legacy_session_id=opaque(32),
    cipher_suites=st.lists(u16.map(CipherSuite), min_size=1, max_size=8).map(tuple),
    legacy_compression_methods=opaque(8, 1),
    extensions=extension_blocks(),
)
server_hellos = st.builds(
    ServerHello,
    legacy_version=u16,
    random=opaque(32, 32),
    legacy_session_id=opaque(32),
    cipher_suite=u16.map(CipherSuite),
    legacy_compression_method=u8,
    extensions=extension_blocks(),
)
certificates = st.builds(
    Certificate,
    context=opaque(255),
    entries=st.lists(
        st.builds(CertificateEntry, cert_data=opaque(300, 1), extensions=extension_blocks()), max_size=4
    ).map(tuple),
)
new_session_tickets = st.builds(
    NewSessionTicket,
    lifetime=st.integers(0, 604800),
    age_add=u32,
    nonce=opaque(255),
    ticket=opaque(300, 1),
    extensions=st.one_of(
        # unknown code points (ignored); a recognised one other than early_data is illegal_parameter (§4.2)
        extension_blocks(u16.filter(lambda t: ExtensionType.of(t).name.startswith("unknown_"))),
        u32.map(lambda n: (Extension(ExtensionType.early_data, n.to_bytes(4, "big")),)),
    ),
)
any_message = st.one_of(
    client_hellos,
    server_hellos,
    certificates,
    new_session_tickets,
    st.builds(EncryptedExtensions, extensions=extension_blocks()),
    st.builds(CertificateRequest, context=opaque(255), extensions=extension_blocks()),
    st.builds(CertificateVerify, algorithm=u16.map(SignatureScheme), signature=opaque(600, 1)),
    st.builds(Finished, verify_data=st.sampled_from([32, 48]).flatmap(lambda n: opaque(n, n))),
    st.just(EndOfEarlyData()),
    st.builds(KeyUpdate, request_update=st.sampled_from(list(KeyUpdateRequest))),
)


def _round_trip(message):
    wire = message.encode()
    assert wire[0] == message.TYPE
    assert int.from_bytes(wire[1:4], "big") == len(wire) - 4
    decoded = decode_handshake(wire[0], wire[4:])
    assert decoded == message
    assert decoded.encode() == wire
    return decoded


@FAST
@given(client_hellos)
def test_client_hello_round_trips(message) -> None:
    _round_trip(message)


@FAST
@given(server_hellos)
def test_server_hello_round_trips(message) -> None:
    decoded = _round_trip(message)
    assert decoded.is_hello_retry_request == (message.random == HRR_RANDOM)


@FAST
@given(certificates)
def test_certificate_round_trips(message) -> None:
    _round_trip(message)


@FAST
@given(new_session_tickets)
def test_new_session_ticket_round_trips(message) -> None:
    _round_trip(message)


@settings(max_examples=150, deadline=None)
@given(any_message)
def test_every_handshake_message_round_trips(message) -> None:
    _round_trip(message)


@FAST
@given(any_message, st.data())
def test_handshake_buffer_reassembles_any_fragmentation(message, data) -> None:
    wire = message.encode() * 2
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    buf = HandshakeBuffer()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        buf.feed(wire[start:end])
        while (m := buf.next_message()) is not None:
            got.append(m)
    assert [raw for _, _, raw in got] == [message.encode()] * 2
    assert not buf


def test_handshake_buffer_reassembles_in_place_and_keeps_no_caller_buffer() -> None:
    """A message arriving a byte at a time is appended to one buffer (linear work, not a copy of everything
    so far per record), and a caller's reused bytearray never aliases what is buffered."""
    message = bytes((HandshakeType.certificate, 0, 1, 0)) + bytes(range(256))
    buf = HandshakeBuffer()
    scratch = bytearray(message[:1])
    buf.feed(scratch)
    scratch[0] = 0x63  # the caller reuses its buffer
    buf.feed(message[1:2])
    reassembly = buf._buf
    for i in range(2, len(message)):
        assert buf.next_message() is None
        buf.feed(message[i : i + 1])
        assert buf._buf is reassembly  # appended in place
    assert buf.next_message() == (HandshakeType.certificate, message[4:], message)
    assert not buf


# --- strict decoding ----------------------------------------------------------------------------------


@FAST
@given(any_message, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_decode_error(message, extra) -> None:
    wire = message.encode()
    with pytest.raises(DecodeError):
        decode_handshake(wire[0], wire[4:] + extra)


@FAST
@given(any_message.filter(lambda m: not isinstance(m, (EndOfEarlyData, Finished))), st.data())
def test_truncated_bodies_are_decode_error(message, data) -> None:
    body = message.encode()[4:]
    cut = data.draw(st.integers(0, len(body) - 1))
    if isinstance(message, (ClientHello, ServerHello)):
        # Cut exactly before the extension block, a hello is a valid pre-TLS 1.3 hello (§4.1.2).
        assume(cut != len(body) - 2 - sum(4 + len(e.data) for e in message.extensions))
    with pytest.raises(AlertError) as info:
        decode_handshake(message.TYPE, body[:cut])
    assert info.value.description is AlertDescription.decode_error


def test_duplicate_extension_is_illegal_parameter() -> None:
    w = Writer()
    with w.prefixed(2):
        for _ in range(2):
            w.u16(ExtensionType.server_name)
            w.vector(2, b"")
    with pytest.raises(AlertError) as info:
        EncryptedExtensions.decode(w.getvalue())
    assert info.value.description is AlertDescription.illegal_parameter


def test_unknown_handshake_type_is_unexpected_message() -> None:
    with pytest.raises(AlertError) as info:
        decode_handshake(0x63, b"")
    assert info.value.description is AlertDescription.unexpected_message


@pytest.mark.parametrize("size", [0, 31, 33, 47, 49, 64])
def test_finished_of_a_length_no_suite_uses_is_decode_error(size) -> None:
    with pytest.raises(DecodeError):
        Finished.decode(bytes(size))


def test_key_update_with_an_unknown_request_is_illegal_parameter() -> None:
    with pytest.raises(AlertError) as info:
        KeyUpdate.decode(b"\x02")
    assert info.value.description is AlertDescription.illegal_parameter


def test_end_of_early_data_with_a_body_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        EndOfEarlyData.decode(b"\x00")


def test_new_session_ticket_lifetime_over_seven_days_is_illegal_parameter() -> None:
    body = NewSessionTicket(lifetime=604801, age_add=0, nonce=b"", ticket=b"t").encode()[4:]
    with pytest.raises(AlertError) as info:
        NewSessionTicket.decode(body)
    assert info.value.description is AlertDescription.illegal_parameter


def test_new_session_ticket_early_data_must_hold_four_bytes() -> None:
    bad = NewSessionTicket(
        lifetime=1, age_add=0, nonce=b"", ticket=b"t", extensions=(Extension(ExtensionType.early_data, b"\x00"),)
    )
    with pytest.raises(DecodeError):
        NewSessionTicket.decode(bad.encode()[4:])


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00\x00", b"\x00\x01" + bytes(32)],  # empty ticket, missing fields
)
def test_malformed_new_session_ticket_is_decode_error(body) -> None:
    with pytest.raises(DecodeError):
        NewSessionTicket.decode(body)


def test_empty_certificate_entry_is_decode_error() -> None:
    body = b"\x00" + b"\x00\x00\x05" + b"\x00\x00\x00" + b"\x00\x00"
    with pytest.raises(DecodeError):
        Certificate.decode(body)


def test_client_hello_without_extension_block_decodes_as_legacy_hello() -> None:
    hello = ClientHello(random=bytes(32), legacy_session_id=b"", cipher_suites=(CipherSuite(0x002F),), extensions=())
    body = hello.encode()[4:-2]  # drop the empty extensions block, as a TLS 1.0 client might
    assert ClientHello.decode(body) == hello


@pytest.mark.parametrize(
    "body",
    [
        b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x03\x13\x01\x00" + b"\x01\x00",  # odd suites length
        b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x00" + b"\x01\x00",  # no cipher suites
        b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x00",  # no compression methods
        b"\x03\x03" + bytes(32) + b"\x21" + bytes(33) + b"\x00\x02\x13\x01\x01\x00",  # session id > 32
    ],
)
def test_malformed_client_hello_is_decode_error(body) -> None:
    with pytest.raises(DecodeError):
        ClientHello.decode(body)


def test_unknown_code_points_survive_decoding() -> None:
    hello = ClientHello(
        random=bytes(32),
        legacy_session_id=b"",
        cipher_suites=(CipherSuite(0x1301), CipherSuite(0xEEEE)),
        extensions=(Extension(ExtensionType(0xFAFA), b"grease"),),
    )
    decoded = ClientHello.decode(hello.encode()[4:])
    assert decoded.cipher_suites[1] == 0xEEEE and decoded.cipher_suites[1].name == "unknown_0xeeee"
    assert decoded.extensions[0].type == 0xFAFA


def test_unknown_code_points_are_cached_and_bounded() -> None:
    """A TLS 1.2 client's extensions are unknown to us on every handshake: one pseudo-member each, reused, and
    a peer cycling through values cannot make the cache grow past its bound."""
    from tlskit import enums

    first = ExtensionType.of(0x3377)
    assert first is ExtensionType.of(0x3377) and first.name == "unknown_0x3377" and first == 0x3377
    for value in range(0x4000, 0x4000 + 3 * enums._UNKNOWN_CACHED):
        member = ExtensionType.of(value)  # still answered past the bound, just not remembered
        assert isinstance(member, ExtensionType) and member == value and member.name == f"unknown_{value:#06x}"
    assert ExtensionType(0x7777).name == "unknown_0x7777" and ExtensionType(0x7777) == 0x7777  # (Enum's own way)
    known = len(ExtensionType._value2member_map_)
    assert len(enums.member_lookup(ExtensionType)) == known + enums._UNKNOWN_CACHED
    assert ExtensionType.of(ExtensionType.key_share) is ExtensionType.key_share


# --- extension bodies -----------------------------------------------------------------------------------


@FAST
@given(st.lists(u16, min_size=1, max_size=20))
def test_u16_list_extensions_round_trip(values) -> None:
    assert ext.parse_supported_groups(ext.supported_groups_body(map(NamedGroup, values))) == values
    assert ext.parse_signature_algorithms(ext.signature_algorithms_body(map(SignatureScheme, values))) == values
    versions = values[:100]
    assert ext.parse_supported_versions_client(ext.supported_versions_client_body(versions)) == versions


@FAST
@given(st.lists(st.tuples(u16, opaque(100, 1)), max_size=4, unique_by=lambda t: t[0]))
def test_key_share_client_round_trips(entries) -> None:
    shares = [KeyShareEntry(NamedGroup(g), k) for g, k in entries]
    assert ext.parse_key_share_client(ext.key_share_client_body(shares)) == shares


def test_key_share_client_with_a_group_twice_is_illegal_parameter() -> None:
    body = ext.key_share_client_body([KeyShareEntry(NamedGroup.x25519, b"a"), KeyShareEntry(NamedGroup.x25519, b"b")])
    with pytest.raises(AlertError) as info:
        ext.parse_key_share_client(body)
    assert info.value.description is AlertDescription.illegal_parameter


@FAST
@given(st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789/.-", min_size=1, max_size=20), min_size=1, max_size=5))
def test_alpn_round_trips(protocols) -> None:
    assert ext.parse_alpn(ext.alpn_body(protocols)) == protocols


@pytest.mark.parametrize("host", ["localhost", "a.example.com", "xn--bcher-kva.example"])
def test_server_name_round_trips(host) -> None:
    assert ext.parse_server_name(ext.server_name_body(host)) == host
    assert ext.parse_server_name(b"") is None


def test_a_trailing_dot_on_the_server_name_is_dropped() -> None:
    """RFC 6066 §3 says clients send none; OpenSSL and nginx accept one (s_client -servername localhost.)."""
    assert ext.parse_server_name(ext.server_name_body("localhost.")) == "localhost"


@pytest.mark.parametrize("host", [b".", b"two.dots..", b"nul\x00byte", "ünïcode".encode()])
def test_bad_server_names_are_illegal_parameter(host) -> None:
    w = Writer()
    with w.prefixed(2):
        w.u8(0)
        w.vector(2, host)
    with pytest.raises(AlertError) as info:
        ext.parse_server_name(w.getvalue())
    assert info.value.description is AlertDescription.illegal_parameter


@pytest.mark.parametrize("limit", [64, 256, 16385])
def test_record_size_limit_round_trips(limit) -> None:
    assert ext.parse_record_size_limit(ext.record_size_limit_body(limit)) == limit


def test_record_size_limit_below_64_is_illegal_parameter() -> None:
    with pytest.raises(AlertError) as info:
        ext.parse_record_size_limit(ext.record_size_limit_body(63))
    assert info.value.description is AlertDescription.illegal_parameter


def test_small_extension_bodies_round_trip() -> None:
    assert ext.parse_cookie(ext.cookie_body(b"biscuit")) == b"biscuit"
    assert ext.parse_key_share_hrr(ext.key_share_hrr_body(NamedGroup.secp256r1)) is NamedGroup.secp256r1
    share = KeyShareEntry(NamedGroup.x25519, bytes(range(32)))
    assert ext.parse_key_share_server(ext.key_share_server_body(share)) == share
    assert ext.parse_supported_versions_server(ext.supported_versions_server_body(ProtocolVersion.TLS1_3)) == 0x0304
    modes = [PskKeyExchangeMode.psk_dhe_ke, PskKeyExchangeMode.psk_ke]
    assert ext.parse_psk_modes(ext.psk_modes_body(modes)) == modes
    assert ext.parse_early_data_nst(ext.early_data_nst_body(12345)) == 12345
    assert ext.parse_certificate_status(ext.certificate_status_body(b"ocsp")) == b"ocsp"
    assert ext.parse_status_request(ext.status_request_body()) == 1
    names = [b"0\x00", b"0\x01x"]
    assert ext.parse_certificate_authorities(ext.certificate_authorities_body(names)) == names
    assert ext.parse_selected_psk(ext.selected_psk_body(3)) == 3


def test_offered_psks_round_trip_with_zeroed_binders() -> None:
    identities = [PskIdentity(b"ticket-1", 1000), PskIdentity(b"t2", 0)]
    body = ext.offered_psks_body(identities, [32, 48])
    parsed = ext.parse_offered_psks(body)
    assert parsed.identities == tuple(identities)
    assert parsed.binders == (bytes(32), bytes(48))
    binders = (33 + 49).to_bytes(2, "big") + b"\x20" + bytes(32) + b"\x30" + bytes(48)
    assert ext.binders_length([32, 48]) == len(binders) and body.endswith(binders)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x17\x00", b"\x00\x03\x00\x17\x00"])
def test_malformed_u16_lists_are_decode_error(data) -> None:
    with pytest.raises(DecodeError):
        ext.parse_supported_groups(data)


def test_writer_back_patches_nested_lengths_and_reader_finish_catches_slack() -> None:
    w = Writer()
    with w.prefixed(3):
        with w.prefixed(1):
            w.raw(b"abc")
        w.u16(7)
    assert w.getvalue() == b"\x00\x00\x06\x03abc\x00\x07"
    r = Reader(w.getvalue())
    inner = r.sub(3)
    assert inner.vector(1) == b"abc"
    with pytest.raises(DecodeError):
        inner.finish()
    assert inner.u16() == 7
    inner.finish()
    r.finish()


# --- RFC 8448 §3 and §5: decode and re-encode byte for byte ----------------------------------------------

_RFC8448_MESSAGES = [
    (3, "client", "ClientHello", 0, ClientHello),
    (3, "server", "ServerHello", 0, ServerHello),
    (3, "server", "EncryptedExtensions", 0, EncryptedExtensions),
    (3, "server", "Certificate", 0, Certificate),
    (3, "server", "CertificateVerify", 0, CertificateVerify),
    (3, "server", "Finished", 0, Finished),
    (3, "client", "Finished", 0, Finished),
    (3, "server", "NewSessionTicket", 0, NewSessionTicket),
    (5, "client", "ClientHello", 0, ClientHello),
    (5, "server", "ServerHello", 0, ServerHello),  # the HelloRetryRequest
    (5, "client", "ClientHello", 1, ClientHello),
    (5, "server", "ServerHello", 1, ServerHello),
    (5, "server", "EncryptedExtensions", 0, EncryptedExtensions),
    (5, "server", "Certificate", 0, Certificate),
    (5, "server", "CertificateVerify", 0, CertificateVerify),
    (5, "server", "Finished", 0, Finished),
    (5, "client", "Finished", 0, Finished),
]


def _rfc8448(section: int, actor: str, name: str, occurrence: int) -> bytes:
    heading = f"construct a{'n' if name[0] in 'AEIOU' and name != 'EncryptedExtensions' else ''} {name}"
    step = rfc8448.find(section, actor, f"{heading} handshake message", occurrence)
    return step.values[name]


@pytest.mark.parametrize(
    ("section", "actor", "name", "occurrence", "cls"),
    _RFC8448_MESSAGES,
    ids=[f"s{s}-{a}-{n}-{o}" for s, a, n, o, _ in _RFC8448_MESSAGES],
)
def test_rfc8448_message_decodes_and_reencodes_byte_exact(section, actor, name, occurrence, cls) -> None:
    wire = _rfc8448(section, actor, name, occurrence)
    message = decode_handshake(wire[0], wire[4:])
    assert type(message) is cls
    assert int.from_bytes(wire[1:4], "big") == len(wire) - 4
    assert message.encode() == wire


def test_rfc8448_section3_client_hello_fields() -> None:
    hello = ClientHello.decode(_rfc8448(3, "client", "ClientHello", 0)[4:])
    assert hello.legacy_version == ProtocolVersion.TLS1_2 and hello.legacy_session_id == b""
    assert hello.cipher_suites == (0x1301, 0x1303, 0x1302)
    exts = ext.extension_map(hello.extensions)
    assert ext.parse_server_name(exts[ExtensionType.server_name]) == "server"
    assert ext.parse_supported_versions_client(exts[ExtensionType.supported_versions]) == [0x0304]
    (share,) = ext.parse_key_share_client(exts[ExtensionType.key_share])
    public = rfc8448.find(3, "client", "create an ephemeral x25519 key pair").values["public key"]
    assert share == KeyShareEntry(NamedGroup.x25519, public)
    assert ext.parse_record_size_limit(exts[ExtensionType.record_size_limit]) == 0x4001
    assert ext.parse_psk_modes(exts[ExtensionType.psk_key_exchange_modes]) == [PskKeyExchangeMode.psk_dhe_ke]


def test_rfc8448_section3_server_flight_fields() -> None:
    sh = ServerHello.decode(_rfc8448(3, "server", "ServerHello", 0)[4:])
    assert sh.cipher_suite is CipherSuite.TLS_AES_128_GCM_SHA256 and not sh.is_hello_retry_request
    exts = ext.extension_map(sh.extensions)
    assert ext.parse_supported_versions_server(exts[ExtensionType.supported_versions]) == 0x0304
    public = rfc8448.find(3, "server", "create an ephemeral x25519 key pair").values["public key"]
    assert ext.parse_key_share_server(exts[ExtensionType.key_share]) == KeyShareEntry(NamedGroup.x25519, public)
    cert = Certificate.decode(_rfc8448(3, "server", "Certificate", 0)[4:])
    assert cert.context == b"" and len(cert.entries) == 1 and cert.entries[0].cert_data[:2] == b"\x30\x82"
    cv = CertificateVerify.decode(_rfc8448(3, "server", "CertificateVerify", 0)[4:])
    assert cv.algorithm is SignatureScheme.rsa_pss_rsae_sha256 and len(cv.signature) == 128
    nst = NewSessionTicket.decode(_rfc8448(3, "server", "NewSessionTicket", 0)[4:])
    assert nst.lifetime == 30 and nst.nonce == b"\x00\x00"
    assert ext.parse_early_data_nst(ext.extension_map(nst.extensions)[ExtensionType.early_data]) == 1024


def test_rfc8448_section5_hello_retry_request_fields() -> None:
    hrr = ServerHello.decode(_rfc8448(5, "server", "ServerHello", 0)[4:])
    assert hrr.is_hello_retry_request
    exts = ext.extension_map(hrr.extensions)
    assert ext.parse_key_share_hrr(exts[ExtensionType.key_share]) is NamedGroup.secp256r1
    cookie = ext.parse_cookie(exts[ExtensionType.cookie])
    second = ClientHello.decode(_rfc8448(5, "client", "ClientHello", 1)[4:])
    second_exts = ext.extension_map(second.extensions)
    assert ext.parse_cookie(second_exts[ExtensionType.cookie]) == cookie
    (share,) = ext.parse_key_share_client(second_exts[ExtensionType.key_share])
    assert share.group is NamedGroup.secp256r1 and len(share.key_exchange) == 65
    assert ExtensionType.early_data not in second_exts


def test_rfc8448_section3_records_carry_the_messages() -> None:
    record = rfc8448.find(3, "client", "send handshake record").values["complete record"]
    assert record[:5] == b"\x16\x03\x01\x00\xc4"
    assert record[5:] == _rfc8448(3, "client", "ClientHello", 0)
    assert HandshakeType(record[5]) is HandshakeType.client_hello
