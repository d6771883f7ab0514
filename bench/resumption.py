"""Session resumption and 0-RTT: tlskit vs CPython ``ssl`` resumption, and 0-RTT time to first byte.

    python bench/resumption.py [--duration 2] [--suite aes128] [--delay-ms 10] [--json]

(a) Resumed handshakes per second, in memory, fresh objects per handshake (as bench/handshake.py):
    ``ssl``: two ``SSLObject``s over ``MemoryBIO``s, the client given the ``SSLSession`` of an earlier
    handshake (OpenSSL resumes with psk_dhe_ke, the only mode its client offers); tlskit: two ``Connection``s,
    the client taking a ticket from a ``MemorySessionStore`` (and storing the one the resumed handshake
    brings), once with ``psk_dhe_ke`` and once with ``psk_ke`` (no key exchange, no forward secrecy).
    Both servers seal one new ticket per handshake (``--tickets``) and both clients process it. The server
    CPU column is the time spent inside the server object's calls, as in bench/handshake.py.
(b) 0-RTT time to first byte over a slow path: a userspace TCP relay on loopback holds every chunk for
    ``--delay-ms`` in each direction (RTT = 2 x delay; ``tc netem`` needs the sch_netem module, which
    containers rarely have). Our client (the sans-IO ``Connection`` over a socket: the front ends finish
    the handshake before they return) fetches ``GET /`` from our server, timed from the TCP connect to the
    first response byte:
      full       full handshake, request after it
      1-RTT      resumed, request after the handshake
      0-RTT      resumed, request as early data; the blocking front end (``tlskit.io.socket``) reads it
                 with ``recv`` and answers once the handshake has completed (the engine allows no sending
                 before the client's Finished)
      0-RTT+0.5  as 0-RTT, but the server answers right after its own Finished, in "0.5-RTT" data
                 (RFC 8446 §2.3, §4.4.4): the sans-IO server calls ``send_data`` before the client's
                 Finished has arrived.
    The relay accepts at once, so the TCP handshake costs no delay here (on a real path it adds one RTT
    to every row alike).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import _common as C

perf = time.perf_counter

RESPONSE_BODY = b"hello from tlskit\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    % len(RESPONSE_BODY)
    + RESPONSE_BODY
)
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"


# ========================================================================================== (a) in memory

# --- ssl ---------------------------------------------------------------------------------------------------


def ssl_session(cctx: Any, sctx: Any) -> Any:
    """An ``SSLSession`` holding a ticket from a full handshake."""
    pair = C.ssl_pair(cctx, sctx)
    C.ssl_handshake(*pair)
    c, _, cin, _, _, sout = pair
    cin.write(sout.read())  # the tickets
    import ssl

    with contextlib.suppress(ssl.SSLWantReadError):
        c.read(1)
    if c.session is None or not c.session.has_ticket:
        raise RuntimeError("ssl server sent no ticket")
    return c.session


def ssl_batch(cctx: Any, sctx: Any, session: Any, n: int) -> tuple[float, float]:
    """``n`` resumed pair handshakes; (total seconds, seconds inside the server's calls)."""
    elapsed, srv, reused = C.ssl_timed_batch(cctx, sctx, n, session=session)
    if reused != n:
        raise RuntimeError(f"ssl resumed {reused} of {n} handshakes")
    return elapsed, srv


# --- tlskit ------------------------------------------------------------------------------------------------


def tlskit_configs(setup: C.Setup, mode: str, tickets: int) -> tuple[Any, Any]:
    """Client and server configs resuming with ``mode``; the client's store already holds a ticket."""
    from tlskit.connection import Connection
    from tlskit.enums import PskKeyExchangeMode
    from tlskit.stores.memory import MemorySessionStore
    from tlskit.tickets.keyring import TicketKey, TicketKeyRing

    modes = (PskKeyExchangeMode[mode],)
    ring = TicketKeyRing([TicketKey.generate(os.urandom)])
    scfg = dataclasses.replace(setup.tlskit_server_config(), ticket_keys=ring, ticket_count=tickets, psk_modes=modes)
    ccfg = dataclasses.replace(setup.tlskit_client_config(), session_store=MemorySessionStore(), psk_modes=modes)
    c, s = Connection(ccfg), Connection(scfg)
    c.start()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())  # the tickets, into the client's store
    if not c.handshake_complete or c.negotiated is None or c.negotiated.resumed:
        raise RuntimeError("tlskit full handshake failed")
    return ccfg, scfg


