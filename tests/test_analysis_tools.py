"""``tlskit probe``, ``scan`` and ``bench`` against real servers started here: tlskit's own server,
``openssl s_server`` (TLS 1.2 + 1.3) and ``gnutls-serv``; loopback only, every run bounded."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socketserver
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.certs import make_ca
from tests.interop.conftest import Pki, make_pki
from tests.interop.ours import OurServer, http_hello, server_config
from tests.interop.peers import HOST, GnuTLSServer, OpenSSLServer
from tlskit.analysis.probe import ProbeOptions, probe
from tlskit.analysis.scan import ScanOptions, scan, scan_json
from tlskit.cli.main import main
from tlskit.config import EarlyDataPolicy
from tlskit.enums import NamedGroup
from tlskit.pki.ocsp import CertStatus, OCSPResponder, build_request
from tlskit.stores.memory import MemoryReplayStore
from tlskit.tickets.keyring import TicketKey, TicketKeyRing

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _good_staple(pki: Pki) -> bytes:
    """A real OCSP response ("good") for the leaf. The intermediate's key is not on disk, so another CA signs
    it: the probe shows what is stapled, it does not judge the signer."""
    leaf, inter = x509.load_pem_x509_certificates(pki.cert.read_bytes())[:2]
    ca = make_ca("staple signer")
    responder = OCSPResponder(issuer=inter, signer_cert=ca.cert, signer_key=ca.key,  # type: ignore[arg-type]
                              lookup=lambda serial: CertStatus())
    return responder.respond(build_request(leaf, inter))


def _tickets() -> dict[str, object]:
    """ServerConfig fields for tickets and 0-RTT (with a replay store, as RFC 8446 §8 requires)."""
    return {"ticket_keys": TicketKeyRing([TicketKey.generate(os.urandom)]), "early_data": EarlyDataPolicy(),
            "replay_store": MemoryReplayStore()}


def test_probe_shows_each_message_chain_staple_and_timings(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    staple = _good_staple(pki)
    config = server_config(pki, alpn=("h2", "http/1.1"), ocsp_staple=lambda _: staple, **_tickets())
    with OurServer(config, http_hello) as srv:
        report = probe(ProbeOptions(host="localhost", port=srv.port, cafile=str(pki.cafile), alpn=("h2",),
                                    groups=(NamedGroup.secp256r1, NamedGroup.x25519), resume=True,
                                    early_data=True))
        assert main(["probe", f"localhost:{srv.port}", "--cafile", str(pki.cafile), "--json",
                     "--groups", "X25519MLKEM768", "--alpn", "http/1.1"]) == 0
    first = report.first
    assert first.ok and report.exit_status == 0
    names = [m.name for m in first.tls.messages]
    assert names[:6] == ["ClientHello", "ServerHello", "EncryptedExtensions", "Certificate", "CertificateVerify",
                         "Finished"]
    assert first.negotiated is not None and first.negotiated.alpn == "h2"
    assert first.negotiated.group is NamedGroup.secp256r1
    assert 0 < first.connect_time <= first.first_byte_time <= first.handshake_time  # type: ignore[operator]
    assert len(first.peer_chain()) == 2 and first.ocsp_staple() == staple
    assert first.tickets and first.tickets[0].max_early_data_size > 0
    second = report.second
    assert second is not None and second.negotiated is not None, report.second_note
    assert second.negotiated.resumed and second.negotiated.early_data_accepted
    assert [m.epoch for m in second.tls.messages if m.name == "EndOfEarlyData"] == ["early"]
    data = json.loads(capsys.readouterr().out)
    assert data["negotiated"]["group"] == "X25519MLKEM768" and data["negotiated"]["alpn"] == "http/1.1"
    leaf = data["certificates"][0]
    assert leaf["sans"] == ["DNS:localhost", "IP:127.0.0.1"] and 28 <= leaf["days_left"] <= 30
    assert leaf["spki_sha256"].endswith("=") and leaf["key"] == "EC secp256r1"
    assert data["ocsp_staple"]["cert_status"] == "good"


def test_probe_exit_codes_and_openssl_tickets(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with OpenSSLServer(pki.cert, pki.key, mode="www") as server:
        assert main(["probe", f"{HOST}:{server.port}", "--sni", "localhost", "--cafile", str(pki.cafile)]) == 0
        out = capsys.readouterr().out
        assert "<<< [application] NewSessionTicket lifetime=7200" in out and "Session tickets: 2" in out
        assert main(["probe", f"{HOST}:{server.port}", "--sni", "wrong.example", "--cafile", str(pki.cafile)]) == 4
        assert "not 'wrong.example'" in capsys.readouterr().out
        assert main(["probe", f"{HOST}:{server.port}", "--sni", "wrong.example", "--insecure"]) == 0
    assert main(["probe", f"{HOST}:{server.port}", "--timeout", "2"]) == 3


def test_probe_of_a_refusing_server_mentions_no_key_log(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    """A handshake refused before any secret existed printed `note: no key log entry for client random ...`
    although no key log was asked for (probe keeps its own)."""
    with OpenSSLServer(pki.cert, pki.key, mode="www", tls13_only=False, extra_args=["-tls1_2"]) as server:
        status = main(["probe", f"{HOST}:{server.port}", "--sni", "localhost", "--cafile", str(pki.cafile)])
    out = capsys.readouterr().out
    assert status != 0 and "protocol_version" in out and "key log" not in out, out


def test_scan_openssl_tls12_and_13(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with OpenSSLServer(pki.cert, pki.key, mode="www", tls13_only=False, groups="X25519:P-256") as server:
        report = scan(ScanOptions(host=HOST, port=server.port, sni="localhost", cafile=str(pki.cafile)))
    data = scan_json(report)
    assert data["versions"]["TLSv1.3"]["accepted"] and data["versions"]["TLSv1.2"]["version"] == "TLSv1.2"
    assert not data["versions"]["TLSv1.0"]["accepted"] or data["versions"]["TLSv1.0"]["version"] != "TLSv1.0"
    accepted_groups = {g for g, a in data["groups"].items() if a["accepted"]}
    assert accepted_groups == {"x25519", "secp256r1"}
    assert data["hello_retry"]["sends_hello_retry_request"]
    assert data["tls12_suites"][0].startswith("TLS_ECDHE_ECDSA_WITH_AES")
    assert {s for s, a in data["tls13_suites"].items() if a["accepted"]} == {
        "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
    assert data["signature_schemes"]["ecdsa_secp256r1_sha256"]["accepted"]
    assert not data["signature_schemes"]["rsa_pss_rsae_sha256"]["accepted"]
    assert data["handshake"]["trusted"] and data["handshake"]["ticket_lifetimes"] == [7200]
    assert report.connections <= 40 and data["grade"] == "A"


@pytest.mark.parametrize("options", [{"groups": "P-384"}, {"ciphersuites": "TLS_AES_128_CCM_SHA256"},
                                     {"groups": "X448"}], ids=["hello-retry", "ccm-only", "x448-only"])
def test_scan_sees_tls13_when_the_server_answers_with_a_retry_or_takes_only_an_unusual_suite_or_group(
    pki: Pki, options: dict[str, str]
) -> None:
    """A HelloRetryRequest is an acceptance of TLS 1.3 (§4.1.4), and the version probe offers every suite and
    group the later probes ask about: all three servers were reported as "TLS 1.3 is not supported"."""
    with OpenSSLServer(pki.cert, pki.key, mode="www", **options) as server:  # type: ignore[arg-type]
        data = scan_json(scan(ScanOptions(host=HOST, port=server.port, sni="localhost", cafile=str(pki.cafile))))
    assert data["versions"]["TLSv1.3"]["accepted"] and data["versions"]["TLSv1.3"]["version"] == "TLSv1.3"
    assert any(a["accepted"] for a in data["tls13_suites"].values())
    assert all("TLS 1.3" not in f["reason"] for f in data["findings"]), data["findings"]
    assert data["handshake"] is not None and data["grade"] in "AB"
    # tlskit's client has no CCM or X448: the certificate is a check not done, so the grade is provisional (it was
    # an [A] finding, as if checked)
    unchecked = options.get("groups") == "X448" or "ciphersuites" in options
    assert data["grade_complete"] is not unchecked, data["not_tested"]
    assert any("certificate not checked" in t for t in data["not_tested"]) is unchecked
    assert all("certificate not checked" not in f["reason"] for f in data["findings"])


def test_scan_of_a_tls12_only_server_checks_its_certificate_and_lists_every_suite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without TLS 1.3 there was no full handshake, so the certificate was never looked at (an untrusted one
    graded B), and the suite list stopped at 6 (a server's TLS_RSA_* suites, no forward secrecy, went unseen)."""
    rsa = make_pki(tmp_path, "rsa2048")
    with OpenSSLServer(rsa.cert, rsa.key, mode="www", tls13_only=False, extra_args=["-tls1_2"]) as server:
        trusted = scan_json(scan(ScanOptions(host=HOST, port=server.port, sni="localhost", cafile=str(rsa.cafile))))
        status = main(["scan", f"{HOST}:{server.port}", "--sni", "localhost"])  # the system store: not trusted
    out = capsys.readouterr().out
    assert trusted["tls12_certificate"]["trusted"] and trusted["tls12_certificate"]["certificate"]["days_left"] > 0
    suites = trusted["tls12_suites"]
    assert len(suites) > 6 and "TLS_RSA_WITH_AES_128_GCM_SHA256" in suites, suites
    assert trusted["tls12_server_order"] is False  # s_server without -serverpref follows the client's order
    assert "TLS 1.2 suite without forward secrecy: TLS_RSA_WITH_AES_128_GCM_SHA256" in str(trusted["findings"])
    assert status == 1 and "certificate not trusted" in out and "grade: F" in out
    assert "TLSv1.2 cipher suites (the client's order: the server follows it):" in out


