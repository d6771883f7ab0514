"""``tlskit serve``: load (or make) the certificate, start the static site, say where it listens."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import CertifiedKey, ServerConfig
from ..errors import ConfigError
from ..io.asyncio import start_server
from .devcert import DEV_NAMES, dev_certificate
from .static import StaticSite

__all__ = ["ServeOptions", "Site", "prepare", "serve"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ServeOptions:
    root: Path = Path(".")
    host: str = "localhost"
    port: int = 8443
    cert: Path | None = None  # None: the self-signed development certificate
    key: Path | None = None
    alpn: tuple[str, ...] = ("http/1.1",)
    handshake_timeout: float = 30.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Site:
    """Everything checked and loaded before the event loop starts."""

    options: ServeOptions
    root: Path
    config: ServerConfig
    dev_cert: Path | None  # the generated certificate clients should trust, if we made one


def prepare(options: ServeOptions) -> Site:
    """Check the root and load the certificate; ``ConfigError`` says which file or directory is wrong."""
    root = options.root.resolve()
    if not root.is_dir():
        raise ConfigError(f"{options.root}: not a directory to serve")
    if (options.cert is None) != (options.key is None):
        raise ConfigError("give both --cert and --key, or neither for a self-signed localhost certificate")
    dev_cert = None
    if options.cert is None or options.key is None:
        dev_cert, key = dev_certificate()
        cert_key = CertifiedKey.from_pem_files(dev_cert, key)
    else:
        cert_key = CertifiedKey.from_pem_files(options.cert, options.key)
    config = ServerConfig(certificates=(cert_key,), alpn=options.alpn)
    return Site(options=options, root=root, config=config, dev_cert=dev_cert)


async def serve(site: Site, announce: Callable[[str], None] = print) -> None:
    """Serve until cancelled; ``announce`` gets the human-readable lines (URL, curl example)."""
    opts = site.options
    server = await start_server(StaticSite(site.root), opts.host, opts.port, config=site.config,
                                handshake_timeout=opts.handshake_timeout)
    urls = [_url(opts.host, sock.getsockname()) for sock in server.sockets]
    announce(f"Serving {site.root} at {' and '.join(dict.fromkeys(urls))}")
    if site.dev_cert is not None:
        announce(f"Self-signed certificate for {', '.join(DEV_NAMES)}: {site.dev_cert}")
        announce(f"Try: curl --cacert {site.dev_cert} {urls[0]}")
    async with server:
        await server.serve_forever()


def _url(host: str, sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """The URL for one bound socket; a hostname the user gave stays (it is what the certificate names)."""
    name = host
    try:
        if ipaddress.ip_address(host).is_unspecified:
            name = "localhost"
    except ValueError:
        pass
    if ":" in name:
        name = f"[{name}]"
    return f"https://{name}:{sockname[1]}/"
