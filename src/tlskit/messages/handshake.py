"""Handshake messages (RFC 8446 §4) as frozen values with ``encode()`` and strict ``decode()``.

``encode()`` returns the whole handshake message, 4-byte header included, because that is what goes into
the transcript. ``decode(body)`` takes the body without the header. ``HandshakeBuffer`` reassembles
messages that arrive fragmented across records or coalesced into one (§5.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..codec import Reader, Writer
from ..enums import (
    AlertDescription,
    CipherSuite,
    ExtensionType,
    HandshakeType,
    KeyUpdateRequest,
    ProtocolVersion,
    SignatureScheme,
    member_lookup,
)
from ..errors import AlertError, DecodeError
from .extensions import (
    ALLOWED,
    Extension,
    decode_extensions,
    encode_extensions,
    extension_bytes,
    extensions_block,
    extensions_from_block,
    u16_struct,
)

# §4.1.3: the ServerHello.random of a HelloRetryRequest is SHA-256("HelloRetryRequest").
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
# §4.1.3: downgrade sentinels at the end of ServerHello.random.
DOWNGRADE_TLS12 = bytes.fromhex("444f574e47524401")
DOWNGRADE_TLS11 = bytes.fromhex("444f574e47524400")


def _framed(msg_type: HandshakeType, w: Writer) -> bytes:
    return handshake_bytes(msg_type, w.buf)


def handshake_bytes(msg_type: int, body: bytes | bytearray) -> bytes:
    """A whole handshake message: type, 3-byte length, body (§4)."""
    n = len(body)
    if n >> 24:
        raise ValueError(f"handshake message body of {n} bytes does not fit a 3-byte length")
    return bytes((msg_type, n >> 16, (n >> 8) & 0xFF, n & 0xFF)) + body


# The byte-level encoders below are what the matching classes' ``encode()`` use; the server calls them
# directly for the messages it builds on every handshake, without the intermediate objects.


def server_hello_bytes(
    random: bytes, legacy_session_id: bytes, cipher_suite: int, extensions: bytes, legacy_version: int = 0x0303
) -> bytes:
    """A ServerHello (§4.1.3) with legacy_compression_method 0; ``extensions`` is an ``extensions_block``."""
    sid = len(legacy_session_id)
    if sid > 0xFF:
        raise ValueError(f"vector of {sid} bytes does not fit a 1-byte length")
    if len(random) != 32:
        raise ValueError(f"ServerHello.random must be 32 bytes, got {len(random)}")
    n = 38 + sid + len(extensions)  # version 2, random 32, session id 1+sid, suite 2, compression 1
    head = bytes((HandshakeType.server_hello, n >> 16, (n >> 8) & 0xFF, n & 0xFF, legacy_version >> 8,
                  legacy_version & 0xFF))
    return b"".join((head, random, bytes((sid,)), legacy_session_id, bytes((cipher_suite >> 8, cipher_suite & 0xFF, 0)),
                     extensions))


def encrypted_extensions_bytes(extensions: bytes) -> bytes:
    """EncryptedExtensions (§4.3.1) from an ``extensions_block``."""
    return handshake_bytes(HandshakeType.encrypted_extensions, extensions)


def certificate_verify_bytes(algorithm: int, signature: bytes) -> bytes:
    """CertificateVerify (§4.4.3)."""
    if len(signature) > 0xFFFF:
        raise ValueError(f"vector of {len(signature)} bytes does not fit a 2-byte length")
    return handshake_bytes(
        HandshakeType.certificate_verify, algorithm.to_bytes(2, "big") + len(signature).to_bytes(2, "big") + signature
    )


def new_session_ticket_bytes(lifetime: int, age_add: int, nonce: bytes, ticket: bytes, extensions: bytes) -> bytes:
    """NewSessionTicket (§4.6.1) from its fields and its encoded extensions block."""
    if len(nonce) > 0xFF or len(ticket) > 0xFFFF:
        raise ValueError("NewSessionTicket nonce or ticket too long for its length prefix")
    return handshake_bytes(
        HandshakeType.new_session_ticket,
        b"".join(
            (
                lifetime.to_bytes(4, "big"),
                age_add.to_bytes(4, "big"),
                bytes((len(nonce),)),
                nonce,
                len(ticket).to_bytes(2, "big"),
                ticket,
                extensions,
            )
        ),
    )


def finished_bytes(verify_data: bytes) -> bytes:
    """Finished (§4.4.4)."""
    return handshake_bytes(HandshakeType.finished, verify_data)


# Each message's ``TYPE`` is a class attribute of a slot-less base class rather than a ``ClassVar`` in the
# dataclass body: mypyc (when the engine is compiled) turns such a ``ClassVar`` into a dataclass field
# (mypyc/mypyc#1122). ``Message.TYPE`` and ``message.TYPE`` are the same either way.
class _ClientHelloType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.client_hello


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientHello(_ClientHelloType):
    """§4.1.2."""

    random: bytes
    legacy_session_id: bytes
    cipher_suites: tuple[CipherSuite, ...]
    legacy_compression_methods: bytes = b"\x00"
    extensions: tuple[Extension, ...]
    legacy_version: int = ProtocolVersion.TLS1_2

    def encode(self) -> bytes:
        w = Writer()
        w.u16(self.legacy_version)
        w.raw(self.random)
        w.vector(1, self.legacy_session_id)
        with w.prefixed(2):
            for s in self.cipher_suites:
                w.u16(s)
        w.vector(1, self.legacy_compression_methods)
        encode_extensions(w, self.extensions)
        return _framed(self.TYPE, w)

    @classmethod
    def decode(cls, body: bytes) -> ClientHello:
        """Strict decode, read straight off the bytes: every server parses one per handshake."""
        if type(body) is not bytes:
            body = bytes(body)
        end = len(body)
        if end < 35:
            raise DecodeError(f"ClientHello of {end} bytes is truncated")
        legacy_version = (body[0] << 8) | body[1]
        random = body[2:34]
        pos = 35 + body[34]
        if body[34] > 32:
            raise DecodeError(f"legacy_session_id of {body[34]} bytes (at most 32)")
        if pos + 2 > end:
            raise DecodeError("ClientHello truncated before cipher_suites")
        session_id = body[35:pos]
        n = (body[pos] << 8) | body[pos + 1]
        pos += 2
        if n < 2 or n % 2 or n > end - pos:
            raise DecodeError(f"cipher_suites of {n} bytes (even, at least 2, {end - pos} left)")
        known = _CIPHER_SUITES.get
        of = CipherSuite.of
        cipher_suites = tuple(
            [of(v) if (m := known(v)) is None else m for v in u16_struct(n >> 1).unpack_from(body, pos)]
        )
        pos += n
        if pos >= end or body[pos] < 1 or body[pos] > end - pos - 1:
            raise DecodeError("legacy_compression_methods missing, empty or truncated")
        compression = body[pos + 1 : pos + 1 + body[pos]]
        pos += 1 + body[pos]
        extensions: tuple[Extension, ...] = ()
        if pos < end:  # a ClientHello from TLS <= 1.2 may omit extensions entirely (§4.1.2)
            if end - pos < 2 or (body[pos] << 8) | body[pos + 1] != end - pos - 2:
                raise DecodeError("extensions length does not match the rest of the ClientHello")
            extensions = extensions_from_block(body[pos + 2 :])
        return cls(
            legacy_version=legacy_version,
            random=random,
            legacy_session_id=session_id,
            cipher_suites=cipher_suites,
            legacy_compression_methods=compression,
            extensions=extensions,
        )


_CIPHER_SUITES: dict[int, CipherSuite] = member_lookup(CipherSuite)


class _ServerHelloType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.server_hello


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerHello(_ServerHelloType):
    """§4.1.3; a HelloRetryRequest is a ServerHello whose random is ``HRR_RANDOM``."""

    random: bytes
    legacy_session_id: bytes
    cipher_suite: CipherSuite
    legacy_compression_method: int = 0
    extensions: tuple[Extension, ...]
    legacy_version: int = ProtocolVersion.TLS1_2

    @property
    def is_hello_retry_request(self) -> bool:
        return self.random == HRR_RANDOM

    def encode(self) -> bytes:
        if self.legacy_compression_method == 0:
            exts = extensions_block([extension_bytes(e.type, e.data) for e in self.extensions])
            return server_hello_bytes(
                self.random, self.legacy_session_id, self.cipher_suite, exts, legacy_version=self.legacy_version
            )
        w = Writer()
        w.u16(self.legacy_version)
        w.raw(self.random)
        w.vector(1, self.legacy_session_id)
        w.u16(self.cipher_suite)
        w.u8(self.legacy_compression_method)
        encode_extensions(w, self.extensions)
        return _framed(self.TYPE, w)

    @classmethod
    def decode(cls, body: bytes) -> ServerHello:
        r = Reader(body)
        legacy_version = r.u16()
        random = r.raw(32)
        session_id = r.vector(1, 0, 32)
        suite = CipherSuite(r.u16())
        compression = r.u8()
        extensions = decode_extensions(r) if r.remaining else ()
        r.finish()
        return cls(
            legacy_version=legacy_version,
            random=random,
            legacy_session_id=session_id,
            cipher_suite=suite,
            legacy_compression_method=compression,
            extensions=extensions,
        )


class _EncryptedExtensionsType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.encrypted_extensions


@dataclass(frozen=True, kw_only=True, slots=True)
class EncryptedExtensions(_EncryptedExtensionsType):
    """§4.3.1."""

    extensions: tuple[Extension, ...] = ()

    def encode(self) -> bytes:
        return encrypted_extensions_bytes(extensions_block([extension_bytes(e.type, e.data) for e in self.extensions]))

    @classmethod
    def decode(cls, body: bytes) -> EncryptedExtensions:
        r = Reader(body)
        extensions = decode_extensions(r)
        r.finish()
        return cls(extensions=extensions)


class _CertificateRequestType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.certificate_request


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateRequest(_CertificateRequestType):
    """§4.3.2."""

    context: bytes = b""
    extensions: tuple[Extension, ...]

    def encode(self) -> bytes:
        w = Writer()
        w.vector(1, self.context)
        encode_extensions(w, self.extensions)
        return _framed(self.TYPE, w)

    @classmethod
    def decode(cls, body: bytes) -> CertificateRequest:
        r = Reader(body)
        context = r.vector(1)
        extensions = decode_extensions(r)
        r.finish()
        return cls(context=context, extensions=extensions)


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateEntry:
    """§4.4.2: one X.509 certificate (DER) and its per-certificate extensions."""

    cert_data: bytes
    extensions: tuple[Extension, ...] = ()


class _CertificateType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.certificate


@dataclass(frozen=True, kw_only=True, slots=True)
class Certificate(_CertificateType):
    """§4.4.2."""

    context: bytes = b""
    entries: tuple[CertificateEntry, ...]

    def encode(self) -> bytes:
        w = Writer()
        w.vector(1, self.context)
        with w.prefixed(3):
            for e in self.entries:
                w.vector(3, e.cert_data)
                encode_extensions(w, e.extensions)
        return _framed(self.TYPE, w)

    @classmethod
    def decode(cls, body: bytes) -> Certificate:
        r = Reader(body)
        context = r.vector(1)
        lst = r.sub(3)
        entries: list[CertificateEntry] = []
        while lst.remaining:
            data = lst.vector(3, 1)
            entries.append(CertificateEntry(cert_data=data, extensions=decode_extensions(lst)))
        r.finish()
        return cls(context=context, entries=tuple(entries))


class _CertificateVerifyType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.certificate_verify


@dataclass(frozen=True, kw_only=True, slots=True)
class CertificateVerify(_CertificateVerifyType):
    """§4.4.3."""

    algorithm: SignatureScheme
    signature: bytes

    def encode(self) -> bytes:
        return certificate_verify_bytes(self.algorithm, self.signature)

    @classmethod
    def decode(cls, body: bytes) -> CertificateVerify:
        r = Reader(body)
        algorithm = SignatureScheme(r.u16())
        signature = r.vector(2, 1)
        r.finish()
        return cls(algorithm=algorithm, signature=signature)


class _FinishedType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.finished


@dataclass(frozen=True, kw_only=True, slots=True)
class Finished(_FinishedType):
    """§4.4.4; the length of verify_data is checked against the suite's hash by the handshake."""

    verify_data: bytes

    def encode(self) -> bytes:
        return finished_bytes(self.verify_data)

    @classmethod
    def decode(cls, body: bytes) -> Finished:
        if len(body) not in (32, 48):
            raise DecodeError(f"Finished of {len(body)} bytes")
        return cls(verify_data=bytes(body))


