"""Request targets as routes see them (RFC 9112 §3.2, RFC 3986 §5.2.4), the way nginx builds ``$uri``.

Routes match on the path with its dot segments resolved and repeated slashes merged, so a prefix route cannot be
left with ``/api/../admin``, ``/api/%2e%2e/admin`` or ``/api/..%2fadmin``, and ``//host`` never reaches a
``Location`` header as a network-path reference. Segments keep the client's percent-encoding (an encoded slash
inside a name, as some APIs use, stays encoded); one that hides a ``..`` behind an encoded slash or backslash
is refused. The absolute form (``GET https://host/path``) is accepted, its authority taking the place of Host.
"""

from __future__ import annotations

import urllib.parse

__all__ = ["split_target"]

_DOT_SEGMENTS = frozenset((".", ".."))


def split_target(target: str, host: str) -> tuple[str, str]:
    """(route path, host) of a request target: the origin form's path, normalized, or the absolute form's path
    and authority (§3.2.2: the Host header is then ignored). ``*`` and the authority form pass unchanged (no
    route matches them). ValueError (a 400) for a path that climbs above the root or hides a dot segment."""
    if target.startswith("/"):
        return _normalized(target.partition("?")[0]), host
    scheme = target[:8].lower()
    if scheme.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(target)
        authority = (parts.hostname or "").lower()
        if not authority:
            raise ValueError("absolute request target without a host")
        return _normalized(parts.path or "/"), authority
    return target.partition("?")[0], host


def _normalized(path: str) -> str:
    """``path`` (percent-encoded, from "/") with "." and ".." segments (also percent-encoded) resolved and empty
    segments dropped, keeping a final slash; the common clean path returns as it is."""
    if "%" not in path and "/." not in path and "//" not in path:
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
        if ("/" in name or "\\" in name) and not _DOT_SEGMENTS.isdisjoint(name.replace("\\", "/").split("/")):
            raise ValueError("a path segment hides a dot segment behind an encoded separator")
        kept.append(raw)
    last = segments[-1]
    trailing = bool(kept) and (not last or urllib.parse.unquote(last) in _DOT_SEGMENTS)
    return "/" + "/".join(kept) + ("/" if trailing else "")
