"""Frozen client and server configurations (DESIGN §2). Time, randomness and keys are injected here, which is
what lets the engine replay RFC 8448 byte for byte and run under any I/O model."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import PublicKeyAlgorithmOID

from .crypto import signatures
from .crypto.groups import SUPPORTED_GROUPS
from .crypto.suites import SUITES
from .enums import CipherSuite, Direction, EncryptionLevel, NamedGroup, PskKeyExchangeMode, SignatureScheme
from .errors import ConfigError
from .messages.handshake import Certificate, CertificateEntry
from .pki.identity import SpiffeAllowList
from .pki.pinning import PinSet
from .pki.revocation import RevocationPolicy
from .pki.verify import TrustStore
from .stores.base import ReplayStore, SessionStore
from .tickets.keyring import TicketKeys
from .tickets.rotation import check_rotation

SecretHook = Callable[[EncryptionLevel, Direction, CipherSuite, bytes], None]
"""``on_secret(level, direction, suite, secret)``: called for every traffic secret the connection installs."""

DEFAULT_CIPHER_SUITES: tuple[CipherSuite, ...] = (
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
)
DEFAULT_GROUPS: tuple[NamedGroup, ...] = (
    NamedGroup.x25519,
    NamedGroup.X25519MLKEM768,
    NamedGroup.secp256r1,
    NamedGroup.secp384r1,
)
# A client offers the post-quantum hybrid first and sends shares for it and for x25519, as Chrome, Firefox and
# OpenSSL >= 3.5 do: a server that prefers it (OpenSSL >= 3.5, Cloudflare, Google) needs no HelloRetryRequest,
# and one without it takes the x25519 share. (key_share_groups=(NamedGroup.x25519,) saves the ~0.1 ms the
# ML-KEM key costs where post-quantum protection is not wanted.)
CLIENT_GROUPS: tuple[NamedGroup, ...] = (
    NamedGroup.X25519MLKEM768,
    NamedGroup.x25519,
    NamedGroup.secp256r1,
    NamedGroup.secp384r1,
)
CLIENT_KEY_SHARES: tuple[NamedGroup, ...] = (NamedGroup.X25519MLKEM768, NamedGroup.x25519)
# §5.5: AES-GCM may protect at most 2^24.5 full-size records per key; we update well before.
DEFAULT_KEY_UPDATE_RECORDS = 1 << 24


def _chain_names(leaf: x509.Certificate, chain: tuple[bytes, ...]) -> frozenset[bytes]:
    """The issuer and subject names (DER) of every certificate in ``chain`` (§4.2.4 DistinguishedName)."""
    names: set[bytes] = set()
    for i, der in enumerate(chain):
        try:
            cert = leaf if i == 0 else x509.load_der_x509_certificate(der)
            names.add(cert.issuer.public_bytes())
            names.add(cert.subject.public_bytes())
        except ValueError:
            continue  # an unparsable intermediate only loses its names for matching
    return frozenset(names)


@dataclass(frozen=True, kw_only=True, slots=True)
class CertifiedKey:
    """A certificate chain (DER, leaf first) with the private key that signs for it."""

    chain: tuple[bytes, ...]
    private_key: PrivateKeyTypes
    ocsp_response: bytes | None = None
    schemes: tuple[SignatureScheme, ...] = field(default=())
    dns_names: tuple[str, ...] = field(default=(), compare=False)
    certificate_message: bytes = field(default=b"", compare=False, repr=False)  # §4.4.2, without staple
    # DER subject and issuer names along the chain: what a peer's certificate_authorities list is matched to
    ca_names: frozenset[bytes] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("chain", "schemes", "dns_names"):  # a list is taken (the compiled engine needs the tuple)
            if not isinstance(getattr(self, name), tuple):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.ocsp_response, bytearray | memoryview):
            object.__setattr__(self, "ocsp_response", bytes(self.ocsp_response))
        if not self.chain:
            raise ConfigError("CertifiedKey needs at least the leaf certificate")
        try:
            leaf = x509.load_der_x509_certificate(self.chain[0])
            leaf_key = leaf.public_key()
        except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as e:
            raise ConfigError(f"the leaf certificate is unusable: {e}") from None
        if not self.schemes:
            pss_oid = leaf.public_key_algorithm_oid == PublicKeyAlgorithmOID.RSASSA_PSS
            object.__setattr__(self, "schemes", signatures.schemes_for_key(self.private_key, pss_oid=pss_oid))
        if not self.schemes:
            raise ConfigError(f"a {type(self.private_key).__name__} cannot sign TLS 1.3 handshakes")
        if not self.dns_names:  # parsed once here, not on every handshake's SNI match
            try:
                sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                names = tuple(n.lower() for n in sans.get_values_for_type(x509.DNSName))
            except (x509.ExtensionNotFound, ValueError):
                names = ()
            object.__setattr__(self, "dns_names", names)
        if not self.certificate_message:
            message = Certificate(entries=tuple(CertificateEntry(cert_data=c) for c in self.chain)).encode()
            object.__setattr__(self, "certificate_message", message)
        if not self.ca_names:
            object.__setattr__(self, "ca_names", _chain_names(leaf, self.chain))
        pub = self.private_key.public_key()
        fmt = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        if leaf_key.public_bytes(enc, fmt) != pub.public_bytes(enc, fmt):
            ours = pub.public_bytes(enc, fmt)
            for position, der in enumerate(self.chain[1:], start=2):
                try:
                    other = x509.load_der_x509_certificate(der).public_key().public_bytes(enc, fmt)
                except ValueError:
                    continue
                if other == ours:  # the chain is in the wrong order
                    raise ConfigError(f"the private key matches certificate #{position} of the chain, not the first: "
                                      "put the server's own certificate first, then its issuers")
            raise ConfigError("the private key does not match the leaf certificate's public key")

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.chain[0])

    def sign(self, scheme: SignatureScheme, data: bytes) -> bytes:
        return signatures.sign(self.private_key, scheme, data)

    @classmethod
    def from_pem_files(
        cls,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        password: bytes | None = None,
    ) -> CertifiedKey:
        """Load a PEM chain (leaf first) and a PEM private key; errors name the file and the fix."""
        try:
            pem = Path(cert_file).read_bytes()
        except OSError as e:
            raise ConfigError(f"{cert_file}: cannot read certificate file ({e.strerror})") from None
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise ConfigError(
                f"{cert_file}: no PEM certificate found (expected '-----BEGIN CERTIFICATE-----')"
            ) from None
        if (begun := pem.count(b"-----BEGIN CERTIFICATE-----")) != len(certs):  # a block cut short is skipped
            raise ConfigError(f"{cert_file}: {begun} certificates begin but {len(certs)} are complete (is the file "
                              "still being written?)")
        try:
            key_pem = Path(key_file).read_bytes()
        except OSError as e:
            raise ConfigError(f"{key_file}: cannot read private key file ({e.strerror})") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{key_file}: {_key_file_problem(key_file, key_pem, password, e)}") from None
        chain = tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)
        try:
            return cls(chain=chain, private_key=key)
        except ConfigError as e:
            raise ConfigError(f"{cert_file} / {key_file}: {e}") from None


def _key_file_problem(key_file: str | os.PathLike[str], key_pem: bytes, password: bytes | None,
                      error: Exception) -> str:
    """Why a private key file did not load, with the fix for the usual cases (cryptography's message has none)."""
    if password is None and b"ENCRYPTED" in key_pem:  # PKCS#8 "ENCRYPTED PRIVATE KEY", or "Proc-Type: 4,ENCRYPTED"
        return (f"the private key is encrypted and no passphrase was given: decrypt it with `openssl pkey -in "
                f"{os.fspath(key_file)} -out KEY.pem` (keep KEY.pem mode 0600) and give KEY.pem")
    if b"PRIVATE KEY-----" not in key_pem and b"-----BEGIN CERTIFICATE-----" in key_pem:
        return "holds a certificate, not a private key: give the key file that goes with the certificate"
    if b"-----BEGIN" not in key_pem:
        hint = (f"; this looks like DER: convert it with `openssl pkey -inform der -in {os.fspath(key_file)} -out "
                "KEY.pem`" if key_pem[:1] == b"\x30" else "")
        return f"no PEM private key found (expected '-----BEGIN PRIVATE KEY-----'){hint}"
    return f"not a usable PEM private key ({error})"


def _check_common(
    cipher_suites: Sequence[CipherSuite], groups: Sequence[NamedGroup], alpn: Sequence[str], key_update_after: int
) -> None:
    if key_update_after < 2:
        raise ConfigError("key_update_after_records must be at least 2 (the KeyUpdate itself is a record)")
    if not cipher_suites:
        raise ConfigError("cipher_suites is empty: name at least one TLS 1.3 suite")
    for s in cipher_suites:
        if s not in SUITES:
            raise ConfigError(f"cipher suite {s.name} is not supported; use one of {[x.name for x in SUITES]}")
    if not groups:
        raise ConfigError("groups is empty: name at least one key exchange group")
    for g in groups:
        if g not in SUPPORTED_GROUPS:
            raise ConfigError(f"group {g.name} is not supported; use some of {[x.name for x in SUPPORTED_GROUPS]}")
    for p in alpn:
        if not 0 < len(p.encode()) < 256:
            raise ConfigError(f"ALPN protocol name {p!r} must be 1..255 bytes")


@dataclass(frozen=True, kw_only=True, slots=True)
class EarlyDataPolicy:
    """When a server accepts 0-RTT (RFC 8446 §4.2.10, §8): off unless configured, never without a replay check.

    ``accept(server_name, alpn) -> bool`` lets the application decide per connection; ``freshness_window``
    (seconds) bounds the difference between the client's and our view of the ticket age and is how long a
    ClientHello stays in the replay store.
    """

    max_early_data_size: int = 16384
    freshness_window: float = 10.0
    accept: Callable[[str | None, str | None], bool] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.max_early_data_size < 1 << 32:  # a uint32 in the ticket's early_data extension (§4.2.10)
            raise ConfigError(f"max_early_data_size must be 0..2^32-1 bytes, not {self.max_early_data_size}")
        if not self.freshness_window > 0:
            raise ConfigError(f"freshness_window must be a positive number of seconds, not {self.freshness_window}")

    def allows(self, server_name: str | None, alpn: str | None) -> bool:
        return self.accept is None or bool(self.accept(server_name, alpn))  # a truthy answer, e.g. None or 1


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientAuth:
    """Mutual TLS on the server (§4.3.2): ``optional`` asks for a certificate, ``required`` insists on one."""

    mode: Literal["none", "optional", "required"] = "required"
    trust: TrustStore | None = None
    send_ca_names: bool = True
    allowed_ids: SpiffeAllowList | None = None  # only these SPIFFE IDs get in (access_denied otherwise)
    revocation: RevocationPolicy | None = None  # CRL/OCSP checks of client certificates
    clock_skew: float = 0.0  # seconds of tolerance on client certificates' validity periods

    def __post_init__(self) -> None:
        if self.mode not in ("none", "optional", "required"):
            raise ConfigError(f"client_auth mode {self.mode!r}: use 'none', 'optional' or 'required'")
        if self.mode != "none" and self.trust is None:
            raise ConfigError("client_auth needs trust=TrustStore(...) with the CAs that issue client certificates")


_LISTS: dict[str, type[CipherSuite] | type[NamedGroup] | type[SignatureScheme] | type[PskKeyExchangeMode] | None] = {
    "alpn": None, "cipher_suites": CipherSuite, "groups": NamedGroup, "key_share_groups": NamedGroup,
    "signature_algorithms": SignatureScheme, "psk_modes": PskKeyExchangeMode, "certificates": None,
}


def _normalize(config: ClientConfig | ServerConfig, objects: tuple[tuple[str, type, str], ...]) -> None:
    """The argument mistakes a caller makes, told at the call (a wrong type failed deep inside, or only at the
    first handshake as internal_error): a list given as one string (``alpn="h2"`` offered "h" and "2"), names
    where enum members belong (taken: ``cipher_suites=("TLS_AES_128_GCM_SHA256",)``), lists (made tuples, so
    the config stays hashable), and objects of the wrong type."""
    for name, enum in _LISTS.items():
        value = getattr(config, name, None)
        if value is None:
            continue
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):  # (a set: no preference order)
            example = "(\"h2\", \"http/1.1\")" if name == "alpn" else "(...,)"
            raise ConfigError(f"{name} takes a sequence, e.g. {name}={example}, not {type(value).__name__} {value!r}")
        items = tuple(value)
        if enum is not None:
            try:
                items = tuple(enum[v] if isinstance(v, str) else enum(v) for v in items)
            except (KeyError, ValueError):
                choices = [m.name for m in _CHOICES.get(name, list(enum))]
                raise ConfigError(f"{name}: {list(value)!r} is not a {enum.__name__} name; use some of {choices}") \
                    from None
        elif name == "alpn" and not all(isinstance(p, str) for p in items):
            raise ConfigError(f"alpn takes protocol names as str, e.g. (\"h2\", \"http/1.1\"), not {items!r}")
        elif name == "certificates" and not all(isinstance(c, CertifiedKey) for c in items):
            raise ConfigError("certificates takes CertifiedKey objects (CertifiedKey.from_pem_files(cert, key))")
        object.__setattr__(config, name, items)
    for name, kind, fix in objects:
        value = getattr(config, name, None)
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"{name} takes a {kind.__name__}, not {type(value).__name__} {value!r}{fix}")
    if not isinstance(config.pad_to, int) or config.pad_to < 0:
        raise ConfigError(f"pad_to must be a block size >= 0 (0: no padding), not {config.pad_to!r}")


