"""One observed client handshake: our sans-IO client over a plain socket, every byte both ways kept with its
time, secrets taken from the ``key_log`` hook, and the whole exchange decoded afterwards by
:mod:`tlskit.analysis.records` (so the server's flight is shown even when the handshake fails on it).

``probe``, ``scan``, ``diagnose`` and ``bench`` all drive connections through :func:`run_handshake`.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..config import ClientConfig
from ..connection import Connection as Engine
from ..enums import AlertDescription, ExtensionType, HandshakeType
from ..errors import AlertError, CertificateError, ConfigError, RemoteAlert, TLSError, UnexpectedEOF
from ..events import AlertReceived, ApplicationData, HandshakeComplete, SessionTicketReceived
from ..messages.extensions import parse_certificate_status
from ..messages.handshake import Certificate
from .records import Connection, decode_connection, parse_key_log

__all__ = ["FailureKind", "HandshakeTrace", "run_handshake"]

FailureKind = Literal["resolve", "connect", "timeout", "reset", "eof", "remote_alert", "certificate", "protocol"]


@dataclass(kw_only=True, slots=True)
class HandshakeTrace:
    """What happened on one connection attempt; times are seconds from the start of the TCP connect."""

    host: str
    port: int
    address: str | None = None
    connect_time: float | None = None
    first_byte_time: float | None = None
    handshake_time: float | None = None
    negotiated: HandshakeComplete | None = None
    tickets: list[SessionTicketReceived] = field(default_factory=list)
    failure: FailureKind | None = None
    error: str | None = None
    alert_received: AlertDescription | None = None
    alert_sent: AlertDescription | None = None
    sent: bytes = b""
    received: bytes = b""
    tls: Connection = field(default_factory=Connection)
    application_data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.negotiated is not None and self.failure is None

    def peer_chain(self) -> tuple[bytes, ...]:
        """The server's certificates (DER, leaf first): from the engine, else from the decoded flight."""
        if self.negotiated is not None and self.negotiated.peer_certificates:
            return self.negotiated.peer_certificates
        for message in self.tls.messages:
            if message.direction == "server" and isinstance(message.decoded, Certificate):
                return tuple(e.cert_data for e in message.decoded.entries)
        return ()

    def ocsp_staple(self) -> bytes | None:
        if self.negotiated is not None and self.negotiated.ocsp_response:
            return self.negotiated.ocsp_response
        for message in self.tls.messages:
            if message.direction == "server" and isinstance(message.decoded, Certificate) and message.decoded.entries:
                for e in message.decoded.entries[0].extensions:
                    if e.type is ExtensionType.status_request:
                        try:
                            return parse_certificate_status(e.data)
                        except TLSError:
                            return None
        return None

    def server_sent(self, msg_type: HandshakeType) -> bool:
        return any(m.direction == "server" and m.type == msg_type for m in self.tls.messages)


