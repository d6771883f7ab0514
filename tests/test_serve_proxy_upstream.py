"""The reverse proxy's upstream connection (``tlskit.serve.proxy._Upstream``): what the upstream sent before it
reset the connection is read ahead of the error, also when a failed write closed the transport before the
answer was read from the kernel (an upstream refusing an upload with 413 lost its answer to a 502)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest

from tlskit.serve.proxy import _Upstream

ANSWER = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _refusing_upstream() -> tuple[socket.socket, threading.Event]:
    """Reads a little, answers 413, then resets (SO_LINGER 0) with our data unread."""
    listener = socket.create_server(("127.0.0.1", 0))
    answered = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(16)
        conn.sendall(ANSWER)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        answered.set()

    threading.Thread(target=serve, daemon=True).start()
    return listener, answered


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_an_answer_before_a_reset_is_read_after_a_write_fails(loop_kind: str) -> None:
    listener, answered = _refusing_upstream()

    async def go() -> None:
        upstream = await _Upstream.connect("127.0.0.1", listener.getsockname()[1])
        assert upstream.transport is not None
        upstream.transport.pause_reading()  # the answer stays in the kernel, as when the write fails first
        upstream.write(b"POST / HTTP/1.1\r\n")
        await asyncio.get_running_loop().run_in_executor(None, answered.wait, 5)
        with pytest.raises(ConnectionError):
            for _ in range(100):  # the body: the reset makes a write (or drain) fail, and the transport close
                upstream.write(b"x" * 65536)
                await upstream.drain()
                await asyncio.sleep(0.01)
        assert await upstream.read(65536) == ANSWER  # then the error, or EOF
        with pytest.raises(ConnectionError):
            upstream.write(b"more")  # a closed transport is a ConnectionError, not uvloop's RuntimeError
        await upstream.close()

    if loop_kind == "uvloop":
        import uvloop  # a test dependency (pyproject's [test] extra)

        uvloop.run(go())
    else:
        asyncio.run(go())
    listener.close()
