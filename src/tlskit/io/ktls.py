"""Kernel TLS (Linux ``net/tls``): after tlskit's handshake the kernel seals (TX) and opens (RX) the
application data records, so ``sendfile`` can serve a file without copying it through Python.

    tls = connect("example.com", 443, ktls="auto")   # or wrap_server_socket(..., ktls="auto")
    tls.sendfile(open("big.iso", "rb"))              # os.sendfile when kTLS TX is on, else records

The engine (``Connection``) keeps the protocol: the kernel only holds the current traffic keys. Control
records (alerts, KeyUpdate, NewSessionTicket) pass between the two as plaintext with a record-type cmsg:
what the engine seals for sending is opened again with its own write key here and handed to the kernel;
what the kernel delivers is sealed again with the engine's read key and fed to ``receive_data``, so the
engine needs no kTLS mode of its own.

Rekeying: Linux accepts a second ``TLS_TX``/``TLS_RX`` (a KeyUpdate) only from 6.14. On older kernels a
peer's KeyUpdate would strand kernel RX, so ``"auto"`` offloads TX only there; if the peer then asks us to
update our key too, we close our write side with close_notify (the update cannot be followed), and our own
``key_update()`` raises ``KTLSError`` rather than send one. See README "Kernel TLS".
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Literal

from ..connection import Connection
from ..crypto.keyschedule import next_traffic_secret, traffic_key_iv
from ..crypto.suites import SuiteParams, suite_params
from ..enums import AlertDescription, CipherSuite, ContentType, HandshakeType
from ..errors import AlertError, ConfigError, ConnectionClosedError, TLSError
from ..record import HEADER_LEN, RecordDecryptor, RecordEncryptor
from .common import TLSSession

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "KTLSError",
    "KTLSOption",
    "KTLSPolicy",
    "KTLSStream",
    "KernelSupport",
    "KernelTLS",
    "PlainRecord",
    "crypto_info",
    "enable",
    "policy",
    "probe",
    "tls_stat",
]

_log = logging.getLogger("tlskit.ktls")

# <linux/tls.h>, <linux/tcp.h>: Python 3.11's socket module has none of these names.
SOL_TLS = 282
TCP_ULP = 31
TLS_TX = 1
TLS_RX = 2
TLS_SET_RECORD_TYPE = 1
TLS_GET_RECORD_TYPE = 2
TLS_1_3_VERSION = 0x0304
CIPHER_TYPES = {
    CipherSuite.TLS_AES_128_GCM_SHA256: 51,  # TLS_CIPHER_AES_GCM_128
    CipherSuite.TLS_AES_256_GCM_SHA384: 52,  # TLS_CIPHER_AES_GCM_256
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: 54,  # TLS_CIPHER_CHACHA20_POLY1305
}
REKEY_SINCE = (6, 14)  # Linux accepts a new TLS_TX/TLS_RX after a KeyUpdate from this version on
_MAX_RECORD = 1 << 14
_CMSG_SPACE = socket.CMSG_SPACE(1)


class KTLSError(TLSError):
    """kTLS was required but cannot be used, or the kernel cannot do what was asked (e.g. rekey)."""


def crypto_info(suite: CipherSuite, key: bytes, iv: bytes, seq: int) -> bytes:
    """The ``tls12_crypto_info_*`` struct for TLS 1.3: the 12-byte IV split into salt (4) and iv (8) for
    AES-GCM, kept whole for ChaCha20-Poly1305; ``seq`` is the next record's sequence number."""
    cipher = CIPHER_TYPES.get(suite)
    if cipher is None:
        raise ValueError(f"no kTLS cipher for {suite!r}")
    rec_seq = seq.to_bytes(8, "big")
    if suite is CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
        return struct.pack("=HH12s32s8s", TLS_1_3_VERSION, cipher, iv, key, rec_seq)
    key_len = 16 if suite is CipherSuite.TLS_AES_128_GCM_SHA256 else 32
    return struct.pack(f"=HH8s{key_len}s4s8s", TLS_1_3_VERSION, cipher, iv[4:], key, iv[:4], rec_seq)


