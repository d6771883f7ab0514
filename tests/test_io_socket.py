"""The blocking front end (tlskit.io.socket) over real loopback TCP: against itself and Python's ssl."""

from __future__ import annotations

import errno
import http.client
import os
import re
import select
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tlskit
from tests.certs import Issued, make_ca, make_leaf, write_pem
from tlskit.config import CertifiedKey, ServerConfig
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, HandshakeTimeout, RemoteAlert, UnexpectedEOF, WantReadError, WantWriteError
from tlskit.io.socket import TLSSocket, connect, listen, wrap_server_socket
from tlskit.keylog import KeyLogFile
from tlskit.pki.verify import TrustStore


class PKI:
    def __init__(self, tmp: Path) -> None:
        self.root = make_ca()
        self.leaf: Issued = make_leaf(self.root, ["localhost", "127.0.0.1"])
        self.trust = TrustStore(roots=(self.root.cert,))
        self.cert_pem, self.key_pem = self.leaf.write(tmp, "server")
        self.ca_pem = write_pem(tmp / "ca.pem", [self.root])
        self.server_config = ServerConfig(
            certificates=(CertifiedKey(chain=(self.leaf.der,), private_key=self.leaf.key),),
            alpn=("http/1.1",),
        )


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


class Peer:
    """A server thread: runs ``handler`` on the first accepted connection and keeps what it returns."""

    def __init__(self, listener: Any, handler: Callable[[Any], object]) -> None:
        self.listener = listener
        self.port: int = listener.getsockname()[1]
        self.result: object = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(handler,), daemon=True)
        self._thread.start()

    def _run(self, handler: Callable[[Any], object]) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                self.result = handler(conn)
        except BaseException as e:
            self.error = e
        finally:
            self.listener.close()

    def join(self) -> object:
        self._thread.join(10)
        assert not self._thread.is_alive(), "server thread hung"
        return self.result


def tlskit_server(pki: PKI, handler: Callable[[TLSSocket], object]) -> Peer:
    return Peer(listen("127.0.0.1", 0, pki.server_config), handler)


def echo_until_eof(tls: TLSSocket) -> bytes:
    received = bytearray()
    while data := tls.recv(65536):
        received += data
        tls.sendall(data)
    return bytes(received)


def test_our_client_and_server_exchange_data_and_agree_on_the_session(pki: PKI) -> None:
    facts: dict[str, Any] = {}

    def handler(tls: TLSSocket) -> bytes:
        tls.do_handshake()
        facts.update(sni=tls.negotiated.server_name if tls.negotiated else None, peercert=tls.getpeercert(),
                     ekm=tls.export_keying_material(b"EXPORTER-test", b"ctx", 32))
        return echo_until_eof(tls)

    server = tlskit_server(pki, handler)
    payload = os.urandom(1 << 20)
    with connect("localhost", server.port, cafile=pki.ca_pem, alpn=["h2", "http/1.1"]) as tls:
        assert tls.version() == "TLSv1.3"
        name, version, bits = tls.cipher() or ("", "", 0)
        assert re.fullmatch(r"TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|CHACHA20_POLY1305_SHA256)", name)
        assert (version, bits) == ("TLSv1.3", 128 if "128" in name else 256)
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.server_hostname == "localhost" and not tls.server_side
        ekm = tls.export_keying_material(b"EXPORTER-test", b"ctx", 32)
        tls.sendall(payload)
        tls.shutdown(socket.SHUT_WR)  # close_notify: the server's recv returns b""
        echoed = bytearray()
        while data := tls.recv(65536):
            echoed += data
    assert server.join() == payload and bytes(echoed) == payload
    assert facts["sni"] == "localhost" and facts["peercert"] is None and facts["ekm"] == ekm


