"""tlskit: a TLS 1.3 stack for Python — a sans-IO engine (RFC 8446) with blocking and asyncio front ends.

    import tlskit
    conn = tlskit.Connection(tlskit.ClientConfig(server_name="example.com"))

See ``tlskit.io.socket.connect`` / ``tlskit.io.asyncio.open_connection`` for ready-made front ends.
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
]
