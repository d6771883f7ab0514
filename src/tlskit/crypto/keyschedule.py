"""The TLS 1.3 key schedule (RFC 8446 §7.1), one object per stage.

``EarlySecret`` -> ``HandshakeSecret`` -> ``MasterSecret``: each stage only offers the secrets RFC 8446
derives from it, so a secret cannot be used at the wrong stage. HKDF (RFC 5869) is computed on HMAC
(RFC 2104) built from two ``hashlib`` calls: a KDF object per call costs more than the hashing itself, and
OpenSSL 3's one-shot HMAC (behind ``hmac.digest``) looks its algorithm up again on every call.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import TypeAlias

from .suites import SuiteParams

__all__ = [
    "EarlySecret",
    "HandshakeSecret",
    "KeyIV",
    "MasterSecret",
    "derive_secret",
    "export_keying_material",
    "finished_verify_data",
    "handshake_traffic_keys",
    "hkdf_expand",
    "hkdf_expand_label",
    "hkdf_extract",
    "next_traffic_secret",
    "resumption_psk",
    "resumption_psks",
    "traffic_key_iv",
    "verify_data",
]

KeyIV: TypeAlias = tuple[bytes, bytes]  # a record protection key and IV (§7.3)

_IPAD = bytes(x ^ 0x36 for x in range(256))  # translate tables: key XOR ipad / opad, byte by byte
_OPAD = bytes(x ^ 0x5C for x in range(256))
_HASHES: dict[str, tuple[Callable[[bytes], hashlib._Hash], int]] = {  # hash constructor, block size
    "sha256": (hashlib.sha256, 64),
    "sha384": (hashlib.sha384, 128),
}


def _digest(key: bytes, msg: bytes, hash_name: str) -> bytes:
    """HMAC(key, msg) (RFC 2104 §2): H(K ^ opad || H(K ^ ipad || msg)), K zero-padded to the block size."""
    known = _HASHES.get(hash_name)
    if known is None:  # pragma: no cover - the suites only use SHA-256 and SHA-384
        return hmac.digest(key, msg, hash_name)
    new, block = known
    if len(key) > block:
        key = new(key).digest()
    key = key.ljust(block, b"\0")
    return new(key.translate(_OPAD) + new(key.translate(_IPAD) + msg).digest()).digest()


class _KeyedHmac:
    """HMAC (RFC 2104 §2) with the key absorbed once: the inner (K ^ ipad) and outer (K ^ opad) hash states are
    kept and copied per message, so a PRK used for several HKDF-Expand-Label calls (§7.1) is padded and hashed
    into its first block only once."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, hash_name: str, key: bytes) -> None:
        self._inner, self._outer = _pads(hash_name, key)

    def digest(self, msg: bytes) -> bytes:
        """HMAC(key, msg)."""
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def derive_secret(self, label: bytes, transcript_hash: bytes) -> bytes:
        """Derive-Secret(key, label, messages) (§7.1) given Hash(messages): one HKDF-Expand block, since
        the output is exactly one hash long (RFC 5869 §2.3, N = 1)."""
        length = len(transcript_hash)
        return self.digest(_label_prefix(label, length) + bytes((length,)) + transcript_hash + b"\x01")


def hkdf_extract(hash_name: str, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2); an empty salt means zeros of hash length."""
    return _digest(salt, ikm, hash_name)


def hkdf_expand(hash_name: str, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3)."""
    block = _digest(prk, info + b"\x01", hash_name)
    if length <= len(block):
        return block[:length]
    if length > 255 * len(block):
        raise ValueError(f"HKDF-Expand length {length} too large")
    out = [block]
    total = len(block)
    counter = 1
    while total < length:
        counter += 1
        block = _digest(prk, block + info + bytes((counter,)), hash_name)
        out.append(block)
        total += len(block)
    return b"".join(out)[:length]


_LABEL_PREFIX: dict[tuple[bytes, int], bytes] = {}


