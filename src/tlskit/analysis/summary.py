"""Handshake messages and alerts as the operator tools show them: key fields as a JSON-able dict and one line
of text (RFC 8446 §4 names; unknown code points shown by number)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..enums import (
    AlertDescription,
    CipherSuite,
    ExtensionType,
    PskKeyExchangeMode,
)
from ..errors import TLSError
from ..messages import extensions as ext
from ..messages.extensions import Extension
from ..messages.handshake import (
    Certificate,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    KeyUpdate,
    NewSessionTicket,
    ServerHello,
)
from .clienthello import TLS12_SUITES
from .records import VERSION_NAMES, Message

__all__ = ["message_fields", "message_line", "version_name"]

def version_name(value: int) -> str:
    return VERSION_NAMES.get(value, f"{value:#06x}")


def suite_name(value: int) -> str:
    """The IANA name of a TLS 1.3 suite, or of a TLS 1.2 suite tools ask about (else ``unknown_0x....``)."""
    return TLS12_SUITES.get(value) or CipherSuite.of(value).name


def _names(values: Any) -> list[str]:
    return [v.name for v in values]


def _extension_fields(extensions: tuple[Extension, ...], *, server: bool) -> dict[str, Any]:
    """The extensions an operator asks about, decoded; others by name only."""
    parsers: dict[ExtensionType, tuple[str, Callable[[bytes], Any]]] = {
        ExtensionType.server_name: ("sni", ext.parse_server_name),
        ExtensionType.supported_groups: ("groups", lambda d: _names(ext.parse_supported_groups(d))),
        ExtensionType.signature_algorithms: ("signature_algorithms",
                                             lambda d: _names(ext.parse_signature_algorithms(d))),
        ExtensionType.application_layer_protocol_negotiation: ("alpn", ext.parse_alpn),
        ExtensionType.psk_key_exchange_modes: ("psk_modes",
                                               lambda d: [PskKeyExchangeMode(m).name for m in ext.parse_psk_modes(d)]),
        ExtensionType.record_size_limit: ("record_size_limit", ext.parse_record_size_limit),
        ExtensionType.cookie: ("cookie_bytes", lambda d: len(ext.parse_cookie(d))),
    }
    if server:
        parsers[ExtensionType.supported_versions] = (
            "version", lambda d: version_name(ext.parse_supported_versions_server(d)))
    else:
        parsers[ExtensionType.supported_versions] = (
            "versions", lambda d: [version_name(v) for v in ext.parse_supported_versions_client(d)])
    out: dict[str, Any] = {"extensions": [e.type.name for e in extensions]}
    for e in extensions:
        try:
            if e.type in parsers:
                key, parse = parsers[e.type]
                out[key] = parse(e.data)
            elif e.type is ExtensionType.key_share:
                if not server:
                    out["key_shares"] = [s.group.name for s in ext.parse_key_share_client(e.data)]
                elif len(e.data) == 2:
                    out["hrr_group"] = ext.parse_key_share_hrr(e.data).name
                else:
                    out["group"] = ext.parse_key_share_server(e.data).group.name
            elif e.type is ExtensionType.pre_shared_key:
                if server:
                    out["psk_selected"] = ext.parse_selected_psk(e.data)
                else:
                    out["psk_identities"] = len(ext.parse_offered_psks(e.data).identities)
            elif e.type is ExtensionType.early_data and len(e.data) == 4:  # a ticket's max_early_data_size
                out["early_data"] = ext.parse_early_data_nst(e.data)  # (elsewhere it is empty: listed by name)
            elif e.type is ExtensionType.status_request:
                out["status_request"] = True
        except TLSError as error:
            out.setdefault("malformed", []).append(f"{e.type.name}: {error}")
    return out


def message_fields(message: Message) -> dict[str, Any]:
    """The key fields of ``message`` (names of suites, groups, extensions ...)."""
    out: dict[str, Any] = {"type": message.name, "direction": message.direction, "epoch": message.epoch,
                           "length": len(message.raw)}
    if message.time is not None:
        out["time"] = message.time
    if message.type == -1:
        if len(message.raw) == 2:
            out["level"] = "fatal" if message.raw[0] == 2 else "warning"
            out["description"] = AlertDescription(message.raw[1]).name
        return out
    if message.error:
        out["error"] = message.error
    match message.decoded:
        case ClientHello() as hello:
            out["random"] = hello.random.hex()
            out["session_id_length"] = len(hello.legacy_session_id)
            out["cipher_suites"] = [suite_name(s) for s in hello.cipher_suites]
            out.update(_extension_fields(hello.extensions, server=False))
        case ServerHello() as hello:
            if hello.is_hello_retry_request:
                out["type"] = "HelloRetryRequest"
            out["random"] = hello.random.hex()
            out["cipher_suite"] = suite_name(hello.cipher_suite)
            out.update(_extension_fields(hello.extensions, server=True))
            out.setdefault("version", version_name(hello.legacy_version))
        case EncryptedExtensions() as ee:
            out.update(_extension_fields(ee.extensions, server=True))
        case CertificateRequest() as request:
            out.update(_extension_fields(request.extensions, server=True))
        case Certificate() as cert:
            out["certificates"] = len(cert.entries)
            out["ocsp_staple"] = any(e.type is ExtensionType.status_request for e in
                                     (cert.entries[0].extensions if cert.entries else ()))
        case CertificateVerify() as verify:
            out["signature_scheme"] = verify.algorithm.name
        case NewSessionTicket() as ticket:
            out["lifetime"] = ticket.lifetime
            out["ticket_bytes"] = len(ticket.ticket)
            out.update({k: v for k, v in _extension_fields(ticket.extensions, server=True).items()
                        if k != "extensions"})
        case KeyUpdate() as update:
            out["request_update"] = update.request_update.name
        case _:
            pass
    return out


def message_line(message: Message) -> str:
    """One line: ``ServerHello TLS_AES_128_GCM_SHA256 group=x25519 version=TLSv1.3``."""
    fields = message_fields(message)
    name = fields.pop("type")
    for key in ("direction", "epoch", "length", "time", "random"):
        fields.pop(key, None)
    parts = [name]
    for key, value in fields.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value) or "-"
        elif value is True:
            parts.append(key)
            continue
        elif value is False or value is None:
            continue
        parts.append(f"{key}={value}")
    return " ".join(parts)
