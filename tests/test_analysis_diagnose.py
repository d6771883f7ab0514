"""``tlskit diagnose`` on real failures: servers misconfigured by the test (openssl s_server, tlskit's server,
a plain HTTP server, a TLS-1.3-hostile proxy, HAProxy from Debian), the corpus captured from real
``openssl s_client`` runs and real HAProxy log lines, and live diagnosis of the same servers."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.certs import Issued, make_ca, make_leaf, write_pem
from tests.interop.ours import OurServer, http_hello
from tests.interop.peers import HOST, OpenSSLServer, free_port, require, run_client, wait_listening
from tlskit.analysis.diagnose import LiveOptions, diagnose_haproxy, diagnose_live, diagnose_s_client, render_diagnosis
from tlskit.cli.main import main
from tlskit.config import CertifiedKey, ServerConfig
from tlskit.pki.ocsp import CertStatus, OCSPResponder, build_request

pytestmark = pytest.mark.interop
NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Lab:
    """A root/intermediate the client trusts and PEM files for each misconfiguration."""

    dir: Path
    cafile: Path
    root: Issued
    inter: Issued

    def leaf(self, stem: str, *, chain: bool = True, ca: Issued | None = None, **kwargs: object) -> tuple[Path, Path]:
        issuer = ca or self.inter
        leaf = make_leaf(issuer, **{"names": ["localhost", "127.0.0.1"], **kwargs})  # type: ignore[arg-type]
        return leaf.write(self.dir, stem, chain=[issuer] if chain else [])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    d = tmp_path_factory.mktemp("lab")
    root = make_ca("diagnose root")
    inter = make_ca("diagnose intermediate", issuer=root)
    return Lab(d, write_pem(d / "ca.pem", [root]), root, inter)


def _s_client(port: int, cafile: Path, *extra: str, servername: str = "localhost") -> str:
    argv = [require("openssl"), "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(cafile),
            "-verify_return_error", "-servername", servername, "-verify_hostname", servername, *extra]
    result = run_client(argv, data=b"")
    return result.stdout + result.stderr


@contextlib.contextmanager
def _plain_http() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", HOST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_listening(port, proc=proc)  # type: ignore[arg-type]
        yield port
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _tls13_hostile_proxy(upstream: int) -> Iterator[int]:
    """A TCP proxy that resets any connection whose ClientHello offers supported_versions (TLS 1.3), as
    broken middleboxes did when TLS 1.3 was deployed, and relays everything else."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            hello = client.recv(65536)
            if b"\x00\x2b\x00" in hello[43:] and b"\x03\x04" in hello:  # supported_versions offering 1.3
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            server = socket.create_connection((HOST, upstream))
            server.sendall(hello)
            threading.Thread(target=pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=pipe, args=(server, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def _revoked_staple(leaf_pem: Path, inter: Issued) -> Callable[[CertifiedKey], bytes | None]:
    leaf = x509.load_pem_x509_certificates(leaf_pem.read_bytes())[0]
    responder = OCSPResponder(issuer=inter.cert, signer_cert=inter.cert, signer_key=inter.key,  # type: ignore[arg-type]
                              lookup=lambda serial: CertStatus(revoked_at=NOW - dt.timedelta(days=1),
                                                               reason=x509.ReasonFlags.key_compromise))
    response = responder.respond(build_request(leaf, inter.cert))
    return lambda _: response


@pytest.fixture(scope="module")
def corpus_and_live(lab: Lab) -> tuple[str, dict[str, str]]:
    """Every misconfiguration once: (concatenated s_client output, {scenario: live cause})."""
    runs: list[str] = []
    live: dict[str, str] = {}
    good_cert, good_key = lab.leaf("good")

    def ours(cert: Path, key: Path, **overrides: object) -> OurServer:
        config = ServerConfig(certificates=(CertifiedKey.from_pem_files(cert, key),), **overrides)  # type: ignore[arg-type]
        return OurServer(config, http_hello)

    def diagnose(port: int, **kwargs: object) -> str:
        diagnosis = diagnose_live(LiveOptions(host=HOST, port=port, cafile=str(lab.cafile),
                                              **{"sni": "localhost", **kwargs}))  # type: ignore[arg-type]
        return diagnosis.findings[0].cause if diagnosis.findings else "healthy"

    with ours(good_cert, good_key) as server:
        runs.append(_s_client(server.port, lab.cafile))
        live["healthy"] = diagnose(server.port)
        runs.append(_s_client(server.port, lab.cafile, servername="other.example"))
        live["hostname_mismatch"] = diagnose(server.port, sni="other.example")
    expired = lab.leaf("expired", not_before=NOW - dt.timedelta(days=60), not_after=NOW - dt.timedelta(days=3))
    with ours(*expired) as server:
        runs.append(_s_client(server.port, lab.cafile))
        live["expired"] = diagnose(server.port)
    future = lab.leaf("future", not_before=NOW + dt.timedelta(days=2))
    with ours(*future) as server:
        runs.append(_s_client(server.port, lab.cafile))
        live["not_yet_valid"] = diagnose(server.port)
    with ours(good_cert, good_key, ocsp_staple=_revoked_staple(good_cert, lab.inter)) as server:
        runs.append(_s_client(server.port, lab.cafile, "-status"))
        live["revoked"] = diagnose(server.port)
    stranger = make_ca("stranger root")
    with OpenSSLServer(*lab.leaf("stranger", ca=stranger), mode="www") as server:
        runs.append(_s_client(server.port, lab.cafile))
        live["unknown_ca"] = diagnose(server.port)
    with OpenSSLServer(*lab.leaf("leafonly", chain=False), mode="www") as server:
        runs.append(_s_client(server.port, lab.cafile))
        live["missing_intermediate"] = diagnose(server.port)
    with OpenSSLServer(good_cert, good_key, tls13_only=False, extra_args=["-tls1_2"]) as server:
        runs.append(_s_client(server.port, lab.cafile, "-tls1_3"))
        live["server_lacks_version"] = diagnose(server.port)
        with _tls13_hostile_proxy(server.port) as proxy:
            live["middlebox"] = diagnose(proxy)
    with OpenSSLServer(good_cert, good_key, tls13_only=False,
                       extra_args=["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]) as server:
        live["legacy_only"] = diagnose(server.port)
    with OpenSSLServer(good_cert, good_key, ciphersuites="TLS_AES_128_CCM_SHA256") as server:
        runs.append(_s_client(server.port, lab.cafile))
        live["cipher_mismatch"] = diagnose(server.port)
    client_ok = lab.leaf("client", client_auth=True)
    client_stranger = lab.leaf("client-stranger", ca=stranger, client_auth=True)
    mtls = ["-Verify", "1", "-verify_return_error", "-CAfile", str(lab.cafile)]
    with OpenSSLServer(good_cert, good_key, extra_args=mtls) as server:
        runs.append(_s_client(server.port, lab.cafile, "-ign_eof"))  # the alert follows the client's Finished
        live["client_cert_required"] = diagnose(server.port)
        runs.append(_s_client(server.port, lab.cafile, "-cert", str(client_stranger[0]),
                              "-key", str(client_stranger[1]), "-ign_eof"))
        live["client_cert_rejected"] = diagnose(server.port, client_cert=str(client_stranger[0]),
                                                client_key=str(client_stranger[1]))
        assert client_ok  # a trusted client certificate exists too; the server would accept it
    with _plain_http() as port:
        runs.append(_s_client(port, lab.cafile))
        live["plain_http"] = diagnose(port)
    return "\n".join(runs), live


def test_s_client_corpus_is_classified_per_run(corpus_and_live: tuple[str, dict[str, str]], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    corpus, _ = corpus_and_live
    diagnosis = diagnose_s_client(corpus)
    causes = [f.cause for f in diagnosis.findings]
    assert causes == ["hostname_mismatch", "expired", "not_yet_valid", "revoked", "unknown_ca",
                      "missing_intermediate", "server_lacks_version", "cipher_mismatch", "client_cert_required",
                      "client_cert_rejected", "plain_http"], "\n".join(f"{f.cause}: {f.example}" for f in
                                                                     diagnosis.findings)
    assert diagnosis.healthy == 1
    path = tmp_path / "runs.txt"
    path.write_text(corpus + "\n" + corpus)
    assert main(["diagnose", "--s-client", str(path)]) == 1
    out = capsys.readouterr().out
    assert "top causes:" in out and "fix:" in out and "     2  expired" in out


@pytest.mark.parametrize("scenario", ["healthy", "hostname_mismatch", "expired", "not_yet_valid", "revoked",
                                      "unknown_ca", "missing_intermediate", "server_lacks_version", "middlebox",
                                      "legacy_only", "cipher_mismatch", "client_cert_required",
                                      "client_cert_rejected", "plain_http"])
def test_live_diagnosis_names_the_cause(corpus_and_live: tuple[str, dict[str, str]], scenario: str) -> None:
    _, live = corpus_and_live
    assert live[scenario] == scenario


def test_live_not_yet_valid_says_how_far(lab: Lab) -> None:
    cert, key = lab.leaf("future2", not_before=NOW + dt.timedelta(hours=5))
    with OurServer(server_config_from(cert, key), http_hello) as server:
        diagnosis = diagnose_live(LiveOptions(host=HOST, port=server.port, sni="localhost", cafile=str(lab.cafile)))
    assert diagnosis.findings[0].cause == "not_yet_valid"
    assert "5.0 hours in the future" in diagnosis.findings[0].detail or "4.9 hours" in diagnosis.findings[0].detail


def server_config_from(cert: Path, key: Path) -> ServerConfig:
    return ServerConfig(certificates=(CertifiedKey.from_pem_files(cert, key),))


HAPROXY_CFG = """\
global
    log stdout format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout client 2s
    timeout connect 1s
    timeout server 1s
frontend fe_tls13
    bind 127.0.0.1:{p1} ssl crt {pem} ssl-min-ver TLSv1.3 ciphersuites TLS_AES_256_GCM_SHA384
    http-request return status 200 content-type text/plain string ok
frontend fe_mtls
    bind 127.0.0.1:{p2} ssl crt {pem} verify required ca-file {ca}
    http-request return status 200 content-type text/plain string ok
"""


@contextlib.contextmanager
def _haproxy(lab: Lab, tmp_path: Path, name: str) -> Iterator[tuple[int, int, Path]]:
    """A real HAProxy (``HAPROXY_CFG``) with a certificate for ``name``: its two ports (TLS 1.3; mTLS) and log."""
    haproxy = shutil.which("haproxy") or require("haproxy")
    cert, key = lab.leaf(name)
    pem = tmp_path / "combined.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    p1, p2 = free_port(), free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(p1=p1, p2=p2, pem=pem, ca=lab.cafile))
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_listening(p2, proc=proc, what="haproxy")  # type: ignore[arg-type]
            yield p1, p2, log
        finally:
            proc.terminate()
            proc.wait(5)


def _wait_lines(log: Path, count: int) -> None:
    """Until ``log`` has ``count`` lines (HAProxy writes them after the connection; 5 s at most)."""
    deadline = time.monotonic() + 5
    while log.read_text().count("\n") < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_haproxy_log_lines_from_a_real_haproxy(lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stranger = lab.leaf("hap-stranger", ca=make_ca("another stranger"), client_auth=True)
    with _haproxy(lab, tmp_path, "haproxy") as (p1, p2, log):
        _s_client(p1, lab.cafile, "-tls1_2")  # version mismatch
        _s_client(p1, lab.cafile, "-ciphersuites", "TLS_AES_128_GCM_SHA256")  # cipher mismatch
        _s_client(p2, lab.cafile, "-cert", str(stranger[0]), "-key", str(stranger[1]))  # untrusted client
        _wait_lines(log, 3)
    lines = log.read_text().splitlines()
    diagnosis = diagnose_haproxy(lines)
    assert [f.cause for f in diagnosis.findings] == ["handshake_failure_unlogged", "handshake_failure_unlogged",
                                                     "client_cert_rejected"], lines
    # HAProxy >= 2.7 can log the OpenSSL reason with error-log-format; Debian 12 ships 2.6, so these lines
    # follow the documented layout with the reasons real OpenSSL servers printed above.
    documented = [
        "127.0.0.1:40000 [27/Nov/2026:10:00:00.000] fe_tls13 SSL handshake failure/0A000102:"
        "unsupported protocol/0/0/0 -/-/-",
        "127.0.0.1:40001 [27/Nov/2026:10:00:00.100] fe_tls13 SSL handshake failure/0A0000C1:"
        "no shared cipher/0/0/0 localhost/-/-",
        "127.0.0.1:40002 [27/Nov/2026:10:00:00.200] fe_mtls SSL handshake failure/0A0000C7:"
        "peer did not return a certificate/0/0/0 localhost/-/-",
        "127.0.0.1:40003 [27/Nov/2026:10:00:00.300] fe_tls13 SSL handshake failure/0A00009C:"
        "http request/0/0/0 -/-/-",
    ]
    assert [f.cause for f in diagnose_haproxy(documented).findings] == [
        "version_mismatch", "cipher_mismatch", "client_cert_required", "plain_http"]
    assert main(["diagnose", "--haproxy", str(log), "--json"]) == 1
    assert '"handshake_failure_unlogged": 2' in capsys.readouterr().out


def test_a_name_that_does_not_resolve_is_said_to_be_one() -> None:
    """It was diagnosed as a timeout ("filtered port or stalled handshake": check firewalls)."""
    diagnosis = diagnose_live(LiveOptions(host="no-such-host.invalid", port=443, timeout=5))  # RFC 6761 §6.4
    assert [f.cause for f in diagnosis.findings] == ["unresolvable"]


def test_runs_saved_with_2_redirected_are_split_where_they_begin(tmp_path: Path) -> None:
    """`openssl s_client ... >> runs.txt 2>&1`: each run's stderr (depth=, verify error) lands before its
    buffered stdout, and was counted with the run before: four runs read as five, one failure counted twice."""
    import os
    import subprocess

    from tests.served import start

    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0"],
                   {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")})
    runs = tmp_path / "runs.txt"
    try:
        for extra in ([], [], ["-CAfile", str(served.cacert)], ["-tls1_2"]):
            with runs.open("ab") as out:
                subprocess.run([require("openssl"), "s_client", "-connect", f"127.0.0.1:{served.port}",
                                "-servername", "localhost", "-verify_return_error", *extra],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=30, check=False)
    finally:
        served.stop()
    diagnosis = diagnose_s_client(runs.read_text())
    assert sorted(f.cause for f in diagnosis.findings) == ["client_lacks_version", "unknown_ca", "unknown_ca"]
    assert diagnosis.healthy == 1


@pytest.mark.parametrize("validity", ["expired", "not_yet_valid"])
def test_one_run_with_an_expired_certificate_saved_with_2_redirected_is_one_failure(
    lab: Lab, tmp_path: Path, validity: str
) -> None:
    """s_client's stderr says `notAfter=...` (or `notBefore=`) among its verify lines: that line stopped them
    being carried to the run they belong to, and one run read as two, the failure counted twice."""
    import subprocess

    window = ({"not_before": NOW - dt.timedelta(days=60), "not_after": NOW - dt.timedelta(days=3)}
              if validity == "expired" else {"not_before": NOW + dt.timedelta(days=2)})
    cert, key = lab.leaf(f"once-{validity}", **window)  # type: ignore[arg-type]
    saved = tmp_path / "one.txt"
    with OpenSSLServer(cert, key, mode="www") as server, saved.open("ab") as out:
        subprocess.run([require("openssl"), "s_client", "-connect", f"{HOST}:{server.port}", "-servername",
                        "localhost", "-CAfile", str(lab.cafile)], stdin=subprocess.DEVNULL, stdout=out,
                       stderr=subprocess.STDOUT, timeout=30, check=False)
    text = saved.read_text()
    assert ("notAfter=" if validity == "expired" else "notBefore=") in text
    diagnosis = diagnose_s_client(text)
    assert [f.cause for f in diagnosis.findings] == [validity] and diagnosis.healthy == 0



def test_a_healthy_run_saved_with_its_stderr_is_healthy(lab: Lab, tmp_path: Path) -> None:
    """s_client prints "Can't use SSL_get_servername" on stderr before its stdout when it sends SNI by itself: the
    line became a run of its own, an "unrecognised failure" (exit 4) for a handshake that worked."""
    import subprocess

    cert, key = lab.leaf("healthy-stderr")
    saved = tmp_path / "ok.txt"
    with OpenSSLServer(cert, key, mode="www") as server, saved.open("ab") as out:
        subprocess.run([require("openssl"), "s_client", "-connect", f"localhost:{server.port}", "-CAfile",
                        str(lab.cafile)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=30,
                       check=False)
    text = saved.read_text()
    diagnosis = diagnose_s_client(text)
    assert diagnosis.findings == [] and diagnosis.healthy == 1, (text[:300], diagnosis.findings)


_OPENSSL_ERROR = re.compile(r":error:(?P<code>[0-9A-F]{8}):SSL routines:\w*:(?P<reason>[^:]+):")


def _haproxy28_lines(server_output: str) -> list[str]:
    """HAProxy >= 2.8 logs `SSL handshake failure (error:<code>:SSL routines::<reason>)` (OpenSSL's error string).
    Debian 12 ships 2.6, which logs no reason, so the reasons come from a real OpenSSL server (s_server) that
    met the same failures, in HAProxy's fixed layout."""
    return [f"127.0.0.1:{40000 + i} [27/Nov/2026:10:00:0{i}.000] fe_tls/1: SSL handshake failure "
            f"(error:{m['code']}:SSL routines::{m['reason']})"
            for i, m in enumerate(_OPENSSL_ERROR.finditer(server_output))]


def test_haproxy_alerts_received_are_the_clients_complaint_about_the_server(lab: Lab) -> None:
    """HAProxy is the server: `tlsv1 alert unknown ca` in its log was sent by a client that does not trust
    HAProxy's certificate. It was read as in s_client output ("server rejected the client certificate"; fix:
    "use a client certificate from the CA the server trusts")."""
    stranger_ca = write_pem(lab.dir / "stranger-bundle.pem", [make_ca("client's only root")])
    with OpenSSLServer(*lab.leaf("hap28"), mode="www") as server:
        _s_client(server.port, stranger_ca)  # the client trusts another CA: it sends unknown_ca
        _s_client(server.port, lab.cafile, servername="other.example")  # the name does not match: bad_certificate
        time.sleep(0.2)
        good = server.output()
    expired = lab.leaf("hap28-expired", not_before=NOW - dt.timedelta(days=60), not_after=NOW - dt.timedelta(days=3))
    with OpenSSLServer(*expired, mode="www") as server:
        _s_client(server.port, lab.cafile)  # the client sends certificate_expired
        time.sleep(0.2)
        old = server.output()
    lines = _haproxy28_lines(good) + _haproxy28_lines(old)
    assert [line.split("::")[1] for line in lines] == ["tlsv1 alert unknown ca)", "sslv3 alert bad certificate)",
                                                       "sslv3 alert certificate expired)"], good + old
    diagnosis = diagnose_haproxy(lines)
    assert [f.cause for f in diagnosis.findings] == ["server_cert_rejected", "server_cert_rejected", "expired"]
    assert all("the client sent alert" in f.detail and "this server's certificate" in f.detail
               for f in diagnosis.findings), diagnosis.findings
    out: list[str] = []
    render_diagnosis(diagnosis, out.append)
    text = "\n".join(out)
    assert "client certificate" not in text and "the client rejected the server's certificate" in text
    assert "fullchain.pem" in text


def test_live_a_revoked_client_certificate_is_said_to_be_revoked(lab: Lab) -> None:
    """openssl s_server with a CRL answers a revoked client certificate with alert certificate_revoked: it was
    "server rejected the client certificate" with a fix about the CA, expiry and EKU."""
    cert, key = lab.leaf("client-revoked", client_auth=True)
    serial = x509.load_pem_x509_certificates(cert.read_bytes())[0].serial_number
    now = dt.datetime.now(dt.UTC)
    revoked = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - dt.timedelta(hours=1))
    crl = (x509.CertificateRevocationListBuilder().issuer_name(lab.inter.cert.subject)
           .last_update(now - dt.timedelta(hours=1)).next_update(now + dt.timedelta(days=1))
           .add_revoked_certificate(revoked.build()).sign(lab.inter.key, hashes.SHA256()))  # type: ignore[arg-type]
    crl_file = lab.dir / "client.crl.pem"
    crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    chain = write_pem(lab.dir / "client-chain-ca.pem", [lab.root, lab.inter])
    mtls = ["-Verify", "1", "-verify_return_error", "-CAfile", str(chain), "-crl_check", "-CRL", str(crl_file)]
    with OpenSSLServer(*lab.leaf("crl-server"), extra_args=mtls) as server:
        diagnosis = diagnose_live(LiveOptions(host=HOST, port=server.port, sni="localhost", cafile=str(lab.cafile),
                                              client_cert=str(cert), client_key=str(key)))
    assert [(f.cause, f.example) for f in diagnosis.findings] == [
        ("revoked", "client certificate sent, server answered alert certificate_revoked")], diagnosis.findings
    assert "client certificate is revoked" in diagnosis.findings[0].detail


def test_version_advice_names_the_side_that_lacks_the_version(lab: Lab, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`openssl s_client -tls1_2` against a TLS 1.3-only server got "enable TLS 1.3 on the server (or allow TLS
    1.2 on the client)": the server has TLS 1.3, the client must allow it."""
    cert, key = lab.leaf("versions")
    with OpenSSLServer(cert, key, mode="www") as server:  # TLS 1.3 only
        old_client = _s_client(server.port, lab.cafile, "-tls1_2")
    with OpenSSLServer(cert, key, mode="www", tls13_only=False, extra_args=["-tls1_2"]) as server:
        new_client = _s_client(server.port, lab.cafile, "-tls1_3")
    assert [f.cause for f in diagnose_s_client(old_client).findings] == ["client_lacks_version"], old_client
    assert [f.cause for f in diagnose_s_client(new_client).findings] == ["server_lacks_version"], new_client
    saved = tmp_path / "old.txt"
    saved.write_text(old_client)
    assert main(["diagnose", "--s-client", str(saved)]) == 1
    assert "fix: allow TLS 1.3 on the client (or TLS 1.2 on the server)" in capsys.readouterr().out


def test_haproxy_connection_closed_and_files_that_are_not_haproxy_logs(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real HAProxy's "Connection closed during SSL handshake" was `unknown`; the request log line of a frontend
    named fe_tls13 counted as an unknown failure (its name says TLS); and a file with no HAProxy line at all
    read "0 failure(s) ... no handshake failure found", exit 0, as if HAProxy had logged only successes."""
    with _haproxy(lab, tmp_path, "haproxy-closed") as (p1, _, log):
        ok = run_client([require("openssl"), "s_client", "-connect", f"{HOST}:{p1}", "-CAfile", str(lab.cafile),
                         "-servername", "localhost", "-ign_eof", "-quiet"], data=b"GET / HTTP/1.0\r\n\r\n")
        assert "ok" in ok.stdout, ok
        with socket.create_connection((HOST, p1)) as sock:  # half a ClientHello, then close
            sock.sendall(b"\x16\x03\x01\x00\x05\x01\x00")
            time.sleep(0.2)
        _wait_lines(log, 2)
    lines = log.read_text().splitlines()
    request = [line for line in lines if " 200 " in line]
    closed = [line for line in lines if "Connection closed during SSL handshake" in line]
    assert len(request) == 1 and "fe_tls13" in request[0] and len(closed) == 1, lines
    diagnosis = diagnose_haproxy(lines)
    assert [f.cause for f in diagnosis.findings] == ["client_closed_handshake"], diagnosis.findings
    assert main(["diagnose", "--haproxy", str(log)]) == 1
    assert "fix: check the client's log" in capsys.readouterr().out
    only_requests = tmp_path / "requests.log"
    only_requests.write_text("\n".join(request) + "\n")
    assert main(["diagnose", "--haproxy", str(only_requests)]) == 0
    assert "0 failure(s) in 1 recognised line(s)" in capsys.readouterr().out
    not_haproxy = tmp_path / "nginx.log"
    not_haproxy.write_text('127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/7.88.1"\n'
                           "2026/11/27 10:00:01 [info] 12#12: *3 SSL_do_handshake() failed (SSL: error:0A00010B:"
                           "SSL routines::wrong version number) while SSL handshaking, client: 127.0.0.1\n")
    assert main(["diagnose", "--haproxy", str(not_haproxy)]) == 3
    out = capsys.readouterr().out
    assert "no line recognised" in out and "no handshake failure found" not in out