def _label_prefix(label: bytes, length: int) -> bytes:
    """The HkdfLabel bytes before the context: length, then the "tls13 "-prefixed label (cached)."""
    prefix = _LABEL_PREFIX.get((label, length))
    if prefix is None:
        full_label = b"tls13 " + label
        prefix = length.to_bytes(2, "big") + bytes((len(full_label),)) + full_label
        if len(_LABEL_PREFIX) < 256:
            _LABEL_PREFIX[(label, length)] = prefix
    return prefix


def hkdf_expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label (§7.1); ``label`` is given without the ``"tls13 "`` prefix."""
    info = _label_prefix(label, length) + bytes((len(context),)) + context
    if length <= 32 or (length <= 48 and hash_name == "sha384"):  # one HMAC block (RFC 5869 §2.3, N = 1)
        return _digest(secret, info + b"\x01", hash_name)[:length]
    return hkdf_expand(hash_name, secret, info, length)


def derive_secret(params: SuiteParams, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    """Derive-Secret (§7.1) with the transcript hash already computed."""
    return hkdf_expand_label(params.hash_name, secret, label, transcript_hash, params.hash_len)


class EarlySecret:
    """Early Secret = HKDF-Extract(0, PSK) and what is derived from it (§7.1)."""

    __slots__ = ("_derived", "_hmac", "_salted", "params", "secret")

    def __init__(self, params: SuiteParams, psk: bytes | None = None) -> None:
        self.params = params
        self._derived: bytes | None = None
        self._salted: _KeyedHmac | None = None
        # HKDF-Extract with the all-zero salt, whose HMAC pads are hashed once per hash (``_zero_salt``)
        self.secret = _zero_salt(params.hash_name).digest(bytes(params.hash_len) if psk is None else psk)
        # the PRK of the binder key and the "derived" salt (and 0-RTT's secrets): keyed into HMAC once
        self._hmac = _KeyedHmac(params.hash_name, self.secret)
        if psk is None:  # a constant per suite: its "derived" salt too (see ``without_psk``), keyed into HMAC
            self._derived = self._derive(b"derived", params.empty_hash)
            self._salted = _KeyedHmac(params.hash_name, self._derived)  # once, for every full handshake's Extract

    @classmethod
    def without_psk(cls, params: SuiteParams) -> EarlySecret:
        """The early secret of a full handshake (PSK = zeros): one shared, immutable object per suite."""
        shared = _NO_PSK.get(params.suite)
        if shared is None:
            shared = _NO_PSK[params.suite] = cls(params)
        return shared

    def _derive(self, label: bytes, transcript_hash: bytes) -> bytes:
        return self._hmac.derive_secret(label, transcript_hash)  # transcript_hash is always hash-long here

    def binder_key(self, external: bool = False) -> bytes:
        """``ext binder`` (external PSK) or ``res binder`` (resumption PSK) key (§4.2.11.2)."""
        return self._derive(b"ext binder" if external else b"res binder", self.params.empty_hash)

    def client_early_traffic_secret(self, ch_hash: bytes) -> bytes:
        """``c e traffic`` over Hash(ClientHello)."""
        return self._derive(b"c e traffic", ch_hash)

    def early_exporter_master_secret(self, ch_hash: bytes) -> bytes:
        """``e exp master`` over Hash(ClientHello)."""
        return self._derive(b"e exp master", ch_hash)

    def handshake_secret(self, shared_secret: bytes | None) -> HandshakeSecret:
        """Next stage; ``shared_secret=None`` for psk_ke (no (EC)DHE, §7.1 uses zeros)."""
        ikm = bytes(self.params.hash_len) if shared_secret is None else shared_secret
        if self._salted is not None:  # HKDF-Extract(derived, ikm) with the shared salt's pads hashed once
            return HandshakeSecret(self.params, self._salted.digest(ikm))
        salt = self._derived or self._derive(b"derived", self.params.empty_hash)
        return HandshakeSecret(self.params, hkdf_extract(self.params.hash_name, salt, ikm))


_NO_PSK: dict[int, EarlySecret] = {}  # by cipher suite
_ZERO_SALT: dict[str, _KeyedHmac] = {}  # by hash name


def _zero_salt(hash_name: str) -> _KeyedHmac:
    """HMAC keyed with the zero salt of the early secret's HKDF-Extract (§7.1): hash_len zeros, padded with
    zeros to the block, so one per hash. Shared: ``_KeyedHmac.digest`` only copies the states it keeps."""
    keyed = _ZERO_SALT.get(hash_name)
    if keyed is None:
        keyed = _ZERO_SALT[hash_name] = _KeyedHmac(hash_name, b"")
    return keyed


class HandshakeSecret:
    """Handshake Secret and the handshake traffic secrets (§7.1).

    The secret is the PRK of three Derive-Secret calls (``c hs traffic``, ``s hs traffic``, ``derived``),
    so it is keyed into HMAC once.
    """

    __slots__ = ("_hmac", "params", "secret")

    def __init__(self, params: SuiteParams, secret: bytes) -> None:
        self.params = params
        self.secret = secret
        self._hmac = _KeyedHmac(params.hash_name, secret)

    def client_traffic_secret(self, transcript_hash: bytes) -> bytes:
        """``c hs traffic`` over Hash(ClientHello..ServerHello)."""
        return self._hmac.derive_secret(b"c hs traffic", transcript_hash)

    def server_traffic_secret(self, transcript_hash: bytes) -> bytes:
        """``s hs traffic`` over Hash(ClientHello..ServerHello)."""
        return self._hmac.derive_secret(b"s hs traffic", transcript_hash)

    def master_secret(self) -> MasterSecret:
        """Next stage: Master Secret = HKDF-Extract(Derive-Secret(., "derived", ""), 0)."""
        params = self.params
        salt = self._hmac.derive_secret(b"derived", params.empty_hash)
        return MasterSecret(params, hkdf_extract(params.hash_name, salt, bytes(params.hash_len)))


class MasterSecret:
    """Master Secret and the application, exporter and resumption secrets (§7.1).

    The secret is the PRK of up to four Derive-Secret calls, so it is keyed into HMAC once.
    """

    __slots__ = ("_hmac", "params", "secret")

    def __init__(self, params: SuiteParams, secret: bytes) -> None:
        self.params = params
        self.secret = secret
        self._hmac = _KeyedHmac(params.hash_name, secret)

    def client_traffic_secret(self, transcript_hash: bytes) -> bytes:
        """``c ap traffic`` over Hash(ClientHello..server Finished)."""
        return self._hmac.derive_secret(b"c ap traffic", transcript_hash)

    def server_traffic_secret(self, transcript_hash: bytes) -> bytes:
        """``s ap traffic`` over Hash(ClientHello..server Finished)."""
        return self._hmac.derive_secret(b"s ap traffic", transcript_hash)

    def exporter_master_secret(self, transcript_hash: bytes) -> bytes:
        """``exp master`` over Hash(ClientHello..server Finished)."""
        return self._hmac.derive_secret(b"exp master", transcript_hash)

    def resumption_master_secret(self, transcript_hash: bytes) -> bytes:
        """``res master`` over Hash(ClientHello..client Finished)."""
        return self._hmac.derive_secret(b"res master", transcript_hash)


def finished_verify_data(params: SuiteParams, base_key: bytes, transcript_hash: bytes) -> bytes:
    """Finished.verify_data = HMAC(finished_key, transcript hash) (§4.4.4)."""
    hash_name = params.hash_name
    return _digest(_digest(base_key, _finished_info(params.hash_len), hash_name), transcript_hash, hash_name)


def verify_data(params: SuiteParams, finished_key: bytes, transcript_hash: bytes) -> bytes:
    """Finished.verify_data from a finished_key already derived (``handshake_traffic_keys``), §4.4.4."""
    return _digest(finished_key, transcript_hash, params.hash_name)


def _finished_info(hash_len: int) -> bytes:
    info = _FINISHED_INFO.get(hash_len)
    if info is None:  # HkdfLabel(hash_len, "tls13 finished", "") and HKDF-Expand's counter byte
        info = _FINISHED_INFO[hash_len] = _label_prefix(b"finished", hash_len) + b"\x00\x01"
    return info


_FINISHED_INFO: dict[int, bytes] = {}


def next_traffic_secret(params: SuiteParams, secret: bytes) -> bytes:
    """application_traffic_secret_N+1 after a KeyUpdate (§7.2)."""
    return hkdf_expand_label(params.hash_name, secret, b"traffic upd", b"", params.hash_len)


_KEY_IV_INFO: dict[tuple[int, int], tuple[bytes, bytes]] = {}


def _key_iv_infos(params: SuiteParams) -> tuple[bytes, bytes]:
    """The whole HkdfLabel (empty context) and HKDF-Expand's counter byte of "key" and "iv", per length pair."""
    infos = _KEY_IV_INFO.get((params.key_len, params.iv_len))
    if infos is None:
        infos = (_label_prefix(b"key", params.key_len) + b"\x00\x01", _label_prefix(b"iv", params.iv_len) + b"\x00\x01")
        _KEY_IV_INFO[(params.key_len, params.iv_len)] = infos
    return infos


