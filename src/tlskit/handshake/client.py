"""The client handshake (RFC 8446 §2, §4): one class per state, ``handle(ctx, msg, raw) -> next state``."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cryptography import x509

from ..config import CertifiedKey, ClientConfig
from ..crypto import groups, keyschedule, signatures
from ..crypto.suites import SuiteParams, suite_params
from ..crypto.transcript import PendingTranscript, Transcript
from ..enums import (
    AlertDescription,
    EncryptionLevel,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    ProtocolVersion,
    PskKeyExchangeMode,
    SignatureScheme,
)
from ..errors import AlertError, ConfigError
from ..events import HandshakeComplete
from ..messages import extensions as ext
from ..messages.extensions import Extension, KeyShareEntry
from ..messages.handshake import (
    DOWNGRADE_TLS11,
    DOWNGRADE_TLS12,
    Certificate,
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    EndOfEarlyData,
    Finished,
    HandshakeMessage,
    ServerHello,
)
from ..pki.verify import verify_server_path
from ..stores.base import StoredTicket
from . import psk
from .common import Context, Session, check_certificate_verify, check_finished, choose_scheme, make_finished, unexpected

__all__ = ["ClientStart", "build_client_hello"]

log = logging.getLogger("tlskit.handshake")


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name.strip("[]"))  # "[::1]" as URLs write it
    except ValueError:
        return False
    return True


def sni_host(server_name: str) -> str | None:
    """``server_name`` as the server_name extension carries it (RFC 6066 §3): None for an IP literal (bracketed
    or not: IP addresses are not permitted there), else the A-label of the name without its trailing dot
    (``bücher.example`` -> ``xn--bcher-kva.example``), as Python's ssl and curl send it."""
    if _is_ip(server_name):
        return None
    host = server_name[:-1] if server_name.endswith(".") else server_name
    if host.isascii() and host:
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ConfigError(f"server_name {server_name!r} is not a valid host name") from None


def build_client_hello(
    config: ClientConfig,
    random: bytes,
    session_id: bytes,
    shares: list[groups.ClientKeyShare],
    *,
    early_data: bool = False,
) -> ClientHello:
    """§4.1.2 from the config; extension order is fixed so the bytes are reproducible."""
    exts: list[Extension] = []
    # RFC 6066 §3: literal IP addresses are not permitted in server_name.
    if config.server_name and (host := sni_host(config.server_name)) is not None:
        exts.append(Extension(ExtensionType.server_name, ext.server_name_body(host)))
    exts.append(Extension(ExtensionType.supported_groups, ext.supported_groups_body(config.groups)))
    exts.append(
        Extension(ExtensionType.signature_algorithms, ext.signature_algorithms_body(config.signature_algorithms))
    )
    if config.alpn:
        exts.append(Extension(ExtensionType.application_layer_protocol_negotiation, ext.alpn_body(config.alpn)))
    if config.request_ocsp:
        exts.append(Extension(ExtensionType.status_request, ext.status_request_body()))
    if config.record_size_limit is not None:
        exts.append(Extension(ExtensionType.record_size_limit, ext.record_size_limit_body(config.record_size_limit)))
    exts.append(
        Extension(
            ExtensionType.key_share,
            ext.key_share_client_body(KeyShareEntry(s.group, s.public) for s in shares),
        )
    )
    exts.append(
        Extension(ExtensionType.supported_versions, ext.supported_versions_client_body([ProtocolVersion.TLS1_3]))
    )
    exts.append(Extension(ExtensionType.psk_key_exchange_modes, ext.psk_modes_body(config.psk_modes)))
    if early_data:
        exts.append(Extension(ExtensionType.early_data, b""))
    return ClientHello(
        random=random,
        legacy_session_id=session_id,
        cipher_suites=config.cipher_suites,
        extensions=tuple(exts),
    )


def offered_extensions(ch: ClientHello) -> frozenset[ExtensionType]:
    return frozenset(e.type for e in ch.extensions)


def _usable_ticket(config: ClientConfig, now: float) -> StoredTicket | None:
    """A stored ticket for this server whose suite we still offer (§4.2.11, §4.6.1)."""
    key = config.session_key
    if config.session_store is None or key is None:
        return None
    ticket = config.session_store.take(key, now)
    if ticket is None or ticket.cipher_suite not in config.cipher_suites:
        return None
    return ticket