def test_getpeercert_has_ssl_shape(pki: PKI) -> None:
    server = tlskit_server(pki, echo_until_eof)
    with connect("127.0.0.1", server.port, trust=pki.trust) as tls:
        cert = tls.getpeercert()
        assert tls.getpeercert(binary_form=True) == pki.leaf.der
        assert tls.server_hostname == "127.0.0.1"
    server.join()
    assert isinstance(cert, dict)
    assert cert["subject"] == ((("commonName", "localhost"),),)
    assert cert["issuer"] == ((("commonName", "tlskit test root"),),)
    assert cert["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))
    assert ssl.cert_time_to_seconds(cert["notAfter"]) == int(pki.leaf.cert.not_valid_after_utc.timestamp())
    assert ssl.cert_time_to_seconds(cert["notBefore"]) == int(pki.leaf.cert.not_valid_before_utc.timestamp())


def test_getpeercert_names_ip_addresses_as_ssl_does(tmp_path: Path) -> None:
    """Python ssl's own getpeercert() on the same certificate is the reference (IPv6: eight uncompressed
    upper-case groups, as _ssl.c prints them)."""
    root = make_ca()
    leaf = make_leaf(root, ["localhost", "127.0.0.1", "::1", "2001:db8::ff"])
    cert_pem, key_pem = leaf.write(tmp_path, "v6")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_pem, key_pem)
    config = ServerConfig(certificates=(CertifiedKey(chain=(leaf.der,), private_key=leaf.key),))
    client_ctx = ssl.create_default_context(cafile=str(write_pem(tmp_path / "root.pem", [root])))

    def handler(raw: socket.socket) -> None:
        with wrap_server_socket(raw, config) as tls:
            tls.do_handshake()
            tls.recv(1)

    seen = []
    for _ in range(2):
        server = Peer(socket.create_server(("127.0.0.1", 0)), handler)
        if not seen:
            with tlskit.connect("localhost", server.port, trust=TrustStore(roots=(root.cert,))) as ours:
                seen.append(ours.getpeercert())
        else:
            with client_ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                                        server_hostname="localhost") as theirs:
                seen.append(theirs.getpeercert())
        server.join()
    ours_cert, theirs_cert = seen
    assert isinstance(ours_cert, dict) and isinstance(theirs_cert, dict)
    assert ours_cert["subjectAltName"] == theirs_cert["subjectAltName"]
    assert ("IP Address", "2001:DB8:0:0:0:0:0:FF") in theirs_cert["subjectAltName"]


def test_our_client_against_python_ssl_server(pki: PKI) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_pem, pki.key_pem)
    ctx.set_alpn_protocols(["http/1.1"])

    def handler(raw: socket.socket) -> tuple[Any, ...]:
        with ctx.wrap_socket(raw, server_side=True) as s:
            data = s.recv(100)
            s.sendall(data.upper())
            return s.version(), s.cipher(), s.selected_alpn_protocol()

    server = Peer(socket.create_server(("127.0.0.1", 0)), handler)
    with tlskit.connect("localhost", server.port, cafile=pki.ca_pem, alpn=["http/1.1"]) as tls:  # as the README
        tls.sendall(b"hello ssl")
        assert tls.recv(100) == b"HELLO SSL"
        ours = tls.version(), tls.cipher(), tls.selected_alpn_protocol()
    theirs = server.join()
    assert isinstance(theirs, tuple)
    assert ours[0] == theirs[0] == "TLSv1.3"
    assert ours[1] == theirs[1]  # (name, version, bits) in the same spelling
    assert ours[2] == theirs[2] == "http/1.1"


def test_python_ssl_client_against_our_server(pki: PKI) -> None:
    server = tlskit_server(pki, echo_until_eof)
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port)), server_hostname="localhost") as s:
        assert s.version() == "TLSv1.3" and s.selected_alpn_protocol() == "http/1.1"
        s.sendall(b"x" * 100_000)
        got = bytearray()
        while len(got) < 100_000:
            got += s.recv(65536)
        cipher = s.cipher()
        s.unwrap()  # close_notify; ends the echo loop
    assert server.join() == b"x" * 100_000 and bytes(got) == b"x" * 100_000
    assert cipher is not None and cipher[1] == "TLSv1.3"