def test_scan_of_a_plain_http_port_grades_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with socketserver.TCPServer((HOST, 0), _HttpAnswer) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            report = scan(ScanOptions(host=HOST, port=httpd.server_address[1], max_connections=6, timeout=2))
        finally:
            httpd.shutdown()
    assert report.grade == "-" and report.findings == [] and report.exit_status == 3


class _HttpAnswer(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(4096)
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_scan_flags_tls11_as_deprecated(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with OpenSSLServer(pki.cert, pki.key, mode="www", tls13_only=False,
                       extra_args=["-cipher", "DEFAULT@SECLEVEL=0", "-min_protocol", "TLSv1.1"]) as server:
        status = main(["scan", f"{HOST}:{server.port}", "--sni", "localhost", "--cafile", str(pki.cafile),
                       "--max-connections", "25"])
    out = capsys.readouterr().out
    assert status == 1 and "TLSv1.1: accepted  <- deprecated (RFC 8996)" in out and "grade: C" in out
    assert "budget reached" in out


def test_scan_gnutls_and_our_server(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with GnuTLSServer(pki.cert, pki.key, mode="http") as server:
        gnutls = scan_json(scan(ScanOptions(host="localhost", port=server.port, cafile=str(pki.cafile))))
    assert gnutls["versions"]["TLSv1.3"]["accepted"] and not gnutls["versions"]["TLSv1.2"]["accepted"]
    assert gnutls["groups"]["x25519"]["accepted"] and gnutls["grade"] in "AB"
    with OurServer(server_config(pki), http_hello) as srv:
        assert main(["scan", f"localhost:{srv.port}", "--cafile", str(pki.cafile), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert ours["groups"]["X25519MLKEM768"]["accepted"] and ours["hello_retry"]["cookie"]
    assert ours["deprecated_versions_enabled"] == [] and ours["grade"] == "A"


def _slow_random(n: int) -> bytes:
    """A server whose handshake takes 30 ms longer (its ServerHello random is drawn slowly)."""
    time.sleep(0.03)
    return os.urandom(n)


def test_bench_compare_rates_each_target_by_its_own_time(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    """Interleaved connection by connection, both targets complete the same number of handshakes: dividing
    both by the run's wall time reported 1.00x for a server four times slower."""
    with OurServer(server_config(pki), http_hello) as fast, \
            OurServer(server_config(pki, random=_slow_random), http_hello) as slow:
        status = main(["bench", f"localhost:{fast.port}", "--compare", f"localhost:{slow.port}",
                       "--cafile", str(pki.cafile), "--count", "30", "--json"])
    assert status == 0
    data = json.loads(capsys.readouterr().out)
    fast_result, slow_result = data["results"]
    assert fast_result["handshakes"] == slow_result["handshakes"] == 15
    assert slow_result["seconds"] >= 15 * 0.03 > fast_result["seconds"]
    assert data["ratio"] > 2, data
    assert data["ratio"] == pytest.approx(fast_result["rate_per_second"] / slow_result["rate_per_second"], rel=0.01)


def test_bench_reports_a_missing_report_directory_before_running(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such"
    assert main(["bench", "localhost:1", "--png", str(missing / "x.png")]) == 2
    assert f"directory {missing} does not exist" in capsys.readouterr().err and not missing.exists()


def test_bench_compare_writes_png_and_html(pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with OurServer(server_config(pki), http_hello) as ours, OpenSSLServer(pki.cert, pki.key, mode="www") as other:
        status = main(["bench", f"localhost:{ours.port}", "--compare", f"localhost:{other.port}",
                       "--cafile", str(pki.cafile), "--count", "40", "--duration", "10", "--concurrency", "2",
                       "--html", str(tmp_path / "report.html"), "--json"])
    assert status == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["handshakes"] for r in data["results"]] == [20, 20] and data["ratio"] > 0
    assert data["results"][0]["latency_ms"]["p50"] > 0
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
    assert "report.png" in (tmp_path / "report.html").read_text()
    assert main(["bench", "localhost:1", "--count", "1", "-k"]) == 3
    assert main(["bench", "localhost:1", "--mode", "resumed", "-k"]) == 3  # cannot even prime a session
    capsys.readouterr()
    with OurServer(server_config(pki, **_tickets()), http_hello) as ours:
        for mode in ("resumed", "0rtt"):
            assert main(["bench", f"localhost:{ours.port}", "--cafile", str(pki.cafile), "--count", "10",
                         "--mode", mode, "--json"]) == 0
            result = json.loads(capsys.readouterr().out)["results"][0]
            assert result["handshakes"] == 10 and result["resumed"] == 10
            assert result["early_data_accepted"] == (10 if mode == "0rtt" else 0)
    assert dt.datetime.now(dt.UTC)  # every run above was bounded by --count



def test_scan_of_a_name_that_does_not_resolve_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Every version read "refused (connect)", as if a server had refused TLS, then four lines of "no answer
    (connect: Name or service not known)"; probe and diagnose say "cannot resolve" once (probe exits 3)."""
    assert main(["scan", "no-such-host.invalid:443", "--timeout", "2"]) == 3  # RFC 6761 §6.4
    out = capsys.readouterr().out
    assert out.splitlines() == ["no-such-host.invalid:443: cannot resolve no-such-host.invalid: "
                                "Name or service not known"], out
    assert main(["scan", "no-such-host.invalid", "--json"]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["connections"] == 0 and data["grade"] == "-" and data["error"].startswith("cannot resolve")


@pytest.mark.parametrize("command", ["diagnose", "scan"])
def test_a_missing_cafile_is_a_usage_error_before_any_connection(
    command: str, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `tlskit probe --cafile nope.pem`: diagnose printed "probe ... completed" then "unknown: unrecognised
    failure" (exit 4), and scan made 27 connections and graded the server (exit 1)."""
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    accepted: list[object] = []
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(0.1)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                accepted.append(conn)
                with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        missing = tmp_path / "nope.pem"
        try:
            status = main([command, f"{HOST}:{listener.getsockname()[1]}", "--cafile", str(missing), "--timeout", "2"])
        finally:
            stop.set()
            thread.join(2)
    captured = capsys.readouterr()
    assert status == 2 and captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured
    assert f"tlskit {command}: error: cannot read trust file '{missing}'" in captured.err
    assert accepted == []


def test_scan_within_a_small_budget_is_a_provisional_grade(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    """`--max-connections 5` graded tlskit's server A and exited 0 with most checks untested (the budget note was
    tagged [A]): untested checks counted as passes."""
    with OurServer(server_config(pki), http_hello) as srv:
        small = main(["scan", f"localhost:{srv.port}", "--cafile", str(pki.cafile), "--max-connections", "5"])
        out = capsys.readouterr().out
        assert main(["scan", f"localhost:{srv.port}", "--cafile", str(pki.cafile), "--max-connections", "5",
                     "--json"]) == 4
        data = json.loads(capsys.readouterr().out)
        assert main(["scan", f"localhost:{srv.port}", "--cafile", str(pki.cafile)]) == 0
        full = capsys.readouterr().out
    assert small == 4 and "grade: A (provisional: at best A;" in out and "[A]" not in out, out
    assert data["grade_complete"] is False and data["not_tested"] and data["findings"] == []
    assert full.rstrip().endswith("grade: A"), full
