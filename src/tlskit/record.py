"""The TLS 1.3 record layer, sans-IO (RFC 8446 §5).

``RecordReader`` frames a byte stream into records; ``RecordEncryptor`` / ``RecordDecryptor`` protect and
unprotect records under one traffic secret each (a KeyUpdate makes new ones). The AEAD object is built
once per key and nonces are ``iv XOR seq`` computed on ints (§5.3).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag

from .crypto.keyschedule import KeyIV, traffic_key_iv
from .crypto.suites import SuiteParams
from .enums import AlertDescription, ContentType
from .errors import AlertError, DecodeError

__all__ = [
    "MAX_CIPHERTEXT",
    "MAX_PLAINTEXT",
    "RecordDecryptor",
    "RecordEncryptor",
    "RecordReader",
    "check_change_cipher_spec",
    "plaintext_records",
]

MAX_PLAINTEXT = 2**14
MAX_CIPHERTEXT = 2**14 + 256
HEADER_LEN = 5
_TAG_LEN = 16  # every suite we implement (§B.4) has a 16-byte tag
_KNOWN_TYPES = frozenset(
    {ContentType.change_cipher_spec, ContentType.alert, ContentType.handshake, ContentType.application_data}
)
_TYPES = {int(t): t for t in _KNOWN_TYPES}
_TYPE_BYTE = {t: bytes((t,)) for t in _KNOWN_TYPES}
_APPLICATION_DATA = ContentType.application_data
_OPAQUE_HEADER = b"\x17\x03\x03"  # opaque_type application_data, legacy_record_version 0x0303
_EMPTY_VIEW = memoryview(b"")


class RecordReader:
    """Splits a byte stream into records (§5.1).

    ``feed`` takes any amount; ``next_record`` checks a record's header as soon as its 5 bytes are there, so a
    caller that takes records after each feed (as ``Connection`` does) never holds more than one maximal record
    plus header of an incomplete one. Fragments are returned as views of the (immutable) received bytes: a
    16 KiB record is never copied on its way to the AEAD, and a record split across two reads is completed from
    the start of the second one, whose rest is kept where it is.
    """

    __slots__ = ("_buf", "_first", "_pos", "_view")

    def __init__(self) -> None:
        self._buf = b""
        self._view = memoryview(self._buf)
        self._pos = 0
        self._first: bytes | None = None  # a record completed across two feeds: it comes before ``_buf[_pos:]``

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as records."""
        return len(self._buf) - self._pos + (len(self._first) if self._first is not None else 0)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes from the transport (only what completes an unfinished record is ever copied)."""
        if type(data) is not bytes:
            data = bytes(data)  # a caller's buffer is not kept; a view of wide or scattered items becomes bytes
        buf, pos = self._buf, self._pos
        left = len(buf) - pos
        if left <= 0:
            buf, pos = data, 0
        elif left >= HEADER_LEN and self._first is None and 0 < (
            need := HEADER_LEN + ((buf[pos + 3] << 8) | buf[pos + 4]) - left
        ) < len(data):
            # The usual case in bulk transfer: a read ends inside a record. Copy just that record together;
            # the records after it stay in the new bytes (its header is checked when it is taken).
            self._first = b"".join((self._view[pos:], memoryview(data)[:need]))  # one copy
            buf, pos = data, need
        else:
            buf, pos = buf[pos:] + data, 0
        self._buf, self._view, self._pos = buf, memoryview(buf), pos

    def next_record(self) -> tuple[ContentType, bytes, memoryview] | None:
        """(content type, 5-byte header, fragment view) of the next complete record, or None."""
        first = self._first
        if first is not None:
            whole = _record_at(first, 0, memoryview(first))  # a bad header raises, and again on the next call
            assert whole is not None  # complete by construction
            self._first = None
            return whole[0]
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_LEN:
            if pos and pos == len(buf):  # all taken: an idle connection keeps no received bytes
                self._buf, self._view, self._pos = b"", _EMPTY_VIEW, 0
            return None
        found = _record_at(buf, pos, self._view)
        if found is None:
            return None
        record, self._pos = found
        return record


def _record_at(
    buf: bytes, pos: int, view: memoryview
) -> tuple[tuple[ContentType, bytes, memoryview], int] | None:
    """The record whose header starts at ``pos`` (at least 5 bytes there) and where it ends; None while its body
    is incomplete. The header is checked first: content type, version, length (§5.1, §5.2)."""
    content_type = _TYPES.get(buf[pos])
    if content_type is None:
        raise AlertError(AlertDescription.unexpected_message, f"unknown record content type {buf[pos]}")
    if buf[pos + 1] != 3:
        raise DecodeError(f"record version {buf[pos + 1]:#04x}{buf[pos + 2]:02x} is not TLS")
    length = (buf[pos + 3] << 8) | buf[pos + 4]
    if length > MAX_CIPHERTEXT or (length > MAX_PLAINTEXT and content_type is not _APPLICATION_DATA):
        raise AlertError(AlertDescription.record_overflow, f"{content_type.name} record of {length} B")
    if length == 0 and content_type is not _APPLICATION_DATA:  # §5.1 forbids them; OpenSSL answers as §5.4 does
        raise AlertError(AlertDescription.unexpected_message, f"zero-length {content_type.name} record")
    end = pos + HEADER_LEN + length
    if len(buf) < end:
        return None
    return (content_type, buf[pos : pos + HEADER_LEN], view[pos + HEADER_LEN : end]), end


def check_change_cipher_spec(fragment: bytes | memoryview) -> None:
    """A compatibility ChangeCipherSpec must be the single byte 0x01 (§5)."""
    if fragment != b"\x01":
        raise AlertError(AlertDescription.unexpected_message, "malformed change_cipher_spec record")


def plaintext_records(
    content_type: ContentType,
    data: bytes,
    max_fragment: int = MAX_PLAINTEXT,
    *,
    first_client_hello: bool = False,
) -> bytes:
    """Unprotected TLSPlaintext records carrying ``data`` (§5.1).

    legacy_record_version is 0x0303, or 0x0301 for the first ClientHello (§5.1, §D.1).
    """
    if not data:
        raise ValueError(f"cannot send a zero-length {content_type.name} record")
    prefix = bytes((content_type, 3, 1 if first_client_hello else 3))
    parts = []
    for start in range(0, len(data), max_fragment):
        chunk = data[start : start + max_fragment]
        parts.append(prefix + len(chunk).to_bytes(2, "big"))
        parts.append(chunk)
    return b"".join(parts)


class RecordEncryptor:
    """Protects records under one traffic secret (§5.2, §5.3).

    ``pad_to`` pads each TLSInnerPlaintext up to a multiple of it (never past ``max_fragment + 1``);
    ``max_fragment`` is the content limit per record (RFC 8449 record_size_limit minus one).
    """

    __slots__ = ("_aead", "_iv", "max_fragment", "pad_to", "params", "secret", "seq")

    def __init__(
        self,
        params: SuiteParams,
        secret: bytes,
        *,
        pad_to: int = 0,
        max_fragment: int = MAX_PLAINTEXT,
        key_iv: KeyIV | None = None,
    ) -> None:
        """``key_iv``: ``traffic_key_iv(params, secret)`` when the caller derived it already."""
        if not 0 < max_fragment <= MAX_PLAINTEXT:
            raise ValueError(f"max_fragment must be in 1..{MAX_PLAINTEXT}")
        key, iv = traffic_key_iv(params, secret) if key_iv is None else key_iv
        self.params = params
        self.secret = secret
        self.pad_to = pad_to
        self.max_fragment = max_fragment
        self.seq = 0
        self._aead = params.aead_factory(key)
        self._iv = int.from_bytes(iv, "big")

    @property
    def records(self) -> int:
        """Records sealed under this key, to compare with the AEAD limit (§5.5)."""
        return self.seq

    def seal(self, content_type: ContentType, data: bytes) -> bytes:
        """One or more protected records carrying ``data``, concatenated."""
        size = len(data)
        if size > self.max_fragment:
            step, first = self.max_fragment, self.seq
            try:
                return b"".join([self.seal(content_type, data[i : i + step]) for i in range(0, size, step)])
            except BaseException:
                self.seq = first  # none of them goes out: the next record must use the first one's nonce
                raise
        if not size and content_type is not _APPLICATION_DATA:
            raise ValueError(f"cannot send a zero-length {content_type.name} record")
        tail = _TYPE_BYTE[content_type]
        if self.pad_to > 1:
            padded = min(-(-(size + 1) // self.pad_to) * self.pad_to, self.max_fragment + 1)
            tail += bytes(padded - size - 1)
        header = _OPAQUE_HEADER + (size + len(tail) + _TAG_LEN).to_bytes(2, "big")
        seq = self.seq
        inner = data + tail if type(data) is bytes else b"".join((data, tail))  # a memoryview has no +
        sealed = self._aead.encrypt((self._iv ^ seq).to_bytes(12, "big"), inner, header)
        self.seq = seq + 1  # (only once sealed: a failure must not leave the nonce a record ahead of the peer)
        return header + sealed


class RecordDecryptor:
    """Unprotects records under one traffic secret (§5.2, §5.4)."""

    __slots__ = ("_aead", "_iv", "max_inner", "params", "secret", "seq")

    def __init__(
        self,
        params: SuiteParams,
        secret: bytes,
        *,
        max_inner: int = MAX_PLAINTEXT + 1,
        key_iv: KeyIV | None = None,
    ) -> None:
        """``key_iv``: ``traffic_key_iv(params, secret)`` when the caller derived it already."""
        key, iv = traffic_key_iv(params, secret) if key_iv is None else key_iv
        self.params = params
        self.secret = secret
        self.seq = 0
        self.max_inner = max_inner  # TLSInnerPlaintext limit: 2^14 + 1, or the record_size_limit we sent
        self._aead = params.aead_factory(key)
        self._iv = int.from_bytes(iv, "big")

    def open(self, header: bytes, fragment: bytes | memoryview) -> tuple[ContentType, bytes]:
        """(inner content type, content) of a protected record; the header is the AEAD's additional data.

        bad_record_mac if authentication fails, record_overflow if the TLSInnerPlaintext exceeds
        2^14 + 1 bytes, unexpected_message if it is all zeros or carries a ChangeCipherSpec.
        """
        seq = self.seq
        try:
            inner = self._aead.decrypt((self._iv ^ seq).to_bytes(12, "big"), fragment, header)
        except InvalidTag:
            raise AlertError(AlertDescription.bad_record_mac, f"record {seq} failed authentication") from None
        self.seq = seq + 1
        if len(inner) > self.max_inner:
            raise AlertError(AlertDescription.record_overflow, f"inner plaintext of {len(inner)} bytes")
        # Unpadded records (the usual case) end in their content type: skip the scan for padding.
        stripped = inner if inner and inner[-1] else inner.rstrip(b"\x00")
        if not stripped:
            raise AlertError(AlertDescription.unexpected_message, "record has no non-zero content type")
        content_type = _TYPES.get(stripped[-1])
        if content_type is None or content_type is ContentType.change_cipher_spec:
            raise AlertError(
                AlertDescription.unexpected_message, f"protected record of content type {stripped[-1]}"
            )
        content = stripped[:-1]
        if not content and content_type is not _APPLICATION_DATA:  # §5.4: unexpected_message
            raise AlertError(AlertDescription.unexpected_message, f"zero-length protected {content_type.name} record")
        return content_type, content
