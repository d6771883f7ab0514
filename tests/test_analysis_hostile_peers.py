"""The operator tools as clients of servers that misbehave on purpose: each connection stays within the tool's
timeout and a bounded buffer, whatever the server sends, and how often."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.loopback import thread_per_connection
from tlskit.analysis.bench import BenchOptions, Target, run_bench
from tlskit.analysis.clienthello import HelloSpec, send_hello
from tlskit.analysis.handshake import run_handshake
from tlskit.analysis.scan import ScanOptions, scan
from tlskit.cli.main import main
from tlskit.config import ClientConfig

HOST = "127.0.0.1"


@contextlib.contextmanager
def hostile_server(behave: Callable[[socket.socket, threading.Event], None]) -> Iterator[int]:
    """A loopback server whose every connection reads the ClientHello, then runs ``behave`` until stopped."""

    def handle(conn: socket.socket, stop: threading.Event) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.recv(65536)
            behave(conn, stop)

    with thread_per_connection(handle, HOST) as port:
        yield port


def drip(conn: socket.socket, stop: threading.Event) -> None:
    """A handshake record header announcing 16 KiB, then its body one byte every 50 ms (slowloris), for 3 s."""
    conn.sendall(b"\x16\x03\x03\x40\x00")
    give_up = time.monotonic() + 3
    while not stop.wait(0.05) and time.monotonic() < give_up:
        conn.sendall(b"\x02")


def endless_server_hello(conn: socket.socket, stop: threading.Event) -> None:
    """A ServerHello header announcing 2^24-1 bytes, then full handshake records of zeros (4 MiB of them)."""
    conn.sendall(b"\x16\x03\x03\x00\x04\x02\xff\xff\xff")
    record = b"\x16\x03\x03\x40\x00" + bytes(0x4000)
    for _ in range(256):
        if stop.is_set():
            break
        conn.sendall(record)


def test_crafted_hello_to_a_dripping_server_gives_up_at_the_timeout() -> None:
    with hostile_server(drip) as port:
        began = time.monotonic()
        answer = send_hello(HOST, port, HelloSpec(server_name="localhost"), timeout=0.5)
        took = time.monotonic() - began
    assert answer.kind == "timeout" and "within 0.5 s" in answer.detail
    assert took < 2, f"{took:.1f} s: a byte every 50 ms kept restarting the socket timeout"


def test_crafted_hello_to_an_endless_server_hello_stops_at_the_byte_limit() -> None:
    with hostile_server(endless_server_hello) as port:
        answer = send_hello(HOST, port, HelloSpec(server_name="localhost"), timeout=3)
    assert answer.kind == "not_tls" and "no ServerHello or alert within the first" in answer.detail
    assert len(answer.raw) <= 64


def test_bench_against_a_dripping_server_ends_near_its_duration() -> None:
    with hostile_server(drip) as port:
        target = Target(host=HOST, port=port, config=ClientConfig(server_name="localhost", verify_peer=False))
        began = time.monotonic()
        [result] = run_bench(BenchOptions(targets=(target,), duration=0.3, timeout=0.5))
        took = time.monotonic() - began
    assert not result.samples and result.errors[0].startswith("TimeoutError")
    assert took < 2, f"{took:.1f} s: the handshake outlived its timeout"


@pytest.mark.parametrize("tool", ["probe", "scan", "diagnose", "bench"])
def test_a_name_with_an_empty_label_is_a_usage_error_for_every_tool(
        tool: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([tool, "foo..bar:47199", "--json", "--timeout", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "bad target 'foo..bar:47199'" in err


def test_a_name_idna_cannot_encode_is_a_resolve_failure_of_the_library_too() -> None:
    trace = run_handshake("a" * 64 + ".example", 47199, ClientConfig(verify_peer=False), timeout=1)
    assert trace.failure == "resolve" and "label" in (trace.error or "")
    report = scan(ScanOptions(host="foo..bar", port=47199, timeout=1))
    assert report.unresolved is not None and report.exit_status == 3


def test_bench_resumed_against_a_silent_server_exits_3_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with hostile_server(lambda conn, stop: stop.wait(3)) as port:
        status = main(["bench", f"{HOST}:{port}", "-k", "--mode", "resumed", "--timeout", "0.3", "--json"])
    out, err = capsys.readouterr()
    assert status == 3 and out == "" and err.count("\n") == 1
    assert err.startswith("tlskit bench: error: --mode resumed: the first handshake") and "TimeoutError" in err
