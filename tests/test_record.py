"""Record layer (RFC 8446 §5) against the protected records of RFC 8448 §3, plus framing and failures."""

from __future__ import annotations

import array
import hashlib

import pytest

from tests.vectors import rfc8448
from tlskit.crypto import keyschedule as ks
from tlskit.crypto.suites import SUITES, SuiteParams, suite_params
from tlskit.enums import AlertDescription, CipherSuite, ContentType
from tlskit.errors import AlertError
from tlskit.record import (
    MAX_CIPHERTEXT,
    MAX_PLAINTEXT,
    RecordDecryptor,
    RecordEncryptor,
    RecordReader,
    check_change_cipher_spec,
    plaintext_records,
)

SHA256 = suite_params(CipherSuite.TLS_AES_128_GCM_SHA256)
HS = ContentType.handshake
APP = ContentType.application_data
ALERT = ContentType.alert


def step(actor: str, action: str, occurrence: int = 0) -> dict[str, bytes]:
    return rfc8448.find(3, actor, action, occurrence).values


def _messages() -> list[bytes]:
    return [
        step("client", "construct a ClientHello")["ClientHello"],
        step("server", "construct a ServerHello")["ServerHello"],
        step("server", "construct a EncryptedExtensions")["EncryptedExtensions"],
        step("server", "construct a Certificate handshake")["Certificate"],
        step("server", "construct a CertificateVerify")["CertificateVerify"],
        step("server", "construct a Finished")["Finished"],
    ]


def _secrets() -> dict[str, bytes]:
    """The §3 traffic secrets, derived by our key schedule (checked against the RFC in test_crypto)."""
    ch, sh, *rest = _messages()
    hs = ks.EarlySecret(SHA256).handshake_secret(step("server", 'extract secret "handshake"')["IKM"])
    h_sh = hashlib.sha256(ch + sh).digest()
    h_sfin = hashlib.sha256(b"".join([ch, sh, *rest])).digest()
    master = hs.master_secret()
    return {
        "c hs": hs.client_traffic_secret(h_sh),
        "s hs": hs.server_traffic_secret(h_sh),
        "c ap": master.client_traffic_secret(h_sfin),
        "s ap": master.server_traffic_secret(h_sfin),
    }


SECRETS = _secrets()

# (secret, sequence of (actor, action, occurrence, content type)) per direction of RFC 8448 §3
_PROTECTED = [
    ("s hs", [("server", "send handshake record", 1, HS)]),
    ("c hs", [("client", "send handshake record", 1, HS)]),
    (
        "s ap",
        [
            ("server", "send handshake record", 2, HS),  # NewSessionTicket
            ("server", "send application_data record", 0, APP),
            ("server", "send alert record", 0, ALERT),
        ],
    ),
    ("c ap", [("client", "send application_data record", 0, APP), ("client", "send alert record", 0, ALERT)]),
]


@pytest.mark.parametrize(("secret_name", "records"), _PROTECTED, ids=[p[0] for p in _PROTECTED])
def test_rfc8448_s3_protected_records(
    secret_name: str, records: list[tuple[str, str, int, ContentType]]
) -> None:
    encryptor = RecordEncryptor(SHA256, SECRETS[secret_name])
    decryptor = RecordDecryptor(SHA256, SECRETS[secret_name])
    for seq, (actor, action, occurrence, content_type) in enumerate(records):
        values = step(actor, action, occurrence)
        assert encryptor.seq == seq
        assert encryptor.seal(content_type, values["payload"]) == values["complete record"]
        reader = RecordReader()
        reader.feed(values["complete record"])
        record = reader.next_record()
        assert record is not None
        outer, header, fragment = record
        assert outer == APP
        assert decryptor.open(header, fragment) == (content_type, values["payload"])
    assert encryptor.records == decryptor.seq == len(records)


def test_rfc8448_s3_server_flight_is_the_four_messages() -> None:
    _, _, *flight = _messages()
    assert step("server", "send handshake record", 1)["payload"] == b"".join(flight)


def test_rfc8448_s3_plaintext_records() -> None:
    ch = step("client", "send handshake record")
    assert plaintext_records(HS, ch["payload"], first_client_hello=True) == ch["complete record"]
    sh = step("server", "send handshake record")
    assert plaintext_records(HS, sh["payload"]) == sh["complete record"]


