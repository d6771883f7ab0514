"""Prometheus metrics for ``tlskit serve`` (``prometheus_client``), served on their own port.

With several workers each process writes its values to ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multi-process mode, which the supervisor sets up) and the supervisor serves the sum; with one process the
values live in memory. Resumption and 0-RTT rates are ratios of the handshake counter's labels, e.g.
``sum(rate(tlskit_tls_handshakes_total{resumed="true"}[5m])) / sum(rate(tlskit_tls_handshakes_total[5m]))``.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server

from ..errors import AlertError, HandshakeTimeout, RemoteAlert, TLSError, UnexpectedEOF
from ..events import HandshakeComplete
from .settings import MetricsEndpoint

__all__ = ["MULTIPROC_ENV", "SILENT_CLOSE", "ServeMetrics", "failure_reason", "serve_metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_HANDSHAKE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)


class ServeMetrics:
    """The counters one server process updates."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.handshakes = Counter(
            "tlskit_tls_handshakes", "Completed TLS handshakes",
            ["version", "cipher_suite", "group", "resumed", "early_data"], registry=r)
        self.handshake_failures = Counter(
            "tlskit_tls_handshake_failures", "Failed TLS handshakes by reason (the alert, timeout or eof)",
            ["reason"], registry=r)
        self.handshake_seconds = Histogram(
            "tlskit_tls_handshake_duration_seconds", "From TCP accept to handshake complete",
            buckets=_HANDSHAKE_BUCKETS, registry=r)
        self.active = Gauge("tlskit_active_connections", "Open TLS connections past the handshake",
                            registry=r, multiprocess_mode="livesum")
        self.requests = Counter("tlskit_http_requests", "HTTP responses by status code", ["code"], registry=r)
        self.request_seconds = Histogram(
            "tlskit_http_request_duration_seconds", "From request head received to response sent",
            buckets=_REQUEST_BUCKETS, registry=r)
        self.reloads = Counter("tlskit_config_reloads", "Configuration reloads", ["result"], registry=r)
        self.ktls = Counter("tlskit_ktls_connections", "Connections by kernel TLS offload (tx or off)",
                            ["mode"], registry=r)

    def handshake_done(self, done: HandshakeComplete, seconds: float) -> None:
        self.handshakes.labels(
            "TLSv1.3" if done.version.value == 0x0304 else done.version.name, done.cipher_suite.name,
            done.group.name if done.group is not None else "none",
            "true" if done.resumed else "false", "true" if done.early_data_accepted else "false",
        ).inc()
        self.handshake_seconds.observe(seconds)

    def handshake_failed(self, error: TLSError) -> None:
        self.handshake_failures.labels(failure_reason(error)).inc()


# A connection closed before it sent a byte (a TCP health check, a port scan): counted apart from ``eof`` (a
# client that hung up part-way through a handshake), so alerting on failures is not set off by load balancers.
SILENT_CLOSE = "closed_before_hello"


def failure_reason(error: TLSError) -> str:
    """A small label set: the alert we sent or received (``remote_`` prefix), timeout, eof or other."""
    match error:
        case AlertError():
            return error.description.name
        case RemoteAlert():
            return f"remote_{error.description.name}"
        case HandshakeTimeout():
            return "timeout"
        case UnexpectedEOF():
            return "eof"
    return "other"


def serve_metrics(endpoint: MetricsEndpoint, registry: CollectorRegistry | None) -> int:
    """Start the ``/metrics`` HTTP server thread; the port it listens on (for ``port = 0``).

    ``registry=None``: the multi-process view of ``PROMETHEUS_MULTIPROC_DIR``.
    """
    if registry is None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
    server, _ = start_http_server(endpoint.port, endpoint.address, registry)
    return int(server.server_port)


def mark_worker_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (multi-process mode)."""
    if MULTIPROC_ENV in os.environ and Path(os.environ[MULTIPROC_ENV]).is_dir():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
