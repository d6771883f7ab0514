"""argparse types for numbers the subcommands share: a bad value is a usage error naming the flag (exit 2),
never a traceback from deep inside (``settimeout(nan)``, a date out of range, ten thousand threads)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["count", "port_number", "seconds"]


def port_number(text: str) -> int:
    """A TCP port: 0-65535 (0: the system picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535; 0 picks a free one)")
    return value


def seconds(text: str) -> float:
    """A time in seconds: a finite number above 0, at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} seconds: give a number above 0 and at most 86400")
    return value


def count(minimum: int, maximum: int) -> Callable[[str], int]:
    """A whole number in ``minimum``..``maximum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"{value}: give {minimum} to {maximum}")
        return value

    parse.__name__ = "count"  # argparse names the type in its messages
    return parse
