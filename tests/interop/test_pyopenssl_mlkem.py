"""X25519MLKEM768 against an independent implementation: OpenSSL >= 3.5 through pyOpenSSL.

Debian bookworm's OpenSSL 3.0 and GnuTLS 3.7 (the command-line peers) predate ML-KEM. The OpenSSL that
``cryptography``'s wheels bundle (and pyOpenSSL drives) is new enough, so pyOpenSSL is the real peer here.
pyOpenSSL has no public group setter, so the groups are set with ``SSL_CTX_set1_curves_list`` through its
cffi binding. Needs the ``pyopenssl`` package (a test extra).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.interop.conftest import Pki
from tests.interop.ours import OurServer, server_config
from tlskit.enums import NamedGroup
from tlskit.io.socket import connect

try:
    from OpenSSL import SSL
    from OpenSSL import __version__ as PYOPENSSL_VERSION
    from OpenSSL._util import lib as _lib
except ImportError:  # pragma: no cover - depends on the environment
    SSL = None

if SSL is None:  # the harness's rule for a missing peer: fail in CI, skip elsewhere
    message = "pyOpenSSL is not installed: pip install pyopenssl (a test extra)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

PEER = f"pyOpenSSL {PYOPENSSL_VERSION} on {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}"
TIMEOUT = 10


def context(groups: str, *, server_pki: Pki | None = None, cafile: str | None = None) -> Any:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    if groups and not _lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()):  # "": OpenSSL's defaults
        pytest.skip(f"{PEER} does not know the groups {groups!r} (needs OpenSSL >= 3.5)")
    if server_pki is not None:
        ctx.use_certificate_chain_file(str(server_pki.cert))
        ctx.use_privatekey_file(str(server_pki.key))
    if cafile is not None:
        ctx.load_verify_locations(cafile)
        ctx.set_verify(SSL.VERIFY_PEER, None)
    return ctx


def bounded(sock: socket.socket) -> socket.socket:
    """Blocking (pyOpenSSL wants that) but with kernel send/receive timeouts, so nothing hangs."""
    sock.settimeout(None)
    timeval = struct.pack("ll", TIMEOUT, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    return sock


def pyopenssl_echo_client(port: int, pki: Pki, groups: str, data: bytes) -> tuple[str, str, bytes]:
    """(group name, suite, echoed data) as pyOpenSSL reports them."""
    with bounded(socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)) as sock:
        conn = SSL.Connection(context(groups, cafile=str(pki.cafile)), sock)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        conn.do_handshake()
        conn.sendall(data)
        echoed = b""
        while len(echoed) < len(data):
            echoed += conn.recv(65536)
        result = (conn.get_group_name(), conn.get_cipher_name(), echoed)
        conn.shutdown()
    return result


@pytest.mark.parametrize("groups", ["X25519MLKEM768", "x25519:X25519MLKEM768"],
                         ids=["key-share", "hello-retry"])
def test_pyopenssl_client_negotiates_x25519mlkem768_with_our_server(pki: Pki, groups: str) -> None:
    # With "x25519:X25519MLKEM768" OpenSSL shares x25519 only; our server accepts just the hybrid and must HRR.
    hrr = groups != "X25519MLKEM768"
    with OurServer(server_config(pki, groups=(NamedGroup.X25519MLKEM768,))) as server:
        group, suite, echoed = pyopenssl_echo_client(server.port, pki, groups, b"post-quantum hello\n")
        [served] = server.wait(1)
    assert served.error is None, f"tlskit server against {PEER}: {served.error!r}"
    assert group == "X25519MLKEM768", f"{PEER} negotiated {group}"
    assert echoed == served.received == b"post-quantum hello\n"
    assert served.negotiated is not None
    assert (served.negotiated.group, served.negotiated.hello_retry) == (NamedGroup.X25519MLKEM768, hrr), PEER
    assert served.negotiated.cipher_suite.name == suite


@dataclass
class PyOpenSSLServer:
    pki: Pki
    groups: str
    port: int = 0
    group: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def serve(self, listener: socket.socket, ctx: Any) -> None:
        try:
            raw, _ = listener.accept()
            with bounded(raw):
                conn = SSL.Connection(ctx, raw)
                conn.set_accept_state()
                conn.do_handshake()
                self.group.append(conn.get_group_name())
                while True:
                    try:
                        data = conn.recv(65536)
                    except (SSL.ZeroReturnError, SSL.SysCallError):
                        break
                    conn.sendall(data)
        except Exception as exc:
            self.errors.append(exc)
        finally:
            self.done.set()


@pytest.fixture
def pyopenssl_server(pki: Pki, request: pytest.FixtureRequest) -> Iterator[PyOpenSSLServer]:
    server = PyOpenSSLServer(pki, request.param)
    ctx = context(server.groups, server_pki=pki)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        server.port = listener.getsockname()[1]
        thread = threading.Thread(target=server.serve, args=(listener, ctx), daemon=True)
        thread.start()
        yield server
        thread.join(timeout=TIMEOUT)


@pytest.mark.parametrize(("pyopenssl_server", "key_share"), [
    ("X25519MLKEM768", NamedGroup.X25519MLKEM768),
    ("X25519MLKEM768", NamedGroup.x25519),  # the server wants the hybrid: HelloRetryRequest
    ("", None),  # both at their defaults: the hybrid, and no HelloRetryRequest (x25519 alone cost one)
], ids=["key-share", "hello-retry", "defaults"], indirect=["pyopenssl_server"])
def test_our_client_negotiates_x25519mlkem768_with_pyopenssl_server(
    pki: Pki, pyopenssl_server: PyOpenSSLServer, key_share: NamedGroup | None
) -> None:
    shares = {} if key_share is None else {"key_share_groups": (key_share,)}
    with connect("127.0.0.1", pyopenssl_server.port, server_name="localhost", cafile=pki.cafile, timeout=TIMEOUT,
                 **shares) as tls:
        tls.sendall(b"hybrid key exchange\n")
        assert tls.recv(100) == b"hybrid key exchange\n", PEER
        done = tls.negotiated
    assert done is not None
    hrr = key_share is NamedGroup.x25519
    assert (done.group, done.hello_retry) == (NamedGroup.X25519MLKEM768, hrr), PEER
    assert pyopenssl_server.done.wait(TIMEOUT), f"{PEER} server did not finish"
    assert not pyopenssl_server.errors, f"{PEER}: {pyopenssl_server.errors}"
    assert pyopenssl_server.group == ["X25519MLKEM768"], f"{PEER} reports {pyopenssl_server.group}"
