"""Static files under one root (RFC 9110): GET/HEAD, index files, optional listings, conditional and Range
requests.

Only regular files inside the root are served: ``..`` segments, dot-files and symlinks leading outside the
root answer 404. Validators are a strong ``ETag`` (size and mtime in ns) and ``Last-Modified``;
``If-None-Match``/``If-Modified-Since`` give 304, ``If-Match`` 412, one ``bytes=`` range 206 (several ranges
get the whole file, which RFC 9110 §14.2 allows), a range past the end 416.

Keep-alive cost: what a URL path resolves to (a file, a directory to list, or an error) is cached per route
for ``RESOLVE_TTL`` seconds, like nginx's ``open_file_cache_valid``; a cached file that can no longer be
opened is looked up again at once. Each request still ``stat``s the file, so a changed file gets new
validators (and contents) immediately. The validators and the 200 response's header fields (checked by h11
once) are kept per (path, size, mtime); a request without conditional or Range headers skips their parsing.
Files up to ``SMALL_FILE_MAX`` bytes are served from memory (``FileCache``: keyed by path, size, mtime, ctime
and inode, LRU within ``CACHE_MAX_BYTES`` per process), head and body in one write and without awaiting;
larger ones are opened per request and streamed (``os.sendfile`` under kTLS TX).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import html
import mimetypes
import os
import posixpath
import re
import stat
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from . import ktls
from .exchange import Field, HTTPExchange
from .http1 import Exchange, HTTPError, Request, checked
from .settings import StaticRoute

__all__ = ["CACHE_MAX_BYTES", "SMALL_FILE_MAX", "FileCache", "StaticFiles", "content_type", "send_file"]

CHUNK = 1 << 16
# Types browsers need exactly (module scripts, wasm streaming) that mimetypes may lack or get wrong.
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json",
          ".svg": "image/svg+xml", ".webmanifest": "application/manifest+json", ".md": "text/markdown",
          ".woff2": "font/woff2", ".webp": "image/webp", ".avif": "image/avif", ".gz": "application/gzip",
          ".br": "application/octet-stream", ".xz": "application/x-xz", ".bz2": "application/x-bzip2",
          ".zst": "application/zstd"}
_TEXTUAL = ("application/json", "application/manifest+json", "image/svg+xml", "application/xml")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CONDITIONAL = frozenset((b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"range"))
RESOLVE_TTL = 1.0  # seconds a URL path's resolution is trusted (a moved symlink or new index.html: this late)
_RESOLVE_MAX = 4096  # entries per route; the cache starts over when full
SMALL_FILE_MAX = 64 * 1024  # files up to this many bytes are served from memory (FileCache)
CACHE_MAX_BYTES = 32 * 1024 * 1024  # all cached file contents together, per process (least recently used go)
SETTLE_NS = 1_000_000_000  # a file changed this recently is not cached: another write could keep its mtime

_FileKey = tuple[str, int, int, int, int]  # path, size, mtime ns, ctime ns, inode


def content_type(name: str) -> str:
    """Compressed files keep their own type (no Content-Encoding: a .tar.gz download stays compressed)."""
    ext = os.path.splitext(name)[1].lower()
    ctype = _TYPES.get(ext) or mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in _TEXTUAL:
        ctype += "; charset=utf-8"
    return ctype


class _FileFields:
    """A file version's validators and the header fields of its 200 response, checked once."""

    __slots__ = ("ctype", "etag", "last_modified", "ok", "validators")

    def __init__(self, name: str, st: os.stat_result) -> None:
        self.etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        self.last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        self.ctype = content_type(os.path.basename(name))
        self.ok = checked([("content-type", self.ctype), ("etag", self.etag), ("last-modified", self.last_modified),
                           ("accept-ranges", "bytes"), ("content-length", str(st.st_size))])
        self.validators = self.ok[1:3]


