"""The baseline servers of ``bench/serve.py`` (not part of CI), each run as a process of its own:

    python bench/serve_baselines.py PORT ROOT CERT KEY            # "python ssl+asyncio" (minimal HTTP)
    python bench/serve_baselines.py PORT ROOT CERT KEY --h11      # "python ssl+h11" (the same HTTP work as serve)
    python bench/serve_baselines.py PORT ROOT CERT KEY --uvloop   # the minimal one on uvloop
    python bench/serve_baselines.py PORT ROOT CERT KEY --tlskit   # the minimal handler over tlskit.start_server

See ``bench/serve.py`` for what each stands for. Suite and group are pinned as the load generator pins them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import time
from pathlib import Path
from typing import Any

SUITE = "TLS_AES_128_GCM_SHA256"
GROUP = "X25519"


def _server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ecdh_curve(GROUP)
    return ctx


def _serve_forever(handle: Any, port: int, ctx: ssl.SSLContext, use_uvloop: bool) -> None:
    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx, backlog=1024)
        async with server:
            await server.serve_forever()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def python_ssl_server(port: int, root: str, cert: str, key: str, use_uvloop: bool = False,
                      stack: str = "ssl") -> None:
    """Baseline "python ssl+asyncio" (minimal HTTP): asyncio streams over ``ssl``; a request is read up to
    its blank line and answered with one prebuilt response (no HTTP parsing, no stat). ``stack="tlskit"``: the
    same handler in the same loop, over ``tlskit.start_server`` ("tlskit+asyncio minimal")."""
    from tlskit import TLSError

    ctx = _server_context(cert, key)
    body = (Path(root) / "index.html").read_bytes()
    head = (f"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {len(body)}\r\n"
            "server: python-ssl\r\n").encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                close = b"HTTP/1.0" in request.split(b"\r\n", 1)[0] or b"onnection: close" in request
                writer.write(head + (b"connection: close\r\n\r\n" if close else b"\r\n") + body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, TLSError):
            pass
        finally:
            writer.close()

    if stack == "tlskit":
        _serve_tlskit_forever(handle, port, cert, key)
    else:
        _serve_forever(handle, port, ctx, use_uvloop)


def _serve_tlskit_forever(handle: Any, port: int, cert: str, key: str) -> None:
    """``handle`` behind ``tlskit.start_server`` on the stdlib asyncio loop: the suite and group pinned as for the
    other servers, one session ticket key (as ``tlskit serve`` makes at start)."""
    from tlskit import CertifiedKey, CipherSuite, NamedGroup, ServerConfig, start_server
    from tlskit.tickets.keyring import TicketKey, TicketKeyRing

    config = ServerConfig(certificates=(CertifiedKey.from_pem_files(cert, key),), groups=(NamedGroup.x25519,),
                          cipher_suites=(CipherSuite[SUITE],),
                          ticket_keys=TicketKeyRing([TicketKey.generate(os.urandom)]))

    async def main() -> None:
        server = await start_server(handle, "127.0.0.1", port, config=config, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def python_ssl_h11_server(port: int, root: str, cert: str, key: str, use_uvloop: bool = False) -> None:
    """Baseline "python ssl+h11" (the same HTTP work as tlskit serve): asyncio streams over ``ssl``; each
    request parsed by h11 and answered through h11 with the header fields ``tlskit serve`` sends for a small
    static file (Date, Server, Content-Type, Content-Length, ETag, Last-Modified, Accept-Ranges) after one
    ``os.stat``, the body from memory. Like tlskit it formats Date once a second and the validators once per
    file version, and hands h11 fields it built itself (``_parsed=True``: no per-field regexes), so the ratio
    against it is TLS and server overhead, not HTTP work."""
    import email.utils

    import h11
    from h11._headers import Headers

    ctx = _server_context(cert, key)
    path = os.path.join(root, "index.html")
    body = Path(path).read_bytes()
    fields: dict[tuple[int, int], list[tuple[bytes, bytes, bytes]]] = {}
    date: list[Any] = [0, b""]

    def response() -> h11.Response:
        st = os.stat(path)
        known = fields.get((st.st_size, st.st_mtime_ns))
        if known is None:
            known = fields[st.st_size, st.st_mtime_ns] = [
                (b"content-type", b"content-type", b"text/html; charset=utf-8"),
                (b"etag", b"etag", f'"{st.st_size:x}-{st.st_mtime_ns:x}"'.encode()),
                (b"last-modified", b"last-modified", email.utils.formatdate(st.st_mtime, usegmt=True).encode()),
                (b"accept-ranges", b"accept-ranges", b"bytes"),
                (b"content-length", b"content-length", str(st.st_size).encode())]
        now = int(time.time())
        if date[0] != now:
            date[:] = [now, email.utils.formatdate(now, usegmt=True).encode()]
        items = [*known, (b"date", b"date", date[1]), (b"server", b"server", b"python-ssl-h11")]
        return h11.Response(status_code=200, headers=Headers(items), reason=b"OK", http_version=b"1.1", _parsed=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        out = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    out = (conn.send(response()) or b"") + (conn.send(h11.Data(data=body)) or b"")
                elif isinstance(event, h11.EndOfMessage):
                    writer.write(out + (conn.send(h11.EndOfMessage()) or b""))
                    await writer.drain()
                    if conn.our_state is not h11.DONE:
                        break  # MUST_CLOSE: Connection: close or HTTP/1.0
                    conn.start_next_cycle()
                else:
                    break  # ConnectionClosed
        except (ConnectionError, ssl.SSLError, h11.ProtocolError):
            pass
        finally:
            writer.close()

    _serve_forever(handle, port, ctx, use_uvloop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("root", help="the directory with index.html")
    parser.add_argument("cert")
    parser.add_argument("key")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--h11", action="store_true", help="python ssl+h11: parse with h11, serve's header fields")
    kind.add_argument("--tlskit", action="store_true", help="the minimal handler over tlskit.start_server")
    parser.add_argument("--uvloop", action="store_true", help="on uvloop (ssl baselines only)")
    args = parser.parse_args()
    if args.h11:
        python_ssl_h11_server(args.port, args.root, args.cert, args.key, args.uvloop)
    else:
        python_ssl_server(args.port, args.root, args.cert, args.key, args.uvloop, "tlskit" if args.tlskit else "ssl")


if __name__ == "__main__":
    main()
