"""``tlskit decrypt`` against real captures (tcpdump on loopback) of real peers, cross-checked with tshark
decrypting the same capture with the same key log: same records, same handshake messages, same plaintext."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.interop.conftest import Pki, make_pki
from tests.interop.ours import OurServer, http_hello, server_config
from tests.interop.peers import OpenSSLServer, capture, curl_get, openssl_client, tshark
from tlskit.analysis.decrypt import DecryptedStream, decrypt_capture
from tlskit.cli.main import main
from tlskit.enums import ContentType
from tlskit.io.socket import connect
from tlskit.keylog import KeyLogFile

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tshark_records(pcap: Path, keylog: Path) -> dict[tuple[int, int], tuple[list[int], list[int]]]:
    """(stream, source port) -> (record content types, handshake types), as tshark decrypts them."""
    fields = ["-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tls.record.content_type", "-e", "tls.handshake.type"]
    out = tshark(pcap, "-Y", "tls", "-T", "fields", "-E", "separator=/t", *fields, keylog=keylog).stdout
    seen: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    for line in out.splitlines():
        stream, port, types, handshakes = ([*line.split("\t"), "", "", "", ""])[:4]
        record_types, hs_types = seen.setdefault((int(stream), int(port)), ([], []))
        record_types += [int(t) for t in types.split(",") if t]
        hs_types += [int(t) for t in handshakes.split(",") if t]
    return seen


def _tshark_plaintext(pcap: Path, keylog: Path, stream: int, server_port: int) -> tuple[bytes, bytes]:
    """(client, server) application data of ``stream`` from ``tshark -z follow,tls,raw``."""
    out = tshark(pcap, "-q", "-z", f"follow,tls,raw,{stream}", keylog=keylog).stdout
    node0 = next(line for line in out.splitlines() if line.startswith("Node 0:"))
    node0_is_server = node0.rsplit(":", 1)[1].strip() == str(server_port)
    first, second = bytearray(), bytearray()
    for line in out.splitlines():
        if line.startswith("\t") and line.strip():
            second += bytes.fromhex(line.strip())
        elif line and all(c in "0123456789abcdef" for c in line):
            first += bytes.fromhex(line)
    server, client = (first, second) if node0_is_server else (second, first)
    return bytes(client), bytes(server)


def _assert_same_as_tshark(pcap: Path, keylog: Path, streams: list[DecryptedStream]) -> None:
    theirs = _tshark_records(pcap, keylog)
    for item in streams:
        s, tls = item.stream, item.tls
        for direction, port in (("client", s.client[1]), ("server", s.server[1])):
            ours_types = [r.content_type for r in tls.records if r.direction == direction]
            ours_hs = [m.type for m in tls.messages if m.direction == direction and m.type >= 0]
            their_types, their_hs = theirs.get((s.index, port), ([], []))
            assert ours_types == their_types, f"stream {s.index} {direction}: record types differ"
            assert ours_hs == their_hs, f"stream {s.index} {direction}: handshake messages differ"
        client, server = _tshark_plaintext(pcap, keylog, s.index, s.server[1])
        assert tls.application_data("client") == client
        assert tls.application_data("server") == server


def test_decrypt_curl_to_our_server_matches_tshark(pki: Pki, tmp_path: Path) -> None:
    keylog, pcap = tmp_path / "keys.log", tmp_path / "curl.pcap"
    with KeyLogFile(keylog) as sink, OurServer(server_config(pki, key_log=sink), http_hello) as server, \
            capture(server.port, pcap=pcap):
            for path in ("/one", "/two"):
                curl_get(f"https://localhost:{server.port}{path}", cacert=pki.cafile,
                         extra=("--resolve", f"localhost:{server.port}:127.0.0.1"))
    streams = [s for s in decrypt_capture(pcap, keylog.read_text()) if s.is_tls]
    assert len(streams) == 2
    for item, path in zip(streams, ("/one", "/two"), strict=True):
        assert item.fully_decrypted, item.notes
        assert item.tls.application_data("client").startswith(f"GET {path} HTTP/1.1\r\n".encode())
        assert b"tlskit says hello to GET " + path.encode() in item.tls.application_data("server")
        names = [m.name for m in item.tls.messages]
        assert names[:6] == ["ClientHello", "ServerHello", "EncryptedExtensions", "Certificate",
                             "CertificateVerify", "Finished"]
    _assert_same_as_tshark(pcap, keylog, streams)

    out_dir = tmp_path / "payloads"
    assert main(["decrypt", str(pcap), "--keylog", str(keylog), "--write-dir", str(out_dir)]) == 0
    assert (out_dir / "stream-1-client.bin").read_bytes().startswith(b"GET /two ")


def test_decrypt_our_client_with_key_updates_to_openssl_matches_tshark(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keylog, pcap = tmp_path / "keys.log", tmp_path / "ku.pcap"
    with OpenSSLServer(pki.cert, pki.key, mode="rev") as server, capture(server.port, pcap=pcap), \
            KeyLogFile(keylog) as sink:
        with connect("127.0.0.1", server.port, server_name="localhost", cafile=pki.cafile, key_log=sink,
                     timeout=10) as tls:
            for line, update in ((b"hello world\n", True), (b"after update\n", False), (b"third\n", None)):
                tls.sendall(line)
                assert tls.recv(100) == line[:-1][::-1] + b"\n"
                if update is not None:
                    tls.key_update(request_peer=update)
        time.sleep(0.1)
    streams = [s for s in decrypt_capture(pcap, keylog.read_text()) if s.is_tls]
    assert len(streams) == 1 and streams[0].fully_decrypted
    tls_conn = streams[0].tls
    assert tls_conn.application_data("client") == b"hello world\nafter update\nthird\n"
    assert {r.epoch for r in tls_conn.records if r.direction == "client"} >= {"application-1", "application-2"}
    assert "application-1" in {r.epoch for r in tls_conn.records if r.direction == "server"}
    _assert_same_as_tshark(pcap, keylog, streams)

    assert main(["decrypt", str(pcap), "--keylog", str(keylog), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert next(m["request_update"] for m in report[0]["messages"] if m["type"] == "KeyUpdate") == "update_requested"


def test_decrypt_openssl_0rtt_matches_tshark(pki: Pki, tmp_path: Path) -> None:
    keylog, pcap, session = tmp_path / "keys.log", tmp_path / "early.pcap", tmp_path / "session.pem"
    early = tmp_path / "early.txt"
    early.write_bytes(b"GET /early HTTP/1.0\r\n\r\n")
    with OpenSSLServer(pki.cert, pki.key, mode="plain", extra_args=["-early_data"]) as server, \
            capture(server.port, pcap=pcap):
        _first_connection_until_ticket(server.port, pki, keylog, session)
        openssl_client(server.port, cafile=pki.cafile, keylog=keylog, data=b"second\n",
                       extra_args=["-sess_in", str(session), "-early_data", str(early)])
        server.wait_for_output(r"GET /early")  # early data is printed at once; later lines are buffered
    streams = [s for s in decrypt_capture(pcap, keylog.read_text()) if s.is_tls]
    assert len(streams) == 2 and all(s.fully_decrypted for s in streams)
    resumed = streams[1].tls
    assert resumed.early_data_offered and resumed.early_data_accepted
    early_records = [r for r in resumed.records if r.epoch == "early"]
    assert [r.content_type for r in early_records] == [ContentType.application_data, ContentType.handshake]
    assert resumed.application_data("client").startswith(b"GET /early HTTP/1.0\r\n\r\n")
    _assert_same_as_tshark(pcap, keylog, streams)


def test_decrypt_exit_status_without_keys_and_for_a_non_capture(pki: Pki, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A key log without one valid line (empty, or the capture given twice) only said "no key log entry for
    client random ..." per stream."""
    keylog, pcap = tmp_path / "keys.log", tmp_path / "c.pcap"
    with KeyLogFile(keylog) as sink, OurServer(server_config(pki, key_log=sink), http_hello) as server, \
            capture(server.port, pcap=pcap):
            curl_get(f"https://localhost:{server.port}/", cacert=pki.cafile,
                     extra=("--resolve", f"localhost:{server.port}:127.0.0.1"))
    empty = tmp_path / "empty.log"
    empty.write_text("")
    for useless in (empty, pcap):
        assert main(["decrypt", str(pcap), "--keylog", str(useless)]) == 1
        assert capsys.readouterr().err == (
            f"tlskit decrypt: no NSS key log lines in {useless} (expected lines like "
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET <random> <secret>); nothing can be decrypted\n")
    assert main(["decrypt", str(pcap), "--keylog", str(keylog)]) == 0
    assert capsys.readouterr().err == ""
    not_a_capture = tmp_path / "x.pcap"
    not_a_capture.write_bytes(b"hello")
    assert main(["decrypt", str(not_a_capture), "--keylog", str(keylog)]) == 2


