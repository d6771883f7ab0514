"""What a server reads out of a ClientHello and what it chooses from it (RFC 8446 §4.1.1, §4.2, §9.2)."""

from __future__ import annotations

from collections.abc import Sequence
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


def read_offer(config: ServerConfig, ch: ClientHello) -> Offer:
    """Decode every extension we act on and enforce the mandatory-extension rules of §9.2."""
    exts = ext.extension_map(ch.extensions)
    sv = exts.get(ExtensionType.supported_versions)
    if sv is None or ProtocolVersion.TLS1_3 not in ext.parse_supported_versions_client(sv):
        raise AlertError(AlertDescription.protocol_version, "client does not offer TLS 1.3 (TLS 1.2 is not enabled)")
    if ch.legacy_compression_methods != b"\x00":
        raise AlertError(AlertDescription.illegal_parameter, "TLS 1.3 ClientHello must offer only null compression")
    psks: OfferedPsks | None = None
    psk_modes: list[PskKeyExchangeMode] = []
    if ExtensionType.psk_key_exchange_modes in exts:
        psk_modes = ext.parse_psk_modes(exts[ExtensionType.psk_key_exchange_modes])
    if ExtensionType.pre_shared_key in exts:
        if ch.extensions[-1].type is not ExtensionType.pre_shared_key:
            raise AlertError(AlertDescription.illegal_parameter, "pre_shared_key is not the last extension")
        psks = ext.parse_offered_psks(exts[ExtensionType.pre_shared_key])
        if ExtensionType.psk_key_exchange_modes not in exts:
            raise AlertError(AlertDescription.missing_extension, "pre_shared_key without psk_key_exchange_modes")
    has_groups = ExtensionType.supported_groups in exts
    if has_groups != (ExtensionType.key_share in exts):
        raise AlertError(AlertDescription.missing_extension, "supported_groups and key_share must come together")
    if psks is None:
        for kind in (ExtensionType.supported_groups, ExtensionType.signature_algorithms):
            if kind not in exts:
                raise AlertError(AlertDescription.missing_extension, f"ClientHello lacks {kind.name}")
    suite = choose_suite(ch.cipher_suites, config.cipher_suites, config.prefer_server_order)
    if suite is None:
        raise AlertError(
            AlertDescription.handshake_failure,
            f"no common cipher suite (client offered {[s.name for s in ch.cipher_suites]})",
        )
    client_groups = ext.parse_supported_groups(exts[ExtensionType.supported_groups]) if has_groups else []
    shares = ext.parse_key_share_client(exts[ExtensionType.key_share]) if has_groups else []
    offered = set(client_groups)
    for share in shares:
        if share.group not in offered:
            raise AlertError(AlertDescription.illegal_parameter, f"key share for unoffered group {share.group.name}")
    schemes: list[SignatureScheme] = []
    if ExtensionType.signature_algorithms in exts:
        schemes = ext.parse_signature_algorithms(exts[ExtensionType.signature_algorithms])
    server_name = None
    if ExtensionType.server_name in exts:
        server_name = ext.parse_server_name(exts[ExtensionType.server_name])
    alpn = None
    if ExtensionType.application_layer_protocol_negotiation in exts:
        alpn = ext.parse_alpn(exts[ExtensionType.application_layer_protocol_negotiation])
    status_request = False
    if ExtensionType.status_request in exts:
        status_request = ext.parse_status_request(exts[ExtensionType.status_request]) == 1
    early_data = False
    if ExtensionType.early_data in exts:
        ext.parse_empty(exts[ExtensionType.early_data], "early_data")
        early_data = psks is not None
    if ExtensionType.padding in exts:
        ext.parse_padding(exts[ExtensionType.padding])
    if ExtensionType.record_size_limit in exts:
        ext.parse_record_size_limit(exts[ExtensionType.record_size_limit])
    if ExtensionType.cookie in exts:
        ext.parse_cookie(exts[ExtensionType.cookie])
    if ExtensionType.signature_algorithms_cert in exts:
        ext.parse_signature_algorithms(exts[ExtensionType.signature_algorithms_cert])
    if ExtensionType.certificate_authorities in exts:
        ext.parse_certificate_authorities(exts[ExtensionType.certificate_authorities])
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


def choose_group(config: ServerConfig, offer: Offer) -> tuple[NamedGroup, KeyShareEntry | None]:
    """A group both support, preferring one the client already sent a share for (saves the HRR round trip)."""
    ours = set(config.groups)
    theirs = set(offer.client_groups)
    mutual = (
        [g for g in config.groups if g in theirs]
        if config.prefer_server_order
        else [g for g in offer.client_groups if g in ours]
    )
    if not mutual:
        raise AlertError(
            AlertDescription.handshake_failure,
            f"no common group (client offered {[g.name for g in offer.client_groups]})",
        )
    by_group = {s.group: s for s in offer.shares}
    for g in mutual:
        if g in by_group:
            return g, by_group[g]
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
    else:
        named = [c for c in config.certificates if server_name and _matches_name(c, server_name)]
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
