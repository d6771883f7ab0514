"""What the blocking and asyncio front ends share: building configs, driving a ``Connection`` between
transport reads, and the ``ssl``-style view of a finished handshake (``version()``, ``getpeercert()``...)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from ..config import ClientConfig, ServerConfig
from ..connection import Connection
from ..enums import ContentType, ExtensionType, HandshakeType, ProtocolVersion
from ..errors import ConfigError, TLSError
from ..events import ApplicationData, ConnectionClosed, EarlyData, HandshakeComplete
from ..handshake.common import LOG_PEER
from ..keylog import key_log_from_env
from ..messages.extensions import extension_map, parse_server_name
from ..messages.handshake import ClientHello, decode_handshake
from ..pki.serials import format_serial
from ..pki.verify import TrustStore

__all__ = ["ALERT_LINGER", "CHANNEL_BINDING_TYPES", "READ_SIZE", "WRITE_SIZE", "ConnectionInfo", "TLSSession",
           "client_config", "close_after_alert", "format_address", "peer_cert_dict", "server_config",
           "server_end_point", "with_env_key_log"]

READ_SIZE = 1 << 16  # bytes per transport read: four full records
WRITE_SIZE = 1 << 18  # plaintext handed to the engine per call: sixteen full records

_CONFIG = ClientConfig | ServerConfig


_C = TypeVar("_C", ClientConfig, ServerConfig)


def with_env_key_log(config: _C) -> _C:
    """``config`` with the ``SSLKEYLOGFILE`` sink when it has no ``key_log`` of its own."""
    if config.key_log is not None:
        return config
    sink = key_log_from_env()
    return config if sink is None else dataclasses.replace(config, key_log=sink)


def client_config(
    host: str,
    *,
    server_name: str | None,
    cafile: str | os.PathLike[str] | None,
    trust: TrustStore | None,
    alpn: Iterable[str],
    config: ClientConfig | None,
    overrides: dict[str, Any],
) -> ClientConfig:
    """The config ``connect``/``open_connection`` use: ``config`` (or defaults) with the keyword arguments
    applied; the server name defaults to ``host``, the key log to ``SSLKEYLOGFILE``."""
    changes = dict(overrides)
    if server_name is not None or config is None or config.server_name is None:
        changes["server_name"] = server_name or host
    if cafile is not None and trust is not None:
        raise ConfigError("give cafile= or trust=, not both")
    if cafile is not None:
        changes["trust"] = TrustStore.from_pem_file(cafile)
    elif trust is not None:
        changes["trust"] = trust
    if isinstance(alpn, str):  # (tuple("h2") offered "h" and "2")
        raise ConfigError(f"alpn takes a sequence, e.g. alpn=(\"h2\", \"http/1.1\"), not the str {alpn!r}")
    alpn = tuple(alpn)
    if alpn:
        changes["alpn"] = alpn
    try:
        cfg = ClientConfig(**changes) if config is None else dataclasses.replace(config, **changes)
    except TypeError as e:  # an unknown keyword: say which field names exist
        fields = sorted(f.name for f in dataclasses.fields(ClientConfig))
        raise ConfigError(f"{e}; ClientConfig fields are {fields}") from None
    if cfg.early_data:  # (it was accepted, and the handshake quietly went without 0-RTT)
        raise ConfigError("the blocking and asyncio clients do not send 0-RTT data: drive a tlskit.Connection for it")
    return with_env_key_log(cfg)


class ConnectionInfo:
    """The ``ssl.SSLSocket``-style questions about a connection; mixed into the front-end objects."""

    __slots__ = ()
    conn: Connection

    @property
    def negotiated(self) -> HandshakeComplete | None:
        """The ``HandshakeComplete`` event: suite, group, ALPN, peer chain, resumption."""
        return self.conn.negotiated

    @property
    def server_side(self) -> bool:
        return not self.conn.is_client

    @property
    def server_hostname(self) -> str | None:
        config = self.conn.config
        return config.server_name if isinstance(config, ClientConfig) else None

    def version(self) -> str | None:
        """``"TLSv1.3"`` once the handshake is done, else None (as ``ssl``)."""
        done = self.conn.negotiated
        return None if done is None else _VERSION_NAMES.get(done.version, done.version.name)

    def cipher(self) -> tuple[str, str, int] | None:
        """(IANA/OpenSSL suite name, protocol version, secret bits), e.g. ``("TLS_AES_128_GCM_SHA256",
        "TLSv1.3", 128)``."""
        done = self.conn.negotiated
        if done is None:
            return None
        name = done.cipher_suite.name
        return name, self.version() or "", 128 if "_128_" in name else 256

    def selected_alpn_protocol(self) -> str | None:
        done = self.conn.negotiated
        return None if done is None else done.alpn

    def getpeercert(self, binary_form: bool = False) -> dict[str, Any] | bytes | None:
        """The peer's leaf: DER with ``binary_form``, else ``ssl``'s dict (empty when it was not verified)."""
        done = self.conn.negotiated
        if done is None:
            raise ConfigError("handshake not done yet")
        if not done.peer_certificates:
            return None
        der = done.peer_certificates[0]
        if binary_form:
            return der
        config = self.conn.config
        if isinstance(config, ClientConfig) and not config.verify_peer:
            return {}
        return peer_cert_dict(der)

    def export_keying_material(self, label: bytes, context: bytes, length: int) -> bytes:
        """RFC 8446 §7.5 exporter."""
        return self.conn.export_keying_material(label, context, length)

    @property
    def session_reused(self) -> bool:
        """Whether the handshake resumed a session from a ticket (RFC 8446 §2.2), as ``ssl`` reports it."""
        done = self.conn.negotiated
        return done is not None and done.resumed

    def compression(self) -> None:
        """None, as ``ssl`` reports it: TLS 1.3 has no compression (RFC 8446 §4.1.2)."""
        return None

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        """Channel binding data (RFC 5056) for ``cb_type``, or None until the handshake completes (as ``ssl``).

        ``"tls-exporter"`` (RFC 9266, the binding for TLS 1.3): 32 bytes of the exporter
        ``EXPORTER-Channel-Binding`` with no context. ``"tls-server-end-point"`` (RFC 5929 §4.1, what SCRAM-PLUS
        in PostgreSQL uses): the server certificate hashed with its signature's hash (SHA-256 for MD5 and
        SHA-1). ``ssl``'s default ``"tls-unique"`` is not defined for TLS 1.3 (RFC 9266 §1): ValueError, as any
        type not in ``CHANNEL_BINDING_TYPES``.
        """
        if cb_type not in CHANNEL_BINDING_TYPES:
            advice = " (it is not defined for TLS 1.3, RFC 9266: use 'tls-exporter')" if cb_type == "tls-unique" else ""
            raise ValueError(f"{cb_type!r} channel binding type not implemented{advice}; "
                             f"tlskit offers {', '.join(CHANNEL_BINDING_TYPES)}")
        done = self.conn.negotiated
        if done is None:
            return None
        if cb_type == "tls-exporter":
            return self.conn.export_keying_material(b"EXPORTER-Channel-Binding", b"", 32)
        server_leaf = done.local_certificate if self.server_side else next(iter(done.peer_certificates), None)
        if server_leaf is None:
            raise ValueError("tls-server-end-point: this side did not see the server's certificate "
                             "(a server's own on a resumed handshake is not kept; use 'tls-exporter')")
        return server_end_point(server_leaf)


CHANNEL_BINDING_TYPES = ("tls-exporter", "tls-server-end-point")


def server_end_point(certificate: bytes) -> bytes:
    """``tls-server-end-point`` channel binding data (RFC 5929 §4.1) of a DER certificate: its hash under the
    hash of its own signature algorithm, SHA-256 in place of MD5 and SHA-1; undefined (ValueError) for
    algorithms with no single hash, such as Ed25519."""
    try:
        algorithm = x509.load_der_x509_certificate(certificate).signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if algorithm is None:
        raise ValueError("tls-server-end-point is not defined for this certificate's signature algorithm "
                         "(RFC 5929 §4.1 needs one hash function; use 'tls-exporter')")
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(certificate)
    return digest.finalize()


class TLSSession(ConnectionInfo):
    """A ``Connection`` plus the plaintext it has received and whether the peer is done sending.

    ``receive`` feeds transport bytes (``b""`` for EOF) and raises the engine's ``TLSError``; the caller
    then sends ``outgoing()`` (the alert) before reporting the error.
    """

    __slots__ = ("_hello", "_started", "conn", "describe_peer", "early_bytes", "eof", "plaintext", "ragged_eof")

    def __init__(self, config: _CONFIG) -> None:
        self.conn = Connection(config)
        self.plaintext: deque[bytes] = deque()
        self.eof = False  # the peer will send nothing more
        self.ragged_eof = False  # ... and said so only by closing the transport
        self.early_bytes = 0  # server: 0-RTT plaintext received (the first bytes of ``plaintext``, RFC 8446 §4.2.10)
        # server, until its handshake completes: the start of the ClientHello, to name its SNI on failure
        self._hello: bytearray | None = None if self.conn.is_client else bytearray()
        self._started = False
        # the front end's "host:port" of the peer, for the engine's log lines (``handshake.common.LOG_PEER``)
        self.describe_peer: Callable[[], str] | None = None

    def start(self) -> None:
        """Queue the ClientHello (client); idempotent."""
        if not self._started:
            self._started = True
            self.conn.start()

    def receive(self, data: bytes) -> None:
        conn = self.conn
        if self._hello is not None and len(self._hello) < _HELLO_KEEP:
            self._hello += data[: _HELLO_KEEP - len(self._hello)]
        token = LOG_PEER.set(self.describe_peer) if self.describe_peer is not None else None
        try:
            conn.receive_data(data)
        finally:
            if token is not None:
                LOG_PEER.reset(token)
            for event in conn.events():
                if type(event) is ApplicationData or type(event) is EarlyData:
                    if event.data:
                        self.plaintext.append(event.data)
                        if type(event) is EarlyData:
                            self.early_bytes += len(event.data)
                elif type(event) is ConnectionClosed and event.by_peer:
                    self.eof = True
                    self.ragged_eof = event.alert is None
                elif type(event) is HandshakeComplete:
                    self._hello = None

    def outgoing(self) -> bytes:
        return self.conn.data_to_send()

    def pending(self) -> int:
        """Decrypted bytes received and not yet read."""
        return sum(map(len, self.plaintext))

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` buffered plaintext bytes, across records (one record that is all of it, or fills
        ``limit``, is returned without a copy)."""
        plaintext = self.plaintext
        parts: list[bytes] = []
        while limit and plaintext:
            head = plaintext[0]
            if len(head) <= limit:
                parts.append(plaintext.popleft())
            else:
                plaintext[0] = head[limit:]
                parts.append(head[:limit])
            limit -= len(parts[-1])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def take_into(self, buffer: memoryview) -> int:
        """Copy buffered plaintext into ``buffer``; the number of bytes copied."""
        filled, size, plaintext = 0, len(buffer), self.plaintext
        while plaintext and filled < size:
            head = plaintext[0]
            n = min(len(head), size - filled)
            buffer[filled : filled + n] = head[:n] if n < len(head) else head
            filled += n
            if n == len(head):
                plaintext.popleft()
            else:
                plaintext[0] = head[n:]
        return filled

    def plain_http(self) -> bool:
        """Server side, before the handshake completes: the peer's first bytes are an HTTP/1.x request line
        (``GET /...``), not a TLS record, i.e. someone spoke plain HTTP to the TLS port."""
        hello = self._hello
        return hello is not None and _HTTP_METHOD.match(hello) is not None

    def first_bytes(self) -> bytes:
        """Server side, before the handshake completes: the start of what the peer sent (for logging)."""
        return bytes(self._hello or b"")

    def received_nothing(self) -> bool:
        """Server side, before the handshake completes: not one byte came from the peer (a TCP health check
        or port scan that connects and hangs up, not a failed TLS handshake)."""
        return self._hello is not None and not self._hello

    def client_server_name(self) -> str | None:
        """Server side: the SNI of the ClientHello received so far (for logging a failed handshake)."""
        data = bytes(self._hello or b"")
        if len(data) < 9 or data[0] != ContentType.handshake or data[5] != HandshakeType.client_hello:
            return None
        size = int.from_bytes(data[6:9], "big")
        # A ClientHello spread over several records is rare; name the SNI only when it fits in one.
        if len(data) < 9 + size or int.from_bytes(data[3:5], "big") < 4 + size:
            return None
        try:
            hello = decode_handshake(HandshakeType.client_hello, data[9 : 9 + size])
            if not isinstance(hello, ClientHello):
                return None
            body = extension_map(hello.extensions).get(ExtensionType.server_name)
            return None if body is None else parse_server_name(body)
        except TLSError:
            return None


