"""The server handshake (RFC 8446 §2, §4): one class per state, ``handle(ctx, msg, raw) -> next state``."""

from __future__ import annotations

import datetime
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..config import CertifiedKey, ServerConfig
from ..crypto import groups, keyschedule, signatures
from ..crypto.suites import SuiteParams, suite_params
from ..crypto.transcript import Transcript
from ..enums import (
    AlertDescription,
    EncryptionLevel,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    ProtocolVersion,
    PskKeyExchangeMode,
)
from ..errors import AlertError, CertificateError
from ..events import HandshakeComplete, handshake_complete
from ..messages import extensions as ext
from ..messages.extensions import Extension, KeyShareEntry
from ..messages.handshake import (
    HRR_RANDOM,
    Certificate,
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    EndOfEarlyData,
    Finished,
    HandshakeMessage,
    ServerHello,
    certificate_verify_bytes,
    encrypted_extensions_bytes,
    finished_bytes,
    server_hello_bytes,
)
from ..pki.verify import verify_client_path
from . import psk
from .common import (
    Context,
    Session,
    check_certificate_verify,
    check_verify_data,
    log_peer,
    unexpected,
)
from .negotiation import Offer, choose_alpn, choose_certificate, choose_group, read_offer

__all__ = ["ExpectClientHello"]

log = logging.getLogger("tlskit.handshake")

_SUPPORTED_VERSIONS_TLS13 = ext.extension_bytes(
    ExtensionType.supported_versions, ext.supported_versions_server_body(ProtocolVersion.TLS1_3)
)
_EMPTY_SERVER_NAME = ext.extension_bytes(ExtensionType.server_name, b"")
_EMPTY_EARLY_DATA = ext.extension_bytes(ExtensionType.early_data, b"")

# Ciphertext we are willing to skip when we reject a client's 0-RTT data (§4.2.10) without a policy of our own.
_DEFAULT_EARLY_SKIP = 16384 + 4096


@dataclass(slots=True)
class ExpectClientHello:
    """The server's first state (§4.1.2)."""

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, ClientHello):
            raise unexpected("ClientHello", msg)
        config = ctx.config
        assert isinstance(config, ServerConfig)
        offer = read_offer(config, msg)
        params = suite_params(offer.suite)
        return _negotiate(ctx, config, offer, raw, Transcript(params.hash_name), params, first=True)


def _negotiate(
    ctx: Context,
    config: ServerConfig,
    offer: Offer,
    raw: bytes,
    transcript: Transcript,
    params: SuiteParams,
    *,
    first: bool,
    claimed: bytes | None = None,
) -> object:
    """Resume a ticket if we can (§4.2.11), pick the key exchange, and answer with a ServerHello or a
    HelloRetryRequest (§4.1.4). ``claimed``: the single-use ticket this connection's first ClientHello took."""
    accepted: psk.AcceptedPsk | None = None
    modes = [m for m in config.psk_modes if m in offer.psk_modes] if offer.psk_modes else []
    rest = raw  # what of the ClientHello the transcript still lacks
    if offer.psks is not None and modes:
        # the binders' transcript (§4.2.11.2) is the ClientHello up to its binders: hashed into ours, then the rest
        cut = len(raw) - ext.binders_length([len(b) for b in offer.psks.binders])
        transcript.add(raw[:cut])
        rest = raw[cut:]
        accepted = psk.accept_psk(config, offer.psks, transcript, params, offer.server_name, ctx.now())
        if accepted is not None and config.single_use_tickets:
            identity = offer.psks.identities[accepted.index].identity
            if identity == claimed or psk.claim_ticket(config.replay_store, identity, accepted.state, ctx.now()):
                claimed = identity
            else:
                accepted = None  # used before, or the store cannot say: a full handshake (§8.1)
    if accepted is not None and not _client_auth_still_holds(ctx, config, accepted.state.client_chain):
        accepted = None  # the resumed session would skip (or fail) our client authentication: full handshake
    dhe = accepted is None or (PskKeyExchangeMode.psk_dhe_ke in modes and bool(offer.client_groups))
    if accepted is not None and not dhe and PskKeyExchangeMode.psk_ke not in modes:
        accepted, dhe = None, True
    if accepted is None and not offer.client_groups:
        raise AlertError(AlertDescription.missing_extension, "ClientHello lacks supported_groups and key_share")
    if accepted is None and not offer.schemes:  # §9.2: a full handshake needs signature_algorithms
        raise AlertError(AlertDescription.missing_extension, "ClientHello lacks signature_algorithms")
    group: NamedGroup | None = None
    share: KeyShareEntry | None = None
    if dhe:
        group, share = choose_group(config, offer)
        if share is None:
            if not first:
                raise AlertError(AlertDescription.illegal_parameter, "second ClientHello lacks the requested share")
            transcript.add(rest)
            return _hello_retry(ctx, config, offer, group, params, transcript, claimed, accepted)
    transcript.add(rest)
    return _server_flight(ctx, config, offer, params, transcript, group, share, accepted, hello_retry=not first)


