"""Shared setup for the benchmarks in ``bench/`` (not part of the pytest suite).

Every benchmark compares tlskit with CPython ``ssl`` in the same run, on the same PKI: an ECDSA P-256 leaf
under an ECDSA P-256 root, x25519 key exchange, one TLS 1.3 cipher suite per pass.

Python's ``ssl`` (3.11) has no API for TLS 1.3 cipher suites, and by default a ``ssl`` server picks
TLS_AES_256_GCM_SHA384 (server preference) even when the client prefers AES-128. The only knob is
OpenSSL's configuration, read once when ``_ssl`` initialises, so each suite runs in its own child process
started with ``OPENSSL_CONF`` pointing at a generated file whose ``Ciphersuites`` names that suite (tlskit is
configured with the same single suite). ``--suite default`` leaves OpenSSL's configuration alone (tlskit then
uses the suite ``ssl`` negotiates by default). Inside one child, ssl and tlskit are measured interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

# our name -> (IANA name, tlslite name)
SUITES: dict[str, tuple[str, str]] = {
    "aes128": ("TLS_AES_128_GCM_SHA256", "aes128gcm"),
    "aes256": ("TLS_AES_256_GCM_SHA384", "aes256gcm"),
}
DEFAULT_SUITES = ("aes128", "aes256")
CHILD_ENV = "TLSKIT_BENCH_SUITE"

_OPENSSL_CONF = """\
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
Ciphersuites = {suite}
"""


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--suite",
        action="append",
        choices=[*SUITES, "default"],
        help="cipher suite pass(es) to run (repeatable; default: aes128 and aes256)",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")


def child_suite() -> str | None:
    """The suite this process runs (set by ``run_suites`` in the child), or None in the parent."""
    return os.environ.get(CHILD_ENV)


def run_suites(script: str, argv: Sequence[str], suites: Sequence[str] | None) -> list[dict[str, Any]]:
    """Re-run ``script`` once per suite in a child configured for it; return the children's JSON results."""
    results = []
    conf_dir = Path(tempfile.mkdtemp(prefix="tlskit-bench-"))
    for suite in suites or DEFAULT_SUITES:
        env = dict(os.environ)
        env[CHILD_ENV] = suite
        if suite != "default":
            conf = conf_dir / f"openssl-{suite}.cnf"
            conf.write_text(_OPENSSL_CONF.format(suite=SUITES[suite][0]))
            env["OPENSSL_CONF"] = str(conf)
        proc = subprocess.run([sys.executable, script, *argv], env=env, stdout=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{Path(script).name} --suite {suite} failed (exit {proc.returncode})")
        results.append(json.loads(proc.stdout))
    return results


def child_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` without the parent-only options (--suite X, --json)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--suite":
            skip = True
            continue
        if arg.startswith("--suite=") or arg == "--json":
            continue
        out.append(arg)
    return out


# --- PKI and configurations ----------------------------------------------------------------------------


@dataclass
class Setup:
    """Everything a benchmark needs to build both implementations' endpoints for one suite."""

    suite: str  # our name, or "default"
    iana: str | None  # the IANA suite name (None: whatever ssl picks by default)
    tmp: Path
    cert_file: Path
    key_file: Path
    ca_file: Path
    leaf_der: bytes
    leaf_key: Any
    root_cert: Any
    leaf_pem: bytes
    leaf_key_pem: bytes

    # ssl ---------------------------------------------------------------------------------------------
    def ssl_server_context(self, num_tickets: int = 0) -> Any:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.num_tickets = num_tickets
        return ctx

    def ssl_client_context(self) -> Any:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(self.ca_file)
        return ctx

    # tlskit ------------------------------------------------------------------------------------------
    def _tlskit_suites(self) -> tuple[Any, ...]:
        from tlskit.enums import CipherSuite

        return (CipherSuite[self.iana or "TLS_AES_256_GCM_SHA384"],)

    def tlskit_server_config(self) -> Any:
        from tlskit.config import CertifiedKey, ServerConfig
        from tlskit.enums import NamedGroup

        ck = CertifiedKey(chain=(self.leaf_der,), private_key=self.leaf_key)
        return ServerConfig(certificates=(ck,), cipher_suites=self._tlskit_suites(), groups=(NamedGroup.x25519,))

    def tlskit_client_config(self) -> Any:
        from tlskit.config import ClientConfig
        from tlskit.enums import NamedGroup
        from tlskit.pki.verify import TrustStore

        return ClientConfig(
            server_name="localhost",
            trust=TrustStore(roots=(self.root_cert,)),
            cipher_suites=self._tlskit_suites(),
            groups=(NamedGroup.x25519,),
            key_share_groups=(NamedGroup.x25519,),
        )


def make_setup(suite: str | None) -> Setup:
    """Fresh PKI (ECDSA P-256 root and leaf for "localhost") written to a temp dir."""
    sys.path.insert(0, str(ROOT / "tests"))
    from certs import make_ca, make_leaf

    root = make_ca("tlskit bench root")
    leaf = make_leaf(root, ["localhost", "127.0.0.1"])
    tmp = Path(tempfile.mkdtemp(prefix="tlskit-bench-pki-"))
    cert_file, key_file = leaf.write(tmp, "server")
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(root.pem)
    suite = suite or "default"
    iana = SUITES[suite][0] if suite in SUITES else None
    setup = Setup(suite, iana, tmp, cert_file, key_file, ca_file, leaf.der, leaf.key, root.cert, leaf.pem, leaf.key_pem)
    if iana is None:
        setup.iana = ssl_negotiated_suite(setup)
    return setup


def ssl_negotiated_suite(setup: Setup) -> str:
    """The suite two ssl endpoints with this process's OpenSSL configuration agree on."""
    sctx, cctx = setup.ssl_server_context(), setup.ssl_client_context()
    c, *_ = pair = ssl_pair(cctx, sctx)
    ssl_handshake(*pair)
    return str(c.cipher()[0])


def ssl_pair(cctx: Any, sctx: Any) -> tuple[Any, Any, Any, Any, Any, Any]:
    """A client and server ``SSLObject`` over memory BIOs: (client, server, cin, cout, sin, sout)."""
    import ssl

    cin, cout, sin, sout = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = cctx.wrap_bio(cin, cout, server_hostname="localhost")
    s = sctx.wrap_bio(sin, sout, server_side=True)
    return c, s, cin, cout, sin, sout


def ssl_handshake(c: Any, s: Any, cin: Any, cout: Any, sin: Any, sout: Any) -> None:
    """Drive an ``ssl_pair`` through its handshake (slow generic loop: for setup, not for timing)."""
    import ssl

    for _ in range(8):
        done = 0
        for obj in (c, s):
            try:
                obj.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        sin.write(cout.read())
        cin.write(sout.read())
        if done == 2:
            return
    raise RuntimeError("ssl handshake did not complete")


def tlskit_negotiated(conn: Any) -> tuple[str, str]:
    hc = conn.negotiated
    return hc.cipher_suite.name, hc.group.name if hc.group is not None else "psk"


# --- output ------------------------------------------------------------------------------------------


def short_path(path: str) -> str:
    """``src/tlskit/x.py:12`` or ``<stdlib>/hmac.py:3`` instead of absolute paths."""
    for prefix, label in ((str(ROOT) + "/", ""), (os.path.dirname(os.__file__) + "/", "<stdlib>/")):
        if path.startswith(prefix):
            return label + path[len(prefix) :]
    return path.replace(sys.prefix, "<prefix>")


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def engine_build() -> str:
    """Which tlskit engine this process runs: "compiled" (mypyc, ``TLSKIT_COMPILE=1``) or "pure Python"."""
    import importlib.util

    spec = importlib.util.find_spec("tlskit.connection")
    return "pure Python" if spec is None or str(spec.origin).endswith(".py") else "compiled"


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> None:
    """A ``rich`` table when rich is installed, else aligned plain text; the notes name the tlskit engine build."""
    cells = [[str(c) for c in row] for row in rows]
    notes = [*notes, f"tlskit engine: {engine_build()} (compiled: TLSKIT_COMPILE=1 pip install --no-build-isolation .)"]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(columns)]
        print(f"\n{title}")
        print("  ".join(h.ljust(w) for h, w in zip(columns, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        for n in notes:
            print(f"  * {n}")
        return
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(columns):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in cells:
        table.add_row(*r)
    console = Console(width=max(150, Console().width))
    console.print(table)
    for n in notes:
        console.print(f"  * {n}", highlight=False)


def emit_json(obj: Any) -> None:
    if isinstance(obj, dict):
        obj = {**obj, "tlskit_engine": engine_build()}
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def interleaved(runners: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call each runner ``rounds`` times, alternating between them; collect their returned samples."""
    out: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            out[name].append(fn())
    return out


def ssl_timed_batch(cctx: Any, sctx: Any, n: int, session: Any = None) -> tuple[float, float, int]:
    """``n`` ``ssl`` pair handshakes over MemoryBIOs (resuming ``session`` when given): total seconds, seconds
    spent inside the server's calls, and how many handshakes resumed. Tickets the server sends after the
    handshake are fed to the client, so a ticket's cost lands where it does in real use."""
    import contextlib
    import ssl
    import time

    perf = time.perf_counter
    bio, want = ssl.MemoryBIO, ssl.SSLWantReadError
    srv = 0.0
    reused = 0
    t_start = perf()
    for _ in range(n):
        cin, cout = bio(), bio()
        c = cctx.wrap_bio(cin, cout, server_hostname="localhost", session=session)
        t = perf()
        sin, sout = bio(), bio()
        s = sctx.wrap_bio(sin, sout, server_side=True)
        srv += perf() - t
        with contextlib.suppress(want):
            c.do_handshake()
        hello = cout.read()
        t = perf()
        sin.write(hello)
        with contextlib.suppress(want):
            s.do_handshake()
        flight = sout.read()
        srv += perf() - t
        cin.write(flight)
        c.do_handshake()
        fin = cout.read()
        t = perf()
        sin.write(fin)
        s.do_handshake()
        extra = sout.read()  # session tickets, when enabled
        srv += perf() - t
        if extra:
            cin.write(extra)
            with contextlib.suppress(want):
                c.read(1)
        reused += c.session_reused
    return perf() - t_start, srv, reused
