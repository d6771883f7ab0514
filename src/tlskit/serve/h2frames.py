"""The frame level of HTTP/2 (RFC 9113) under ``tlskit.serve.http2``: h2's state machine with the error codes and
the indexing RFC 9113 and RFC 7541 ask for where h2 does otherwise, and the split of what the client sends into
runs for h2 and the GOAWAY frames kept from it."""

from __future__ import annotations

import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
from h2.errors import ErrorCodes
from h2.stream import StreamClosedBy
from hpack.exceptions import HPACKError
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, RstStreamFrame

__all__ = ["H2ServerConnection", "InboundFrames"]

_GOAWAY, _HEADER_BLOCK, _END_HEADERS = 0x7, (0x1, 0x5, 0x9), 0x4  # frame types (HEADERS, PUSH_PROMISE, CONTINUATION)
_DATA, _SETTINGS, _CONTINUATION, _ACK = 0x0, 0x4, 0x9, 0x1
_CARRY_NOTHING = (0x2, 0x4, 0x6, 0x8)  # PRIORITY, SETTINGS, PING, WINDOW_UPDATE


RESPONSE_TABLE_SIZE = 4096  # bytes of HPACK dynamic table our responses' encoder uses at most (RFC 7541 §4.2)


class _ResponseEncoder(hpack.Encoder):
    """h2's HPACK encoder, holding its dynamic table to ``RESPONSE_TABLE_SIZE`` whatever the client's
    SETTINGS_HEADER_TABLE_SIZE (RFC 7541 §4.2: that is the most the encoder may use, not what it must). h2 gives
    the encoder the client's value: a client announcing 2^31-1 made every new header value (a Range's
    Content-Range, each second's Date) a table entry for good, and the encoder searches its table linearly for
    every field, so each response cost more than the one before on a long connection."""

    @property
    def header_table_size(self) -> int:
        size: int = self.header_table.maxsize
        return size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        hpack.Encoder.header_table_size.fset(self, min(value, RESPONSE_TABLE_SIZE))  # type: ignore[attr-defined]


