"""The three TLS 1.3 cipher suites: AEAD and hash per suite (RFC 8446 §B.4)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ..enums import CipherSuite

__all__ = ["SUITES", "AEADCipher", "SuiteParams", "suite_params"]


class AEADCipher(Protocol):
    """What the record layer needs from an AEAD (RFC 8446 §5.2)."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes | memoryview, associated_data: bytes | None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SuiteParams:
    """Hash and AEAD parameters of one cipher suite."""

    suite: CipherSuite
    hash_name: str
    hash_len: int
    key_len: int
    iv_len: int
    aead_factory: Callable[[bytes], AEADCipher]
    empty_hash: bytes


def _params(
    suite: CipherSuite, hash_name: str, key_len: int, factory: Callable[[bytes], AEADCipher]
) -> SuiteParams:
    empty = hashlib.new(hash_name).digest()
    return SuiteParams(suite, hash_name, len(empty), key_len, 12, factory, empty)


SUITES: dict[CipherSuite, SuiteParams] = {
    CipherSuite.TLS_AES_128_GCM_SHA256: _params(CipherSuite.TLS_AES_128_GCM_SHA256, "sha256", 16, AESGCM),
    CipherSuite.TLS_AES_256_GCM_SHA384: _params(CipherSuite.TLS_AES_256_GCM_SHA384, "sha384", 32, AESGCM),
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: _params(
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256, "sha256", 32, ChaCha20Poly1305
    ),
}


def suite_params(suite: CipherSuite) -> SuiteParams:
    """Parameters of ``suite``; ``ValueError`` for a suite tlskit does not implement."""
    try:
        return SUITES[suite]
    except KeyError:
        raise ValueError(f"unsupported cipher suite {suite!r}") from None