def test_plaintext_records_fragment() -> None:
    out = plaintext_records(HS, b"\x01" * 10, max_fragment=4)
    four = bytes.fromhex("1603030004") + b"\x01" * 4
    assert out == four + four + bytes.fromhex("1603030002") + b"\x01" * 2
    with pytest.raises(ValueError):
        plaintext_records(HS, b"")


# --- framing ----------------------------------------------------------------------------------------


def test_reader_reassembles_records_fed_byte_by_byte() -> None:
    stream = plaintext_records(HS, b"hello") + b"\x14\x03\x03\x00\x01\x01"
    reader = RecordReader()
    got = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        while (record := reader.next_record()) is not None:
            got.append(record)
    assert got == [
        (HS, b"\x16\x03\x03\x00\x05", b"hello"),
        (ContentType.change_cipher_spec, b"\x14\x03\x03\x00\x01", b"\x01"),
    ]
    assert reader.buffered == 0


@pytest.mark.parametrize("chunk", [2, 7, 9, 100, 1000, 4099])
def test_reader_gives_the_same_records_whatever_the_reads(chunk: int) -> None:
    """Records split across reads (completed from the start of the next read, whose rest stays in place) come
    out whole and in order, as from one read."""
    stream = b"".join(plaintext_records(HS, bytes([i]) * (i * 37 % 3000 + 1)) for i in range(40))
    reader, got = RecordReader(), []
    for i in range(0, len(stream), chunk):
        reader.feed(memoryview(stream)[i : i + chunk])
        if i % (3 * chunk) == 0:  # sometimes two reads before the records are taken
            continue
        while (record := reader.next_record()) is not None:
            got.append((record[0], record[1], bytes(record[2])))
    while (record := reader.next_record()) is not None:
        got.append((record[0], record[1], bytes(record[2])))
    assert got == [(t, h, bytes(f)) for t, h, f in _records(stream)]
    assert reader.buffered == 0


def test_reader_checks_the_header_of_a_record_completed_across_reads() -> None:
    """A bad header whose record completes in the next read still fails when the record is taken."""
    reader = RecordReader()
    reader.feed(b"\x16\x02\x00\x00\x04ab")  # version 0x0200, body incomplete
    reader.feed(b"cd" + plaintext_records(HS, b"next"))
    with pytest.raises(AlertError) as info:
        reader.next_record()
    assert info.value.description == AlertDescription.decode_error


def test_reader_repeats_a_header_error_found_in_a_record_completed_across_reads() -> None:
    """The bad record is not skipped: the error comes again on the next call, and nothing is taken."""
    bad = b"\x16\x03\x03\x40\x01" + b"x" * 0x4001  # a handshake record of 2^14 + 1 bytes
    reader = RecordReader()
    reader.feed(bad[:10])
    reader.feed(bad[10:] + plaintext_records(HS, b"ok"))
    for _ in range(2):
        with pytest.raises(AlertError) as info:
            reader.next_record()
        assert info.value.description == AlertDescription.record_overflow
        assert reader.buffered == len(bad) + 7


def test_reader_takes_views_of_wide_or_scattered_items_as_their_bytes() -> None:
    records = plaintext_records(HS, b"abcd") * 2
    scattered = memoryview(bytes(x for y in records[6:] for x in (y, 0)))[::2]  # not contiguous
    wide = memoryview(array.array("H", records[6:]))  # two bytes an item: len() counts items
    for view in (scattered, wide):
        reader = RecordReader()
        reader.feed(records[:6])
        reader.feed(view)
        assert reader.buffered == len(records)
        assert [bytes(reader.next_record()[2]) for _ in range(2)] == [b"abcd", b"abcd"]  # type: ignore[index]


def _records(stream: bytes) -> list[tuple[ContentType, bytes, memoryview]]:
    reader = RecordReader()
    reader.feed(stream)
    out = []
    while (record := reader.next_record()) is not None:
        out.append(record)
    return out