def _client_auth_still_holds(ctx: Context, config: ServerConfig, chain: tuple[bytes, ...]) -> bool:
    """Resumption carries the original client authentication (§4.2.11): only resume a session whose client
    certificate would pass our checks today (trust, SPIFFE allow-list, revocation), or none is needed."""
    auth = config.client_auth
    if auth is None or auth.mode == "none":
        return True
    if not chain:
        return auth.mode == "optional"
    assert auth.trust is not None
    now = datetime.datetime.fromtimestamp(ctx.now(), datetime.UTC)
    try:
        path = verify_client_path(chain, trust=auth.trust, now=now, skew=auth.clock_skew)
        if auth.allowed_ids is not None:
            auth.allowed_ids.check(path[0])
        if auth.revocation is not None:
            auth.revocation.check(path, None, now, trust=auth.trust)
    except CertificateError as e:
        log.info("%snot resuming: the session's client certificate no longer passes (%s)", log_peer(), e)
        return False
    return True


def _early_skip_budget(config: ServerConfig, accepted: psk.AcceptedPsk | None) -> int:
    """Rejected 0-RTT bytes to skip (§4.2.10): what the client may send, which is what its ticket allows when we
    opened it (more than today's limit after the limit was lowered), plus record overhead."""
    limit = config.early_data.max_early_data_size if config.early_data is not None else 0
    if accepted is not None:
        limit = max(limit, accepted.state.max_early_data)
    return limit + 4096 if limit else _DEFAULT_EARLY_SKIP


def _hello_retry(
    ctx: Context,
    config: ServerConfig,
    offer: Offer,
    group: NamedGroup,
    params: SuiteParams,
    transcript: Transcript,
    claimed: bytes | None,
    accepted: psk.AcceptedPsk | None,
) -> ExpectSecondClientHello:
    """§4.1.4: ask for a share of ``group``; the cookie binds the retry to this first ClientHello."""
    transcript.replace_with_message_hash()
    exts = [Extension(ExtensionType.key_share, ext.key_share_hrr_body(group))]
    cookie = None
    if config.hello_retry_cookie:
        cookie = hmac.digest(ctx.random(32), transcript.digest(), "sha256")
        exts.append(Extension(ExtensionType.cookie, ext.cookie_body(cookie)))
    exts.append(Extension(ExtensionType.supported_versions, ext.supported_versions_server_body(ProtocolVersion.TLS1_3)))
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
    if offer.early_data:
        ctx.skip_early_data(_early_skip_budget(config, accepted))  # §4.2.10: early data cannot survive a retry
    return ExpectSecondClientHello(
        first=offer, group=group, params=params, transcript=transcript, cookie=cookie, claimed=claimed
    )


