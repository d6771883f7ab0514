"""``tlskit diagnose``: argparse wiring for :mod:`tlskit.analysis.diagnose`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .argtypes import seconds

EXAMPLES = """\
examples:
  tlskit diagnose example.com:443
      run the probes needed to tell causes apart (full handshake, chain check, crafted hellos)
  tlskit diagnose localhost:8443 --cafile ca.pem --cert client.pem --key client.key
  tlskit diagnose --s-client runs.txt
      saved `openssl s_client -connect host:443 ...` output, several runs concatenated
  tlskit diagnose --haproxy /var/log/haproxy.log --json
      HAProxy "SSL handshake failure" lines (fixed format, or an error-log-format with %[ssl_fc_err_str])

Causes: cipher/group mismatch, version mismatch (naming the side that lacks the version), TLS 1.0/1.1
only, expired, not yet valid (clock skew), unknown CA, missing intermediate, hostname mismatch, plain HTTP
on a TLS port, no certificate, client certificate required/rejected, server certificate rejected by the
client (HAProxy logs), client closed the connection during the handshake (HAProxy logs), revoked,
middlebox interference, refused, timeout. In HAProxy logs HAProxy is the server: an alert it logs
(e.g. "tlsv1 alert unknown ca") was sent by the client about HAProxy's certificate.

exit status: 0 no failure found, 1 failures found and explained, 2 usage error,
3 nothing to diagnose (--haproxy: no line of the file is a HAProxy log line), 4 failures found that no rule
explains.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "diagnose", help="find the root cause of TLS handshake failures",
        description="Explain handshake failures: live against a server, or from s_client output or HAProxy logs.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", metavar="HOST[:PORT]", help="server to diagnose live")
    parser.add_argument("--s-client", type=Path, metavar="FILE", help="saved openssl s_client output")
    parser.add_argument("--haproxy", type=Path, metavar="FILE", help="HAProxy log file")
    parser.add_argument("--sni", metavar="NAME", help="live: server name (default: HOST)")
    parser.add_argument("--cafile", metavar="FILE", help="live: PEM CA bundle (default: system roots)")
    parser.add_argument("--cert", metavar="FILE", help="live: client certificate (PEM)")
    parser.add_argument("--key", metavar="FILE", help="live: client key (PEM)")
    parser.add_argument("--timeout", type=seconds, default=5.0, metavar="SECONDS", help="live: per connection")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.diagnose import (
        LiveOptions,
        diagnose_haproxy,
        diagnose_live,
        diagnose_s_client,
        diagnosis_json,
        render_diagnosis,
    )
    from ..analysis.probe import parse_target
    from ..errors import ConfigError

    chosen = [x for x in (args.target, args.s_client, args.haproxy) if x is not None]
    if len(chosen) != 1:
        print("tlskit diagnose: error: give exactly one of HOST[:PORT], --s-client FILE, --haproxy FILE",
              file=sys.stderr)
        return 2
    try:
        if args.s_client is not None:
            diagnosis = diagnose_s_client(_read(args.s_client, "--s-client").read_text(errors="replace"))
        elif args.haproxy is not None:
            with _read(args.haproxy, "--haproxy").open(errors="replace") as fh:
                diagnosis = diagnose_haproxy(fh)
        else:
            host, port = parse_target(args.target)
            diagnosis = diagnose_live(LiveOptions(host=host, port=port, sni=args.sni, cafile=args.cafile,
                                                  client_cert=args.cert, client_key=args.key,
                                                  timeout=args.timeout))
    except (OSError, ValueError, ConfigError) as e:
        print(f"tlskit diagnose: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(diagnosis_json(diagnosis), indent=2))
    else:
        render_diagnosis(diagnosis, print)
    return diagnosis.exit_status


def _read(path: Path, flag: str) -> Path:
    """``path`` if it is a readable file; else ValueError naming the flag, the file and why."""
    try:
        with path.open("rb"):
            return path
    except OSError as e:
        raise ValueError(f"cannot read {flag} {path}: {e.strerror or e}") from None
