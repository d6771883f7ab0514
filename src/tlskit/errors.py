"""The one error hierarchy of tlskit (DESIGN §2).

``AlertError`` is raised deep inside the engine; the connection turns it into the alert record that goes on
the wire and re-raises it to the user. ``RemoteAlert`` is what the peer told us. ``ConfigError`` is our
user's misuse and never reaches the wire.

As with ``ssl`` (whose ``SSLError`` is an ``OSError``), every error of a connection is also an ``OSError``, so
code written for sockets (``urllib``, ``http.client``, retry loops) handles a failed handshake as it handles a
reset; misuse stays a ``ValueError``.
"""

from __future__ import annotations

import datetime as dt

from .enums import AlertDescription


class TLSError(Exception):
    """Base class of every error tlskit raises."""


class ConfigError(TLSError, ValueError):
    """A configuration, key file or certificate the user gave us is unusable; the message says the fix."""


class AlertError(TLSError, OSError):
    """A protocol failure that we answer with a fatal alert (RFC 8446 §6.2)."""

    def __init__(self, description: AlertDescription, message: str) -> None:
        super().__init__(f"{description.name}: {message}")
        self.description = description
        self.message = message


class DecodeError(AlertError):
    """Malformed, truncated or trailing bytes: always ``decode_error`` (§6.2)."""

    def __init__(self, message: str) -> None:
        super().__init__(AlertDescription.decode_error, message)


class CertificateError(AlertError):
    """The peer's certificate chain was rejected (unknown_ca, bad_certificate, certificate_expired, ...)."""


class CertificateRevoked(CertificateError):
    """An OCSP response or CRL says the certificate is revoked: always ``certificate_revoked`` (§6.2)."""

    def __init__(self, message: str, *, serial: int, revoked_at: dt.datetime | None, reason: str | None) -> None:
        super().__init__(AlertDescription.certificate_revoked, message)
        self.serial = serial
        self.revoked_at = revoked_at
        self.reason = reason


class RemoteAlert(TLSError, OSError):
    """The peer sent a fatal alert (or close_notify, which ends the connection cleanly)."""

    def __init__(self, description: AlertDescription) -> None:
        super().__init__(f"peer sent alert {description.name} ({int(description)})")
        self.description = description


class ConnectionClosedError(TLSError, OSError):
    """The connection is closed (after close_notify or a fatal error) and cannot be used."""


class HandshakeTimeout(TLSError, TimeoutError):
    """The handshake did not complete within the front end's timeout."""


class WantReadError(BlockingIOError):
    """A non-blocking socket has nothing to read yet: call again once it is readable (``ssl.SSLWantReadError``;
    a ``BlockingIOError``, so code written for plain sockets catches it too)."""


class WantWriteError(BlockingIOError):
    """A non-blocking socket cannot take more now: call again once it is writable (``ssl.SSLWantWriteError``)."""


class UnexpectedEOF(TLSError, OSError, EOFError):
    """The transport closed without a close_notify alert (a truncation, or a peer that just hung up)."""


def internal_cause(error: BaseException) -> BaseException | None:
    """The exception behind an ``internal_error`` the engine raised for it (a bug, a callback that raised: RFC 8446
    §6.2), for logging with its traceback; None for the peer's faults, whose causes are our own errors if any."""
    cause = error.__cause__
    return cause if cause is not None and not isinstance(cause, TLSError) else None