def _can_send_early_data(config: ClientConfig, ticket: StoredTicket) -> bool:
    """§4.2.10: only with a ticket that allows it, and with the ALPN the ticket was issued under."""
    if not config.early_data or ticket.max_early_data_size == 0:
        return False
    # the same ALPN or none on both sides: a ticket issued without ALPN does not carry 0-RTT for h2 (OpenSSL
    # rejects it, and the data would then be resent under another protocol than it was written for)
    return ticket.alpn == (config.alpn[0] if config.alpn else None)


@dataclass(slots=True)
class ClientStart:
    """Before ``start()``: build and send the first ClientHello, with a PSK and early data when possible."""

    client_hello: ClientHello | None = None
    shares: list[groups.ClientKeyShare] | None = None
    ticket: StoredTicket | None = None
    retry_hello: ClientHello | None = None  # RFC 8448 §5 replay: the second ClientHello to answer an HRR with

    def start(self, ctx: Context) -> ExpectServerHello:
        config = ctx.config
        assert isinstance(config, ClientConfig)
        ticket = self.ticket
        if self.client_hello is None or self.shares is None:
            if ticket is None:
                ticket = _usable_ticket(config, ctx.now())
            early = ticket is not None and _can_send_early_data(config, ticket)
            if ticket is not None and PskKeyExchangeMode.psk_dhe_ke not in config.psk_modes:
                shares = []  # psk_ke only: no key exchange to pay for (a rejected ticket costs an HRR)
            else:
                shares = [groups.client_key_share(g, config.random) for g in config.key_shares]
            session_id = ctx.random(32) if config.middlebox_compat else b""
            ch = build_client_hello(config, ctx.random(32), session_id, shares, early_data=early)
            raw = ch.encode()
            if ticket is not None:
                params = suite_params(ticket.cipher_suite)
                ch = replace(ch, extensions=(*ch.extensions, psk.psk_extension(ticket, ctx.now(), params.hash_len)))
                raw = psk.client_binder(ch.encode(), Transcript(params.hash_name), params, ticket.psk)
                ch = ClientHello.decode(raw[4:])
        else:  # injected (RFC 8448 replay): the ClientHello, key shares and ticket are given
            ch, shares = self.client_hello, self.shares
            raw = ch.encode()
            early = ticket is not None and any(e.type is ExtensionType.early_data for e in ch.extensions)
        ctx.send_handshake(raw)
        transcript = PendingTranscript()
        transcript.add(raw)
        sent_ccs = False
        if early:
            assert ticket is not None
            params = suite_params(ticket.cipher_suite)
            ch_hash = transcript.resolve(params.hash_name).digest()
            secret = keyschedule.EarlySecret(params, ticket.psk).client_early_traffic_secret(ch_hash)
            ctx.key_log("CLIENT_EARLY_TRAFFIC_SECRET", secret)
            if config.middlebox_compat:  # §D.4: the CCS goes right after a ClientHello with early data
                ctx.send_change_cipher_spec()
                sent_ccs = True
            ctx.set_write_secret(params, secret, EncryptionLevel.early_data)
            ctx.allow_early_data(ticket.max_early_data_size)
        return ExpectServerHello(
            config=config,
            client_hello=ch,
            shares=shares,
            transcript=transcript,
            ticket=ticket,
            early=early,
            sent_ccs=sent_ccs,
            retry_hello=self.retry_hello,
        )