# --- what this kernel can do (probed once per process) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelSupport:
    """The result of ``probe()``: whether the ``tls`` ULP loads, which suites it takes, whether it rekeys."""

    release: str
    ulp: bool
    ciphers: frozenset[CipherSuite] = frozenset()
    rekey: bool = False
    reason: str = ""  # why kTLS (or a part of it) is unavailable

    @property
    def available(self) -> bool:
        return self.ulp and bool(self.ciphers)


_probe_lock = threading.Lock()
_probed: KernelSupport | None = None
_reported: set[str] = set()  # kernel-wide fallback reasons already logged (once per process, then DEBUG)


def probe(*, refresh: bool = False) -> KernelSupport:
    """Test the kernel on loopback TCP sockets: the ``tls`` ULP, each cipher with dummy keys, and a second
    ``TLS_TX`` (rekey). Cached for the process; nothing is sent."""
    global _probed
    with _probe_lock:
        if _probed is None or refresh:
            _probed = _probe()
        return _probed


def _probe() -> KernelSupport:
    release = os.uname().release
    if not hasattr(socket, "TCP_NODELAY") or os.uname().sysname != "Linux":
        return KernelSupport(release, ulp=False, reason="kTLS needs Linux")
    ciphers: set[CipherSuite] = set()
    reasons: list[str] = []
    rekey = False
    for suite in CIPHER_TYPES:
        try:
            with _LoopbackPair() as sock:
                sock.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
                try:
                    sock.setsockopt(SOL_TLS, TLS_TX, _dummy_info(suite, 0))
                except OSError as e:
                    reasons.append(f"{suite.name}: {_os_reason(e)}")
                    continue
                ciphers.add(suite)
                if suite is CipherSuite.TLS_AES_128_GCM_SHA256:
                    rekey = _probe_rekey(sock, suite, release, reasons)
        except OSError as e:
            why = "the kernel has no tls module" if e.errno == errno.ENOENT else _os_reason(e)
            return KernelSupport(release, ulp=False, reason=f"TCP_ULP tls: {why} (Linux {release})")
    return KernelSupport(release, ulp=True, ciphers=frozenset(ciphers), rekey=rekey, reason="; ".join(reasons))


def _probe_rekey(sock: socket.socket, suite: CipherSuite, release: str, reasons: list[str]) -> bool:
    """Rekeying needs Linux >= 6.14 and a second ``TLS_TX`` that succeeds (older kernels say EBUSY)."""
    if kernel_version(release) < REKEY_SINCE:
        reasons.append(f"no rekey before Linux 6.14 (this is {release})")
        return False
    try:
        sock.setsockopt(SOL_TLS, TLS_TX, _dummy_info(suite, 1))
    except OSError as e:
        reasons.append(f"no rekey: a second TLS_TX gives {_os_reason(e)}")
        return False
    return True


def _dummy_info(suite: CipherSuite, n: int) -> bytes:
    params = suite_params(suite)
    return crypto_info(suite, bytes([n + 1]) * params.key_len, bytes(12), 0)


def _os_reason(e: OSError) -> str:
    name = errno.errorcode.get(e.errno or 0, str(e.errno))
    return f"{name} ({e.strerror})" if e.strerror else name


class _LoopbackPair:
    """A connected loopback TCP socket (the client end) for probing; both ends close on exit."""

    def __enter__(self) -> socket.socket:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            self._client = socket.create_connection(listener.getsockname())
            self._server, _ = listener.accept()
        return self._client

    def __exit__(self, *exc: object) -> None:
        self._client.close()
        self._server.close()