def tlskit_batch(ccfg: Any, scfg: Any, n: int) -> tuple[float, float]:
    from tlskit.connection import Connection

    srv = 0.0
    resumed = 0
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
        extra = s.data_to_send()  # the new ticket(s)
        s.events()
        srv += perf() - t
        c.receive_data(extra)  # stored for the next handshake
        c.events()
        done = s.negotiated
        resumed += done is not None and done.resumed
    elapsed = perf() - t_start
    if resumed != n:
        raise RuntimeError(f"tlskit resumed {resumed} of {n} handshakes")
    return elapsed, srv


def calibrate(fn: Callable[[int], tuple[float, float]], target: float) -> int:
    """A batch size that runs about ``target`` seconds."""
    n = 4
    while True:
        elapsed, _ = fn(n)
        if elapsed >= 0.05:
            return max(1, int(n * target / elapsed))
        n *= 4


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    setup = C.make_setup(C.child_suite())
    cctx, sctx = setup.ssl_client_context(), setup.ssl_server_context(num_tickets=args.tickets)
    session = ssl_session(cctx, sctx)
    dhe = tlskit_configs(setup, "psk_dhe_ke", args.tickets)
    ke = tlskit_configs(setup, "psk_ke", args.tickets)

    # what each side negotiates when resuming (checked once, outside the timing)
    c, *_ = pair = C.ssl_pair(cctx, sctx)
    c.session = session
    C.ssl_handshake(*pair)
    ssl_neg = f"{_short(str(c.cipher()[0]))} psk_dhe_ke x25519" + ("" if c.session_reused else " (FULL)")
    negotiated = {}
    from tlskit.connection import Connection

    for name, (ccfg, scfg) in (("psk_dhe_ke", dhe), ("psk_ke", ke)):
        tc, ts = Connection(ccfg), Connection(scfg)
        tc.start()
        ts.receive_data(tc.data_to_send())
        tc.receive_data(ts.data_to_send())
        ts.receive_data(tc.data_to_send())
        tc.receive_data(ts.data_to_send())
        done = ts.negotiated
        assert done is not None and done.resumed
        group = done.group.name if done.group is not None else "-"
        negotiated[name] = f"{_short(done.cipher_suite.name)} {name} {group}"

    runners: dict[str, Callable[[int], tuple[float, float]]] = {
        "ssl": lambda n: ssl_batch(cctx, sctx, session, n),
        "tlskit psk_dhe_ke": lambda n: tlskit_batch(*dhe, n),
        "tlskit psk_ke": lambda n: tlskit_batch(*ke, n),
    }
    per_round = args.duration / args.rounds
    sizes = {k: calibrate(fn, per_round) for k, fn in runners.items()}
    samples: dict[str, list[tuple[float, float, int]]] = {k: [] for k in runners}
    gc.collect()
    for _ in range(args.rounds):
        for name, fn in runners.items():
            total, srv = fn(sizes[name])
            samples[name].append((total, srv, sizes[name]))
    impls: dict[str, Any] = {}
    for name, rows in samples.items():
        impls[name] = {
            "pair_us": C.median([t / n * 1e6 for t, _, n in rows]),
            "server_us": C.median([s / n * 1e6 for _, s, n in rows]),
            "handshakes": sum(n for *_, n in rows),
        }
    impls["ssl"]["negotiated"] = ssl_neg
    impls["tlskit psk_dhe_ke"]["negotiated"] = negotiated["psk_dhe_ke"]
    impls["tlskit psk_ke"]["negotiated"] = negotiated["psk_ke"]
    return {"suite": setup.suite, "iana": setup.iana, "tickets": args.tickets, "impls": impls}


def _short(suite: str) -> str:
    return suite.removeprefix("TLS_").replace("_GCM", "").replace("_SHA256", "").replace("_SHA384", "")