class H2ServerConnection(h2.connection.H2Connection):
    """h2's server state machine, with COMPRESSION_ERROR for a header block HPACK cannot decode (RFC 9113 §4.3),
    where h2 says PROTOCOL_ERROR: h2 sends its GOAWAY with the code of the exception it is raising; and DATA on a
    stream we reset ignored (§5.1), where h2 answers each frame with RST_STREAM. This leans on h2 internals
    (4.2-4.4: ``_receive_frame``, ``ProtocolError ... from`` the HPACK error, ``_handle_data_on_closed_stream``);
    if they change, the code falls back to h2's behaviour, and test_connection_errors_carry_the_code_rfc9113_names
    or test_data_the_client_had_in_flight_on_a_stream_the_server_reset_is_ignored fails."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self.encoder = _ResponseEncoder()
        self.closed_stream_data = 0  # DATA frames on closed streams: each costs us a frame back, the flood check counts

    def release(self) -> None:
        """The connection is over: h2 keeps bound methods of itself in its frame dispatch table, a reference
        cycle that would keep this connection (and its streams) for the garbage collector."""
        table = getattr(self, "_frame_dispatch_table", None)
        if isinstance(table, dict):
            table.clear()

    def _receive_frame(self, frame: Frame) -> list[h2.events.Event]:
        try:
            return super()._receive_frame(frame)
        except h2.exceptions.ProtocolError as e:
            if type(e) is h2.exceptions.ProtocolError and isinstance(e.__cause__, HPACKError):
                e.error_code = ErrorCodes.COMPRESSION_ERROR  # not DenialOfServiceError (oversized list): calm
            raise

    def _handle_data_on_closed_stream(self, events: list[h2.events.Event], exc: h2.exceptions.StreamClosedError,
                                      frame: DataFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        """§5.1: "An endpoint MUST ignore frames that it receives on closed streams after it has sent a RST_STREAM
        frame": a client uploading when we reset its stream had a window's worth in flight, a frame back for each
        (h2's STREAM_CLOSED) is noise. Their bytes still count for the connection window (h2's WINDOW_UPDATE)."""
        self.closed_stream_data += 1
        frames, events = super()._handle_data_on_closed_stream(events, exc, frame)
        if self._stream_closed_by(frame.stream_id) is StreamClosedBy.SEND_RST_STREAM:
            frames = [f for f in frames if not isinstance(f, RstStreamFrame)]
        return frames, events


class InboundFrames:
    """What the client sends, as runs of bytes for h2 and the GOAWAY frames between them (RFC 9113 §6.8).

    h2 takes a GOAWAY from the peer as the end of the connection: its state machine then refuses to send HEADERS
    or DATA and treats any further frame but GOAWAY (WINDOW_UPDATE, DATA, RST_STREAM) as a protocol error, so the
    streams in flight could neither be answered nor follow flow control, even with their frames written past h2.
    A well-formed GOAWAY on stream 0 outside a header block is therefore kept from h2; any other, malformed ones
    included, goes to h2, which raises the protocol error. Only frame headers are looked at: payloads pass on.
    A run ends after every ``blocks_per_part`` header blocks, so the streams of one run are refused or started
    before h2 counts the next ones against its ceiling."""

    __slots__ = ("_blocks_per_part", "_held", "_left", "_preface", "block_bytes", "block_since", "idle", "in_block",
                 "malformed")

    def __init__(self, *, blocks_per_part: int) -> None:
        self._blocks_per_part = blocks_per_part
        self._preface = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # passed on: h2 checks it
        self._held = b""  # a frame header, or a GOAWAY frame, not complete yet
        self._left = 0  # payload bytes of the current frame still to pass on
        self.in_block = False  # inside a header block: HEADERS or PUSH_PROMISE without END_HEADERS, CONTINUATION
        self.block_bytes = 0  # encoded bytes of the header block still open (0: none is)
        self.block_since = 0.0  # when it began (time.monotonic)
        self.idle = 0  # frames that carry nothing: empty DATA, PRIORITY, SETTINGS, PING, WINDOW_UPDATE, unknown
        # a SETTINGS ACK with a payload: FRAME_SIZE_ERROR (§6.5), where h2 (hyperframe) says PROTOCOL_ERROR
        self.malformed = False

    def split(self, data: bytes, max_frame_size: int) -> list[bytes | GoAwayFrame]:
        if self._held:
            data, self._held = self._held + data, b""
        parts: list[bytes | GoAwayFrame] = []
        blocks = 0  # header blocks ended in this run
        start, pos = 0, min(self._preface, len(data))
        self._preface -= pos
        while pos < len(data):
            if self._left:
                step = min(self._left, len(data) - pos)
                pos, self._left = pos + step, self._left - step
                continue
            if len(data) - pos < 9:
                self._held = data[pos:]
                break
            length, kind, flags = int.from_bytes(data[pos:pos + 3], "big"), data[pos + 3], data[pos + 4]
            if (kind == _GOAWAY and not self.in_block and 8 <= length <= max_frame_size
                    and not int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF):
                if len(data) - pos < 9 + length:
                    self._held = data[pos:]
                    break
                goaway = GoAwayFrame(0)
                goaway.parse_body(memoryview(data[pos + 9:pos + 9 + length]))
                parts += [data[start:pos], goaway] if start < pos else [goaway]
                start = pos = pos + 9 + length
                continue
            if kind == _SETTINGS and flags & _ACK and length and not data[pos + 5:pos + 9].strip(b"\0"):
                self.malformed = True  # (on a stream, h2's PROTOCOL_ERROR is the right code)
            if kind in _CARRY_NOTHING or kind > _CONTINUATION or (kind == _DATA and not length and not flags & 1):
                self.idle += 1
            if kind in _HEADER_BLOCK:
                if not self.in_block:
                    self.block_since, self.block_bytes = time.monotonic(), 0
                self.in_block = not flags & _END_HEADERS
                self.block_bytes = self.block_bytes + length if self.in_block else 0
                blocks += not self.in_block
                if blocks == self._blocks_per_part:  # the run ends with this frame (h2 keeps a frame cut short)
                    blocks, end = 0, min(pos + 9 + length, len(data))
                    parts.append(data[start:end])
                    start = end
            pos, self._left = pos + 9, length
        if start < len(data) - len(self._held):
            parts.append(data[start:len(data) - len(self._held)])
        return parts