def tls_stat() -> dict[str, int]:
    """``/proc/net/tls_stat`` (TlsCurrTxSw, TlsTxSw, TlsRxSw, TlsDecryptError...); empty without kTLS."""
    try:
        with open("/proc/net/tls_stat") as f:
            return {name: int(value) for name, value in (line.split() for line in f if line.strip())}
    except OSError:
        return {}


# --- policy --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KTLSPolicy:
    """Which directions to offload. ``rx="safe"`` offloads RX only where the kernel can rekey (a peer's
    KeyUpdate cannot strand it); ``"always"`` also on older kernels, where a peer's KeyUpdate then ends the
    connection with ``KTLSError``. ``warn`` logs a fallback as a warning instead of at INFO."""

    tx: bool = True
    rx: Literal["safe", "always", "never"] = "safe"
    warn: bool = False


KTLSOption = bool | Literal["auto"] | KTLSPolicy


def policy(option: KTLSOption) -> KTLSPolicy | None:
    """The front ends' ``ktls=`` argument: ``False`` off, ``"auto"`` best effort, ``True`` best effort
    with fallbacks logged as warnings, or a ``KTLSPolicy``."""
    if option is False:
        return None
    if option is True:
        return KTLSPolicy(warn=True)
    if option == "auto":
        return KTLSPolicy()
    if isinstance(option, KTLSPolicy):
        return option
    raise ConfigError(f"ktls must be False, True, 'auto' or a KTLSPolicy, not {option!r}")


# --- one socket ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlainRecord:
    """One record as the kernel takes it: content type and plaintext. ``rekey`` (TX) is the crypto_info
    to install right after it (a KeyUpdate was sent); ``last`` marks close_notify or a fatal alert."""

    content_type: int
    data: bytes
    rekey: bytes | None = None
    last: bool = False


