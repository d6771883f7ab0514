"""``tlskit decrypt``: argparse wiring for :mod:`tlskit.analysis.decrypt`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  SSLKEYLOGFILE=keys.log curl https://localhost:8443/     # any client or server that logs keys
  tcpdump -i lo -w tls.pcap 'tcp port 8443'
  tlskit decrypt tls.pcap --keylog keys.log
      handshake messages (with key fields) and application data, per TCP stream
  tlskit decrypt tls.pcapng --keylog keys.log --json | jq '.[].messages[].type'
  tlskit decrypt tls.pcap --keylog keys.log --write-dir out/
      also writes out/stream-N-client.bin and out/stream-N-server.bin

0-RTT (CLIENT_EARLY_TRAFFIC_SECRET) and post-KeyUpdate records are decrypted; TLS 1.2 streams are listed
but not decrypted.

exit status: 0 every TLS record decrypted, 1 some record could not be (missing key, capture gap, a capture
cut short or of one direction only; a key log without one NSS key log line is said on stderr), 2 usage error or
unreadable file, 3 no TLS connection in the capture.
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "decrypt",
        help="decrypt TLS 1.3 in a pcap/pcapng capture with an NSS key log",
        description="Reassemble the TCP streams of a capture, match them to key log entries by client random "
                    "and decrypt every TLS 1.3 record.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("capture", type=Path, metavar="CAPTURE", help="pcap or pcapng file")
    parser.add_argument("--keylog", type=Path, required=True, metavar="FILE",
                        help="NSS key log (SSLKEYLOGFILE format)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--write-dir", type=Path, metavar="DIR",
                        help="write each direction's decrypted application data into DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.decrypt import decrypt_capture, exit_status, render_text, stream_json, write_payloads
    from ..analysis.pcap import CaptureError
    from ..analysis.records import parse_key_log

    try:
        key_log = args.keylog.read_text(encoding="ascii", errors="replace")
    except OSError as e:
        print(f"tlskit decrypt: error: cannot read key log {args.keylog}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        streams = decrypt_capture(args.capture, key_log)
    except CaptureError as e:
        print(f"tlskit decrypt: error: {e}", file=sys.stderr)
        return 2
    if not parse_key_log(key_log):  # else every stream only says "no key log entry for client random ..."
        print(f"tlskit decrypt: no NSS key log lines in {args.keylog} (expected lines like "
              "CLIENT_HANDSHAKE_TRAFFIC_SECRET <random> <secret>); nothing can be decrypted", file=sys.stderr)
    if args.write_dir is not None:
        try:
            for path in write_payloads(streams, args.write_dir):
                print(f"wrote {path}", file=sys.stderr)
        except OSError as e:
            print(f"tlskit decrypt: error: --write-dir {args.write_dir}: {e.strerror or e} (give a directory)",
                  file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps([stream_json(s) for s in streams if s.is_tls], indent=2))
    else:
        render_text(streams, print)
    return exit_status(streams)
