"""Static files over HTTP/1.1 (h11) on asyncio streams: GET and HEAD under one root, with keep-alive.

Only regular files inside the root are served: ``..`` segments, dot-files and symlinks leading outside the
root answer 404, directories serve their ``index.html``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import mimetypes
import posixpath
import urllib.parse
from pathlib import Path

import h11

from ..errors import TLSError
from ..io.asyncio import format_address

__all__ = ["StaticSite"]

_log = logging.getLogger("tlskit.serve")
CHUNK = 1 << 16
MAX_REQUEST_BODY = 1 << 20  # GET/HEAD bodies are meaningless; read and drop at most this much


class _Reply(Exception):
    """An early answer (404, 405...) raised from inside request handling."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


class StaticSite:
    """The per-connection handler for ``tlskit.io.asyncio.start_server``."""

    def __init__(self, root: Path, *, idle_timeout: float = 60.0) -> None:
        self.root = root.resolve()
        self.idle_timeout = idle_timeout

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = format_address(writer.get_extra_info("peername"))
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await self._next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    break  # ConnectionClosed, or a pipelined request h11 paused on
                await self._exchange(conn, reader, writer, event, peer)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(h11.LocalProtocolError, ConnectionError, TLSError):
                    await self._send_simple(conn, writer, e.error_status_hint, "Bad Request", head=False)
        except (TimeoutError, ConnectionError, TLSError) as e:
            _log.debug("%s: connection ended: %s", peer, e)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TLSError):
                await writer.wait_closed()

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(self.idle_timeout):
                data = await reader.read(CHUNK)
            conn.receive_data(data)

    async def _exchange(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        peer: str,
    ) -> None:
        body = 0
        while not isinstance(event := await self._next_event(conn, reader), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                body += len(event.data)
            if not isinstance(event, h11.Data) or body > MAX_REQUEST_BODY:
                raise ConnectionError("request body too large or connection closed")
        method, target = request.method.decode(), request.target.decode("ascii", "replace")
        head = method == "HEAD"
        try:
            if method not in ("GET", "HEAD"):
                raise _Reply(405, "Method Not Allowed", (("allow", "GET, HEAD"),))
            path = self._resolve(target)
            status, size = 200, await self._send_file(conn, writer, path, head)
        except _Reply as reply:
            status = reply.status
            size = await self._send_simple(conn, writer, reply.status, reply.reason, head, reply.headers)
        _log.info('%s "%s %s" %d %d', peer, method, target, status, size)

    def _resolve(self, target: str) -> Path:
        """The file for a request target, or ``_Reply`` 404/301."""
        url_path = urllib.parse.unquote(urllib.parse.urlsplit(target).path)
        parts = [p for p in url_path.split("/") if p not in ("", ".")]
        if not url_path.startswith("/") or any(p.startswith(".") or "\\" in p or "\0" in p for p in parts):
            raise _Reply(404, "Not Found")  # ".." (traversal), dot-files, odd bytes
        path = self.root.joinpath(*parts).resolve()
        if not path.is_relative_to(self.root):
            raise _Reply(404, "Not Found")  # a symlink leading out of the root
        if path.is_dir():
            if not url_path.endswith("/"):
                location = urllib.parse.quote(posixpath.join(url_path, ""))
                raise _Reply(301, "Moved Permanently", (("location", location),))
            path = path / "index.html"
        if not path.is_file():
            raise _Reply(404, "Not Found")
        return path

    async def _send_file(self, conn: h11.Connection, writer: asyncio.StreamWriter, path: Path, head: bool
                         ) -> int:
        try:
            f = path.open("rb")
        except OSError:
            raise _Reply(404, "Not Found") from None
        with f:
            stat = path.stat()
            ctype, encoding = mimetypes.guess_type(path.name)
            ctype = ctype or "application/octet-stream"
            if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
                ctype += "; charset=utf-8"
            headers = [("content-type", ctype), ("content-length", str(stat.st_size)),
                       ("last-modified", email.utils.formatdate(stat.st_mtime, usegmt=True))]
            if encoding:
                headers.append(("content-encoding", encoding))
            response = h11.Response(status_code=200, headers=_common(headers), reason=b"OK")
            await self._send(conn, writer, response)
            if not head:
                while chunk := f.read(CHUNK):  # local disk: a blocking read is shorter than a thread hop
                    await self._send(conn, writer, h11.Data(data=chunk))
            await self._send(conn, writer, h11.EndOfMessage())
            return stat.st_size

    async def _send_simple(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, reason: str,
                           head: bool, extra: tuple[tuple[str, str], ...] = ()) -> int:
        body = f"{status} {reason}\n".encode()
        headers = [("content-type", "text/plain; charset=utf-8"), ("content-length", str(len(body))), *extra]
        response = h11.Response(status_code=status, headers=_common(headers), reason=reason.encode())
        await self._send(conn, writer, response)
        if not head:
            await self._send(conn, writer, h11.Data(data=body))
        await self._send(conn, writer, h11.EndOfMessage())
        return len(body)

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: h11.Event) -> None:
        data = conn.send(event)
        if data:
            writer.write(data)
            await writer.drain()


def _common(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [*headers, ("date", email.utils.formatdate(usegmt=True)), ("server", "tlskit")]
