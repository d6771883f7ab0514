"""``tlskit``: argparse subcommands; each hands off to the package that does the work."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from ..errors import ConfigError

__all__ = ["main"]

_EXAMPLES = """\
examples:
  tlskit serve                      serve the current directory at https://localhost:8443/
                                    with a self-signed certificate it creates once and reuses
  tlskit serve ./site --port 9443   serve ./site on another port
  tlskit serve --cert fullchain.pem --key privkey.pem --host 0.0.0.0
                                    serve with your own certificate on every interface

Set SSLKEYLOGFILE=/path/keys.log to record session keys for Wireshark.
"""

_SERVE_EXAMPLES = """\
examples:
  tlskit serve
      https://localhost:8443/ from the current directory; prints a ready
      `curl --cacert ...` line for the generated certificate
  tlskit serve public --host 127.0.0.1 --port 0
      any free port (printed on start), IPv4 loopback only
  tlskit serve --cert fullchain.pem --key privkey.pem
      your certificate chain (leaf first) and its PEM private key

Files under ROOT are served for GET and HEAD; directories serve index.html.
Paths leaving ROOT (.., symlinks) and dot-files answer 404.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for usage or configuration errors)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    status: int = args.run(args)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlskit",
        description="TLS 1.3 tools built on tlskit.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="serve a directory over HTTPS (HTTP/1.1)",
        description="A minimal HTTPS static file server on tlskit's asyncio front end.",
        epilog=_SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("root", nargs="?", default=".", type=Path, metavar="ROOT",
                       help="directory to serve (default: the current one)")
    serve.add_argument("--host", default="localhost",
                       help="address or name to listen on (default: localhost, both IPv4 and IPv6)")
    serve.add_argument("--port", type=int, default=8443, help="TCP port; 0 picks a free one (default: 8443)")
    serve.add_argument("--cert", type=Path, metavar="FILE",
                       help="PEM certificate chain, leaf first (default: a self-signed localhost certificate)")
    serve.add_argument("--key", type=Path, metavar="FILE", help="PEM private key for --cert")
    serve.add_argument("--alpn", action="append", metavar="PROTOCOL",
                       help="ALPN protocol to accept; repeat for several (default: http/1.1)")
    serve.add_argument("-q", "--quiet", action="store_true", help="log only warnings (no access log)")
    serve.set_defaults(run=_serve)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from ..serve.app import ServeOptions, prepare, serve

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    options = ServeOptions(root=args.root, host=args.host, port=args.port, cert=args.cert, key=args.key,
                           alpn=tuple(args.alpn or ("http/1.1",)))
    try:
        site = prepare(options)
    except ConfigError as e:
        print(f"tlskit serve: error: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(site, lambda line: print(line, flush=True)))
    except OSError as e:  # the port is taken, the host does not resolve...
        print(f"tlskit serve: error: cannot listen on {args.host} port {args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _version() -> str:
    try:
        return metadata.version("tlskit")
    except metadata.PackageNotFoundError:
        return "unknown"
