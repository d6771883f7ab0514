"""cProfile of tlskit pair handshakes (client and server in memory), to guide optimisation.

    python bench/profile_handshake.py [-n 500] [--top 25] [--sort tottime] [--server-only] [--json]

Runs one untimed warm-up handshake, then ``-n`` full handshakes (ECDSA P-256, x25519,
TLS_AES_128_GCM_SHA256 unless ``--suite`` says otherwise) under cProfile and prints the top functions.
For scale, the same number of ``ssl`` pair handshakes is timed (not profiled) in the same run.
``--server-only`` enables the profiler only around the server's calls.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from typing import Any

import _common as C
from handshake import ssl_batch, tlskit_batch

from tlskit.connection import Connection


def handshakes(ccfg: Any, scfg: Any, n: int, prof: cProfile.Profile, server_only: bool) -> None:
    on, off = (prof.enable, prof.disable) if server_only else (lambda: None, lambda: None)
    if not server_only:
        prof.enable()
    for _ in range(n):
        c = Connection(ccfg)
        on()
        s = Connection(scfg)
        off()
        c.start()
        hello = c.data_to_send()
        on()
        s.receive_data(hello)
        flight = s.data_to_send()
        off()
        c.receive_data(flight)
        fin = c.data_to_send()
        on()
        s.receive_data(fin)
        s.events()
        off()
        c.events()
    if not server_only:
        prof.disable()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumtime", "ncalls"])
    parser.add_argument("--suite", default="aes128", choices=list(C.SUITES))
    parser.add_argument("--server-only", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--dump", help="also write the raw profile here (for snakeviz / pstats)")
    args = parser.parse_args(argv)

    setup = C.make_setup(args.suite)
    ccfg, scfg = setup.tlskit_client_config(), setup.tlskit_server_config()
    prof = cProfile.Profile()
    handshakes(ccfg, scfg, 1, cProfile.Profile(), False)  # warm-up, not recorded
    t0 = time.perf_counter()
    handshakes(ccfg, scfg, args.n, prof, args.server_only)
    profiled = time.perf_counter() - t0
    unprofiled = tlskit_batch(ccfg, scfg, args.n)[0]
    ssl_total, _ = ssl_batch(setup.ssl_client_context(), setup.ssl_server_context(), args.n)
    if args.dump:
        prof.dump_stats(args.dump)

    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    entries = []
    for (filename, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append(
            {
                "function": f"{C.short_path(filename)}:{line}({func})",
                "ncalls": nc,
                "primcalls": cc,
                "tottime_s": tt,
                "cumtime_s": ct,
            }
        )
    key = {"tottime": "tottime_s", "cumtime": "cumtime_s", "ncalls": "ncalls"}[args.sort]
    entries.sort(key=lambda e: e[key], reverse=True)
    entries = entries[: args.top]
    summary = {
        "benchmark": "profile_handshake",
        "suite": setup.iana,
        "n": args.n,
        "server_only": args.server_only,
        "profiled_total_s": total,
        "profiled_wall_s": profiled,
        "tlskit_unprofiled_us_per_pair": unprofiled / args.n * 1e6,
        "ssl_us_per_pair": ssl_total / args.n * 1e6,
        "top": entries,
    }
    if args.json:
        C.emit_json(summary)
        return
    n = args.n
    rows = [
        [
            e["function"],
            f"{e['ncalls'] / n:,.1f}",
            f"{e['tottime_s'] / n * 1e6:,.1f}",
            f"{e['tottime_s'] / total * 100:,.1f}%",
            f"{e['cumtime_s'] / n * 1e6:,.1f}",
        ]
        for e in entries
    ]
    C.print_table(
        f"cProfile, {n} tlskit {'server sides of ' if args.server_only else ''}pair handshakes ({setup.iana}), "
        f"top {args.top} by {args.sort}",
        ["function", "calls/hs", "tottime µs/hs", "% of total", "cumtime µs/hs"],
        rows,
        notes=[
            f"profiled: {total / n * 1e6:,.0f} µs/handshake (profiler overhead inflates small Python calls); "
            f"unprofiled tlskit pair: {unprofiled / n * 1e6:,.0f} µs; ssl pair: {ssl_total / n * 1e6:,.0f} µs"
        ],
    )


if __name__ == "__main__":
    main()
