"""Ticket keys and the ring that holds them (DESIGN §3: nginx ``ssl_session_ticket_key`` format).

A key file of 80 bytes is name (16) ‖ HMAC key (32) ‖ AES key (32); one of 48 bytes is name (16) ‖ AES key
(16) ‖ HMAC key (16). The first key of a ring encrypts, every key decrypts. tlskit seals tickets with
AES-GCM under the AES key (RFC 8446 §4.6.1 leaves the format to the server); the HMAC key is kept for
file compatibility only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class TicketKey:
    """One ticket key: its public 16-byte name and the AES key that seals tickets.

    Secrets are left out of ``repr``. A key made from a ``bytearray`` (``generate`` does) holds its secrets
    in bytearrays that ``wipe()`` overwrites in place.
    """

    name: bytes
    aes_key: bytes | bytearray = field(repr=False)
    hmac_key: bytes | bytearray = field(default=b"", repr=False)
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if len(self.name) != 16:
            raise ConfigError("a ticket key name is 16 bytes")
        if len(self.aes_key) not in (16, 32):
            raise ConfigError("a ticket AES key is 16 or 32 bytes")

    def __hash__(self) -> int:
        return hash(self.name)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray, created_at: float = 0.0, source: str = "ticket key") -> TicketKey:
        """Parse nginx's 80- or 48-byte key file layout (secrets stay bytearrays if ``data`` is one)."""
        match len(data):
            case 80:
                return cls(name=bytes(data[:16]), hmac_key=data[16:48], aes_key=data[48:80], created_at=created_at)
            case 48:
                return cls(name=bytes(data[:16]), aes_key=data[16:32], hmac_key=data[32:48], created_at=created_at)
            case n:
                raise ConfigError(
                    f"{source}: {n} bytes; a ticket key file holds 80 bytes (or 48): make one with "
                    "`tlskit stek new FILE` or `openssl rand 80 > FILE`"
                )

    @classmethod
    def generate(cls, random: Callable[[int], bytes], created_at: float = 0.0) -> TicketKey:
        """A fresh 80-byte key whose secrets ``wipe()`` can overwrite."""
        data = bytearray(random(80))
        try:
            return cls.from_bytes(data, created_at=created_at)
        finally:
            data[:] = bytes(len(data))

    def to_bytes(self) -> bytes:
        """The 80-byte (or 48-byte) nginx layout."""
        if len(self.aes_key) == 32:
            return self.name + self.hmac_key + self.aes_key
        return self.name + self.aes_key + self.hmac_key

    def wipe(self) -> None:
        """Overwrite the secrets with zeros where they are bytearrays (``bytes`` cannot be changed in place).

        Best effort, as Python allows: copies made earlier (the ``bytes`` that ``random`` returned, a file's
        contents, an AESGCM object's own copy until it is freed) are not reached from here.
        """
        held = _AEADS.get(self.name)
        if held is not None and held[0] is self:  # its AES-GCM object's copy goes too (``ticket_aead``)
            _AEADS.pop(self.name, None)
        for secret in (self.aes_key, self.hmac_key):
            if isinstance(secret, bytearray):
                secret[:] = bytes(len(secret))

    @property
    def wiped(self) -> bool:
        return not any(self.aes_key)


_AEADS: dict[bytes, tuple[TicketKey, AESGCM]] = {}  # by key name; the key object itself is compared on use


def ticket_aead(key: TicketKey) -> AESGCM:
    """The AES-GCM object of ``key``, made once per key object rather than per ticket sealed or opened
    (its construction costs about as much as sealing a ticket). ``wipe()`` drops it; a new key object under
    the same name gets an object of its own. Callers still check ``key.wiped`` after this call."""
    held = _AEADS.get(key.name)
    if held is not None and held[0] is key:
        return held[1]
    aead = AESGCM(key.aes_key)
    if len(_AEADS) >= _MAX_AEADS:  # rings hold a few keys: this only trims the retired ones of long rotations
        _AEADS.clear()
    _AEADS[key.name] = (key, aead)
    return aead


_MAX_AEADS = 64


class TicketKeys(Protocol):
    """What the handshake needs from any ticket key source (a fixed ring, a rotating one, one in Redis)."""

    def encryption_key(self) -> TicketKey: ...

    def decryption_key(self, name: bytes) -> TicketKey | None: ...


class TicketKeyRing:
    """A fixed, thread-safe list of keys: the first encrypts, all decrypt (like nginx's key files)."""

    def __init__(self, keys: Sequence[TicketKey]) -> None:
        if not keys:
            raise ConfigError("a ticket key ring needs at least one key")
        self._lock = threading.Lock()
        self._keys: tuple[TicketKey, ...] = tuple(keys)

    def encryption_key(self) -> TicketKey:
        return self._keys[0]

    def decryption_key(self, name: bytes) -> TicketKey | None:
        for key in self._keys:
            if key.name == name:
                return key
        return None

    def replace(self, keys: Sequence[TicketKey]) -> None:
        """Swap in a new list (rotation); callers are responsible for wiping retired keys."""
        if not keys:
            raise ConfigError("a ticket key ring needs at least one key")
        with self._lock:
            self._keys = tuple(keys)

    @property
    def keys(self) -> tuple[TicketKey, ...]:
        return self._keys
