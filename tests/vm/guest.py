"""The kTLS tests that run inside the VM (tests/vm/vm.py boots it): tlskit does the handshake, then the
kernel takes the records on one side while the peer stays in userspace (tlskit's own records, or Python's
``ssl`` as an independent implementation). Each result is one ``KTLS-VM PASS|FAIL name detail`` line on the
serial console; ``KTLS-VM DONE`` ends the report.

Runs only where ``probe()`` finds the ``tls`` module (the host CI kernel has none).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.certs import make_ca, make_leaf, write_pem
from tlskit.config import CertifiedKey, ClientConfig, ServerConfig
from tlskit.connection import Connection
from tlskit.enums import CipherSuite
from tlskit.errors import ConnectionClosedError, WantReadError, WantWriteError
from tlskit.events import ApplicationData
from tlskit.io import ktls
from tlskit.io.asyncio import TLSTransport, start_server
from tlskit.io.ktls import KTLSError, KTLSPolicy
from tlskit.io.socket import TLSSocket, connect, wrap_server_socket
from tlskit.pki.verify import TrustStore

MARK = "KTLS-VM"
SUITES = tuple(ktls.CIPHER_TYPES)
RX_ALWAYS = KTLSPolicy(rx="always")
TIMEOUT = 30.0

results: list[tuple[bool, str, str]] = []


def report(ok: bool, name: str, detail: str = "") -> None:
    results.append((ok, name, detail))
    print(f"{MARK} {'PASS' if ok else 'FAIL'} {name} {detail}".rstrip(), flush=True)


class PKI:
    def __init__(self, tmp: Path) -> None:
        root = make_ca("tlskit vm root")
        leaf = make_leaf(root, ["localhost", "127.0.0.1"])
        self.trust = TrustStore(roots=(root.cert,))
        self.cert_key = CertifiedKey(chain=(leaf.der,), private_key=leaf.key)
        self.cert_pem, self.key_pem = leaf.write(tmp, "server")
        self.ca_pem = write_pem(tmp / "ca.pem", [root])

    def server_config(self, suite: CipherSuite) -> ServerConfig:
        return ServerConfig(certificates=(self.cert_key,), cipher_suites=(suite,))

    def client_config(self, suite: CipherSuite) -> ClientConfig:
        return ClientConfig(server_name="localhost", trust=self.trust, cipher_suites=(suite,))

    def ssl_server(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(self.cert_pem, self.key_pem)
        return ctx

    def ssl_client(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(self.ca_pem)
        return ctx


def pair(server: Callable[[socket.socket], Any], client: Callable[[int], Any]) -> tuple[Any, Any]:
    """Run ``server(accepted socket)`` in a thread and ``client(port)`` here; both results, or raise."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    box: dict[str, Any] = {}

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT)
            with conn:
                box["result"] = server(conn)
        except BaseException as e:
            box["error"] = e
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client_result = client(port)
    finally:
        thread.join(TIMEOUT)
    if "error" in box:
        raise box["error"]
    if thread.is_alive():
        raise TimeoutError("server thread did not finish")
    return box.get("result"), client_result


