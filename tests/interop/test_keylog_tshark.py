"""tlskit's key log (NSS ``SSLKEYLOGFILE`` format) is enough for Wireshark to decrypt real sessions.

Only OUR side logs keys: curl is run without a key log against ``tlskit serve``, and ``openssl s_server``
without one against our client. tshark must then show the HTTP request line inside the TLS stream, and
a control run with an empty key log must show nothing (so the request line came from decryption).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.interop.conftest import Pki
from tests.interop.ours import TlskitServe, read_all
from tests.interop.peers import OpenSSLServer, capture, curl_get, tool_version, tshark, tshark_decrypt
from tlskit.io.socket import connect
from tlskit.keylog import KeyLogFile

TSHARK = tool_version("tshark")
LABELS = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
          "SERVER_TRAFFIC_SECRET_0"}


def settle(pcap: Path, timeout: float = 10.0) -> None:
    """Wait until tcpdump has written packets and stopped writing for a moment: at SIGINT it drops what it
    has not read yet, which on a loaded machine can be the whole exchange."""
    deadline = time.monotonic() + timeout
    size, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = pcap.stat().st_size if pcap.exists() else 0
        if now_size != size:
            size, stable_since = now_size, time.monotonic()
        elif size > 24 and time.monotonic() - stable_since > 0.3:  # 24: the pcap file header alone
            return
        time.sleep(0.05)


def check_key_log(keylog: Path, pcap: Path, port: int) -> None:
    """The key log has the four TLS 1.3 traffic secrets, keyed by the ClientHello random on the wire."""
    lines = [line.split() for line in keylog.read_text().splitlines() if line.strip()]
    assert {line[0] for line in lines} >= LABELS, f"key log lacks labels: {keylog.read_text()}"
    assert all(len(line) == 3 and len(line[1]) == 64 for line in lines), keylog.read_text()
    randoms = tshark(pcap, "-Y", "tls.handshake.type == 1", "-T", "fields", "-e", "tls.handshake.random",
                     tls_port=port).stdout.split()
    assert len(randoms) == 1, f"{TSHARK}: expected one ClientHello, got {randoms}"
    assert {line[1] for line in lines} == {randoms[0].replace(":", "")}, "key log not keyed by the ClientHello"


def control(pcap: Path, port: int, tmp_path: Path) -> None:
    empty = tmp_path / "empty-keylog.txt"
    empty.write_text("")
    assert tshark_decrypt(pcap, empty, port=port).strip() == "", f"{TSHARK} decrypted without keys"
    assert "Client Hello" in tshark(pcap, "-Y", "tls.handshake", tls_port=port).stdout, TSHARK


def test_tshark_decrypts_curl_to_tlskit_serve_with_our_server_key_log(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)  # curl must not log keys of its own
    path = f"/{uuid.uuid4().hex}.txt"
    root = tmp_path / "site"
    root.mkdir()
    (root / path[1:]).write_text("decrypt me\n")
    keylog = tmp_path / "server-keylog.txt"
    with TlskitServe(root, pki, env={"SSLKEYLOGFILE": str(keylog)}) as site:
        with capture(site.port, pcap=tmp_path / "curl.pcap") as pcap:
            result = curl_get(f"https://localhost:{site.port}{path}", cacert=pki.cafile,
                              extra=("--resolve", f"localhost:{site.port}:127.0.0.1", "--http1.1"))
            assert result.returncode == 0 and result.stdout == "decrypt me\n", result.stderr
            settle(pcap)
        site.wait_output(r"GET " + path)  # the access log line: the connection is done, keys are flushed
    check_key_log(keylog, pcap, site.port)
    requests = tshark_decrypt(pcap, keylog, port=site.port)
    assert f"GET {path} HTTP/1.1" in requests, f"{TSHARK} with our key log decrypted: {requests!r}"
    responses = tshark_decrypt(pcap, keylog, port=site.port, display_filter="http.response",
                               fields=("http.response.version", "http.response.code"))
    assert "HTTP/1.1 200" in responses, f"{TSHARK}: {responses!r}"
    control(pcap, site.port, tmp_path)


def test_tshark_decrypts_our_client_to_s_server_with_our_client_key_log(pki: Pki, tmp_path: Path) -> None:
    path = f"/{uuid.uuid4().hex}"
    keylog = tmp_path / "client-keylog.txt"
    with (
        OpenSSLServer(pki.cert, pki.key, mode="www") as server,  # no -keylogfile: only our key log
        capture(server.port, pcap=tmp_path / "client.pcap") as pcap,
        KeyLogFile(keylog) as sink,
    ):
        with connect("127.0.0.1", server.port, server_name="localhost", cafile=pki.cafile, timeout=10,
                     key_log=sink) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            page = read_all(tls)
        assert page.startswith(b"HTTP/1.0 200 ok"), page[:200]
        settle(pcap)
    check_key_log(keylog, pcap, server.port)
    requests = tshark_decrypt(pcap, keylog, port=server.port)
    assert f"GET {path} HTTP/1.1" in requests, f"{TSHARK} with our key log decrypted: {requests!r}"
    control(pcap, server.port, tmp_path)
