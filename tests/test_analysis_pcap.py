"""Captures cut short or broken (synthetic pcapng files written with dpkt), and key logs with bad lines."""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest

from tlskit.analysis.pcap import CaptureError, read_streams
from tlskit.analysis.records import parse_key_log


def _segment(seq: int, payload: bytes) -> bytes:
    tcp = dpkt.tcp.TCP(sport=40000, dport=443, seq=seq, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data=payload)
    ip = dpkt.ip.IP(src=bytes([127, 0, 0, 1]), dst=bytes([127, 0, 0, 1]), p=dpkt.ip.IP_PROTO_TCP, data=tcp)
    ip.len = len(bytes(ip))
    return bytes(dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x00" * 6, type=dpkt.ethernet.ETH_TYPE_IP,
                                        data=ip))


def _pcapng(path: Path, payloads: list[bytes]) -> list[int]:
    """Write one segment per payload; the file offset at which each packet's block ends."""
    ends = []
    with path.open("wb") as fh:
        writer = dpkt.pcapng.Writer(fh)
        seq = 1000
        for n, payload in enumerate(payloads):
            writer.writepkt(_segment(seq, payload), ts=1_700_000_000 + n)
            seq += len(payload)
            fh.flush()
            ends.append(fh.tell())
    return ends


def test_a_capture_cut_inside_a_packet_keeps_the_packets_before_the_cut(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcapng"
    ends = _pcapng(path, [b"A" * 100, b"B" * 100, b"C" * 100])
    path.write_bytes(path.read_bytes()[: ends[1] + 20])  # mid-way into the third packet's block
    [stream] = read_streams(path)
    assert stream.client_data == b"A" * 100 + b"B" * 100
    assert any("truncated or corrupt after packet 2" in note for note in stream.notes)


def test_a_capture_cut_before_its_first_packet_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcapng"
    ends = _pcapng(path, [b"A" * 100])
    path.write_bytes(path.read_bytes()[: ends[0] - 20])
    with pytest.raises(CaptureError, match="before its first packet"):
        read_streams(path)


def test_a_key_log_line_with_a_secret_of_no_hash_length_is_skipped_not_taken() -> None:
    """A later line with a short or odd-length secret used to replace the good one (or raise ValueError)."""
    random, secret = "ab" * 32, "cd" * 48
    text = "\n".join([
        f"SERVER_HANDSHAKE_TRAFFIC_SECRET {random} {secret}",
        f"SERVER_HANDSHAKE_TRAFFIC_SECRET {random} 00",
        f"CLIENT_HANDSHAKE_TRAFFIC_SECRET {random} abc",
        f"CLIENT_TRAFFIC_SECRET_0 {random} {'ef' * 32}",
    ])
    assert parse_key_log(text) == {bytes.fromhex(random): {"SERVER_HANDSHAKE_TRAFFIC_SECRET": bytes.fromhex(secret),
                                                           "CLIENT_TRAFFIC_SECRET_0": bytes.fromhex("ef" * 32)}}


def test_a_stream_captured_in_one_direction_only_says_so(tmp_path: Path) -> None:
    """A one-sided capture (or a silent peer) is not "every record decrypted": the missing side is named."""
    path = tmp_path / "one-way.pcapng"
    _pcapng(path, [b"\x16\x03\x01\x00\x05hello"])
    [stream] = read_streams(path)
    assert stream.server_data == b""
    assert any("nothing from 127.0.0.1:443" in note and "one direction" in note for note in stream.notes)
