"""``tlskit stek``: session ticket encryption key files (nginx format) for one server or a fleet."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tickets.files import (
    CURRENT,
    key_dir_files,
    read_key_file,
    rotate_key_dir,
    write_key_file,
)
from ..tickets.files import (
    file_mode as _file_mode,
)
from ..tickets.keyring import TicketKey

_EXAMPLES = """\
examples:
  tlskit stek new /etc/tlskit/stek/current.key
      one key file, mode 0600 (nginx: ssl_session_ticket_key FILE;)
  tlskit stek rotate /etc/tlskit/stek
      current.key -> previous.key, a new current.key (next.key, if present,
      becomes current and is replaced). From cron, hourly, reloading nginx
      only when the keys changed (tlskit serve reloads by itself):
      0 * * * *  tlskit stek rotate /etc/tlskit/stek --min-age 50m \\
                     --on-rotate 'systemctl reload nginx'
  tlskit stek show /etc/tlskit/stek --json
      key names and ages; never key bytes

A ticket opens while its key is current or previous: rotate more often than
the ticket lifetime (RFC 8446 caps that at 7 days), and reload the servers.

exit status: 0 done (rotate: also when skipped by --min-age or by another
run's lock), 1 the --on-rotate command failed (the keys were rotated),
2 usage error or a key file or directory that cannot be used (one line
each on stderr; show --json then prints nothing on stdout).
"""

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``1d`` → seconds (argparse type)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration like 90s, 30m, 1h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stek = sub.add_parser(
        "stek",
        help="make, rotate and inspect session ticket key files",
        description="Session ticket encryption keys in nginx's ssl_session_ticket_key format (80 bytes).",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stek.set_defaults(run=lambda args: _usage(stek))
    cmds = stek.add_subparsers(dest="stek_command", title="commands", metavar="COMMAND")

    new = cmds.add_parser("new", help="write a new key file (mode 0600)")
    new.add_argument("file", type=Path, metavar="FILE")
    new.add_argument("--force", action="store_true", help="replace FILE if it exists (atomically)")
    new.set_defaults(run=_new)

    rotate = cmds.add_parser("rotate", help="current.key -> previous.key, new current.key (atomic, cron-safe)")
    rotate.add_argument("dir", type=Path, metavar="DIR")
    rotate.add_argument("--min-age", type=parse_duration, default=0.0, metavar="DURATION",
                        help="skip unless current.key is at least this old (e.g. 50m), so overlapping or "
                             "repeated cron runs rotate once")
    rotate.add_argument("--on-rotate", metavar="COMMAND",
                        help="run this shell command after a rotation, not when it is skipped (e.g. "
                             "'systemctl reload nginx'); its failure is the exit status")
    rotate.set_defaults(run=_rotate)

    show = cmds.add_parser("show", help="key names and ages (never key bytes)")
    show.add_argument("paths", nargs="+", type=Path, metavar="DIR|FILE")
    show.add_argument("--json", action="store_true", help="one JSON document on stdout")
    show.set_defaults(run=_show)


def _fail(command: str, error: Exception) -> int:
    print(f"tlskit stek {command}: error: {error}", file=sys.stderr)
    return 2


def _new(args: argparse.Namespace) -> int:
    key = TicketKey.generate(os.urandom)
    try:
        write_key_file(args.file, key, force=args.force)
    except ConfigError as e:
        return _fail("new", e)
    finally:
        key.wipe()
    print(f"wrote {args.file} (key name {key.name.hex()}, 80 bytes, mode 0600)")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    try:
        result = rotate_key_dir(args.dir, min_age=args.min_age)
    except ConfigError as e:
        return _fail("rotate", e)
    if not result.rotated:
        print(f"{args.dir}: not rotated: {result.skipped}")
        return 0
    retired = f", previous {result.retired.hex()}" if result.retired else ""
    print(f"{args.dir}: rotated: current {(result.current or b'').hex()}{retired}", flush=True)
    if args.on_rotate:
        hook = subprocess.run(args.on_rotate, shell=True, check=False)  # the operator's own command line
        if hook.returncode != 0:
            print(f"tlskit stek rotate: error: --on-rotate command exited with status {hook.returncode} "
                  "(the keys were rotated; servers not reloaded may stop resuming tickets of the retired key)",
                  file=sys.stderr)
            return 1
    return 0


def _show(args: argparse.Namespace) -> int:
    now = time.time()
    rows: list[dict[str, Any]] = []
    status = 0
    for path in args.paths:
        try:
            if path.is_dir():
                files = key_dir_files(path)
                if not files:
                    raise ConfigError(f"{path}: no key files; run `tlskit stek rotate {path}`")
                entries = [(slot.removesuffix(".key"), p, slot == CURRENT) for slot, p in files]
            elif not path.exists() and not path.is_symlink():
                raise ConfigError(f"{path}: no such key file or directory; make a rotation directory with "
                                  f"`mkdir -m 700 {path} && tlskit stek rotate {path}`, or one key file with "
                                  f"`tlskit stek new {path}`")
            else:
                entries = [("file", path, not rows)]
            for role, p, encrypts in entries:
                rows.append(_describe(role, p, encrypts, now))
        except ConfigError as e:
            print(f"tlskit stek show: error: {e}", file=sys.stderr)
            status = 2
    if args.json:
        if status == 0:  # like the other tools' --json: no document rather than one that reads "no keys"
            print(json.dumps(rows, indent=2))
        return status
    for row in rows:
        warn = "  (readable by others: chmod 600)" if int(row["mode"], 8) & 0o077 else ""
        print(f"{row['role']:<9} {row['name']}  {row['bytes']} bytes  age {_age(row['age_seconds']):>7}  "
              f"{'encrypts' if row['encrypts'] else 'decrypts'}  {row['mode']}  {row['path']}{warn}")
    return status


def _describe(role: str, path: Path, encrypts: bool, now: float) -> dict[str, Any]:
    key = read_key_file(path)
    try:
        return {
            "path": str(path), "role": role, "name": key.name.hex(), "bytes": 80 if len(key.aes_key) == 32 else 48,
            "created": key.created_at, "age_seconds": round(max(0.0, now - key.created_at), 1),
            "encrypts": encrypts, "mode": f"{_file_mode(path):04o}",
        }
    finally:
        key.wipe()


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