def _first_connection_until_ticket(port: int, pki: Pki, keylog: Path, session: Path) -> None:
    """s_client hangs up as soon as its stdin closes, which can be before the server's NewSessionTicket
    arrives (then the saved session cannot carry 0-RTT). s_client writes ``-sess_out`` when a ticket arrives,
    so keep stdin open until that file exists."""
    import shutil
    import subprocess
    import time

    openssl = shutil.which("openssl")
    assert openssl is not None
    argv = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-CAfile", str(pki.cafile),
            "-servername", "localhost", "-keylogfile", str(keylog), "-sess_out", str(session), "-brief"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdin is not None
        proc.stdin.write(b"first\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while not (session.exists() and session.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.stdin.close()
        proc.wait(timeout=10)
    assert session.stat().st_size, "s_client saved no session: no NewSessionTicket arrived"


def test_a_tls12_stream_is_named_not_decoded_as_tls13(pki: Pki, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Its handshake was parsed with TLS 1.3 layouts (`Certificate error=decode_error`, `unknown_0x000c`), its
    encrypted Finished and alerts shown as plaintext, `records: 15 (0 not decrypted)` with nothing decrypted,
    and its suite printed as unknown_0xc02c."""
    import subprocess

    from tests.interop.peers import require

    pcap = tmp_path / "tls12.pcap"
    keylog = tmp_path / "empty.log"
    keylog.write_text("")
    with OpenSSLServer(pki.cert, pki.key, mode="www", tls13_only=False, extra_args=["-tls1_2"]) as server, \
            capture(server.port, pcap=pcap):
        subprocess.run([require("openssl"), "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2",
                        "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384", "-servername", "localhost",
                        "-CAfile", str(pki.cafile)], input=b"GET / HTTP/1.0\r\n\r\n", capture_output=True,
                       timeout=30, check=False)
        time.sleep(0.1)
    assert main(["decrypt", str(pcap), "--keylog", str(keylog)]) == 1
    out = capsys.readouterr().out
    assert "TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" in out, out
    assert "error=" not in out and "unknown_0x000c" not in out
    streams = [s for s in decrypt_capture(pcap, "") if s.is_tls]
    tls12 = streams[0].tls
    names = [m.name for m in tls12.messages]
    assert names[:2] == ["ClientHello", "ServerHello"] and "Certificate" in names
    encrypted = [r for r in tls12.records if not r.decrypted]
    assert encrypted and all(r.epoch == "encrypted" for r in encrypted)
    assert {r.content_type for r in tls12.records if r.decrypted} <= {ContentType.handshake,
                                                                    ContentType.change_cipher_spec}
