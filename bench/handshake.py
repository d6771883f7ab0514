"""Full TLS 1.3 handshakes per second, in process: tlskit vs CPython ``ssl`` (and tlslite-ng).

    python bench/handshake.py [--duration 2] [--suite aes128] [--json]

(a) pair: a client and a server in memory, fresh objects per handshake (``ssl``: two ``SSLObject``s over
    ``MemoryBIO``s; tlskit: two ``Connection``s; tlslite-ng: two ``TLSConnection``s over an in-memory fake
    socket, driven through their async generators), timed end to end.
(b) server CPU: the same runs, with the time spent inside the server object's calls (construction, feeding
    input, the handshake step, taking output) accumulated with ``perf_counter``.

Setup: ECDSA P-256 leaf, x25519, one suite per pass; ``ssl`` server sends no session tickets (tlskit sends
none either; ``--ssl-tickets N`` to change that). The ssl and tlskit clients verify the chain and the name;
tlslite-ng's client is run without a checker (it verifies nothing), which flatters it slightly.
"""

from __future__ import annotations

import argparse
import errno
import gc
import sys
import time
from typing import Any

import _common as C

perf = time.perf_counter


# --- ssl ---------------------------------------------------------------------------------------------------


def ssl_batch(cctx: Any, sctx: Any, n: int) -> tuple[float, float]:
    """``n`` pair handshakes; (total seconds, seconds inside the server's calls)."""
    elapsed, srv, _ = C.ssl_timed_batch(cctx, sctx, n)
    return elapsed, srv


# --- tlskit ------------------------------------------------------------------------------------------------


def tlskit_batch(ccfg: Any, scfg: Any, n: int) -> tuple[float, float]:
    from tlskit.connection import Connection

    srv = 0.0
    t_start = perf()
    for _ in range(n):
        c = Connection(ccfg)
        t = perf()
        s = Connection(scfg)
        srv += perf() - t
        c.start()
        hello = c.data_to_send()
        t = perf()
        s.receive_data(hello)
        flight = s.data_to_send()
        srv += perf() - t
        c.receive_data(flight)
        fin = c.data_to_send()
        t = perf()
        s.receive_data(fin)
        s.data_to_send()
        s.events()
        srv += perf() - t
        c.events()
        if s._complete is None or c._complete is None:
            raise RuntimeError("tlskit handshake did not complete")
    return perf() - t_start, srv


# --- tlslite-ng --------------------------------------------------------------------------------------------


class _Pipe:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()


class _FakeSock:
    """Just enough of a non-blocking socket for tlslite-ng's record layer."""

    def __init__(self, rx: _Pipe, tx: _Pipe) -> None:
        self.rx, self.tx = rx, tx

    def send(self, data: bytes) -> int:
        self.tx.buf += data
        return len(data)

    def sendall(self, data: bytes) -> None:
        self.tx.buf += data

    def recv(self, n: int) -> bytes:
        buf = self.rx.buf
        if not buf:
            raise BlockingIOError(errno.EWOULDBLOCK, "would block")
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def close(self) -> None:
        pass


def tlslite_setup(setup: C.Setup) -> tuple[Any, Any, Any] | None:
    try:
        from tlslite.api import HandshakeSettings, X509CertChain, parsePEMKey
    except ImportError:
        return None
    chain = X509CertChain()
    chain.parsePemList(setup.leaf_pem.decode())
    key = parsePEMKey(setup.leaf_key_pem.decode(), private=True, implementations=["python"])
    settings = HandshakeSettings()
    name = {v[0]: v[1] for v in C.SUITES.values()}[setup.iana or "TLS_AES_256_GCM_SHA384"]
    settings.cipherNames = [name]
    settings.keyShares = ["x25519"]
    settings.eccCurves = ["x25519", "secp256r1"]
    settings.minVersion = settings.maxVersion = (3, 4)
    return chain, key, settings


def tlslite_batch(state: tuple[Any, Any, Any], n: int) -> tuple[float, float]:
    from tlslite.api import TLSConnection

    chain, key, settings = state
    srv = 0.0
    t_start = perf()
    for _ in range(n):
        a, b = _Pipe(), _Pipe()
        c = TLSConnection(_FakeSock(a, b))
        t = perf()
        s = TLSConnection(_FakeSock(b, a))
        sg = s.handshakeServerAsync(certChain=chain, privateKey=key, settings=settings)
        srv += perf() - t
        cg = c.handshakeClientCert(serverName="localhost", settings=settings, async_=True)
        c_done = s_done = False
        while not (c_done and s_done):
            if not c_done:
                try:
                    next(cg)
                except StopIteration:
                    c_done = True
            if not s_done:
                t = perf()
                try:
                    next(sg)
                except StopIteration:
                    s_done = True
                srv += perf() - t
    return perf() - t_start, srv


# --- driver ------------------------------------------------------------------------------------------------