@dataclass(slots=True)
class KernelTLS:
    """The kTLS state of one connected socket; made by ``enable()``. Not thread-safe: the front end's
    locks order the calls."""

    sock: socket.socket = field(repr=False)
    conn: Connection = field(repr=False)
    tx: bool
    rx: bool
    support: KernelSupport = field(repr=False)
    _params: SuiteParams = field(repr=False)
    _mirror: RecordDecryptor | None = field(repr=False)  # opens what the engine sealed (its write key, seq)
    write_closed: str | None = None  # why we can send no more (close_notify sent, rekey impossible)
    sent_files: int = 0  # sendfile() calls served by the kernel
    control_sent: int = 0  # records sent with a record-type cmsg (alerts, KeyUpdate, tickets)
    control_received: int = 0  # non-data records kTLS RX delivered and the engine processed

    # --- sending ---------------------------------------------------------------------------------------

    def send_data(self, data: ReadableBuffer) -> None:
        """Application data: the kernel seals it."""
        self._check_writable()
        self.sock.sendall(data)

    def send_some(self, data: ReadableBuffer) -> int:
        """As much of ``data`` as the kernel takes now (it seals what it takes): ``socket.send``'s count."""
        self._check_writable()
        return self.sock.send(data)

    def sendfile(self, file: IO[bytes], offset: int = 0, count: int | None = None) -> int:
        """``socket.sendfile`` (``os.sendfile`` underneath) on the kTLS socket; bytes sent."""
        self._check_writable()
        sent = self.sock.sendfile(file, offset, count)
        self.sent_files += 1
        return sent

    def plain_records(self, out: bytes) -> list[PlainRecord]:
        """Open the records the engine sealed (``data_to_send()``) into what goes to the kernel."""
        if not out:
            return []
        mirror = self._mirror
        if mirror is None:
            raise KTLSError("engine output after kTLS TX without a mirror of its write key")
        records: list[PlainRecord] = []
        pos = 0
        while pos < len(out):
            header = out[pos : pos + HEADER_LEN]
            end = pos + HEADER_LEN + int.from_bytes(header[3:5], "big")
            content_type, data = mirror.open(header, out[pos + HEADER_LEN : end])
            pos = end
            rekey = None
            last = content_type is ContentType.alert and (data[0] == 2 or data[1] == AlertDescription.close_notify)
            if content_type is ContentType.handshake and _ends_with_key_update(data):
                # The engine switched to the next write secret after sealing this (§4.6.3).
                mirror = self._mirror = RecordDecryptor(self._params, next_traffic_secret(self._params,
                                                                                         mirror.secret))
                if self.support.rekey:
                    key, iv = traffic_key_iv(self._params, mirror.secret)
                    rekey = crypto_info(self._params.suite, key, iv, 0)
                else:
                    _log.warning("kTLS: a KeyUpdate cannot be followed by Linux %s TX (needs >= 6.14); "
                                 "closing the write side with close_notify instead", self.support.release)
                    self.write_closed = f"KeyUpdate impossible with kTLS TX on Linux {self.support.release}"
                    records.append(PlainRecord(ContentType.alert, bytes((1, AlertDescription.close_notify)),
                                               last=True))
                    break
            records.append(PlainRecord(content_type, data, rekey, last))
        return records

    def send_plain(self, record: PlainRecord) -> None:
        """One record to the kernel: application data as is, the rest with a record-type cmsg."""
        if record.content_type == ContentType.application_data:
            self.sock.sendall(record.data)
        else:
            cmsg = [(SOL_TLS, TLS_SET_RECORD_TYPE, bytes((record.content_type,)))]
            sent = self.sock.sendmsg([record.data], cmsg)
            if sent != len(record.data):
                raise KTLSError(f"kTLS control record cut short ({sent} of {len(record.data)} bytes)")
            self.control_sent += 1
        if record.rekey is not None:
            self.sock.setsockopt(SOL_TLS, TLS_TX, record.rekey)
        if record.last and self.write_closed is None:
            self.write_closed = "close_notify or a fatal alert was sent"

    def send_records(self, out: bytes) -> None:
        """Send what the engine sealed (``data_to_send()``) through the kernel, in order."""
        for record in self.plain_records(out):
            self.send_plain(record)

    def check_key_update(self) -> None:
        """Before our own ``key_update()``: ``KTLSError`` where the kernel cannot take the new TX key."""
        if self.tx and not self.support.rekey:
            raise KTLSError(f"kTLS TX cannot be rekeyed on Linux {self.support.release} (needs >= 6.14); "
                            "KeyUpdate not sent, the connection stays usable")

    def _check_writable(self) -> None:
        if self.write_closed is not None:
            raise ConnectionClosedError(f"no more data can be sent: {self.write_closed}")
        if self.conn.closed:
            raise ConnectionClosedError("the connection is closed")

    # --- receiving -------------------------------------------------------------------------------------

    def recv_record(self, bufsize: int) -> tuple[int, bytes]:
        """One ``recvmsg`` from kTLS RX: (content type, plaintext); ``(23, b"")`` at EOF."""
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(bufsize, _CMSG_SPACE)
        except OSError as e:
            if e.errno == errno.EBADMSG:
                raise AlertError(AlertDescription.bad_record_mac, "kTLS RX: a record failed authentication"
                                 ) from None
            if e.errno == errno.EMSGSIZE:
                raise AlertError(AlertDescription.record_overflow, "kTLS RX: record too large") from None
            if e.errno == errno.EKEYEXPIRED:
                raise KTLSError("kTLS RX: the kernel waits for a new key after the peer's KeyUpdate") from None
            raise
        content_type: int = ContentType.application_data
        for level, kind, value in ancdata:
            if level == SOL_TLS and kind == TLS_GET_RECORD_TYPE and value:
                content_type = value[0]
        return content_type, data

    def deliver(self, session: TLSSession, record: tuple[int, bytes]) -> None:
        """Hand a record from ``recv_record`` to the session: data to its plaintext, the rest to the
        engine, sealed again with its read key so it takes its ordinary path."""
        content_type, data = record
        if content_type == ContentType.application_data:
            if data:
                session.plaintext.append(data)
            else:
                session.receive(b"")  # EOF
            return
        conn = self.conn
        self.control_received += 1
        before = conn.traffic_secrets()
        sealer = RecordEncryptor(self._params, before.read_secret)
        sealer.seq = before.read_seq
        session.receive(sealer.seal(ContentType(content_type), data))
        after = conn.traffic_secrets() if not conn.closed else before
        if after.read_secret != before.read_secret:  # the peer's KeyUpdate (§4.6.3)
            if not self.support.rekey:
                raise KTLSError(f"the peer sent KeyUpdate, which kTLS RX on Linux {self.support.release} "
                                "cannot follow (needs >= 6.14); the connection cannot continue")
            key, iv = traffic_key_iv(self._params, after.read_secret)
            self.sock.setsockopt(SOL_TLS, TLS_RX, crypto_info(self._params.suite, key, iv, after.read_seq))


