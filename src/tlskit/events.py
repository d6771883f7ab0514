"""Events the sans-IO ``Connection`` reports (DESIGN §2): frozen values to ``match`` on."""

from __future__ import annotations

import copyreg
from collections.abc import Callable
from dataclasses import dataclass, fields

from .codec import slots_settable
from .enums import AlertDescription, CipherSuite, NamedGroup, ProtocolVersion, SignatureScheme
from .errors import TLSError
from .messages.handshake import NewSessionTicket


@dataclass(frozen=True, kw_only=True, slots=True)
class HandshakeComplete:
    """The handshake finished (§4.4.4): keys are in place and application data may flow."""

    version: ProtocolVersion
    cipher_suite: CipherSuite
    group: NamedGroup | None  # None for psk_ke resumption
    signature_scheme: SignatureScheme | None
    alpn: str | None
    server_name: str | None
    peer_certificates: tuple[bytes, ...]  # DER, leaf first; empty when the peer sent none
    resumed: bool = False
    early_data_accepted: bool = False
    hello_retry: bool = False
    ocsp_response: bytes | None = None
    # The leaf (DER) we sent in our Certificate (§4.4.2): a server's on a full handshake, else None.
    local_certificate: bytes | None = None


# The slots of the frozen ``HandshakeComplete``: setting them directly builds the same value as its constructor
# without the frozen dataclass's ``object.__setattr__`` per field (one event per handshake; the idiom of
# ``messages.extensions._extension``).
_NEW_EVENT = object.__new__
_SET_VERSION = vars(HandshakeComplete)["version"].__set__
_SET_CIPHER_SUITE = vars(HandshakeComplete)["cipher_suite"].__set__
_SET_GROUP = vars(HandshakeComplete)["group"].__set__
_SET_SIGNATURE_SCHEME = vars(HandshakeComplete)["signature_scheme"].__set__
_SET_ALPN = vars(HandshakeComplete)["alpn"].__set__
_SET_SERVER_NAME = vars(HandshakeComplete)["server_name"].__set__
_SET_PEER_CERTIFICATES = vars(HandshakeComplete)["peer_certificates"].__set__
_SET_RESUMED = vars(HandshakeComplete)["resumed"].__set__
_SET_EARLY_DATA_ACCEPTED = vars(HandshakeComplete)["early_data_accepted"].__set__
_SET_HELLO_RETRY = vars(HandshakeComplete)["hello_retry"].__set__
_SET_OCSP_RESPONSE = vars(HandshakeComplete)["ocsp_response"].__set__
_SET_LOCAL_CERTIFICATE = vars(HandshakeComplete)["local_certificate"].__set__


def handshake_complete(
    version: ProtocolVersion,
    cipher_suite: CipherSuite,
    group: NamedGroup | None,
    signature_scheme: SignatureScheme | None,
    alpn: str | None,
    server_name: str | None,
    peer_certificates: tuple[bytes, ...],
    resumed: bool,
    early_data_accepted: bool,
    hello_retry: bool,
    ocsp_response: bytes | None,
    local_certificate: bytes | None,
) -> HandshakeComplete:
    """``HandshakeComplete(...)`` with every field given, built through its slot descriptors (the constructor
    when compiled with mypyc, whose native class refuses ``object.__new__``)."""
    if not _SLOTS_WRITABLE:
        return HandshakeComplete(
            version=version, cipher_suite=cipher_suite, group=group, signature_scheme=signature_scheme, alpn=alpn,
            server_name=server_name, peer_certificates=peer_certificates, resumed=resumed,
            early_data_accepted=early_data_accepted, hello_retry=hello_retry, ocsp_response=ocsp_response,
            local_certificate=local_certificate,
        )
    event: HandshakeComplete = _NEW_EVENT(HandshakeComplete)
    _SET_VERSION(event, version)
    _SET_CIPHER_SUITE(event, cipher_suite)
    _SET_GROUP(event, group)
    _SET_SIGNATURE_SCHEME(event, signature_scheme)
    _SET_ALPN(event, alpn)
    _SET_SERVER_NAME(event, server_name)
    _SET_PEER_CERTIFICATES(event, peer_certificates)
    _SET_RESUMED(event, resumed)
    _SET_EARLY_DATA_ACCEPTED(event, early_data_accepted)
    _SET_HELLO_RETRY(event, hello_retry)
    _SET_OCSP_RESPONSE(event, ocsp_response)
    _SET_LOCAL_CERTIFICATE(event, local_certificate)
    return event


_SLOTS_WRITABLE = slots_settable(HandshakeComplete(  # not when compiled with mypyc
    version=ProtocolVersion.TLS1_3, cipher_suite=CipherSuite.TLS_AES_128_GCM_SHA256, group=None,
    signature_scheme=None, alpn="h2", server_name="example.test", peer_certificates=(b"leaf",), resumed=True,
    early_data_accepted=True, hello_retry=True, ocsp_response=b"ocsp", local_certificate=b"cert"))


@dataclass(frozen=True, kw_only=True, slots=True)
class ApplicationData:
    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class EarlyData:
    """0-RTT data the server accepted, delivered before the client's Finished (§4.2.10)."""

    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyUpdated:
    """Our receiving key (``received=True``) or sending key changed (§4.6.3)."""

    received: bool
    update_requested: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionTicketReceived:
    """A NewSessionTicket (§4.6.1) with what a client needs to resume with it later."""

    ticket: NewSessionTicket
    psk: bytes
    cipher_suite: CipherSuite
    server_name: str | None
    alpn: str | None
    received_at: float
    max_early_data_size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertReceived:
    description: AlertDescription


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionClosed:
    """The connection ended: cleanly by close_notify (``error`` None) or by a fatal alert either way."""

    by_peer: bool
    alert: AlertDescription | None
    error: TLSError | None = None


Event = (
    HandshakeComplete
    | ApplicationData
    | EarlyData
    | KeyUpdated
    | SessionTicketReceived
    | AlertReceived
    | ConnectionClosed
)


def _rebuild(cls: Callable[..., object], values: dict[str, object]) -> object:
    return cls(**values)


def _reduce(value: object) -> tuple[Callable[..., object], tuple[object, ...]]:
    """Pickle and copy an event by its fields. The pure build's frozen slots dataclasses restore their state
    with ``object.__setattr__``; compiled they are native classes whose frozen ``__setattr__`` refuses it."""
    return _rebuild, (type(value), {f.name: getattr(value, f.name) for f in fields(value)})  # type: ignore[arg-type]


for _cls in (HandshakeComplete, ApplicationData, EarlyData, KeyUpdated, SessionTicketReceived, AlertReceived,
             ConnectionClosed, NewSessionTicket):
    copyreg.pickle(_cls, _reduce)