@dataclass(slots=True)
class ExpectServerHello:
    """§4.1.3/§4.1.4: a ServerHello or (once) a HelloRetryRequest."""

    config: ClientConfig
    client_hello: ClientHello
    shares: list[groups.ClientKeyShare]
    transcript: PendingTranscript | Transcript
    ticket: StoredTicket | None = None
    early: bool = False
    hrr: ServerHello | None = None
    sent_ccs: bool = False
    retry_hello: ClientHello | None = None

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, ServerHello):
            raise unexpected("ServerHello", msg)
        self._check_common(msg)
        if msg.is_hello_retry_request:
            return self._retry(ctx, msg, raw)
        exts = ext.extension_map(msg.extensions)
        params = suite_params(msg.cipher_suite)
        psk_secret: bytes | None = None
        if ExtensionType.pre_shared_key in exts:
            if self.ticket is None or ext.parse_selected_psk(exts[ExtensionType.pre_shared_key]) != 0:
                raise AlertError(AlertDescription.illegal_parameter, "server selected a PSK we did not offer")
            if suite_params(self.ticket.cipher_suite).hash_name != params.hash_name:
                raise AlertError(AlertDescription.illegal_parameter, "server resumed with a suite of another hash")
            psk_secret = self.ticket.psk
        if self.hrr is not None and msg.cipher_suite != self.hrr.cipher_suite:
            raise AlertError(AlertDescription.illegal_parameter, "ServerHello suite differs from HelloRetryRequest")
        shared: bytes | None = None
        group: NamedGroup | None = None
        if ExtensionType.key_share in exts:
            entry = ext.parse_key_share_server(exts[ExtensionType.key_share])
            share = next((s for s in self.shares if s.group == entry.group), None)
            if share is None:
                raise AlertError(
                    AlertDescription.illegal_parameter, f"server chose {entry.group.name}, for which we sent no share"
                )
            if psk_secret is not None and PskKeyExchangeMode.psk_dhe_ke not in self.config.psk_modes:
                raise AlertError(AlertDescription.illegal_parameter, "server used psk_dhe_ke, which we did not offer")
            shared, group = share.finish(entry.key_exchange), entry.group
        elif psk_secret is None:
            raise AlertError(AlertDescription.missing_extension, "ServerHello has no key_share")
        elif PskKeyExchangeMode.psk_ke not in self.config.psk_modes:
            raise AlertError(AlertDescription.missing_extension, "server chose psk_ke, which we did not offer")
        transcript = (
            self.transcript.resolve(params.hash_name)
            if isinstance(self.transcript, PendingTranscript)
            else self.transcript
        )
        if transcript.hash_name != params.hash_name:
            raise AlertError(AlertDescription.illegal_parameter, "ServerHello suite hash differs from HRR's")
        transcript.add(raw)
        early_secret = (
            keyschedule.EarlySecret(params, psk_secret)
            if psk_secret is not None
            else keyschedule.EarlySecret.without_psk(params)
        )
        hs = early_secret.handshake_secret(shared)
        th = transcript.digest()
        c_hs, s_hs = hs.client_traffic_secret(th), hs.server_traffic_secret(th)
        ctx.key_log("CLIENT_HANDSHAKE_TRAFFIC_SECRET", c_hs)
        ctx.key_log("SERVER_HANDSHAKE_TRAFFIC_SECRET", s_hs)
        ctx.set_read_secret(params, s_hs, EncryptionLevel.handshake)
        early = self.early and psk_secret is not None
        if self.early and not early:
            ctx.early_data_finished(accepted=False)
        if not early:
            # From here on our alerts go out under the client handshake key, which the server reads with (§6).
            if self.config.middlebox_compat and not self.sent_ccs:
                ctx.send_change_cipher_spec()
            ctx.set_write_secret(params, c_hs, EncryptionLevel.handshake)
        return ExpectEncryptedExtensions(
            core=_Core(
                config=self.config,
                client_hello=self.client_hello,
                params=params,
                transcript=transcript,
                hs=hs,
                c_hs=c_hs,
                s_hs=s_hs,
                group=group,
                hello_retry=self.hrr is not None,
                resumed=psk_secret is not None,
                early=early,
                # a resumed session keeps the authentication of the one it resumes (§2.2): its server's chain too
                peer_chain=self.ticket.peer_chain if psk_secret is not None and self.ticket is not None else (),
            )
        )

    def _check_common(self, msg: ServerHello) -> None:
        """Checks a ServerHello and a HelloRetryRequest share (§4.1.3)."""
        exts = ext.extension_map(msg.extensions)
        sv = exts.get(ExtensionType.supported_versions)
        if sv is None:
            if msg.random[-8:] in (DOWNGRADE_TLS12, DOWNGRADE_TLS11):
                raise AlertError(AlertDescription.illegal_parameter, "downgrade sentinel in ServerHello.random")
            raise AlertError(
                AlertDescription.protocol_version, f"server chose legacy version {msg.legacy_version:#06x}"
            )
        if ext.parse_supported_versions_server(sv) != ProtocolVersion.TLS1_3:
            raise AlertError(AlertDescription.illegal_parameter, "server selected a version we did not offer")
        if msg.legacy_version != ProtocolVersion.TLS1_2:
            raise AlertError(AlertDescription.protocol_version, "ServerHello.legacy_version is not 0x0303")
        if msg.legacy_session_id != self.client_hello.legacy_session_id:
            raise AlertError(AlertDescription.illegal_parameter, "ServerHello does not echo our session id")
        if msg.cipher_suite not in self.client_hello.cipher_suites:
            raise AlertError(AlertDescription.illegal_parameter, f"server chose suite {msg.cipher_suite.name}")
        if msg.legacy_compression_method != 0:
            raise AlertError(AlertDescription.illegal_parameter, "ServerHello compression method is not null")
        ext.check_server_extensions(
            HandshakeType.server_hello,
            msg.extensions,
            offered_extensions(self.client_hello),
            hrr=msg.is_hello_retry_request,
        )

    def _retry(self, ctx: Context, msg: ServerHello, raw: bytes) -> ExpectServerHello:
        """§4.1.4: answer a HelloRetryRequest with a second ClientHello."""
        if self.hrr is not None:
            raise AlertError(AlertDescription.unexpected_message, "second HelloRetryRequest")
        exts = ext.extension_map(msg.extensions)
        group: NamedGroup | None = None
        if ExtensionType.key_share in exts:
            group = ext.parse_key_share_hrr(exts[ExtensionType.key_share])
            if group not in self.config.groups or any(s.group == group for s in self.shares):
                raise AlertError(AlertDescription.illegal_parameter, f"HelloRetryRequest asks for {group.name}")
        cookie = exts.get(ExtensionType.cookie)
        if cookie is not None:
            ext.parse_cookie(cookie)
        if group is None and cookie is None:
            raise AlertError(AlertDescription.illegal_parameter, "HelloRetryRequest would not change anything")
        params = suite_params(msg.cipher_suite)
        assert isinstance(self.transcript, PendingTranscript)
        transcript = self.transcript.resolve(params.hash_name)
        transcript.replace_with_message_hash()
        transcript.add(raw)
        shares = [groups.client_key_share(group, self.config.random)] if group is not None else self.shares
        ticket = self.ticket
        if ticket is not None and suite_params(ticket.cipher_suite).hash_name != params.hash_name:
            ticket = None  # §4.1.4: the PSK cannot be used with this suite's hash
        new_exts: list[Extension] = []
        for e in self.client_hello.extensions:
            if e.type is ExtensionType.early_data:  # §4.2.10: never after a HelloRetryRequest
                continue
            if e.type is ExtensionType.pre_shared_key:
                if ticket is not None:
                    new_exts.append(psk.psk_extension(ticket, ctx.now(), params.hash_len))
                continue
            if e.type is ExtensionType.key_share:
                e = Extension(
                    ExtensionType.key_share,
                    ext.key_share_client_body(KeyShareEntry(s.group, s.public) for s in shares),
                )
            new_exts.append(e)
            if e.type is ExtensionType.key_share and cookie is not None:
                new_exts.append(Extension(ExtensionType.cookie, cookie))
        if sum(4 + len(e.data) for e in new_exts) > (1 << 16) - 1:  # extensions<8..2^16-1> (§4.1.2)
            raise AlertError(AlertDescription.illegal_parameter,
                             f"HelloRetryRequest cookie of {len(cookie or b'')} bytes cannot be echoed in a "
                             "ClientHello (its extensions are limited to 65535 bytes)")
        ch2 = replace(self.client_hello, extensions=tuple(new_exts))
        if self.retry_hello is not None:
            ch2 = _injected_retry(self.retry_hello, self.client_hello, shares, cookie)
        if self.early:
            ctx.early_data_finished(accepted=False)
            ctx.clear_write_secret()  # the second ClientHello goes out in plaintext again
        sent_ccs = self.sent_ccs
        if self.config.middlebox_compat and not sent_ccs:
            ctx.send_change_cipher_spec()
            sent_ccs = True
        raw2 = ch2.encode()
        if ticket is not None:
            raw2 = psk.client_binder(raw2, transcript, params, ticket.psk)
            ch2 = ClientHello.decode(raw2[4:])
        ctx.send_handshake(raw2)
        transcript.add(raw2)
        return ExpectServerHello(
            config=self.config,
            client_hello=ch2,
            shares=shares,
            transcript=transcript,
            ticket=ticket,
            hrr=msg,
            sent_ccs=sent_ccs,
        )