def test_makefile_serves_http_client(pki: PKI) -> None:
    def handler(tls: TLSSocket) -> str:
        with tls.makefile("rb") as rfile, tls.makefile("wb") as wfile:
            request_line: str = rfile.readline().decode()
            while rfile.readline() not in (b"\r\n", b""):
                pass
            body = b"x" * 70_000
            wfile.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            wfile.flush()
            rfile.readline()  # wait for the client to close
        return request_line

    server = tlskit_server(pki, handler)

    class TLSKitHTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = connect(self.host, self.port, cafile=pki.ca_pem, alpn=["http/1.1"])

    conn = TLSKitHTTPConnection("localhost", server.port)
    conn.request("GET", "/hello")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"x" * 70_000
    conn.close()
    assert server.join() == "GET /hello HTTP/1.1\r\n"


def test_text_makefile_reads_lines(pki: PKI) -> None:
    def handler(tls: TLSSocket) -> None:
        tls.sendall("première ligne\nsecond\n".encode())
        tls.recv(1)

    server = tlskit_server(pki, handler)
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls, tls.makefile("r", encoding="utf-8") as f:
        assert f.readline() == "première ligne\n"
        assert f.readline() == "second\n"
    server.join()


def test_wrong_hostname_is_certificate_error_with_bad_certificate(pki: PKI) -> None:
    server = tlskit_server(pki, lambda tls: tls.do_handshake())
    with pytest.raises(CertificateError) as info:
        connect("127.0.0.1", server.port, server_name="wrong.example", cafile=pki.ca_pem)
    assert info.value.description is AlertDescription.bad_certificate
    server.join()
    assert server.error is not None  # the server's handshake failed too


def test_server_learns_the_client_rejected_its_certificate(pki: PKI) -> None:
    server = tlskit_server(pki, lambda tls: tls.do_handshake())
    with pytest.raises(CertificateError):
        connect("127.0.0.1", server.port, server_name="wrong.example", cafile=pki.ca_pem)
    server.join()
    assert isinstance(server.error, RemoteAlert)
    assert server.error.description is AlertDescription.bad_certificate


def test_untrusted_root_is_unknown_ca(pki: PKI) -> None:
    server = tlskit_server(pki, lambda tls: tls.do_handshake())
    with pytest.raises(CertificateError) as info:
        connect("localhost", server.port, trust=TrustStore(roots=(make_ca("someone else").cert,)))
    assert info.value.description is AlertDescription.unknown_ca
    server.join()


class _TlskitHTTPSConnection(http.client.HTTPSConnection):
    """http.client over tlskit.connect, as a user plugs it into urllib."""

    trust: TrustStore

    def connect(self) -> None:
        self.sock = connect(self.host, self.port, trust=self.trust, timeout=self.timeout)  # type: ignore[assignment]


def test_a_failed_handshake_is_an_os_error_so_urllib_reports_it_as_url_error(pki: PKI) -> None:
    """ssl.SSLError is an OSError, and urllib (like much socket code) only wraps OSErrors: a certificate tlskit
    rejected escaped urlopen as tlskit.errors.CertificateError instead of URLError."""
    import urllib.error
    import urllib.request

    class Handler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            stranger = TrustStore(roots=(make_ca("someone else").cert,))
            connection = type("C", (_TlskitHTTPSConnection,), {"trust": stranger})
            return self.do_open(connection, req)  # type: ignore[arg-type]

    server = tlskit_server(pki, lambda tls: tls.do_handshake())
    opener = urllib.request.build_opener(Handler)
    with pytest.raises(urllib.error.URLError) as info:
        opener.open(f"https://localhost:{server.port}/", timeout=5)
    assert isinstance(info.value.reason, CertificateError)
    assert info.value.reason.description is AlertDescription.unknown_ca
    server.join()
    assert isinstance(server.error, OSError) and isinstance(server.error, RemoteAlert)  # the server's side too