class Secrets:
    """Files a static route must never send, whatever directory they sit in: private keys, ticket keys and the
    development CA (with no ``[[route]]`` the root is the current directory, where ``--key privkey.pem`` often
    lives). Matched by device and inode (a symlink or hard link to one is refused too) and, for directories,
    by resolved path."""

    __slots__ = ("directories", "files", "paths")

    def __init__(self, paths: Iterable[Path] = (), directories: Iterable[Path] = ()) -> None:
        paths = list(paths)
        self.files: frozenset[tuple[int, int]] = frozenset(i for p in paths if (i := _identity(p)) is not None)
        # by name too: a key rotated in place (a new file moved over it) has a new inode until a reload succeeds
        self.paths = frozenset(os.path.realpath(p) for p in paths)
        self.directories = tuple(d.resolve() for d in directories)

    def __contains__(self, path: Path) -> bool:
        """Whether ``path`` (resolved) is one of them or inside a hidden directory."""
        if str(path) in self.paths or any(path.is_relative_to(d) for d in self.directories):
            return True
        return bool(self.files) and _identity(path) in self.files

    def has(self, name: str, st: os.stat_result) -> bool:
        """For a file about to be sent (``name`` resolved): one of them, by name or by inode."""
        return name in self.paths or (st.st_dev, st.st_ino) in self.files


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None if it cannot be stat'ed (one stat, not an exists() check first)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