@dataclass(slots=True)
class ExpectSecondClientHello:
    """§4.1.2: after HelloRetryRequest the client repeats its hello with the requested share."""

    first: Offer
    group: NamedGroup
    params: SuiteParams
    transcript: Transcript
    cookie: bytes | None
    claimed: bytes | None = None  # the single-use ticket the first ClientHello took (§8.1)

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, ClientHello):
            raise unexpected("second ClientHello", msg)
        config = ctx.config
        assert isinstance(config, ServerConfig)
        ctx.skip_early_data(0)  # 0-RTT records came before this hello; from here on a bad record is an attack
        offer = read_offer(config, msg)
        if offer.suite != self.first.suite or msg.legacy_session_id != self.first.hello.legacy_session_id:
            raise AlertError(AlertDescription.illegal_parameter, "second ClientHello changed suite or session id")
        if msg.random != self.first.hello.random:
            raise AlertError(AlertDescription.illegal_parameter, "second ClientHello changed its random")
        if ExtensionType.early_data in offer.exts:
            raise AlertError(AlertDescription.illegal_parameter, "early_data in the second ClientHello")
        if self.cookie is not None:
            got = offer.exts.get(ExtensionType.cookie)
            if got is None or not hmac.compare_digest(ext.parse_cookie(got), self.cookie):
                raise AlertError(AlertDescription.illegal_parameter, "second ClientHello does not echo our cookie")
        if len(offer.shares) != 1 or offer.shares[0].group != self.group:
            raise AlertError(
                AlertDescription.illegal_parameter, f"second ClientHello must carry one {self.group.name} share"
            )
        return _negotiate(ctx, config, offer, raw, self.transcript, self.params, first=False, claimed=self.claimed)