class _EndOfEarlyDataType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.end_of_early_data


@dataclass(frozen=True, kw_only=True, slots=True)
class EndOfEarlyData(_EndOfEarlyDataType):
    """§4.5."""


    def encode(self) -> bytes:
        return bytes((self.TYPE, 0, 0, 0))

    @classmethod
    def decode(cls, body: bytes) -> EndOfEarlyData:
        if body:
            raise DecodeError("EndOfEarlyData has a body")
        return cls()


class _NewSessionTicketType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.new_session_ticket


@dataclass(frozen=True, kw_only=True, slots=True)
class NewSessionTicket(_NewSessionTicketType):
    """§4.6.1."""

    lifetime: int
    age_add: int
    nonce: bytes
    ticket: bytes
    extensions: tuple[Extension, ...] = ()

    def encode(self) -> bytes:
        extensions = extensions_block([extension_bytes(e.type, e.data) for e in self.extensions])
        return new_session_ticket_bytes(self.lifetime, self.age_add, self.nonce, self.ticket, extensions)

    @classmethod
    def decode(cls, body: bytes) -> NewSessionTicket:
        r = Reader(body)
        lifetime = r.u32()
        age_add = r.u32()
        nonce = r.vector(1)
        ticket = r.vector(2, 1)
        extensions = decode_extensions(r)
        r.finish()
        if lifetime > 604800:
            raise AlertError(AlertDescription.illegal_parameter, f"ticket lifetime {lifetime}s > 7 days")
        for ext in extensions:
            if ext.type is ExtensionType.early_data and len(ext.data) != 4:
                raise DecodeError("early_data in NewSessionTicket must hold max_early_data_size")
            if ext.type not in _TICKET_EXTENSIONS and not ext.type.name.startswith("unknown_"):  # §4.2
                raise AlertError(AlertDescription.illegal_parameter, f"{ext.type.name} is not allowed in a ticket")
        return cls(lifetime=lifetime, age_add=age_add, nonce=nonce, ticket=ticket, extensions=extensions)


