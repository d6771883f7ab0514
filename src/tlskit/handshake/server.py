"""The server handshake (RFC 8446 §2, §4): one class per state, ``handle(ctx, msg, raw) -> next state``."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import CertifiedKey, ServerConfig
from ..crypto import groups, keyschedule, signatures
from ..crypto.suites import SuiteParams, suite_params
from ..crypto.transcript import Transcript
from ..enums import (
    AlertDescription,
    CipherSuite,
    ExtensionType,
    NamedGroup,
    ProtocolVersion,
    SignatureScheme,
)
from ..errors import AlertError
from ..events import HandshakeComplete
from ..messages import extensions as ext
from ..messages.extensions import Extension, KeyShareEntry
from ..messages.handshake import (
    HRR_RANDOM,
    Certificate,
    CertificateEntry,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    Finished,
    HandshakeMessage,
    ServerHello,
)
from .common import Context, Session, check_finished, choose_scheme, choose_suite, make_finished, unexpected

__all__ = ["ExpectClientHello"]


@dataclass(slots=True)
class _Offer:
    """What the server reads out of a ClientHello (§4.1.2, §4.2)."""

    hello: ClientHello
    exts: dict[ExtensionType, bytes]
    suite: CipherSuite
    client_groups: list[NamedGroup]
    shares: list[KeyShareEntry]
    schemes: list[SignatureScheme]
    server_name: str | None
    alpn: list[str] | None
    status_request: bool


def _read_offer(config: ServerConfig, ch: ClientHello) -> _Offer:
    exts = ext.extension_map(ch.extensions)
    sv = exts.get(ExtensionType.supported_versions)
    if sv is None or ProtocolVersion.TLS1_3 not in ext.parse_supported_versions_client(sv):
        raise AlertError(
            AlertDescription.protocol_version, "client does not offer TLS 1.3 (TLS 1.2 is not enabled)"
        )
    if ch.legacy_compression_methods != b"\x00":
        raise AlertError(
            AlertDescription.illegal_parameter, "TLS 1.3 ClientHello must offer only null compression"
        )
    if (
        ch.extensions
        and ch.extensions[-1].type is not ExtensionType.pre_shared_key
        and (ExtensionType.pre_shared_key in exts)
    ):
        raise AlertError(AlertDescription.illegal_parameter, "pre_shared_key is not the last extension")
    if ExtensionType.pre_shared_key in exts:
        ext.parse_offered_psks(exts[ExtensionType.pre_shared_key])
        if ExtensionType.psk_key_exchange_modes not in exts:
            raise AlertError(
                AlertDescription.missing_extension, "pre_shared_key without psk_key_exchange_modes"
            )
    for kind in (ExtensionType.supported_groups, ExtensionType.key_share, ExtensionType.signature_algorithms):
        if kind not in exts:
            raise AlertError(AlertDescription.missing_extension, f"ClientHello lacks {kind.name}")
    suite = choose_suite(ch.cipher_suites, config.cipher_suites, config.prefer_server_order)
    if suite is None:
        raise AlertError(
            AlertDescription.handshake_failure,
            f"no common cipher suite (client offered {[s.name for s in ch.cipher_suites]})",
        )
    client_groups = ext.parse_supported_groups(exts[ExtensionType.supported_groups])
    shares = ext.parse_key_share_client(exts[ExtensionType.key_share])
    offered = set(client_groups)
    for share in shares:
        if share.group not in offered:
            raise AlertError(
                AlertDescription.illegal_parameter, f"key share for unoffered group {share.group.name}"
            )
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
    for kind in (ExtensionType.psk_key_exchange_modes,):
        if kind in exts:
            ext.parse_psk_modes(exts[kind])
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
    return _Offer(ch, exts, suite, client_groups, shares, schemes, server_name, alpn, status_request)


def _choose_group(config: ServerConfig, offer: _Offer) -> tuple[NamedGroup, KeyShareEntry | None]:
    """A group both support, preferring one the client already sent a share for (saves the HRR round trip)."""
    ours = set(config.groups)
    mutual = (
        [g for g in config.groups if g in set(offer.client_groups)]
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
    from cryptography import x509

    try:
        sans = cert.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    name = name.lower()
    for dns in sans.get_values_for_type(x509.DNSName):
        dns = dns.lower()
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


def _choose_alpn(config: ServerConfig, offered: list[str] | None) -> str | None:
    """RFC 7301 §3.2: server preference; no overlap is ``no_application_protocol``."""
    if offered is None or not config.alpn:
        return None
    for proto in config.alpn:
        if proto in offered:
            return proto
    raise AlertError(
        AlertDescription.no_application_protocol,
        f"client offered ALPN {offered}, we serve {list(config.alpn)}",
    )


@dataclass(slots=True)
class ExpectClientHello:
    """The server's first state (§4.1.2)."""

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, ClientHello):
            raise unexpected("ClientHello", msg)
        config = ctx.config
        assert isinstance(config, ServerConfig)
        offer = _read_offer(config, msg)
        group, share = _choose_group(config, offer)
        params = suite_params(offer.suite)
        transcript = Transcript(params.hash_name)
        transcript.add(raw)
        if share is None:
            return _hello_retry(ctx, config, offer, group, params, transcript)
        return _server_flight(ctx, config, offer, group, share, params, transcript, hello_retry=False)


