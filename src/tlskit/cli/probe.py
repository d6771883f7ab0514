"""``tlskit probe``: argparse wiring for :mod:`tlskit.analysis.probe`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ..enums import CipherSuite, NamedGroup
from ..errors import ConfigError
from .argtypes import seconds

EXAMPLES = """\
examples:
  tlskit probe example.com
      every handshake message with its key fields, timings, certificate chain, OCSP staple, tickets
  tlskit probe localhost:8443 --cafile ca.pem --alpn h2 --alpn http/1.1
  tlskit probe 10.0.0.5:443 --sni www.example.com --insecure
      connect to an address, send another name, show the chain without verifying it
  tlskit probe example.com --groups X25519MLKEM768 --suites TLS_AES_256_GCM_SHA384
  tlskit probe example.com --resume --early-data --keylog keys.log
  tlskit probe example.com --json | jq .certificates[0].days_left

exit status: 0 handshake completed, 1 handshake failed, 2 usage error,
3 cannot connect (DNS, TCP, timeout), 4 certificate verification failed.
"""


def _suite(name: str) -> CipherSuite:
    try:
        return CipherSuite[name.upper()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown suite {name!r}; e.g. TLS_AES_128_GCM_SHA256") from None


def _group(name: str) -> NamedGroup:
    for group in NamedGroup:
        if group.name.lower() == name.lower() or (name.lower(), group.name) in (("p-256", "secp256r1"),
                                                                                  ("p-384", "secp384r1")):
            return group
    raise argparse.ArgumentTypeError(f"unknown group {name!r}; e.g. x25519, secp256r1, X25519MLKEM768")


def _csv(kind: Any) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(kind(part) for part in re.split("[,:]", text) if part)  # OpenSSL's ':' or a comma
    return parse


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="HOST[:PORT]", help="server to connect to (default port 443)")
    parser.add_argument("--sni", metavar="NAME", help="server name to send and verify (default: HOST; '' for none)")
    parser.add_argument("--cafile", metavar="FILE", help="PEM CA bundle to verify against (default: system roots)")
    parser.add_argument("--insecure", "-k", action="store_true", help="do not verify the certificate chain")
    parser.add_argument("--timeout", type=seconds, default=10.0, metavar="SECONDS", help="per connection (default 10)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "probe", help="show a TLS 1.3 handshake message by message",
        description="Connect with tlskit's client and show the handshake as it happens.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_options(parser)
    parser.add_argument("--alpn", action="append", default=[], metavar="PROTOCOL", help="offer ALPN (repeatable)")
    parser.add_argument("--suites", "--ciphers", type=_csv(_suite), default=(), metavar="LIST",
                        help="TLS 1.3 suites to offer, comma- or colon-separated")
    parser.add_argument("--groups", type=_csv(_group), default=(), metavar="LIST",
                        help="groups to offer, comma- or colon-separated; the first gets a key share (incl. "
                             "X25519MLKEM768)")
    parser.add_argument("--cert", metavar="FILE", help="client certificate chain (PEM)")
    parser.add_argument("--key", metavar="FILE", help="client private key (PEM; default: --cert)")
    parser.add_argument("--keylog", metavar="FILE", help="append NSS key log lines to FILE (for Wireshark)")
    parser.add_argument("--resume", action="store_true", help="reconnect with a ticket: does resumption work?")
    parser.add_argument("--early-data", action="store_true", help="reconnect sending 0-RTT data: is it accepted?")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.probe import ProbeOptions, parse_target, probe, render_probe, report_json
    from ..keylog import KeyLogFile

    try:
        host, port = parse_target(args.target)
    except ValueError as e:
        print(f"tlskit probe: error: {e}", file=sys.stderr)
        return 2
    if args.key and not args.cert:
        print("tlskit probe: error: --key goes with --cert (the client certificate it belongs to)", file=sys.stderr)
        return 2
    try:
        key_log = KeyLogFile(args.keylog) if args.keylog else None
    except OSError as e:
        print(f"tlskit probe: error: --keylog {args.keylog}: {e.strerror or e} (give a file path to append to)",
              file=sys.stderr)
        return 2
    options = ProbeOptions(host=host, port=port, sni=args.sni, alpn=tuple(args.alpn), suites=args.suites,
                           groups=args.groups, cafile=args.cafile, insecure=args.insecure, client_cert=args.cert,
                           client_key=args.key, key_log=key_log, timeout=args.timeout, resume=args.resume,
                           early_data=args.early_data)
    try:
        report = probe(options)
    except ConfigError as e:
        print(f"tlskit probe: error: {e}", file=sys.stderr)
        return 2
    finally:
        if key_log is not None:
            key_log.close()
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        render_probe(report, print)
    return report.exit_status