def test_handshake_times_out_against_a_silent_server() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        started = time.monotonic()
        with pytest.raises(HandshakeTimeout):
            connect("127.0.0.1", listener.getsockname()[1], timeout=0.3, verify_peer=False)
        assert time.monotonic() - started < 2
    finally:
        listener.close()


def test_handshake_timeout_covers_the_whole_handshake_not_each_read(pki: PKI) -> None:
    """A peer dribbling one byte at a time must not extend the deadline."""

    def handler(raw: socket.socket) -> None:
        raw.recv(65536)
        raw.sendall(b"\x16\x03\x03\x40\x00")  # a handshake record header promising 16 KiB
        for _ in range(40):
            raw.sendall(b"\x00")
            time.sleep(0.05)

    server = Peer(socket.create_server(("127.0.0.1", 0)), handler)
    started = time.monotonic()
    with pytest.raises(HandshakeTimeout):
        connect("localhost", server.port, cafile=pki.ca_pem, timeout=0.5)
    assert time.monotonic() - started < 1.5
    server.join()


def test_ragged_eof_reads_as_eof_unless_asked(pki: PKI) -> None:
    for suppress in (True, False):
        def handler(tls: TLSSocket) -> None:
            tls.sendall(b"bye")
            tls.socket.shutdown(socket.SHUT_RDWR)  # TCP FIN without close_notify

        server = tlskit_server(pki, handler)
        with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
            tls.suppress_ragged_eofs = suppress
            assert tls.recv(10) == b"bye"
            if suppress:
                assert tls.recv(10) == b""
            else:
                with pytest.raises(UnexpectedEOF):
                    tls.recv(10)
        server.join()


def test_key_update_keeps_data_flowing(pki: PKI) -> None:
    server = tlskit_server(pki, echo_until_eof)
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        for i in range(3):
            tls.key_update(request_peer=True)
            tls.sendall(b"round %d" % i)
            assert tls.recv(100) == b"round %d" % i
        tls.shutdown(socket.SHUT_WR)
        assert tls.recv(10) == b""
    server.join()


def test_unwrap_exchanges_close_notify(pki: PKI) -> None:
    def handler(tls: TLSSocket) -> bytes:
        data = tls.recv(100)
        assert tls.recv(100) == b""  # the client's close_notify
        tls.unwrap()  # ours back
        return data

    server = tlskit_server(pki, handler)
    tls = connect("localhost", server.port, cafile=pki.ca_pem)
    tls.sendall(b"last words")
    plain = tls.unwrap()
    assert plain.recv(10) == b""  # the server closed TCP after its close_notify
    tls.close()
    assert server.join() == b"last words"


def test_wrap_server_socket_handshakes_lazily_on_first_read(pki: PKI) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = Peer(listener, lambda raw: wrap_server_socket(raw, pki.server_config).recv(100))
    with connect("localhost", listener.getsockname()[1], cafile=pki.ca_pem) as tls:
        tls.sendall(b"lazy")
    assert server.join() == b"lazy"


def test_sslkeylogfile_records_nss_lines(pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    server = tlskit_server(pki, echo_until_eof)
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.sendall(b"ping")
        assert tls.recv(10) == b"ping"
    server.join()
    lines = path.read_text().splitlines()
    labels = ["CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
              "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"]
    assert sorted(line.split()[0] for line in lines) == sorted(labels * 2)  # client and server both log
    for line in lines:
        assert re.fullmatch(r"[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]{64}", line), line
    assert len({line.split()[1] for line in lines}) == 1  # one connection, one client_random
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keylogfile_appends_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "k.log"
    path.write_text("EXISTING 00 00\n")
    with KeyLogFile(path) as sink:
        def writer(n: int) -> None:
            for i in range(200):
                sink(f"L{n} {i:064x} ab")

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lines = path.read_text().splitlines()
    assert lines[0] == "EXISTING 00 00" and len(lines) == 801
    assert all(re.fullmatch(r"L\d [0-9a-f]{64} ab", line) for line in lines[1:])


def test_connect_rejects_unknown_config_fields() -> None:
    with pytest.raises(ValueError, match="ClientConfig fields"):
        connect("127.0.0.1", 9, verify_pear=False)



def _ssl_server(pki: PKI, handler: Callable[[ssl.SSLSocket], object]) -> Peer:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_pem, pki.key_pem)

    def run(raw: socket.socket) -> object:
        with ctx.wrap_socket(raw, server_side=True) as s:
            return handler(s)

    return Peer(socket.create_server(("127.0.0.1", 0)), run)