def _hello_retry(
    ctx: Context,
    config: ServerConfig,
    offer: _Offer,
    group: NamedGroup,
    params: SuiteParams,
    transcript: Transcript,
) -> ExpectSecondClientHello:
    """§4.1.4: ask for a share of ``group``; the cookie binds the retry to this first ClientHello."""
    transcript.replace_with_message_hash()
    exts = [
        Extension(ExtensionType.key_share, ext.key_share_hrr_body(group)),
        Extension(
            ExtensionType.supported_versions, ext.supported_versions_server_body(ProtocolVersion.TLS1_3)
        ),
    ]
    cookie = None
    if config.hello_retry_cookie:
        cookie = hmac.digest(ctx.random(32), transcript.digest(), "sha256")
        exts.append(Extension(ExtensionType.cookie, ext.cookie_body(cookie)))
    hrr = ServerHello(
        random=HRR_RANDOM,
        legacy_session_id=offer.hello.legacy_session_id,
        cipher_suite=offer.suite,
        extensions=tuple(exts),
    ).encode()
    ctx.send_handshake(hrr)
    transcript.add(hrr)
    if config.middlebox_compat and offer.hello.legacy_session_id:
        ctx.send_change_cipher_spec()
    return ExpectSecondClientHello(
        first=offer, group=group, params=params, transcript=transcript, cookie=cookie
    )


@dataclass(slots=True)
class ExpectSecondClientHello:
    """§4.1.2: after HelloRetryRequest the client repeats its hello with the requested share."""

    first: _Offer
    group: NamedGroup
    params: SuiteParams
    transcript: Transcript
    cookie: bytes | None

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, ClientHello):
            raise unexpected("second ClientHello", msg)
        config = ctx.config
        assert isinstance(config, ServerConfig)
        offer = _read_offer(config, msg)
        if offer.suite != self.first.suite or msg.legacy_session_id != self.first.hello.legacy_session_id:
            raise AlertError(
                AlertDescription.illegal_parameter, "second ClientHello changed suite or session id"
            )
        if msg.random != self.first.hello.random:
            raise AlertError(AlertDescription.illegal_parameter, "second ClientHello changed its random")
        if ExtensionType.early_data in offer.exts:
            raise AlertError(AlertDescription.illegal_parameter, "early_data in the second ClientHello")
        if self.cookie is not None:
            got = offer.exts.get(ExtensionType.cookie)
            if got is None or not hmac.compare_digest(ext.parse_cookie(got), self.cookie):
                raise AlertError(
                    AlertDescription.illegal_parameter, "second ClientHello does not echo our cookie"
                )
        if len(offer.shares) != 1 or offer.shares[0].group != self.group:
            raise AlertError(
                AlertDescription.illegal_parameter,
                f"second ClientHello must carry one {self.group.name} share",
            )
        self.transcript.add(raw)
        return _server_flight(
            ctx, config, offer, self.group, offer.shares[0], self.params, self.transcript, hello_retry=True
        )