def _injected_retry(
    injected: ClientHello, first: ClientHello, shares: list[groups.ClientKeyShare], cookie: bytes | None
) -> ClientHello:
    """An injected second ClientHello (RFC 8448 §5 replay: NSS orders and pads its extensions its own way),
    accepted only if it answers the HelloRetryRequest as ours would (§4.1.2): same random, session id and
    suites, exactly our new key share, the cookie echoed."""
    exts = ext.extension_map(injected.extensions)
    entries = ext.parse_key_share_client(exts.get(ExtensionType.key_share, b"\x00\x00"))
    same = (injected.random, injected.legacy_session_id, injected.cipher_suites) == (
        first.random, first.legacy_session_id, first.cipher_suites
    )
    if (
        not same
        or [(e.group, e.key_exchange) for e in entries] != [(s.group, s.public) for s in shares]
        or exts.get(ExtensionType.cookie) != cookie
        or ExtensionType.early_data in exts
    ):
        raise ConfigError("the injected second ClientHello does not answer this HelloRetryRequest")
    return injected


@dataclass(slots=True)
class _Core:
    """What every state after ServerHello carries."""

    config: ClientConfig
    client_hello: ClientHello
    params: SuiteParams
    transcript: Transcript
    hs: keyschedule.HandshakeSecret
    c_hs: bytes
    s_hs: bytes
    group: NamedGroup | None
    hello_retry: bool
    resumed: bool = False
    early: bool = False
    early_accepted: bool = False
    alpn: str | None = None
    peer_chain: tuple[bytes, ...] = ()
    ocsp_response: bytes | None = None
    scheme: SignatureScheme | None = None
    certificate_request: CertificateRequest | None = None