def _reads_after(event: threading.Event, first: bytes = b"") -> Callable[[ssl.SSLSocket], bytes]:
    """An ssl server handler: sends ``first``, reads nothing until ``event`` is set, then everything to EOF."""
    def handler(s: ssl.SSLSocket) -> bytes:
        if first:
            s.sendall(first)
        event.wait(10)
        got = bytearray()
        while data := s.recv(1 << 16):
            got += data
        return bytes(got)

    return handler


@pytest.mark.parametrize("blocking", [True, False])
def test_a_write_that_times_out_or_would_block_leaves_the_record_stream_whole(pki: PKI, blocking: bool) -> None:
    """ssl keeps the unsent part of a record: so must we, or the next record breaks the peer's decryption."""
    release = threading.Event()
    server = _ssl_server(pki, _reads_after(release))  # reads nothing until the client has filled the buffers
    sent = bytearray()
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.settimeout(0.2) if blocking else tls.setblocking(False)
        assert tls.getblocking() is blocking
        chunk = os.urandom(16384)
        with pytest.raises((TimeoutError, BlockingIOError)):  # the loop ends when the buffers are full
            for _ in range(10_000):
                sent += chunk[: tls.send(chunk)]
        release.set()
        tls.settimeout(None)
        assert tls.send(chunk) == len(chunk)  # the retry (as ssl wants it): finishes the sealed records, no copy
        sent += chunk
        tail = os.urandom(200_000)
        tls.sendall(tail)  # what the interrupted write left goes first, whole
        sent += tail
        tls.shutdown(socket.SHUT_WR)
        received = server.join()  # before closing: a close with the server's tickets unread would be a reset
    assert server.error is None and received == bytes(sent)


def test_non_blocking_handshake_completes_with_select(pki: PKI) -> None:
    server = tlskit_server(pki, echo_until_eof)
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.setblocking(False)
    from tlskit.io.common import TLSSession, client_config

    tls = TLSSocket(raw, TLSSession(client_config("localhost", server_name=None, cafile=pki.ca_pem, trust=None,
                                                  alpn=(), config=None, overrides={})))
    import select

    attempts = 0
    while True:
        try:
            tls.do_handshake()
            break
        except (WantReadError, WantWriteError) as e:  # which way to wait, as ssl's SSLWant*Error say
            attempts += 1
            assert attempts < 100 and isinstance(e, BlockingIOError)
            readable = isinstance(e, WantReadError)
            select.select([tls] if readable else [], [] if readable else [tls], [], 5)
    assert tls.version() == "TLSv1.3"  # (attempts may be 0: the server thread can answer before our first recv)
    reader = tls.makefile("rb")
    assert reader.read(10) is None  # nothing yet: None, as a plain non-blocking socket's makefile gives
    tls.setblocking(True)
    tls.sendall(b"after")
    assert tls.recv(10) == b"after"
    reader.close()
    tls.close()
    server.join()


def test_recv_timeout_bounds_the_whole_call_not_each_read(pki: PKI) -> None:
    """As ssl: one deadline for a recv, so a peer trickling a record cannot stretch it (slowloris)."""
    done = threading.Event()

    def handler(raw: socket.socket) -> None:
        tls = wrap_server_socket(raw, pki.server_config)
        tls.do_handshake()
        record = tls.conn
        record.send_data(b"x" * 16000)
        out = tls._session.outgoing()
        for i in range(0, len(out), 50):  # the record, 50 bytes every 0.1 s: 32 s in all
            if done.is_set():
                break
            raw.sendall(out[i:i + 50])
            time.sleep(0.1)

    server = Peer(socket.create_server(("127.0.0.1", 0)), handler)
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.settimeout(1.0)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            tls.recv(100_000)
        assert time.monotonic() - started < 2.5
        assert tls.gettimeout() == 1.0  # deadlines by poll(): the socket's timeout is never changed under a thread
        done.set()
    server.join()


