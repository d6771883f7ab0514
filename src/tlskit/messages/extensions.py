"""Extension blocks and the bodies of the extensions tlskit understands (RFC 8446 §4.2, RFC 6066, RFC 7301,
RFC 8449).

An extension block decodes to a tuple of raw ``Extension`` values in wire order, so unknown extensions are
kept (and ignored by policy) and re-encoding is byte-exact. The ``*_body`` functions encode one extension's
``extension_data``; the ``parse_*`` functions decode it strictly (``DecodeError`` on any slack).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..codec import Reader, Writer, slots_settable
from ..enums import (
    AlertDescription,
    CertificateStatusType,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    NameType,
    ProtocolVersion,
    PskKeyExchangeMode,
    SignatureScheme,
    member_lookup,
)
from ..errors import AlertError, DecodeError

_E = TypeVar("_E")

__all__ = [
    "Extension",
    "KeyShareEntry",
    "OfferedPsks",
    "PskIdentity",
]


@dataclass(frozen=True, slots=True)
class Extension:
    """One raw extension: its type and its undecoded ``extension_data``."""

    type: ExtensionType
    data: bytes


def decode_extensions(r: Reader) -> tuple[Extension, ...]:
    """``Extension extensions<0..2^16-1>``; a repeated type is ``illegal_parameter`` (§4.2)."""
    return extensions_from_block(r.vector(2))


def extensions_from_block(block: bytes) -> tuple[Extension, ...]:
    """The extensions in ``block`` (an extension list without its 2-byte length); a repeated type is
    ``illegal_parameter`` (§4.2), a truncated or overlong entry ``DecodeError``."""
    out: list[Extension] = []
    seen: set[int] = set()
    pos, end = 0, len(block)
    known = _EXTENSION_TYPES.get
    while pos < end:
        if end - pos < 4:
            raise DecodeError("truncated extension header")
        ext_type, n = _U16_PAIR.unpack_from(block, pos)
        pos += 4
        if n > end - pos:
            raise DecodeError(f"extension {ext_type:#06x} claims {n} bytes, {end - pos} left")
        if ext_type in seen:
            raise AlertError(AlertDescription.illegal_parameter, f"duplicate extension {ext_type:#06x}")
        seen.add(ext_type)
        kind = known(ext_type)
        if _SLOTS_WRITABLE:
            e: Extension = _NEW_EXTENSION(Extension)  # as ``_extension``, inlined: a dozen per ClientHello
            _SET_TYPE(e, ExtensionType.of(ext_type) if kind is None else kind)
            _SET_DATA(e, block[pos : pos + n])
            out.append(e)
        else:
            out.append(Extension(ExtensionType.of(ext_type) if kind is None else kind, block[pos : pos + n]))
        pos += n
    return tuple(out)


_U16_PAIR = struct.Struct(">HH")
# value -> member of the enums parsed on every ClientHello (``Enum.of`` without its per-call overhead)
_EXTENSION_TYPES: dict[int, ExtensionType] = member_lookup(ExtensionType)  # grows with unknown values
# The slots of the frozen ``Extension``: setting them directly builds the same value as ``Extension(t, d)``
# without the frozen dataclass's ``object.__setattr__`` round trips (a ClientHello carries a dozen).
_NEW_EXTENSION = object.__new__
_SET_TYPE = vars(Extension)["type"].__set__
_SET_DATA = vars(Extension)["data"].__set__


def _extension(ext_type: ExtensionType, data: bytes) -> Extension:
    """``Extension(ext_type, data)``, built through the slot descriptors (decoding hot path)."""
    e: Extension = _NEW_EXTENSION(Extension)
    _SET_TYPE(e, ext_type)
    _SET_DATA(e, data)
    return e


_SLOTS_WRITABLE = slots_settable(Extension(ExtensionType.server_name, b""))  # not when compiled with mypyc


def _members(of: Callable[[int], _E], known: dict[int, _E], values: Iterable[int]) -> list[_E]:
    """``[of(v) for v in values]`` with ``known`` (value -> member) looked up first: ``Enum.of`` costs a
    call per code point, and the ClientHello lists are parsed on every handshake."""
    get = known.get
    return [of(v) if (m := get(v)) is None else m for v in values]


def encode_extensions(w: Writer, extensions: Iterable[Extension]) -> None:
    w.raw(extensions_block([extension_bytes(e.type, e.data) for e in extensions]))


def extension_bytes(ext_type: int, data: bytes) -> bytes:
    """One encoded ``Extension`` (type, 2-byte length, data), for messages built straight from bytes."""
    return ext_type.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def extensions_block(encoded: Iterable[bytes]) -> bytes:
    """``Extension extensions<0..2^16-1>`` from already-encoded extensions (``extension_bytes``)."""
    body = b"".join(encoded)
    return len(body).to_bytes(2, "big") + body


def extension_map(extensions: Sequence[Extension]) -> dict[ExtensionType, bytes]:
    return {e.type: e.data for e in extensions}


# §4.2 table: which extensions each message may carry. Anything recognised but not listed is illegal there.
ALLOWED: dict[HandshakeType, frozenset[ExtensionType]] = {
    HandshakeType.server_hello: frozenset(
        {ExtensionType.key_share, ExtensionType.pre_shared_key, ExtensionType.supported_versions}
    ),
    HandshakeType.encrypted_extensions: frozenset(
        {
            ExtensionType.server_name,
            ExtensionType.max_fragment_length,
            ExtensionType.supported_groups,
            ExtensionType.use_srtp,
            ExtensionType.heartbeat,
            ExtensionType.application_layer_protocol_negotiation,
            ExtensionType.client_certificate_type,
            ExtensionType.server_certificate_type,
            ExtensionType.early_data,
            ExtensionType.record_size_limit,
        }
    ),
    HandshakeType.certificate: frozenset(
        {ExtensionType.status_request, ExtensionType.signed_certificate_timestamp}
    ),
    HandshakeType.certificate_request: frozenset(
        {
            ExtensionType.status_request,
            ExtensionType.signature_algorithms,
            ExtensionType.signed_certificate_timestamp,
            ExtensionType.certificate_authorities,
            ExtensionType.oid_filters,
            ExtensionType.signature_algorithms_cert,
        }
    ),
    HandshakeType.new_session_ticket: frozenset({ExtensionType.early_data}),
}
HRR_ALLOWED = frozenset({ExtensionType.key_share, ExtensionType.cookie, ExtensionType.supported_versions})


def check_server_extensions(
    message: HandshakeType,
    extensions: Sequence[Extension],
    offered: frozenset[ExtensionType],
    *,
    hrr: bool = False,
) -> None:
    """Client-side check (§4.2): a response we did not ask for is ``unsupported_extension``; a known
    extension in the wrong message is ``illegal_parameter``."""
    allowed = HRR_ALLOWED if hrr else ALLOWED[message]
    for ext in extensions:
        if ext.type not in offered and ext.type is not ExtensionType.cookie:
            raise AlertError(
                AlertDescription.unsupported_extension,
                f"{message.name} carries {ext.type.name}, which we did not offer",
            )
        if ext.type not in allowed:
            raise AlertError(
                AlertDescription.illegal_parameter, f"{ext.type.name} is not allowed in {message.name}"
            )


# --- server_name (RFC 6066 §3) -------------------------------------------------------------------------


def server_name_body(host: str) -> bytes:
    w = Writer()
    with w.prefixed(2):
        w.u8(NameType.host_name)
        w.vector(2, host.encode("ascii"))
    return w.getvalue()


def parse_server_name(data: bytes) -> str | None:
    """The host_name in a ClientHello's server_name; an empty body (a server's ack) gives None.

    ``ServerName server_name_list<1..2^16-1>`` of ``{NameType; opaque name<1..2^16-1>}``, read straight off
    the bytes (one per ClientHello): the list must fill the body exactly.
    """
    if not data:
        return None
    end = len(data)
    if end < 2 or (data[0] << 8) | data[1] != end - 2 or end == 2:
        raise DecodeError(f"server_name list length does not match its {end}-byte body")
    host: str | None = None
    pos = 2
    while pos < end:
        if end - pos < 3:
            raise DecodeError("truncated server_name entry")
        name_type = data[pos]
        n = (data[pos + 1] << 8) | data[pos + 2]
        pos += 3
        if n < 1 or n > end - pos:
            raise DecodeError(f"server_name entry claims {n} bytes, {end - pos} left")
        name = data[pos : pos + n]
        pos += n
        if name_type == _HOST_NAME:
            if host is not None:
                raise AlertError(AlertDescription.illegal_parameter, "two host_name entries in server_name")
            try:
                host = name.decode("ascii")
            except UnicodeDecodeError:
                raise AlertError(AlertDescription.illegal_parameter, "server_name is not ASCII") from None
            if host.endswith("."):  # RFC 6066 §3 says without one; OpenSSL and nginx take it: so do we
                host = host[:-1]
            if not host or host.endswith(".") or "\x00" in host:
                raise AlertError(AlertDescription.illegal_parameter, f"bad server_name {name!r}")
    return host


_HOST_NAME = int(NameType.host_name)


# --- lists of u16 code points ----------------------------------------------------------------------------


def _u16_list_body(values: Iterable[int], width: int = 2) -> bytes:
    w = Writer()
    with w.prefixed(width):
        for v in values:
            w.u16(v)
    return w.getvalue()


def _parse_u16_list(data: bytes, width: int = 2) -> list[int]:
    """A ``uint16 list<2..2^16-2>`` (or with a one-byte length): non-empty, even, no trailing bytes."""
    if len(data) < width:
        raise DecodeError("truncated list length")
    n = int.from_bytes(data[:width], "big")
    if n != len(data) - width:
        raise DecodeError(f"list claims {n} bytes, has {len(data) - width}")
    if n < 2 or n % 2:
        raise DecodeError(f"list of 16-bit values with {n} bytes")
    return list(u16_struct(n >> 1).unpack_from(data, width))


_U16S: dict[int, struct.Struct] = {}


def u16_struct(count: int) -> struct.Struct:
    """A compiled ``>{count}H`` (cached: a ClientHello has several such lists)."""
    compiled = _U16S.get(count)
    if compiled is None:
        compiled = struct.Struct(f">{count}H")
        if len(_U16S) < 1024:
            _U16S[count] = compiled
    return compiled


def supported_groups_body(groups: Iterable[NamedGroup]) -> bytes:
    return _u16_list_body(groups)


def _parse_u16_members(data: bytes, of: Callable[[int], _E], known: dict[int, _E]) -> list[_E]:
    """``_members(of, known, _parse_u16_list(data))`` in one pass, for the lists every ClientHello has."""
    end = len(data)
    n = (data[0] << 8) | data[1] if end >= 2 else -1
    if n != end - 2 or n < 2 or n % 2:
        raise DecodeError(f"list of 16-bit values claims {n} bytes in a {end}-byte body")
    get = known.get
    return [of(v) if (m := get(v)) is None else m for v in u16_struct(n >> 1).unpack_from(data, 2)]


def parse_supported_groups(data: bytes) -> list[NamedGroup]:
    return _parse_u16_members(data, NamedGroup.of, _NAMED_GROUPS)


def signature_algorithms_body(schemes: Iterable[SignatureScheme]) -> bytes:
    return _u16_list_body(schemes)


def parse_signature_algorithms(data: bytes) -> list[SignatureScheme]:
    return _parse_u16_members(data, SignatureScheme.of, _SIGNATURE_SCHEMES)


_NAMED_GROUPS: dict[int, NamedGroup] = member_lookup(NamedGroup)
_SIGNATURE_SCHEMES: dict[int, SignatureScheme] = member_lookup(SignatureScheme)


def supported_versions_client_body(versions: Iterable[int]) -> bytes:  # int: compiled, the type is checked
    w = Writer()
    with w.prefixed(1):
        for v in versions:
            w.u16(v)
    return w.getvalue()


def parse_supported_versions_client(data: bytes) -> list[int]:
    return _parse_u16_list(data, 1)


def supported_versions_server_body(version: ProtocolVersion) -> bytes:
    return int(version).to_bytes(2, "big")


def parse_supported_versions_server(data: bytes) -> int:
    r = Reader(data)
    v = r.u16()
    r.finish()
    return v


# --- key_share (§4.2.8) ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyShareEntry:
    group: NamedGroup
    key_exchange: bytes


def key_share_client_body(entries: Iterable[KeyShareEntry]) -> bytes:
    w = Writer()
    with w.prefixed(2):
        for e in entries:
            w.u16(e.group)
            w.vector(2, e.key_exchange)
    return w.getvalue()


def parse_key_share_client(data: bytes) -> list[KeyShareEntry]:
    """``KeyShareEntry client_shares<0..2^16-1>``; a group offered twice is ``illegal_parameter`` (§4.2.8).

    Read straight off the bytes (one per ClientHello): the list must fill the body exactly and every
    ``key_exchange<1..2^16-1>`` must be non-empty.
    """
    end = len(data)
    if end < 2 or (data[0] << 8) | data[1] != end - 2:
        raise DecodeError(f"client_shares length does not match its {end}-byte body")
    out: list[KeyShareEntry] = []
    seen: set[int] = set()
    pos = 2
    while pos < end:
        if end - pos < 4:
            raise DecodeError("truncated KeyShareEntry")
        group, n = _U16_PAIR.unpack_from(data, pos)
        pos += 4
        if n < 1 or n > end - pos:
            raise DecodeError(f"key_exchange claims {n} bytes, {end - pos} left")
        if group in seen:
            raise AlertError(AlertDescription.illegal_parameter, f"two key shares for group {group:#06x}")
        seen.add(group)
        member = _NAMED_GROUPS.get(group)
        out.append(KeyShareEntry(NamedGroup.of(group) if member is None else member, data[pos : pos + n]))
        pos += n
    return out


def key_share_server_body(entry: KeyShareEntry) -> bytes:
    return key_share_entry_bytes(entry.group, entry.key_exchange)


def key_share_entry_bytes(group: int, key_exchange: bytes) -> bytes:
    """One encoded ``KeyShareEntry`` (a ServerHello's whole key_share body)."""
    if len(key_exchange) > 0xFFFF:
        raise ValueError(f"vector of {len(key_exchange)} bytes does not fit a 2-byte length")
    return group.to_bytes(2, "big") + len(key_exchange).to_bytes(2, "big") + key_exchange


def parse_key_share_server(data: bytes) -> KeyShareEntry:
    r = Reader(data)
    group = NamedGroup(r.u16())
    key = r.vector(2, 1)
    r.finish()
    return KeyShareEntry(group, key)


def key_share_hrr_body(group: NamedGroup) -> bytes:
    return int(group).to_bytes(2, "big")


def parse_key_share_hrr(data: bytes) -> NamedGroup:
    r = Reader(data)
    group = NamedGroup(r.u16())
    r.finish()
    return group


# --- ALPN (RFC 7301) -------------------------------------------------------------------------------------


def alpn_body(protocols: Iterable[str]) -> bytes:
    w = Writer()
    with w.prefixed(2):
        for p in protocols:
            w.vector(1, p.encode("ascii"))
    return w.getvalue()


def parse_alpn(data: bytes) -> list[str]:
    r = Reader(data)
    sub = r.sub(2, 2)
    r.finish()
    out: list[str] = []
    while sub.remaining:
        name = sub.vector(1, 1)
        out.append(name.decode("latin-1"))
    return out


# --- small fixed bodies ---------------------------------------------------------------------------------


def record_size_limit_body(limit: int) -> bytes:
    return limit.to_bytes(2, "big")


def parse_record_size_limit(data: bytes) -> int:
    """RFC 8449 §4: values below 64 are ``illegal_parameter``."""
    r = Reader(data)
    limit = r.u16()
    r.finish()
    if limit < 64:
        raise AlertError(AlertDescription.illegal_parameter, f"record_size_limit {limit} < 64")
    return limit


def cookie_body(cookie: bytes) -> bytes:
    w = Writer()
    w.vector(2, cookie)
    return w.getvalue()


def parse_cookie(data: bytes) -> bytes:
    r = Reader(data)
    cookie = r.vector(2, 1)
    r.finish()
    return cookie


def psk_modes_body(modes: Iterable[PskKeyExchangeMode]) -> bytes:
    w = Writer()
    with w.prefixed(1):
        for m in modes:
            w.u8(m)
    return w.getvalue()


def parse_psk_modes(data: bytes) -> list[PskKeyExchangeMode]:
    """``PskKeyExchangeMode ke_modes<1..255>``, filling the body exactly."""
    if len(data) < 2 or data[0] != len(data) - 1:
        raise DecodeError(f"psk_key_exchange_modes length does not match its {len(data)}-byte body")
    return _members(PskKeyExchangeMode.of, _PSK_MODES, data[1:])


_PSK_MODES: dict[int, PskKeyExchangeMode] = dict(PskKeyExchangeMode._value2member_map_)


def parse_padding(data: bytes) -> None:
    """RFC 7685: the padding must be zeros."""
    if data.count(0) != len(data):
        raise AlertError(AlertDescription.illegal_parameter, "padding extension is not all zeros")


def certificate_authorities_body(names: Iterable[bytes]) -> bytes:
    """§4.2.4: DER-encoded distinguished names."""
    w = Writer()
    with w.prefixed(2):
        for n in names:
            w.vector(2, n)
    return w.getvalue()


def parse_certificate_authorities(data: bytes) -> list[bytes]:
    r = Reader(data)
    sub = r.sub(2, 3)
    r.finish()
    out: list[bytes] = []
    while sub.remaining:
        out.append(sub.vector(2, 1))
    return out


def early_data_nst_body(max_early_data_size: int) -> bytes:
    return max_early_data_size.to_bytes(4, "big")


def parse_early_data_nst(data: bytes) -> int:
    r = Reader(data)
    size = r.u32()
    r.finish()
    return size


def parse_empty(data: bytes, name: str) -> None:
    if data:
        raise DecodeError(f"{name} extension must be empty here")


# --- status_request (RFC 6066 §8, RFC 8446 §4.4.2.1) ---------------------------------------------------


def status_request_body() -> bytes:
    """An OCSP request with no responder ids and no request extensions."""
    return bytes([CertificateStatusType.ocsp, 0, 0, 0, 0])


def parse_status_request(data: bytes) -> CertificateStatusType:
    r = Reader(data)
    kind = CertificateStatusType(r.u8())
    if kind == CertificateStatusType.ocsp:
        r.vector(2)  # responder_id_list
        r.vector(2)  # request_extensions
    else:
        r.rest()
    r.finish()
    return kind


def certificate_status_body(ocsp_response: bytes) -> bytes:
    w = Writer()
    w.u8(CertificateStatusType.ocsp)
    w.vector(3, ocsp_response)
    return w.getvalue()


def parse_certificate_status(data: bytes) -> bytes:
    """The DER OCSPResponse carried in a CertificateEntry's status_request extension."""
    r = Reader(data)
    if r.u8() != CertificateStatusType.ocsp:
        raise AlertError(AlertDescription.illegal_parameter, "certificate status is not OCSP")
    response = r.vector(3, 1)
    r.finish()
    return response


# --- pre_shared_key (§4.2.11) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PskIdentity:
    identity: bytes
    obfuscated_ticket_age: int


@dataclass(frozen=True, slots=True)
class OfferedPsks:
    identities: tuple[PskIdentity, ...]
    binders: tuple[bytes, ...]


def offered_psks_body(identities: Sequence[PskIdentity], binder_lengths: Sequence[int]) -> bytes:
    """Body with zeroed binders of the given lengths; the binders are patched in after hashing."""
    w = Writer()
    with w.prefixed(2):
        for ident in identities:
            w.vector(2, ident.identity)
            w.u32(ident.obfuscated_ticket_age)
    with w.prefixed(2):
        for n in binder_lengths:
            w.vector(1, bytes(n))
    return w.getvalue()


def binders_length(binder_lengths: Sequence[int]) -> int:
    """Bytes the binders list occupies at the end of a ClientHello, length prefix included."""
    return 2 + sum(1 + n for n in binder_lengths)


def parse_offered_psks(data: bytes) -> OfferedPsks:
    """OfferedPsks (§4.2.11): identities<7..2^16-1> of (identity<1..2^16-1>, u32 age), binders<33..2^16-1> of
    binder<32..255>; read by index (a Reader and a sub-reader per list cost more than the values themselves)."""
    end = len(data)
    if end < 2:
        raise DecodeError("truncated PSK identities length")
    ids_end = 2 + ((data[0] << 8) | data[1])
    if ids_end < 2 + 7 or ids_end > end:
        raise DecodeError(f"PSK identities claim {ids_end - 2} bytes in a {end}-byte body (at least 7)")
    identities: list[PskIdentity] = []
    pos = 2
    while pos < ids_end:
        if pos + 2 > ids_end:
            raise DecodeError("truncated PSK identity length")
        start = pos + 2
        stop = start + ((data[pos] << 8) | data[pos + 1])
        if stop == start or stop + 4 > ids_end:
            raise DecodeError("empty or truncated PSK identity")
        identities.append(_psk_identity(bytes(data[start:stop]), int.from_bytes(data[stop : stop + 4], "big")))
        pos = stop + 4
    if ids_end + 2 > end:
        raise DecodeError("truncated PSK binders length")
    binders_end = ids_end + 2 + ((data[ids_end] << 8) | data[ids_end + 1])
    if binders_end < ids_end + 2 + 33 or binders_end != end:
        raise DecodeError(f"PSK binders claim {binders_end - ids_end - 2} bytes of {end - ids_end - 2} (at least 33)")
    binders: list[bytes] = []
    pos = ids_end + 2
    while pos < binders_end:
        stop = pos + 1 + data[pos]
        if data[pos] < 32 or stop > binders_end:
            raise DecodeError("PSK binder shorter than 32 bytes or truncated")
        binders.append(bytes(data[pos + 1 : stop]))
        pos = stop
    if len(binders) != len(identities):
        raise AlertError(AlertDescription.illegal_parameter, "PSK identities and binders differ in number")
    return OfferedPsks(tuple(identities), tuple(binders))


def _psk_identity(identity: bytes, obfuscated_ticket_age: int) -> PskIdentity:
    """``PskIdentity(identity, age)`` through its slot descriptors (the constructor when compiled)."""
    if not _PSK_SLOTS_WRITABLE:
        return PskIdentity(identity, obfuscated_ticket_age)
    e: PskIdentity = _NEW_EXTENSION(PskIdentity)
    _SET_PSK_IDENTITY(e, identity)
    _SET_PSK_AGE(e, obfuscated_ticket_age)
    return e


_SET_PSK_IDENTITY = vars(PskIdentity)["identity"].__set__
_SET_PSK_AGE = vars(PskIdentity)["obfuscated_ticket_age"].__set__
_PSK_SLOTS_WRITABLE = slots_settable(PskIdentity(b"identity", 7))


def selected_psk_body(index: int) -> bytes:
    return index.to_bytes(2, "big")


def parse_selected_psk(data: bytes) -> int:
    r = Reader(data)
    index = r.u16()
    r.finish()
    return index
