"""``tlskit``: argparse subcommands; each hands off to the package that does the work."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from types import ModuleType

__all__ = ["main"]

_EXAMPLES = """\
examples:
  tlskit serve                      serve the current directory at https://localhost:8443/
                                    with a certificate from a development CA made once
  tlskit serve ./site --port 9443   serve ./site on another port
  tlskit serve --cert fullchain.pem --key privkey.pem --host 0.0.0.0
                                    serve with your own certificate on every interface

Set SSLKEYLOGFILE=/path/keys.log to record session keys for Wireshark.
"""

def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for usage or configuration errors)."""
    if _command(sys.argv[1:] if argv is None else argv) == "serve":  # before the server's imports (~0.5 s)
        from ..serve.startup import remember_sighup

        remember_sighup()
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # told by the command's own parser, with its usage line (argparse would give the top-level one)
        commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `tlskit decrypt ... | head`: the reader left; no traceback (as other tools)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return status


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand's name: the first argument that is no option (the top level has only flags)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own parser by name."""
    from . import ca as ca_cli
    from . import serve as serve_cli
    from . import stek as stek_cli

    parser = argparse.ArgumentParser(
        prog="tlskit",
        description="TLS 1.3 tools built on tlskit.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    serve_cli.register(sub)
    ca_cli.register(sub)
    stek_cli.register(sub)
    for tool in _analysis_tools():
        tool.register(sub)
    return parser, sub.choices


def _analysis_tools() -> list[ModuleType]:
    """The operator tools (``tlskit.cli.<tool>``), each registering its own subcommand."""
    from . import bench, decrypt, diagnose, probe, scan

    return [probe, scan, diagnose, decrypt, bench]


def _version() -> str:
    """The version and which engine build runs: the mypyc-compiled one (``TLSKIT_COMPILE=1``) or pure Python."""
    spec = importlib.util.find_spec("tlskit.connection")  # (found, not imported: the CLI starts fast)
    build = "pure Python" if spec is None or str(spec.origin).endswith(".py") else "compiled engine"
    try:
        return f"{metadata.version('tlskit')} ({build})"
    except metadata.PackageNotFoundError:
        return f"unknown ({build})"
