"""`tlskit serve --early-data`: time to first byte over a slow path, full / resumed / 0-RTT (not part of CI).

    python bench/serve_0rtt.py [--delay-ms 10] [--fetches 15] [--baseline-src DIR] [--json]

``tlskit serve ROOT --early-data`` (one worker, the development CA's localhost certificate) behind the
userspace delay relay of bench/resumption.py (every chunk held ``--delay-ms`` in each direction: RTT = 2 x
delay). Our sans-IO client (``Connection`` over a socket) fetches ``GET /index.html`` (``Connection: close``),
timed from the TCP connect to the first response byte:

  full    full handshake, request after it
  1-RTT   resumed (session ticket), request after the handshake
  0-RTT   resumed, request as early data (RFC 8470-safe: a GET); the server reads it before the handshake
          completes and answers in 0.5-RTT data right behind its Finished (RFC 8446 §2.3)

"before Finished" counts the fetches whose first response byte the client decrypted before it had sent its
own Finished: the response was 0.5-RTT data. ``--baseline-src DIR`` also runs a server from another source
tree (``PYTHONPATH=DIR``, e.g. ``git archive HEAD~1 | tar -x -C DIR`` then ``DIR/src``) in the same rounds,
to compare with a previous version. The relay accepts at once, so the TCP handshake costs no delay here (on a
real path it adds one RTT to every row alike).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _common as C
from resumption import DelayRelay, exchange, tcp_rtt

perf = time.perf_counter
REQUEST = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
PAGE = b"<!doctype html><title>0-RTT</title>" + b"x" * 1000 + b"\n"


@dataclass
class Fetch:
    ttfb: float
    before_finished: bool  # the first response byte arrived before the client sent its Finished
    resumed: bool
    early_accepted: bool
    status: bytes


@contextlib.contextmanager
def tlskit_serve(root: Path, dev: Any, *, src: str | None = None) -> Iterator[int]:
    """``tlskit serve ROOT --early-data`` on a free port (from ``src`` when given); the port."""
    env = dict(os.environ)
    env.pop("SSLKEYLOGFILE", None)
    if src is not None:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-m", "tlskit", "serve", str(root), "--host", "127.0.0.1", "--port", "0",
            "--workers", "1", "--cert", str(dev.cert), "--key", str(dev.key), "--early-data", "--no-stapling", "-q"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        port = None
        deadline = time.monotonic() + 20
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit(f"tlskit serve exited with status {proc.wait(10)}")
            if m := re.search(r"https://\S+:(\d+)/", line):
                port = int(m.group(1))
        if port is None:
            raise SystemExit("tlskit serve did not announce its port")
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def fetch(port: int, config: Any, *, early: bool) -> Fetch:
    """TCP connect, handshake, ``GET /index.html`` (as early data when ``early``), read to the server's close."""
    result = exchange(port, config, REQUEST, early=early)
    done = result.done
    return Fetch(result.ttfb, result.before_finished, bool(done and done.resumed),
                 bool(done and done.early_data_accepted), result.body.split(b"\r\n", 1)[0])


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tlskit.config import ClientConfig
    from tlskit.pki.verify import TrustStore
    from tlskit.serve.devca import dev_certificate
    from tlskit.stores.memory import MemorySessionStore

    work = Path(tempfile.mkdtemp(prefix="tlskit-bench-0rtt-"))
    (work / "www").mkdir()
    (work / "www" / "index.html").write_bytes(PAGE)
    dev = dev_certificate(work / "ca")
    base = ClientConfig(server_name="localhost", trust=TrustStore.from_pem_file(dev.ca_cert), alpn=("http/1.1",))
    delay = args.delay_ms / 1000
    servers = {"tlskit serve": None} | ({"baseline": args.baseline_src} if args.baseline_src else {})
    modes = {"full": (False, False), "1-RTT": (True, False), "0-RTT": (True, True)}  # (resume, early)
    out: dict[str, Any] = {"delay_ms": args.delay_ms, "servers": {}}
    with contextlib.ExitStack() as stack:
        echo = stack.enter_context(_echo())
        out["path_rtt_ms"] = tcp_rtt(stack.enter_context(DelayRelay(echo, delay)).port) * 1000
        relays = {}
        for name, src in servers.items():
            port = stack.enter_context(tlskit_serve(work / "www", dev, src=src))
            relays[name] = stack.enter_context(DelayRelay(port, delay)).port
        configs: dict[tuple[str, str], Any] = {}
        for name in servers:
            for mode, (resume, early) in modes.items():
                cfg = replace(base, session_store=MemorySessionStore(), early_data=early) if resume else base
                if resume:
                    fetch(relays[name], cfg, early=False)  # a ticket for this client's store
                configs[name, mode] = cfg
        samples: dict[tuple[str, str], list[Fetch]] = {key: [] for key in configs}
        for _ in range(args.fetches):  # interleaved: every server and mode in each round
            for (name, mode), cfg in configs.items():
                samples[name, mode].append(fetch(relays[name], cfg, early=modes[mode][1]))
    for (name, mode), got in samples.items():
        values = [f.ttfb for f in got]
        out["servers"].setdefault(name, {})[mode] = {
            "ttfb_ms": C.median(values) * 1000,
            "min_ms": min(values) * 1000,
            "max_ms": max(values) * 1000,
            "fetches": len(got),
            "resumed": all(f.resumed for f in got),
            "early_data_accepted": all(f.early_accepted for f in got),
            "before_finished": sum(f.before_finished for f in got),
            "status": sorted({f.status.decode("latin-1") for f in got}),
        }
    return out


@contextlib.contextmanager
def _echo() -> Iterator[int]:
    from resumption import echo_server, serving

    with serving(echo_server) as port:
        yield port


def render(res: dict[str, Any]) -> None:
    rtt = res["path_rtt_ms"]
    rows = []
    for name, modes in res["servers"].items():
        base = modes["1-RTT"]["ttfb_ms"]
        for mode, m in modes.items():
            saved = base - m["ttfb_ms"]
            rows.append([
                name, mode, "yes" if m["resumed"] else "no", "yes" if m["early_data_accepted"] else "no",
                f"{m['ttfb_ms']:.1f}", f"{m['min_ms']:.1f}-{m['max_ms']:.1f}", f"{m['ttfb_ms'] / rtt:.2f}",
                f"{saved / rtt:+.2f}", f"{m['before_finished']}/{m['fetches']}",
            ])
    C.print_table(
        f"tlskit serve --early-data: time to first byte over a {res['delay_ms']} ms + {res['delay_ms']} ms relay "
        f"(measured path RTT {rtt:.1f} ms)",
        ["server", "mode", "resumed", "0-RTT accepted", "TTFB ms (median)", "min-max", "RTTs", "saved vs 1-RTT",
         "before Finished"],
        rows,
        notes=[
            "TTFB from TCP connect to the first response byte (GET /index.html, 1 KiB, Connection: close)",
            "before Finished: fetches whose first response byte arrived before the client sent its Finished",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="relay delay each way (RTT = 2x)")
    parser.add_argument("--fetches", type=int, default=15, help="fetches per server and mode (median reported)")
    parser.add_argument("--baseline-src", help="also run a server from this source directory (PYTHONPATH)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    res = run(args)
    if args.json:
        C.emit_json({"benchmark": "serve_0rtt", **res})
    else:
        render(res)


if __name__ == "__main__":
    main()
