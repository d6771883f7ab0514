"""Protocol vocabulary: the code points of RFC 8446 §4 and the registries it refers to.

Every enum here keeps values it does not know (``NamedGroup(0x1234)`` is representable and named
``unknown_0x1234``) so that parsing never crashes on a peer's new code point; policy ignores it instead.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any

_LOOKUP: dict[type, dict[int, Any]] = {}  # per enum class: value -> member, known and unknown ones met so far
_UNKNOWN_CACHED = 512  # unknown values a peer can make us remember, per enum class


def member_lookup(cls: type[_OpenEnum]) -> dict[int, Any]:
    """``value -> member`` for ``cls``: its members and the pseudo-members of unknown values met so far (up to
    ``_UNKNOWN_CACHED``). Parsers look code points up here directly; ``of`` adds what is missing."""
    table = _LOOKUP.get(cls)
    if table is None:
        table = _LOOKUP[cls] = dict(cls._value2member_map_)
    return table


class _OpenEnum(IntEnum):
    """An IntEnum that represents unknown values as pseudo-members instead of raising."""

    @classmethod
    def of(cls, value: int) -> Any:
        """``cls(value)`` through a dict lookup: the parsers call this for every code point on the wire.

        Unknown values (a TLS 1.2 client's extensions and signature schemes, GREASE) are remembered as
        pseudo-members too, up to a bound: building one through ``Enum.__new__`` and ``_missing_`` costs
        microseconds, several per handshake."""
        table = _LOOKUP.get(cls)
        if table is None:
            table = member_lookup(cls)
        member = table.get(value)
        if member is None:
            member = _pseudo_member(cls, value)  # (not ``cls(value)``: Enum's call and lookups cost 2.5 times more)
            if len(table) < len(cls._value2member_map_) + _UNKNOWN_CACHED:
                table[value] = member
        return member

    @classmethod
    def _missing_(cls, value: object) -> Any:
        return _pseudo_member(cls, value) if isinstance(value, int) else None


def _pseudo_member(cls: type[_OpenEnum], value: int) -> Any:
    """The member standing for an unknown ``value``, named ``unknown_0x....``. A peer can send tens of thousands
    of them in one ClientHello (32,767 cipher suites fit), past what ``of`` remembers: each must stay cheap."""
    member = int.__new__(cls, value)
    member._name_ = f"unknown_{value:#06x}"
    member._value_ = value
    return member


class ProtocolVersion(_OpenEnum):
    """§4.2.1 and the legacy versions seen on the wire."""

    SSL3 = 0x0300
    TLS1_0 = 0x0301
    TLS1_1 = 0x0302
    TLS1_2 = 0x0303
    TLS1_3 = 0x0304


class ContentType(_OpenEnum):
    """§5.1 record content types."""

    invalid = 0
    change_cipher_spec = 20
    alert = 21
    handshake = 22
    application_data = 23


class HandshakeType(_OpenEnum):
    """§4 handshake message types."""

    client_hello = 1
    server_hello = 2
    new_session_ticket = 4
    end_of_early_data = 5
    encrypted_extensions = 8
    certificate = 11
    certificate_request = 13
    certificate_verify = 15
    finished = 20
    key_update = 24
    message_hash = 254


class AlertLevel(_OpenEnum):
    """§6 alert levels (ignored in TLS 1.3 except to print)."""

    warning = 1
    fatal = 2


class AlertDescription(_OpenEnum):
    """§6 alert descriptions."""

    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    inappropriate_fallback = 86
    user_canceled = 90
    missing_extension = 109
    unsupported_extension = 110
    unrecognized_name = 112
    bad_certificate_status_response = 113
    unknown_psk_identity = 115
    certificate_required = 116
    no_application_protocol = 120


class ExtensionType(_OpenEnum):
    """§4.2 extension types (plus RFC 8449 record_size_limit)."""

    server_name = 0
    max_fragment_length = 1
    status_request = 5
    supported_groups = 10
    ec_point_formats = 11
    signature_algorithms = 13
    use_srtp = 14
    heartbeat = 15
    application_layer_protocol_negotiation = 16
    signed_certificate_timestamp = 18
    client_certificate_type = 19
    server_certificate_type = 20
    padding = 21
    encrypt_then_mac = 22
    extended_master_secret = 23
    record_size_limit = 28
    session_ticket = 35
    pre_shared_key = 41
    early_data = 42
    supported_versions = 43
    cookie = 44
    psk_key_exchange_modes = 45
    certificate_authorities = 47
    oid_filters = 48
    post_handshake_auth = 49
    signature_algorithms_cert = 50
    key_share = 51
    renegotiation_info = 0xFF01


class NamedGroup(_OpenEnum):
    """§4.2.7 supported groups, plus the X25519MLKEM768 hybrid (draft-ietf-tls-ecdhe-mlkem)."""

    secp256r1 = 0x0017
    secp384r1 = 0x0018
    secp521r1 = 0x0019
    x25519 = 0x001D
    x448 = 0x001E
    ffdhe2048 = 0x0100
    ffdhe3072 = 0x0101
    ffdhe4096 = 0x0102
    ffdhe6144 = 0x0103
    ffdhe8192 = 0x0104
    X25519MLKEM768 = 0x11EC


class SignatureScheme(_OpenEnum):
    """§4.2.3 signature schemes."""

    rsa_pkcs1_sha256 = 0x0401
    rsa_pkcs1_sha384 = 0x0501
    rsa_pkcs1_sha512 = 0x0601
    ecdsa_secp256r1_sha256 = 0x0403
    ecdsa_secp384r1_sha384 = 0x0503
    ecdsa_secp521r1_sha512 = 0x0603
    rsa_pss_rsae_sha256 = 0x0804
    rsa_pss_rsae_sha384 = 0x0805
    rsa_pss_rsae_sha512 = 0x0806
    ed25519 = 0x0807
    ed448 = 0x0808
    rsa_pss_pss_sha256 = 0x0809
    rsa_pss_pss_sha384 = 0x080A
    rsa_pss_pss_sha512 = 0x080B
    rsa_pkcs1_sha1 = 0x0201
    ecdsa_sha1 = 0x0203


class CipherSuite(_OpenEnum):
    """§B.4 TLS 1.3 cipher suites."""

    TLS_AES_128_GCM_SHA256 = 0x1301
    TLS_AES_256_GCM_SHA384 = 0x1302
    TLS_CHACHA20_POLY1305_SHA256 = 0x1303
    TLS_AES_128_CCM_SHA256 = 0x1304
    TLS_AES_128_CCM_8_SHA256 = 0x1305
    TLS_EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF


class PskKeyExchangeMode(_OpenEnum):
    """§4.2.9 PSK key exchange modes."""

    psk_ke = 0
    psk_dhe_ke = 1


class CertificateStatusType(_OpenEnum):
    """RFC 6066 §8 certificate status types."""

    ocsp = 1


class KeyUpdateRequest(_OpenEnum):
    """§4.6.3 KeyUpdate request_update values."""

    update_not_requested = 0
    update_requested = 1


class NameType(_OpenEnum):
    """RFC 6066 §3 server_name name types."""

    host_name = 0


class EncryptionLevel(IntEnum):
    """Which records a traffic secret protects (RFC 8446 §7.1; RFC 9001 §4.1 calls these encryption levels)."""

    early_data = 1  # client_early_traffic_secret: 0-RTT application data
    handshake = 2  # [sender]_handshake_traffic_secret
    application = 3  # [sender]_application_traffic_secret_N, including those after a KeyUpdate (§7.2)


class Direction(StrEnum):
    """Whether a secret protects what we receive or what we send."""

    read = "read"
    write = "write"