def _server_flight(
    ctx: Context,
    config: ServerConfig,
    offer: Offer,
    params: SuiteParams,
    transcript: Transcript,
    group: NamedGroup | None,
    share: KeyShareEntry | None,
    accepted: psk.AcceptedPsk | None,
    *,
    hello_retry: bool,
) -> object:
    """ServerHello, then EncryptedExtensions, [CertificateRequest, Certificate, CertificateVerify,] Finished."""
    alpn = choose_alpn(config, offer.alpn)
    if alpn is not None:
        ctx.select_alpn(alpn)
    certified = None if accepted is not None else choose_certificate(config, offer.server_name, offer.schemes)
    early = (
        accepted is not None
        and offer.early_data
        and offer.psks is not None
        and not hello_retry
        and psk.early_data_acceptable(
            config, accepted, offer.suite, alpn, offer.server_name, offer.psks.binders[0], ctx.now()
        )
    )
    early_secret = accepted.early_secret if accepted is not None else keyschedule.EarlySecret.without_psk(params)
    client_early = b""
    if early:
        client_early = early_secret.client_early_traffic_secret(transcript.digest())
        ctx.key_log("CLIENT_EARLY_TRAFFIC_SECRET", client_early)
    shared: bytes | None = None
    sh_exts: list[bytes] = []  # encoded straight to bytes: the same wire as ServerHello(...).encode()
    if accepted is not None:
        sh_exts.append(ext.extension_bytes(ExtensionType.pre_shared_key, ext.selected_psk_body(accepted.index)))
    if share is not None and group is not None:
        server_share, shared = groups.server_key_share(group, share.key_exchange, config.random)
        sh_exts.append(ext.extension_bytes(ExtensionType.key_share, ext.key_share_entry_bytes(group, server_share)))
    sh_exts.append(_SUPPORTED_VERSIONS_TLS13)
    sh = server_hello_bytes(ctx.random(32), offer.hello.legacy_session_id, offer.suite, ext.extensions_block(sh_exts))
    ctx.send_handshake(sh)
    transcript.add(sh)
    if config.middlebox_compat and offer.hello.legacy_session_id and not hello_retry:
        ctx.send_change_cipher_spec()
    hs = early_secret.handshake_secret(shared)
    th = transcript.digest()
    c_hs, s_hs = hs.client_traffic_secret(th), hs.server_traffic_secret(th)
    if config.key_log is not None:
        ctx.key_log("CLIENT_HANDSHAKE_TRAFFIC_SECRET", c_hs)
        ctx.key_log("SERVER_HANDSHAKE_TRAFFIC_SECRET", s_hs)
    if ExtensionType.record_size_limit in offer.exts:  # RFC 8449: binds every protected record we send
        ctx.set_send_record_limit(ext.parse_record_size_limit(offer.exts[ExtensionType.record_size_limit]))
    s_keys, s_finished = keyschedule.handshake_traffic_keys(params, s_hs)  # s_hs keyed into HMAC once
    ctx.set_write_secret(params, s_hs, EncryptionLevel.handshake, s_keys)

    ee = _encrypted_extensions(config, offer, alpn, early)
    ctx.send_handshake(ee)
    transcript.add(ee)
    auth = config.client_auth
    request_cert = accepted is None and auth is not None and auth.mode != "none"
    if request_cert:
        cr = _certificate_request(config)
        ctx.send_handshake(cr)
        transcript.add(cr)
    scheme = None
    if certified is not None:
        cert, scheme = certified
        cm = _certificate(config, cert, offer)
        ctx.send_handshake(cm)
        transcript.add(cm)
        signature = cert.sign(scheme, signatures.certificate_verify_input(True, transcript.digest()))
        cv = certificate_verify_bytes(scheme, signature)
        ctx.send_handshake(cv)
        transcript.add(cv)
    fin = finished_bytes(keyschedule.verify_data(params, s_finished, transcript.digest()))  # as make_finished
    ctx.send_handshake(fin)
    transcript.add(fin)
    master = hs.master_secret()
    th = transcript.digest()
    c_ap, s_ap = master.client_traffic_secret(th), master.server_traffic_secret(th)
    exporter = master.exporter_master_secret(th)
    if config.key_log is not None:
        ctx.key_log("CLIENT_TRAFFIC_SECRET_0", c_ap)
        ctx.key_log("SERVER_TRAFFIC_SECRET_0", s_ap)
        ctx.key_log("EXPORTER_SECRET", exporter)
    ctx.set_write_secret(params, s_ap, EncryptionLevel.application)
    if not request_cert:  # §2.3: data to an unauthenticated client is fine, to one we are vetting it is not
        ctx.allow_half_rtt()
    after = _AfterServerFinished(
        params=params,
        transcript=transcript,
        master=master,
        c_hs=c_hs,
        c_hs_keys=keyschedule.handshake_traffic_keys(params, c_hs),
        c_ap=c_ap,
        exporter=exporter,
        authenticated_at=accepted.state.authenticated_at if accepted is not None else None,
        complete=handshake_complete(  # positionally: HandshakeComplete's fields, in order
            ProtocolVersion.TLS1_3,
            offer.suite,
            group,
            scheme,
            alpn,
            offer.server_name,
            accepted.state.client_chain if accepted is not None else (),
            accepted is not None,  # resumed
            early,  # early_data_accepted
            hello_retry,
            None,  # ocsp_response: a server's peer sends none
            certified[0].chain[0] if certified is not None else None,  # local_certificate
        ),
    )
    # the client's Finished covers what ours did, unless EndOfEarlyData or its certificate comes first (§4.4.4)
    finished_hash = None if early else th
    next_state: object = ExpectClientCertificate(after) if request_cert else ExpectClientFinished(after, finished_hash)
    if early:
        assert config.early_data is not None and accepted is not None
        ctx.set_read_secret(params, client_early, EncryptionLevel.early_data)
        ctx.accept_early_data(accepted.state.max_early_data)  # the ticket's (at most today's: early_data_acceptable)
        return ExpectEndOfEarlyData(after, next_state)
    ctx.set_read_secret(params, c_hs, EncryptionLevel.handshake, after.c_hs_keys[0])
    if offer.early_data:
        ctx.skip_early_data(_early_skip_budget(config, accepted))
    return next_state


def _encrypted_extensions(config: ServerConfig, offer: Offer, alpn: str | None, early: bool) -> bytes:
    """§4.3.1 (encoded straight to bytes: the same wire as ``EncryptedExtensions(...).encode()``). It depends
    on a handful of settings only, so each combination is encoded once."""
    groups = tuple(config.groups) if config.send_supported_groups else None
    own_limit = None
    if ExtensionType.record_size_limit in offer.exts:
        own_limit = config.record_size_limit if config.record_size_limit is not None else (1 << 14) + 1
    key = (groups, own_limit, offer.server_name is not None, alpn, early)
    message = _EE_CACHE.get(key)
    if message is not None:
        return message
    ee: list[bytes] = []
    if groups is not None:
        ee.append(ext.extension_bytes(ExtensionType.supported_groups, ext.supported_groups_body(groups)))
    if own_limit is not None:
        ee.append(ext.extension_bytes(ExtensionType.record_size_limit, ext.record_size_limit_body(own_limit)))
    if offer.server_name is not None:
        ee.append(_EMPTY_SERVER_NAME)
    if alpn is not None:
        ee.append(ext.extension_bytes(ExtensionType.application_layer_protocol_negotiation, ext.alpn_body([alpn])))
    if early:
        ee.append(_EMPTY_EARLY_DATA)
    message = encrypted_extensions_bytes(ext.extensions_block(ee))
    if len(_EE_CACHE) < 256:  # bounded: the ALPN and the group list come from our configs, never from a peer
        _EE_CACHE[key] = message
    return message