class StaticFiles:
    """The route for a ``[[route]]`` with ``root``."""

    def __init__(self, route: StaticRoute, files: FileCache | None = None, secrets: Secrets | None = None) -> None:
        self.prefix, self.hosts = route.prefix, route.hosts
        self.secrets = secrets or Secrets()
        self.root = route.root.resolve()
        self.index = route.index
        self.listing = route.listing
        # request path -> (expires, (file to send | directory to list | HTTPError, is a listing))
        self._resolved: dict[str, tuple[float, tuple[str | HTTPError, bool]]] = {}
        self._fields: dict[tuple[str, int, int], _FileFields] = {}  # by path, size and mtime
        self.files = FILES if files is None else files

    async def handle(self, request: Request, exchange: HTTPExchange) -> None:
        if request.method != "GET" and request.method != "HEAD":
            raise HTTPError(405, [("allow", "GET, HEAD")])
        if not exchange.skip_body():
            await exchange.discard_body()
        now = time.monotonic()
        cached = self._resolved.get(request.path)
        if cached is None or cached[0] < now:
            if len(self._resolved) >= _RESOLVE_MAX:
                self._resolved.clear()
            cached = (now + RESOLVE_TTL, self._lookup(request.path))
            self._resolved[request.path] = cached
        found, listing = cached[1]
        if isinstance(found, HTTPError):
            raise HTTPError(found.status, found.headers)  # a fresh one: a re-raised one would grow its traceback
        if listing:
            await self._send_listing(request, exchange, found, urllib.parse.unquote(request.path))
            return
        # A small cached file is answered here without awaiting; others are opened and sent by _send_file.
        sent = self._send_cached(request, exchange, found)
        if sent is None:
            sent = await self._send_file(request, exchange, found)
        if not sent:
            self._resolved.pop(request.path, None)  # gone or replaced: look it up again
            raise HTTPError(404)

    def _lookup(self, raw_path: str) -> tuple[str | HTTPError, bool]:
        """What a (percent-encoded) request path serves: (file, False), (directory, True) or (HTTPError, False)."""
        if "%" in raw_path and any("/" in urllib.parse.unquote(name) for name in raw_path.split("/")):
            return HTTPError(404), False  # an encoded slash: routing kept it inside a name, and no file name has one
        url_path = urllib.parse.unquote(raw_path, errors="surrogateescape")  # file names need not be UTF-8
        try:
            path = self._resolve(url_path)
            if path.is_dir():
                for name in self.index:
                    if (path / name).is_file():  # held to the rules of any file: inside the root, no key
                        index = (path / name).resolve()
                        if not index.is_relative_to(self.root) or index in self.secrets:
                            return HTTPError(404), False
                        return str(path / name), False  # its own name gives the type (a link's target may not)
                return (str(path), True) if self.listing else (HTTPError(404), False)
            if url_path.endswith("/"):  # "/index.html/": a file is no directory (nginx: 404)
                return HTTPError(404), False
        except HTTPError as e:  # cached: without its traceback (its frames hold this object, and the request)
            return e.with_traceback(None), False
        except (OSError, RuntimeError, ValueError):  # a name too long, a symlink loop: nothing to serve (nginx: 404)
            return HTTPError(404), False
        return str(path), False

    def _resolve(self, url_path: str) -> Path:
        """The file or directory for a decoded URL path, or HTTPError 404/301."""
        rel = url_path[len(self.prefix.rstrip("/")):]
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not url_path.startswith("/") or any(p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            raise HTTPError(404)  # ".." (traversal), dot-files, odd bytes
        path = self.root.joinpath(*parts).resolve()
        if not path.is_relative_to(self.root):
            raise HTTPError(404)  # a symlink leading out of the root
        if path.is_dir() and not url_path.endswith("/"):
            location = urllib.parse.quote(os.fsencode(posixpath.join(url_path, "")))  # (bytes: names need not be UTF-8)
            raise HTTPError(301, [("location", location)])
        if not path.exists() or path in self.secrets:  # a key file is "not found", as any file outside the root
            raise HTTPError(404)
        return path

    def _send_cached(self, request: Request, exchange: HTTPExchange, name: str) -> bool | None:
        """Answer from ``FileCache`` when the file's current version is there; False when it is no longer a
        regular file, None when it must be opened (``_send_file``)."""
        try:
            st = os.stat(name)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or self.secrets.has(name, st):  # replaced by a key since it was looked up
            return False
        body = self.files.get(_file_key(name, st)) if st.st_size <= self.files.max_file else None
        if body is None:
            return None
        span = self._span(request, exchange, name, st)
        if span is not None:
            offset, count, status, fields = span
            exchange.respond(status, fields, body[offset:offset + count], send_body=request.method == "GET")
        return True

    async def _send_file(self, request: Request, exchange: HTTPExchange, name: str) -> bool:
        """Send the file (read whole into ``FileCache`` when small); False (nothing sent) when it cannot be
        opened or is no longer a regular file."""
        try:
            f = open(name, "rb", buffering=0)  # noqa: SIM115  # raw: no buffer, lseek or isatty; closed below
        except OSError:
            return False
        with f:
            st = os.fstat(f.fileno())  # the file actually opened (it may have been replaced since the stat)
            if not stat.S_ISREG(st.st_mode) or self.secrets.has(name, st):
                return False
            body = None
            if _holds_keys(name, f.fileno(), st.st_size) or _holds_keys(os.path.realpath(name), f.fileno(), st.st_size):
                return False  # a private key the server was not told about (a CA's, another site's): never sent
            if st.st_size <= self.files.max_file:
                body = _read_whole(f.fileno(), st.st_size)
                if body is not None and st.st_ctime_ns < time.time_ns() - SETTLE_NS:
                    self.files.put(_file_key(name, st), body)
            span = self._span(request, exchange, name, st)
            if span is None:
                return True
            offset, count, status, fields = span
            get = request.method == "GET"
            if body is not None:
                exchange.respond(status, fields, body[offset:offset + count], send_body=get)
                return True
            exchange.send_head(status, fields)
            if get:
                await send_file(exchange, f, offset, count)
            await exchange.end()
        return True

    def _file_fields(self, name: str, st: os.stat_result) -> _FileFields:
        key = (name, st.st_size, st.st_mtime_ns)
        known = self._fields.get(key)
        if known is None:
            if len(self._fields) >= _RESOLVE_MAX:
                self._fields.clear()
            known = self._fields[key] = _FileFields(name, st)
        return known

    def _span(self, request: Request, exchange: HTTPExchange, name: str,
              st: os.stat_result) -> tuple[int, int, int, Sequence[Field]] | None:
        """What to send of a regular file: (offset, count, status, header fields); None when a 304 answered
        already. Conditional and Range headers are parsed only when the request has one."""
        meta = self._file_fields(name, st)
        for k, _ in request.headers:
            if k in _CONDITIONAL:
                break
        else:
            return 0, st.st_size, 200, meta.ok
        mtime = int(st.st_mtime)
        if _precondition(request, meta.etag, mtime) is not None:
            raise HTTPError(412)
        if _not_modified(request, meta.etag, mtime):
            exchange.respond(304, meta.validators)
            return None
        span = _range(request, meta.etag, meta.last_modified, st.st_size)
        if span is None:
            return 0, st.st_size, 200, meta.ok
        offset, count = span
        # a list, not a tuple: per-request fields are not worth a place in the per-second response cache
        return offset, count, 206, [*meta.ok[:4], (b"content-range", b"content-range",
                                                   b"bytes %d-%d/%d" % (offset, offset + count - 1, st.st_size)),
                                    (b"content-length", b"content-length", b"%d" % count)]

    def _listed(self, path: str) -> list[tuple[str, bool]]:
        """(name, is a directory) of what a listing shows: what a request for it would serve (no dot-files, no
        keys, nothing whose link leads out of the root or loops). 404 when the directory went away."""
        try:
            scanned = list(os.scandir(path))
        except OSError:
            raise HTTPError(404) from None
        shown = []
        for entry in scanned:
            if entry.name.startswith(".") or "\\" in entry.name:  # (a request for "a\\b" is refused: not listed)
                continue
            try:
                target = Path(entry.path).resolve(strict=True)
                is_dir = entry.is_dir()
            except (OSError, RuntimeError):  # dangling, a loop, gone since the scan
                continue
            if target.is_relative_to(self.root) and target not in self.secrets:
                shown.append((entry.name, is_dir))
        return sorted(shown, key=lambda item: (not item[1], item[0]))

    async def _send_listing(self, request: Request, exchange: HTTPExchange, path: str, url_path: str) -> None:
        entries = self._listed(path)
        title = html.escape(url_path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        rows = ['<li><a href="../">../</a></li>'] if url_path != "/" else []
        for name, is_dir in entries:
            name += "/" if is_dir else ""
            raw = os.fsencode(name)  # a name that is not UTF-8 keeps its bytes in the link, as nginx does
            shown = raw.decode("utf-8", "replace")
            rows.append(f'<li><a href="{urllib.parse.quote(raw)}">{html.escape(shown)}</a></li>')
        body = (f"<!doctype html>\n<meta charset=utf-8>\n<title>Index of {title}</title>\n"
                f"<h1>Index of {title}</h1>\n<ul>\n" + "\n".join(rows) + "\n</ul>\n").encode()
        await exchange.start(200, [("content-type", "text/html; charset=utf-8"),
                                   ("content-length", str(len(body)))])
        if request.method == "GET":
            await exchange.write(body)
        await exchange.end()


async def send_file(exchange: HTTPExchange, file: BinaryIO, offset: int, count: int) -> None:
    """Write ``count`` bytes of ``file`` from ``offset`` as the response body.

    The one place file contents go out: with kTLS TX this is where ``os.sendfile`` belongs. Reads are
    blocking: from the page cache a 64 KiB read is shorter than a hop to a thread.
    """
    if isinstance(exchange, Exchange) and await ktls.send_file(exchange, file, offset, count):  # kTLS TX (HTTP/1.1)
        return
    fd = file.fileno()
    remaining = count
    while remaining > 0:
        chunk = os.pread(fd, min(CHUNK, remaining, await exchange.writable()), offset)
        if not chunk:
            raise ConnectionError("the file shrank while it was being sent")
        remaining -= len(chunk)
        offset += len(chunk)
        await exchange.write(chunk)


class FileCache:
    """Whole contents of small files, least recently used dropped beyond ``max_bytes``.

    Keys carry size, mtime, ctime and inode: a file written, replaced or renamed over gets a new key on the
    next request's ``stat``, so nothing stale is ever served; an older version of a path is dropped when a
    newer one is cached."""

    def __init__(self, max_file: int = SMALL_FILE_MAX, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self.max_file, self.max_bytes = max_file, max_bytes
        self.size = 0  # bytes held
        self._entries: OrderedDict[_FileKey, bytes] = OrderedDict()
        self._by_path: dict[str, _FileKey] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: _FileKey) -> bytes | None:
        body = self._entries.get(key)
        if body is not None:
            self._entries.move_to_end(key)
        return body

    def put(self, key: _FileKey, body: bytes) -> None:
        if len(body) > self.max_file or len(body) > self.max_bytes:
            return
        old = self._by_path.get(key[0])
        if old is not None:
            self._drop(old)
        self._entries[key] = body
        self._by_path[key[0]] = key
        self.size += len(body)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self._by_path.clear()
        self.size = 0

    def _drop(self, key: _FileKey) -> None:
        body = self._entries.pop(key, None)
        if body is not None:
            self.size -= len(body)
            if self._by_path.get(key[0]) == key:
                del self._by_path[key[0]]


FILES = FileCache()  # shared by every static route of the process (and kept across reloads)


def _file_key(name: str, st: os.stat_result) -> _FileKey:
    return name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


_KEY_SUFFIXES = (".key", ".pem", ".der", ".p8", ".pk8")
_KEY_STORES = (".p12", ".pfx", ".jks", ".keystore")


def _holds_keys(name: str, fd: int, size: int) -> bool:
    """A key store, or a PEM/DER-named file that holds a private key (``-----BEGIN ... PRIVATE KEY-----``, or
    a DER PKCS#8/SEC1/PKCS#1 key cryptography can load). Checked before a file is first sent or cached."""
    lower = name.lower()
    if lower.endswith(_KEY_STORES):
        return True
    if not lower.endswith(_KEY_SUFFIXES) or size > (1 << 20):
        return False
    data = os.pread(fd, min(size, 1 << 20), 0)
    if b"PRIVATE KEY-----" in data:
        return True
    if lower.endswith((".der", ".p8", ".pk8", ".key")) and data[:1] == b"\x30":
        with contextlib.suppress(ValueError, TypeError, UnsupportedAlgorithm):
            serialization.load_der_private_key(data, None)
            return True
    return False


def _read_whole(fd: int, size: int) -> bytes | None:
    """The first ``size`` bytes of the file; None when it has fewer now (it shrank since the ``fstat``)."""
    body = os.pread(fd, size, 0)
    while len(body) < size:
        more = os.pread(fd, size - len(body), len(body))
        if not more:
            return None
        body += more
    return body


def _etags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def _list_field(request: Request, name: bytes) -> str | None:
    """A list field's value: its lines joined with commas (RFC 9110 §5.3), None when absent."""
    values = [value.decode("latin-1") for key, value in request.headers if key == name]
    return ", ".join(values) if values else None


def _precondition(request: Request, etag: str, mtime: int) -> int | None:
    """RFC 9110 §13.2.2 steps 1-2: If-Match / If-Unmodified-Since failing is 412."""
    if_match = _list_field(request, b"if-match")
    if if_match is not None:  # strong comparison: a W/ tag never equals our strong one
        return None if if_match.strip() == "*" or etag in [t.strip() for t in if_match.split(",")] else 412
    since = _http_date(request.header(b"if-unmodified-since"))
    return 412 if since is not None and mtime > since else None


def _not_modified(request: Request, etag: str, mtime: int) -> bool:
    """Steps 3-4: If-None-Match (weak comparison) decides; without it, If-Modified-Since."""
    none_match = _list_field(request, b"if-none-match")
    if none_match is not None:
        return none_match.strip() == "*" or etag in _etags(none_match)
    since = _http_date(request.header(b"if-modified-since"))
    return since is not None and mtime <= since


def _range(request: Request, etag: str, last_modified: str, size: int) -> tuple[int, int] | None:
    """(offset, count) for a single satisfiable ``bytes=`` range on a GET; 416 when none is satisfiable."""
    header = request.header(b"range")
    if request.method != "GET" or header is None:
        return None
    if_range = request.header(b"if-range")
    if if_range is not None and if_range.strip() not in (etag, last_modified):
        return None  # the client's copy is stale: send it the whole new file
    m = _RANGE.fullmatch(header.strip())
    if m is None or m.group(1) == m.group(2) == "":
        return None  # several ranges or another unit: ignoring Range is allowed (§14.2)
    first, last = m.group(1), m.group(2)
    if first == "":  # suffix: the last N bytes
        count = min(_position(last), size)
        if count == 0:
            if size == 0 and _position(last) > 0:
                return None  # §14.1.1: satisfiable on an empty file, but 206 cannot say "no bytes": send it whole
            raise HTTPError(416, [("content-range", f"bytes */{size}")])
        return size - count, count
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise HTTPError(416, [("content-range", f"bytes */{size}")])
    return start, end - start + 1


def _position(digits: str) -> int:
    """A byte position of a Range header (§14.1.1: ``1*DIGIT``, leading zeros allowed): past any file when it
    has more than 18 significant digits (and not converted: a client cannot make ``int()`` parse thousands)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def _http_date(value: str | None) -> int | None:
    """An HTTP-date (RFC 9110 §5.6.7: GMT, or asctime's form without a zone); anything else is None (ignored)."""
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    elif not value.rstrip().endswith("GMT"):  # "+0800": not an HTTP-date, so not evaluated (§13.1.3)
        return None
    return int(parsed.timestamp())