def test_reader_returns_several_records_from_one_feed_and_keeps_partial() -> None:
    reader = RecordReader()
    reader.feed(plaintext_records(HS, b"a" * 3) * 2 + b"\x16\x03\x03\x00\x09abc")
    assert reader.next_record() is not None
    assert reader.next_record() is not None
    assert reader.next_record() is None
    assert reader.buffered == 8


@pytest.mark.parametrize(
    ("header", "alert"),
    [
        (b"\x17\x03\x03" + (MAX_CIPHERTEXT + 1).to_bytes(2, "big"), AlertDescription.record_overflow),
        (b"\x16\x03\x03" + (MAX_PLAINTEXT + 1).to_bytes(2, "big"), AlertDescription.record_overflow),
        (b"\x18\x03\x03\x00\x01", AlertDescription.unexpected_message),
        (b"\x00\x03\x03\x00\x01", AlertDescription.unexpected_message),
        (b"\x16\x02\x00\x00\x01", AlertDescription.decode_error),
        (b"\x16\x03\x03\x00\x00", AlertDescription.unexpected_message),  # §5.1, as OpenSSL answers
        (b"\x15\x03\x03\x00\x00", AlertDescription.unexpected_message),
    ],
)
def test_reader_rejects_bad_header_before_the_body_arrives(header: bytes, alert: AlertDescription) -> None:
    reader = RecordReader()
    reader.feed(header)
    with pytest.raises(AlertError) as info:
        reader.next_record()
    assert info.value.description == alert


def test_reader_accepts_maximal_ciphertext_record() -> None:
    reader = RecordReader()
    reader.feed(b"\x17\x03\x03" + MAX_CIPHERTEXT.to_bytes(2, "big") + bytes(MAX_CIPHERTEXT))
    record = reader.next_record()
    assert record is not None and len(record[2]) == MAX_CIPHERTEXT


def test_change_cipher_spec_must_be_single_byte_one() -> None:
    check_change_cipher_spec(b"\x01")
    for bad in (b"\x02", b"\x01\x01"):
        with pytest.raises(AlertError) as info:
            check_change_cipher_spec(bad)
        assert info.value.description == AlertDescription.unexpected_message


# --- protection -------------------------------------------------------------------------------------


def _pair(params: SuiteParams, **kwargs: int) -> tuple[RecordEncryptor, RecordDecryptor]:
    secret = bytes(range(params.hash_len))
    return RecordEncryptor(params, secret, **kwargs), RecordDecryptor(params, secret)


def _split(data: bytes) -> list[tuple[bytes, bytes]]:
    reader = RecordReader()
    reader.feed(data)
    out = []
    while (record := reader.next_record()) is not None:
        out.append((record[1], bytes(record[2])))
    assert reader.buffered == 0
    return out


@pytest.mark.parametrize("suite", list(SUITES), ids=lambda s: s.name)
def test_seal_open_round_trip_fragments_at_max_plaintext(suite: CipherSuite) -> None:
    encryptor, decryptor = _pair(suite_params(suite))
    data = bytes(range(256)) * 200  # 51200 bytes -> 4 records
    records = _split(encryptor.seal(APP, data))
    assert [len(f) for _, f in records] == [MAX_PLAINTEXT + 17] * 3 + [len(data) - 3 * MAX_PLAINTEXT + 17]
    assert b"".join(decryptor.open(h, f)[1] for h, f in records) == data
    assert encryptor.seq == decryptor.seq == 4


def test_empty_application_data_record_is_allowed_but_not_empty_handshake() -> None:
    encryptor, decryptor = _pair(SHA256)
    (record,) = _split(encryptor.seal(APP, b""))
    assert decryptor.open(*record) == (APP, b"")
    with pytest.raises(ValueError):
        encryptor.seal(HS, b"")


def test_padding_and_max_fragment() -> None:
    encryptor, decryptor = _pair(SHA256, pad_to=256, max_fragment=1000)
    records = _split(encryptor.seal(HS, b"x" * 1300))
    # inner 1001 -> capped at max_fragment + 1; inner 301 -> 512
    assert [len(f) - 16 for _, f in records] == [1001, 512]
    assert b"".join(decryptor.open(h, f)[1] for h, f in records) == b"x" * 1300
    with pytest.raises(ValueError):
        RecordEncryptor(SHA256, bytes(32), max_fragment=MAX_PLAINTEXT + 1)


