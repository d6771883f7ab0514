"""HTTPS server benchmark (not part of CI): `tlskit serve` vs nginx vs a Python ``ssl`` + asyncio server.

All three serve the same static file with the same ECDSA P-256 certificate, one worker process each, on
127.0.0.1; one client tool measures all of them in the same run:

* full handshakes per second: ``openssl s_time -new`` (a new TLS 1.3 connection per request, x25519);
* resumed handshakes per second: ``openssl s_time -reuse`` (session tickets);
* requests per second with keep-alive: ``wrk`` (``apt-get install wrk``), when installed.

    python bench/serve.py                 # needs openssl; nginx (apt-get install nginx) and wrk optional
    python bench/serve.py --time 10 --json

The machine has 2 cores: client and server share them, so compare the servers with each other, not with
published figures. nginx runs with ``worker_processes 1`` and access logging off, like the others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = b"<!doctype html><title>bench</title>" + b"x" * 1000 + b"\n"  # ~1 KiB, like a small HTML page

_NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_ecdh_curve X25519;
        ssl_session_tickets on;
        keepalive_requests 100000;
        root {root};
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port}")


@contextlib.contextmanager
def _server(argv: list[str], port: int, what: str) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_listening(port, proc, what)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def s_time(port: int, mode: str, seconds: int) -> float:
    """Connections per second from ``openssl s_time`` (``mode``: -new or -reuse), one GET per connection."""
    out = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", mode, "-time", str(seconds),
                          "-www", "/index.html"], capture_output=True, text=True, timeout=seconds + 30).stdout
    # "N connections in T real seconds" counts whole seconds; time it ourselves is no better, so use the
    # first summary line's count over the requested duration (s_time stops at that deadline).
    found = re.search(r"(\d+) connections in [\d.]+s;", out)
    if found is None:
        raise SystemExit(f"openssl s_time {mode} gave no result:\n{out}")
    return int(found.group(1)) / seconds


def wrk(port: int, seconds: int) -> float | None:
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", f"https://127.0.0.1:{port}/index.html"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(found.group(1)) if found else None


def python_ssl_server(port: int, root: str, cert: str, key: str) -> None:
    """The baseline: asyncio streams over ``ssl``, the smallest HTTP/1.1 keep-alive static file loop."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
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
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def run(seconds: int) -> dict[str, dict[str, float | None]]:
    from tlskit.serve.devca import dev_certificate

    work = Path(tempfile.mkdtemp(prefix="tlskit-bench-serve-"))
    (work / "www").mkdir()
    (work / "www" / "index.html").write_bytes(PAGE)
    dev = dev_certificate(work / "ca")
    servers: dict[str, tuple[list[str], int]] = {}
    port = _free_port()
    servers["tlskit serve"] = ([sys.executable, "-m", "tlskit", "serve", str(work / "www"), "--host", "127.0.0.1",
                                "--port", str(port), "--workers", "1", "--cert", str(dev.cert), "--key",
                                str(dev.key), "--groups", "x25519", "-q"], port)
    port = _free_port()
    servers["python ssl+asyncio"] = ([sys.executable, __file__, "--python-ssl-server", str(port), str(work / "www"),
                                      str(dev.cert), str(dev.key)], port)
    if shutil.which("nginx"):
        port = _free_port()
        conf = work / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(dir=work, port=port, cert=dev.cert, key=dev.key, root=work / "www"))
        servers["nginx"] = (["nginx", "-c", str(conf), "-e", str(work / "error.log")], port)
    else:
        print("nginx not installed (apt-get install nginx): skipped", file=sys.stderr)
    if shutil.which("wrk") is None:
        print("wrk not installed (apt-get install wrk): keep-alive requests/s skipped", file=sys.stderr)
    results: dict[str, dict[str, float | None]] = {}
    for name, (argv, port) in servers.items():
        with _server(argv, port, name):
            results[name] = {"full handshakes/s": s_time(port, "-new", seconds),
                             "resumed handshakes/s": s_time(port, "-reuse", seconds),
                             "keep-alive requests/s": wrk(port, seconds)}
    shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", type=int, default=5, help="seconds per measurement (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--python-ssl-server", nargs=4, metavar=("PORT", "ROOT", "CERT", "KEY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.python_ssl_server:
        port, root, cert, key = args.python_ssl_server
        python_ssl_server(int(port), root, cert, key)
        return
    results = run(args.time)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'server':<22}{'full hs/s':>12}{'resumed hs/s':>14}{'keep-alive req/s':>18}")
    for name, r in results.items():
        cells = [f"{v:.0f}" if v is not None else "-" for v in r.values()]
        print(f"{name:<22}{cells[0]:>12}{cells[1]:>14}{cells[2]:>18}")
    base = results.get("python ssl+asyncio", {}).get("full handshakes/s")
    ours = results.get("tlskit serve", {}).get("full handshakes/s")
    if base and ours:
        print(f"tlskit / python ssl (full handshakes): {ours / base:.2f}x")
    if ours and (nginx := results.get("nginx", {}).get("full handshakes/s")):
        print(f"tlskit / nginx (full handshakes): {ours / nginx:.2f}x")


if __name__ == "__main__":
    main()