def recv_exactly(tls: TLSSocket | ssl.SSLSocket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = tls.recv(min(65536, size - got))
        if not chunk:
            raise EOFError(f"EOF after {got} of {size} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def stat_delta(before: dict[str, int]) -> dict[str, int]:
    after = ktls.tls_stat()
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def payload(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(bytes([seed])).digest()
    return (block * (size // len(block) + 1))[:size]


# --- tests -----------------------------------------------------------------------------------------------


def test_probe() -> None:
    support = ktls.probe()
    missing = [s.name for s in SUITES if s not in support.ciphers]
    report(support.ulp and not missing, "probe",
           f"Linux {support.release}: ULP={support.ulp} ciphers={len(support.ciphers)} rekey={support.rekey} "
           f"({support.reason})")


def test_tlskit_peer(pki: PKI, suite: CipherSuite) -> None:
    """Server: kTLS TX+RX; client: tlskit userspace. Echo both ways, close_notify both ways as cmsgs."""
    data = payload(300_000, 1)
    before = ktls.tls_stat()

    def server(sock: socket.socket) -> tuple[bool, bool, int, int]:
        tls = wrap_server_socket(sock, pki.server_config(suite), ktls=RX_ALWAYS)
        tls.do_handshake()
        k = tls.ktls
        assert k is not None
        got = recv_exactly(tls, len(data))
        tls.sendall(hashlib.sha256(got).digest() + got)
        assert tls.recv(100) == b""  # the client's close_notify arrives as a control record
        tls.close()
        return k.tx, k.rx, k.control_sent, k.control_received

    def client(port: int) -> bytes:
        with connect("127.0.0.1", port, config=pki.client_config(suite), timeout=TIMEOUT) as tls:
            tls.sendall(data)
            echoed = recv_exactly(tls, 32 + len(data))
            tls.shutdown(socket.SHUT_WR)
            assert tls.recv(100) == b"" and tls._session.ragged_eof is False  # clean close_notify
            return echoed

    (tx, rx, sent, received), echoed = pair(server, client)
    delta = stat_delta(before)
    ok = (tx and rx and echoed[32:] == data and echoed[:32] == hashlib.sha256(data).digest()
          and delta.get("TlsTxSw", 0) >= 1 and delta.get("TlsRxSw", 0) >= 1 and sent >= 1 and received >= 1)
    report(ok, f"tlskit-peer/{suite.name}", f"TX={tx} RX={rx} cmsg sent={sent} received={received} stat={delta}")


def test_deadlines(pki: PKI) -> None:
    """kTLS TX+RX keep the front end's contract: a socket timeout bounds a whole recv/sendall (one deadline,
    not one per kernel call), and a non-blocking socket raises WantReadError/WantWriteError, as without
    kTLS. The peer (tlskit userspace) stays silent and reads nothing until told to."""
    release = threading.Event()

    def server(sock: socket.socket) -> bytes:
        tls = wrap_server_socket(sock, pki.server_config(CipherSuite.TLS_AES_128_GCM_SHA256))
        tls.do_handshake()
        tls.sendall(b"go")
        release.wait(TIMEOUT)  # reads nothing meanwhile: the client's socket buffer fills
        got = b""
        while not got.endswith(b"end"):
            chunk = tls.recv(1 << 20)
            if not chunk:
                break
            got = got[-3:] + chunk
        tls.close()
        return got[-3:]

    def client(port: int) -> list[str]:
        notes: list[str] = []
        tls = connect("127.0.0.1", port, config=pki.client_config(CipherSuite.TLS_AES_128_GCM_SHA256),
                      timeout=TIMEOUT, ktls=RX_ALWAYS)
        k = tls.ktls
        assert k is not None and k.tx and k.rx, "kTLS TX+RX not enabled"
        assert recv_exactly(tls, 2) == b"go"
        tls.settimeout(0.5)
        began = time.monotonic()
        try:
            tls.recv(100)
            notes.append("recv with a 0.5 s timeout returned with a silent peer")
        except TimeoutError:
            if not 0.4 <= time.monotonic() - began < 8:  # a loaded host slows the emulated guest
                notes.append(f"recv timed out after {time.monotonic() - began:.2f} s, not 0.5 s")
        tls.setblocking(False)
        try:
            tls.recv(100)
            notes.append("non-blocking recv returned with nothing to read")
        except WantReadError:
            pass
        block = b"x" * 65536
        try:
            for _ in range(10_000):  # ~650 MB at most: the socket buffers fill long before
                tls.send(block)
            notes.append("non-blocking send never raised against a peer that reads nothing")
        except WantWriteError:
            pass
        tls.settimeout(0.5)
        began = time.monotonic()
        try:
            tls.sendall(b"y" * (8 << 20))  # 32 chunks of 256 KiB: one deadline for all of them
            notes.append("sendall of 8 MiB finished against a peer that reads nothing")
        except TimeoutError:
            if not 0.4 <= time.monotonic() - began < 8:  # a deadline per 256 KiB chunk would take 16 s
                notes.append(f"sendall timed out after {time.monotonic() - began:.2f} s, not 0.5 s")
        release.set()
        tls.settimeout(TIMEOUT)
        tls.sendall(b"end")
        tls.close()
        return notes

    tail, notes = pair(server, client)
    report(not notes and tail == b"end", "deadlines", "; ".join(notes) or "timeouts and non-blocking as without kTLS")


def test_ssl_server_peer(pki: PKI, suite: CipherSuite) -> None:
    """Client: tlskit with kTLS TX+RX; server: Python ssl, whose two NewSessionTickets reach kTLS RX as
    control records the engine must take."""
    data = payload(200_000, 2)
    before = ktls.tls_stat()

    def server(sock: socket.socket) -> int:
        with pki.ssl_server().wrap_socket(sock, server_side=True) as tls:
            got = recv_exactly(tls, len(data))
            tls.sendall(got[::-1])
            tls.unwrap()  # close_notify both ways
            return len(got)

    def client(port: int) -> tuple[bytes, bool, bool, int, int]:
        tls = connect("127.0.0.1", port, config=pki.client_config(suite), timeout=TIMEOUT, ktls=RX_ALWAYS)
        k = tls.ktls
        assert k is not None
        view, sent = memoryview(data), 0
        while sent < len(data):  # send() under kTLS TX: the kernel's partial counts, as on a plain socket
            sent += tls.send(view[sent:])
        echoed = recv_exactly(tls, len(data))
        tls.unwrap()
        tls.close()
        return echoed, k.tx, k.rx, k.control_sent, k.control_received

    _, (echoed, tx, rx, sent, received) = pair(server, client)
    delta = stat_delta(before)
    ok = tx and rx and echoed == data[::-1] and received >= 2 and delta.get("TlsRxSw", 0) >= 1
    report(ok, f"ssl-server-peer/{suite.name}",
           f"TX={tx} RX={rx} control received={received} (tickets, close_notify) sent={sent} stat={delta}")


def test_ssl_client_sendfile(pki: PKI, suite: CipherSuite, tmp: Path) -> None:
    """Server: tlskit with ``ktls="auto"`` and ``sendfile``; client: Python ssl checks every byte."""
    path = tmp / f"file-{suite.value}.bin"
    data = payload(2_000_000, 3)
    path.write_bytes(data)
    before = ktls.tls_stat()

    def server(sock: socket.socket) -> tuple[bool, bool, int]:
        tls = wrap_server_socket(sock, pki.server_config(suite), ktls="auto")
        tls.do_handshake()
        assert tls.recv(10) == b"GET"
        with path.open("rb") as f:
            sent = tls.sendfile(f)
        k = tls.ktls
        tls.close()
        return (k is not None and k.tx, k is not None and k.rx, sent)

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), TIMEOUT) as raw, \
                pki.ssl_client().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET")
            return recv_exactly(tls, len(data))

    (tx, rx, sent), got = pair(server, client)
    delta = stat_delta(before)
    safe_rx = ktls.probe().rekey
    ok = tx and rx == safe_rx and sent == len(data) and got == data and delta.get("TlsTxSw", 0) >= 1
    report(ok, f"ssl-client-sendfile/{suite.name}", f"TX={tx} RX={rx} (auto) sent={sent} stat={delta}")


def test_buffered_handover(pki: PKI) -> None:
    """Application data that arrived with the client's Finished is decrypted by the engine before kTLS RX
    starts; it must come out first, once. A partial record keeps RX in userspace, losing nothing."""
    for split in (False, True):
        first, second = b"with-finished:" + payload(3000, 4), b"after:" + payload(5000, 5)
        got, rx = _handover(pki, first, second, split)
        name = "handover/partial-record" if split else "handover/buffered-plaintext"
        report(got == first + second and rx == (not split), name, f"bytes intact={got == first + second} RX={rx}")


def _handover(pki: PKI, first: bytes, second: bytes, split: bool) -> tuple[bytes, bool]:
    suite = CipherSuite.TLS_AES_128_GCM_SHA256

    def server(sock: socket.socket) -> tuple[bytes, bool]:
        tls = wrap_server_socket(sock, pki.server_config(suite), ktls=RX_ALWAYS)
        tls.do_handshake()
        got = recv_exactly(tls, len(first) + len(second))
        k = tls.ktls
        tls.sendall(b"ok")
        tls.close()
        return got, k is not None and k.rx

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), TIMEOUT) as sock:
            conn = Connection(pki.client_config(suite))
            conn.start()
            sock.sendall(conn.data_to_send())
            while not conn.handshake_complete:
                conn.receive_data(sock.recv(65536))
            out = conn.data_to_send()  # Finished
            conn.send_data(first)
            out += conn.data_to_send()
            conn.send_data(second)
            tail = conn.data_to_send()
            if split:  # Finished + first + half a record, then the rest
                sock.sendall(out + tail[:100])
                time.sleep(0.5)
                sock.sendall(tail[100:])
            else:
                sock.sendall(out + tail)
            reply = b""
            while b"ok" not in reply:
                conn.receive_data(sock.recv(65536))
                reply += b"".join(e.data for e in conn.events() if isinstance(e, ApplicationData))
            return reply

    result, _ = pair(server, client)
    return result  # type: ignore[no-any-return]


def test_key_update(pki: PKI) -> None:
    """KeyUpdate with kTLS on this kernel: the modes ``"auto"`` picks must never strand a connection."""
    suite = CipherSuite.TLS_AES_256_GCM_SHA384
    rekey = ktls.probe().rekey

    # 1. The peer updates its key (not requested); server RX is in userspace on old kernels: carries on.
    def server1(sock: socket.socket) -> bytes:
        tls = wrap_server_socket(sock, pki.server_config(suite), ktls="auto")
        got = recv_exactly(tls, 10)
        got += recv_exactly(tls, 10)
        tls.sendall(got)
        tls.close()
        return got

    def client1(port: int) -> bytes:
        with connect("127.0.0.1", port, config=pki.client_config(suite), timeout=TIMEOUT) as tls:
            tls.sendall(b"0123456789")
            tls.key_update(request_peer=False)
            tls.sendall(b"abcdefghij")
            return recv_exactly(tls, 20)

    got, echoed = pair(server1, client1)
    report(echoed == b"0123456789abcdefghij", "keyupdate/peer-updates", "auto mode: connection carries on")

    # 2. The peer asks us to update too: without kernel rekey we end our write side cleanly. ``warm``: one round
    # trip first, so the KeyUpdate comes after kTLS is set up; without it the KeyUpdate may come with the
    # client's Finished and be answered in userspace before the keys go to the kernel (the connection then
    # carries on: the test failed that way under load). Either way the connection is never stranded.
    def requested_update(warm: bool) -> tuple[str, bytes, bool]:
        def server(sock: socket.socket) -> str:
            tls = wrap_server_socket(sock, pki.server_config(suite), ktls="auto")
            if warm:
                assert recv_exactly(tls, 4) == b"warm"
                tls.sendall(b"warm")
            assert recv_exactly(tls, 4) == b"ping"
            try:
                tls.sendall(b"pong")
                return "sent"
            except ConnectionClosedError as e:
                return f"closed: {e}"
            finally:
                tls.close()

        def client(port: int) -> tuple[bytes, bool]:
            with connect("127.0.0.1", port, config=pki.client_config(suite), timeout=TIMEOUT) as tls:
                if warm:
                    tls.sendall(b"warm")
                    assert recv_exactly(tls, 4) == b"warm"
                tls.key_update(request_peer=True)
                tls.sendall(b"ping")
                reply = b""
                while chunk := tls.recv(100):
                    reply += chunk
                return reply, tls._session.ragged_eof

        outcome, (reply, ragged) = pair(server, client)
        return outcome, reply, ragged

    outcome, reply, ragged = requested_update(warm=True)
    if rekey:
        ok, detail = reply == b"pong", "kernel rekeyed TX"
    else:
        ok = outcome.startswith("closed") and reply == b"" and not ragged
        detail = f"no rekey: write side closed with close_notify ({outcome})"
    report(ok, "keyupdate/peer-requests-update", detail)
    outcome, reply, ragged = requested_update(warm=False)
    ok = (outcome == "sent" and reply == b"pong") or (outcome.startswith("closed") and reply == b"" and not ragged)
    report(ok and not ragged, "keyupdate/peer-requests-update-at-once", f"{outcome}, client got {reply!r}")

    # 3. Our own key_update() under kTLS TX.
    def server3(sock: socket.socket) -> str:
        tls = wrap_server_socket(sock, pki.server_config(suite), ktls="auto")
        tls.do_handshake()
        try:
            tls.key_update()
            outcome = "updated"
        except KTLSError as e:
            outcome = f"refused: {e}"
        tls.sendall(b"still usable")
        tls.close()
        return outcome

    def client3(port: int) -> bytes:
        with connect("127.0.0.1", port, config=pki.client_config(suite), timeout=TIMEOUT) as tls:
            return recv_exactly(tls, 12)

    outcome, got = pair(server3, client3)
    expected = "updated" if rekey else "refused"
    report(outcome.startswith(expected) and got == b"still usable", "keyupdate/own-update", outcome)

    # 4. Forced RX offload (rx="always"): a peer KeyUpdate is a clear KTLSError, not a silent EBADMSG.
    def server4(sock: socket.socket) -> str:
        tls = wrap_server_socket(sock, pki.server_config(suite), ktls=RX_ALWAYS)
        try:
            got = recv_exactly(tls, 8)
            return f"read {got!r}"
        except KTLSError as e:
            return f"KTLSError: {e}"
        finally:
            tls.close()

    def client4(port: int) -> None:
        with connect("127.0.0.1", port, config=pki.client_config(suite), timeout=TIMEOUT) as tls:
            tls.key_update(request_peer=False)
            tls.sendall(b"new key!")
            time.sleep(0.2)

    outcome, _ = pair(server4, client4)
    expected = "read b'new key!'" if rekey else "KTLSError"
    report(outcome.startswith(expected), "keyupdate/forced-rx", outcome)


def test_asyncio_sendfile(pki: PKI, tmp: Path) -> None:
    """asyncio ``start_server(ktls="auto")``: ``TLSTransport.sendfile`` is ``loop.sendfile`` (kTLS TX)."""
    path = tmp / "async.bin"
    data = payload(1_500_000, 6)
    path.write_bytes(data)
    before = ktls.tls_stat()
    state: dict[str, Any] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(3)
        transport = writer.transport
        assert isinstance(transport, TLSTransport)
        state["ktls"] = writer.get_extra_info("ktls")
        writer.write(b"HEADER\n")
        with path.open("rb") as f:
            state["sent"] = await transport.sendfile(f)
        writer.write(b"TRAILER")
        await writer.drain()
        writer.close()

    async def main() -> bytes:
        server = await start_server(handle, "127.0.0.1", 0, config=pki.server_config(SUITES[0]), ktls="auto")
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()

        def fetch() -> bytes:
            with socket.create_connection(("127.0.0.1", port), TIMEOUT) as raw, \
                    pki.ssl_client().wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET")
                chunks = []
                while chunk := tls.recv(65536):
                    chunks.append(chunk)
                return b"".join(chunks)

        try:
            return await loop.run_in_executor(None, fetch)
        finally:
            server.close()

    got = asyncio.run(main())
    k = state.get("ktls")
    delta = stat_delta(before)
    ok = got == b"HEADER\n" + data + b"TRAILER" and k is not None and k.tx and k.sent_files == 1
    report(ok, "asyncio/sendfile", f"TX={k is not None and k.tx} sent={state.get('sent')} stat={delta}")


def test_serve(tmp: Path) -> None:
    """``python -m tlskit serve --ktls require``: static files by sendfile, ``ktls=tx`` in the access log."""
    site = tmp / "site"
    site.mkdir()
    data = payload(3_000_000, 7)
    (site / "big.bin").write_bytes(data)
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    env = dict(os.environ, XDG_DATA_HOME=str(tmp / "data"))
    before = ktls.tls_stat()
    proc = subprocess.Popen([sys.executable, "-m", "tlskit", "serve", str(site), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1", "--ktls", "require"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    assert proc.stdout is not None
    try:
        ca = None
        for line in proc.stdout:
            if "Development CA" in line:
                ca = line.rsplit(" ", 1)[1].strip()
            if line.startswith("Try:"):
                break
        ctx = ssl.create_default_context(cafile=ca)
        with socket.create_connection(("127.0.0.1", port), TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /big.bin HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
        body = b"".join(chunks).split(b"\r\n\r\n", 1)[1]
        proc.terminate()
        log = proc.communicate(timeout=TIMEOUT)[0]
    finally:
        proc.kill()
    access = [line for line in log.splitlines() if "GET /big.bin" in line]
    delta = stat_delta(before)
    ok = body == data and bool(access) and "ktls=tx" in access[0] and delta.get("TlsTxSw", 0) >= 1
    report(ok, "serve/sendfile", f"body intact={body == data} log={access[0][-40:] if access else log[-300:]!r} "
                                 f"stat={delta}")


def test_totals(start: dict[str, int]) -> None:
    delta = stat_delta(start)
    ok = delta.get("TlsTxSw", 0) > 0 and delta.get("TlsRxSw", 0) > 0 and delta.get("TlsCurrTxSw", 0) == 0
    report(ok, "tls_stat", f"kernel did the work: {json.dumps(delta, sort_keys=True)}")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format=f"{MARK} LOG %(name)s %(levelname)s %(message)s")
    start = ktls.tls_stat()
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        pki = PKI(tmp)
        tests: list[tuple[str, Callable[[], None]]] = [("probe", test_probe)]
        for suite in SUITES:
            tests += [(f"tlskit-peer/{suite.name}", functools.partial(test_tlskit_peer, pki, suite)),
                      (f"ssl-server-peer/{suite.name}", functools.partial(test_ssl_server_peer, pki, suite)),
                      (f"ssl-client-sendfile/{suite.name}",
                       functools.partial(test_ssl_client_sendfile, pki, suite, tmp))]
        tests += [("handover", lambda: test_buffered_handover(pki)),
                  ("deadlines", lambda: test_deadlines(pki)),
                  ("keyupdate", lambda: test_key_update(pki)),
                  ("asyncio/sendfile", lambda: test_asyncio_sendfile(pki, tmp)),
                  ("serve/sendfile", lambda: test_serve(tmp)),
                  ("tls_stat", lambda: test_totals(start))]
        only = os.environ.get("KTLS_VM_ONLY")
        for name, test in tests:
            if only and only not in name:
                continue
            try:
                test()
            except Exception as e:
                report(False, name, f"{type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stdout)
    passed = sum(ok for ok, _, _ in results)
    failed = len(results) - passed
    support = ktls.probe()
    print(f"{MARK} DONE passed={passed} failed={failed} kernel={support.release} rekey={support.rekey} "
          f"seconds={time.monotonic() - began:.1f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
