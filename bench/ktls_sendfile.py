"""Server CPU per GB for one large file over HTTPS: kTLS + ``sendfile`` against tlskit's userspace records.

    python3 tests/vm/vm.py --bench --size-mb 1024     # inside the kTLS VM (this is what counts)
    python3 bench/ktls_sendfile.py --size-mb 64       # here: userspace only when the kernel has no kTLS

The server is tlskit's asyncio front end in a child process, answering ``GET`` with the file either via
``TLSTransport.sendfile`` on a kTLS connection (``os.sendfile``; the kernel seals the records) or, as
``tlskit serve`` does without kTLS, by reading 64 KiB chunks and writing them through ``StreamWriter``
(tlskit seals the records). The client is Python's ``ssl`` in this process. Server CPU (user + system from
``getrusage`` in the child, from request to last byte) is divided by the bytes sent. Under QEMU TCG the
absolute numbers are emulated and meaningless, so only ratios are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import ssl
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.certs import make_ca, make_leaf, write_pem  # noqa: E402
from tlskit.config import CertifiedKey, ServerConfig  # noqa: E402
from tlskit.enums import CipherSuite  # noqa: E402
from tlskit.io import ktls  # noqa: E402
from tlskit.io.asyncio import TLSTransport, start_server  # noqa: E402

CHUNK = 1 << 16
MODES = ("ktls-sendfile", "userspace")


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def kernel_aead_drivers() -> dict[str, str]:
    """The highest-priority driver per AEAD in ``/proc/crypto`` (e.g. gcm(aes) -> generic-gcm-aesni)."""
    best: dict[str, tuple[int, str]] = {}
    try:
        blocks = Path("/proc/crypto").read_text().split("\n\n")
    except OSError:
        return {}
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        name, driver = fields.get("name", ""), fields.get("driver", "")
        if name in ("gcm(aes)", "rfc7539(chacha20,poly1305)") and fields.get("selftest") != "unknown":
            priority = int(fields.get("priority", "0"))
            if name not in best or priority > best[name][0]:
                best[name] = (priority, driver)
    return {name: driver for name, (_, driver) in best.items()}


def serve_child(mode: str, config: ServerConfig, path: Path, requests: int,
                results: Connection) -> None:
    """The server process: answer ``requests`` GETs, report (cpu seconds, bytes, kTLS on) for each."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        cpu0, wall0 = _cpu(), time.monotonic()
        size = path.stat().st_size
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n" % size)
        transport = writer.transport
        kernel = writer.get_extra_info("ktls")
        with path.open("rb") as f:
            if mode == "ktls-sendfile":
                assert isinstance(transport, TLSTransport)
                await writer.drain()
                sent = await transport.sendfile(f)
            else:
                sent = 0
                while chunk := f.read(CHUNK):
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        user, system = _cpu()
        results.send((user - cpu0[0], system - cpu0[1], time.monotonic() - wall0, sent,
                      kernel is not None and kernel.tx))
        done.release()

    async def main() -> None:
        server = await start_server(handle, "127.0.0.1", 0, config=config,
                                    ktls="auto" if mode == "ktls-sendfile" else False)
        results.send(server.sockets[0].getsockname()[1])
        async with server:
            for _ in range(requests):
                await done.acquire()

    done = asyncio.Semaphore(0)
    asyncio.run(main())


def fetch(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /file HTTP/1.1\r\nhost: localhost\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += tls.recv(4096)
        header, body = head.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in header.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        got, buf = len(body), bytearray(1 << 18)
        while got < length:
            n = tls.recv_into(buf)
            if not n:
                break
            got += n
        return got


def run_mode(mode: str, config: ServerConfig, ca: Path, path: Path, repeat: int) -> dict[str, float]:
    parent, child = mp.Pipe()
    proc = mp.get_context("fork").Process(target=serve_child, args=(mode, config, path, repeat, child))
    proc.start()
    port = parent.recv()
    user = system = wall = 0.0
    total = 0
    offloaded = True
    for _ in range(repeat):
        received = fetch(port, ca)
        u, s, w, sent, tx = parent.recv()
        if received != sent or sent != path.stat().st_size:
            raise SystemExit(f"{mode}: sent {sent}, received {received}")
        user, system, wall, total, offloaded = user + u, system + s, wall + w, total + sent, offloaded and tx
    proc.join(30)
    gigabytes = total / 1e9
    return {"cpu_per_gb": (user + system) / gigabytes, "wall_per_gb": wall / gigabytes, "bytes": total,
            "system_share": system / (user + system), "ktls_tx": offloaded}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (one download per mode each); medians")
    parser.add_argument("--suite", default="TLS_AES_128_GCM_SHA256", choices=[s.name for s in ktls.CIPHER_TYPES])
    parser.add_argument("--in-vm", action="store_true", help="print KTLS-VM report lines (tests/vm/vm.py)")
    opts = parser.parse_args()
    mark = "KTLS-VM " if opts.in_vm else ""
    support = ktls.probe()
    modes = MODES if support.available else ("userspace",)
    if not support.available:
        print(f"{mark}INFO kTLS unavailable here ({support.reason}); userspace only")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        root = make_ca("bench root")
        leaf = make_leaf(root, ["localhost"])
        ca = write_pem(tmp / "ca.pem", [root])
        config = ServerConfig(certificates=(CertifiedKey(chain=(leaf.der,), private_key=leaf.key),),
                              cipher_suites=(CipherSuite[opts.suite],))
        path = tmp / "file"
        block = os.urandom(1 << 20)
        with path.open("wb") as f:
            for _ in range(opts.size_mb):
                f.write(block)
        rounds: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        for _ in range(opts.repeat):  # interleaved, so that drift in the VM hits both modes alike
            for mode in modes:
                rounds[mode].append(run_mode(mode, config, ca, path, 1))
        results = {mode: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                   for mode, runs in rounds.items()}
    summary: dict[str, object] = {"kernel": support.release, "size_mb": opts.size_mb, "repeat": opts.repeat,
                                  "suite": opts.suite}
    if "ktls-sendfile" in results:
        k, u = results["ktls-sendfile"], results["userspace"]
        summary.update(ktls_tx=all(r["ktls_tx"] for r in rounds["ktls-sendfile"]),
                       cpu_ratio=round(k["cpu_per_gb"] / u["cpu_per_gb"], 3),
                       wall_ratio=round(k["wall_per_gb"] / u["wall_per_gb"], 3),
                       system_share={m: round(r["system_share"], 3) for m, r in results.items()},
                       kernel_aead=kernel_aead_drivers(),
                       round_cpu_ratios=[round(a["cpu_per_gb"] / b["cpu_per_gb"], 3)
                                         for a, b in zip(rounds["ktls-sendfile"], rounds["userspace"],
                                                         strict=True)])
        print(f"{mark}BENCH server CPU per GB, kTLS+sendfile / userspace records: {summary['cpu_ratio']}x "
              f"(wall time {summary['wall_ratio']}x), medians of {opts.repeat} rounds of {opts.size_mb} MiB, "
              f"{opts.suite}, Linux {support.release}")
    print(f"{mark}BENCH {json.dumps(summary)}", flush=True)
    if opts.in_vm:
        print(f"{mark}DONE passed=1 failed=0 kernel={support.release}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