def test_recv_returns_everything_decrypted_so_select_stays_true(pki: PKI) -> None:
    """Four records arrive in one read; recv(65536) returns all of them (ssl does: it reads one record at a
    time), so a select() loop does not stall with data left in our buffer."""
    import select

    payload = os.urandom(65536)

    def handler(s: ssl.SSLSocket) -> None:
        s.sendall(payload)
        s.recv(1)  # wait for the client to finish

    server = _ssl_server(pki, handler)
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        got = bytearray()
        while len(got) < len(payload):  # the naive loop: select before every recv, never asking pending()
            assert select.select([tls], [], [], 3)[0], f"select stalled with {len(got)} bytes read"
            got += tls.recv(65536)
        assert bytes(got) == payload
        tls.sendall(b"k")
    server.join()


def test_connect_takes_suppress_ragged_eofs() -> None:
    import inspect

    assert inspect.signature(connect).parameters["suppress_ragged_eofs"].default is True
    assert inspect.signature(wrap_server_socket).parameters["suppress_ragged_eofs"].default is True


def test_a_stuck_write_does_not_block_reading(pki: PKI) -> None:
    """Records an interrupted send left must not make recv wait for the peer to read: two peers that both
    write first would deadlock."""
    release = threading.Event()
    server = _ssl_server(pki, _reads_after(release, b"hello"))
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.settimeout(0.3)
        chunk = os.urandom(16384)
        sent = bytearray()
        with pytest.raises(TimeoutError):
            for _ in range(10_000):
                sent += chunk[: tls.send(chunk)]
        started = time.monotonic()
        assert tls.recv(10) == b"hello" and time.monotonic() - started < 0.2
        release.set()
        tls.settimeout(None)
        assert tls.send(chunk) == len(chunk)
        sent += chunk
        tls.shutdown(socket.SHUT_WR)
        received = server.join()
    assert server.error is None and received == bytes(sent)


def test_shutdown_never_waits_for_a_blocked_writer(pki: PKI) -> None:
    """close_notify is a courtesy: with another thread stuck writing to a peer that reads nothing, shutdown()
    still shuts the socket down at once (the writer then fails), as ssl's shutdown does."""
    stop = threading.Event()
    server = _ssl_server(pki, lambda s: stop.wait(10))
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        failure: list[BaseException] = []

        def writer() -> None:
            try:
                tls.sendall(b"x" * (64 << 20))
            except OSError as e:
                failure.append(e)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        time.sleep(0.3)  # the writer is blocked, holding the send lock
        started = time.monotonic()
        tls.shutdown(socket.SHUT_RDWR)
        assert time.monotonic() - started < 1.0
        thread.join(5)
        assert not thread.is_alive() and failure
    stop.set()
    server.join()


def test_unwrap_leaves_plaintext_after_close_notify_in_the_socket(pki: PKI) -> None:
    """As ssl: records are read one at a time while unwrapping, so what the peer sends in the clear after its
    close_notify is for the caller to read from the plain socket."""
    def handler(tls: TLSSocket) -> None:
        tls.do_handshake()
        assert tls.recv(10) == b"bye?"
        plain = tls.unwrap()
        plain.sendall(b"PLAIN after TLS")

    server = tlskit_server(pki, handler)
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.sendall(b"bye?")
        time.sleep(0.2)  # close_notify and the plaintext arrive together
        plain = tls.unwrap()
        plain.settimeout(5)
        assert plain.recv(100) == b"PLAIN after TLS"
    server.join()
    assert server.error is None