_EE_CACHE: dict[tuple[tuple[NamedGroup, ...] | None, int | None, bool, str | None, bool], bytes] = {}


def _certificate_request(config: ServerConfig) -> bytes:
    """§4.3.2: our signature algorithms and, by default, the names of the CAs we accept (§4.2.4)."""
    auth = config.client_auth
    assert auth is not None and auth.trust is not None
    exts = [Extension(ExtensionType.signature_algorithms, ext.signature_algorithms_body(config.signature_algorithms))]
    if auth.send_ca_names:
        names = [root.subject.public_bytes() for root in auth.trust.roots]
        exts.append(Extension(ExtensionType.certificate_authorities, ext.certificate_authorities_body(names)))
    return CertificateRequest(context=b"", extensions=tuple(exts)).encode()


def _certificate(config: ServerConfig, cert: CertifiedKey, offer: Offer) -> bytes:
    """§4.4.2 with the OCSP staple in the leaf's entry when the client asked (§4.4.2.1)."""
    staple: object = None
    if offer.status_request:
        hook: Callable[[CertifiedKey], object] | None = config.ocsp_staple  # untyped: a bytearray is taken too
        staple = hook(cert) if hook is not None else cert.ocsp_response
    if isinstance(staple, bytearray | memoryview):
        staple = bytes(staple)
    if not staple:
        return cert.certificate_message  # encoded once per certificate, not per handshake
    if not isinstance(staple, bytes):
        raise TypeError(f"ocsp_staple returned {type(staple).__name__}, not bytes")
    entries = [CertificateEntry(cert_data=c) for c in cert.chain]
    entries[0] = CertificateEntry(
        cert_data=cert.chain[0],
        extensions=(Extension(ExtensionType.status_request, ext.certificate_status_body(staple)),),
    )
    return Certificate(entries=tuple(entries)).encode()


@dataclass(slots=True)
class _AfterServerFinished:
    """What the server keeps once its flight is out."""

    params: SuiteParams
    transcript: Transcript
    master: keyschedule.MasterSecret
    c_hs: bytes
    c_hs_keys: tuple[keyschedule.KeyIV, bytes]  # c_hs's (key, IV) and finished_key (handshake_traffic_keys)
    c_ap: bytes
    exporter: bytes
    complete: HandshakeComplete
    authenticated_at: float | None  # a resumed session's original full handshake (its tickets keep it)


@dataclass(slots=True)
class ExpectEndOfEarlyData:
    """§4.5: 0-RTT data flows (as ``EarlyData`` events) until the client's EndOfEarlyData."""

    after: _AfterServerFinished
    next_state: Any  # not ``object``: a mypyc-compiled dataclass fails to resolve that annotation (KeyError)

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, EndOfEarlyData):
            raise unexpected("EndOfEarlyData", msg)
        self.after.transcript.add(raw)
        ctx.set_read_secret(self.after.params, self.after.c_hs, EncryptionLevel.handshake, self.after.c_hs_keys[0])
        return self.next_state


