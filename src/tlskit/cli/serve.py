"""``tlskit serve``: flags for the common cases; ``--config site.toml`` for the rest (README "Serving")."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .argtypes import port_number, seconds

__all__ = ["register"]

_SERVE_EXAMPLES = """\
examples:
  tlskit serve
      https://localhost:8443/ from the current directory, with a certificate from a
      development CA made once in your data directory; prints a ready `curl --cacert ...` line
  tlskit serve public --host 127.0.0.1 --port 0 --workers 1
      any free port (printed on start), IPv4 loopback only, one process
  tlskit serve --cert fullchain.pem --key privkey.pem --host 0.0.0.0 --port 443
      your certificate chain (leaf first) and its PEM private key, on every IPv4 address
  tlskit serve --proxy http://127.0.0.1:8080 --metrics-port 9100
      HTTPS in front of a local HTTP/1.1 app, Prometheus metrics on http://127.0.0.1:9100/metrics
  tlskit serve --early-data --ticket-rotate 1h
      0-RTT for resumed clients (GET/HEAD/OPTIONS only; others get 425 Too Early), ticket keys
      made in memory and rotated hourly
  tlskit serve --workers 4 --early-data --redis redis://10.0.0.5:6379/0
      a fleet node: ticket keys and the 0-RTT replay set shared in Redis
  tlskit serve --cert web.pem --key web.key --client-ca ca/root.pem --allow-spiffe 'spiffe://cluster.local/ns/*/sa/web'
      mutual TLS: only clients with a certificate from ca/root.pem and an allowed SPIFFE ID
  tlskit serve --config site.toml
      listeners, certificates per server name, routes, limits: see the README's "Serving"