def test_tampered_record_is_bad_record_mac() -> None:
    encryptor, decryptor = _pair(SHA256)
    ((header, fragment),) = _split(encryptor.seal(APP, b"secret"))
    for h, f in [
        (header, fragment[:-1] + bytes([fragment[-1] ^ 1])),
        (b"\x17\x03\x01" + header[3:], fragment),  # header is the additional data
    ]:
        with pytest.raises(AlertError) as info:
            decryptor.open(h, f)
        assert info.value.description == AlertDescription.bad_record_mac
    assert decryptor.seq == 0


def test_record_out_of_order_is_bad_record_mac() -> None:
    encryptor, decryptor = _pair(SHA256)
    encryptor.seal(APP, b"first")
    ((header, fragment),) = _split(encryptor.seal(APP, b"second"))
    with pytest.raises(AlertError) as info:
        decryptor.open(header, fragment)
    assert info.value.description == AlertDescription.bad_record_mac


def _raw_record(params: SuiteParams, secret: bytes, inner: bytes, seq: int = 0) -> tuple[bytes, bytes]:
    """Protect an arbitrary TLSInnerPlaintext, bypassing RecordEncryptor's own checks."""
    key, iv = ks.traffic_key_iv(params, secret)
    header = b"\x17\x03\x03" + (len(inner) + 16).to_bytes(2, "big")
    nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
    return header, params.aead_factory(key).encrypt(nonce, inner, header)


@pytest.mark.parametrize(
    ("inner", "alert"),
    [
        (b"x" * MAX_PLAINTEXT + b"\x17\x00", AlertDescription.record_overflow),
        (bytes(100), AlertDescription.unexpected_message),
        (b"\x01\x14", AlertDescription.unexpected_message),  # protected change_cipher_spec
        (b"\x01\x63", AlertDescription.unexpected_message),  # unknown inner type
        (b"\x16\x00\x00", AlertDescription.unexpected_message),  # empty handshake content (§5.4)
    ],
)
def test_open_rejects_bad_inner_plaintext(inner: bytes, alert: AlertDescription) -> None:
    secret = bytes(32)
    with pytest.raises(AlertError) as info:
        RecordDecryptor(SHA256, secret).open(*_raw_record(SHA256, secret, inner))
    assert info.value.description == alert


def test_open_strips_padding_of_maximal_inner_plaintext() -> None:
    secret = bytes(32)
    inner = b"y" * 100 + b"\x17" + bytes(MAX_PLAINTEXT - 100)
    assert RecordDecryptor(SHA256, secret).open(*_raw_record(SHA256, secret, inner)) == (APP, b"y" * 100)


def test_encryptor_exposes_secret_for_export() -> None:
    encryptor = RecordEncryptor(SHA256, SECRETS["c ap"])
    assert (encryptor.params, encryptor.secret) == (SHA256, SECRETS["c ap"])
    next_secret = ks.next_traffic_secret(SHA256, encryptor.secret)
    sealed = RecordEncryptor(SHA256, next_secret).seal(APP, b"after update")
    assert RecordDecryptor(SHA256, next_secret).open(*_split(sealed)[0]) == (APP, b"after update")


def test_a_failed_multi_record_seal_leaves_the_sequence_number_where_it_was() -> None:
    """Data over one record's limit is sealed record by record: if one fails, none goes out, so the next record must
    take the first one's nonce (the earlier ones had advanced it: every later record failed at the peer; review)."""
    params = suite_params(CipherSuite.TLS_AES_128_GCM_SHA256)
    enc = RecordEncryptor(params, bytes(32), max_fragment=100)
    real = enc._aead

    class FailsSecond:
        calls = 0

        def encrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
            FailsSecond.calls += 1
            if FailsSecond.calls == 2:
                raise MemoryError("out of memory")
            return real.encrypt(nonce, data, aad)

    enc._aead = FailsSecond()  # type: ignore[assignment]
    with pytest.raises(MemoryError):
        enc.seal(ContentType.application_data, bytes(250))
    assert enc.seq == 0