_TICKET_EXTENSIONS = ALLOWED[HandshakeType.new_session_ticket]


class _KeyUpdateType:
    __slots__ = ()
    TYPE: ClassVar[HandshakeType] = HandshakeType.key_update


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyUpdate(_KeyUpdateType):
    """§4.6.3."""

    request_update: KeyUpdateRequest

    def encode(self) -> bytes:
        return bytes((self.TYPE, 0, 0, 1, self.request_update))

    @classmethod
    def decode(cls, body: bytes) -> KeyUpdate:
        r = Reader(body)
        value = r.u8()
        r.finish()
        if value > 1:
            raise AlertError(AlertDescription.illegal_parameter, f"KeyUpdate request_update {value}")
        return cls(request_update=KeyUpdateRequest(value))


HandshakeMessage = (
    ClientHello
    | ServerHello
    | EncryptedExtensions
    | CertificateRequest
    | Certificate
    | CertificateVerify
    | Finished
    | EndOfEarlyData
    | NewSessionTicket
    | KeyUpdate
)

_DECODERS: dict[int, type[HandshakeMessage]] = {
    cls.TYPE: cls
    for cls in (
        ClientHello,
        ServerHello,
        EncryptedExtensions,
        CertificateRequest,
        Certificate,
        CertificateVerify,
        Finished,
        EndOfEarlyData,
        NewSessionTicket,
        KeyUpdate,
    )
}


