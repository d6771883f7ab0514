"""``tlskit serve``: check the configuration, bind, say where it listens, then serve in this process or in
``--workers N`` processes (``tlskit.serve.workers``)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from ..errors import ConfigError
from .accesslog import setup_logging
from .listeners import bind
from .metrics import ServeMetrics, serve_metrics
from .server import ServeProcess, Site, build_site
from .settings import Flags, Listener, ProxyRoute, StaticRoute, load_settings
from .startup import remember_sighup

_log = logging.getLogger("tlskit.serve")

__all__ = ["announcement", "run", "run_loop"]

Announce = Callable[[str], None]


def run(flags: Flags, *, quiet: bool = False, announce: Announce | None = None) -> int:
    """The whole command; returns the exit status (2: bad configuration, 1: cannot listen)."""
    early_hup = remember_sighup()  # a reload asked for while starting: its default action would end the process
    say: Announce = announce or (lambda line: print(line, flush=True))
    try:
        settings = load_settings(flags)
        setup_logging(json_lines=settings.log_json, quiet=True)  # its warnings formatted (--log-json: JSON lines)
        site = build_site(settings)
    except ConfigError as e:
        print(f"tlskit serve: error: {e}", file=sys.stderr)
        return 2
    setup_logging(json_lines=settings.log_json, quiet=quiet)
    if flags.proxy is not None and (flags.root is not None or flags.listing):
        print(f"tlskit serve: warning: --proxy sends every path to the upstream, so {flags.root or 'ROOT'} is not "
              "served (for both, a config file with two [[route]] tables: one with root, one with proxy)",
              file=sys.stderr)
    raise_open_file_limit()
    try:
        sockets = bind(settings.listeners)
    except OSError as e:
        print(f"tlskit serve: error: {e}", file=sys.stderr)
        return 1
    if settings.workers > 1:
        from .workers import Supervisor

        supervisor = Supervisor(site, flags, sockets, quiet=quiet)
        supervisor.early_reload = early_hup
        return supervisor.run(say)
    metrics = ServeMetrics() if settings.metrics else None
    metrics_port = None
    if settings.metrics and metrics:
        try:
            metrics_port = serve_metrics(settings.metrics, metrics.registry)
        except OSError as e:
            print(f"tlskit serve: error: cannot serve metrics on {settings.metrics.address} port "
                  f"{settings.metrics.port}: {e.strerror or e}", file=sys.stderr)
            return 1
    process = ServeProcess(site, flags, sockets, metrics=metrics)
    process.early_reload = early_hup

    def ready() -> None:
        for line in announcement(site, sockets, metrics_port):
            say(line)

    run_loop(process.run(ready), settings.uvloop)
    return 0


def raise_open_file_limit() -> None:
    """Each connection is a descriptor (two through the proxy): the soft RLIMIT_NOFILE, often 1024, is raised to
    the hard limit, as Go's runtime does (nginx: worker_rlimit_nofile). Past the limit new connections are
    closed at once, and nothing says why."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = min(hard, _NOFILE_CAP) if hard != resource.RLIM_INFINITY else _NOFILE_CAP
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            _log.debug("open file limit raised from %d to %d", soft, wanted)
    except (OSError, ValueError) as e:  # a container that forbids it: serve with what there is
        _log.debug("open file limit left as it is: %s", e)


_NOFILE_CAP = 1 << 20  # descriptors asked for when the hard limit is unlimited


def run_loop(main: Coroutine[Any, Any, None], use_uvloop: bool) -> None:
    """``asyncio.run`` on uvloop when it is installed and wanted."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def announcement(site: Site, sockets: list[socket.socket], metrics_port: int | None) -> list[str]:
    """The lines a user reads at start: where, what, how to trust it, a command to try."""
    settings = site.settings
    urls = list(dict.fromkeys(_url(_listener_name(settings.listeners, s.getsockname()), s.getsockname())
                              for s in sockets))
    main = next((r for r in settings.routes if r.prefix == "/" and not r.hosts), settings.routes[0])
    what = (str(main.root) if isinstance(main, StaticRoute) else
            f"a proxy to http://{main.upstream_host}:{main.upstream_port}{main.upstream_path}/"
            if isinstance(main, ProxyRoute) else "")
    lines = [f"Serving {what} at {' and '.join(urls)}"]
    if settings.workers > 1:
        lines.append(f"Workers: {settings.workers} processes sharing the listening sockets")
    if metrics_port is not None and settings.metrics is not None:
        host = settings.metrics.address
        lines.append(f"Metrics: http://{f'[{host}]' if ':' in host else host}:{metrics_port}/metrics")
    if site.dev is not None:
        lines.append(f"Development CA (made once; trust it in your clients): {site.dev.ca_cert}")
        lines.append(f"Try: curl --cacert {site.dev.ca_cert} {urls[0]}")
    return lines


def _listener_name(listeners: Sequence[Listener], sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """The address as the [[listen]] a socket came from wrote it (every listener was announced under the
    first one's address): an equal IP literal, else a host name listening on that port, else the socket's."""
    host, port = str(sockname[0]), int(sockname[1])
    named: str | None = None
    for listener in listeners:
        if listener.port not in (0, port):
            continue
        try:
            if ipaddress.ip_address(listener.address.partition("%")[0]) == ipaddress.ip_address(host):
                return listener.address
        except ValueError:
            named = named or listener.address
    return named or host


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