@dataclass(slots=True)
class ExpectEncryptedExtensions:
    core: _Core

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, EncryptedExtensions):
            raise unexpected("EncryptedExtensions", msg)
        core = self.core
        ext.check_server_extensions(
            HandshakeType.encrypted_extensions, msg.extensions, offered_extensions(core.client_hello)
        )
        exts = ext.extension_map(msg.extensions)
        if ExtensionType.server_name in exts:
            ext.parse_empty(exts[ExtensionType.server_name], "server_name")
        if ExtensionType.application_layer_protocol_negotiation in exts:
            chosen = ext.parse_alpn(exts[ExtensionType.application_layer_protocol_negotiation])
            if len(chosen) != 1 or chosen[0] not in core.config.alpn:
                raise AlertError(AlertDescription.illegal_parameter, f"server selected ALPN {chosen!r}")
            core.alpn = chosen[0]
            ctx.select_alpn(core.alpn)
        if ExtensionType.record_size_limit in exts:
            limit = ext.parse_record_size_limit(exts[ExtensionType.record_size_limit])
            ctx.set_send_record_limit(limit)
        if ExtensionType.supported_groups in exts:
            ext.parse_supported_groups(exts[ExtensionType.supported_groups])
        if ExtensionType.early_data in exts:
            ext.parse_empty(exts[ExtensionType.early_data], "early_data")
            if not core.early:
                raise AlertError(AlertDescription.illegal_parameter, "server accepted early data we did not send")
            core.early_accepted = True
        elif core.early:
            ctx.early_data_finished(accepted=False)
            ctx.set_write_secret(core.params, core.c_hs, EncryptionLevel.handshake)
        core.transcript.add(raw)
        if core.resumed:
            return ExpectFinished(core)
        return ExpectCertificateOrRequest(core)


