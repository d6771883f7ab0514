"""Certificate serial numbers as people read and type them: one spelling everywhere tlskit prints one."""

from __future__ import annotations

import re

from ..errors import ConfigError

__all__ = ["format_serial", "parse_serial"]


def format_serial(serial: int) -> str:
    """Upper-case hex of even length, as ``openssl x509 -serial`` prints it (and ``ca list`` shows it)."""
    if serial < 0:  # some OS bundles carry roots with negative serials
        return "-" + format_serial(-serial)
    text = f"{serial:X}"
    return "0" * (len(text) % 2) + text


def parse_serial(text: str) -> int:
    """A serial as printed by ``openssl x509 -serial`` or ``ca list``: hex, optional ``0x`` and colons."""
    cleaned = text.strip().removeprefix("serial=").replace(":", "").lower().removeprefix("0x")
    if not cleaned or not re.fullmatch(r"[0-9a-f]+", cleaned):
        raise ConfigError(f"{text!r} is not a hexadecimal serial number (see `tlskit ca list DIR`)")
    return int(cleaned, 16)
