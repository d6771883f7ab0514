"""Resumption PSKs, binders, tickets and the 0-RTT decision (RFC 8446 §4.2.10, §4.2.11, §4.6.1, §8)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..codec import Reader, slots_settable
from ..crypto import groups, keyschedule
from ..crypto.suites import SuiteParams, suite_params
from ..crypto.transcript import Transcript
from ..enums import AlertDescription, CipherSuite, ExtensionType
from ..errors import AlertError, DecodeError
from ..messages import extensions as ext
from ..messages.extensions import Extension, OfferedPsks, PskIdentity
from ..messages.handshake import new_session_ticket_bytes
from ..stores.base import ReplayClockSkew, ReplayHistoryUnknown, ReplayStore, StoredTicket
from ..tickets.sealing import open_ticket, seal_tickets
from .common import log_peer

if TYPE_CHECKING:
    from ..config import ServerConfig

__all__ = ["SessionState", "claim_ticket", "client_binder", "issue_tickets", "obfuscated_age", "ticket_use_key"]

log = logging.getLogger("tlskit.handshake")

_STATE_VERSION = 3
# version, suite, issued_at (ms), authenticated_at (ms), age_add, lifetime, max_early_data; then psk, server_name,
# alpn, client chain
_STATE_HEAD = struct.Struct(">BHQQIII")
_STATE_HEAD_V2 = struct.Struct(">BHQIII")  # version 2: no authenticated_at
# §4.6.1: tickets issued on resumed connections would extend the keys of one full handshake for good; none resumes
# once this long has passed since the certificates were last checked and signed for (the longest ticket lifetime)
MAX_SESSION_AGE = 7 * 24 * 3600


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionState:
    """What a ticket seals: enough to resume without server-side state (§4.6.1)."""

    suite: CipherSuite
    psk: bytes
    issued_at: float
    authenticated_at: float  # when the full handshake behind it ran: tickets of resumed sessions keep it (§4.6.1)
    age_add: int
    lifetime: int
    max_early_data: int
    server_name: str | None
    alpn: str | None
    client_chain: tuple[bytes, ...] = ()  # the client's certificates, when it authenticated (§4.2.11)

    def encode(self) -> bytes:
        head = _state_head(self.suite, self.issued_at, self.authenticated_at, self.lifetime, self.max_early_data)
        tail = _state_tail(self.server_name, self.alpn, self.client_chain)
        return _state_bytes(head, self.age_add, self.psk, tail)

    @classmethod
    def decode(cls, data: bytes) -> SessionState | None:
        """None for a state we cannot use (another version or malformed): the client just gets a full handshake.
        Version 2 (before ``authenticated_at``) is read as authenticated when issued, so an upgrade does not
        turn every outstanding ticket into a full handshake."""
        if len(data) >= _STATE_HEAD_V2.size and data[0] == 2:
            _, suite, issued_ms, age_add, lifetime, max_early = _STATE_HEAD_V2.unpack_from(data)
            authenticated_ms, head = issued_ms, _STATE_HEAD_V2.size
        elif len(data) >= _STATE_HEAD.size and data[0] == _STATE_VERSION:
            _, suite, issued_ms, authenticated_ms, age_add, lifetime, max_early = _STATE_HEAD.unpack_from(data)
            head = _STATE_HEAD.size
        else:
            return None
        cipher = CipherSuite.of(suite)
        try:
            suite_params(cipher)  # sealed by a node that knows a suite this one does not
        except ValueError:
            return None
        try:
            r = Reader(data, head)
            psk = r.vector(1, 32, 48)
            server_name = r.vector(1).decode("ascii") or None
            alpn = r.vector(1).decode("latin-1") or None
            certs = r.sub(3)
            chain: list[bytes] = []
            while certs.remaining:
                chain.append(certs.vector(3, 1))
            r.finish()
        except (DecodeError, UnicodeDecodeError):
            return None
        if cls is not SessionState or not _STATE_SLOTS_WRITABLE:
            return cls(
                suite=cipher,
                psk=psk,
                issued_at=issued_ms / 1000,
                authenticated_at=authenticated_ms / 1000,
                age_add=age_add,
                lifetime=lifetime,
                max_early_data=max_early,
                server_name=server_name,
                alpn=alpn,
                client_chain=tuple(chain),
            )
        # the same value through the slot descriptors: the frozen dataclass's __init__ costs an
        # object.__setattr__ per field, more than the rest of this decode (one per resumption attempt)
        state: SessionState = _NEW_STATE(SessionState)
        _SET_SUITE(state, cipher)
        _SET_PSK(state, psk)
        _SET_ISSUED_AT(state, issued_ms / 1000)
        _SET_AUTHENTICATED_AT(state, authenticated_ms / 1000)
        _SET_AGE_ADD(state, age_add)
        _SET_LIFETIME(state, lifetime)
        _SET_MAX_EARLY_DATA(state, max_early)
        _SET_SERVER_NAME(state, server_name)
        _SET_ALPN(state, alpn)
        _SET_CLIENT_CHAIN(state, tuple(chain))
        return state


_NEW_STATE = object.__new__
_SET_SUITE = vars(SessionState)["suite"].__set__
_SET_PSK = vars(SessionState)["psk"].__set__
_SET_ISSUED_AT = vars(SessionState)["issued_at"].__set__
_SET_AUTHENTICATED_AT = vars(SessionState)["authenticated_at"].__set__
_SET_AGE_ADD = vars(SessionState)["age_add"].__set__
_SET_LIFETIME = vars(SessionState)["lifetime"].__set__
_SET_MAX_EARLY_DATA = vars(SessionState)["max_early_data"].__set__
_SET_SERVER_NAME = vars(SessionState)["server_name"].__set__
_SET_ALPN = vars(SessionState)["alpn"].__set__
_SET_CLIENT_CHAIN = vars(SessionState)["client_chain"].__set__


_STATE_SLOTS_WRITABLE = slots_settable(SessionState(  # not when compiled with mypyc
    suite=CipherSuite.TLS_AES_128_GCM_SHA256, psk=bytes(32), issued_at=1.5, authenticated_at=1.25, age_add=7,
    lifetime=60, max_early_data=1, server_name="a.test", alpn="h2", client_chain=(b"leaf",)))


def _state_head(suite: int, issued_at: float, authenticated_at: float, lifetime: int, max_early_data: int) -> bytes:
    """``_STATE_HEAD`` with a zero age_add, which ``_state_bytes`` fills in (the one head field that differs
    between the tickets of one handshake)."""
    return _STATE_HEAD.pack(
        _STATE_VERSION, suite, int(issued_at * 1000), int(authenticated_at * 1000), 0, lifetime, max_early_data
    )


_AGE_ADD_AT = 1 + 2 + 8 + 8  # offset of age_add in _STATE_HEAD


def _state_tail(server_name: str | None, alpn: str | None, client_chain: tuple[bytes, ...]) -> bytes:
    """The encoded state after the PSK: server name, ALPN and the client chain."""
    name = (server_name or "").encode("ascii")
    alpn_bytes = (alpn or "").encode("latin-1")
    for field in (name, alpn_bytes):
        if len(field) > 0xFF:
            raise ValueError(f"vector of {len(field)} bytes does not fit a 1-byte length")
    chain = b"".join([len(cert).to_bytes(3, "big") + cert for cert in client_chain])
    return b"".join(
        (bytes((len(name),)), name, bytes((len(alpn_bytes),)), alpn_bytes, len(chain).to_bytes(3, "big"), chain)
    )


def _state_bytes(head: bytes, age_add: int, psk: bytes, tail: bytes) -> bytes:
    """The whole encoded ``SessionState`` from its shared head and tail, its age_add and its PSK."""
    if len(psk) > 0xFF:
        raise ValueError(f"vector of {len(psk)} bytes does not fit a 1-byte length")
    return b"".join(
        (head[:_AGE_ADD_AT], age_add.to_bytes(4, "big"), head[_AGE_ADD_AT + 4 :], bytes((len(psk),)), psk, tail)
    )


def obfuscated_age(ticket: StoredTicket, now: float) -> int:
    """§4.2.11.1: the ticket age in milliseconds plus ticket_age_add, modulo 2^32."""
    return (int((now - ticket.received_at) * 1000) + ticket.age_add) & 0xFFFFFFFF


def binder(params: SuiteParams, psk: bytes, partial_hash: bytes) -> bytes:
    """§4.2.11.2: HMAC over the truncated ClientHello transcript with the resumption binder key."""
    return keyschedule.finished_verify_data(params, keyschedule.EarlySecret(params, psk).binder_key(), partial_hash)


def psk_extension(ticket: StoredTicket, now: float, hash_len: int) -> Extension:
    identity = PskIdentity(ticket.ticket, obfuscated_age(ticket, now))
    return Extension(ExtensionType.pre_shared_key, ext.offered_psks_body([identity], [hash_len]))


def client_binder(raw_hello: bytes, prefix: Transcript, params: SuiteParams, psk: bytes) -> bytes:
    """Fill in the one binder at the end of an encoded ClientHello (§4.2.11.2); ``prefix`` holds any
    earlier messages (message_hash and HelloRetryRequest after a retry)."""
    n = params.hash_len
    partial = raw_hello[: len(raw_hello) - ext.binders_length([n])]
    t = prefix.copy()
    t.add(partial)
    return raw_hello[: len(raw_hello) - n] + binder(params, psk, t.digest())


@dataclass(slots=True)
class AcceptedPsk:
    index: int
    state: SessionState
    psk: bytes
    client_age_ms: int
    early_secret: keyschedule.EarlySecret  # already derived for the binder: the handshake goes on from it


def accept_psk(
    config: ServerConfig,
    offered: OfferedPsks,
    partial: Transcript,
    params: SuiteParams,
    server_name: str | None,
    now: float,
) -> AcceptedPsk | None:
    """The first offered ticket we can open and use with the chosen suite (§4.2.11); a bad binder on it aborts
    the handshake with ``decrypt_error``. Tickets we cannot use are skipped (full handshake). ``partial``: the
    transcript through the ClientHello up to its binders (§4.2.11.2), which the handshake goes on from."""
    keys = config.ticket_keys
    if keys is None:
        return None
    partial_hash: bytes | None = None  # the binders' transcript hash, the same for every identity (§4.2.11.2)
    for index, identity in enumerate(offered.identities):
        sealed = open_ticket(keys, identity.identity)
        state = SessionState.decode(sealed) if sealed is not None else None
        if state is None:
            continue
        if suite_params(state.suite).hash_name != params.hash_name:
            continue
        # the lifetime it was issued with, or today's if shorter (an operator shortened it, e.g. after an incident)
        if now - state.issued_at >= min(state.lifetime, config.ticket_lifetime) or now < state.issued_at - 60:
            continue
        if state.server_name != server_name:
            continue  # §4.6.1: resume only for the name the session was established for
        if now - state.authenticated_at >= MAX_SESSION_AGE:
            continue  # resumed from resumed sessions for a week: authenticate again (§4.6.1)
        if partial_hash is None:
            partial_hash = partial.digest()
        early_secret = keyschedule.EarlySecret(params, state.psk)
        expected = keyschedule.finished_verify_data(params, early_secret.binder_key(), partial_hash)  # as binder()
        if not hmac.compare_digest(expected, offered.binders[index]):
            raise AlertError(AlertDescription.decrypt_error, "PSK binder does not verify")
        client_age = (identity.obfuscated_ticket_age - state.age_add) & 0xFFFFFFFF
        return AcceptedPsk(index, state, state.psk, client_age, early_secret)
    return None


SINGLE_USE_SKEW = 30.0  # seconds a server's clock may be off the replay store's for single-use tickets (claim_ticket)
_OLD_STYLE: weakref.WeakSet[object] = weakref.WeakSet()  # stores whose check_and_insert takes no now=/max_skew=


def _check_and_insert(store: ReplayStore, key: bytes, window: float, history: float | None, now: float,
                      max_skew: float) -> bool:
    """``store.check_and_insert`` with the caller's clock; a store written to the interface before it took one
    (it raised TypeError naming the keyword, and 0-RTT was refused for good) is called without it, as before.
    Told apart by what it does, per store object (not its class or signature: wrappers and proxies forward)."""
    if store not in _OLD_STYLE:
        try:
            return store.check_and_insert(key, window, history, now=now, max_skew=max_skew)
        except TypeError as e:
            if "'now'" not in str(e) and "'max_skew'" not in str(e):
                raise
            try:
                _OLD_STYLE.add(store)
                log.warning("replay store %s takes no now=/max_skew=: its entries cannot follow this server's "
                            "clock (see tlskit.stores.ReplayStore)", type(store).__name__)
            except TypeError:  # not weakly referenceable: told again next time
                pass
    return store.check_and_insert(key, window, history)


def early_data_acceptable(
    config: ServerConfig,
    accepted: AcceptedPsk,
    suite: CipherSuite,
    alpn: str | None,
    server_name: str | None,
    replay_key: bytes,
    now: float,
) -> bool:
    """§4.2.10 and §8: same suite and ALPN as the ticket, fresh enough, and never seen before — checked in the
    shared replay store, which fails closed."""
    policy = config.early_data
    state = accepted.state
    if policy is None or accepted.index != 0 or state.max_early_data == 0:
        return False
    if state.suite != suite or state.alpn != alpn:
        return False
    if state.max_early_data > policy.max_early_data_size:  # lowered since the ticket was issued: it may send more
        log.info("%s0-RTT refused for %s: the ticket allows %d bytes, now %d", log_peer(), server_name,
                 state.max_early_data, policy.max_early_data_size)
        return False
    expected_age_ms = (now - state.issued_at) * 1000
    if abs(expected_age_ms - accepted.client_age_ms) > policy.freshness_window * 1000:
        log.info(
            "%s0-RTT refused for %s: ticket age off by %.0f ms", log_peer(), server_name,
            expected_age_ms - accepted.client_age_ms,
        )
        return False
    if not policy.allows(server_name, alpn):
        return False
    store = config.replay_store
    if store is None:
        return False
    window = policy.freshness_window
    try:
        # A ClientHello passes one server's two-sided age check for 2 * window (§8.3): it is remembered that long.
        # A store with a clock of its own (Redis) refuses servers more than window/2 off it and keeps the entry
        # 2 * window/2 longer: the servers' acceptance periods span that (one 25 s behind took a replay before).
        fresh = _check_and_insert(store, replay_key, 2 * window, None, now, window / 2)
    except ReplayHistoryUnknown as e:  # just started, or lost its entries: a replay would look new (§8.2)
        log.info("%s0-RTT refused for %s: %s", log_peer(), server_name, e)
        return False
    except ReplayClockSkew as e:  # this server's clock is off the fleet's: an operator must fix it
        log.warning("%s0-RTT refused for %s: %s", log_peer(), server_name, e)
        return False
    except Exception as e:  # any store failure means "cannot prove it is not a replay" (§8, fail closed)
        log.warning("%s0-RTT refused for %s: replay store unavailable (%s)", log_peer(), server_name, e)
        return False
    if fresh is not True:
        log.warning("%s0-RTT refused for %s: replayed ClientHello", log_peer(), server_name)
    return fresh is True  # a store answering anything but True has not shown the hello is new


def ticket_use_key(identity: bytes) -> bytes:
    """The replay-store key that marks a ticket as used (single-use tickets, §8.1): 0x01 ‖ SHA-256 of the
    ticket identity. 33 bytes, so it never equals a 32- or 48-byte binder stored by the 0-RTT check."""
    return b"\x01" + hashlib.sha256(identity).digest()


def claim_ticket(store: ReplayStore | None, identity: bytes, state: SessionState, now: float) -> bool:
    """Single-use tickets (RFC 8446 §8.1): True the first time the ticket ``identity`` is resumed, False every
    time after, until the ticket expires. Fails closed: without a store, or when the store errors or is
    full, the answer is False (the server then does a full handshake, never a second resumption)."""
    if store is None:
        return False
    remaining = state.issued_at + state.lifetime - now  # the ticket is refused after this anyway
    if remaining <= 0:
        return False
    try:  # a use could date back to the ticket's issue: the store must hold that much history
        # anything but True (None, a coroutine from an async store) has not shown this is the first use
        return _check_and_insert(store, ticket_use_key(identity), remaining, max(0.0, now - state.issued_at), now,
                                 SINGLE_USE_SKEW) is True
    except ReplayHistoryUnknown as e:
        log.info("%ssingle-use ticket refused: %s", log_peer(), e)
        return False
    except ReplayClockSkew as e:
        log.warning("%ssingle-use ticket refused: %s", log_peer(), e)
        return False
    except Exception as e:  # unavailable: we cannot prove this is the first use
        log.warning("%ssingle-use ticket refused: ticket store unavailable (%s)", log_peer(), e)
        return False


def issue_tickets(
    config: ServerConfig,
    params: SuiteParams,
    resumption_master_secret: bytes,
    server_name: str | None,
    alpn: str | None,
    now: float,
    client_chain: tuple[bytes, ...] = (),
    authenticated_at: float | None = None,
) -> list[bytes]:
    """NewSessionTicket messages (§4.6.1), each sealing a distinct PSK under the current ticket key.
    ``authenticated_at``: when the full handshake behind a resumed session ran (None: this one was full); its
    tickets live no longer than ``MAX_SESSION_AGE`` from then.

    ``config.ticket_count`` after a full handshake; at most one after a resumption, as OpenSSL (and so nginx)
    does: the client spent one ticket (§C.4: one per connection) and gets one back, so the tickets it holds
    stay as many as the full handshake gave it."""
    keys = config.ticket_keys
    authenticated = now if authenticated_at is None else authenticated_at
    lifetime = min(config.ticket_lifetime, int(authenticated + MAX_SESSION_AGE - now))
    if keys is None or config.ticket_count <= 0 or lifetime <= 0:
        return []
    key = keys.encryption_key()
    max_early = config.early_data.max_early_data_size if config.early_data is not None else 0
    count = config.ticket_count if authenticated_at is None else 1
    # one call to the random source for every ticket: 4 bytes of age_add, then 12 of sealing nonce, per ticket;
    # the slices are disjoint, so each value is as independent and unpredictable as a call of its own
    randomness = groups.random_bytes(config.random, _TICKET_RANDOM * count)
    # what every ticket of this handshake shares is encoded once: the state's head and tail, the extensions
    head = _state_head(params.suite, now, authenticated, lifetime, max_early)
    tail = _state_tail(server_name, alpn, client_chain)
    extensions = ext.extensions_block(
        [ext.extension_bytes(ExtensionType.early_data, ext.early_data_nst_body(max_early))] if max_early else []
    )
    nonces = [i.to_bytes(1, "big") for i in range(count)]
    age_adds = [int.from_bytes(randomness[i * _TICKET_RANDOM : i * _TICKET_RANDOM + 4], "big") for i in range(count)]
    psks = keyschedule.resumption_psks(params, resumption_master_secret, nonces)
    states = [_state_bytes(head, age_add, psk, tail) for age_add, psk in zip(age_adds, psks, strict=True)]
    seal_nonces = b"".join([randomness[i * _TICKET_RANDOM + 4 : (i + 1) * _TICKET_RANDOM] for i in range(count)])
    tickets = seal_tickets(key, states, seal_nonces)
    return [
        new_session_ticket_bytes(lifetime, age_add, nonce, ticket, extensions)
        for age_add, nonce, ticket in zip(age_adds, nonces, tickets, strict=True)
    ]


_TICKET_RANDOM = 16  # random bytes per ticket: age_add (4) and the sealing nonce (12)
