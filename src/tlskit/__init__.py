"""tlskit: a TLS 1.3 stack for Python — a sans-IO engine (RFC 8446) with blocking and asyncio front ends.

    import tlskit
    conn = tlskit.Connection(tlskit.ClientConfig(server_name="example.com"))   # sans-IO
    tls = tlskit.connect("example.com", 443)                                  # blocking, like ssl.SSLSocket
    reader, writer = await tlskit.open_connection("example.com", 443)         # asyncio streams

The front ends live in ``tlskit.io.socket`` (``connect``, ``wrap_server_socket``, ``listen``) and
``tlskit.io.asyncio`` (``open_connection``, ``start_server``); the common ones are re-exported here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import CertifiedKey, ClientAuth, ClientConfig, EarlyDataPolicy, ServerConfig
    from .connection import Connection, TrafficSecrets
    from .enums import AlertDescription, CipherSuite, NamedGroup, SignatureScheme
    from .errors import (
        AlertError,
        CertificateError,
        ConfigError,
        ConnectionClosedError,
        DecodeError,
        HandshakeTimeout,
        RemoteAlert,
        TLSError,
        UnexpectedEOF,
        WantReadError,
        WantWriteError,
    )
    from .io.asyncio import open_connection, start_server, start_tls
    from .io.socket import connect, listen, wrap_server_socket, wrap_socket
    from .pki.verify import TrustStore

# Imported on first use (PEP 562), so that ``tlskit.cli`` and ``tlskit.enums`` users do not pay for the engine,
# the front ends and the PKI at start (about 0.3 s): ``tlskit serve`` must take over SIGHUP before a reload
# signal can end it, and ``tlskit --help`` should not wait for cryptography's X.509 stack.
_HOMES = {
    "CertifiedKey": "config", "ClientAuth": "config", "ClientConfig": "config", "EarlyDataPolicy": "config",
    "ServerConfig": "config", "Connection": "connection", "TrafficSecrets": "connection",
    "AlertDescription": "enums", "CipherSuite": "enums", "NamedGroup": "enums", "SignatureScheme": "enums",
    "AlertError": "errors", "CertificateError": "errors", "ConfigError": "errors",
    "ConnectionClosedError": "errors", "DecodeError": "errors", "HandshakeTimeout": "errors",
    "RemoteAlert": "errors", "TLSError": "errors", "UnexpectedEOF": "errors", "WantReadError": "errors",
    "WantWriteError": "errors", "open_connection": "io.asyncio", "start_server": "io.asyncio",
    "start_tls": "io.asyncio", "connect": "io.socket", "listen": "io.socket", "wrap_server_socket": "io.socket",
    "wrap_socket": "io.socket", "TrustStore": "pki.verify",
}


def __getattr__(name: str) -> object:
    """The re-exported names, imported from their modules on first use; the subpackages by name too."""
    home = _HOMES.get(name)
    if home is None:
        if not name.isidentifier():  # (hasattr(tlskit, "a.b") must answer False, not import tlskit.a)
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "AlertDescription",
    "AlertError",
    "CertificateError",
    "CertifiedKey",
    "CipherSuite",
    "ClientAuth",
    "ClientConfig",
    "ConfigError",
    "Connection",
    "ConnectionClosedError",
    "DecodeError",
    "EarlyDataPolicy",
    "HandshakeTimeout",
    "NamedGroup",
    "RemoteAlert",
    "ServerConfig",
    "SignatureScheme",
    "TLSError",
    "TrafficSecrets",
    "TrustStore",
    "UnexpectedEOF",
    "WantReadError",
    "WantWriteError",
    "__version__",
    "connect",
    "listen",
    "open_connection",
    "start_server",
    "start_tls",
    "wrap_server_socket",
    "wrap_socket",
]
