"""What client and server handshake states share: the ``Context`` they drive, the negotiated ``Session``, and
the checks both sides make (RFC 8446 §4)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import PublicKeyAlgorithmOID

from ..config import ClientConfig, ServerConfig
from ..crypto import keyschedule, signatures
from ..crypto.suites import SuiteParams
from ..crypto.transcript import Transcript
from ..enums import AlertDescription, CipherSuite, EncryptionLevel, HandshakeType, NamedGroup, SignatureScheme
from ..errors import AlertError
from ..events import Event
from ..messages.handshake import CertificateVerify, Finished, HandshakeMessage, finished_bytes

# Who the connection being driven talks to, for the engine's log lines: set by a front end around its calls into
# the engine (``TLSSession.receive``), as a callable so the address is only formatted when a line is written.
LOG_PEER: ContextVar[Callable[[], str] | None] = ContextVar("tlskit_log_peer", default=None)


def log_peer() -> str:
    """``"203.0.113.5:51234: "`` while a front end drives a connection to that peer, else ``""``."""
    describe = LOG_PEER.get()
    return f"{describe()}: " if describe is not None else ""


class Context(Protocol):
    """The narrow view of the connection a handshake state may use: no sockets, clocks or entropy of its own."""

    @property
    def config(self) -> ClientConfig | ServerConfig: ...

    def random(self, n: int) -> bytes: ...

    def now(self) -> float: ...

    def send_handshake(self, message: bytes) -> None:
        """Queue one encoded handshake message under the current write protection."""

    def send_change_cipher_spec(self) -> None:
        """Queue the middlebox-compatibility ChangeCipherSpec record (§D.4)."""

    def set_read_secret(self, params: SuiteParams, secret: bytes, level: EncryptionLevel,
                        key_iv: keyschedule.KeyIV | None = None) -> None:
        """Protect what we receive from here on with ``secret`` (and tell ``config.on_secret``); ``key_iv``:
        its ``traffic_key_iv`` when already derived."""

    def set_write_secret(self, params: SuiteParams, secret: bytes, level: EncryptionLevel,
                         key_iv: keyschedule.KeyIV | None = None) -> None:
        """Protect what we send from here on with ``secret`` (queued messages go out under the old key first);
        ``key_iv`` as in ``set_read_secret``."""

    def set_send_record_limit(self, limit: int) -> None:
        """The peer's RFC 8449 record_size_limit: our protected records carry at most ``limit - 1`` bytes."""

    def clear_write_secret(self) -> None:
        """Back to plaintext records (a client that sent 0-RTT data and then got a HelloRetryRequest)."""

    def allow_early_data(self, max_size: int) -> None:
        """Client: ``send_data`` may now send up to ``max_size`` bytes of 0-RTT data (§4.2.10)."""

    def early_data_finished(self, accepted: bool) -> None:
        """Client: no more 0-RTT data; if the server rejected it, it is resent after the handshake."""

    def allow_half_rtt(self) -> None:
        """Server: ``send_data`` may send before the client's Finished (0.5-RTT data, §2.3)."""

    def accept_early_data(self, max_size: int) -> None:
        """Server: application data records under the current read key are 0-RTT data (§4.2.10)."""

    def skip_early_data(self, max_bytes: int) -> None:
        """Server: drop the client's rejected 0-RTT records (trial decryption, §4.2.10)."""

    def select_alpn(self, protocol: str) -> None:
        """The application protocol is settled (RFC 7301): a server's with its flight, a client's from
        EncryptedExtensions — before the handshake completes, so 0-RTT data can be routed by it."""

    def key_log(self, label: str, secret: bytes) -> None:
        """Emit one NSS key log line (keyed by the client random) if the config asks for it."""

    def emit(self, event: Event) -> None: ...

    def established(self, session: Session) -> None:
        """The handshake is complete: application secrets are installed; keep what exporters need."""


@dataclass(slots=True)
class Session:
    """Secrets and parameters that outlive the handshake (exporters §7.5, resumption §4.6.1)."""

    params: SuiteParams
    exporter_master_secret: bytes
    resumption_master_secret: bytes
    server_name: str | None
    alpn: str | None
    group: NamedGroup | None


def unexpected(expected: str, msg: HandshakeMessage) -> AlertError:
    """The one error for a message that arrives in the wrong state (§6.2 ``unexpected_message``)."""
    return AlertError(AlertDescription.unexpected_message, f"expected {expected}, got {HandshakeType(msg.TYPE).name}")


def check_finished(params: SuiteParams, base_key: bytes, transcript: Transcript, msg: Finished) -> None:
    """§4.4.4: a wrong verify_data is ``decrypt_error``."""
    check_verify_data(params, keyschedule.finished_verify_data(params, base_key, transcript.digest()), msg)


def check_verify_data(params: SuiteParams, expected: bytes, msg: Finished) -> None:
    """``check_finished`` with the expected verify_data computed by the caller."""
    if len(msg.verify_data) != params.hash_len:
        raise AlertError(AlertDescription.decode_error, "Finished has the wrong length for the suite")
    if not _constant_time_eq(expected, msg.verify_data):
        raise AlertError(AlertDescription.decrypt_error, "Finished verify_data does not match the transcript")


def make_finished(params: SuiteParams, base_key: bytes, transcript: Transcript) -> bytes:
    return finished_bytes(keyschedule.finished_verify_data(params, base_key, transcript.digest()))


def _constant_time_eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def choose_suite(
    offered: tuple[CipherSuite, ...], ours: tuple[CipherSuite, ...], server_order: bool
) -> CipherSuite | None:
    """§4.1.1: the client's preference by default, ours when configured."""
    first, second = (ours, offered) if server_order else (offered, ours)  # short tuples: scans beat sets
    for suite in first:
        if suite in second:
            return suite
    return None


def choose_scheme(ours: Sequence[SignatureScheme], offered: Sequence[SignatureScheme]) -> SignatureScheme | None:
    """Our first scheme the peer offered (a certificate's key signs with one or a few: scanning beats a set)."""
    for scheme in ours:
        if scheme in offered:
            return scheme
    return None


def check_certificate_verify(
    leaf: x509.Certificate,
    msg: CertificateVerify,
    accepted: Sequence[SignatureScheme],
    transcript: Transcript,
    *,
    from_server: bool,
) -> None:
    """§4.4.3 for either side: a scheme we did not offer is ``illegal_parameter``, a key we cannot use is
    ``unsupported_certificate``, a wrong signature ``decrypt_error``."""
    peer = "server" if from_server else "client"
    if msg.algorithm not in accepted:
        raise AlertError(AlertDescription.illegal_parameter, f"{peer} signed with {msg.algorithm.name}")
    try:
        public_key = leaf.public_key()
        pss_oid = leaf.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS
    except (ValueError, UnsupportedAlgorithm):
        raise AlertError(AlertDescription.unsupported_certificate, f"unsupported {peer} public key") from None
    data = signatures.certificate_verify_input(from_server, transcript.digest())
    signatures.verify(public_key, msg.algorithm, data, msg.signature, pss_oid=pss_oid)
