"""Sealing session state into tickets: key name (16) ‖ nonce (12) ‖ AES-GCM(state) with the name as AAD."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .keyring import TicketKey, TicketKeys, ticket_aead

_NAME, _NONCE = 16, 12


def seal_ticket(key: TicketKey, state: bytes, random: Callable[[int], bytes]) -> bytes:
    aead = AESGCM(key.aes_key)
    if key.wiped:  # checked after the copy: a key retired and wiped meanwhile must never seal (all-zero key)
        raise RuntimeError(f"ticket key {key.name.hex()} was retired and wiped while in use")
    nonce = random(_NONCE)
    return key.name + nonce + aead.encrypt(nonce, state, key.name)


def seal_tickets(key: TicketKey, states: Sequence[bytes], nonces: bytes) -> list[bytes]:
    """``seal_ticket`` for several states at once, under one AES-GCM object (made once, not per ticket);
    ``nonces`` holds 12 fresh random bytes per state, the i-th state sealed under the i-th 12."""
    if len(nonces) != _NONCE * len(states):
        raise ValueError(f"{len(states)} tickets need {_NONCE * len(states)} nonce bytes, not {len(nonces)}")
    aead = ticket_aead(key)  # one per key, not per handshake
    if key.wiped:  # as in seal_ticket: checked after the copy
        raise RuntimeError(f"ticket key {key.name.hex()} was retired and wiped while in use")
    name = key.name
    out = []
    for i, state in enumerate(states):
        nonce = nonces[i * _NONCE : (i + 1) * _NONCE]
        out.append(name + nonce + aead.encrypt(nonce, state, name))
    return out


def open_ticket(keys: TicketKeys, ticket: bytes) -> bytes | None:
    """The sealed state, or None if no key in the ring opens it (unknown, retired or forged)."""
    if len(ticket) < _NAME + _NONCE + 16:
        return None
    key = keys.decryption_key(ticket[:_NAME])
    if key is None or key.wiped:  # a wiped key is zeros: anyone could seal a ticket it opens
        return None
    try:
        return ticket_aead(key).decrypt(ticket[_NAME : _NAME + _NONCE], ticket[_NAME + _NONCE :], ticket[:_NAME])
    except InvalidTag:
        return None
