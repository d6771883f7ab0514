"""Kernel TLS in ``tlskit serve`` (``--ktls off|auto|require``, ``[server] ktls`` in the config): TX offload
after each handshake and static file bodies by ``os.sendfile``, like nginx's ``ssl_conf_command Options
KTLS; sendfile on``. ``require`` refuses to start where the kernel cannot do it (``tlskit.io.ktls.probe``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, BinaryIO

import h11

from ..errors import ConfigError
from ..io import ktls
from ..io.asyncio import TLSTransport

if TYPE_CHECKING:
    from .http1 import Exchange

__all__ = ["MODES", "check_mode", "label", "option", "send_file"]

MODES = ("off", "auto", "require")
_log = logging.getLogger("tlskit.serve")


def check_mode(mode: str) -> None:
    """At start: ``ConfigError`` for an unknown mode, or for ``require`` on a kernel without kTLS."""
    if mode not in MODES:
        raise ConfigError(f"ktls must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return
    support = ktls.probe()
    if mode == "require" and not support.available:
        raise ConfigError(f"ktls require (--ktls require, or ktls = \"require\" in [server]): kernel TLS is "
                          f"unavailable: {support.reason}; use auto to serve without it")
    if not support.available:
        _log.info("kTLS unavailable, serving with userspace records: %s", support.reason)


def option(mode: str) -> ktls.KTLSOption:
    """The front end's ``ktls=`` for a serve mode (TX only: the event loop reads with plain ``recv``).
    ``auto`` on a kernel without kTLS is off: no per-connection attempt (and its syscalls) that must fail."""
    if mode == "require":
        return True  # fallbacks are logged as warnings
    return "auto" if mode == "auto" and ktls.probe().available else False


def label(kernel: object) -> str:
    """``tx`` or ``off``: what the access log and metrics report for a connection, from its
    ``get_extra_info("ktls")``."""
    return "tx" if isinstance(kernel, ktls.KernelTLS) and kernel.tx else "off"


class _Span:
    """A body part h11 only measures (``send_with_data_passthrough``): the bytes go by ``sendfile``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


async def send_file(exchange: Exchange, file: BinaryIO, offset: int, count: int) -> bool:
    """Send ``count`` bytes of ``file`` by ``os.sendfile`` when the connection has kTLS TX; False (nothing
    sent) otherwise, and the caller writes the body as records."""
    channel = exchange.channel
    transport = channel.transport
    if not isinstance(transport, TLSTransport) or label(transport.get_extra_info("ktls")) != "tx":
        return False
    await exchange.flush()  # the response head Exchange has buffered goes before the file
    parts = exchange.conn.send_with_data_passthrough(h11.Data(data=_Span(count)))  # type: ignore[arg-type]
    for part in parts or ():
        if isinstance(part, _Span):
            await channel.drain()
            sent = await transport.sendfile(file, offset, count)
            if sent != count:
                raise ConnectionError(f"sendfile sent {sent} of {count} bytes (the file shrank?)")
        else:
            channel.write(bytes(part))
    exchange.body_bytes += count
    return True
