"""Bulk throughput over loopback TCP with full 16 KiB records: tlskit vs CPython ``ssl``.

    python bench/bulk.py [--mib 256 | --seconds 2] [--write-size 16384] [--suite aes128] [--json]

Sender and receiver run in separate processes (two cores). For each client/server pairing of ssl and
tlskit, data flows once client→server and once server→client. The sender calls ``sendall`` with
``--write-size`` bytes (default 16 KiB: one full record per call); the receiver calls ``recv_into`` with a
64 KiB buffer until it has everything. Throughput = bytes / (receiver's last byte - sender's first
``sendall``), both read from the system-wide monotonic clock. By default the size is picked so that
ssl→ssl takes about ``--seconds``; every pairing then sends the same amount, ``--repeat`` times
(interleaved; the median is reported).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import sys
import time
from typing import Any

import _common as C

IMPLS = ("ssl", "tlskit")
RECV_BUF = 1 << 16


def _server_socket(impl: str, setup: C.Setup, raw: socket.socket) -> Any:
    if impl == "ssl":
        tls = setup.ssl_server_context().wrap_socket(raw, server_side=True)
    else:
        from tlskit.io.socket import wrap_server_socket

        tls = wrap_server_socket(raw, setup.tlskit_server_config())
        tls.do_handshake()
    return tls


def _client_socket(impl: str, setup: C.Setup, port: int) -> Any:
    if impl == "ssl":
        raw = socket.create_connection(("127.0.0.1", port))
        return setup.ssl_client_context().wrap_socket(raw, server_hostname="localhost")
    from tlskit.io.socket import connect

    return connect("127.0.0.1", port, config=setup.tlskit_client_config(), server_name="localhost")


def _negotiated(impl: str, tls: Any) -> str:
    if impl == "ssl":
        return str(tls.cipher()[0])
    return str(tls.conn.negotiated.cipher_suite.name)


def _send(tls: Any, nbytes: int, write_size: int) -> tuple[float, float]:
    """(wall clock at the first sendall, CPU seconds of this process while sending)."""
    chunk = os.urandom(write_size)
    count, tail = divmod(nbytes, write_size)
    sendall = tls.sendall
    cpu = time.process_time()
    t0 = time.perf_counter()
    for _ in range(count):
        sendall(chunk)
    if tail:
        sendall(chunk[:tail])
    cpu = time.process_time() - cpu
    tls.recv(1)  # the receiver's ack: everything arrived
    return t0, cpu


def _receive(tls: Any, nbytes: int) -> tuple[float, float]:
    """(wall clock at the last byte, CPU seconds of this process while receiving)."""
    buf = bytearray(RECV_BUF)
    recv_into = tls.recv_into
    got = 0
    cpu = time.process_time()
    while got < nbytes:
        n = recv_into(buf)
        if not n:
            raise RuntimeError(f"EOF after {got} of {nbytes} bytes")
        got += n
    t1 = time.perf_counter()
    cpu = time.process_time() - cpu
    tls.sendall(b"k")
    return t1, cpu


def _server_proc(impl: str, setup: C.Setup, role: str, nbytes: int, write_size: int, conn: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        conn.send(lsock.getsockname()[1])
        raw, _ = lsock.accept()
    tls = _server_socket(impl, setup, raw)
    try:
        t = _send(tls, nbytes, write_size) if role == "send" else _receive(tls, nbytes)
        conn.send((t, _negotiated(impl, tls)))
    finally:
        tls.close()


def _client_proc(impl: str, setup: C.Setup, role: str, nbytes: int, write_size: int, port: int, conn: Any) -> None:
    tls = _client_socket(impl, setup, port)
    try:
        t = _send(tls, nbytes, write_size) if role == "send" else _receive(tls, nbytes)
        conn.send((t, _negotiated(impl, tls)))
    finally:
        tls.close()


def measure(
    setup: C.Setup, client: str, server: str, direction: str, nbytes: int, write_size: int
) -> tuple[float, float, float, str]:
    """(MB/s, sender MB per CPU second, receiver MB per CPU second, negotiated suite) for one run;
    MB = 10^6 bytes. CPU includes the kernel's share (socket copies), which is the same for both."""
    ctx = mp.get_context("fork")
    s_parent, s_child = ctx.Pipe()
    c_parent, c_child = ctx.Pipe()
    s_role, c_role = ("recv", "send") if direction == "c2s" else ("send", "recv")
    sp = ctx.Process(target=_server_proc, args=(server, setup, s_role, nbytes, write_size, s_child))
    sp.start()
    port = s_parent.recv()
    cp = ctx.Process(target=_client_proc, args=(client, setup, c_role, nbytes, write_size, port, c_child))
    cp.start()
    s_time, s_neg = s_parent.recv()
    c_time, _ = c_parent.recv()
    sp.join()
    cp.join()
    (t0, send_cpu), (t1, recv_cpu) = (c_time, s_time) if direction == "c2s" else (s_time, c_time)
    mb = nbytes / 1e6
    return mb / (t1 - t0), mb / send_cpu, mb / recv_cpu, s_neg


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    suite = C.child_suite()
    setup = C.make_setup(suite)
    write_size = args.write_size
    if args.mib:
        nbytes = args.mib << 20
    else:  # size for ~args.seconds of ssl→ssl
        probe = 32 << 20
        mbps, *_ = measure(setup, "ssl", "ssl", "c2s", probe, write_size)
        nbytes = max(probe, int(mbps * 1e6 * args.seconds) // write_size * write_size)
    combos = [(d, c, s) for d in ("c2s", "s2c") for c in IMPLS for s in IMPLS]
    samples: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {k: [] for k in combos}
    negotiated: dict[tuple[str, str, str], str] = {}
    for _ in range(args.repeat):  # interleaved, so drift in machine load hits every pairing alike
        for key in combos:
            direction, client, server = key
            *sample, negotiated[key] = measure(setup, client, server, direction, nbytes, write_size)
            samples[key].append(tuple(sample))
    results = []
    for key in combos:
        d, c, s = key
        rows = samples[key]
        results.append(
            {
                "client": c,
                "server": s,
                "direction": d,
                "negotiated": negotiated[key],
                "mb_s": C.median([r[0] for r in rows]),
                "samples": [r[0] for r in rows],
                "send_mb_per_cpu_s": C.median([r[1] for r in rows]),
                "recv_mb_per_cpu_s": C.median([r[2] for r in rows]),
            }
        )
    return {"suite": suite, "iana": setup.iana, "bytes": nbytes, "write_size": write_size, "results": results}


def render(results: list[dict[str, Any]], default_suite: str) -> None:
    rows = []
    for res in results:
        base = {r["direction"]: r for r in res["results"] if r["client"] == r["server"] == "ssl"}
        for r in res["results"]:
            b = base[r["direction"]]
            sender, receiver = (r["client"], r["server"]) if r["direction"] == "c2s" else (r["server"], r["client"])
            arrow = "c→s" if r["direction"] == "c2s" else "s→c"
            if r["negotiated"] != res["iana"]:
                raise RuntimeError(f"negotiated {r['negotiated']}, expected {res['iana']}")
            send, recv = r["send_mb_per_cpu_s"], r["recv_mb_per_cpu_s"]
            rows.append(
                [
                    res["suite"],
                    f"{r['client']}/{r['server']}",
                    arrow,
                    f"{sender} → {receiver}",
                    f"{r['mb_s']:,.0f}",
                    f"{min(r['samples']):,.0f}-{max(r['samples']):,.0f}",
                    C.fmt_ratio(r["mb_s"] / b["mb_s"]),
                    f"{send:,.0f}",
                    C.fmt_ratio(send / b["send_mb_per_cpu_s"]),
                    f"{recv:,.0f}",
                    C.fmt_ratio(recv / b["recv_mb_per_cpu_s"]),
                ]
            )
    first = results[0]
    C.print_table(
        f"Bulk throughput, loopback TCP, {first['bytes'] / 2**20:,.0f} MiB per run, "
        f"sendall({first['write_size']}) / recv_into(64 KiB)",
        [
            "pass",
            "client/server",
            "flow",
            "sender → receiver",
            "MB/s",
            "range",
            "vs ssl",
            "send MB/cpu-s",
            "vs ssl",
            "recv MB/cpu-s",
            "vs ssl",
        ],
        rows,
        notes=[
            "vs ssl: against ssl→ssl in the same direction and suite; target for tlskit ≥ 0.95x",
            "MB/cpu-s: MB moved per CPU second of the sending / receiving process (user+sys; less sensitive "
            "to other load than wall-clock MB/s)",
            f"ssl default (no OpenSSL config) negotiates {default_suite}; every run here negotiated its "
            "pass's suite with x25519",
            "MB = 10^6 bytes; sender and receiver in separate processes; "
            f"median of {len(first['results'][0]['samples'])} interleaved runs",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--mib", type=int, default=0, help="MiB per run (default: sized by --seconds)")
    parser.add_argument("--seconds", type=float, default=0.6, help="target duration of ssl→ssl per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per pairing (median reported)")
    parser.add_argument("--write-size", type=int, default=16384, help="bytes per sendall call")
    args = parser.parse_args(argv)
    if C.child_suite() is not None:
        C.emit_json(run_child(args))
        return
    default_suite = C.ssl_negotiated_suite(C.make_setup("default"))
    results = C.run_suites(__file__, C.child_argv(argv), args.suite)
    if args.json:
        C.emit_json({"benchmark": "bulk", "ssl_default_suite": default_suite, "results": results})
    else:
        render(results, default_suite)


if __name__ == "__main__":
    main()