@dataclass(slots=True)
class ExpectCertificateOrRequest:
    core: _Core

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        match msg:
            case CertificateRequest():
                if msg.context:
                    raise AlertError(AlertDescription.illegal_parameter, "handshake CertificateRequest context")
                # §4.3.2: unknown (and GREASE, RFC 8701) extensions are ignored; known ones must belong here.
                known = [e for e in msg.extensions if not e.type.name.startswith("unknown_")]
                ext.check_server_extensions(HandshakeType.certificate_request, known, frozenset(e.type for e in known))
                if ExtensionType.signature_algorithms not in ext.extension_map(msg.extensions):
                    raise AlertError(
                        AlertDescription.missing_extension, "CertificateRequest lacks signature_algorithms"
                    )
                self.core.certificate_request = msg
                self.core.transcript.add(raw)
                return ExpectCertificate(self.core)
            case Certificate():
                return ExpectCertificate(self.core).handle(ctx, msg, raw)
            case _:
                raise unexpected("Certificate or CertificateRequest", msg)


@dataclass(slots=True)
class ExpectCertificate:
    core: _Core

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, Certificate):
            raise unexpected("Certificate", msg)
        core = self.core
        if msg.context:
            raise AlertError(AlertDescription.illegal_parameter, "server Certificate has a request context")
        if not msg.entries:
            raise AlertError(AlertDescription.decode_error, "server sent an empty Certificate")
        offered = offered_extensions(core.client_hello)
        for i, entry in enumerate(msg.entries):
            ext.check_server_extensions(HandshakeType.certificate, entry.extensions, offered)
            for e in entry.extensions:
                if e.type is ExtensionType.status_request:
                    staple = ext.parse_certificate_status(e.data)
                    if i == 0:  # §4.4.2.1: a staple for an intermediate (multi-stapling) is allowed; we use the leaf's
                        core.ocsp_response = staple
        chain = tuple(e.cert_data for e in msg.entries)
        config = core.config
        path: tuple[x509.Certificate | bytes, ...] = chain
        if config.verify_peer:
            assert config.trust is not None
            now = datetime.datetime.fromtimestamp(ctx.now(), datetime.UTC)
            path = verify_server_path(  # check_hostname=False: a chain to a trusted root is enough (as ssl)
                chain, server_name=config.server_name if config.check_hostname else None, trust=config.trust,
                now=now, skew=config.clock_skew,
            )
            leaf = path[0]
        else:
            try:
                leaf = x509.load_der_x509_certificate(chain[0])
            except (ValueError, x509.InvalidVersion):
                raise AlertError(AlertDescription.bad_certificate, "server leaf certificate is not DER") from None
        if config.pins is not None:  # RFC 7469-style SPKI pins, on top of (or instead of) CA validation
            config.pins.check(chain, leaf_only=not config.verify_peer)
        if config.revocation is not None:
            now = datetime.datetime.fromtimestamp(ctx.now(), datetime.UTC)
            # the path the verifier built, not the list the server sent (it may carry decoys: §4.4.2 lets it)
            for warning in config.revocation.check(path, core.ocsp_response, now, trust=config.trust):
                log.warning("%s: %s", config.server_name, warning)
        core.peer_chain = chain
        core.transcript.add(raw)
        return ExpectCertificateVerify(core, leaf)


@dataclass(slots=True)
class ExpectCertificateVerify:
    core: _Core
    leaf: x509.Certificate

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, CertificateVerify):
            raise unexpected("CertificateVerify", msg)
        core = self.core
        check_certificate_verify(self.leaf, msg, core.config.signature_algorithms, core.transcript, from_server=True)
        core.scheme = msg.algorithm
        core.transcript.add(raw)
        return ExpectFinished(core)


