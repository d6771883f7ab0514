"""``tlskit ca``: a private CA in a directory (tlskit.pki.ca) and its OCSP responder (tlskit.pki.ocsp_http)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import errno
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from cryptography import x509

from ..errors import ConfigError
from .argtypes import count, port_number

__all__ = ["register"]

_EXAMPLES = """\
examples:
  tlskit ca init ./ca --ocsp-url http://127.0.0.1:8080/ --crl-url http://127.0.0.1:8080/crl.der
  tlskit ca issue ./ca localhost 127.0.0.1                 server certificate -> ./ca/issued/localhost.pem/.key
  tlskit ca issue ./ca web --client --server --spiffe spiffe://cluster.local/ns/default/sa/web --out web
  tlskit ca list ./ca
  tlskit ca revoke ./ca 4F1A...C3 --reason keyCompromise   (or the certificate file, PEM or DER)
  tlskit ca crl ./ca                                        writes ./ca/crl.pem and ./ca/crl.der
  tlskit ca ocsp-serve ./ca --port 8080                     OCSP (GET/POST) and /crl.der

Give ./ca/root.pem to peers as their CA file. Private keys are written 0600.

exit status: 0 done, 2 usage error or a CA directory, file or address that
cannot be used (one line on stderr; list --json then prints nothing on
stdout); ocsp-serve runs until interrupted (130 on Ctrl-C).
"""


def register(sub: Any) -> None:
    """Register ``ca`` and its subcommands on the top-level subparsers object."""
    ca = sub.add_parser("ca", help="run a private certificate authority (issue, revoke, CRL, OCSP)",
                        description="A private CA in a directory, like cfssl.", epilog=_EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ca.set_defaults(run=lambda args: (ca.print_help(), 2)[1])
    cmds = ca.add_subparsers(dest="ca_command", title="commands", metavar="COMMAND")

    p = cmds.add_parser("init", help="create a root CA (and optionally an intermediate) in DIR")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--name", type=_ca_name, default="tlskit private CA",
                   help="CA name used in the certificates' CN (at most 48 characters)")
    p.add_argument("--ocsp-url", metavar="URL", help="OCSP responder URL put into issued certificates (AIA)")
    p.add_argument("--crl-url", metavar="URL", help="CRL URL put into issued certificates (distribution point)")
    p.add_argument("--rsa", action="store_true", help="RSA keys (3072-bit CAs, 2048-bit leaves) instead of ECDSA P-256")
    p.add_argument("--intermediate", action="store_true", help="issue from an intermediate CA under the root")
    p.set_defaults(run=_init)

    p = cmds.add_parser("issue", help="issue a certificate for NAMEs (DNS names, IP addresses, URIs)")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--server", action="store_true", help="for TLS servers (the default unless --client alone)")
    p.add_argument("--client", action="store_true", help="for TLS clients (mutual TLS)")
    p.add_argument("--spiffe", metavar="ID", help="add a SPIFFE ID URI SAN, e.g. spiffe://cluster.local/ns/x/sa/y")
    p.add_argument("--days", type=count(1, 36500), default=90, help="lifetime in days (default: 90)")
    p.add_argument("--backdate", type=count(0, 525600), default=5, metavar="MINUTES",
                   help="set notBefore this far in the past, for peers with slow clocks (default: 5)")
    p.add_argument("--rsa", action="store_true", help="an RSA-2048 key (default: the CA's key type)")
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX.pem and PREFIX.key (default: DIR/issued/NAME)")
    p.set_defaults(run=_issue)

    p = cmds.add_parser("revoke", help="revoke a certificate by serial (hex) or certificate file")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("serial", metavar="SERIAL", help="hex serial as `ca list` shows it, or a certificate file")
    p.add_argument("--reason", default="unspecified",
                   help="keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, "
                        "certificateHold, privilegeWithdrawn, aACompromise or unspecified (default)")
    p.set_defaults(run=_revoke)

    p = cmds.add_parser("crl", help="sign a fresh CRL into DIR/crl.pem and DIR/crl.der")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--days", type=count(1, 3650), default=7, help="days until nextUpdate (default: 7)")
    p.set_defaults(run=_crl)

    p = cmds.add_parser("list", help="list issued certificates")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    p.set_defaults(run=_list)

    p = cmds.add_parser("ocsp-serve", help="run the OCSP responder (and serve /crl.der) over HTTP")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on, IPv4 or IPv6 (e.g. ::1; default: 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8080, help="TCP port; 0 picks a free one (default: 8080)")
    p.add_argument("--delegated", action="store_true",
                   help="sign with a delegated OCSP responder certificate instead of the CA key")
    p.add_argument("--validity", type=count(1, 525600), default=60, metavar="MINUTES",
                   help="thisUpdate to nextUpdate of each response (default: 60)")
    p.set_defaults(run=_ocsp_serve)


_BIND_FIXES = {  # as tlskit.serve.listeners says them
    errno.EADDRINUSE: " (another process listens there: `ss -ltnp` names it; or choose another port)",
    errno.EADDRNOTAVAIL: " (not an address of this machine: `ip addr` lists them; 0.0.0.0 or :: is every one)",
    errno.EACCES: " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
}


def _ca_name(text: str) -> str:
    """The CA's name: its certificates' CN is "NAME root" / "NAME OCSP responder", at most 64 characters."""
    if not 1 <= len(text) <= 48:
        raise argparse.ArgumentTypeError(f"{len(text)} characters: give 1 to 48 (the CN of the CA's certificates)")
    return text


def _fail(command: str, error: Exception) -> int:
    print(f"tlskit ca {command}: error: {error}", file=sys.stderr)
    return 2


def _init(args: argparse.Namespace) -> int:
    from ..pki.ca import CertificateAuthority

    try:
        ca = CertificateAuthority.init(args.dir, name=args.name, key_type="rsa" if args.rsa else "ec",
                                       intermediate=args.intermediate, ocsp_url=args.ocsp_url,
                                       crl_url=args.crl_url)
    except (ConfigError, OSError) as exc:
        return _fail("init", exc)
    print(f"created CA in {ca.directory}")
    print(f"  trust anchor (give to peers): {ca.directory / 'root.pem'}")
    if ca.chain:
        print(f"  issuing intermediate:         {ca.directory / 'intermediate.pem'}")
    print(f"next: tlskit ca issue {ca.directory} localhost 127.0.0.1")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from ..pki.ca import CertificateAuthority, format_serial

    try:
        ca = CertificateAuthority(args.dir)
        issued = ca.issue(args.names, server=True if args.server else None, client=args.client,
                          spiffe=args.spiffe, days=args.days, backdate=dt.timedelta(minutes=args.backdate),
                          key_type="rsa" if args.rsa else None, out=args.out)
    except (ConfigError, OSError) as exc:
        return _fail("issue", exc)
    cert = issued.certificate
    print(f"issued serial {format_serial(cert.serial_number)}, valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z to "
          f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
    print(f"  certificate chain: {issued.chain_path}")
    print(f"  private key:       {issued.key_path}")
    print(f"  trust anchor:      {ca.directory / 'root.pem'}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from ..pki.ca import CertificateAuthority, parse_reason

    try:
        ca = CertificateAuthority(args.dir)
        serial = _serial_or_certificate(args.serial)
        record = ca.revoke(serial, parse_reason(args.reason))
        ca.crl()
    except (ConfigError, OSError, ValueError) as exc:
        return _fail("revoke", exc)
    print(f"revoked serial {record.serial} at {record.revoked_at} ({record.reason}); "
          f"CRL updated: {ca.directory / 'crl.pem'}")
    return 0


def _serial_or_certificate(text: str) -> int:
    """The serial ``ca revoke`` was given: hex as ``ca list`` shows it, or that of a certificate file (PEM or
    DER). A path that names no file is said to be missing, not to be a bad serial number."""
    from ..pki.ca import parse_serial

    path = Path(text)
    if path.is_file():
        data = path.read_bytes()
        try:
            if b"-----BEGIN" in data:
                return x509.load_pem_x509_certificates(data)[0].serial_number
            return x509.load_der_x509_certificate(data).serial_number
        except ValueError as exc:
            raise ConfigError(f"{text}: not a PEM or DER certificate ({exc})") from None
    if path.exists():
        raise ConfigError(f"{text}: not a certificate file")
    if "/" in text or path.suffix.lower() in (".pem", ".crt", ".cer", ".der"):
        raise ConfigError(f"{text}: no such certificate file")
    try:
        return parse_serial(text)
    except ConfigError:
        raise ConfigError(f"{text!r} is not a hexadecimal serial number (see `tlskit ca list DIR`) "
                          "and no certificate file of that name exists") from None


def _crl(args: argparse.Namespace) -> int:
    from ..pki.ca import CertificateAuthority

    try:
        crl = CertificateAuthority(args.dir).crl(days=args.days)
    except (ConfigError, OSError) as exc:
        return _fail("crl", exc)
    print(f"CRL with {len(crl)} revoked certificate(s), next update {crl.next_update_utc:%Y-%m-%d %H:%M}Z: "
          f"{args.dir / 'crl.pem'} and {args.dir / 'crl.der'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..pki.ca import CertificateAuthority

    try:
        records = CertificateAuthority(args.dir).records()
    except (ConfigError, OSError) as exc:
        return _fail("list", exc)
    now = dt.datetime.now(dt.UTC)
    if args.json:
        print(json.dumps([{**dataclasses.asdict(r), "status": r.status(now)} for r in records], indent=1))
        return 0
    print(f"{'SERIAL':<42} {'STATUS':<8} {'NOT AFTER':<17} {'USE':<13} NAMES")
    for r in records:
        print(f"{r.serial:<42} {r.status(now):<8} {r.not_after[:16].replace('T', ' '):<17} "
              f"{','.join(r.profiles):<13} {' '.join(r.names)}")
    return 0


def _ocsp_serve(args: argparse.Namespace) -> int:
    from ..pki.ca import CertificateAuthority
    from ..pki.ocsp_http import OCSPHTTPServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        ca = CertificateAuthority(args.dir)
        responder = ca.responder(delegated=args.delegated, validity=dt.timedelta(minutes=args.validity))
        routes = {"/crl.der": ("application/pkix-crl", ca.current_crl_der)}
    except (ConfigError, OSError) as exc:
        return _fail("ocsp-serve", exc)
    try:
        server = OCSPHTTPServer(responder, host=args.host, port=args.port, routes=routes)
    except OSError as exc:  # worded as `tlskit serve` words the same mistake
        where = f"[{args.host}]" if ":" in args.host else args.host
        print(f"tlskit ca ocsp-serve: error: cannot listen on {where} port {args.port}: {exc.strerror or exc}"
              f"{_BIND_FIXES.get(exc.errno or 0, '')}", file=sys.stderr)
        return 2
    signer = "delegated responder certificate" if args.delegated else "the CA key"
    print(f"OCSP responder for {ca.issuer.subject.rfc4514_string()} on {server.url}/ (signed by {signer}); "
          f"CRL at {server.url}/crl.der", flush=True)
    try:
        server.start()
        threading.Event().wait()
    except KeyboardInterrupt:
        return 130
    finally:
        server.close()
    return 0