def _ends_with_key_update(data: bytes) -> bool:
    """Whether a handshake record's messages end with a KeyUpdate (it must be last under its key)."""
    pos = 0
    last = -1
    while pos + 4 <= len(data):
        last = data[pos]
        pos += 4 + int.from_bytes(data[pos + 1 : pos + 4], "big")
    return last == HandshakeType.key_update


# --- switching a connection over -------------------------------------------------------------------------


def enable(
    sock: socket.socket,
    session: TLSSession,
    wanted: KTLSPolicy,
    *,
    send: Callable[[bytes], None] | None = None,
) -> KernelTLS | None:
    """Hand the record layer of a finished handshake to the kernel; None (and a log line why) when the
    connection stays in userspace.

    The engine's pending output is sent first (through ``send``, default ``sock.sendall``): the kernel takes
    over at the engine's next write sequence number. RX is offloaded only at a record boundary (no partial
    record buffered in the engine); plaintext already decrypted stays in the session and is read first.
    """
    conn = session.conn
    level = logging.WARNING if wanted.warn else logging.INFO
    peer = _peer(sock)

    def fallback(reason: str, *, kernel_wide: bool = False) -> None:
        first = reason not in _reported
        if kernel_wide:
            _reported.add(reason)
        _log.log(level if first else logging.DEBUG, "kTLS off for %s, records stay in userspace: %s%s", peer,
                 reason, " (said once per process)" if kernel_wide else "")

    if conn.negotiated is None or conn.closed or session.eof:
        fallback("the connection is not established")
        return None
    support = probe()
    if not support.ulp:
        fallback(support.reason, kernel_wide=True)
        return None
    suite = conn.negotiated.cipher_suite
    if suite not in support.ciphers:
        fallback(f"the kernel does not take {suite.name} ({support.reason or 'not probed'})", kernel_wide=True)
        return None
    rx = {"safe": support.rekey, "always": True, "never": False}[wanted.rx]
    if rx and conn.buffered_input:
        _log.log(level, "kTLS RX off for %s: a partial record is buffered in userspace", peer)
        rx = False
    if not (wanted.tx or rx):
        return None
    out = conn.data_to_send()
    if out:
        (send or sock.sendall)(out)
    params = suite_params(suite)
    secrets = conn.traffic_secrets()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
    except OSError as e:
        fallback(f"TCP_ULP tls: {_os_reason(e)}")
        return None
    # A ULP without keys passes bytes through unchanged, so a failed TLS_TX still leaves plain TCP.
    tx = False
    if wanted.tx:
        key, iv = traffic_key_iv(params, secrets.write_secret)
        try:
            sock.setsockopt(SOL_TLS, TLS_TX, crypto_info(suite, key, iv, secrets.write_seq))
            tx = True
        except OSError as e:
            fallback(f"TLS_TX: {_os_reason(e)}")
    if rx:
        key, iv = traffic_key_iv(params, secrets.read_secret)
        try:
            sock.setsockopt(SOL_TLS, TLS_RX, crypto_info(suite, key, iv, secrets.read_seq))
        except OSError as e:
            _log.log(level, "kTLS RX off for %s: TLS_RX: %s", peer, _os_reason(e))
            rx = False
    if not (tx or rx):
        return None
    mirror = None
    if tx:
        mirror = RecordDecryptor(params, secrets.write_secret)
        mirror.seq = secrets.write_seq
    _log.debug("kTLS on for %s: %s TX=%s RX=%s (Linux %s)", peer, suite.name, tx, rx, support.release)
    return KernelTLS(sock, conn, tx, rx, support, params, mirror)