def _server_flight(
    ctx: Context,
    config: ServerConfig,
    offer: _Offer,
    group: NamedGroup,
    share: KeyShareEntry,
    params: SuiteParams,
    transcript: Transcript,
    *,
    hello_retry: bool,
) -> ExpectClientFinished:
    """ServerHello, then EncryptedExtensions, Certificate, CertificateVerify and Finished (§2)."""
    cert, scheme = choose_certificate(config, offer.server_name, offer.schemes)
    alpn = _choose_alpn(config, offer.alpn)
    server_share, shared = groups.server_key_share(group, share.key_exchange, ctx.random)
    sh = ServerHello(
        random=ctx.random(32),
        legacy_session_id=offer.hello.legacy_session_id,
        cipher_suite=offer.suite,
        extensions=(
            Extension(ExtensionType.key_share, ext.key_share_server_body(KeyShareEntry(group, server_share))),
            Extension(
                ExtensionType.supported_versions, ext.supported_versions_server_body(ProtocolVersion.TLS1_3)
            ),
        ),
    ).encode()
    ctx.send_handshake(sh)
    transcript.add(sh)
    if config.middlebox_compat and offer.hello.legacy_session_id and not hello_retry:
        ctx.send_change_cipher_spec()
    hs = keyschedule.EarlySecret(params).handshake_secret(shared)
    th = transcript.digest()
    c_hs, s_hs = hs.client_traffic_secret(th), hs.server_traffic_secret(th)
    ctx.key_log("CLIENT_HANDSHAKE_TRAFFIC_SECRET", c_hs)
    ctx.key_log("SERVER_HANDSHAKE_TRAFFIC_SECRET", s_hs)
    ctx.set_write_secret(params, s_hs)

    ee: list[Extension] = []
    if config.send_supported_groups:
        ee.append(Extension(ExtensionType.supported_groups, ext.supported_groups_body(config.groups)))
    if ExtensionType.record_size_limit in offer.exts:
        limit = ext.parse_record_size_limit(offer.exts[ExtensionType.record_size_limit])
        setter = getattr(ctx, "set_send_record_limit", None)
        if setter is not None:
            setter(limit)
        own = config.record_size_limit if config.record_size_limit is not None else (1 << 14) + 1
        ee.append(Extension(ExtensionType.record_size_limit, ext.record_size_limit_body(own)))
    if offer.server_name is not None:
        ee.append(Extension(ExtensionType.server_name, b""))
    if alpn is not None:
        ee.append(Extension(ExtensionType.application_layer_protocol_negotiation, ext.alpn_body([alpn])))
    for raw_msg in (EncryptedExtensions(extensions=tuple(ee)).encode(), _certificate(config, cert, offer)):
        ctx.send_handshake(raw_msg)
        transcript.add(raw_msg)
    signature = cert.sign(scheme, signatures.certificate_verify_input(True, transcript.digest()))
    cv = CertificateVerify(algorithm=scheme, signature=signature).encode()
    ctx.send_handshake(cv)
    transcript.add(cv)
    fin = make_finished(params, s_hs, transcript)
    ctx.send_handshake(fin)
    transcript.add(fin)
    master = hs.master_secret()
    th = transcript.digest()
    c_ap, s_ap = master.client_traffic_secret(th), master.server_traffic_secret(th)
    exporter = master.exporter_master_secret(th)
    ctx.key_log("CLIENT_TRAFFIC_SECRET_0", c_ap)
    ctx.key_log("SERVER_TRAFFIC_SECRET_0", s_ap)
    ctx.key_log("EXPORTER_SECRET", exporter)
    ctx.set_write_secret(params, s_ap)
    ctx.set_read_secret(params, c_hs)
    return ExpectClientFinished(
        params=params,
        transcript=transcript,
        master=master,
        c_hs=c_hs,
        c_ap=c_ap,
        exporter=exporter,
        complete=HandshakeComplete(
            version=ProtocolVersion.TLS1_3,
            cipher_suite=offer.suite,
            group=group,
            signature_scheme=scheme,
            alpn=alpn,
            server_name=offer.server_name,
            peer_certificates=(),
            hello_retry=hello_retry,
        ),
    )


def _certificate(config: ServerConfig, cert: CertifiedKey, offer: _Offer) -> bytes:
    """§4.4.2 with the OCSP staple in the leaf's entry when the client asked (§4.4.2.1)."""
    staple = None
    if offer.status_request:
        staple = config.ocsp_staple(cert) if config.ocsp_staple is not None else cert.ocsp_response
    entries = [CertificateEntry(cert_data=c) for c in cert.chain]
    if staple:
        entries[0] = CertificateEntry(
            cert_data=cert.chain[0],
            extensions=(Extension(ExtensionType.status_request, ext.certificate_status_body(staple)),),
        )
    return Certificate(entries=tuple(entries)).encode()


@dataclass(slots=True)
class ExpectClientFinished:
    """§4.4.4: the client's Finished completes the handshake."""

    params: SuiteParams
    transcript: Transcript
    master: keyschedule.MasterSecret
    c_hs: bytes
    c_ap: bytes
    exporter: bytes
    complete: HandshakeComplete

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, Finished):
            raise unexpected("Finished", msg)
        check_finished(self.params, self.c_hs, self.transcript, msg)
        self.transcript.add(raw)
        ctx.set_read_secret(self.params, self.c_ap)
        session = Session(
            params=self.params,
            exporter_master_secret=self.exporter,
            resumption_master_secret=self.master.resumption_master_secret(self.transcript.digest()),
            server_name=self.complete.server_name,
            alpn=self.complete.alpn,
            group=self.complete.group,
        )
        ctx.established(session)
        ctx.emit(self.complete)
        return ServerConnected(session)


@dataclass(slots=True)
class ServerConnected:
    """Post-handshake: only KeyUpdate is valid from a client, and the connection handles it (§4.6.3)."""

    session: Session

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        raise unexpected("KeyUpdate", msg)