def test_non_blocking_unwrap_keeps_a_close_notify_that_arrives_in_pieces(pki: PKI) -> None:
    """ssl raises SSLWantReadError until the whole close_notify is in; we dropped the bytes of it read so far,
    then parsed a header out of the middle of the record and waited for a length that never came."""
    rest = threading.Event()

    def handler(tls: TLSSocket) -> None:
        tls.do_handshake()
        assert tls.recv(10) == b"bye?"
        tls.conn.close()
        close_notify = tls._session.outgoing()
        tls._sock.sendall(close_notify[:3])
        assert rest.wait(5)
        tls._sock.sendall(close_notify[3:] + b"PLAIN")

    server = tlskit_server(pki, handler)
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.sendall(b"bye?")
        time.sleep(0.2)  # the first 3 bytes are in
        tls.setblocking(False)
        wants = 0
        while True:
            try:
                plain = tls.unwrap()
                break
            except WantReadError:
                wants += 1
                assert wants < 50
                rest.set()
                select.select([tls], [], [], 5)
        assert wants >= 1
        plain.settimeout(5)
        assert plain.recv(100) == b"PLAIN"
    server.join()
    assert server.error is None


def test_unwrap_of_a_connection_closed_without_close_notify_is_unexpected_eof(pki: PKI) -> None:
    """ssl: SSLEOFError. Returning the socket said TLS was shut down properly when it was cut."""
    def handler(tls: TLSSocket) -> None:
        tls.do_handshake()
        assert tls.recv(10) == b"bye?"
        tls._sock.shutdown(socket.SHUT_RDWR)

    server = tlskit_server(pki, handler)
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.sendall(b"bye?")
        with pytest.raises(UnexpectedEOF):
            tls.unwrap()
    server.join()


def test_negative_sizes_and_non_blocking_sendfile_are_refused_as_socket_refuses_them(pki: PKI, tmp_path: Path) -> None:
    """recv(-1) returned b"" (it reads as EOF); sendfile on a non-blocking socket sent part of the file, then
    raised with the count lost (socket and ssl refuse it up front)."""
    def handler(tls: TLSSocket) -> None:
        tls.do_handshake()
        tls.recv(10)

    server = tlskit_server(pki, handler)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1 << 20))
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        with pytest.raises(ValueError, match="negative"):
            tls.recv(-1)
        with pytest.raises(ValueError, match="negative"):
            tls.recv_into(bytearray(10), -1)
        with pytest.raises(ValueError, match="too small"):
            tls.recv_into(bytearray(10), 11)
        tls.setblocking(False)
        with big.open("rb") as f, pytest.raises(ValueError, match="non-blocking"):
            tls.sendfile(f)
        tls.setblocking(True)
        tls.sendall(b"done")
    server.join()


def test_send_retry_must_carry_the_data_it_raised_on(pki: PKI) -> None:
    release = threading.Event()
    server = _ssl_server(pki, _reads_after(release))
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.setblocking(False)
        chunk = os.urandom(16384)
        with pytest.raises(BlockingIOError):
            for _ in range(10_000):
                tls.send(chunk)
        assert tls.send(b"") == 0  # keeps what is owed
        release.set()
        tls.setblocking(True)
        with pytest.raises(ValueError):  # shorter than what the interrupted send sealed (OpenSSL: "bad length")
            tls.send(chunk[:10])
        assert tls.send(chunk) == len(chunk)  # the real retry
    server.join()


def test_non_blocking_makefile_writer_retries_without_duplicates(pki: PKI) -> None:
    """BufferedWriter keeps what it could not write and writes it again: each raw write seals no more than that
    buffer keeps, so the retry is the same data and nothing is sent twice or lost."""
    go = threading.Event()
    server = _ssl_server(pki, _reads_after(go))
    data = bytes(range(256)) * 4000
    with connect("localhost", server.port, cafile=pki.ca_pem) as tls:
        tls.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        tls.setblocking(False)
        writer = tls.makefile("wb")
        try:
            writer.write(data)
            accepted = len(data)
        except BlockingIOError as e:
            accepted = e.characters_written
        go.set()
        tls.setblocking(True)
        writer.write(data[accepted:])
        writer.flush()
        writer.close()
        assert tls.sendall(b"") is None
        tls.shutdown(socket.SHUT_WR)
        tls.sendall(b"")  # nothing to send after the write side is closed: no error, as ssl
        received = server.join()
    assert server.error is None and received == data