TARGETS = {"tlskit psk_dhe_ke": 1.0, "tlskit psk_ke": 1.5}


def render_pairs(results: list[dict[str, Any]]) -> None:
    rows = []
    for res in results:
        ssl_r = res["impls"]["ssl"]
        for name, r in res["impls"].items():
            pair_ratio = ssl_r["pair_us"] / r["pair_us"]
            target = TARGETS.get(name)
            verdict = "" if target is None else ("ok" if pair_ratio >= target else "MISSED") + f" (≥{target:.1f}x)"
            rows.append([
                res["suite"], name, r["negotiated"],
                f"{1e6 / r['pair_us']:,.0f}", f"{r['pair_us']:,.0f}",
                f"{1e6 / r['server_us']:,.0f}", f"{r['server_us']:,.0f}", f"{r['pair_us'] - r['server_us']:,.0f}",
                C.fmt_ratio(pair_ratio), C.fmt_ratio(ssl_r["server_us"] / r["server_us"]), verdict,
            ])
    C.print_table(
        "Resumed handshakes (ticket; no certificate), in memory, single thread",
        ["pass", "impl", "negotiated", "pair hs/s", "µs/pair", "server hs/s", "server µs", "client µs",
         "pair vs ssl", "server vs ssl", "target"],
        rows,
        notes=[
            "vs ssl = ssl time / impl time (>1.00x: faster than ssl); ssl resumes with psk_dhe_ke (x25519)",
            f"each server issues {results[0]['tickets']} new ticket(s) per handshake and each client stores it",
            "server µs = time inside the server object's calls (construction, input, handshake step, output)",
            "psk_ke: no (EC)DHE, so no forward secrecy for the resumed session (see README)",
        ],
    )


# ============================================================================================ (b) 0-RTT TTFB


