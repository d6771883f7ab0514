"""TCP streams from a pcap or pcapng file: packets read by ``dpkt``, each connection's two byte streams
reassembled in sequence order (retransmissions and overlaps dropped, a gap ends the stream with a note)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import dpkt

__all__ = ["CaptureError", "TcpStream", "read_streams"]

Endpoint = tuple[str, int]


class CaptureError(Exception):
    """The file is not a capture we can read (the message says what it is)."""


@dataclass(slots=True)
class _Flow:
    """One direction of a TCP connection: its segments until reassembly."""

    segments: list[tuple[int, bytes, float]] = field(default_factory=list)
    isn: int | None = None  # sequence number of the SYN, when captured
    syn_only: bool = False  # the SYN had no ACK: this side opened the connection
    first_time: float = 0.0


@dataclass(kw_only=True, slots=True)
class TcpStream:
    """One TCP connection: ``client`` opened it (sent the SYN, or else the ClientHello)."""

    index: int
    client: Endpoint
    server: Endpoint
    client_data: bytes
    server_data: bytes
    client_times: list[tuple[int, float]]  # (stream offset, capture time) per segment
    server_times: list[tuple[int, float]]
    start: float
    notes: list[str]


def _packets(fh: BinaryIO, name: str) -> Iterator[tuple[float, Any, int]]:
    magic = fh.read(4)
    fh.seek(0)
    reader: Any
    try:
        reader = dpkt.pcapng.Reader(fh) if magic == b"\n\r\r\n" else dpkt.pcap.Reader(fh)
    except (ValueError, dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError) as e:
        raise CaptureError(f"{name} is not a pcap or pcapng capture (tcpdump -w / dumpcap writes one): {e}") from None
    link = reader.datalink()
    for ts, buf in reader:
        yield float(ts), buf, link


def _ip_layer(buf: bytes, link: int) -> Any:
    """The IPv4/IPv6 packet inside a link-layer frame (Ethernet, Linux cooked v1/v2, raw IP, BSD loopback)."""
    try:
        if link == dpkt.pcap.DLT_EN10MB:
            frame: Any = dpkt.ethernet.Ethernet(buf)
            return frame.data
        if link == dpkt.pcap.DLT_LINUX_SLL:
            return dpkt.sll.SLL(buf).data
        if link == 276:  # DLT_LINUX_SLL2
            return dpkt.sll2.SLL2(buf).data
        if link in (dpkt.pcap.DLT_RAW, 101, 228, 229):
            return dpkt.ip.IP(buf) if buf[:1] and buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
        if link in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            return dpkt.loopback.Loopback(buf).data
    except (dpkt.dpkt.UnpackError, IndexError, ValueError):
        return None
    return None


def _address(ip: Any) -> tuple[str, str]:
    if isinstance(ip, dpkt.ip.IP):
        return socket.inet_ntop(socket.AF_INET, ip.src), socket.inet_ntop(socket.AF_INET, ip.dst)
    return socket.inet_ntop(socket.AF_INET6, ip.src), socket.inet_ntop(socket.AF_INET6, ip.dst)


def read_streams(path: str | os.PathLike[str]) -> list[TcpStream]:
    """Every TCP connection in the capture with payload or a SYN, in order of first packet. A capture cut short
    (a copy taken while tcpdump wrote it, a full disk) keeps the packets before the cut, each stream noting it;
    CaptureError only when not even the first packet can be read."""
    flows: dict[tuple[Endpoint, Endpoint], _Flow] = {}
    packets = 0
    cut: str | None = None
    try:
        with open(path, "rb") as fh:
            for ts, buf, link in _packets(fh, os.fspath(path)):
                packets += 1
                ip = _ip_layer(buf, link)
                if not isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) or not isinstance(ip.data, dpkt.tcp.TCP):
                    continue
                tcp = ip.data
                src, dst = _address(ip)
                key = ((src, tcp.sport), (dst, tcp.dport))
                flow = flows.get(key)
                if flow is None:
                    flow = flows[key] = _Flow(first_time=ts)
                if tcp.flags & dpkt.tcp.TH_SYN:
                    flow.isn = tcp.seq
                    flow.syn_only = not tcp.flags & dpkt.tcp.TH_ACK
                if tcp.data:
                    flow.segments.append((tcp.seq, bytes(tcp.data), ts))
    except OSError as e:
        raise CaptureError(f"cannot read {os.fspath(path)}: {e.strerror or e}") from None
    except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError) as e:
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if not packets:
            raise CaptureError(f"{os.fspath(path)} is truncated or corrupt before its first packet ({why})") from None
        cut = (f"the capture is truncated or corrupt after packet {packets} ({why}): what came later is "
               "missing")
    streams: list[TcpStream] = []
    done: set[tuple[Endpoint, Endpoint]] = set()
    for (a, b), flow in sorted(flows.items(), key=lambda item: item[1].first_time):
        if (a, b) in done:
            continue
        done.update({(a, b), (b, a)})
        reverse = flows.get((b, a), _Flow(first_time=flow.first_time))
        notes: list[str] = [cut] if cut else []
        a_data, a_times = _reassemble(flow, notes, f"{a[0]}:{a[1]}")
        b_data, b_times = _reassemble(reverse, notes, f"{b[0]}:{b[1]}")
        if not a_data and not b_data:
            continue
        if not a_data or not b_data:  # not "every record decrypted": half of the conversation is not there
            silent = b if a_data else a
            notes.append(f"nothing from {silent[0]}:{silent[1]} in the capture: only one direction was captured, "
                         "or that side sent no data")
        a_is_client = flow.syn_only or (not reverse.syn_only and _looks_like_client_hello(a_data))
        if not a_is_client and not reverse.syn_only and not _looks_like_client_hello(b_data):
            a_is_client = True  # neither side's start is telling; keep capture order
        client, server = (a, b) if a_is_client else (b, a)
        c_data, c_times, s_data, s_times = (a_data, a_times, b_data, b_times) if a_is_client else (
            b_data, b_times, a_data, a_times)
        streams.append(TcpStream(index=len(streams), client=client, server=server, client_data=c_data,
                                 server_data=s_data, client_times=c_times, server_times=s_times,
                                 start=min(flow.first_time, reverse.first_time), notes=notes))
    return streams


def _looks_like_client_hello(data: bytes) -> bool:
    return len(data) > 5 and data[0] == 22 and data[1] == 3 and data[5] == 1


def _reassemble(flow: _Flow, notes: list[str], name: str) -> tuple[bytes, list[tuple[int, float]]]:
    """The direction's bytes in sequence order, with the capture time of each segment's first byte."""
    if not flow.segments:
        return b"", []
    base = (flow.isn + 1) if flow.isn is not None else min(seq for seq, _, _ in flow.segments)
    # Relative offsets modulo 2^32 survive a sequence number wrap.
    ordered = sorted(((seq - base) % (1 << 32), data, ts) for seq, data, ts in flow.segments)
    out = bytearray()
    times: list[tuple[int, float]] = []
    for offset, data, ts in ordered:
        end = offset + len(data)
        if end <= len(out):
            continue  # a retransmission of bytes we have
        if offset > len(out):
            notes.append(f"{name}: {offset - len(out)} bytes missing from the capture at stream offset "
                         f"{len(out)}; the rest of this direction is not decoded")
            break
        times.append((len(out), ts))
        out += data[len(out) - offset :]
    return bytes(out), times