def calibrate(fn: Any, target: float) -> int:
    """A batch size that runs about ``target`` seconds."""
    n = 4
    while True:
        elapsed, _ = fn(n)
        if elapsed >= 0.05:
            return max(1, int(n * target / elapsed))
        n *= 4


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    suite = C.child_suite()
    setup = C.make_setup(suite)
    cctx, sctx = setup.ssl_client_context(), setup.ssl_server_context(args.ssl_tickets)
    ccfg, scfg = setup.tlskit_client_config(), setup.tlskit_server_config()

    # what was negotiated (checked once, outside the timing)
    c, *_ = pair = C.ssl_pair(cctx, sctx)
    C.ssl_handshake(*pair)
    ssl_neg = str(c.cipher()[0])
    from tlskit.connection import Connection

    tc, ts = Connection(ccfg), Connection(scfg)
    tc.start()
    ts.receive_data(tc.data_to_send())
    tc.receive_data(ts.data_to_send())
    ts.receive_data(tc.data_to_send())
    tk_suite, tk_group = C.tlskit_negotiated(ts)

    runners_fn = {
        "ssl": lambda n: ssl_batch(cctx, sctx, n),
        "tlskit": lambda n: tlskit_batch(ccfg, scfg, n),
    }
    rounds = args.rounds
    per_round = args.duration / rounds
    sizes = {k: calibrate(fn, per_round) for k, fn in runners_fn.items()}
    samples: dict[str, list[tuple[float, float, int]]] = {k: [] for k in runners_fn}
    gc.collect()
    for _ in range(rounds):
        for name, fn in runners_fn.items():
            n = sizes[name]
            total, srv = fn(n)
            samples[name].append((total, srv, n))

    impls: dict[str, Any] = {}
    for name, rows in samples.items():
        # the median round by total time; µs per handshake
        pair_us = C.median([t / n * 1e6 for t, _, n in rows])
        srv_us = C.median([s / n * 1e6 for _, s, n in rows])
        impls[name] = {"pair_us": pair_us, "server_us": srv_us, "handshakes": sum(n for *_, n in rows)}
    impls["ssl"]["negotiated"] = ssl_neg.removeprefix("TLS_")
    impls["tlskit"]["negotiated"] = f"{tk_suite.removeprefix('TLS_')} {tk_group}"

    lite = tlslite_setup(setup) if not args.no_tlslite else None
    if lite is not None:
        tlslite_batch(lite, 2)  # warm up
        n = args.tlslite_handshakes
        total, srv = tlslite_batch(lite, n)
        impls["tlslite-ng"] = {
            "pair_us": total / n * 1e6,
            "server_us": srv / n * 1e6,
            "handshakes": n,
            "negotiated": f"{(setup.iana or '').removeprefix('TLS_')} x25519",
        }
    return {"suite": suite, "iana": setup.iana, "impls": impls, "ssl_tickets": args.ssl_tickets}


def render(results: list[dict[str, Any]], default_suite: str) -> None:
    rows = []
    for res in results:
        ssl_r = res["impls"]["ssl"]
        for name, r in res["impls"].items():
            pair_ratio = ssl_r["pair_us"] / r["pair_us"]
            srv_ratio = ssl_r["server_us"] / r["server_us"]
            rows.append(
                [
                    res["suite"],
                    name,
                    r["negotiated"],
                    f"{1e6 / r['pair_us']:,.0f}",
                    f"{r['pair_us']:,.0f}",
                    f"{1e6 / r['server_us']:,.0f}",
                    f"{r['server_us']:,.0f}",
                    f"{r['pair_us'] - r['server_us']:,.0f}",
                    C.fmt_ratio(pair_ratio),
                    C.fmt_ratio(srv_ratio),
                ]
            )
    C.print_table(
        "Full handshakes (ECDSA P-256, x25519), in memory, single thread",
        [
            "pass",
            "impl",
            "negotiated",
            "pair hs/s",
            "µs/pair",
            "server hs/s",
            "server µs",
            "client µs",
            "pair vs ssl",
            "server vs ssl",
        ],
        rows,
        notes=[
            "vs ssl = ssl time / impl time (>1.00x: faster than ssl; target for tlskit ≥ 1.00x)",
            f"ssl default (no OpenSSL config) negotiates {default_suite}; each pass restricts ssl to its suite "
            "via OPENSSL_CONF Ciphersuites",
            "server µs = time inside the server object's calls (construction, input, handshake step, output)",
            "tlslite-ng: pure-Python crypto, no certificate verification on its client",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per implementation per suite")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument("--ssl-tickets", type=int, default=0, help="session tickets the ssl server sends")
    parser.add_argument("--tlslite-handshakes", type=int, default=30)
    parser.add_argument("--no-tlslite", action="store_true")
    args = parser.parse_args(argv)
    if C.child_suite() is not None:
        C.emit_json(run_child(args))
        return
    default_suite = C.ssl_negotiated_suite(C.make_setup("default"))
    results = C.run_suites(__file__, C.child_argv(argv), args.suite)
    if args.json:
        C.emit_json({"benchmark": "handshake", "ssl_default_suite": default_suite, "results": results})
    else:
        render(results, default_suite)


if __name__ == "__main__":
    main()