Flags override the config file. SIGHUP (or a changed certificate file) reloads; a config that does not
load is logged and the running one kept. SIGTERM finishes requests in flight, then exits.
Set SSLKEYLOGFILE=/path/keys.log to record session keys for Wireshark.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="HTTPS server: static files, reverse proxy, SNI, reload, workers, metrics",
        description="A production HTTPS server (HTTP/1.1, and HTTP/2 with --alpn h2) on tlskit's asyncio front end.",
        epilog=_SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("root", nargs="?", type=Path, metavar="ROOT",
                       help="directory to serve (default: the config's root, else the current directory)")
    serve.add_argument("-c", "--config", type=Path, metavar="FILE", help="TOML configuration file")
    serve.add_argument("--host", help="address or name to listen on (default: localhost, IPv4 and IPv6)")
    serve.add_argument("--port", type=port_number, help="TCP port, for every [[listen]] of a config; 0 picks a free "
                       "one (default: 8443)")
    serve.add_argument("--reuse-port", action="store_true", default=None,
                       help="set SO_REUSEPORT so other servers can share the port")
    serve.add_argument("--cert", type=Path, metavar="FILE",
                       help="PEM certificate chain, leaf first (default: the development CA's localhost one)")
    serve.add_argument("--key", type=Path, metavar="FILE", help="PEM private key for --cert")
    serve.add_argument("--alpn", action="append", metavar="PROTOCOL", choices=("h2", "http/1.1"),
                       help="ALPN protocol to accept, in preference order; repeat for several (default: http/1.1). "
                            "HTTP/2 is opt-in: --alpn h2 --alpn http/1.1")
    serve.add_argument("--ciphers", "--suites", metavar="SUITES",
                       help="TLS 1.3 suites in order, colon- or comma-separated (e.g. TLS_AES_256_GCM_SHA384)")
    serve.add_argument("--groups", metavar="GROUPS",
                       help="key exchange groups, colon- or comma-separated (default: X25519MLKEM768:x25519:...)")
    serve.add_argument("--proxy", metavar="URL", help="forward every request to this http:// upstream")
    serve.add_argument("--listing", action="store_true", default=None,
                       help="list directories that have no index.html")
    serve.add_argument("-w", "--workers", type=_workers, metavar="N",
                       help="worker processes sharing the port (default: the number of cores)")
    serve.add_argument("--metrics-port", type=port_number, metavar="PORT",
                       help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics")
    serve.add_argument("--metrics-host", metavar="ADDRESS", help="address for the metrics port (default 127.0.0.1)")
    serve.add_argument("--log-json", action="store_true", default=None, help="log one JSON object per line")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false", default=None,
                       help="do not log each request")
    serve.add_argument("--ktls", choices=("off", "auto", "require"),
                       help="kernel TLS TX and sendfile for static files (default auto; require: refuse to "
                            "start without it)")
    tls = serve.add_argument_group("session tickets and 0-RTT")
    tls.add_argument("--ticket-key", dest="ticket_keys", action="append", type=Path, metavar="FILE",
                     help="nginx-format ticket key file (80 bytes, `tlskit stek new`); repeat: the first "
                          "encrypts, all decrypt (default: a key made at start)")
    tls.add_argument("--ticket-rotate", type=_duration, metavar="INTERVAL",
                     help="make ticket keys in memory and rotate them every INTERVAL (1h..24h, shorter than "
                          "the 2 h ticket lifetime), e.g. 1h")
    tls.add_argument("--early-data", action="store_true", default=None,
                     help="accept 0-RTT data from resumed clients (RFC 8470: GET/HEAD/OPTIONS only, others "
                          "425 Too Early; proxied requests get Early-Data: 1)")
    tls.add_argument("--early-data-window", type=seconds, metavar="SECONDS",
                     help="0-RTT freshness window: ticket-age tolerance, how long (twice it; three times with "
                          "--redis) a ClientHello is remembered and 0-RTT refused after a start (RFC 8446 §8.2; "
                          "default 10)")
    tls.add_argument("--redis", metavar="URL",
                     help="share ticket keys and the 0-RTT replay set with other servers through Redis "
                          "(redis://host:port/db; with --ticket-key files, only the replay set); without Redis a "
                          "node keeps serving and refuses 0-RTT")
    pki = serve.add_argument_group("OCSP stapling and client certificates")
    pki.add_argument("--no-stapling", dest="stapling", action="store_false", default=None,
                     help="do not staple OCSP responses (default: staple when the certificate names a responder)")
    pki.add_argument("--staple-file", type=Path, metavar="FILE",
                     help="staple this DER OCSP response (re-read when it changes), like nginx ssl_stapling_file")
    pki.add_argument("--client-ca", type=Path, metavar="FILE",
                     help="PEM CA certificates that issue client certificates (mutual TLS)")
    pki.add_argument("--client-crl", type=Path, action="append", metavar="FILE",
                     help="CRLs of the client CAs (DER or PEM; repeatable), e.g. crl.pem from `tlskit ca crl`: as "
                          "nginx's ssl_crl, each certificate of a client's chain needs its issuer's current CRL "
                          "(an intermediate's and the root's); revoked ones are refused; re-read when it changes")
    pki.add_argument("--verify-client", choices=("optional", "required"),
                     help="ask for a client certificate, or insist on one (default with --client-ca: required)")
    pki.add_argument("--allow-spiffe", action="append", metavar="PATTERN",
                     help="only admit clients with this SPIFFE ID, e.g. 'spiffe://cluster.local/ns/*/sa/web'; "
                          "repeat for several")
    serve.add_argument("-q", "--quiet", action="store_true", help="log only warnings (no access log)")
    serve.set_defaults(run=_serve)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _workers(text: str) -> int:
    value = _positive(text)
    if value > 1024:
        raise argparse.ArgumentTypeError(f"{value} workers: at most 1024 (one per core is the usual choice)")
    return value


def _duration(text: str) -> float:
    from .stek import parse_duration

    return parse_duration(text)


def _serve(args: argparse.Namespace) -> int:
    from ..serve.app import run
    from ..serve.settings import Flags

    flags = Flags(
        config=args.config, root=args.root, host=args.host, port=args.port, reuse_port=args.reuse_port,
        cert=args.cert, key=args.key, alpn=tuple(args.alpn) if args.alpn else None,
        cipher_suites=tuple(filter(None, re.split("[:,]", args.ciphers))) if args.ciphers else None,
        groups=tuple(filter(None, re.split("[:,]", args.groups))) if args.groups else None,
        proxy=args.proxy, listing=args.listing, workers=args.workers, metrics_port=args.metrics_port,
        metrics_host=args.metrics_host, log_json=args.log_json, access_log=args.access_log, ktls=args.ktls,
        ticket_keys=tuple(args.ticket_keys) if args.ticket_keys else None, ticket_rotate=args.ticket_rotate,
        early_data=args.early_data, early_data_window=args.early_data_window, redis=args.redis,
        stapling=args.stapling, staple_file=args.staple_file,
        client_ca=args.client_ca, client_crl=tuple(args.client_crl) if args.client_crl else None,
        verify_client=args.verify_client,
        allow_spiffe=tuple(args.allow_spiffe) if args.allow_spiffe else None,
    )
    return run(flags, quiet=args.quiet)