def peer_cert_dict(der: bytes) -> dict[str, Any]:
    """A DER certificate as ``ssl.SSLSocket.getpeercert()`` shows it (subject, issuer, validity, SANs)."""
    cert = x509.load_der_x509_certificate(der)
    info: dict[str, Any] = {
        "subject": _name(cert.subject),
        "issuer": _name(cert.issuer),
        "version": cert.version.value + 1,
        "serialNumber": format_serial(cert.serial_number),  # as ssl.getpeercert(): 0123, not 123
        "notBefore": _asn1_time(cert.not_valid_before_utc),
        "notAfter": _asn1_time(cert.not_valid_after_utc),
    }
    exts = cert.extensions
    try:
        san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        info["subjectAltName"] = tuple(_general_name(n) for n in san)
    try:
        aia = exts.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        pass
    else:
        for key, oid in (("OCSP", AuthorityInformationAccessOID.OCSP),
                         ("caIssuers", AuthorityInformationAccessOID.CA_ISSUERS)):
            uris = tuple(d.access_location.value for d in aia
                         if d.access_method == oid and isinstance(d.access_location, x509.UniformResourceIdentifier))
            if uris:
                info[key] = uris
    return info


_HELLO_KEEP = 5 + (1 << 14)
_HTTP_METHOD = re.compile(rb"[A-Z]{3,10} \S")  # GET /, OPTIONS *, PRI * (a TLS record starts with 0x14-0x18)
_VERSION_NAMES = {ProtocolVersion.TLS1_3: "TLSv1.3", ProtocolVersion.TLS1_2: "TLSv1.2"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# OpenSSL's long names, which ``ssl`` reports; other attributes appear as dotted OIDs.
_ATTRIBUTE_NAMES = {
    NameOID.COMMON_NAME: "commonName",
    NameOID.COUNTRY_NAME: "countryName",
    NameOID.LOCALITY_NAME: "localityName",
    NameOID.STATE_OR_PROVINCE_NAME: "stateOrProvinceName",
    NameOID.STREET_ADDRESS: "streetAddress",
    NameOID.ORGANIZATION_NAME: "organizationName",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.DOMAIN_COMPONENT: "domainComponent",
    NameOID.USER_ID: "userId",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.JURISDICTION_COUNTRY_NAME: "jurisdictionCountryName",
}


def _name(name: x509.Name) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(
        tuple((_ATTRIBUTE_NAMES.get(a.oid, a.oid.dotted_string), _text(a.value)) for a in rdn)
        for rdn in name.rdns
    )


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.hex()


def _asn1_time(when: Any) -> str:
    """OpenSSL's ``ASN1_TIME_print`` form, which ``ssl.cert_time_to_seconds`` parses."""
    return f"{_MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S} {when.year} GMT"


def _general_name(name: x509.GeneralName) -> tuple[str, str]:
    match name:
        case x509.DNSName():
            return "DNS", name.value
        case x509.IPAddress():
            address = name.value
            if isinstance(address, ipaddress.IPv6Address):  # as _ssl.c prints it: eight groups, %X, uncompressed
                packed = address.packed
                return "IP Address", ":".join(f"{packed[i] << 8 | packed[i + 1]:X}" for i in range(0, 16, 2))
            return "IP Address", str(address)
        case x509.RFC822Name():
            return "email", name.value
        case x509.UniformResourceIdentifier():
            return "URI", name.value
        case x509.DirectoryName():
            return "DirName", name.value.rfc4514_string()
        case x509.RegisteredID():
            return "Registered ID", name.value.dotted_string
    return "othername", "<unsupported>"


def forget_tracebacks(error: BaseException | None) -> None:
    """Drop the tracebacks of a lost connection's ``error`` and of the exceptions it was raised from. They refer
    to the frames it passed through, whose locals (``self``) hold the error in turn: a reference cycle that kept
    the whole connection for the garbage collector. (Whatever logs an error does so when it happens.)"""
    seen = 0
    while error is not None and seen < 8:
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
        seen += 1


def format_address(address: Any) -> str:
    """``host:port`` (``[v6]:port``) for a socket address, for log lines."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "unknown peer"


ALERT_LINGER = 0.5  # seconds ``connect()`` waits, after a failed handshake, for the peer to read our alert


def close_after_alert(sock: socket.socket, linger: float) -> None:
    """Close after our fatal alert so that the peer reads it (RFC 8446 §6.2): closing with bytes of the peer's
    still unread makes the kernel reset the connection, and a peer still writing then fails with a broken pipe
    before it reads the alert (Java's JSSE reported that, not our bad_certificate). Half-close, drop what has
    arrived and, for ``linger`` seconds at most, read on until the peer closes too (0: no waiting, for a
    close() that must not hang: a server's, a non-blocking socket's)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + linger
        while True:
            left = deadline - time.monotonic()
            sock.settimeout(left if left > 0 else 0.0)  # (0.0: non-blocking, BlockingIOError once drained)
            if not sock.recv(READ_SIZE):
                break
    except OSError:  # drained, reset, gone or out of time: nothing more to wait for
        pass
    finally:
        sock.close()


def server_config(config: object) -> ServerConfig:
    """``config`` if it is a ServerConfig: a ClientConfig given to a server made its "server" sockets clients."""
    if not isinstance(config, ServerConfig):
        raise TypeError(f"a server takes a ServerConfig, not {type(config).__name__}")
    return config