_CHOICES: dict[str, Sequence[CipherSuite | NamedGroup]] = {
    "cipher_suites": tuple(SUITES), "groups": SUPPORTED_GROUPS, "key_share_groups": SUPPORTED_GROUPS}
_CLIENT_OBJECTS: tuple[tuple[str, type, str], ...] = (
    ("server_name", str, ""),
    ("trust", TrustStore, ": TrustStore.from_pem_file(\"ca.pem\") (connect() and open_connection() take cafile=)"),
    ("certificate", CertifiedKey, ": CertifiedKey.from_pem_files(cert, key)"),
)
_SERVER_OBJECTS: tuple[tuple[str, type, str], ...] = (
    ("early_data", EarlyDataPolicy, ""),
    ("client_auth", ClientAuth, ""),
)


def _session_scope(config: ClientConfig) -> str:
    """A short digest of what a resumed session does not check again (see ``ClientConfig.session_key``)."""
    digest = hashlib.sha256(b"tlskit session scope 1")
    digest.update(bytes((config.verify_peer, config.check_hostname)))
    digest.update(config.trust.fingerprint if config.trust is not None else b"no trust store")
    for pin in sorted(config.pins.pins) if config.pins is not None else ():
        digest.update(b"pin " + pin.encode())
    revocation = config.revocation
    if revocation is not None:
        policy = (revocation.mode, sorted(os.fspath(p) for p in revocation.crl_files), revocation.fetch_ocsp,
                  revocation.fetch_crl, revocation.skew.total_seconds())
        digest.update(b"revocation " + repr(policy).encode())
    digest.update(b"clock skew " + repr(float(config.clock_skew)).encode())
    for identity in config.identities():
        digest.update(b"client " + identity.chain[0])
    return digest.hexdigest()[:16]


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientConfig:
    """Everything a client connection needs; ``trust=None`` means the system trust store."""

    server_name: str | None = None
    trust: TrustStore | None = None
    verify_peer: bool = True
    alpn: tuple[str, ...] = ()
    cipher_suites: tuple[CipherSuite, ...] = DEFAULT_CIPHER_SUITES
    groups: tuple[NamedGroup, ...] = CLIENT_GROUPS
    key_share_groups: tuple[NamedGroup, ...] | None = None  # None: see ``key_shares``
    signature_algorithms: tuple[SignatureScheme, ...] = signatures.TLS13_SIGNATURE_SCHEMES
    middlebox_compat: bool = True
    record_size_limit: int | None = None
    pad_to: int = 0
    request_ocsp: bool = False
    certificate: CertifiedKey | None = None
    certificates: tuple[CertifiedKey, ...] = ()  # more client identities, picked by the server's CA names (§4.2.4)
    key_update_after_records: int = DEFAULT_KEY_UPDATE_RECORDS
    max_handshake_message: int = 1 << 17
    clock: Callable[[], float] = time.time
    random: Callable[[int], bytes] = os.urandom
    key_log: Callable[[str], None] | None = None
    message_trace: Callable[[bool, bytes], None] | None = None  # (sent?, whole handshake message) for tools
    on_secret: SecretHook | None = None  # every traffic secret as it is installed (QUIC, kTLS, tools)
    session_store: SessionStore | None = None
    psk_modes: tuple[PskKeyExchangeMode, ...] = (PskKeyExchangeMode.psk_dhe_ke,)
    early_data: bool = False
    resend_rejected_early_data: bool = True
    revocation: RevocationPolicy | None = None
    pins: PinSet | None = None
    clock_skew: float = 0.0  # seconds of tolerance on the server chain's validity periods
    check_hostname: bool = True  # False: a chain to a trusted root is enough (no server_name needed)
    session_scope: str = field(init=False, default="", repr=False, compare=False)  # see ``session_key``

    @property
    def key_shares(self) -> tuple[NamedGroup, ...]:
        """The groups the ClientHello carries shares for: ``key_share_groups``, or by default X25519MLKEM768 and
        x25519 where ``groups`` lists them (else its first group), as browsers and OpenSSL >= 3.5 send."""
        if self.key_share_groups is not None:
            return self.key_share_groups
        return tuple(g for g in CLIENT_KEY_SHARES if g in self.groups) or self.groups[:1]

    def __post_init__(self) -> None:
        _normalize(self, _CLIENT_OBJECTS)
        _check_common(self.cipher_suites, self.groups, self.alpn, self.key_update_after_records)
        for g in self.key_share_groups or ():
            if g not in self.groups:
                raise ConfigError(f"key share group {g.name} must also be listed in groups")
        if self.server_name is not None and not self.server_name.isascii():  # sent as its A-label (IDNA)
            try:
                self.server_name.encode("idna")
            except UnicodeError:
                raise ConfigError(f"server_name {self.server_name!r} is not a valid host name") from None
        if self.record_size_limit is not None and not 64 <= self.record_size_limit <= (1 << 14) + 1:
            raise ConfigError("record_size_limit must be between 64 and 16385 (RFC 8449)")
        if self.verify_peer and self.server_name is None and self.pins is None and self.check_hostname:
            raise ConfigError(
                "verify_peer needs server_name=... to check the certificate's name (or pins=..., or "
                "check_hostname=False to accept any certificate the trust store vouches for)"
            )
        if self.verify_peer and self.trust is None:
            object.__setattr__(self, "trust", TrustStore.system())
        if self.revocation is not None and self.revocation.mode != "none":
            object.__setattr__(self, "request_ocsp", True)  # a staple is the cheapest revocation answer
        if not self.verify_peer and self.pins is None and self.revocation is not None:
            raise ConfigError("revocation checks need verify_peer=True (or pins) to know which chain to check")
        object.__setattr__(self, "session_scope", _session_scope(self))

    def identities(self) -> tuple[CertifiedKey, ...]:
        """Our client certificates in preference order: ``certificate`` first, then ``certificates``."""
        return ((self.certificate,) if self.certificate is not None else ()) + self.certificates

    @property
    def session_key(self) -> str | None:
        """Where this config keeps its tickets in ``session_store``: the server name and ``session_scope``.

        A resumed session skips the server's certificate and carries our client certificate (§2.2, §4.6.1), so
        it may only be resumed under the policy that authenticated it: configs that differ in trust, pins,
        hostname checking, revocation policy or client certificate never resume each other's sessions, even
        when they share a store."""
        return f"{self.server_name}#{self.session_scope}" if self.server_name else None


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerConfig:
    """A server's certificates, policy and injected dependencies; see DESIGN §2 for the hooks."""

    certificates: tuple[CertifiedKey, ...] = ()
    cert_resolver: Callable[[str | None, Sequence[SignatureScheme]], CertifiedKey | None] | None = None
    alpn: tuple[str, ...] = ()
    cipher_suites: tuple[CipherSuite, ...] = DEFAULT_CIPHER_SUITES
    groups: tuple[NamedGroup, ...] = DEFAULT_GROUPS
    prefer_server_order: bool = False
    signature_algorithms: tuple[SignatureScheme, ...] = signatures.TLS13_SIGNATURE_SCHEMES
    middlebox_compat: bool = True
    record_size_limit: int | None = None
    pad_to: int = 0
    send_supported_groups: bool = False
    hello_retry_cookie: bool = True
    ocsp_staple: Callable[[CertifiedKey], bytes | None] | None = None
    key_update_after_records: int = DEFAULT_KEY_UPDATE_RECORDS
    max_handshake_message: int = 1 << 17
    clock: Callable[[], float] = time.time
    random: Callable[[int], bytes] = os.urandom
    key_log: Callable[[str], None] | None = None
    message_trace: Callable[[bool, bytes], None] | None = None  # (sent?, whole handshake message) for tools
    on_secret: SecretHook | None = None  # every traffic secret as it is installed (QUIC, kTLS, tools)
    ticket_keys: TicketKeys | None = None
    ticket_count: int = 2  # after a full handshake; after a resumption at most 1 (as OpenSSL)
    ticket_lifetime: int = 7200
    psk_modes: tuple[PskKeyExchangeMode, ...] = (PskKeyExchangeMode.psk_dhe_ke,)
    early_data: EarlyDataPolicy | None = None
    replay_store: ReplayStore | None = None
    single_use_tickets: bool = False  # RFC 8446 §8.1: each ticket resumes at most once (checked in replay_store)
    client_auth: ClientAuth | None = None

    def __post_init__(self) -> None:
        _normalize(self, _SERVER_OBJECTS)
        _check_common(self.cipher_suites, self.groups, self.alpn, self.key_update_after_records)
        if not 0 <= self.ticket_count <= 16:
            raise ConfigError(f"ticket_count must be 0..16 (tickets sent after a handshake), not {self.ticket_count}")
        if not 0 < self.ticket_lifetime <= 604800:
            raise ConfigError("ticket_lifetime must be 1..604800 seconds (7 days, RFC 8446 §4.6.1)")
        interval = getattr(self.ticket_keys, "rotation_interval", None)
        if isinstance(interval, int | float):  # a rotating ring: rotate well within a ticket's life (§4.6.1)
            check_rotation(float(interval), float(self.ticket_lifetime))
        if self.early_data is not None and self.replay_store is None:
            raise ConfigError(
                "0-RTT needs a replay_store (MemoryReplayStore for one process, RedisReplayStore for a fleet)"
            )
        if self.single_use_tickets and (self.ticket_keys is None or self.replay_store is None):
            raise ConfigError("single_use_tickets needs ticket_keys and a replay_store shared by every server")
        if self.early_data is not None and self.ticket_keys is None:
            raise ConfigError("0-RTT needs ticket_keys: early data is only possible when resuming a ticket")
        if not self.certificates and self.cert_resolver is None:
            raise ConfigError("a server needs certificates=... or a cert_resolver")
        if self.record_size_limit is not None and not 64 <= self.record_size_limit <= (1 << 14) + 1:
            raise ConfigError("record_size_limit must be between 64 and 16385 (RFC 8449)")