def _pads(hash_name: str, secret: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC's inner and outer hash states with ``secret``'s padded blocks absorbed (RFC 2104 §2)."""
    new, block = _HASHES[hash_name]
    padded = (secret if len(secret) <= block else new(secret).digest()).ljust(block, b"\0")
    return new(padded.translate(_IPAD)), new(padded.translate(_OPAD))


def traffic_key_iv(params: SuiteParams, secret: bytes) -> KeyIV:
    """The record protection write key and IV of a traffic secret (§7.3).

    HKDF-Expand-Label(secret, "key", "", key_length) and (secret, "iv", "", iv_length): each is one HMAC
    block (key and IV are never longer than the hash), so both start from the same hashed pad blocks.
    """
    key_info, iv_info = _key_iv_infos(params)
    inner, outer = _pads(params.hash_name, secret)
    key_inner, key_outer = inner.copy(), outer.copy()
    key_inner.update(key_info)
    key_outer.update(key_inner.digest())
    inner.update(iv_info)
    outer.update(inner.digest())
    return key_outer.digest()[: params.key_len], outer.digest()[: params.iv_len]


def handshake_traffic_keys(params: SuiteParams, secret: bytes) -> tuple[KeyIV, bytes]:
    """((key, IV), finished_key) of a handshake traffic secret (§7.3, §4.4.4): the three HKDF-Expand-Label
    calls of one secret, keyed into HMAC once (``traffic_key_iv`` then ``finished_verify_data`` key it twice)."""
    inner, outer = _pads(params.hash_name, secret)
    out = []
    for info in _key_iv_infos(params):
        h = inner.copy()
        h.update(info)
        o = outer.copy()
        o.update(h.digest())
        out.append(o.digest())
    inner.update(_finished_info(params.hash_len))
    outer.update(inner.digest())
    return (out[0][: params.key_len], out[1][: params.iv_len]), outer.digest()


def resumption_psk(params: SuiteParams, resumption_master_secret: bytes, ticket_nonce: bytes) -> bytes:
    """The PSK a NewSessionTicket stands for (§4.6.1)."""
    return hkdf_expand_label(
        params.hash_name, resumption_master_secret, b"resumption", ticket_nonce, params.hash_len
    )


def resumption_psks(params: SuiteParams, resumption_master_secret: bytes, ticket_nonces: list[bytes]) -> list[bytes]:
    """``resumption_psk`` for each of several nonces, with the secret keyed into HMAC once: each PSK is one
    HKDF-Expand block (its length is the hash's, RFC 5869 §2.3, N = 1)."""
    keyed = _KeyedHmac(params.hash_name, resumption_master_secret)
    length = params.hash_len
    prefix = _label_prefix(b"resumption", length)
    return [keyed.digest(prefix + bytes((len(nonce),)) + nonce + b"\x01") for nonce in ticket_nonces]


def export_keying_material(
    params: SuiteParams, exporter_master_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """TLS-Exporter(label, context, length) (§7.5)."""
    name = params.hash_name
    secret = derive_secret(params, exporter_master_secret, label, params.empty_hash)
    return hkdf_expand_label(name, secret, b"exporter", hashlib.new(name, context).digest(), length)