class DelayRelay:
    """A TCP relay on 127.0.0.1 that delivers every chunk ``delay`` seconds after it arrived, in order, in
    both directions (a path with RTT = 2 x delay, bandwidth unlimited). Runs its own event loop thread."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="delay-relay", daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> DelayRelay:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # cancelled at exit: end quietly
            await self._relay(reader, writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _nodelay(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        _nodelay(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                    return
                dst.write(data)
                await dst.drain()

        task = asyncio.create_task(deliver())
        try:
            while data := await src.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
        except OSError:
            pass
        queue.put_nowait((loop.time() + self.delay, b""))
        with contextlib.suppress(OSError):
            await task
        dst.close()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextlib.contextmanager
def serving(target: Callable[[socket.socket], None]) -> Iterator[int]:
    """A listening socket on 127.0.0.1 whose connections ``target`` handles, one at a time, on a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(10)
                with contextlib.suppress(Exception):
                    target(sock)

    thread = threading.Thread(target=loop, name="ttfb-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def echo_server(sock: socket.socket) -> None:
    while data := sock.recv(65536):
        sock.sendall(data)


def front_end_server(config: Any) -> Callable[[socket.socket], None]:
    """Our blocking front end: read the request (early data arrives through ``recv`` like any other),
    answer, close. ``recv`` returns only once the handshake has completed."""
    from tlskit.io.socket import wrap_server_socket

    def handle(sock: socket.socket) -> None:
        tls = wrap_server_socket(sock, config)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = tls.recv(65536)
            if not chunk:
                return
            request += chunk
        tls.sendall(RESPONSE)
        tls.close()

    return handle


def half_rtt_server(config: Any) -> Callable[[socket.socket], None]:
    """The sans-IO ``Connection`` over the socket, answering as soon as the request is in (early data), before
    the client's Finished arrives."""
    from tlskit.connection import Connection
    from tlskit.events import ApplicationData, ConnectionClosed, EarlyData

    def handle(sock: socket.socket) -> None:
        conn = Connection(config)
        request = b""
        answered = False
        while True:
            data = sock.recv(65536)
            conn.receive_data(data)
            for event in conn.events():
                if isinstance(event, EarlyData | ApplicationData):
                    request += event.data
                elif isinstance(event, ConnectionClosed):
                    return
            if not answered and b"\r\n\r\n" in request:
                conn.send_data(RESPONSE)  # before the client's Finished: 0.5-RTT data (RFC 8446 §2.3)
                answered = True
            if answered and conn.handshake_complete:  # close after the new ticket, which follows Finished
                conn.close()
            if out := conn.data_to_send():
                sock.sendall(out)
            if not data:
                return

    return handle


@dataclass
class Exchange:
    """One request over a fresh tlskit connection: time to first response byte, whether that byte came before
    our Finished went out (0.5-RTT data), the client's ``HandshakeComplete``, and the response."""

    ttfb: float
    before_finished: bool
    done: Any
    body: bytes


def exchange(port: int, config: Any, request: bytes, *, early: bool) -> Exchange:
    """TCP connect, handshake, ``request`` (as early data when ``early``), read the response to the server's
    close. (Reading to the end also takes the server's new ticket, which may come after a 0.5-RTT response.)"""
    from tlskit.connection import Connection
    from tlskit.events import ApplicationData, ConnectionClosed, HandshakeComplete

    conn = Connection(config)
    ttfb, before, done = None, False, None
    body = b""
    t0 = perf()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.start()
        if early:
            conn.send_data(request)  # raises unless the store had a ticket that allows 0-RTT
        sock.sendall(conn.data_to_send())
        sent, finished_sent, closed = early, False, False
        while not closed:
            data = sock.recv(65536)
            if not data:
                break
            conn.receive_data(data)
            for event in conn.events():
                if isinstance(event, HandshakeComplete):
                    done = event
                elif isinstance(event, ApplicationData) and event.data:
                    if ttfb is None:
                        ttfb, before = perf() - t0, not finished_sent
                    body += event.data
                elif isinstance(event, ConnectionClosed):
                    closed = True
            if conn.handshake_complete and not sent:
                conn.send_data(request)
                sent = True
            if out := conn.data_to_send():
                sock.sendall(out)
            finished_sent = finished_sent or conn.handshake_complete  # our Finished left with that sendall
        conn.close()
        with contextlib.suppress(OSError):
            sock.sendall(conn.data_to_send())
    if ttfb is None:
        raise RuntimeError("the server closed without answering")
    return Exchange(ttfb, before, done, body)


def fetch(port: int, config: Any, *, early: bool) -> tuple[float, Any]:
    """``GET /``: seconds from the connect to the first response byte, and the client's ``HandshakeComplete``."""
    result = exchange(port, config, REQUEST, early=early)
    return result.ttfb, result.done


def tcp_rtt(port: int, samples: int = 20) -> float:
    """Median round trip of one byte through the relay to an echo server (the path's own RTT)."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(samples):
            t = perf()
            sock.sendall(b"x")
            sock.recv(1)
            times.append(perf() - t)
    return float(C.median(times))


def run_ttfb(args: argparse.Namespace) -> dict[str, Any]:
    from tlskit.config import EarlyDataPolicy
    from tlskit.stores.memory import MemoryReplayStore, MemorySessionStore
    from tlskit.tickets.keyring import TicketKey, TicketKeyRing

    setup = C.make_setup(args.suite[0] if args.suite and args.suite[0] != "default" else "aes128")
    ring = TicketKeyRing([TicketKey.generate(os.urandom)])
    scfg = dataclasses.replace(
        setup.tlskit_server_config(), ticket_keys=ring, ticket_count=1,
        early_data=EarlyDataPolicy(max_early_data_size=16384), replay_store=MemoryReplayStore(),
    )
    base_ccfg = setup.tlskit_client_config()
    delay = args.delay_ms / 1000

    def resuming(early: bool) -> Any:
        return dataclasses.replace(base_ccfg, session_store=MemorySessionStore(), early_data=early)

    # each mode: (server handler, client config factory, send the request as early data?)
    modes: dict[str, tuple[Callable[[socket.socket], None], bool, bool]] = {
        "full": (front_end_server(scfg), False, False),
        "1-RTT": (front_end_server(scfg), True, False),
        "0-RTT": (front_end_server(scfg), True, True),
        "0-RTT+0.5": (half_rtt_server(scfg), True, True),
    }
    out: dict[str, Any] = {"delay_ms": args.delay_ms, "modes": {}}
    with serving(echo_server) as echo_port, DelayRelay(echo_port, delay) as relay:
        out["path_rtt_ms"] = tcp_rtt(relay.port) * 1000
    stacks = []
    try:
        relays = {}
        for name, (handler, _, _) in modes.items():
            stack = contextlib.ExitStack()
            stacks.append(stack)
            port = stack.enter_context(serving(handler))
            relays[name] = stack.enter_context(DelayRelay(port, delay)).port
        stores = {name: resuming(early) for name, (_, resume, early) in modes.items() if resume}
        for name, cfg in stores.items():  # prime each client's store with a ticket (a full handshake)
            fetch(relays[name], cfg, early=False)
        samples: dict[str, list[float]] = {name: [] for name in modes}
        seen: dict[str, Any] = {}
        for _ in range(args.fetches):
            for name, (_, resume, early) in modes.items():
                cfg = stores[name] if resume else base_ccfg
                ttfb, done = fetch(relays[name], cfg, early=early)
                samples[name].append(ttfb)
                seen[name] = done
        for name, values in samples.items():
            done = seen[name]
            out["modes"][name] = {
                "ttfb_ms": C.median(values) * 1000,
                "min_ms": min(values) * 1000,
                "max_ms": max(values) * 1000,
                "fetches": len(values),
                "resumed": bool(done and done.resumed),
                "early_data_accepted": bool(done and done.early_data_accepted),
            }
    finally:
        for stack in reversed(stacks):
            stack.close()
    return out


def render_ttfb(res: dict[str, Any]) -> None:
    rtt = res["path_rtt_ms"]
    base = res["modes"]["1-RTT"]["ttfb_ms"]
    rows = []
    for name, m in res["modes"].items():
        saved = base - m["ttfb_ms"]
        rows.append([
            name, "yes" if m["resumed"] else "no", "yes" if m["early_data_accepted"] else "no",
            f"{m['ttfb_ms']:.1f}", f"{m['min_ms']:.1f}-{m['max_ms']:.1f}", f"{m['ttfb_ms'] / rtt:.2f}",
            f"{saved:+.1f}", f"{saved / rtt:+.2f}",
        ])
    C.print_table(
        f"Time to first byte over a {res['delay_ms']} ms + {res['delay_ms']} ms userspace relay "
        f"(measured path RTT {rtt:.1f} ms), tlskit client and server",
        ["mode", "resumed", "0-RTT accepted", "TTFB ms (median)", "min-max", "RTTs", "saved vs 1-RTT ms",
         "saved RTTs"],
        rows,
        notes=[
            "TTFB from TCP connect to the first response byte; the relay adds no delay to the TCP handshake",
            "0-RTT: request as early data, answered by the blocking front end once the handshake completes",
            "0-RTT+0.5: answered in 0.5-RTT data right after the server's Finished (Connection.send_data)",
        ],
    )


# ================================================================================================== driver


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per implementation per suite")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument("--tickets", type=int, default=1, help="tickets each server issues per handshake")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="relay delay each way (RTT = 2x)")
    parser.add_argument("--fetches", type=int, default=15, help="TTFB fetches per mode (median reported)")
    parser.add_argument("--no-ttfb", action="store_true", help="skip the 0-RTT time-to-first-byte part")
    parser.add_argument("--no-pairs", action="store_true", help="skip the in-memory handshake rate part")
    args = parser.parse_args(argv)
    if C.child_suite() is not None:
        C.emit_json(run_child(args))
        return
    pairs = [] if args.no_pairs else C.run_suites(__file__, C.child_argv(argv), args.suite)
    ttfb = None if args.no_ttfb else run_ttfb(args)
    if args.json:
        C.emit_json({"benchmark": "resumption", "results": pairs, "ttfb": ttfb})
        return
    if pairs:
        render_pairs(pairs)
    if ttfb is not None:
        render_ttfb(ttfb)


if __name__ == "__main__":
    main()
