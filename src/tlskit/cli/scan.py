"""``tlskit scan``: argparse wiring for :mod:`tlskit.analysis.scan`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .argtypes import count, seconds

EXAMPLES = """\
examples:
  tlskit scan example.com
      versions TLS 1.0-1.3, TLS 1.3 suites, groups (incl. X25519MLKEM768), signature schemes,
      HelloRetryRequest, TLS 1.2 suites in server order, ALPN, stapling, tickets, certificate; a grade
  tlskit scan localhost:8443 --cafile ca.pem
  tlskit scan 192.0.2.10:443 --sni www.example.com --max-connections 20 --timeout 3
  tlskit scan example.com --json | jq .grade

A scan opens at most --max-connections connections (default 60), each bounded by --timeout. Checks left
when the budget runs out are listed as not tested and do not count as passes: the grade is shown as
provisional ("at best"), JSON has "grade_complete": false, and an A or B exits 4. So is the certificate of a
server tlskit's client cannot finish a handshake with (one that takes only a CCM suite or X448).

exit status: 0 grade A or B, 1 grade C or worse (even if incomplete: untested checks can only lower it),
2 usage error, 3 nothing answered TLS (including a name that does not resolve, as for probe),
4 grade A or B so far but incomplete (connection budget reached, or the certificate not checked).
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "scan", help="enumerate the versions, suites, groups and schemes a server accepts",
        description="Enumerate what a TLS server accepts with a bounded number of crafted handshakes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="HOST[:PORT]", help="server to scan (default port 443)")
    parser.add_argument("--sni", metavar="NAME", help="server name to send (default: HOST; '' for none)")
    parser.add_argument("--cafile", metavar="FILE", help="PEM CA bundle to check the chain against")
    parser.add_argument("--timeout", type=seconds, default=5.0, metavar="SECONDS", help="per connection (default 5)")
    parser.add_argument("--max-connections", type=count(1, 10_000), default=60, metavar="N", help="connection budget")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.probe import parse_target
    from ..analysis.scan import ScanOptions, render_scan, scan, scan_json
    from ..errors import ConfigError

    try:
        host, port = parse_target(args.target)
    except ValueError as e:
        print(f"tlskit scan: error: {e}", file=sys.stderr)
        return 2
    options = ScanOptions(host=host, port=port, sni=args.sni, cafile=args.cafile, timeout=args.timeout,
                          max_connections=max(1, args.max_connections))
    progress = None if args.json or not sys.stderr.isatty() else (
        lambda step: print(f"... {step}", file=sys.stderr))
    try:
        report = scan(options, progress)
    except ConfigError as e:  # --cafile: found before any connection
        print(f"tlskit scan: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(scan_json(report), indent=2))
    else:
        render_scan(report, print)
    return report.exit_status
