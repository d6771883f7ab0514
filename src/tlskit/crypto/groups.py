"""Key exchange groups: X25519, secp256r1, secp384r1 and X25519MLKEM768 (RFC 8446 §4.2.8, §7.4).

Private keys come from injected randomness so that handshakes replay byte for byte. The hybrid follows
draft-ietf-tls-ecdhe-mlkem (DESIGN §3): ML-KEM part first, X25519 part second. Every malformed or invalid
peer share raises ``AlertError(illegal_parameter)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec, mlkem
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..enums import AlertDescription, NamedGroup
from ..errors import AlertError

try:  # the Rust functions behind cryptography's public X25519 classmethods (see ``_x25519_generate``)
    from cryptography.hazmat.backends.openssl.backend import backend as _backend
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

    _RUST_X25519: ModuleType | None = _rust_openssl.x25519
except (ImportError, AttributeError):  # pragma: no cover - another layout of cryptography's internals
    _RUST_X25519 = None

__all__ = [
    "SUPPORTED_GROUPS",
    "ClientKeyShare",
    "client_key_share",
    "client_key_share_from_private",
    "server_key_share",
    "server_key_share_from_private",
]

SUPPORTED_GROUPS: tuple[NamedGroup, ...] = (
    NamedGroup.x25519,
    NamedGroup.secp256r1,
    NamedGroup.secp384r1,
    NamedGroup.X25519MLKEM768,
)

_MLKEM_EK_LEN = 1184
_MLKEM_CT_LEN = 1088
_X25519_LEN = 32
_ZERO32 = bytes(32)

# curve, field size in bytes, group order n (SEC 2 §2.4.2, §2.5.1)
_CURVES: dict[NamedGroup, tuple[ec.EllipticCurve, int, int]] = {
    NamedGroup.secp256r1: (
        ec.SECP256R1(),
        32,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    NamedGroup.secp384r1: (
        ec.SECP384R1(),
        48,
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    ),
}


class ClientKeyShare(Protocol):
    """A client's KeyShareEntry for one group and the private key to finish it (§4.2.8)."""

    group: NamedGroup
    public: bytes

    def finish(self, server_share: bytes) -> bytes:
        """The shared secret from the server's key_exchange; illegal_parameter if it is invalid."""
        ...


def _illegal(message: str) -> AlertError:
    return AlertError(AlertDescription.illegal_parameter, message)


def _x25519_generate() -> X25519PrivateKey:
    """``X25519PrivateKey.generate()``, calling cryptography's Rust binding directly when the backend
    supports X25519: the public classmethod re-imports the backend and re-checks support on every call, a
    measurable share of a handshake. Same OpenSSL key generation either way."""
    if _RUST_X25519 is not None and _backend.x25519_supported():
        key: X25519PrivateKey = _RUST_X25519.generate_key()
        return key
    return X25519PrivateKey.generate()


def _x25519_public(peer: bytes) -> X25519PublicKey:
    """``X25519PublicKey.from_public_bytes(peer)`` by the same direct route as ``_x25519_generate``."""
    if _RUST_X25519 is not None and _backend.x25519_supported():
        key: X25519PublicKey = _RUST_X25519.from_public_bytes(peer)
        return key
    return X25519PublicKey.from_public_bytes(peer)


def _x25519_exchange(private: X25519PrivateKey, peer: bytes) -> bytes:
    """X25519 with the §7.4.2 checks: 32-byte share, non-zero shared secret."""
    if len(peer) != _X25519_LEN:
        raise _illegal(f"x25519 share must be 32 bytes, got {len(peer)}")
    try:
        shared = private.exchange(_x25519_public(peer))
    except ValueError:  # OpenSSL refuses the all-zero result of a low-order point
        raise _illegal("x25519 share is a low-order point") from None
    if shared == _ZERO32:
        raise _illegal("x25519 shared secret is all zeros")
    return shared


