"""Events the sans-IO ``Connection`` reports (DESIGN §2): frozen values to ``match`` on."""

from __future__ import annotations

import copyreg
from collections.abc import Callable
from dataclasses import dataclass, fields

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
