"""What a server reads out of a ClientHello and what it chooses from it (RFC 8446 §4.1.1, §4.2, §9.2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import CertifiedKey, ServerConfig
from ..enums import (
    AlertDescription,
    CipherSuite,
    ExtensionType,
    NamedGroup,
    ProtocolVersion,
    PskKeyExchangeMode,
    SignatureScheme,
)
from ..errors import AlertError
from ..messages import extensions as ext
from ..messages.extensions import KeyShareEntry, OfferedPsks
from ..messages.handshake import ClientHello
from .common import choose_scheme, choose_suite

__all__ = ["Offer", "choose_alpn", "choose_certificate", "choose_group", "read_offer"]


@dataclass(slots=True)
class Offer:
    """A ClientHello, checked and decoded (§4.1.2, §4.2)."""

    hello: ClientHello
    exts: dict[ExtensionType, bytes]
    suite: CipherSuite
    client_groups: list[NamedGroup]
    shares: list[KeyShareEntry]
    schemes: list[SignatureScheme]
    server_name: str | None
    alpn: list[str] | None
    status_request: bool
    psks: OfferedPsks | None
    psk_modes: list[PskKeyExchangeMode]
    early_data: bool


# Hot members as plain names: an enum class attribute lookup costs more than a global on every ClientHello.
_SERVER_NAME = ExtensionType.server_name
_STATUS_REQUEST = ExtensionType.status_request
_SUPPORTED_GROUPS = ExtensionType.supported_groups
_SIGNATURE_ALGORITHMS = ExtensionType.signature_algorithms
_ALPN = ExtensionType.application_layer_protocol_negotiation
_PADDING = ExtensionType.padding
_RECORD_SIZE_LIMIT = ExtensionType.record_size_limit
_PRE_SHARED_KEY = ExtensionType.pre_shared_key
_EARLY_DATA = ExtensionType.early_data
_SUPPORTED_VERSIONS = ExtensionType.supported_versions
_COOKIE = ExtensionType.cookie
_PSK_KEY_EXCHANGE_MODES = ExtensionType.psk_key_exchange_modes
_CERTIFICATE_AUTHORITIES = ExtensionType.certificate_authorities
_SIGNATURE_ALGORITHMS_CERT = ExtensionType.signature_algorithms_cert
_KEY_SHARE = ExtensionType.key_share
_TLS1_3 = ProtocolVersion.TLS1_3


def read_offer(config: ServerConfig, ch: ClientHello) -> Offer:
    """Decode every extension we act on and enforce the mandatory-extension rules of §9.2.

    Extensions we only check (padding, cookie, record_size_limit, ...) are parsed strictly too, so a
    malformed one fails the handshake whatever we negotiate.
    """
    exts = ext.extension_map(ch.extensions)
    get = exts.get
    sv = get(_SUPPORTED_VERSIONS)
    if sv is None or _TLS1_3 not in ext.parse_supported_versions_client(sv):
        raise AlertError(AlertDescription.protocol_version, "client does not offer TLS 1.3 (TLS 1.2 is not enabled)")
    if ch.legacy_compression_methods != b"\x00":
        raise AlertError(AlertDescription.illegal_parameter, "TLS 1.3 ClientHello must offer only null compression")
    psks: OfferedPsks | None = None
    psk_modes: list[PskKeyExchangeMode] = []
    data = get(_PSK_KEY_EXCHANGE_MODES)
    if data is not None:
        psk_modes = ext.parse_psk_modes(data)
    data = get(_PRE_SHARED_KEY)
    if data is not None:
        if ch.extensions[-1].type is not _PRE_SHARED_KEY:
            raise AlertError(AlertDescription.illegal_parameter, "pre_shared_key is not the last extension")
        psks = ext.parse_offered_psks(data)
        if _PSK_KEY_EXCHANGE_MODES not in exts:
            raise AlertError(AlertDescription.missing_extension, "pre_shared_key without psk_key_exchange_modes")
    groups_data = get(_SUPPORTED_GROUPS)
    shares_data = get(_KEY_SHARE)
    if (groups_data is None) != (shares_data is None):
        raise AlertError(AlertDescription.missing_extension, "supported_groups and key_share must come together")
    schemes_data = get(_SIGNATURE_ALGORITHMS)
    if psks is None:
        for kind in (_SUPPORTED_GROUPS, _SIGNATURE_ALGORITHMS):
            if kind not in exts:
                raise AlertError(AlertDescription.missing_extension, f"ClientHello lacks {kind.name}")
    suite = choose_suite(ch.cipher_suites, config.cipher_suites, config.prefer_server_order)
    if suite is None:
        raise AlertError(
            AlertDescription.handshake_failure,
            f"no common cipher suite (client offered {[s.name for s in dict.fromkeys(ch.cipher_suites)][:16]})",
        )
    client_groups: list[NamedGroup] = []
    shares: list[KeyShareEntry] = []
    if groups_data is not None and shares_data is not None:
        client_groups = ext.parse_supported_groups(groups_data)
        shares = ext.parse_key_share_client(shares_data)
        offered = set(client_groups)
        for share in shares:
            if share.group not in offered:
                raise AlertError(
                    AlertDescription.illegal_parameter, f"key share for unoffered group {share.group.name}"
                )
    schemes = ext.parse_signature_algorithms(schemes_data) if schemes_data is not None else []
    data = get(_SERVER_NAME)
    server_name = ext.parse_server_name(data) if data is not None else None
    data = get(_ALPN)
    alpn = ext.parse_alpn(data) if data is not None else None
    data = get(_STATUS_REQUEST)
    status_request = data is not None and ext.parse_status_request(data) == 1
    early_data = False
    data = get(_EARLY_DATA)
    if data is not None:
        ext.parse_empty(data, "early_data")
        early_data = psks is not None
    _check_other_extensions(exts)
    return Offer(
        hello=ch,
        exts=exts,
        suite=suite,
        client_groups=client_groups,
        shares=shares,
        schemes=schemes,
        server_name=server_name,
        alpn=alpn,
        status_request=status_request,
        psks=psks,
        psk_modes=psk_modes,
        early_data=early_data,
    )


# ClientHello extensions we accept but do not act on during negotiation: still parsed strictly (§4.2).
_CHECKED_ONLY: tuple[tuple[ExtensionType, Callable[[bytes], object]], ...] = (
    (_PADDING, ext.parse_padding),
    (_RECORD_SIZE_LIMIT, ext.parse_record_size_limit),
    (_COOKIE, ext.parse_cookie),
    (_SIGNATURE_ALGORITHMS_CERT, ext.parse_signature_algorithms),
    (_CERTIFICATE_AUTHORITIES, ext.parse_certificate_authorities),
)


_CHECKED_ONLY_KINDS = frozenset([*(kind for kind, _ in _CHECKED_ONLY), ExtensionType.oid_filters])


def _check_other_extensions(exts: dict[ExtensionType, bytes]) -> None:
    """Strictly parse the ClientHello extensions we accept but do not act on here (§4.2); oid_filters, which
    §4.2 allows in CertificateRequest only, is illegal_parameter."""
    if _CHECKED_ONLY_KINDS.isdisjoint(exts):  # the usual case: none of them
        return
    if ExtensionType.oid_filters in exts:
        raise AlertError(AlertDescription.illegal_parameter, "oid_filters is not allowed in a ClientHello")
    for kind, parse in _CHECKED_ONLY:
        data = exts.get(kind)
        if data is not None:
            parse(data)


def choose_group(config: ServerConfig, offer: Offer) -> tuple[NamedGroup, KeyShareEntry | None]:
    """A group both support, preferring one the client already sent a share for (saves the HRR round trip)."""
    ours, theirs = config.groups, offer.client_groups  # ours is a handful: scanning it beats building a set
    if config.prefer_server_order:
        mutual = [g for g in ours if g in theirs]
    else:  # once each: a hello may repeat a group thousands of times (each repeat rescanned the shares)
        mutual = list(dict.fromkeys([g for g in theirs if g in ours]))
    if not mutual:
        raise AlertError(
            AlertDescription.handshake_failure,
            f"no common group (client offered {[g.name for g in dict.fromkeys(offer.client_groups)][:16]})",
        )
    if len(offer.shares) == 1:  # the usual hello
        share = offer.shares[0]
        return (share.group, share) if share.group in mutual else (mutual[0], None)
    shares = {share.group: share for share in offer.shares}  # one per group (parse_key_share_client)
    for g in mutual:
        found = shares.get(g)
        if found is not None:
            return g, found
    return mutual[0], None


def _matches_name(cert: CertifiedKey, name: str) -> bool:
    """RFC 6125 §6.4: exact DNS-ID or a left-most-label wildcard."""
    name = name.lower()
    for dns in cert.dns_names:
        if dns == name or (dns.startswith("*.") and "." in name and name.split(".", 1)[1] == dns[2:]):
            return True
    return False


def choose_certificate(
    config: ServerConfig, server_name: str | None, schemes: Sequence[SignatureScheme]
) -> tuple[CertifiedKey, SignatureScheme]:
    """SNI and signature_algorithms pick the certificate (§4.4.2.2); the first usable one is the default."""
    if config.cert_resolver is not None:
        chosen = config.cert_resolver(server_name, schemes)
        candidates: list[CertifiedKey] = [chosen] if chosen is not None else []
    elif len(config.certificates) == 1 or not server_name:  # nothing to reorder
        candidates = list(config.certificates)
    else:
        named = [c for c in config.certificates if _matches_name(c, server_name)]
        candidates = named + [c for c in config.certificates if c not in named]
    for cert in candidates:
        scheme = choose_scheme(cert.schemes, schemes)
        if scheme is not None:
            return cert, scheme
    raise AlertError(
        AlertDescription.handshake_failure,
        f"no certificate for {server_name!r} signs with any of {[s.name for s in schemes]}",
    )


def choose_alpn(config: ServerConfig, offered: list[str] | None) -> str | None:
    """RFC 7301 §3.2: server preference; no overlap is ``no_application_protocol``."""
    if offered is None or not config.alpn:
        return None
    for proto in config.alpn:
        if proto in offered:
            return proto
    raise AlertError(
        AlertDescription.no_application_protocol, f"client offered ALPN {offered}, we serve {list(config.alpn)}"
    )
