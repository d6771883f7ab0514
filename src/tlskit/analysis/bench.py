"""``tlskit bench``: TLS handshake rate and latency against one or two servers (like ``openssl s_time``), with
worker threads, a bound on count and time, percentiles, and a PNG/HTML report of rate and latency over time.
``--compare`` interleaves two targets connection by connection so both see the same conditions, and rates each
by the time its own connections took."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ClientConfig
from ..connection import Connection
from ..errors import ConfigError, TLSError, UnexpectedEOF
from ..events import HandshakeComplete, SessionTicketReceived
from ..stores.memory import MemorySessionStore

__all__ = ["BenchOptions", "BenchResult", "PrimingError", "Target", "render_bench", "run_bench", "write_report"]

HARD_MAX_COUNT = 100_000
HARD_MAX_SECONDS = 600.0


class PrimingError(Exception):
    """--mode resumed/0rtt: the untimed first handshake, which fetches the ticket, failed (no run happened)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    host: str
    port: int
    config: ClientConfig

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchOptions:
    targets: tuple[Target, ...]  # one, or two with --compare
    concurrency: int = 1
    duration: float = 10.0
    count: int | None = None
    timeout: float = 5.0
    mode: str = "full"  # "full", "resumed", "0rtt"


@dataclass(kw_only=True, slots=True)
class BenchResult:
    target: Target
    samples: list[tuple[float, float]] = field(default_factory=list)  # (end time from start, latency s)
    errors: list[str] = field(default_factory=list)
    resumed: int = 0  # handshakes that resumed a session (--mode resumed/0rtt)
    early_accepted: int = 0  # handshakes whose 0-RTT data the server accepted
    elapsed: float = 0.0  # the run's wall time
    busy: float = 0.0  # seconds the workers spent on this target's connections (failed ones too)
    share: float | None = None  # with --compare: this target's share of the run (busy / workers), else None
    consecutive_errors: int = 0
    stopped: str | None = None  # why the run stopped early because of this target

    @property
    def seconds(self) -> float:
        """The time the rate is over: the run, or with --compare the target's own share of it (the targets
        are interleaved connection by connection, so each completes the same number: their rates differ by
        how long each took)."""
        return self.elapsed if self.share is None else self.share

    @property
    def rate(self) -> float:
        return len(self.samples) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        latencies = sorted(lat for _, lat in self.samples)
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, max(0, round(q / 100 * len(latencies) + 0.5) - 1))]

    def summary(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {"target": self.target.label, "handshakes": len(self.samples), "errors": len(self.errors),
                "first_error": self.errors[0] if self.errors else None, "seconds": round(self.seconds, 3),
                "stopped": self.stopped,
                "rate_per_second": round(self.rate, 2), "resumed": self.resumed,
                "early_data_accepted": self.early_accepted,
                "latency_ms": {f"p{q}": ms(self.percentile(q)) for q in (50, 90, 99)} | {
                    "max": ms(max((lat for _, lat in self.samples), default=None))}}


def handshake_once(target: Target, timeout: float, *, want_ticket: bool = False,
                   early_data: bytes | None = None) -> tuple[float, HandshakeComplete]:
    """One handshake with tlskit's client: (latency in seconds from TCP connect to Finished, what it settled).
    ``want_ticket`` then waits for a NewSessionTicket to refill the session store. All of it within ``timeout``
    seconds: a per-recv socket timeout would restart with every byte a dripping server sends."""
    start = time.perf_counter()
    deadline = start + timeout
    latency: float | None = None
    with socket.create_connection((target.host, target.port), timeout=timeout) as sock:
        conn = Connection(target.config)
        conn.start()
        if early_data is not None:
            with contextlib.suppress(ConfigError):  # no ticket allowing 0-RTT: a plain resumption
                conn.send_data(early_data)
        sock.sendall(conn.data_to_send())
        ticket = False
        while latency is None or (want_ticket and not ticket):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"handshake not done within {timeout:g} s")
            sock.settimeout(remaining)
            data = sock.recv(65536)
            conn.receive_data(data)
            ticket = ticket or any(isinstance(e, SessionTicketReceived) for e in conn.events())
            if latency is None and conn.handshake_complete:
                latency = time.perf_counter() - start
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            if not data:
                break
        done = conn.negotiated
        if done is None or latency is None:
            raise UnexpectedEOF("the server closed the connection during the handshake")
        conn.close()
        with contextlib.suppress(OSError):
            sock.sendall(conn.data_to_send())
    return latency, done


