"""The sans-IO TLS 1.3 connection (DESIGN §2): bytes in, bytes and events out; no sockets, clocks or entropy.

``Connection`` owns the record layer (RFC 8446 §5) and the post-handshake messages (§4.6); the handshake
itself is a chain of state objects in ``handshake/`` that drive it through a narrow ``Context``. Every
``AlertError`` raised anywhere below ends here: the alert record is queued, the connection refuses further
use, and the error is re-raised to the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .codec import byte_string
from .config import ClientConfig, ServerConfig
from .crypto import groups, keyschedule
from .crypto.keyschedule import KeyIV
from .crypto.suites import SuiteParams
from .enums import (
    AlertDescription,
    CipherSuite,
    ContentType,
    Direction,
    EncryptionLevel,
    HandshakeType,
    KeyUpdateRequest,
)
from .errors import AlertError, ConfigError, ConnectionClosedError, RemoteAlert, TLSError, UnexpectedEOF
from .events import (
    AlertReceived,
    ApplicationData,
    ConnectionClosed,
    EarlyData,
    Event,
    HandshakeComplete,
    KeyUpdated,
    SessionTicketReceived,
)
from .handshake.client import ClientStart
from .handshake.common import Session
from .handshake.server import ExpectClientHello
from .messages.handshake import (
    HandshakeBuffer,
    HandshakeMessage,
    KeyUpdate,
    NewSessionTicket,
    alert_bytes,
    decode_handshake,
)
from .record import (
    HEADER_LEN,
    MAX_CIPHERTEXT,
    MAX_PLAINTEXT,
    RecordDecryptor,
    RecordEncryptor,
    RecordReader,
    check_change_cipher_spec,
    plaintext_records,
)
from .stores.base import StoredTicket

__all__ = ["Connection", "TrafficSecrets"]

_CLOSURE_ALERTS = (AlertDescription.close_notify, AlertDescription.user_canceled)  # §6.1: sent as warnings
_CCS_RECORD = b"\x14\x03\x03\x00\x01\x01"
_APPLICATION_DATA = ContentType.application_data
_HANDSHAKE_RECORD_PREFIX = b"\x16\x03\x03"  # content type handshake, legacy_record_version 0x0303
_MIN_PROTECTED = HEADER_LEN + 1 + 16  # header, content type, AEAD tag
_MAX_RECORD = HEADER_LEN + MAX_CIPHERTEXT
_MAX_EMPTY_RUN = 32  # records in a row that carry nothing before it counts as a flood (see _empty_record)


class _State(Protocol):
    def handle(self, ctx: _HandshakeContext, msg: HandshakeMessage, raw: bytes) -> object: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class TrafficSecrets:
    """Current application traffic secrets and the next record sequence numbers (for kTLS and QUIC)."""

    cipher_suite: CipherSuite
    read_secret: bytes
    read_seq: int
    write_secret: bytes
    write_seq: int


class Connection:
    """One TLS 1.3 connection, client or server by the config it is given.

    >>> conn = Connection(ClientConfig(server_name="example.com"))
    >>> conn.start(); wire = conn.data_to_send()
    """

    __slots__ = (
        "_alpn",
        "_canceled",
        "_ccs_ok",
        "_client_random",
        "_complete",
        "_early_recv",
        "_early_send",
        "_early_sent",
        "_early_skip",
        "_empty_run",
        "_error",
        "_events",
        "_half_rtt",
        "_hs_buf",
        "_limit_announced",
        "_max_fragment",
        "_out",
        "_peer_closed",
        "_pending_hs",
        "_read",
        "_reader",
        "_sent_close",
        "_session",
        "_state",
        "_update_answer_queued",
        "_updates_asked",
        "_write",
        "config",
        "is_client",
    )

    def __init__(self, config: ClientConfig | ServerConfig, *, initial_state: object | None = None) -> None:
        """``initial_state`` replaces the first handshake state (e.g. a ``ClientStart`` with an injected
        ClientHello to replay RFC 8448); leave it None otherwise."""
        if not isinstance(config, ClientConfig | ServerConfig):
            raise TypeError(f"Connection takes a ClientConfig or a ServerConfig, not {type(config).__name__}")
        self.config = config
        self.is_client = isinstance(config, ClientConfig)
        self._reader = RecordReader()
        self._hs_buf = HandshakeBuffer(config.max_handshake_message)
        self._out = bytearray()
        self._pending_hs = bytearray()
        self._events: list[Event] = []
        self._alpn: str | None = None
        self._read: RecordDecryptor | None = None
        self._write: RecordEncryptor | None = None
        self._state: object = initial_state or (ClientStart() if self.is_client else ExpectClientHello())
        self._error: TLSError | None = None
        self._complete: HandshakeComplete | None = None
        self._session: Session | None = None
        self._peer_closed = False
        self._sent_close = False
        self._canceled = False  # close() before the handshake completed: nothing more is taken from the peer
        self._ccs_ok = False
        self._client_random = b""
        self._max_fragment = MAX_PLAINTEXT
        # RFC 8449: our record_size_limit binds the peer once it was announced (client: always, in the
        # ClientHello; server: in EncryptedExtensions, only when the client offered the extension).
        self._limit_announced = False  # our record_size_limit binds the peer: it took part (RFC 8449 §4)
        self._update_answer_queued = False  # our KeyUpdate answering the peer's request waits in _out
        self._updates_asked = 0  # KeyUpdates with update_requested we sent: the peer's answers are no flood
        self._early_send: int | None = None  # client: 0-RTT bytes we may still send
        self._early_sent: list[bytes] = []  # client: 0-RTT data kept for resending if the server rejects it
        self._early_recv: int | None = None  # server: 0-RTT bytes we still accept
        self._early_skip = 0  # server: bytes of rejected 0-RTT records still to skip (§4.2.10)
        self._half_rtt = False  # server: may send before the client's Finished (§2.3)
        self._empty_run = 0  # records in a row that carried nothing (see _empty_record)
        # The states get a fresh _HandshakeContext per call rather than one kept here: a stored one would make
        # a Connection <-> context reference cycle, leaving every finished connection to the cyclic GC.

    # --- the user's API ---------------------------------------------------------------------------

    def start(self) -> None:
        """Client: queue the ClientHello. Server: nothing to do (it waits for one)."""
        if not self.is_client:
            return
        if not isinstance(self._state, ClientStart):
            raise ConfigError("start() was already called")
        self._guard(self._advance_start)

    def _advance_start(self) -> None:
        assert isinstance(self._state, ClientStart)
        self._state = self._state.start(_HandshakeContext(self))
        self._ccs_ok = True

    @property
    def handshake_complete(self) -> bool:
        return self._complete is not None

    @property
    def negotiated(self) -> HandshakeComplete | None:
        """What the handshake settled (the same value as the ``HandshakeComplete`` event)."""
        return self._complete

    @property
    def alpn(self) -> str | None:
        """The negotiated application protocol (RFC 7301), known before the handshake completes: to a server
        once its flight is out (so early data can be routed by it, §4.2.10), to a client from
        EncryptedExtensions. None when none was negotiated."""
        return self._alpn

    @property
    def closed(self) -> bool:
        return self._error is not None or (self._peer_closed and self._sent_close)

    @property
    def error(self) -> TLSError | None:
        """What ended the connection: an ``AlertError`` (our alert is queued, §6.2), a ``RemoteAlert`` or an EOF;
        None while it is usable."""
        return self._error

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes from the transport; ``b""`` means the transport reached EOF. Anything but bytes, bytearray or a
        memoryview is a TypeError here (a caller's mistake: the connection stays usable)."""
        self._receive_bytes(data if type(data) is bytes else byte_string(data, "receive_data"))

    def _receive_bytes(self, data: bytes) -> None:
        if self._error is not None:
            raise ConnectionClosedError(f"connection already failed: {self._error}")
        if self._canceled:  # we ended the handshake (close()): the peer's answer, or its EOF, changes nothing
            self._peer_closed = self._peer_closed or not data
            return
        if not data:
            self._eof()
            return
        if self._peer_closed:
            return  # §6.1: data after the peer's close_notify is ignored (and not buffered)
        size = len(data)
        if (
            _MIN_PROTECTED <= size <= _MAX_RECORD
            and data[0] == 23
            and (data[3] << 8 | data[4]) == size - 5
            and data[1] == 3
            and self._complete is not None
            and not self._early_skip
            and not self._reader.buffered
            and not self._hs_buf
        ):
            # Exactly one protected record on an established connection (the usual case): straight to the AEAD.
            assert self._read is not None
            try:
                content_type, payload = self._read.open(data[:5], data[5:] if size < 2048 else memoryview(data)[5:])
                if content_type is _APPLICATION_DATA and payload:
                    self._empty_run = 0
                    self._events.append(ApplicationData(data=payload))
                    return
                self._dispatch(content_type, payload)
                self._flush_handshake()
            except Exception as e:  # the one boundary (with _guard): see _failure
                raise self._failure(e)  # noqa: B904 (the __cause__ is set there)
            return
        self._guard(self._receive, data)

    def data_to_send(self) -> bytes:
        """Everything queued for the transport (including a final alert after a failure)."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        self._update_answer_queued = False
        return out

    def events(self) -> list[Event]:
        """Events since the last call, oldest first."""
        events = self._events
        self._events = []
        return events

    def send_data(self, data: bytes | bytearray | memoryview) -> None:
        """Queue application data (§5.2); records are split at the negotiated size limit.

        A client that offered 0-RTT may call this before the handshake completes: the data goes out as
        early data (§4.2.10) up to the ticket's limit, and is resent after the handshake if the server
        rejects it (``HandshakeComplete.early_data_accepted`` says which happened). A server may call it once
        its flight is out (0.5-RTT data, §2.3: e.g. the answer to a 0-RTT request), except while it is
        still waiting for a client certificate. Anything but bytes, bytearray or a memoryview is a TypeError.
        """
        self._send_bytes(data if type(data) is bytes else byte_string(data, "send_data"))

    def _send_bytes(self, data: bytes) -> None:
        write = self._write
        if (
            self._complete is not None
            and 0 < len(data) <= self._max_fragment
            and self._error is None
            and not self._sent_close
            and write is not None
            and write.seq < self.config.key_update_after_records - 1
        ):
            self._out += write.seal(_APPLICATION_DATA, data)  # the usual case: one record, no KeyUpdate due
            return
        if self._complete is None and self._early_send is not None and self._error is None:
            if len(data) > self._early_send:
                raise ConfigError(f"{len(data)} bytes exceed the {self._early_send} bytes of early data left")
            assert self._write is not None
            self._early_send -= len(data)
            self._early_sent.append(bytes(data))
            self._flush_handshake()
            self._out += self._write.seal(ContentType.application_data, data)
            return
        if self._complete is None and self._half_rtt and self._error is None and not self._sent_close:
            assert self._write is not None  # 0.5-RTT data under the server's application key (§2.3)
            if data:
                self._flush_handshake()
                self._out += self._write.seal(ContentType.application_data, data)
            return
        self._check_sendable()
        if not data:
            return
        limit = self.config.key_update_after_records
        while data:
            write = self._write
            assert write is not None
            room = limit - 1 - write.seq  # records this key may still protect, KeyUpdate included (§5.5)
            if room <= 0:
                self._update_write_key(request_peer=False)
                continue
            take = room * self._max_fragment
            if take >= len(data):
                self._out += write.seal(ContentType.application_data, data)
                return
            self._out += write.seal(ContentType.application_data, data[:take])
            data = data[take:]

    def key_update(self, request_peer: bool = False) -> None:
        """Send KeyUpdate (§4.6.3) and switch our sending key; ``request_peer`` asks the peer to do the same."""
        self._check_sendable()
        self._update_write_key(request_peer)

    def close(self) -> None:
        """Send close_notify (§6.1) and stop sending; the peer may still send until it closes too.

        Before the handshake completes this cancels it (§6.1): user_canceled, then close_notify, and the handshake
        goes no further: what the peer still sends is dropped (it went on, and even sent its Finished after our
        close_notify)."""
        if self._sent_close or self._error is not None:
            return
        if self._complete is None:
            self._send_alert(AlertDescription.user_canceled)
            self._canceled = True
        self._send_alert(AlertDescription.close_notify)
        self._sent_close = True

    def export_keying_material(self, label: bytes, context: bytes | None, length: int) -> bytes:
        """RFC 8446 §7.5 exporter (as RFC 5705 with TLS 1.3's rules: no context and an empty one are the same,
        so ``context=None`` is b""); ``length`` up to 255 hash lengths (HKDF-Expand)."""
        if self._error is not None:
            raise ConnectionClosedError(f"connection failed: {self._error}")
        if self._session is None:
            raise ConfigError("keying material can be exported only after the handshake")
        if not isinstance(label, bytes) or not isinstance(context, bytes | None):
            raise TypeError("export_keying_material(label: bytes, context: bytes | None, length: int)")
        params = self._session.params
        if not isinstance(length, int) or not 0 < length <= 255 * params.hash_len:
            raise ValueError(f"length must be 1..{255 * params.hash_len} bytes, not {length!r}")
        context = context or b""
        return keyschedule.export_keying_material(
            self._session.params, self._session.exporter_master_secret, label, context, length
        )

    def traffic_secrets(self) -> TrafficSecrets:
        """Application secrets and next sequence numbers, for handing the record layer to kTLS or QUIC."""
        if self._session is None or self._read is None or self._write is None:
            raise ConfigError("traffic secrets exist only after the handshake")
        return TrafficSecrets(
            cipher_suite=self._session.params.suite,
            read_secret=self._read.secret,
            read_seq=self._read.seq,
            write_secret=self._write.secret,
            write_seq=self._write.seq,
        )

    @property
    def pending_output(self) -> int:
        """Bytes queued for the transport: what ``data_to_send()`` would return now."""
        return len(self._out)

    @property
    def buffered_input(self) -> int:
        """Received bytes not yet processed (a partial record)."""
        return self._reader.buffered

    # --- internals ----------------------------------------------------------------------------------

    def _check_sendable(self) -> None:
        if self._error is not None:
            raise ConnectionClosedError(f"connection failed: {self._error}")
        if self._sent_close:
            raise ConnectionClosedError("close() was called; no more data can be sent")
        if self._complete is None:
            raise ConfigError("the handshake is not complete yet")

    def _guard(self, step: Callable[[bytes], None] | Callable[[], None], *args: bytes) -> None:
        """Run ``step(*args)``; turn an AlertError into the alert on the wire and a dead connection. Any other
        failure but our own errors (a bug, or a callback such as ``key_log`` raising) is internal_error."""
        try:
            step(*args)
            self._flush_handshake()
        except Exception as e:  # the one boundary (with receive_data's fast path): see _failure
            raise self._failure(e)  # noqa: B904 (the __cause__ is set there)

    def _failure(self, error: Exception) -> Exception:
        """A step failed: the connection is dead and the alert on the wire (§6.2); returns what to raise.
        AlertError/RemoteAlert as they are; our other errors (ConfigError: the caller's mistake) as they are, with
        internal_error sent; anything else (a bug, a callback such as ``key_log`` that raised) as
        AlertError(internal_error) whose ``__cause__`` it is. (STYLE.md has no ``except Exception``: this is the
        exception to it, so a bug can leave no half-alive connection behind.)"""
        if isinstance(error, AlertError | RemoteAlert):
            self._failed(error)
            return error
        internal = AlertError(AlertDescription.internal_error, f"{type(error).__name__}: {error}")
        self._failed(internal)
        if isinstance(error, TLSError):
            return error
        internal.__cause__ = error
        return internal

    def _failed(self, error: AlertError | RemoteAlert) -> None:
        """After a step raised: our alert goes on the wire (nothing queued before it), or the peer's is kept."""
        if isinstance(error, AlertError):
            self._pending_hs.clear()
            self._fail(error)
        else:
            self._error = error

    def _fail(self, error: AlertError) -> None:
        self._error = error
        self._send_alert(error.description)
        self._events.append(ConnectionClosed(by_peer=False, alert=error.description, error=error))

    def _send_alert(self, description: AlertDescription) -> None:
        body = alert_bytes(description, fatal=description not in _CLOSURE_ALERTS)
        if self._write is None:
            self._out += plaintext_records(ContentType.alert, body)
        else:
            self._flush_handshake()
            self._out += self._write.seal(ContentType.alert, body)

    def _eof(self) -> None:
        if self._peer_closed and self._complete is not None:
            return
        self._peer_closed = True
        error = UnexpectedEOF("the peer closed the transport without close_notify")
        if self._complete is None:
            self._error = error
            self._events.append(ConnectionClosed(by_peer=True, alert=None, error=error))
            raise error
        self._events.append(ConnectionClosed(by_peer=True, alert=None, error=error))

    def _receive(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while not self._peer_closed and (record := reader.next_record()) is not None:  # §6.1: then ignored
            content_type, header, fragment = record
            if content_type is _APPLICATION_DATA and self._complete is not None and not self._early_skip:
                # Established (the usual case): protected records only; application data is delivered
                # unless a handshake message is pending reassembly.
                assert self._read is not None
                content_type, payload = self._read.open(header, fragment)
                if content_type is _APPLICATION_DATA and not self._hs_buf:
                    if payload:
                        self._empty_run = 0
                        self._events.append(ApplicationData(data=payload))
                    else:
                        self._empty_record("zero-length application data")
                    continue
            elif content_type is ContentType.change_cipher_spec:
                if not self._ccs_ok or self._complete is not None or self._hs_buf:  # §5.1: not inside a message
                    raise AlertError(AlertDescription.unexpected_message, "unexpected change_cipher_spec")
                check_change_cipher_spec(fragment)
                self._empty_record("change_cipher_spec")
                continue
            elif self._read is None or (content_type is ContentType.alert and self._complete is None):
                # A peer that fails before it has our keys sends its alert in plaintext (§6, §5.1).
                if content_type is ContentType.application_data:
                    # 0-RTT data around a HelloRetryRequest (§4.2.10); never an empty record (no AEAD tag): skipped
                    # for free, those would hold a handshake open for ever
                    if fragment and self._early_skip >= len(fragment):
                        self._early_skip -= len(fragment)
                        continue
                    raise AlertError(AlertDescription.unexpected_message, "protected record before keys exist")
                payload = bytes(fragment)  # plaintext records are handshake or alert: small
            else:
                if content_type is not ContentType.application_data:
                    raise AlertError(
                        AlertDescription.unexpected_message, f"plaintext {content_type.name} record after keys"
                    )
                if self._early_skip:
                    try:
                        content_type, payload = self._read.open(header, fragment)
                    except AlertError as e:
                        # Rejected 0-RTT records cannot be opened with the handshake key: skip them (§4.2.10).
                        if e.description is not AlertDescription.bad_record_mac:
                            raise
                        if not fragment:  # no AEAD tag: never 0-RTT data (skipped for free, it could come for ever)
                            raise AlertError(AlertDescription.unexpected_message, "empty protected record") from None
                        if self._early_skip >= len(fragment):
                            self._early_skip -= len(fragment)
                            continue
                        # §4.6.1/§4.2.10: more 0-RTT data than we would skip (OpenSSL: too much early data)
                        raise AlertError(AlertDescription.unexpected_message,
                                         "more rejected 0-RTT data than max_early_data_size") from None
                    self._early_skip = 0
                else:
                    content_type, payload = self._read.open(header, fragment)
            self._dispatch(content_type, payload)

    def _empty_record(self, what: str) -> None:
        """A record that carried nothing for the application or the handshake: a zero-length application data
        record (§5.4 allows them), a ChangeCipherSpec (§5: dropped), a user_canceled warning or a KeyUpdate.
        Each costs a record's processing for no progress, so a run of them is a flood: after
        ``_MAX_EMPTY_RUN`` in a row, unexpected_message (OpenSSL stops at 32 empty records or CCS, BoringSSL at
        32 KeyUpdates; KeyUpdates answering our own requests do not count)."""
        self._empty_run += 1
        if self._empty_run > _MAX_EMPTY_RUN:
            raise AlertError(AlertDescription.unexpected_message,
                             f"more than {_MAX_EMPTY_RUN} records in a row carried nothing (the last: {what})")

    def _dispatch(self, content_type: ContentType, payload: bytes) -> None:
        """Act on one record's content (§5): handshake messages, alerts, early or application data."""
        match content_type:
            case ContentType.handshake:
                self._receive_handshake(payload)
            case ContentType.alert:
                self._receive_alert(payload)
            case ContentType.application_data if self._complete is None and self._early_recv is not None:
                if len(payload) > self._early_recv or self._hs_buf:
                    raise AlertError(AlertDescription.unexpected_message, "more early data than we allowed")
                if not payload:
                    self._empty_record("zero-length early data")
                    return
                self._empty_run = 0
                self._early_recv -= len(payload)
                self._events.append(EarlyData(data=payload))
            case ContentType.application_data:
                if self._complete is None or self._hs_buf:
                    raise AlertError(AlertDescription.unexpected_message, "application data during handshake")
                if payload:
                    self._empty_run = 0
                    self._events.append(ApplicationData(data=payload))
                else:
                    self._empty_record("zero-length application data")
            case _:
                raise AlertError(AlertDescription.unexpected_message, f"{content_type.name} record")

    def _receive_handshake(self, payload: bytes) -> None:
        buf = self._hs_buf
        buf.feed(payload)
        while (message := buf.next_message()) is not None:
            msg_type, body, raw = message
            if self.config.message_trace is not None:
                self.config.message_trace(False, raw)
            msg = decode_handshake(msg_type, body)
            if msg_type == HandshakeType.client_hello and not self._client_random:
                self._client_random = raw[6:38]
                self._ccs_ok = True
            if self._complete is None:
                self._empty_run = 0  # the handshake moved on
                state = self._state
                self._state = state.handle(_HandshakeContext(self), msg, raw)  # type: ignore[attr-defined]
            else:
                self._post_handshake(msg)

    def _post_handshake(self, msg: HandshakeMessage) -> None:
        """§4.6: tickets (client) and key updates (both)."""
        match msg:
            case NewSessionTicket() if self.is_client:
                self._ticket(msg)
            case KeyUpdate():
                if self._hs_buf:
                    raise AlertError(AlertDescription.unexpected_message, "KeyUpdate not at a record boundary")
                if self._updates_asked:
                    self._updates_asked -= 1  # (perhaps) the answer to one we requested
                else:
                    self._empty_record("KeyUpdate")
                assert self._read is not None and self._session is not None
                params = self._session.params
                self._read = RecordDecryptor(
                    params, keyschedule.next_traffic_secret(params, self._read.secret), max_inner=self._read.max_inner
                )
                if self.config.on_secret is not None:
                    self.config.on_secret(EncryptionLevel.application, Direction.read, params.suite, self._read.secret)
                requested = msg.request_update is KeyUpdateRequest.update_requested
                self._events.append(KeyUpdated(received=True, update_requested=requested))
                # §4.6.3: one answer for requests received while it has not gone out ("an implementation which
                # receives multiple KeyUpdates while it is silent [responds] with a single update")
                if requested and not self._sent_close and not self._update_answer_queued:
                    self._update_write_key(request_peer=False)
                    self._update_answer_queued = True
            case _:
                raise AlertError(
                    AlertDescription.unexpected_message,
                    f"{HandshakeType(msg.TYPE).name} after the handshake",
                )

    def _ticket(self, msg: NewSessionTicket) -> None:
        session = self._session
        assert session is not None
        max_early = 0
        for e in msg.extensions:
            if e.type == 42:  # early_data (§4.2.10)
                max_early = int.from_bytes(e.data, "big")
        psk = keyschedule.resumption_psk(session.params, session.resumption_master_secret, msg.nonce)
        now = self.config.clock()
        config = self.config
        store, key = (config.session_store, config.session_key) if isinstance(config, ClientConfig) else (None, None)
        if store is not None and key is not None and session.server_name and msg.lifetime > 0:  # 0: discard (§4.6.1)
            store.put(
                key,
                StoredTicket(
                    ticket=msg.ticket,
                    psk=psk,
                    cipher_suite=session.params.suite,
                    server_name=session.server_name,
                    alpn=session.alpn,
                    received_at=now,
                    lifetime=msg.lifetime,
                    age_add=msg.age_add,
                    max_early_data_size=max_early,
                    peer_chain=self._complete.peer_certificates if self._complete is not None else (),
                ),
            )
        self._events.append(
            SessionTicketReceived(
                ticket=msg,
                psk=psk,
                cipher_suite=session.params.suite,
                server_name=session.server_name,
                alpn=session.alpn,
                received_at=now,
                max_early_data_size=max_early,
            )
        )

    def _update_write_key(self, request_peer: bool) -> None:
        write, session = self._write, self._session
        assert write is not None and session is not None
        request = KeyUpdateRequest.update_requested if request_peer else KeyUpdateRequest.update_not_requested
        self._updates_asked += request_peer
        self._out += write.seal(ContentType.handshake, KeyUpdate(request_update=request).encode())
        params = session.params
        self._write = self._encryptor(params, keyschedule.next_traffic_secret(params, write.secret))
        if self.config.on_secret is not None:
            self.config.on_secret(EncryptionLevel.application, Direction.write, params.suite, self._write.secret)
        self._events.append(KeyUpdated(received=False, update_requested=request_peer))

    def _receive_alert(self, payload: bytes) -> None:
        if self._hs_buf:
            raise AlertError(AlertDescription.unexpected_message, "alert inside a fragmented handshake message")
        if len(payload) != 2:
            raise AlertError(AlertDescription.decode_error, "malformed alert record")
        description = AlertDescription(payload[1])
        if description is AlertDescription.close_notify and self._complete is None:
            # A peer that closes mid-handshake has given up on it: that is a failure, not a clean end.
            error = RemoteAlert(description)
            self._events.append(ConnectionClosed(by_peer=True, alert=description, error=error))
            raise error
        if description is AlertDescription.close_notify:
            self._peer_closed = True
            self._events.append(ConnectionClosed(by_peer=True, alert=description))
            return
        if description is AlertDescription.user_canceled:
            self._empty_record("user_canceled alert")
            self._events.append(AlertReceived(description=description))
            return
        error = RemoteAlert(description)
        self._events.append(AlertReceived(description=description))
        self._events.append(ConnectionClosed(by_peer=True, alert=description, error=error))
        raise error

    def _encryptor(self, params: SuiteParams, secret: bytes, key_iv: KeyIV | None = None) -> RecordEncryptor:
        return RecordEncryptor(params, secret, pad_to=self.config.pad_to, max_fragment=self._max_fragment,
                               key_iv=key_iv)

    def _flush_handshake(self) -> None:
        pending = self._pending_hs
        if not pending:
            return
        data = bytes(pending)
        pending.clear()
        if self._write is None:
            first = data[0] == HandshakeType.client_hello and not self._client_random
            if first or len(data) > MAX_PLAINTEXT:
                self._out += plaintext_records(ContentType.handshake, data, first_client_hello=first)
            else:  # one TLSPlaintext record (§5.1): a ServerHello, a HelloRetryRequest, a second ClientHello
                self._out += _HANDSHAKE_RECORD_PREFIX + len(data).to_bytes(2, "big") + data
            if first:
                self._client_random = data[6:38]
        else:
            self._out += self._write.seal(ContentType.handshake, data)


class _HandshakeContext:
    """The ``handshake.common.Context`` the states drive; it only touches the connection's record layer."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def config(self) -> ClientConfig | ServerConfig:
        return self._conn.config

    def random(self, n: int) -> bytes:
        return groups.random_bytes(self._conn.config.random, n)

    def now(self) -> float:
        return self._conn.config.clock()

    def send_handshake(self, message: bytes) -> None:
        conn = self._conn
        conn._pending_hs += message
        if conn.config.message_trace is not None:
            conn.config.message_trace(True, message)

    def send_change_cipher_spec(self) -> None:
        conn = self._conn
        conn._flush_handshake()
        conn._out += _CCS_RECORD

    def set_read_secret(self, params: SuiteParams, secret: bytes, level: EncryptionLevel,
                        key_iv: KeyIV | None = None) -> None:
        conn = self._conn
        if conn._hs_buf:
            raise AlertError(AlertDescription.unexpected_message, "handshake message spans a key change")
        limit = conn.config.record_size_limit if conn._limit_announced else None
        max_inner = limit if limit is not None else MAX_PLAINTEXT + 1
        conn._read = RecordDecryptor(params, secret, max_inner=max_inner, key_iv=key_iv)
        conn._early_recv = None
        if conn.config.on_secret is not None:
            conn.config.on_secret(level, Direction.read, params.suite, secret)

    def set_write_secret(self, params: SuiteParams, secret: bytes, level: EncryptionLevel,
                         key_iv: KeyIV | None = None) -> None:
        conn = self._conn
        conn._flush_handshake()
        conn._write = conn._encryptor(params, secret, key_iv)
        if conn.config.on_secret is not None:
            conn.config.on_secret(level, Direction.write, params.suite, secret)

    def clear_write_secret(self) -> None:
        conn = self._conn
        conn._flush_handshake()
        conn._write = None

    def allow_early_data(self, max_size: int) -> None:
        self._conn._early_send = max_size

    def early_data_finished(self, accepted: bool) -> None:
        conn = self._conn
        conn._early_send = None
        if accepted or not (isinstance(conn.config, ClientConfig) and conn.config.resend_rejected_early_data):
            conn._early_sent.clear()

    def accept_early_data(self, max_size: int) -> None:
        self._conn._early_recv = max_size

    def allow_half_rtt(self) -> None:
        self._conn._half_rtt = True

    def skip_early_data(self, max_bytes: int) -> None:
        self._conn._early_skip = max_bytes

    def set_send_record_limit(self, limit: int) -> None:
        """RFC 8449 §4: the peer's limit counts the inner content type, so we send at most limit - 1."""
        conn = self._conn
        conn._limit_announced = True  # server: its EncryptedExtensions answers with ours; client: the server echoed
        conn._max_fragment = min(MAX_PLAINTEXT, limit - 1)
        if conn._write is not None:
            conn._write.max_fragment = conn._max_fragment
        own = conn.config.record_size_limit
        if conn._read is not None and own is not None:  # client: from the record after EncryptedExtensions on
            conn._read.max_inner = own

    def select_alpn(self, protocol: str) -> None:
        self._conn._alpn = protocol

    def key_log(self, label: str, secret: bytes) -> None:
        conn = self._conn
        sink = conn.config.key_log
        if sink is not None:
            if not conn._client_random:
                conn._flush_handshake()
            sink(f"{label} {conn._client_random.hex()} {secret.hex()}")

    def emit(self, event: Event) -> None:
        conn = self._conn
        if isinstance(event, HandshakeComplete):
            conn._complete = event
            if conn._early_sent:  # rejected 0-RTT data: send it again as ordinary data (§4.2.10)
                config = conn.config
                assert conn._write is not None and isinstance(config, ClientConfig)
                written_for = config.alpn[0] if config.alpn else None
                if event.alpn == written_for:  # §4.2.10: never resend under another application protocol
                    conn._flush_handshake()
                    conn._out += conn._write.seal(ContentType.application_data, b"".join(conn._early_sent))
                conn._early_sent.clear()
        conn._events.append(event)

    def established(self, session: Session) -> None:
        self._conn._session = session
