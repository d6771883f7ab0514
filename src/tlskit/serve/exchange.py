"""What a route sees of one request/response, whichever protocol carries it (HTTP/1.1 or HTTP/2).

``http1.Exchange`` and ``http2.StreamExchange`` implement it; routes (``static``, ``proxy``) use nothing else,
so they stay protocol-agnostic. Header fields are ``checked`` triples (name, lower-case name, value).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

__all__ = ["Field", "HTTPExchange"]

Field = tuple[bytes, bytes, bytes]  # a response header as h11 keeps it: (name, lower-case name, value)


class HTTPExchange(Protocol):
    @property
    def started(self) -> bool:
        """The response head has been sent (an error can no longer be answered)."""
        ...

    def body(self) -> AsyncIterator[bytes]:
        """The request body in chunks; HTTPError(413) beyond ``max_body_bytes``."""
        ...

    def skip_body(self) -> bool:
        """Drop the request body received so far; True when it has ended."""
        ...

    async def discard_body(self) -> None: ...

    async def start(self, status: int, headers: Sequence[tuple[str, str]], reason_phrase: str | None = None) -> None:
        """The response head from unchecked (str) fields."""
        ...

    def send_head(self, status: int, fields: Sequence[Field], phrase: bytes | None = None) -> None:
        """The response head from ``checked`` fields; the body follows, then ``end()``."""
        ...

    def respond(self, status: int, fields: Sequence[Field], body: bytes = b"", *, send_body: bool = True) -> None:
        """A whole response without awaiting; ``send_body`` False for HEAD."""
        ...

    async def write(self, data: bytes, *, flush: bool = False) -> None: ...

    async def flush(self) -> None: ...

    async def writable(self) -> int:
        """How many body bytes the peer takes now (at least one; waits for that): read no more than this."""
        ...

    async def end(self) -> None: ...