def run_bench(options: BenchOptions, on_progress: Callable[[int, float], None] | None = None) -> list[BenchResult]:
    """Run workers until ``count`` handshakes (all targets together) or ``duration`` seconds, whichever first."""
    resuming = options.mode in ("resumed", "0rtt")
    targets = options.targets
    if resuming:  # one session store per target, primed by a full handshake that waits for a ticket
        targets = tuple(dataclasses.replace(t, config=dataclasses.replace(
            t.config, session_store=MemorySessionStore(per_server=64), early_data=options.mode == "0rtt"))
            for t in targets)
        for target in targets:
            try:
                handshake_once(target, options.timeout, want_ticket=True)
            except (OSError, TLSError) as e:
                why = f"{type(e).__name__}: {e}" if isinstance(e, TimeoutError) else str(e)
                raise PrimingError(f"--mode {options.mode}: the first handshake with {target.label}, for a ticket, "
                                   f"failed: {why}") from None
    early = b"HEAD / HTTP/1.0\r\n\r\n" if options.mode == "0rtt" else None
    results = [BenchResult(target=t) for t in targets]
    count = min(options.count or HARD_MAX_COUNT, HARD_MAX_COUNT)
    duration = min(options.duration, HARD_MAX_SECONDS)
    lock = threading.Lock()
    issued = 0
    start = time.perf_counter()
    stop_at = start + duration

    def next_job() -> int | None:
        nonlocal issued
        with lock:
            if issued >= count or time.perf_counter() >= stop_at:
                return None
            issued += 1
            return issued

    def worker() -> None:
        nonlocal issued
        while (job := next_job()) is not None:
            result = results[job % len(results)]  # interleave the targets connection by connection
            began = time.perf_counter()
            try:
                latency, done = handshake_once(result.target, options.timeout, want_ticket=resuming,
                                               early_data=early)
            except (OSError, TLSError) as e:
                with lock:
                    result.busy += time.perf_counter() - began
                    result.errors.append(f"{type(e).__name__}: {e}")
                    result.consecutive_errors += 1
                    if result.consecutive_errors >= _GIVE_UP_AFTER and result.stopped is None:
                        result.stopped = f"{_GIVE_UP_AFTER} handshakes in a row failed"
                        issued = count  # it stopped answering: stop instead of hammering it
                continue
            with lock:
                result.busy += time.perf_counter() - began
                result.consecutive_errors = 0
                result.samples.append((time.perf_counter() - start, latency))
                result.resumed += done.resumed
                result.early_accepted += done.early_data_accepted

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, options.concurrency))]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(0.1)
        if on_progress is not None:
            done = sum(len(r.samples) + len(r.errors) for r in results)
            on_progress(done, time.perf_counter() - start)
    elapsed = time.perf_counter() - start
    for result in results:
        result.elapsed = elapsed
        if len(results) > 1:
            result.share = result.busy / max(1, options.concurrency)
    return results


_GIVE_UP_AFTER = 50  # failed handshakes in a row after which a target counts as down


def bench_json(results: list[BenchResult]) -> dict[str, Any]:
    out: dict[str, Any] = {"results": [r.summary() for r in results]}
    if len(results) == 2 and results[1].rate > 0:
        out["ratio"] = round(results[0].rate / results[1].rate, 3)
    return out


def render_bench(results: list[BenchResult], out: Callable[[str], None]) -> None:
    for result in results:
        s = result.summary()
        lat = s["latency_ms"]
        latency = (f"  latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms, max {lat['max']} ms"
                   if s["handshakes"] else "  no handshake completed")
        out(f"{s['target']}: {s['handshakes']} handshakes in {s['seconds']:.2f} s = {s['rate_per_second']:.1f}/s"
            + latency
            + (f"  ({s['errors']} errors, first: {s['first_error']})" if s["errors"] else "")
            + (f"  [stopped early: {s['stopped']}]" if s["stopped"] else "")
            + (f"  resumed {s['resumed']}, 0-RTT accepted {s['early_data_accepted']}"
               if s["resumed"] or s["early_data_accepted"] else ""))
    if len(results) == 2 and results[1].rate > 0:
        out(f"ratio {results[0].target.label} / {results[1].target.label}: "
            f"{results[0].rate / results[1].rate:.2f}x handshakes per second")


def write_report(results: list[BenchResult], png: Path, html_path: Path | None = None) -> None:
    """A PNG of handshakes per second and latency over time (per 1 s bucket) and an HTML page around it.
    An OSError names the file that could not be written (``filename``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, lat_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for index, result in enumerate(results):
        label = result.target.label + (f" [{index + 1}]" if len(results) > 1 else "")
        buckets: dict[int, list[float]] = {}
        for end, latency in result.samples:
            buckets.setdefault(int(end), []).append(latency)
        whole = int(result.elapsed)  # a last partial second would show as a drop in rate
        seconds = [s for s in sorted(buckets) if s < whole or whole == 0]
        rate_ax.plot([s + 0.5 for s in seconds], [len(buckets[s]) for s in seconds], marker="o", label=label)
        lat_ax.scatter([end for end, _ in result.samples], [lat * 1000 for _, lat in result.samples], s=4,
                       label=label)
    rate_ax.set_ylabel("handshakes / s")
    rate_ax.legend()
    lat_ax.set_ylabel("latency (ms)")
    lat_ax.set_xlabel("seconds since start")
    fig.suptitle("tlskit bench")
    fig.tight_layout()
    try:
        fig.savefig(png, dpi=100)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(png)) from e
    finally:
        plt.close(fig)
    if html_path is None:
        return
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            s["target"], s["handshakes"], s["errors"], s["rate_per_second"], s["latency_ms"]["p50"],
            s["latency_ms"]["p90"], s["latency_ms"]["p99"], s["latency_ms"]["max"])) + "</tr>"
        for s in (r.summary() for r in results))
    ratio = bench_json(results).get("ratio")
    page = (
        "<!doctype html><meta charset=utf-8><title>tlskit bench</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
        "<h1>tlskit bench</h1><table><tr><th>target</th><th>handshakes</th><th>errors</th><th>per s</th>"
        f"<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th></tr>{rows}</table>"
        + (f"<p>ratio: {ratio}x</p>" if ratio is not None else "")
        + f'<img src="{html.escape(png.name)}" alt="rate and latency over time">\n')
    try:
        html_path.write_text(page)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(html_path)) from e
