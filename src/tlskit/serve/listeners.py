"""Listening sockets, bound before any worker starts so that every worker accepts on the same ones.

A name binds every address it resolves to (``localhost``: 127.0.0.1 and ::1, on one port even when the
port is 0). ``::`` is IPv6-only unless ``ipv6_only = false`` (then it takes IPv4 too, as a dual-stack
socket). ``reuse_port`` sets ``SO_REUSEPORT``, so other servers (a second ``tlskit serve``) may bind the same
port and the kernel spreads connections between them.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence

from .settings import Listener, Settings

__all__ = ["ListenError", "addresses_collide", "bind", "metrics_port_clash"]


class ListenError(OSError):
    """A listener could not be bound; the message names the address, port and reason."""


def bind(listeners: Sequence[Listener]) -> list[socket.socket]:
    bound: list[socket.socket] = []
    try:
        for listener in listeners:
            bound += _bind_one(listener)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def _bind_one(listener: Listener) -> list[socket.socket]:
    if listener.address.lower().rstrip(".") == "localhost":
        # RFC 6761 §6.3: localhost is the loopback addresses, whatever /etc/hosts says (Debian's often lacks ::1,
        # so https://[::1]:8443/ and curl -6 were refused), as curl and browsers resolve it
        addresses = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
    else:
        try:
            infos = socket.getaddrinfo(listener.address or None, listener.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise ListenError(f"{listener.origin}cannot listen on {listener.address}: {e.strerror} (give an IP "
                              "address, or a name this machine resolves)") from None
        addresses = list(dict.fromkeys((family, str(addr[0])) for family, _, _, _, addr in infos
                                       if family in (socket.AF_INET, socket.AF_INET6)))
    port = listener.port
    socks: list[socket.socket] = []
    try:
        for family, host in addresses:
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as e:  # EAFNOSUPPORT: a kernel without IPv6 (ipv6.disable=1) for localhost's ::1
                if len(addresses) > 1 and e.errno == errno.EAFNOSUPPORT:
                    continue
                raise ListenError(f"{listener.origin}cannot listen on {host}: {e.strerror}") from None
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if listener.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(listener.ipv6_only))
            try:
                sock.bind((host, port))
            except OSError as e:
                if e.errno == 99 and len(addresses) > 1:  # EADDRNOTAVAIL: e.g. ::1 on a host without IPv6
                    socks.pop().close()
                    continue
                where = f"[{host}]" if ":" in host else host
                raise ListenError(f"{listener.origin}cannot listen on {where} port {port}: {e.strerror}"
                                  f"{_BIND_FIXES.get(e.errno or 0, '')}") from None
            port = sock.getsockname()[1]  # port 0: the others share the port the first one got
            sock.listen(listener.backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


_BIND_FIXES = {
    errno.EADDRINUSE: " (another process listens there: `ss -ltnp` names it; or choose another port)",
    errno.EADDRNOTAVAIL: " (not an address of this machine: `ip addr` lists them; 0.0.0.0 or :: is every one)",
    errno.EACCES: " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
}


def addresses_collide(a: str, b: str) -> bool:
    """Binding ``a`` and ``b`` on one port fails: the same address, or one is the wildcard of the other's family
    (localhost is 127.0.0.1 and ::1; other host names are not resolved, and a dual-stack ``::`` not considered)."""
    def ips(address: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        try:
            names = ("127.0.0.1", "::1") if address.lower() == "localhost" else (address.partition("%")[0],)
            return [ipaddress.ip_address(name) for name in names]
        except ValueError:  # a host name
            return []
    return a == b or any(x.version == y.version and (x == y or x.is_unspecified or y.is_unspecified)
                         for x in ips(a) for y in ips(b))


def metrics_port_clash(s: Settings) -> str | None:
    """Why metrics cannot have their port: a listener's on the same address (it failed at start with "cannot
    serve metrics ...: Address already in use", which does not say that the port's other user is this server)."""
    metrics = s.metrics
    if metrics is None or not metrics.port:  # (port 0: a free one)
        return None
    for listener in s.listeners:
        if listener.port == metrics.port and addresses_collide(listener.address, metrics.address):
            return f"{listener.port} is also the port of a listener ({listener.address}): give metrics its own"
    return None