@dataclass(slots=True)
class ExpectFinished:
    core: _Core

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, Finished):
            raise unexpected("Finished", msg)
        core = self.core
        params, transcript = core.params, core.transcript
        check_finished(params, core.s_hs, transcript, msg)
        transcript.add(raw)
        master = core.hs.master_secret()
        th = transcript.digest()
        c_ap, s_ap = master.client_traffic_secret(th), master.server_traffic_secret(th)
        exporter = master.exporter_master_secret(th)
        ctx.key_log("CLIENT_TRAFFIC_SECRET_0", c_ap)
        ctx.key_log("SERVER_TRAFFIC_SECRET_0", s_ap)
        ctx.key_log("EXPORTER_SECRET", exporter)
        ctx.set_read_secret(params, s_ap, EncryptionLevel.application)
        if core.early_accepted:
            ctx.early_data_finished(accepted=True)
            ctx.send_handshake(EndOfEarlyData().encode())  # §4.5, still under the early traffic key
            transcript.add(EndOfEarlyData().encode())
            ctx.set_write_secret(params, core.c_hs, EncryptionLevel.handshake)
        if core.certificate_request is not None:
            self._send_client_certificate(ctx, core.certificate_request)
        fin = make_finished(params, core.c_hs, transcript)
        ctx.send_handshake(fin)
        transcript.add(fin)
        ctx.set_write_secret(params, c_ap, EncryptionLevel.application)
        session = Session(
            params=params,
            exporter_master_secret=exporter,
            resumption_master_secret=master.resumption_master_secret(transcript.digest()),
            server_name=core.config.server_name,
            alpn=core.alpn,
            group=core.group,
        )
        ctx.established(session)
        ctx.emit(
            HandshakeComplete(
                version=ProtocolVersion.TLS1_3,
                cipher_suite=params.suite,
                group=core.group,
                signature_scheme=core.scheme,
                alpn=core.alpn,
                server_name=core.config.server_name,
                peer_certificates=core.peer_chain,
                resumed=core.resumed,
                early_data_accepted=core.early_accepted,
                hello_retry=core.hello_retry,
                ocsp_response=core.ocsp_response,
            )
        )
        return ClientConnected(session)

    def _send_client_certificate(self, ctx: Context, request: CertificateRequest) -> None:
        """§4.4.2: our chain (or an empty one) and, with a key, a CertificateVerify."""
        core = self.core
        exts = ext.extension_map(request.extensions)
        wanted = ext.parse_signature_algorithms(exts[ExtensionType.signature_algorithms])
        names_data = exts.get(ExtensionType.certificate_authorities)
        names = ext.parse_certificate_authorities(names_data) if names_data is not None else []
        chosen = choose_identity(core.config.identities(), wanted, names)
        cert, scheme = chosen if chosen is not None else (None, None)
        if cert is None or scheme is None:
            empty = Certificate(context=request.context, entries=()).encode()
            ctx.send_handshake(empty)
            core.transcript.add(empty)
            return
        cm = Certificate(
            context=request.context, entries=tuple(CertificateEntry(cert_data=c) for c in cert.chain)
        ).encode()
        ctx.send_handshake(cm)
        core.transcript.add(cm)
        signature = cert.sign(scheme, signatures.certificate_verify_input(False, core.transcript.digest()))
        cv = CertificateVerify(algorithm=scheme, signature=signature).encode()
        ctx.send_handshake(cv)
        core.transcript.add(cv)


def choose_identity(
    identities: Sequence[CertifiedKey], wanted: Sequence[SignatureScheme], ca_names: Sequence[bytes]
) -> tuple[CertifiedKey, SignatureScheme] | None:
    """Our client certificate for a CertificateRequest (§4.3.2): one that can sign with a scheme the server
    accepts, preferring a chain that names one of its ``certificate_authorities`` (§4.2.4 says they guide the
    choice); without a match, the first usable one (what OpenSSL does with the one certificate it has)."""
    usable = [(cert, scheme) for cert in identities if (scheme := choose_scheme(cert.schemes, wanted)) is not None]
    if ca_names:
        wanted_names = frozenset(ca_names)
        for cert, scheme in usable:
            if not cert.ca_names.isdisjoint(wanted_names):
                return cert, scheme
    return usable[0] if usable else None


@dataclass(slots=True)
class ClientConnected:
    """Post-handshake (§4.6): tickets and key updates are handled by the connection."""

    session: Session

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        raise unexpected("NewSessionTicket or KeyUpdate", msg)