def _ec_peer(group: NamedGroup, peer: bytes) -> ec.EllipticCurvePublicKey:
    """Parse an uncompressed UncompressedPointRepresentation (§4.2.8.2), validating the point."""
    curve, size, _ = _CURVES[group]
    if len(peer) != 2 * size + 1 or peer[0] != 4:
        raise _illegal(f"{group.name} share must be an uncompressed {2 * size + 1}-byte point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, peer)
    except ValueError:
        raise _illegal(f"{group.name} share is not a point on the curve") from None


def _ec_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _ec_private(group: NamedGroup, private_key_bytes: bytes) -> ec.EllipticCurvePrivateKey:
    curve, _, order = _CURVES[group]
    scalar = int.from_bytes(private_key_bytes, "big")
    if not 0 < scalar < order:
        raise ValueError(f"{group.name} private scalar out of range")
    return ec.derive_private_key(scalar, curve)


class _X25519Share:
    __slots__ = ("_private", "group", "public")

    def __init__(self, private_key_bytes: bytes | None) -> None:
        self.group = NamedGroup.x25519
        self._private = (
            _x25519_generate()
            if private_key_bytes is None
            else X25519PrivateKey.from_private_bytes(private_key_bytes)
        )
        self.public = self._private.public_key().public_bytes_raw()

    def finish(self, server_share: bytes) -> bytes:
        return _x25519_exchange(self._private, server_share)


class _ECShare:
    __slots__ = ("_private", "group", "public")

    def __init__(self, group: NamedGroup, private_key_bytes: bytes) -> None:
        self.group = group
        self._private = _ec_private(group, private_key_bytes)
        self.public = _ec_public(self._private)

    def finish(self, server_share: bytes) -> bytes:
        return self._private.exchange(ec.ECDH(), _ec_peer(self.group, server_share))


class _HybridShare:
    """X25519MLKEM768: public = ML-KEM encapsulation key || X25519 public."""

    __slots__ = ("_kem", "_x25519", "group", "public")

    def __init__(self, seed: bytes, x25519_private: bytes) -> None:
        self.group = NamedGroup.X25519MLKEM768
        self._kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        self._x25519 = X25519PrivateKey.from_private_bytes(x25519_private)
        self.public = self._kem.public_key().public_bytes_raw() + self._x25519.public_key().public_bytes_raw()

    def finish(self, server_share: bytes) -> bytes:
        if len(server_share) != _MLKEM_CT_LEN + _X25519_LEN:
            raise _illegal(f"X25519MLKEM768 server share must be 1120 bytes, got {len(server_share)}")
        try:
            kem_secret = self._kem.decapsulate(server_share[:_MLKEM_CT_LEN])
        except ValueError:
            raise _illegal("invalid ML-KEM-768 ciphertext") from None
        return kem_secret + _x25519_exchange(self._x25519, server_share[_MLKEM_CT_LEN:])


def random_bytes(random: Callable[[int], bytes], n: int) -> bytes:
    """``random(n)`` as bytes. An injected source may return a bytearray or memoryview (the pure engine always
    took them); the compiled engine checks a ``bytes`` return at the call, so it is called untyped here."""
    source: Callable[[int], object] = random
    data = source(n)
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"random({n}) returned {type(data).__name__}, not bytes")


def _ec_private_bytes(group: NamedGroup, random: Callable[[int], bytes]) -> bytes:
    """A uniform scalar in [1, n-1] from size+8 random bytes (FIPS 186-5 A.2.1)."""
    _, size, order = _CURVES[group]
    scalar = int.from_bytes(random_bytes(random, size + 8), "big") % (order - 1) + 1
    return scalar.to_bytes(size, "big")


