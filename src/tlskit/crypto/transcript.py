"""The handshake transcript hash (RFC 8446 §4.4.1)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from ..enums import HandshakeType

__all__ = ["PendingTranscript", "Transcript"]


class Transcript:
    """Running hash over full handshake messages (4-byte header included), §4.4.1.

    ``add(message)`` appends one full handshake message; it is the hash object's own ``update`` (a
    handshake adds a dozen messages, so no Python frame in between).
    """

    __slots__ = ("_hash", "add", "hash_name")

    def __init__(self, hash_name: str, state: hashlib._Hash | None = None) -> None:
        self.hash_name = hash_name
        if state is None:
            state = _CONSTRUCTORS[hash_name]() if hash_name in _CONSTRUCTORS else hashlib.new(hash_name)
        self._reset(state)

    def _reset(self, state: hashlib._Hash) -> None:
        self._hash = state
        self.add: Callable[[bytes], None] = state.update

    def digest(self) -> bytes:
        """Hash of everything added so far; the transcript stays usable."""
        return self._hash.digest()

    def copy(self) -> Transcript:
        """An independent copy (e.g. for the PSK binder's partial ClientHello, §4.2.11.2)."""
        return Transcript(self.hash_name, self._hash.copy())  # not ``__new__``: compiled by mypyc, that runs __init__

    def replace_with_message_hash(self) -> None:
        """After HelloRetryRequest: replace Hash(ClientHello1) by the message_hash message (§4.4.1)."""
        ch1_hash = self.digest()
        self._reset(hashlib.new(self.hash_name))
        self.add(bytes((HandshakeType.message_hash, 0, 0, len(ch1_hash))) + ch1_hash)


_CONSTRUCTORS: dict[str, Callable[[], hashlib._Hash]] = {"sha256": hashlib.sha256, "sha384": hashlib.sha384}


class PendingTranscript:
    """Buffers messages until ServerHello fixes the hash; ``resolve`` replays them."""

    __slots__ = ("_messages",)

    def __init__(self) -> None:
        self._messages: list[bytes] = []

    def add(self, message: bytes) -> None:
        """Buffer one full handshake message."""
        self._messages.append(message)

    def resolve(self, hash_name: str) -> Transcript:
        """A ``Transcript`` over the buffered messages using ``hash_name``."""
        transcript = Transcript(hash_name)
        for message in self._messages:
            transcript.add(message)
        return transcript
