"""Observed TLS 1.3 traffic, decoded: both directions of one connection framed into records (RFC 8446 §5.1),
decrypted with NSS key-log secrets (§7.1, §7.3), handshake messages reassembled and decoded (§4).

This is the eye of ``decrypt`` (bytes from a capture) and ``probe`` (bytes our client sent and received):
it never takes part in the protocol, so it tolerates what a peer must not (unknown record types, records it
cannot decrypt) and reports them instead of raising.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..crypto import keyschedule
from ..crypto.suites import SUITES, SuiteParams
from ..enums import ContentType, ExtensionType, HandshakeType, ProtocolVersion
from ..errors import TLSError
from ..messages.extensions import extension_map, parse_supported_versions_server
from ..messages.handshake import ClientHello, HandshakeMessage, ServerHello, decode_handshake
from ..record import RecordDecryptor

__all__ = [
    "Connection",
    "Direction",
    "Message",
    "Record",
    "decode_connection",
    "parse_key_log",
]

Direction = Literal["client", "server"]
_HEADER = 5
# the secret: a SHA-256 or SHA-384 length (TLS 1.3 traffic secrets; TLS 1.2's 48-byte master secret)
_KEYLOG_LINE = re.compile(r"^([A-Z_0-9]+) ([0-9a-fA-F]{64}) ([0-9a-fA-F]{96}|[0-9a-fA-F]{64})\s*$")


def parse_key_log(text: str) -> dict[bytes, dict[str, bytes]]:
    """NSS key log lines (``LABEL client_random secret``, hex) by client random, then label; other lines
    (comments, blanks, TLS 1.2 ``CLIENT_RANDOM``) are kept too and ignored by the TLS 1.3 decoder. A line whose
    secret is not 32 or 48 bytes is skipped: it would otherwise replace a good line for the same connection."""
    out: dict[bytes, dict[str, bytes]] = {}
    for line in text.splitlines():
        match = _KEYLOG_LINE.match(line.strip())
        if match:
            label, random, secret = match.groups()
            out.setdefault(bytes.fromhex(random), {})[label] = bytes.fromhex(secret)
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Record:
    """One record as seen on the wire and, when we had its key, what it carried."""

    direction: Direction
    index: int  # position among this direction's records
    offset: int  # byte offset of the header in this direction's stream
    time: float | None  # when its last byte arrived (when known)
    outer_type: int  # the header's content type (opaque_type 23 when protected)
    content_type: int  # the inner type once decrypted, else the outer one
    epoch: str  # "plaintext", "early", "handshake", "application", "application-1", ...
    length: int  # fragment length on the wire
    plaintext: bytes | None  # the content (padding and inner type removed); None if not decrypted
    note: str = ""

    @property
    def decrypted(self) -> bool:
        return self.plaintext is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """A handshake message (reassembled across records) or an alert."""

    direction: Direction
    record_index: int
    time: float | None
    epoch: str
    type: int  # HandshakeType value, or -1 for an alert
    raw: bytes  # the whole message, header included (alert: the 2 bytes)
    decoded: HandshakeMessage | None
    error: str | None = None

    @property
    def name(self) -> str:
        if self.type == -1:
            return "Alert"
        return _MESSAGE_NAMES.get(self.type, HandshakeType(self.type).name)


VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
_MESSAGE_NAMES: dict[int, str] = {
    0: "HelloRequest",  # TLS 1.2 and older (RFC 5246 §7.4): not in TLS 1.3's HandshakeType
    12: "ServerKeyExchange",
    14: "ServerHelloDone",
    16: "ClientKeyExchange",
    HandshakeType.client_hello: "ClientHello",
    HandshakeType.server_hello: "ServerHello",
    HandshakeType.new_session_ticket: "NewSessionTicket",
    HandshakeType.end_of_early_data: "EndOfEarlyData",
    HandshakeType.encrypted_extensions: "EncryptedExtensions",
    HandshakeType.certificate: "Certificate",
    HandshakeType.certificate_request: "CertificateRequest",
    HandshakeType.certificate_verify: "CertificateVerify",
    HandshakeType.finished: "Finished",
    HandshakeType.key_update: "KeyUpdate",
}


@dataclass(kw_only=True, slots=True)
class Connection:
    """Everything decoded from one TLS connection."""

    client_random: bytes | None = None
    version: int | None = None
    cipher_suite: int | None = None
    hello_retry: bool = False
    early_data_offered: bool = False
    early_data_accepted: bool = False
    keys_found: bool = False
    records: list[Record] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def application_data(self, direction: Direction) -> bytes:
        """Decrypted application data (0-RTT included) sent by ``direction``, in order."""
        return b"".join(r.plaintext for r in self.records if r.direction == direction and r.plaintext is not None
                        and r.content_type == ContentType.application_data and r.epoch != "plaintext")


# --- framing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Frame:
    offset: int
    header: bytes
    fragment: bytes
    time: float | None


def _frames(data: bytes, times: Sequence[tuple[int, float]] | None, notes: list[str], direction: str
            ) -> list[_Frame]:
    """Records of one direction; stops (with a note) at bytes that are not a TLS record header."""
    out: list[_Frame] = []
    pos = 0
    while len(data) - pos >= _HEADER:
        header = data[pos : pos + _HEADER]
        if header[0] not in (20, 21, 22, 23, 24) or header[1] != 3:
            snippet = data[pos : pos + 24]
            notes.append(f"{direction}: not a TLS record at byte {pos}: {snippet!r}")
            return out
        length = int.from_bytes(header[3:5], "big")
        end = pos + _HEADER + length
        if end > len(data):
            notes.append(f"{direction}: stream ends inside a record at byte {pos} ({len(data) - pos} of "
                         f"{_HEADER + length} bytes)")
            return out
        out.append(_Frame(pos, header, data[pos + _HEADER : end], _time_at(times, end - 1)))
        pos = end
    if pos < len(data):
        notes.append(f"{direction}: {len(data) - pos} trailing bytes after the last complete record")
    return out


def _time_at(times: Sequence[tuple[int, float]] | None, offset: int) -> float | None:
    """Arrival time of the chunk holding byte ``offset``; ``times`` lists (chunk start offset, time)."""
    if not times:
        return None
    found = None
    for start, when in times:
        if start > offset:
            break
        found = when
    return found


# --- one direction -------------------------------------------------------------------------------


class _Keys:
    """The secrets one direction moves through: [early], handshake, application_0 (§7.1), then KeyUpdates."""

    def __init__(self, params: SuiteParams | None, secrets: Mapping[str, bytes], direction: Direction,
                 early: bool) -> None:
        side = "CLIENT" if direction == "client" else "SERVER"
        stages: list[tuple[str, bytes | None]] = []
        if early and direction == "client":
            stages.append(("early", secrets.get("CLIENT_EARLY_TRAFFIC_SECRET")))
        stages.append(("handshake", secrets.get(f"{side}_HANDSHAKE_TRAFFIC_SECRET")))
        stages.append(("application", secrets.get(f"{side}_TRAFFIC_SECRET_0")))
        self.params = params
        self.stages = stages
        self.index = 0
        self.generation = 0
        self.decryptor = self._make(stages[0][1])

    def _make(self, secret: bytes | None) -> RecordDecryptor | None:
        if self.params is None or secret is None:
            return None
        return RecordDecryptor(self.params, secret)

    @property
    def epoch(self) -> str:
        name = self.stages[self.index][0]
        return f"{name}-{self.generation}" if self.generation else name

    def open(self, header: bytes, fragment: bytes) -> tuple[int, bytes] | None:
        """Decrypt with the current key; on failure try the later stages (a rejected 0-RTT flight is
        followed by handshake records without EndOfEarlyData)."""
        if self.decryptor is not None:
            try:
                return self.decryptor.open(header, fragment)
            except TLSError:
                pass
        for later in range(self.index + 1, len(self.stages)):
            candidate = self._make(self.stages[later][1])
            if candidate is None:
                continue
            try:
                result = candidate.open(header, fragment)
            except TLSError:
                continue
            self.index, self.decryptor, self.generation = later, candidate, 0
            return result
        return None

    def advance(self) -> None:
        """Next stage (after EndOfEarlyData or Finished)."""
        if self.index + 1 < len(self.stages):
            self.index += 1
            self.decryptor = self._make(self.stages[self.index][1])

    def key_update(self) -> None:
        """application_traffic_secret_N+1 (§7.2)."""
        if self.decryptor is not None and self.params is not None:
            self.decryptor = RecordDecryptor(self.params,
                                             keyschedule.next_traffic_secret(self.params, self.decryptor.secret))
        self.generation += 1


def _decode_direction(frames: list[_Frame], direction: Direction, keys: _Keys, conn: Connection) -> None:
    hs_buf = bytearray()
    protected = False
    legacy = conn.version is not None and conn.version != ProtocolVersion.TLS1_3
    for index, frame in enumerate(frames):
        outer = frame.header[0]
        epoch, content_type, note = "plaintext", outer, ""
        plaintext: bytes | None = frame.fragment
        if legacy and protected:  # TLS 1.2 and below: everything after ChangeCipherSpec is encrypted
            epoch, plaintext, note = "encrypted", None, "TLS 1.2 or older: not decrypted"
        elif legacy and outer == ContentType.change_cipher_spec:
            protected = True
        elif outer == ContentType.application_data and (protected or conn.version == ProtocolVersion.TLS1_3):
            protected = True
            opened = keys.open(frame.header, frame.fragment)
            epoch = keys.epoch
            if opened is None:
                content_type, plaintext = outer, None
                note = "no key for this record" if keys.decryptor is None else "could not decrypt"
            else:
                content_type, plaintext = int(opened[0]), opened[1]
        elif outer == ContentType.change_cipher_spec:
            note = "middlebox compatibility (§D.4)" if conn.version == ProtocolVersion.TLS1_3 else ""
        record = Record(direction=direction, index=index, offset=frame.offset, time=frame.time, outer_type=outer,
                        content_type=content_type, epoch=epoch, length=len(frame.fragment), plaintext=plaintext,
                        note=note)
        conn.records.append(record)
        if plaintext is None:
            continue
        if content_type == ContentType.alert:
            conn.messages.append(Message(direction=direction, record_index=index, time=frame.time, epoch=epoch,
                                         type=-1, raw=plaintext, decoded=None))
        elif content_type == ContentType.handshake:
            hs_buf += plaintext
            for raw in _take_messages(hs_buf):
                message = _message(direction, index, frame.time, epoch, raw, tls13=not legacy)
                conn.messages.append(message)
                _follow(message, keys, conn)


def _take_messages(buf: bytearray) -> Iterable[bytes]:
    while len(buf) >= 4:
        n = int.from_bytes(buf[1:4], "big")
        if len(buf) < 4 + n:
            return
        raw = bytes(buf[: 4 + n])
        del buf[: 4 + n]
        yield raw


def _message(direction: Direction, index: int, when: float | None, epoch: str, raw: bytes, *,
             tls13: bool = True) -> Message:
    """``tls13=False``: a TLS 1.2 handshake, whose messages after the hellos have other layouts: named only."""
    decoded: HandshakeMessage | None = None
    error = None
    if tls13 or raw[0] in (HandshakeType.client_hello, HandshakeType.server_hello):
        try:
            decoded = decode_handshake(raw[0], raw[4:])
        except TLSError as e:
            error = str(e)
    return Message(direction=direction, record_index=index, time=when, epoch=epoch, type=raw[0], raw=raw,
                   decoded=decoded, error=error)


def _follow(message: Message, keys: _Keys, conn: Connection) -> None:
    """Key changes a message causes in its own direction (§4.4.4, §4.5, §4.6.3)."""
    match message.type:
        case HandshakeType.end_of_early_data:
            keys.advance()
        case HandshakeType.finished if keys.stages[keys.index][0] == "handshake":
            keys.advance()
        case HandshakeType.key_update:
            keys.key_update()
        case HandshakeType.encrypted_extensions if message.decoded is not None:
            exts = extension_map(message.decoded.extensions)  # type: ignore[union-attr]
            conn.early_data_accepted = ExtensionType.early_data in exts


# --- the connection ------------------------------------------------------------------------------


def decode_connection(
    client: bytes,
    server: bytes,
    key_log: Mapping[bytes, Mapping[str, bytes]],
    *,
    client_times: Sequence[tuple[int, float]] | None = None,
    server_times: Sequence[tuple[int, float]] | None = None,
) -> Connection:
    """Decode both directions of one connection; ``*_times`` list (stream offset, arrival time) pairs."""
    conn = Connection()
    client_frames = _frames(client, client_times, conn.notes, "client")
    server_frames = _frames(server, server_times, conn.notes, "server")
    hello = _first_plaintext(client_frames, HandshakeType.client_hello)
    if isinstance(hello, ClientHello):
        conn.client_random = hello.random
        conn.early_data_offered = any(e.type is ExtensionType.early_data for e in hello.extensions)
    server_hello = _server_hello(server_frames, conn)
    if isinstance(server_hello, ServerHello):
        conn.cipher_suite = int(server_hello.cipher_suite)
        exts = extension_map(server_hello.extensions)
        versions = exts.get(ExtensionType.supported_versions)
        try:
            conn.version = parse_supported_versions_server(versions) if versions else server_hello.legacy_version
        except TLSError:
            conn.version = server_hello.legacy_version
    secrets: Mapping[str, bytes] = {}
    if conn.client_random is not None:
        secrets = key_log.get(conn.client_random, {})
        conn.keys_found = bool(secrets)
    params = SUITES.get(conn.cipher_suite) if conn.cipher_suite is not None else None  # type: ignore[call-overload]
    if conn.version is not None and conn.version != ProtocolVersion.TLS1_3:
        name = VERSION_NAMES.get(conn.version, f"version {conn.version:#06x}")
        conn.notes.append(f"{name}: only TLS 1.3 records are decrypted (those after ChangeCipherSpec are not)")
    elif conn.client_random is not None and not secrets:
        conn.notes.append(f"no key log entry for client random {conn.client_random.hex()}")
    elif conn.cipher_suite is not None and params is None:
        conn.notes.append(f"cipher suite {conn.cipher_suite:#06x} is not implemented by tlskit")
    early = conn.early_data_offered and not conn.hello_retry
    _decode_direction(client_frames, "client", _Keys(params, secrets, "client", early), conn)
    _decode_direction(server_frames, "server", _Keys(params, secrets, "server", False), conn)
    if conn.early_data_offered and not conn.early_data_accepted and any(
        r.epoch == "early" and r.decrypted for r in conn.records
    ):
        conn.notes.append("0-RTT data was sent but the server did not accept it (no early_data in "
                          "EncryptedExtensions); it was not delivered")
    conn.records.sort(key=lambda r: (r.time if r.time is not None else 0.0))
    conn.messages.sort(key=lambda m: (m.time if m.time is not None else 0.0))
    return conn


def _first_plaintext(frames: list[_Frame], msg_type: HandshakeType) -> HandshakeMessage | None:
    buf = bytearray()
    for frame in frames:
        if frame.header[0] != ContentType.handshake:
            if frame.header[0] == ContentType.application_data:
                return None
            continue
        buf += frame.fragment
        for raw in _take_messages(buf):
            if raw[0] == msg_type:
                try:
                    return decode_handshake(raw[0], raw[4:])
                except TLSError:
                    return None
    return None


def _server_hello(frames: list[_Frame], conn: Connection) -> HandshakeMessage | None:
    """The ServerHello that settles the suite; a HelloRetryRequest before it is noted (§4.1.4)."""
    buf = bytearray()
    for frame in frames:
        if frame.header[0] == ContentType.application_data:
            break
        if frame.header[0] != ContentType.handshake:
            continue
        buf += frame.fragment
        for raw in _take_messages(buf):
            if raw[0] != HandshakeType.server_hello:
                continue
            try:
                hello = decode_handshake(raw[0], raw[4:])
            except TLSError:
                return None
            if isinstance(hello, ServerHello) and hello.is_hello_retry_request:
                conn.hello_retry = True
                continue
            return hello
    return None
