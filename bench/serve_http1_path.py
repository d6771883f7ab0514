"""serve's HTTP/1.1 path without sockets or TLS (not part of CI): CPU per keep-alive request and per closing
connection of ``serve_connection`` + ``StaticFiles`` for a ~1 KiB cached file, beside h11 alone doing the same
exchange (receive, two events, Response/Data/EndOfMessage, next cycle) with serve's own response shortcuts.

The channel hands over one request per read without suspending, so the coroutine runs a whole connection in
one ``send``: what is measured is the Python work per request, none of the event loop's. Rounds interleave
the variants; medians.

    PYTHONPATH=src python bench/serve_http1_path.py [--requests 200] [--rounds 40]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import h11

from tlskit.serve.accesslog import TLSFields
from tlskit.serve.exchange import Field
from tlskit.serve.http1 import ConnectionTracker, Router, ServerConnection, TLSState, _response, serve_connection
from tlskit.serve.settings import HTTPLimits, StaticRoute
from tlskit.serve.static import StaticFiles

PAGE = b"<!doctype html><title>bench</title>" + b"x" * 1000 + b"\n"  # as bench/serve.py
KEEP_ALIVE = b"GET /index.html HTTP/1.1\r\nHost: localhost:8443\r\n\r\n"  # as wrk sends it
CLOSING = b"GET /index.html HTTP/1.1\r\nHost: localhost:8443\r\nConnection: close\r\n\r\n"
_TLS = TLSFields(version="TLSv1.3", suite="TLS_AES_128_GCM_SHA256", group="x25519", sni="-", alpn="-",
                 resumed=False, early_data=False, handshake_ms=0.0, client="-")


class _Channel:
    """What ``serve_connection`` uses of ``Channel``: reads from a list, writes into one."""

    paused = False
    lost = False
    deadline = math.inf

    def __init__(self, requests: list[bytes]) -> None:
        self.requests, self.out = requests[::-1], []  # type: list[bytes], list[bytes]

    async def read(self) -> bytes:
        return self.requests.pop() if self.requests else b""

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def set_timeout(self, seconds: float) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    async def close_gracefully(self, *, linger: bool = True) -> None:
        pass

    def unsent(self) -> tuple[int, int]:
        return 0, 0

    async def drain(self) -> None:
        pass


def serve(router: Router, requests: list[bytes]) -> list[bytes]:
    """One connection's responses."""
    channel = _Channel(requests)
    coro = serve_connection(channel, TLSState(make=lambda: _TLS, early=False), router=lambda: router,  # type: ignore[arg-type]
                            limits=HTTPLimits(), tracker=ConnectionTracker(), metrics=None, log_access=False)
    try:
        coro.send(None)
    except StopIteration:
        return channel.out
    raise RuntimeError("serve_connection suspended")


def h11_alone(n: int, fields: tuple[Field, ...]) -> None:
    conn = ServerConnection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    for _ in range(n):
        conn.receive_data(KEEP_ALIVE)
        conn.next_event()
        conn.next_event()
        conn.send(_response(200, fields, False))
        conn.send_body(PAGE)
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    (root / "index.html").write_bytes(PAGE)
    time.sleep(1.1)  # settled (static.SETTLE_NS): served from the file cache
    route = StaticFiles(StaticRoute(root=root))
    router = Router((route,))
    name = str(root / "index.html")
    fields = route._file_fields(name, os.stat(name)).ok
    n = args.requests
    assert b"".join(serve(router, [KEEP_ALIVE])).endswith(PAGE), "not the page"
    alone, keep_alive, closing = [], [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        h11_alone(n, fields)
        alone.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        serve(router, [KEEP_ALIVE] * n)
        keep_alive.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _ in range(n):
            serve(router, [CLOSING])
        closing.append((time.perf_counter() - t) / n * 1e6)
    med = statistics.median
    print(f"h11 alone      {med(alone):7.2f} us/request")
    print(f"serve          {med(keep_alive):7.2f} us/request (keep-alive), "
          f"+{med([s - a for a, s in zip(alone, keep_alive, strict=True)]):.2f} over h11 alone")
    print(f"serve closing  {med(closing):7.2f} us/connection (new h11 connection, one request, close)")


if __name__ == "__main__":
    main()
