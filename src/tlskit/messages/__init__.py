"""Wire messages of TLS 1.3 (RFC 8446 §4): frozen values with ``encode()``/``decode()``."""

from .extensions import Extension, KeyShareEntry, OfferedPsks, PskIdentity
from .handshake import (
    Certificate,
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    EndOfEarlyData,
    Finished,
    HandshakeBuffer,
    HandshakeMessage,
    KeyUpdate,
    NewSessionTicket,
    ServerHello,
    decode_handshake,
)

__all__ = [
    "Certificate",
    "CertificateEntry",
    "CertificateRequest",
    "CertificateVerify",
    "ClientHello",
    "EncryptedExtensions",
    "EndOfEarlyData",
    "Extension",
    "Finished",
    "HandshakeBuffer",
    "HandshakeMessage",
    "KeyShareEntry",
    "KeyUpdate",
    "NewSessionTicket",
    "OfferedPsks",
    "PskIdentity",
    "ServerHello",
    "decode_handshake",
]