def run_handshake(
    host: str,
    port: int,
    config: ClientConfig,
    *,
    timeout: float = 10.0,
    linger: float = 0.0,
    request: bytes | None = None,
    early_data: bytes | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> HandshakeTrace:
    """Connect, handshake, then optionally send ``request`` and read for up to ``linger`` seconds of quiet
    (NewSessionTickets, a response). Never raises for network or TLS failures: they are in the trace."""
    trace = HandshakeTrace(host=host, port=port)
    lines: list[str] = []
    user_sink = config.key_log

    def sink(line: str) -> None:
        lines.append(line)
        if user_sink is not None:
            user_sink(line)

    config = dataclasses.replace(config, key_log=sink)
    sent, received = bytearray(), bytearray()
    sent_times: list[tuple[int, float]] = []
    received_times: list[tuple[int, float]] = []
    start = clock()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:  # UnicodeError: a name IDNA cannot encode (an empty or long label)
        trace.failure, trace.error = "resolve", f"cannot resolve {host}: {e}"
        return trace
    sock: socket.socket | None = None
    errors = []
    for family, kind, proto, _, address in infos:
        candidate = socket.socket(family, kind, proto)
        try:
            candidate.settimeout(timeout)
            candidate.connect(address)
        except OSError as e:
            errors.append(f"{address[0]}: {e.strerror or e}")
            candidate.close()
            continue
        sock, trace.address = candidate, str(address[0])
        break
    if sock is None:
        trace.failure = "timeout" if any("timed out" in e for e in errors) else "connect"
        trace.error = "cannot connect: " + "; ".join(errors)
        return trace
    trace.connect_time = clock() - start
    conn = Engine(config)
    deadline = start + timeout

    def flush() -> None:
        out = conn.data_to_send()
        if out:
            sent_times.append((len(sent), clock() - start))
            sent.extend(out)
            sock.sendall(out)

    def collect() -> None:
        for event in conn.events():
            match event:
                case HandshakeComplete():
                    trace.negotiated = event
                    trace.handshake_time = clock() - start
                case SessionTicketReceived():
                    trace.tickets.append(event)
                case AlertReceived():
                    trace.alert_received = event.description
                case ApplicationData():
                    trace.application_data += event.data
                case _:
                    pass

    def read(until: float | None = None) -> bytes:
        remaining = min(deadline, until if until is not None else deadline) - clock()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if data:
            if trace.first_byte_time is None:
                trace.first_byte_time = clock() - start
            received_times.append((len(received), clock() - start))
            received.extend(data)
        return data

    try:
        conn.start()
        if early_data is not None:
            try:
                conn.send_data(early_data)  # 0-RTT: allowed before the handshake when a ticket permits it
            except ConfigError:
                trace.tls.notes.append("no 0-RTT: no stored ticket allows it (the server's max_early_data_size, "
                                       "or the ticket was issued for another ALPN than the first one offered)")
        flush()
        while not conn.handshake_complete:
            data = read()
            conn.receive_data(data)
            collect()
            flush()
        if request is not None:
            conn.send_data(request)
            flush()
        quiet_until = clock() + linger
        while linger > 0 and clock() < min(quiet_until, deadline):
            try:
                data = read(quiet_until)
            except TimeoutError:
                break
            conn.receive_data(data)
            collect()
            flush()
            if not data:
                break
            quiet_until = clock() + linger
        conn.close()
        flush()
    except RemoteAlert as e:
        trace.failure, trace.alert_received = "remote_alert", e.description
        trace.error = str(e)
    except CertificateError as e:
        trace.failure, trace.alert_sent, trace.error = "certificate", e.description, e.message
    except AlertError as e:
        trace.failure, trace.alert_sent, trace.error = "protocol", e.description, str(e)
    except UnexpectedEOF:
        trace.failure, trace.error = "eof", "the server closed the connection during the handshake"
    except TLSError as e:
        trace.failure, trace.error = "protocol", str(e)
    except TimeoutError:
        trace.failure, trace.error = "timeout", f"no answer within {timeout:g} s"
    except ConnectionResetError:
        trace.failure, trace.error = "reset", "the connection was reset (TCP RST)"
    except OSError as e:
        trace.failure, trace.error = "reset", f"socket error: {e.strerror or e}"
    finally:
        try:
            collect()
            if trace.failure is not None:
                flush()  # our alert, when there is one
        except (OSError, TLSError):
            pass
        sock.close()
    if trace.failure is not None and trace.negotiated is not None and trace.failure in ("eof", "reset"):
        trace.failure = trace.error = None  # the handshake finished; the server just hung up afterwards
    trace.sent, trace.received = bytes(sent), bytes(received)
    notes = trace.tls.notes
    trace.tls = decode_connection(trace.sent, trace.received, parse_key_log("\n".join(lines)),
                                  client_times=sent_times, server_times=received_times)
    if not lines:  # the handshake failed before any secret existed: our own key log has none to miss
        trace.tls.notes = [n for n in trace.tls.notes if not n.startswith("no key log entry")]
    trace.tls.notes[:0] = notes
    return trace