def client_key_share_from_private(group: NamedGroup, private_key_bytes: bytes) -> ClientKeyShare:
    """A client share from fixed key material (RFC 8448 replay).

    x25519: the 32-byte raw key; secp256r1/secp384r1: the big-endian scalar; X25519MLKEM768: the 64-byte
    ML-KEM seed followed by the 32-byte X25519 key.
    """
    if group == NamedGroup.x25519:
        return _X25519Share(private_key_bytes)
    if group in _CURVES:
        return _ECShare(group, private_key_bytes)
    if group == NamedGroup.X25519MLKEM768:
        if len(private_key_bytes) != 64 + _X25519_LEN:
            raise ValueError("X25519MLKEM768 private key material must be 96 bytes (seed || x25519)")
        return _HybridShare(private_key_bytes[:64], private_key_bytes[64:])
    raise ValueError(f"unsupported group {group!r}")


def client_key_share(group: NamedGroup, random: Callable[[int], bytes]) -> ClientKeyShare:
    """A fresh client share for ``group`` with its private key drawn from ``random``."""
    if group == NamedGroup.x25519:
        # With the OS's CSPRNG (the default) OpenSSL's own generation is the same randomness, and faster than
        # importing raw bytes; an injected ``random`` (test vectors) is honoured byte for byte.
        return _X25519Share(None if random is os.urandom else random_bytes(random, _X25519_LEN))
    if group in _CURVES:
        return _ECShare(group, _ec_private_bytes(group, random))
    if group == NamedGroup.X25519MLKEM768:
        return _HybridShare(random_bytes(random, 64), random_bytes(random, _X25519_LEN))
    raise ValueError(f"unsupported group {group!r}")


def server_key_share_from_private(
    group: NamedGroup, client_share: bytes, private_key_bytes: bytes
) -> tuple[bytes, bytes]:
    """(server key_exchange, shared secret) with a fixed private key: x25519 or the ECDHE curves only."""
    if group == NamedGroup.x25519:
        private = X25519PrivateKey.from_private_bytes(private_key_bytes)
        shared = _x25519_exchange(private, client_share)
        return private.public_key().public_bytes_raw(), shared
    if group in _CURVES:
        peer = _ec_peer(group, client_share)
        key = _ec_private(group, private_key_bytes)
        return _ec_public(key), key.exchange(ec.ECDH(), peer)
    raise ValueError(f"no fixed-key server share for group {group!r}")


def server_key_share(group: NamedGroup, client_share: bytes, random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """(server key_exchange, shared secret) answering ``client_share`` (§4.2.8, §7.4).

    For X25519MLKEM768 the ML-KEM encapsulation draws its randomness inside OpenSSL: ``cryptography``
    offers no deterministic encapsulation, so only the X25519 half comes from ``random``.
    """
    if group == NamedGroup.x25519:
        if random is os.urandom:
            private = _x25519_generate()
            return private.public_key().public_bytes_raw(), _x25519_exchange(private, client_share)
        return server_key_share_from_private(group, client_share, random_bytes(random, _X25519_LEN))
    if group in _CURVES:
        peer = _ec_peer(group, client_share)
        key = _ec_private(group, _ec_private_bytes(group, random))
        return _ec_public(key), key.exchange(ec.ECDH(), peer)
    if group == NamedGroup.X25519MLKEM768:
        if len(client_share) != _MLKEM_EK_LEN + _X25519_LEN:
            raise _illegal(f"X25519MLKEM768 client share must be 1216 bytes, got {len(client_share)}")
        try:
            encapsulation_key = mlkem.MLKEM768PublicKey.from_public_bytes(client_share[:_MLKEM_EK_LEN])
        except ValueError:
            raise _illegal("invalid ML-KEM-768 encapsulation key") from None
        kem_secret, ciphertext = encapsulation_key.encapsulate()
        x_public, x_secret = server_key_share_from_private(
            NamedGroup.x25519, client_share[_MLKEM_EK_LEN:], random_bytes(random, _X25519_LEN)
        )
        return ciphertext + x_public, kem_secret + x_secret
    raise ValueError(f"unsupported group {group!r}")