class KTLSStream:
    """kTLS TX under an asyncio transport: plaintext goes through the transport's buffer, control records
    by ``sendmsg`` once that buffer is empty, so the two never overtake each other. RX stays in userspace
    (the event loop reads with plain ``recv``, which a control record would fail with EIO)."""

    def __init__(self, ktls: KernelTLS, raw: asyncio.Transport) -> None:
        self.ktls = ktls
        self._raw = raw
        self._queue: deque[PlainRecord] = deque()
        self._close_when_sent = False
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def start(cls, raw: asyncio.Transport, session: TLSSession, wanted: KTLSPolicy) -> KTLSStream | None:
        """``enable()`` for a connection whose handshake bytes have all left the transport's buffer."""
        if raw.get_write_buffer_size():
            _log.info("kTLS off for %s: handshake bytes are still queued", _peer_name(raw.get_extra_info("peername")))
            return None
        transport_sock = raw.get_extra_info("socket")
        if transport_sock is None:
            return None
        sock = socket.socket(fileno=os.dup(transport_sock.fileno()))  # shares the socket; we close the dup
        ktls = enable(sock, session, dataclasses.replace(wanted, rx="never"))
        if ktls is None:
            sock.close()
            return None
        return cls(ktls, raw)

    def write_data(self, data: bytes) -> None:
        """Application data: the kernel seals whatever the transport writes."""
        self.ktls._check_writable()
        if self._queue:
            self._queue.append(PlainRecord(ContentType.application_data, data))
        else:
            self._raw.write(data)

    def write_records(self, out: bytes) -> None:
        """What the engine sealed (close_notify, KeyUpdate...), opened and queued for the kernel."""
        self._queue.extend(self.ktls.plain_records(out))
        self._pump()

    def close(self) -> None:
        """Close the transport once every queued record is out."""
        if self._queue:
            self._close_when_sent = True
        else:
            self._raw.close()

    def connection_lost(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._queue.clear()
        self.ktls.sock.close()

    async def sendfile(self, file: IO[bytes], offset: int = 0, count: int | None = None) -> int:
        """``loop.sendfile`` on the TCP transport (``os.sendfile``; the kernel seals the records)."""
        self.ktls._check_writable()
        while self._queue:
            await asyncio.sleep(0.001)
        sent = await asyncio.get_running_loop().sendfile(self._raw, file, offset, count, fallback=True)
        self.ktls.sent_files += 1
        return sent

    def _pump(self) -> None:
        self._timer = None
        raw, queue = self._raw, self._queue
        while queue:
            if raw.is_closing() and not self._close_when_sent:
                queue.clear()
                return
            if raw.get_write_buffer_size():
                self._retry()
                return
            record = queue[0]
            if record.content_type == ContentType.application_data:
                raw.write(record.data)
            else:
                try:
                    self.ktls.send_plain(record)
                except BlockingIOError:
                    self._retry()
                    return
            queue.popleft()
        if self._close_when_sent:
            raw.close()

    def _retry(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(0.002, self._pump)


def _peer(sock: socket.socket) -> str:
    try:
        return _peer_name(sock.getpeername())
    except OSError:
        return "an unconnected socket"


def _peer_name(name: object) -> str:
    if not isinstance(name, tuple) or len(name) < 2:
        return str(name)
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a ``uname -r`` string such as ``6.1.0-56-cloud-amd64``."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else (0, 0)
