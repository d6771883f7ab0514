"""A thread-per-connection TCP server on loopback, for tests whose peer is scripted by hand."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def thread_per_connection(handle: Callable[[socket.socket, threading.Event], None],
                          host: str = "127.0.0.1") -> Iterator[int]:
    """Yield the port of a server that hands each accepted connection to ``handle(conn, stop)`` on a daemon
    thread; on exit ``stop`` is set (for handlers that loop), accepting ends and the listener closes."""
    stop = threading.Event()
    listener = socket.create_server((host, 0))
    listener.settimeout(0.1)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
