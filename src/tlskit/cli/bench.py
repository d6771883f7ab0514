"""``tlskit bench``: argparse wiring for :mod:`tlskit.analysis.bench`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .argtypes import count, seconds

EXAMPLES = """\
examples:
  tlskit bench localhost:8443 --cafile ca.pem --duration 10
      full handshakes for 10 s, one at a time; rate and latency percentiles
  tlskit bench localhost:8443 -k --concurrency 4 --count 2000 --png bench.png --html bench.html
  tlskit bench localhost:8443 -k --compare localhost:9443 --duration 20
      two servers interleaved connection by connection; prints the rate ratio

Bounded by --count and --duration (at most 100000 handshakes and 600 s). Only benchmark servers you run.
--mode resumed times resumed handshakes (a ticket from a first, untimed one); --mode 0rtt sends the request
as 0-RTT data and reports how often the server accepted it.

exit status: 0 every handshake succeeded, 1 some failed, 2 usage error (or --png/--html cannot be written:
checked before the run; a failure after it prints the results first), 3 none succeeded (with --mode
resumed/0rtt: also when the first handshake, which fetches the ticket, fails; one line on stderr, no JSON).
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "bench", help="handshake rate and latency (like openssl s_time)",
        description="Measure TLS 1.3 handshakes per second and their latency.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="HOST[:PORT]", help="server to benchmark (default port 443)")
    parser.add_argument("--compare", metavar="HOST[:PORT]", help="a second server, interleaved with the first")
    parser.add_argument("--sni", metavar="NAME", help="server name (default: HOST)")
    parser.add_argument("--cafile", metavar="FILE", help="PEM CA bundle (default: system roots)")
    parser.add_argument("--insecure", "-k", action="store_true", help="do not verify certificates")
    parser.add_argument("--concurrency", "-c", type=count(1, 256), default=1, metavar="N",
                        help="parallel workers (default 1, at most 256)")
    parser.add_argument("--duration", "-d", type=seconds, default=10.0, metavar="SECONDS",
                        help="time bound (default 10)")
    parser.add_argument("--count", "-n", type=count(1, 10_000_000), metavar="N",
                        help="handshake bound (all targets together)")
    parser.add_argument("--timeout", type=seconds, default=5.0, metavar="SECONDS", help="per handshake (default 5)")
    parser.add_argument("--mode", choices=("full", "resumed", "0rtt"), default="full", help="handshake kind")
    parser.add_argument("--png", type=Path, metavar="FILE", help="write a plot of rate and latency over time")
    parser.add_argument("--html", type=Path, metavar="FILE", help="write a small HTML report (with --png, or "
                                                                  "next to it: the same name with .png)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.bench import (
        BenchOptions,
        PrimingError,
        Target,
        bench_json,
        render_bench,
        run_bench,
        write_report,
    )
    from ..analysis.probe import parse_target
    from ..config import ClientConfig
    from ..errors import ConfigError
    from ..pki.verify import TrustStore

    try:
        targets = []
        for text in filter(None, (args.target, args.compare)):
            host, port = parse_target(text)
            config = ClientConfig(server_name=args.sni or host, verify_peer=not args.insecure,
                                  trust=TrustStore.from_pem_file(args.cafile) if args.cafile and not args.insecure
                                  else None)
            targets.append(Target(host=host, port=port, config=config))
    except (ValueError, ConfigError) as e:
        print(f"tlskit bench: error: {e}", file=sys.stderr)
        return 2
    png = args.png or (args.html.with_suffix(".png") if args.html else None)
    for out in filter(None, (png, args.html)):
        if not out.parent.is_dir():
            print(f"tlskit bench: error: {out}: directory {out.parent} does not exist", file=sys.stderr)
            return 2
        if (problem := _cannot_write(out)) is not None:
            print(f"tlskit bench: error: cannot write {out}: {problem}", file=sys.stderr)
            return 2
    options = BenchOptions(targets=tuple(targets), concurrency=args.concurrency, duration=args.duration,
                           count=args.count, timeout=args.timeout, mode=args.mode)
    try:
        if args.json or not sys.stderr.isatty():
            results = run_bench(options)
        else:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            total = float(args.count) if args.count else args.duration
            with Progress(TextColumn("handshakes {task.fields[done]}"), BarColumn(), TimeElapsedColumn(),
                          transient=True) as progress:
                task = progress.add_task("bench", total=total, done=0)
                results = run_bench(options, lambda done, elapsed: progress.update(
                    task, completed=done if args.count else elapsed, done=done))
    except PrimingError as e:  # no handshake was timed: as when none succeeded
        print(f"tlskit bench: error: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(bench_json(results), indent=2))
    else:
        render_bench(results, print)
    if png is not None:  # after the results, so that a report that cannot be written does not lose them
        try:
            write_report(results, png, args.html)
        except OSError as e:
            print(f"tlskit bench: error: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
            return 2
    if all(not r.samples for r in results):
        return 3
    return 1 if any(r.errors for r in results) else 0


def _cannot_write(path: Path) -> str | None:
    """Why *path* cannot be opened for writing (None if it can); a file created to find out is removed."""
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    if not existed:
        path.unlink(missing_ok=True)
    return None
