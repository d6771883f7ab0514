"""Paired in-memory client and server connections for the engine tests (DESIGN §6 "Paired").

    pair = handshake(client_config(), server_config())       # runs to HandshakeComplete on both sides
    pair.client.send_data(b"ping"); pair.pump()               # shuttles bytes until both sides are quiet
    alert = plaintext_alert(conn.data_to_send())              # the alert a failing side put on the wire

Certificates are made once per test session: one root CA and one ``localhost`` leaf per key type
(``certified("rsa2048")``), plus a leaf whose SubjectPublicKeyInfo carries the id-RSASSA-PSS OID
(``pss_oid_certified()``, RFC 8446 §4.2.3 rsa_pss_pss_*). ``capture_server_flight`` opens the server's
encrypted first flight with the secret from its key log so that a test can change one handshake message
and seal the flight again (a tampered Finished must fail on its verify_data, not on the record MAC).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.certs import Issued, KeyType, make_ca, make_leaf
from tlskit.config import CertifiedKey, ClientConfig, ServerConfig
from tlskit.connection import Connection
from tlskit.crypto import groups
from tlskit.crypto.suites import SuiteParams, suite_params
from tlskit.enums import (
    AlertDescription,
    ContentType,
    ExtensionType,
    NamedGroup,
    ProtocolVersion,
    SignatureScheme,
)
from tlskit.errors import AlertError, RemoteAlert, TLSError
from tlskit.events import Event, HandshakeComplete
from tlskit.handshake.client import build_client_hello
from tlskit.messages import extensions as ext
from tlskit.messages.extensions import Extension, KeyShareEntry
from tlskit.messages.handshake import ClientHello, HandshakeMessage, ServerHello, decode_handshake
from tlskit.pki.verify import TrustStore
from tlskit.record import RecordDecryptor, RecordEncryptor, plaintext_records

NAME = "localhost"
CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"
KEY_LOG_LABELS = (
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET",
)


# --- certificates, made once per session ---------------------------------------------------------------


@functools.cache
def root() -> Issued:
    return make_ca("tlskit paired-test root")


@functools.cache
def other_root() -> Issued:
    """A CA the client does not trust (unknown_ca)."""
    return make_ca("tlskit untrusted root")


@functools.cache
def trust() -> TrustStore:
    return TrustStore(roots=(root().cert,))


@functools.cache
def leaf(key_type: KeyType = "ec256", names: tuple[str, ...] = (NAME,)) -> Issued:
    return make_leaf(root(), names, key_type=key_type)


@functools.cache
def certified(key_type: KeyType = "ec256", names: tuple[str, ...] = (NAME,)) -> CertifiedKey:
    issued = leaf(key_type, names)
    return CertifiedKey(chain=(issued.der,), private_key=issued.key)


_RSA_ENCRYPTION_ALG = bytes.fromhex("300d06092a864886f70d0101010500")  # rsaEncryption, NULL params
_RSASSA_PSS_ALG = bytes.fromhex("300b06092a864886f70d01010a")  # id-RSASSA-PSS, parameters absent


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def _der_children(data: bytes) -> list[bytes]:
    """The TLVs directly inside ``data`` (a constructed value's contents)."""
    out, pos = [], 0
    while pos < len(data):
        length, head = data[pos + 1], 2
        if length & 0x80:
            head = 2 + (length & 0x7F)
            length = int.from_bytes(data[pos + 2 : pos + head], "big")
        out.append(data[pos : pos + head + length])
        pos += head + length
    return out


def _der_contents(tlv: bytes) -> bytes:
    head = 2 + (tlv[1] & 0x7F if tlv[1] & 0x80 else 0)
    return tlv[head:]


@functools.cache
def rsa_leaf_with_spki_algorithm(algorithm: bytes) -> bytes:
    """The RSA ``localhost`` leaf (DER) with its SPKI AlgorithmIdentifier replaced by ``algorithm`` and the
    TBSCertificate signed again by ``root()`` (``cryptography`` cannot build such certificates)."""
    issued = leaf("rsa2048")
    fields = []
    for tlv in _der_children(_der_contents(issued.cert.tbs_certificate_bytes)):
        if tlv.startswith(b"\x30") and _RSA_ENCRYPTION_ALG in tlv:
            old, public_key = _der_children(_der_contents(tlv))
            assert old == _RSA_ENCRYPTION_ALG
            tlv = _der(0x30, algorithm + public_key)
        fields.append(tlv)
    tbs = _der(0x30, b"".join(fields))
    ca = root()
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    signature = ca.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    _, signature_algorithm, _ = _der_children(
        _der_contents(issued.cert.public_bytes(serialization.Encoding.DER))
    )
    return _der(0x30, tbs + signature_algorithm + _der(0x03, b"\x00" + signature))


def pss_oid_leaf() -> tuple[bytes, Issued]:
    """A ``localhost`` leaf whose SPKI algorithm is id-RSASSA-PSS (RFC 4055), and the RSA key it certifies."""
    der = rsa_leaf_with_spki_algorithm(_RSASSA_PSS_ALG)
    assert x509.load_der_x509_certificate(der).public_key_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"
    return der, leaf("rsa2048")


def pss_oid_certified(schemes: Sequence[SignatureScheme] = ()) -> CertifiedKey:
    der, issued = pss_oid_leaf()
    return CertifiedKey(chain=(der,), private_key=issued.key, schemes=tuple(schemes))


# --- configs -----------------------------------------------------------------------------------------


def client_config(**overrides: object) -> ClientConfig:
    """A client for ``localhost`` that trusts ``root()``; keyword arguments replace any field."""
    settings: dict[str, object] = {"server_name": NAME, "trust": trust()}
    settings.update(overrides)
    return ClientConfig(**settings)  # type: ignore[arg-type]


def server_config(**overrides: object) -> ServerConfig:
    """A server with the ECDSA P-256 ``localhost`` certificate; keyword arguments replace any field."""
    settings: dict[str, object] = {"certificates": (certified("ec256"),)}
    settings.update(overrides)
    return ServerConfig(**settings)  # type: ignore[arg-type]


class DeterministicRandom:
    """Injected randomness that repeats run after run, so a ClientHello and the flight answering it
    can be recorded once and replayed into fresh connections."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._seed + self._counter.to_bytes(8, "big")).digest(n)


# --- moving bytes ---------------------------------------------------------------------------------------


def _deliver(data: bytes, to: Connection, chunk: int | None) -> None:
    if chunk is None:
        to.receive_data(data)
        return
    for i in range(0, len(data), chunk):
        to.receive_data(data[i : i + chunk])


def pump(client: Connection, server: Connection, *, chunk: int | None = None) -> tuple[bytes, bytes]:
    """Shuttle bytes until neither side has anything to send; ``chunk`` splits each delivery.

    Returns everything that went client→server and server→client, for tests that look at the wire.
    """
    to_server, to_client = bytearray(), bytearray()
    for _ in range(1000):
        a = client.data_to_send()
        if a:
            to_server += a
            _deliver(a, server, chunk)
        b = server.data_to_send()
        if b:
            to_client += b
            _deliver(b, client, chunk)
        if not a and not b:
            return bytes(to_server), bytes(to_client)
    raise AssertionError("connections never went quiet")


@dataclass
class Pair:
    """A client and a server after ``handshake()``, with what went over the wire and the events seen."""

    client: Connection
    server: Connection
    to_server: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    client_key_log: list[str] = field(default_factory=list)
    server_key_log: list[str] = field(default_factory=list)

    def pump(self, *, chunk: int | None = None) -> tuple[bytes, bytes]:
        """Shuttle bytes until quiet; returns (client→server, server→client) of this call."""
        a, b = pump(self.client, self.server, chunk=chunk)
        self.to_server += a
        self.to_client += b
        return a, b

    def collect(self) -> tuple[list[Event], list[Event]]:
        """Events since the last call (client's, server's); also appended to the running lists."""
        c, s = self.client.events(), self.server.events()
        self.client_events += c
        self.server_events += s
        return c, s

    @property
    def client_complete(self) -> HandshakeComplete:
        return _complete(self.client_events)

    @property
    def server_complete(self) -> HandshakeComplete:
        return _complete(self.server_events)


def _complete(events: Iterable[Event]) -> HandshakeComplete:
    found = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(found) == 1, f"expected one HandshakeComplete, got {events!r}"
    return found[0]


def connect(client_cfg: ClientConfig, server_cfg: ServerConfig) -> Pair:
    """Two fresh connections whose key logs go into the returned ``Pair``; the client is started."""
    c_log: list[str] = []
    s_log: list[str] = []
    client = Connection(dataclasses.replace(client_cfg, key_log=c_log.append))
    server = Connection(dataclasses.replace(server_cfg, key_log=s_log.append))
    client.start()
    return Pair(client, server, client_key_log=c_log, server_key_log=s_log)


def handshake(
    client_cfg: ClientConfig | None = None, server_cfg: ServerConfig | None = None, *, chunk: int | None = None
) -> Pair:
    """Run a full handshake in memory and check both sides reached HandshakeComplete."""
    pair = connect(client_cfg or client_config(), server_cfg or server_config())
    pair.pump(chunk=chunk)
    pair.collect()
    assert pair.client.handshake_complete and pair.server.handshake_complete
    return pair


# --- looking at the wire ---------------------------------------------------------------------------------


def records(wire: bytes) -> list[tuple[int, bytes]]:
    """(content type, fragment) of each record in ``wire``; the framing must be exact."""
    out, pos = [], 0
    while pos < len(wire):
        assert len(wire) - pos >= 5, "truncated record header"
        length = int.from_bytes(wire[pos + 3 : pos + 5], "big")
        assert pos + 5 + length <= len(wire), "truncated record"
        out.append((wire[pos], wire[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    return out


def handshake_messages(data: bytes) -> list[HandshakeMessage]:
    """Decode a concatenation of whole handshake messages."""
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos + 1 : pos + 4], "big")
        out.append(decode_handshake(data[pos], data[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return out


def plaintext_handshake(wire: bytes) -> list[HandshakeMessage]:
    """The handshake messages in the unprotected handshake records of ``wire``."""
    return handshake_messages(b"".join(f for t, f in records(wire) if t == ContentType.handshake))


def plaintext_alert(wire: bytes) -> AlertDescription:
    """``wire`` must be exactly one unprotected fatal alert record (§6); returns its description."""
    assert len(wire) == 7, f"expected one plaintext alert record, got {wire.hex()}"
    assert wire[:5] == b"\x15\x03\x03\x00\x02", f"not a plaintext alert record: {wire.hex()}"
    assert wire[5] == 2, "alert level must be fatal"
    return AlertDescription(wire[6])


def alert_seen_by_peer(wire: bytes, peer: Connection) -> AlertDescription:
    """Deliver a protected alert to ``peer``, which must decrypt it and raise ``RemoteAlert``."""
    with pytest.raises(RemoteAlert) as info:
        peer.receive_data(wire)
    return info.value.description


def fails_with(
    conn: Connection, data: bytes, description: AlertDescription, error: type[TLSError] = AlertError
) -> bytes:
    """``conn.receive_data(data)`` must raise ``error`` carrying ``description``; returns the bytes
    the failing side queued (the alert)."""
    with pytest.raises(error) as info:
        conn.receive_data(data)
    assert info.value.description is description, str(info.value)  # type: ignore[attr-defined]
    assert conn.closed
    return conn.data_to_send()


# --- crafting messages ------------------------------------------------------------------------------------


def handshake_record(message: bytes) -> bytes:
    return plaintext_records(ContentType.handshake, message)


def craft_client_hello(
    config: ClientConfig | None = None,
    *,
    drop: Iterable[ExtensionType] = (),
    extra: Iterable[Extension] = (),
    **fields: object,
) -> ClientHello:
    """A ClientHello as ``config`` would send it, minus ``drop`` and plus ``extra`` extensions; ``fields``
    replace ClientHello fields."""
    config = config or client_config()
    shares = [groups.client_key_share(g, os.urandom) for g in config.key_shares]
    hello = build_client_hello(config, os.urandom(32), os.urandom(32), shares)
    dropped = set(drop)
    exts = tuple(e for e in hello.extensions if e.type not in dropped) + tuple(extra)
    return dataclasses.replace(hello, extensions=exts, **fields)  # type: ignore[arg-type]


def started_client(config: ClientConfig | None = None) -> tuple[Connection, ClientHello]:
    """A client that has sent its ClientHello (drained) and the ClientHello it sent."""
    client = Connection(config or client_config())
    client.start()
    (hello,) = plaintext_handshake(client.data_to_send())
    assert isinstance(hello, ClientHello)
    return client, hello


def craft_server_hello(
    hello: ClientHello,
    *,
    random: bytes | None = None,
    extensions: tuple[Extension, ...] | None = None,
    **fields: object,
) -> ServerHello:
    """A well-formed ServerHello answering ``hello`` (first suite, first key share) unless overridden."""
    share = ext.parse_key_share_client(ext.extension_map(hello.extensions)[ExtensionType.key_share])[0]
    if extensions is None:
        server_share, _ = groups.server_key_share(share.group, share.key_exchange, os.urandom)
        extensions = (
            Extension(ExtensionType.key_share, ext.key_share_server_body(KeyShareEntry(share.group, server_share))),
            Extension(
                ExtensionType.supported_versions, ext.supported_versions_server_body(ProtocolVersion.TLS1_3)
            ),
        )
    settings: dict[str, object] = {
        "random": random if random is not None else os.urandom(32),
        "legacy_session_id": hello.legacy_session_id,
        "cipher_suite": hello.cipher_suites[0],
        "extensions": extensions,
    }
    settings.update(fields)
    return ServerHello(**settings)  # type: ignore[arg-type]


def hello_retry_request(hello: ClientHello, group: NamedGroup, *, cookie: bytes | None = None) -> bytes:
    """An encoded HelloRetryRequest (§4.1.4) asking ``hello``'s sender for a ``group`` share."""
    from tlskit.messages.handshake import HRR_RANDOM

    exts = [
        Extension(ExtensionType.key_share, ext.key_share_hrr_body(group)),
        Extension(ExtensionType.supported_versions, ext.supported_versions_server_body(ProtocolVersion.TLS1_3)),
    ]
    if cookie is not None:
        exts.append(Extension(ExtensionType.cookie, ext.cookie_body(cookie)))
    return craft_server_hello(hello, random=HRR_RANDOM, extensions=tuple(exts)).encode()


# --- re-sealing a server's first flight ---------------------------------------------------------------


def key_log_secret(lines: Sequence[str], label: str) -> bytes:
    (line,) = [x for x in lines if x.startswith(label + " ")]
    return bytes.fromhex(line.split()[2])


@dataclass
class ServerFlight:
    """The server's first flight split into its plaintext part (ServerHello, maybe a ChangeCipherSpec) and
    the decrypted handshake messages that follow (EncryptedExtensions ... Finished)."""

    plaintext: bytes
    messages: bytes
    params: SuiteParams
    secret: bytes  # server_handshake_traffic_secret

    def wire(self, messages: bytes | None = None) -> bytes:
        """The flight with ``messages`` (default: the original ones) sealed again under the same key."""
        encryptor = RecordEncryptor(self.params, self.secret)
        return self.plaintext + encryptor.seal(
            ContentType.handshake, self.messages if messages is None else messages
        )

    def replace(self, index: int, new_message: bytes) -> bytes:
        """The flight with handshake message ``index`` (0 = EncryptedExtensions) replaced, sealed again."""
        parts = split_messages(self.messages)
        parts[index] = new_message
        return self.wire(b"".join(parts))


def split_messages(data: bytes) -> list[bytes]:
    """A concatenation of handshake messages, split into whole encoded messages."""
    out, pos = [], 0
    while pos < len(data):
        end = pos + 4 + int.from_bytes(data[pos + 1 : pos + 4], "big")
        out.append(data[pos:end])
        pos = end
    return out


def capture_server_flight(
    client_cfg: ClientConfig | None = None, server_cfg: ServerConfig | None = None
) -> tuple[Connection, Connection, ServerFlight]:
    """Start a client, let the server answer, and open the answer (not delivered to the client)."""
    pair = connect(client_cfg or client_config(), server_cfg or server_config())
    pair.server.receive_data(pair.client.data_to_send())
    flight = pair.server.data_to_send()
    plaintext, rest = bytearray(), bytearray()
    for content_type, fragment in records(flight):
        record = bytes((content_type, 3, 3)) + len(fragment).to_bytes(2, "big") + fragment
        (rest if content_type == ContentType.application_data else plaintext).extend(record)
    (server_hello,) = plaintext_handshake(bytes(plaintext))
    assert isinstance(server_hello, ServerHello)
    params = suite_params(server_hello.cipher_suite)
    secret = key_log_secret(pair.server_key_log, "SERVER_HANDSHAKE_TRAFFIC_SECRET")
    decryptor = RecordDecryptor(params, secret)
    messages = bytearray()
    for _, fragment in records(bytes(rest)):
        header = b"\x17\x03\x03" + len(fragment).to_bytes(2, "big")
        content_type, content = decryptor.open(header, fragment)
        assert content_type == ContentType.handshake
        messages += content
    return pair.client, pair.server, ServerFlight(bytes(plaintext), bytes(messages), params, secret)


def protected_lengths(wire: bytes) -> list[int]:
    """Fragment lengths of the protected (opaque application_data) records in ``wire``."""
    return [len(f) for t, f in records(wire) if t == ContentType.application_data]


def events_of(events: Iterable[Event], kind: type | tuple[type, ...]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]

