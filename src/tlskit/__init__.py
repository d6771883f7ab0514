"""tlskit: a TLS 1.3 stack for Python — a sans-IO engine (RFC 8446) with blocking and asyncio front ends.

    import tlskit
    conn = tlskit.Connection(tlskit.ClientConfig(server_name="example.com"))   # sans-IO
    tls = tlskit.connect("example.com", 443)                                  # blocking, like ssl.SSLSocket
    reader, writer = await tlskit.open_connection("example.com", 443)         # asyncio streams

The front ends live in ``tlskit.io.socket`` (``connect``, ``wrap_server_socket``, ``listen``) and
``tlskit.io.asyncio`` (``open_connection``, ``start_server``); the common ones are re-exported here.
"""

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
