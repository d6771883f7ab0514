"""Wire codec: strict readers and back-patching writers for the TLS presentation language (RFC 8446 §3).

A ``Reader`` raises ``DecodeError`` on short input, and ``finish()`` raises it on trailing bytes; every
``decode()`` in ``messages/`` ends with ``finish()``. A ``Writer`` back-patches length prefixes, so
encoders never compute lengths by hand.
"""

from __future__ import annotations

import dataclasses

from .errors import DecodeError

__all__ = ["Reader", "Writer", "byte_string", "slots_settable"]


class Reader:
    """Reads big-endian integers and length-prefixed vectors from ``data[start:end]``."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def _take(self, n: int) -> int:
        pos = self._pos
        if n > self._end - pos:
            raise DecodeError(f"need {n} bytes, have {self._end - pos}")
        self._pos = pos + n
        return pos

    def u8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise DecodeError(f"need 1 bytes, have {self._end - pos}")
        self._pos = pos + 1
        return self._data[pos]

    def u16(self) -> int:
        p = self._take(2)
        d = self._data
        return (d[p] << 8) | d[p + 1]

    def u24(self) -> int:
        p = self._take(3)
        d = self._data
        return (d[p] << 16) | (d[p + 1] << 8) | d[p + 2]

    def u32(self) -> int:
        p = self._take(4)
        return int.from_bytes(self._data[p : p + 4], "big")

    def raw(self, n: int) -> bytes:
        p = self._take(n)
        return bytes(self._data[p : p + n])

    def rest(self) -> bytes:
        return self.raw(self.remaining)

    def _vector_span(self, width: int, minimum: int, maximum: int) -> tuple[int, int]:
        """Consume a ``width``-byte length in [minimum, maximum] and the body it announces: the body's span."""
        d, pos, end = self._data, self._pos, self._end
        if width == 1 and pos < end:
            n = d[pos]
        elif width == 2 and pos + 2 <= end:
            n = (d[pos] << 8) | d[pos + 1]
        elif width == 3 and pos + 3 <= end:
            n = (d[pos] << 16) | (d[pos + 1] << 8) | d[pos + 2]
        elif width in (1, 2, 3):
            raise DecodeError(f"need {width} bytes, have {end - pos}")
        else:
            raise ValueError(f"bad length width {width}")
        if n < minimum or n > maximum:
            raise DecodeError(f"vector length {n} outside [{minimum}, {maximum}]")
        start = pos + width
        if n > end - start:
            raise DecodeError(f"need {n} bytes, have {end - start}")
        self._pos = start + n
        return start, start + n

    def vector(self, width: int, minimum: int = 0, maximum: int = 1 << 24) -> bytes:
        """An opaque vector ``<minimum..maximum>`` with a ``width``-byte length prefix."""
        start, stop = self._vector_span(width, minimum, maximum)
        return bytes(self._data[start:stop])

    def sub(self, width: int, minimum: int = 0, maximum: int = 1 << 24) -> Reader:
        """A reader over a length-prefixed vector; the caller must ``finish()`` it."""
        start, stop = self._vector_span(width, minimum, maximum)
        return Reader(self._data, start, stop)

    def finish(self) -> None:
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} trailing bytes")


class Writer:
    """Appends big-endian integers and vectors; ``prefixed(width)`` back-patches the length."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def u8(self, v: int) -> None:
        self.buf.append(v)

    def u16(self, v: int) -> None:
        self.buf += v.to_bytes(2, "big")

    def u24(self, v: int) -> None:
        self.buf += v.to_bytes(3, "big")

    def u32(self, v: int) -> None:
        self.buf += v.to_bytes(4, "big")

    def raw(self, b: bytes) -> None:
        self.buf += b

    def vector(self, width: int, b: bytes) -> None:
        if len(b) >= 1 << (8 * width):
            raise ValueError(f"vector of {len(b)} bytes does not fit a {width}-byte length")
        self.buf += len(b).to_bytes(width, "big")
        self.buf += b

    def prefixed(self, width: int) -> _Prefixed:
        """Everything written inside the ``with`` block gets a ``width``-byte length prefix."""
        return _Prefixed(self.buf, width)

    def getvalue(self) -> bytes:
        return bytes(self.buf)


class _Prefixed:
    """The context manager behind ``Writer.prefixed`` (a class: cheaper than a generator on this hot path)."""

    __slots__ = ("_at", "_buf", "_width")

    def __init__(self, buf: bytearray, width: int) -> None:
        self._buf = buf
        self._width = width
        self._at = 0

    def __enter__(self) -> None:
        self._at = len(self._buf)
        self._buf += bytes(self._width)

    def __exit__(self, *exc: object) -> None:
        buf, at, width = self._buf, self._at, self._width
        n = len(buf) - at - width
        if n >= 1 << (8 * width):
            raise ValueError(f"vector of {n} bytes does not fit a {width}-byte length")
        buf[at : at + width] = n.to_bytes(width, "big")


def byte_string(data: object, where: str) -> bytes:
    """``data`` as bytes: a bytearray or memoryview is copied (a view of wider items is counted in bytes, as the
    record header must count it); TypeError for what is not a byte string (a str: encode it first)."""
    if isinstance(data, str):
        raise TypeError(f"{where} takes bytes, not str (encode it first)")
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{where} takes bytes, bytearray or a memoryview, not {type(data).__name__}") from None
    return view.tobytes()


def slots_settable(example: object) -> bool:
    """Whether a frozen slots dataclass can be built by ``object.__new__`` and its slot descriptors (each
    field's ``__set__``), skipping the frozen ``__init__``'s ``object.__setattr__`` per field on a decoding hot
    path: rebuilds ``example`` that way and compares. False when compiled with mypyc, whose native classes refuse
    ``object.__new__`` (the constructor is as fast there)."""
    cls = type(example)
    try:
        built = object.__new__(cls)
        for field in dataclasses.fields(example):  # type: ignore[arg-type]
            vars(cls)[field.name].__set__(built, getattr(example, field.name))
    except (TypeError, AttributeError, KeyError):
        return False
    return bool(built == example)