def decode_handshake(msg_type: int, body: bytes) -> HandshakeMessage:
    """Decode one message body; an unknown type is ``unexpected_message`` (§6.2)."""
    cls = _DECODERS.get(msg_type)
    if cls is None:
        raise AlertError(AlertDescription.unexpected_message, f"unknown handshake message type {msg_type}")
    return cls.decode(body)


class HandshakeBuffer:
    """Reassembles handshake messages from record payloads (§5.1), with a cap on one message's size."""

    __slots__ = ("_buf", "_pos", "max_message_size")

    def __init__(self, max_message_size: int = 1 << 17) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0  # start of the next message in ``_buf``
        self.max_message_size = max_message_size

    def __bool__(self) -> bool:
        return len(self._buf) > self._pos

    def feed(self, data: bytes | bytearray) -> None:
        """Append a record's payload. A payload that starts on a message boundary (the usual case) is kept as
        it is and messages are sliced out of it; only a message split across records is copied together."""
        buf, pos = self._buf, self._pos
        if len(buf) <= pos:
            self._buf, self._pos = bytes(data), 0  # a no-op for bytes; a caller's bytearray is not kept
        elif type(buf) is bytearray:  # already reassembling: append in place (linear in what arrives)
            if pos:
                del buf[:pos]
                self._pos = 0
            buf += data
        else:
            self._buf = bytearray(memoryview(buf)[pos:])
            self._buf += data
            self._pos = 0

    def next_message(self) -> tuple[int, bytes, bytes] | None:
        """``(type, body, whole message bytes)`` or None while incomplete."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        n = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
        if n > self.max_message_size:
            raise AlertError(
                AlertDescription.unexpected_message
                if buf[pos] not in _DECODERS
                else AlertDescription.decode_error,
                f"handshake message of {n} bytes exceeds the {self.max_message_size}-byte limit",
            )
        end = pos + 4 + n
        if len(buf) < end:
            return None
        whole = bytes(buf) if pos == 0 and end == len(buf) and type(buf) is bytes else bytes(buf[pos:end])
        if end == len(buf):
            self._buf, self._pos = b"", 0
        else:
            self._pos = end
        return whole[0], whole[4:], whole


def encode_all(messages: Sequence[HandshakeMessage]) -> bytes:
    return b"".join(m.encode() for m in messages)


def alert_bytes(description: AlertDescription, fatal: bool = True) -> bytes:
    """§6: an Alert body; TLS 1.3 treats every alert but close_notify/user_canceled as fatal."""
    return bytes((2 if fatal else 1, description))
