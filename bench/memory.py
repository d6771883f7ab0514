"""Memory per idle established connection, server side: tlskit vs CPython ``ssl``.

    python bench/memory.py [-n 1000] [--suite aes128] [--json]

N connections are established in memory one after the other; each client is dropped as soon as its
handshake (and, in the "after ping-pong" variant, one small message each way) is done, and the server
side is kept (tlskit: the ``Connection``; ssl: the ``SSLObject`` with its two ``MemoryBIO``s). The
retained growth divided by N is the cost of one idle server connection:

* tracemalloc: Python-heap bytes still allocated (after ``gc.collect()``). Exact for tlskit (its state
  lives in Python objects, including ``cryptography``'s AEAD objects' Python wrappers but not their
  native contexts); for ssl it sees only the Python wrappers, since OpenSSL allocates with its own malloc.
* RSS: resident set growth from ``/proc/self/statm`` (counts native memory too: the only fair view of
  ssl; includes allocator slack). Every measurement runs in a fresh process.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import sys
import tracemalloc
from typing import Any

import _common as C

PAGE = os.sysconf("SC_PAGE_SIZE")
VARIANTS = ("handshake", "ping-pong")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _ssl_conn(cctx: Any, sctx: Any, exchange: bool) -> Any:
    c, s, cin, cout, sin, sout = pair = C.ssl_pair(cctx, sctx)
    C.ssl_handshake(*pair)
    if exchange:
        c.write(b"ping")
        sin.write(cout.read())
        s.read(1024)
        s.write(b"pong")
        cin.write(sout.read())
        c.read(1024)
    return (s, sin, sout)


def _tlskit_conn(ccfg: Any, scfg: Any, exchange: bool) -> Any:
    from tlskit.connection import Connection

    c, s = Connection(ccfg), Connection(scfg)
    c.start()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())
    s.events()
    c.events()
    if exchange:
        c.send_data(b"ping")
        s.receive_data(c.data_to_send())
        s.events()
        s.send_data(b"pong")
        c.receive_data(s.data_to_send())
        c.events()
    assert s.handshake_complete
    return s


def _measure(impl: str, method: str, variant: str, n: int, out: Any) -> None:
    setup = C.make_setup(C.child_suite())
    exchange = variant == "ping-pong"
    if impl == "ssl":
        cctx, sctx = setup.ssl_client_context(), setup.ssl_server_context()

        def make() -> Any:
            return _ssl_conn(cctx, sctx, exchange)
    else:
        ccfg, scfg = setup.tlskit_client_config(), setup.tlskit_server_config()

        def make() -> Any:
            return _tlskit_conn(ccfg, scfg, exchange)

    for _ in range(20):  # warm up: imports, caches, the allocator's first arenas
        make()
    keep: list[Any] = []
    keep.append(None)  # the list's own growth is not the connections' cost: pre-size it
    keep *= n
    gc.collect()
    top: list[tuple[str, int]] = []
    if method == "tracemalloc":
        tracemalloc.start(1)
        before_snap = tracemalloc.take_snapshot()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss()
    for i in range(n):
        keep[i] = make()
    gc.collect()
    if method == "tracemalloc":
        after = tracemalloc.get_traced_memory()[0]
        stats = tracemalloc.take_snapshot().compare_to(before_snap, "lineno")
        top = [(C.short_path(str(s.traceback[0])), s.size_diff // n) for s in stats[:10] if s.size_diff > 0]
        tracemalloc.stop()
    else:
        after = rss()
    out.send({"impl": impl, "method": method, "variant": variant, "bytes_per_conn": (after - before) / n, "top": top})


def measure(impl: str, method: str, variant: str, n: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # a fresh interpreter and heap for every measurement
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_measure, args=(impl, method, variant, n, child))
    p.start()
    result = parent.recv()
    p.join()
    return dict(result)


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    rows = [
        measure(impl, method, variant, args.n)
        for variant in VARIANTS
        for impl in ("ssl", "tlskit")
        for method in ("rss", "tracemalloc")
    ]
    return {"suite": C.child_suite(), "n": args.n, "results": rows}


def render(results: list[dict[str, Any]]) -> None:
    rows = []
    tops = []
    for res in results:
        by = {(r["impl"], r["method"], r["variant"]): r["bytes_per_conn"] for r in res["results"]}
        for variant in VARIANTS:
            ssl_rss = by[("ssl", "rss", variant)]
            for impl in ("ssl", "tlskit"):
                rss_b, tm_b = by[(impl, "rss", variant)], by[(impl, "tracemalloc", variant)]
                rows.append(
                    [
                        res["suite"],
                        variant,
                        impl,
                        f"{rss_b / 1000:,.1f}",
                        f"{tm_b / 1000:,.1f}",
                        C.fmt_ratio(rss_b / ssl_rss),
                        "—" if impl == "ssl" else ("yes" if max(rss_b, tm_b) <= 8000 else "no"),
                    ]
                )
        for r in res["results"]:
            if r["impl"] == "tlskit" and r["method"] == "tracemalloc":
                tops.append((res["suite"], r["variant"], r["top"]))
    C.print_table(
        f"Idle established server connection, N = {results[0]['n']} (KB = 1000 bytes)",
        ["pass", "state", "impl", "RSS KB/conn", "tracemalloc KB/conn", "RSS vs ssl", "≤ 8 KB"],
        rows,
        notes=[
            "RSS vs ssl = impl / ssl (lower is better)",
            "ssl's tracemalloc figure is only its Python wrappers (OpenSSL allocates natively)",
            "target: tlskit ≤ 8 KB per idle connection (DESIGN §5)",
        ],
    )
    for suite, variant, top in tops[:2]:
        C.print_table(
            f"tlskit retained bytes per connection by allocation site ({suite}, {variant})",
            ["site", "bytes/conn"],
            [[site, f"{size:,}"] for site, size in top],
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("-n", type=int, default=1000, help="connections per measurement")
    args = parser.parse_args(argv)
    if C.child_suite() is not None:
        C.emit_json(run_child(args))
        return
    results = C.run_suites(__file__, C.child_argv(argv), args.suite)
    if args.json:
        C.emit_json({"benchmark": "memory", "results": results})
    else:
        render(results)


if __name__ == "__main__":
    main()