def test_starttls_wraps_a_connected_socket_as_a_client(pki: PKI) -> None:
    """STARTTLS (SMTP, IMAP, FTP): plain text first, then TLS on the same socket, against Python's ssl; there was
    no public client-side wrap (smtplib.starttls() and ftplib's FTP_TLS need one), and ftplib reads ``family``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_pem, pki.key_pem)

    def handler(raw: socket.socket) -> bytes:
        assert raw.recv(100) == b"STARTTLS\r\n"
        raw.sendall(b"220 go ahead\r\n")
        with ctx.wrap_socket(raw, server_side=True) as s:
            data = s.recv(100)
            s.sendall(data.upper())
            return data

    server = Peer(socket.create_server(("127.0.0.1", 0)), handler)
    plain = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    plain.sendall(b"STARTTLS\r\n")
    assert plain.recv(100) == b"220 go ahead\r\n"
    with tlskit.wrap_socket(plain, server_name="localhost", cafile=pki.ca_pem) as tls:
        assert tls.family == socket.AF_INET and tls.type == socket.SOCK_STREAM
        tls.sendall(b"ehlo over tls")
        assert tls.recv(100) == b"EHLO OVER TLS"
        assert tls.version() == "TLSv1.3"
    assert server.join() == b"ehlo over tls"


def test_makefile_fails_for_good_after_a_timeout_instead_of_losing_the_start_of_a_line(pki: PKI) -> None:
    """socket.SocketIO refuses to read after a timeout: the buffered reader above may have dropped what it had
    of a line. Ours went on, and the next readline returned the rest of the line as if it were whole."""
    def handler(tls: TLSSocket) -> None:
        tls.sendall(b"HEADER-PART-")
        time.sleep(0.6)
        tls.sendall(b"REST\n")
        time.sleep(0.5)

    server = tlskit_server(pki, handler)
    with connect("localhost", server.port, cafile=pki.ca_pem, timeout=0.3) as tls, tls.makefile("rb") as f:
        assert f.mode == "rb"
        with pytest.raises(TimeoutError):
            f.readline()
        time.sleep(0.5)
        with pytest.raises(OSError, match="timed out object"):
            f.readline()
    server.join()


def test_shutdown_does_not_wait_for_a_peer_that_reads_nothing(pki: PKI) -> None:
    """shutdown() sends close_notify as a courtesy: behind records a timed-out sendall kept, to a peer that reads
    nothing, on a socket made blocking again, it waited for ever (ssl's shutdown sends nothing and returns)."""
    stop = threading.Event()

    def handler(tls: TLSSocket) -> None:
        tls.do_handshake()
        stop.wait(15)

    server = tlskit_server(pki, handler)
    tls = connect("localhost", server.port, cafile=pki.ca_pem, timeout=2)
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    with pytest.raises(TimeoutError):
        tls.sendall(b"x" * 50_000_000)
    tls.settimeout(None)
    started = time.monotonic()
    tls.shutdown(socket.SHUT_RDWR)
    assert time.monotonic() - started < 3
    tls.close()
    stop.set()
    server.join()


def test_io_after_close_is_an_oserror_not_a_valueerror(pki: PKI) -> None:
    server = tlskit_server(pki, echo_until_eof)
    tls = connect("localhost", server.port, cafile=pki.ca_pem, timeout=5)
    tls.close()
    with pytest.raises(OSError):
        tls.settimeout(1)  # EBADF from the socket, as ssl (the timeout is set all the same)
    with pytest.raises(OSError) as info:
        tls.recv(10)
    assert not isinstance(info.value, ValueError) and info.value.errno == errno.EBADF
    server.join()
