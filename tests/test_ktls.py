"""Kernel TLS (tlskit.io.ktls) on the host: struct layouts against KTLS.md, the fallback on a kernel without
the ``tls`` module (this CI machine), and the engine <-> kernel hand-over against an emulated kernel that
seals and opens records from the ``crypto_info`` it was given. The real kernel runs in tests/test_ktls_vm.py.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from tests import pairing
from tlskit.connection import Connection
from tlskit.crypto.keyschedule import traffic_key_iv
from tlskit.crypto.suites import suite_params
from tlskit.enums import CipherSuite, ContentType
from tlskit.errors import ConfigError, ConnectionClosedError
from tlskit.events import ApplicationData, ConnectionClosed
from tlskit.io import ktls
from tlskit.io.common import TLSSession
from tlskit.io.ktls import KernelSupport, KTLSError, KTLSPolicy
from tlskit.io.socket import TLSSocket, connect, wrap_server_socket

SUITES = list(ktls.CIPHER_TYPES)


# --- struct layouts (KTLS.md "Facts") -------------------------------------------------------------------


@pytest.mark.parametrize(("suite", "size"), [(SUITES[0], 40), (SUITES[1], 56), (SUITES[2], 56)])
def test_crypto_info_matches_the_kernel_struct(suite: CipherSuite, size: int) -> None:
    key = bytes(range(suite_params(suite).key_len))
    iv = bytes(range(100, 112))
    seq = 0x0102030405060708
    info = ktls.crypto_info(suite, key, iv, seq)
    assert len(info) == size
    if suite is CipherSuite.TLS_CHACHA20_POLY1305_SHA256:
        assert info == struct.pack("=HH12s32s8s", 0x0304, 54, iv, key, seq.to_bytes(8, "big"))
    else:
        cipher = 51 if suite is CipherSuite.TLS_AES_128_GCM_SHA256 else 52
        assert info == struct.pack(f"=HH8s{len(key)}s4s8s", 0x0304, cipher, iv[4:], key, iv[:4],
                                   seq.to_bytes(8, "big"))
    assert info[:4] == b"\x04\x03" + bytes([ktls.CIPHER_TYPES[suite], 0])  # little-endian version, cipher


def test_constants_are_the_linux_ones() -> None:
    assert (ktls.SOL_TLS, ktls.TCP_ULP, ktls.TLS_TX, ktls.TLS_RX) == (282, 31, 1, 2)
    assert (ktls.TLS_SET_RECORD_TYPE, ktls.TLS_GET_RECORD_TYPE) == (1, 2)
    assert ktls.kernel_version("6.1.0-56-cloud-amd64") == (6, 1)
    assert ktls.kernel_version("6.14.2") >= ktls.REKEY_SINCE > ktls.kernel_version("6.12.117+deb12-cloud-amd64")


def test_policy_values() -> None:
    assert ktls.policy(False) is None
    assert ktls.policy("auto") == KTLSPolicy()
    assert ktls.policy(True) == KTLSPolicy(warn=True)
    custom = KTLSPolicy(rx="never")
    assert ktls.policy(custom) is custom
    with pytest.raises(ConfigError):
        ktls.policy("yes")  # type: ignore[arg-type]


# --- feature detection on this machine -------------------------------------------------------------------


def test_probe_runs_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake() -> KernelSupport:
        calls.append(1)
        return KernelSupport("x", ulp=False, reason="r")

    monkeypatch.setattr(ktls, "_probed", None)
    monkeypatch.setattr(ktls, "_probe", fake)
    assert ktls.probe() is ktls.probe()
    assert calls == [1]


def test_probe_reports_why_when_the_kernel_has_no_tls_module() -> None:
    support = ktls.probe()
    if support.ulp:
        pytest.skip(f"this kernel ({support.release}) has kTLS; tests/test_ktls_vm.py covers the other case")
    assert not support.available
    assert "TCP_ULP tls" in support.reason and support.release in support.reason


@pytest.fixture
def server_config() -> Any:
    return pairing.server_config(alpn=("x",))


def _serve_once(config: Any, handler: Any, **kw: Any) -> tuple[int, threading.Thread, dict[str, Any]]:
    listener = socket.create_server(("127.0.0.1", 0))
    box: dict[str, Any] = {}

    def run() -> None:
        sock, _ = listener.accept()
        listener.close()
        sock.settimeout(10)
        with wrap_server_socket(sock, config, **kw) as tls:
            try:
                box["result"] = handler(tls)
            except BaseException as e:
                box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, box


@pytest.mark.parametrize("option", ["auto", True])
def test_fallback_keeps_every_byte_and_logs_why(option: Any, server_config: Any, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if ktls.probe().ulp:
        pytest.skip("this kernel has kTLS")
    caplog.set_level(logging.INFO, logger="tlskit.ktls")
    monkeypatch.setattr(ktls, "_reported", set())
    blob = bytes(range(256)) * 4096
    (tmp_path / "f").write_bytes(blob)

    def handler(tls: TLSSocket) -> bytes:
        got = b""
        while len(got) < 100_000:
            got += tls.recv(65536)
        with (tmp_path / "f").open("rb") as f:
            assert tls.sendfile(f, 1000, 500_000) == 500_000
        tls.sendall(got)
        assert tls.ktls is None
        return got

    port, thread, box = _serve_once(server_config, handler, ktls=option)
    with connect("127.0.0.1", port, config=pairing.client_config(), timeout=10, ktls=option) as tls:
        assert tls.ktls is None
        tls.sendall(blob[:100_000])
        got = b""
        while len(got) < 600_000:
            chunk = tls.recv(65536)
            assert chunk
            got += chunk
    thread.join(10)
    assert "error" not in box, box
    assert got == blob[1000:501_000] + blob[:100_000]
    records = [r for r in caplog.records if r.name == "tlskit.ktls" and r.levelno >= logging.INFO]
    assert len(records) == 1  # the kernel's reason, said once per process (then at DEBUG)
    assert "records stay in userspace" in records[0].getMessage() and "TCP_ULP tls" in records[0].getMessage()
    assert records[0].levelno == (logging.WARNING if option is True else logging.INFO)


def test_fallback_when_the_cipher_is_not_in_the_kernel(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    support = KernelSupport("6.1.0-test", ulp=True, ciphers=frozenset({SUITES[2]}))
    monkeypatch.setattr(ktls, "probe", lambda: support)
    monkeypatch.setattr(ktls, "_reported", set())
    sock = FakeKernelSocket(rekey=False)
    session = _established_session(SUITES[0])
    with caplog.at_level(logging.INFO, logger="tlskit.ktls"):
        assert ktls.enable(sock, session.server, KTLSPolicy()) is None  # type: ignore[arg-type]
    assert "does not take TLS_AES_128_GCM_SHA256" in caplog.text
    assert not sock.ulp


# --- the hand-over, against an emulated kernel -------------------------------------------------------------


class FakeKernelSocket:
    """Just enough of Linux kTLS: ``crypto_info`` parsed back into key/iv/seq; ``sendall``/``sendmsg`` seal,
    ``recvmsg`` opens with the record-type cmsg; a second TLS_TX/TLS_RX is EBUSY unless ``rekey``."""

    def __init__(self, *, rekey: bool) -> None:
        self.rekey = rekey
        self.ulp = False
        self.keys: dict[int, list[Any]] = {}  # TLS_TX/TLS_RX -> [aead, iv, seq]
        self.installs: list[tuple[int, bytes]] = []
        self.to_peer = bytearray()
        self.from_peer = bytearray()
        self.cmsgs: list[int] = []

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        if (level, option) == (socket.IPPROTO_TCP, ktls.TCP_ULP):
            self.ulp = True
            return
        assert level == ktls.SOL_TLS and self.ulp
        if option in self.keys and not self.rekey:
            raise OSError(errno.EBUSY, "Device or resource busy")
        version, cipher = struct.unpack_from("=HH", value)
        assert version == 0x0304
        if cipher == 54:
            _, _, iv, key, seq = struct.unpack("=HH12s32s8s", value)
            aead: Any = ChaCha20Poly1305(key)
        else:
            key_len = 16 if cipher == 51 else 32
            _, _, iv8, key, salt, seq = struct.unpack(f"=HH8s{key_len}s4s8s", value)
            iv, aead = salt + iv8, AESGCM(key)
        self.keys[option] = [aead, int.from_bytes(iv, "big"), int.from_bytes(seq, "big")]
        self.installs.append((option, value))

    def _seal(self, content_type: int, data: bytes) -> None:
        aead, iv, seq = self.keys[ktls.TLS_TX]
        header = b"\x17\x03\x03" + (len(data) + 17).to_bytes(2, "big")
        self.to_peer += header + aead.encrypt((iv ^ seq).to_bytes(12, "big"), data + bytes([content_type]), header)
        self.keys[ktls.TLS_TX][2] = seq + 1

    def sendall(self, data: Any) -> None:
        data = bytes(data)
        if ktls.TLS_TX not in self.keys:
            self.to_peer += data
            return
        for i in range(0, len(data), 1 << 14):
            self._seal(23, data[i : i + (1 << 14)])

    def sendmsg(self, buffers: list[bytes], cmsgs: list[tuple[int, int, bytes]]) -> int:
        ((level, kind, value),) = cmsgs
        assert (level, kind) == (ktls.SOL_TLS, ktls.TLS_SET_RECORD_TYPE)
        self.cmsgs.append(value[0])
        self._seal(value[0], b"".join(buffers))
        return sum(map(len, buffers))

    def recvmsg(self, bufsize: int, ancbufsize: int) -> tuple[bytes, list[Any], int, Any]:
        if len(self.from_peer) < 5:
            return b"", [], 0, None
        length = int.from_bytes(self.from_peer[3:5], "big")
        header, body = bytes(self.from_peer[:5]), bytes(self.from_peer[5 : 5 + length])
        del self.from_peer[: 5 + length]
        aead, iv, seq = self.keys[ktls.TLS_RX]
        inner = aead.decrypt((iv ^ seq).to_bytes(12, "big"), body, header).rstrip(b"\0")
        self.keys[ktls.TLS_RX][2] = seq + 1
        content_type, data = inner[-1], inner[:-1]
        cmsg = [] if content_type == 23 else [(ktls.SOL_TLS, ktls.TLS_GET_RECORD_TYPE, bytes([content_type]))]
        return data, cmsg, 0, None

    def getpeername(self) -> tuple[str, int]:
        return ("192.0.2.1", 443)


class Established:
    def __init__(self, client: Connection, server: TLSSession) -> None:
        self.client, self.server = client, server


def _established_session(suite: CipherSuite) -> Established:
    """A userspace client and a server ``TLSSession`` after the handshake (tickets sent, so write_seq > 0)."""
    server = TLSSession(pairing.server_config(cipher_suites=(suite,)))
    client = Connection(pairing.client_config(cipher_suites=(suite,)))
    client.start()
    pairing.pump(client, server.conn)
    client.events()
    server.conn.events()
    assert server.conn.handshake_complete and client.handshake_complete
    return Established(client, server)


def _kernel(suite: CipherSuite, *, rekey: bool, rx: str = "always") -> tuple[Established, FakeKernelSocket,
                                                                               ktls.KernelTLS]:
    support = KernelSupport("test", ulp=True, ciphers=frozenset(SUITES), rekey=rekey)
    pair = _established_session(suite)
    sock = FakeKernelSocket(rekey=rekey)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ktls, "probe", lambda: support)
        kernel = ktls.enable(sock, pair.server, KTLSPolicy(rx=rx))  # type: ignore[arg-type]
    assert kernel is not None
    return pair, sock, kernel


def _to_client(pair: Established, sock: FakeKernelSocket) -> list[Any]:
    pair.client.receive_data(bytes(sock.to_peer))
    sock.to_peer.clear()
    return pair.client.events()


@pytest.mark.parametrize("suite", SUITES)
def test_kernel_takes_over_at_the_engines_sequence_numbers(suite: CipherSuite) -> None:
    pair, sock, kernel = _kernel(suite, rekey=False)
    assert kernel.tx and kernel.rx
    secrets = pair.server.conn.traffic_secrets()
    key, iv = traffic_key_iv(suite_params(suite), secrets.write_secret)
    assert sock.installs[0] == (ktls.TLS_TX, ktls.crypto_info(suite, key, iv, secrets.write_seq))
    kernel.send_data(b"from the kernel")
    assert _to_client(pair, sock) == [ApplicationData(data=b"from the kernel")]
    pair.client.send_data(b"to the kernel")
    sock.from_peer += pair.client.data_to_send()
    kernel.deliver(pair.server, kernel.recv_record(65536))
    assert list(pair.server.plaintext) == [b"to the kernel"]


def test_close_notify_goes_out_as_a_control_record() -> None:
    pair, sock, kernel = _kernel(SUITES[0], rekey=False)
    pair.server.conn.close()
    kernel.send_records(pair.server.conn.data_to_send())
    assert sock.cmsgs == [ContentType.alert]
    events = _to_client(pair, sock)
    assert any(isinstance(e, ConnectionClosed) and e.by_peer and e.error is None for e in events)
    with pytest.raises(ConnectionClosedError):
        kernel.send_data(b"late")


def test_peer_close_notify_and_eof_reach_the_session() -> None:
    pair, sock, kernel = _kernel(SUITES[2], rekey=False)
    pair.client.send_data(b"last words")
    pair.client.close()
    sock.from_peer += pair.client.data_to_send()
    for _ in range(2):
        kernel.deliver(pair.server, kernel.recv_record(65536))
    assert list(pair.server.plaintext) == [b"last words"]
    assert pair.server.eof and not pair.server.ragged_eof
    assert kernel.control_received == 1


def test_own_key_update_rekeys_the_kernel_where_it_can() -> None:
    pair, sock, kernel = _kernel(SUITES[1], rekey=True)
    kernel.check_key_update()
    pair.server.conn.key_update()
    kernel.send_records(pair.server.conn.data_to_send())
    assert sock.cmsgs == [ContentType.handshake]
    assert [opt for opt, _ in sock.installs] == [ktls.TLS_TX, ktls.TLS_RX, ktls.TLS_TX]
    kernel.send_data(b"under the new key")
    events = _to_client(pair, sock)
    assert events[-1] == ApplicationData(data=b"under the new key")


def test_own_key_update_is_refused_without_kernel_rekey() -> None:
    _, _, kernel = _kernel(SUITES[0], rekey=False)
    with pytest.raises(KTLSError, match=r"needs >= 6\.14"):
        kernel.check_key_update()


def test_peer_requested_update_without_rekey_ends_our_side_cleanly() -> None:
    pair, sock, kernel = _kernel(SUITES[0], rekey=False, rx="never")
    assert kernel.tx and not kernel.rx
    pair.client.key_update(request_peer=True)
    pair.server.receive(pair.client.data_to_send())  # userspace RX follows the peer's new key
    kernel.send_records(pair.server.conn.data_to_send())  # the engine's KeyUpdate answer
    assert sock.cmsgs == [ContentType.alert]  # close_notify instead: the kernel cannot take a new key
    events = _to_client(pair, sock)
    assert any(isinstance(e, ConnectionClosed) and e.error is None for e in events)
    with pytest.raises(ConnectionClosedError, match="KeyUpdate impossible"):
        kernel.send_data(b"x")


def test_peer_key_update_rekeys_kernel_rx_where_it_can() -> None:
    pair, sock, kernel = _kernel(SUITES[2], rekey=True)
    pair.client.key_update()
    pair.client.send_data(b"after the update")
    sock.from_peer += pair.client.data_to_send()
    kernel.deliver(pair.server, kernel.recv_record(65536))  # the KeyUpdate, fed to the engine
    assert sock.installs[-1][0] == ktls.TLS_RX
    kernel.deliver(pair.server, kernel.recv_record(65536))
    assert list(pair.server.plaintext) == [b"after the update"]


def test_peer_key_update_with_forced_rx_on_an_old_kernel_is_a_clear_error() -> None:
    pair, sock, kernel = _kernel(SUITES[0], rekey=False, rx="always")
    pair.client.key_update()
    sock.from_peer += pair.client.data_to_send()
    with pytest.raises(KTLSError, match="cannot follow"):
        kernel.deliver(pair.server, kernel.recv_record(65536))


def test_auto_keeps_rx_in_userspace_without_rekey() -> None:
    _, sock, kernel = _kernel(SUITES[0], rekey=False, rx="safe")
    assert kernel.tx and not kernel.rx
    assert [opt for opt, _ in sock.installs] == [ktls.TLS_TX]


def test_rx_waits_for_a_record_boundary() -> None:
    support = KernelSupport("test", ulp=True, ciphers=frozenset(SUITES), rekey=True)
    pair = _established_session(SUITES[0])
    pair.client.send_data(b"x" * 1000)
    wire = pair.client.data_to_send()
    pair.server.receive(wire[:200])  # half a record sits in the engine
    sock = FakeKernelSocket(rekey=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ktls, "probe", lambda: support)
        kernel = ktls.enable(sock, pair.server, KTLSPolicy(rx="always"))  # type: ignore[arg-type]
    assert kernel is not None and kernel.tx and not kernel.rx
    pair.server.receive(wire[200:])
    assert b"".join(pair.server.plaintext) == b"x" * 1000
