"""Request targets as routes see them (RFC 9112 §3.2, RFC 3986 §5.2.4, §6.2.2), the way nginx builds ``$uri``.

Routes match on the path with percent-encoded unreserved characters decoded (``/%61dmin`` is ``/admin``), dot
segments resolved and repeated slashes merged, so a prefix route cannot be left with ``/api/../admin``,
``/api/%2e%2e/admin`` or ``/api/..%2fadmin``, and ``//host`` never reaches a ``Location`` header as a
network-path reference. Other escapes stay as the client sent them (an encoded slash inside a name, as some
APIs use, stays encoded); a segment that hides a ``..`` behind an encoded slash or a backslash, or carries
path parameters on a dot segment (``..;``, which Java servers resolve), is refused. The absolute form
(``GET https://host/path``) is accepted, its authority taking the place of Host (§3.2.2).
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["host_name", "normalize_path", "split_target"]

_DOT_SEGMENTS = frozenset((".", ".."))
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HOST = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]+")  # a host name (as Host headers carry them) or an IPv6 literal


def split_target(target: str, host: str) -> tuple[str, str, str | None]:
    """(route path, host, authority) of a request target: the origin form's path, normalized, and ``host``
    with no authority; or the absolute form's path and host, and its authority (host[:port]) for the Host
    header, which §3.2.2 says to ignore then. ``*`` and the authority form pass unchanged (no route matches
    them). ValueError (a 400) for a path that climbs above the root or hides a dot segment."""
    if "#" in target:
        raise ValueError("a request target has no fragment (#)")
    if target.startswith("/"):
        return normalize_path(target.partition("?")[0]), host, None
    if target[:8].lower().startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(target)
        name = (parts.hostname or "").lower()
        port = parts.port  # ValueError for one that is no port number
        if not name or parts.username is not None or parts.password is not None or "%" in name \
                or not _HOST.fullmatch(name):
            raise ValueError("absolute request target without a plain host")
        if ":" in name:  # an IPv6 literal: bracketed, as the Host header writes it and routes name it
            name = f"[{name}]"
        return normalize_path(parts.path or "/"), name, name if port is None else f"{name}:{port}"
    return target.partition("?")[0], host, None


# uri-host [":" port] (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal in brackets, or a reg-name
_HOST_FIELD = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]*)?")


_HOSTS: dict[bytes, str] = {}  # valid Host values seen -> their name (a connection sends one again and again)
_HOSTS_MAX = 1024  # entries; the cache starts over when full
_HOST_CACHED = 260  # longest value kept (a DNS name, a port): longer ones are checked each time


def host_name(value: bytes) -> str:
    """A Host header's name as routes match it: lower case, without the port (an IPv6 literal keeps its
    brackets, as ``split_target`` gives it). ValueError for a value that is no host[:port] (RFC 9112 §3.2:
    a 400), such as ``a b`` or ``a/b``. Valid values are remembered (``_HOSTS``): a keep-alive request
    skips the regex and the decoding."""
    name = _HOSTS.get(value)
    if name is not None:
        return name
    name = _host_name(value)
    if len(value) <= _HOST_CACHED:
        if len(_HOSTS) >= _HOSTS_MAX:
            _HOSTS.clear()
        _HOSTS[bytes(value)] = name
    return name


def _host_name(value: bytes) -> str:
    if not _HOST_FIELD.fullmatch(value):
        raise ValueError("the Host header is not a host name or address (with an optional port)")
    host = value.decode("ascii").lower()
    return host.rsplit(":", 1)[0] if not host.endswith("]") else host


def normalize_path(path: str) -> str:
    """``path`` (percent-encoded, from "/") with unreserved escapes decoded, "." and ".." segments (also
    percent-encoded) resolved and empty segments dropped, keeping a final slash; a clean path returns as is."""
    if "%" not in path and "/." not in path and "//" not in path and "\\" not in path:
        return path
    kept: list[str] = []
    segments = path.split("/")
    for raw in segments[1:]:
        if not raw:
            continue
        name = urllib.parse.unquote(raw, errors="surrogateescape") if "%" in raw else raw
        if name == ".":
            continue
        if name == "..":
            if not kept:
                raise ValueError("the path climbs above the root")
            kept.pop()
            continue
        parts = name.replace("\\", "/").split("/")
        if not _DOT_SEGMENTS.isdisjoint(parts) or not _DOT_SEGMENTS.isdisjoint(p.split(";", 1)[0] for p in parts):
            raise ValueError("a path segment hides a dot segment (behind an encoded slash, a backslash or ';')")
        kept.append(_ESCAPE.sub(_unreserved, raw) if "%" in raw else raw)
    last = segments[-1]
    trailing = bool(kept) and (not last or urllib.parse.unquote(last) in _DOT_SEGMENTS)
    return "/" + "/".join(kept) + ("/" if trailing else "")


def _unreserved(match: re.Match[str]) -> str:
    """An escape of an unreserved character decoded (RFC 3986 §6.2.2.2), any other kept as sent."""
    code = int(match.group(1), 16)
    return chr(code) if code in _UNRESERVED else match.group(0)