@dataclass(slots=True)
class ExpectClientCertificate:
    """§4.4.2: the client's chain, possibly empty (then ``certificate_required`` if we insist, §4.4.2.4)."""

    after: _AfterServerFinished

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, Certificate):
            raise unexpected("client Certificate", msg)
        config = ctx.config
        assert isinstance(config, ServerConfig) and config.client_auth is not None
        auth = config.client_auth
        if msg.context:
            raise AlertError(AlertDescription.illegal_parameter, "client Certificate context does not match ours")
        self.after.transcript.add(raw)
        if not msg.entries:
            if auth.mode == "required":
                raise AlertError(AlertDescription.certificate_required, "client sent no certificate")
            return ExpectClientFinished(self.after)
        for entry in msg.entries:  # §4.4.2: they must answer our CertificateRequest, which asks for none
            for extension in entry.extensions:
                if extension.type.name.startswith("unknown_"):
                    continue  # unknown: ignored, as OpenSSL does
                if extension.type not in ext.ALLOWED[HandshakeType.certificate]:
                    raise AlertError(AlertDescription.illegal_parameter,
                                     f"{extension.type.name} is not allowed in a Certificate")
                raise AlertError(AlertDescription.unsupported_extension,
                                 f"client Certificate carries {extension.type.name}, which we did not request")
        chain = tuple(e.cert_data for e in msg.entries)
        assert auth.trust is not None
        now = datetime.datetime.fromtimestamp(ctx.now(), datetime.UTC)
        path = verify_client_path(chain, trust=auth.trust, now=now, skew=auth.clock_skew)
        leaf = path[0]
        if auth.revocation is not None:  # the path built, not the list sent (it may carry decoys)
            for warning in auth.revocation.check(path, None, now, trust=auth.trust):
                log.warning("%sclient certificate: %s", log_peer(), warning)
        if auth.allowed_ids is not None:
            auth.allowed_ids.check(leaf)  # access_denied for a SPIFFE ID outside the allow-list
        self.after.complete = replace(self.after.complete, peer_certificates=chain)
        return ExpectClientCertificateVerify(self.after, leaf)


@dataclass(slots=True)
class ExpectClientCertificateVerify:
    """§4.4.3: the client proves it holds the key of its certificate."""

    after: _AfterServerFinished
    leaf: x509.Certificate

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, CertificateVerify):
            raise unexpected("client CertificateVerify", msg)
        config = ctx.config
        assert isinstance(config, ServerConfig)
        check_certificate_verify(self.leaf, msg, config.signature_algorithms, self.after.transcript, from_server=False)
        self.after.transcript.add(raw)
        return ExpectClientFinished(self.after)


@dataclass(slots=True)
class ExpectClientFinished:
    """§4.4.4: the client's Finished completes the handshake; tickets follow (§4.6.1)."""

    after: _AfterServerFinished
    transcript_hash: bytes | None = None  # the transcript's hash when nothing was added since our Finished's

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        if not isinstance(msg, Finished):
            raise unexpected("Finished", msg)
        after = self.after
        th = self.transcript_hash if self.transcript_hash is not None else after.transcript.digest()
        check_verify_data(after.params, keyschedule.verify_data(after.params, after.c_hs_keys[1], th), msg)
        after.transcript.add(raw)
        ctx.set_read_secret(after.params, after.c_ap, EncryptionLevel.application)
        complete = after.complete
        session = Session(
            params=after.params,
            exporter_master_secret=after.exporter,
            resumption_master_secret=(
                after.master.resumption_master_secret(after.transcript.digest())
                if isinstance(ctx.config, ServerConfig) and ctx.config.ticket_keys is not None
                else b""  # no tickets to issue: skip the derivation
            ),
            server_name=complete.server_name,
            alpn=complete.alpn,
            group=complete.group,
        )
        ctx.established(session)
        ctx.emit(complete)
        config = ctx.config
        assert isinstance(config, ServerConfig)
        for ticket in psk.issue_tickets(
            config,
            after.params,
            session.resumption_master_secret,
            complete.server_name,
            complete.alpn,
            ctx.now(),
            complete.peer_certificates,
            after.authenticated_at,
        ):
            ctx.send_handshake(ticket)
        return ServerConnected(session)


@dataclass(slots=True)
class ServerConnected:
    """Post-handshake: only KeyUpdate is valid from a client, and the connection handles it (§4.6.3)."""

    session: Session

    def handle(self, ctx: Context, msg: HandshakeMessage, raw: bytes) -> object:
        raise unexpected("KeyUpdate", msg)


def spki_of(cert: x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo (for pinning and identity hooks)."""
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
