"""``tlskit decrypt``: TLS 1.3 connections in a capture, decrypted with an NSS key log (what Wireshark does with
``tls.keylog_file``): handshake messages and application data per TCP stream, 0-RTT and KeyUpdates included."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..enums import ContentType
from .pcap import TcpStream, read_streams
from .records import Connection, Direction, decode_connection, parse_key_log
from .summary import message_fields, message_line, suite_name, version_name

__all__ = ["EXIT_NO_TLS", "EXIT_OK", "EXIT_UNDECRYPTED", "DecryptedStream", "decrypt_capture", "render_text"]

_DIRECTIONS: tuple[Direction, ...] = ("client", "server")
EXIT_OK = 0  # every TLS 1.3 record decrypted
EXIT_UNDECRYPTED = 1  # some record could not be decrypted (no key log entry, a capture gap, TLS 1.2)
EXIT_NO_TLS = 3  # the capture holds no TLS connection


@dataclass(kw_only=True, slots=True)
class DecryptedStream:
    stream: TcpStream
    tls: Connection
    notes: list[str] = field(default_factory=list)

    @property
    def is_tls(self) -> bool:
        return any(r.outer_type == ContentType.handshake for r in self.tls.records)

    @property
    def fully_decrypted(self) -> bool:
        return not self.notes and all(r.decrypted for r in self.tls.records)


def decrypt_capture(capture: str | os.PathLike[str], key_log_text: str) -> list[DecryptedStream]:
    """Decode every TCP stream of ``capture`` as TLS with the secrets of ``key_log_text``."""
    secrets = parse_key_log(key_log_text)
    out = []
    for stream in read_streams(capture):
        tls = decode_connection(stream.client_data, stream.server_data, secrets,
                                client_times=stream.client_times, server_times=stream.server_times)
        out.append(DecryptedStream(stream=stream, tls=tls, notes=[*stream.notes, *tls.notes]))
    return out


def exit_status(streams: list[DecryptedStream]) -> int:
    tls = [s for s in streams if s.is_tls]
    if not tls:
        return EXIT_NO_TLS
    return EXIT_OK if all(s.fully_decrypted for s in tls) else EXIT_UNDECRYPTED


def _endpoint(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _payload(data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"length": len(data), "base64": base64.b64encode(data).decode()}
    with contextlib.suppress(UnicodeDecodeError):
        out["text"] = data.decode("utf-8")
    return out


def stream_json(item: DecryptedStream) -> dict[str, Any]:
    s, tls = item.stream, item.tls
    return {
        "stream": s.index,
        "client": _endpoint(s.client),
        "server": _endpoint(s.server),
        "start": s.start,
        "client_random": tls.client_random.hex() if tls.client_random else None,
        "version": version_name(tls.version) if tls.version else None,
        "cipher_suite": suite_name(tls.cipher_suite) if tls.cipher_suite is not None else None,
        "hello_retry": tls.hello_retry,
        "early_data": {"offered": tls.early_data_offered, "accepted": tls.early_data_accepted},
        "keys_found": tls.keys_found,
        "records": [
            {"direction": r.direction, "time": r.time, "epoch": r.epoch, "outer_type": ContentType(r.outer_type).name,
             "content_type": ContentType(r.content_type).name, "length": r.length, "decrypted": r.decrypted,
             **({"note": r.note} if r.note else {})}
            for r in tls.records
        ],
        "messages": [message_fields(m) for m in tls.messages],
        "application_data": {d: _payload(tls.application_data(d)) for d in _DIRECTIONS},
        "notes": item.notes,
    }


def write_payloads(streams: list[DecryptedStream], directory: Path) -> list[Path]:
    """``stream-N-client.bin`` / ``stream-N-server.bin``: each direction's decrypted application data."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for item in streams:
        if not item.is_tls:
            continue
        for direction in _DIRECTIONS:
            data = item.tls.application_data(direction)
            if data:
                path = directory / f"stream-{item.stream.index}-{direction}.bin"
                path.write_bytes(data)
                written.append(path)
    return written


def _preview(data: bytes, limit: int = 2000) -> str:
    text = data[:limit].decode("utf-8", "replace")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if text and printable / len(text) > 0.9:
        body = text.replace("\r\n", "\n").rstrip("\n")
    else:
        body = "\n".join(data[i : i + 32].hex(" ") for i in range(0, min(len(data), 256), 32))
    more = f"\n    ... {len(data) - limit} more bytes" if len(data) > limit else ""
    return "\n".join("    " + line for line in body.splitlines()) + more


def render_text(streams: list[DecryptedStream], out: Callable[[str], None]) -> None:
    shown = [s for s in streams if s.is_tls]
    if not shown:
        out("no TLS connection found in the capture")
        return
    for item in shown:
        s, tls = item.stream, item.tls
        suite = suite_name(tls.cipher_suite) if tls.cipher_suite is not None else "?"
        version = version_name(tls.version) if tls.version else "?"
        out(f"== stream {s.index}: {_endpoint(s.client)} -> {_endpoint(s.server)}  {version} {suite}"
            + (" (HelloRetryRequest)" if tls.hello_retry else ""))
        if tls.client_random:
            keys = "keys found" if tls.keys_found else "NO KEYS in key log"
            out(f"   client_random {tls.client_random.hex()} ({keys})")
        t0 = s.start
        for message in tls.messages:
            arrow = "C->S" if message.direction == "client" else "S->C"
            when = f"+{(message.time - t0) * 1000:8.3f}ms" if message.time is not None else " " * 12
            out(f"   {when} {arrow} [{message.epoch}] {message_line(message)}")
        undecrypted = sum(1 for r in tls.records if not r.decrypted)
        out(f"   records: {len(tls.records)} ({undecrypted} not decrypted)")
        for direction in _DIRECTIONS:
            data = tls.application_data(direction)
            if data:
                out(f"   application data from {direction} ({len(data)} bytes):")
                out(_preview(data))
        for note in item.notes:
            out(f"   note: {note}")
        out("")
