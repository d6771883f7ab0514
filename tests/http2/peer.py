"""The HTTP/2 client the `tlskit serve` HTTP/2 tests drive: the ``h2`` package over Python's ``ssl``, an
independent implementation of the framing, frame by frame; and a server started with h2 on."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from tests.served import Served, start

BIG = os.urandom(300_000)  # big.bin in the site root (conftest.py)


class Client:
    """One HTTP/2 connection: ``request`` opens a stream, ``pump`` reads frames until a condition holds."""

    def __init__(self, served: Served, settings: dict[int, int] | None = None, *, rcvbuf: int = 0,
                 strict: bool = True) -> None:
        ctx = served.context()
        ctx.set_alpn_protocols(["h2"])
        raw = socket.socket()
        if rcvbuf:  # a small receive buffer makes the server's transport pause sooner
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", served.port))
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        # strict=False: h2 sends header lists as given (uppercase names, pseudo-headers missing), as a broken client
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=strict,
            normalize_outbound_headers=strict))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.bodies: dict[int, bytearray] = {}
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.ended: set[int] = set()
        self.ended_on_headers: set[int] = set()  # END_STREAM on the response's HEADERS frame
        self.informational: list[tuple[int, bytes]] = []  # (stream, :status) of 1xx responses
        self.reset: dict[int, int] = {}
        self.goaway: tuple[int, int] | None = None  # (last stream id, error code)
        self.reset_frames: list[int] = []  # the stream of each RST_STREAM frame, in order
        self._frames = b""
        self.closed = False
        self.consume = True  # give flow-control credit back as data arrives
        self.flush()

    def flush(self) -> None:
        if data := self.conn.data_to_send():
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: tuple[tuple[bytes, bytes], ...] = ()) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", method.encode()), (b":scheme", b"https"),
                                     (b":authority", b"localhost"), (b":path", path.encode()), *headers],
                               end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        return sid

    def pump(self, done: object, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not (callable(done) and done()):
            assert time.monotonic() < deadline, "timed out waiting for the server"
            try:
                data = self.sock.recv(65536)
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                return
            for event in self.conn.receive_data(self._without_goaway(data)):
                match event:
                    case h2.events.ResponseReceived():
                        self.headers[event.stream_id] = dict(event.headers)
                        if event.stream_ended is not None:
                            self.ended_on_headers.add(event.stream_id)
                    case h2.events.InformationalResponseReceived():
                        self.informational.append((event.stream_id, dict(event.headers)[b":status"]))
                    case h2.events.DataReceived():
                        self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                        if self.consume:
                            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    case h2.events.StreamEnded():
                        self.ended.add(event.stream_id)
                    case h2.events.StreamReset():
                        self.reset[event.stream_id] = event.error_code
            self.flush()

    def _without_goaway(self, data: bytes) -> bytes:
        """Whole frames except GOAWAY, which is recorded: h2 would refuse the rest of a stream in flight after it
        (its connection closes on GOAWAY), though RFC 9113 §6.8 lets the server finish that stream."""
        self._frames += data
        out = b""
        while len(self._frames) >= 9 and len(self._frames) >= 9 + (size := int.from_bytes(self._frames[:3], "big")):
            frame, self._frames = self._frames[:9 + size], self._frames[9 + size:]
            if frame[3] == 0x3:
                self.reset_frames.append(int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF)
            if frame[3] == 0x7:
                self.goaway = (int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF, int.from_bytes(frame[13:17], "big"))
            else:
                out += frame
        return out

    def send_goaway(self, last_stream_id: int = 0) -> None:
        """A GOAWAY written past h2, which would refuse to read the rest of the streams in flight after its own."""
        self.flush()
        self.sock.sendall(GoAwayFrame(0, last_stream_id=last_stream_id, error_code=ErrorCodes.NO_ERROR).serialize())

    def status(self, sid: int) -> int:
        return int(self.headers[sid][b":status"])

    def close(self) -> None:
        self.sock.close()


def serve_h2(tmp_path: Path, *args: str, toml: str = "") -> Served:
    config = tmp_path / "site.toml"
    config.write_text('[tls]\nalpn = ["h2", "http/1.1"]\n' + toml)
    return start(["--config", str(config), "--host", "127.0.0.1", "--port", "0", *args],
                 {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")})


def no_traceback(served: Served) -> None:
    assert not any("Traceback" in line for line in served.log), "".join(served.log)
