"""`tlskit serve` with a private CA made by `tlskit ca`: OCSP stapling seen by `openssl s_client -status`,
client certificates (mTLS, SPIFFE allow-list) with curl, the client identity in the access log and upstream.

The CA names its responder (`ca init --ocsp-url`) and `tlskit ca ocsp-serve` answers; the server fetches the
staple at start, so the first handshake already carries it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.peers import free_port, require, tool_version, wait_listening
from tests.served import Served, start

OPENSSL = tool_version("openssl")
CURL = tool_version("curl")
WEB = "spiffe://cluster.local/ns/default/sa/web"


def tlskit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tlskit", *args], check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class CA:
    directory: Path
    ocsp_port: int

    @property
    def root(self) -> Path:
        return self.directory / "root.pem"

    def issued(self, name: str) -> tuple[Path, Path]:
        return self.directory / "issued" / f"{name}.pem", self.directory / "issued" / f"{name}.key"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CA]:
    base = tmp_path_factory.mktemp("serve-ca")
    port = free_port()
    directory = base / "ca"
    tlskit("ca", "init", str(directory), "--intermediate", "--ocsp-url", f"http://127.0.0.1:{port}/")
    tlskit("ca", "issue", str(directory), "localhost", "127.0.0.1", "--days", "1")
    tlskit("ca", "issue", str(directory), "web", "--client", "--spiffe", WEB, "--days", "1")
    tlskit("ca", "issue", str(directory), "db", "--client", "--spiffe", "spiffe://cluster.local/ns/default/sa/db",
           "--days", "1")
    responder = subprocess.Popen([sys.executable, "-m", "tlskit", "ca", "ocsp-serve", str(directory), "--port",
                                  str(port)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc=responder, what="tlskit ca ocsp-serve")
        yield CA(directory, port)
    finally:
        responder.terminate()
        responder.wait(timeout=10)



def serve(ca: CA, tmp_path: Path, *flags: str) -> Served:
    cert, key = ca.issued("localhost")
    (tmp_path / "www").mkdir(exist_ok=True)
    (tmp_path / "www" / "index.html").write_text("hello mtls\n")
    served = start([str(tmp_path / "www"), "--host", "127.0.0.1", "--port", "0", "--cert", str(cert), "--key",
                    str(key), *flags], {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}, dev=False)
    served.host = "localhost"
    return served


def curl(served: Served, ca: CA, client: str | None, path: str = "/") -> subprocess.CompletedProcess[str]:
    cert: tuple[str, ...] = ()
    if client is not None:
        chain, key = ca.issued(client)
        cert = ("--cert", str(chain), "--key", str(key))
    return subprocess.run([require("curl"), "-sS", "--cacert", str(ca.root), "--resolve",
                           f"localhost:{served.port}:127.0.0.1", *cert, served.url(path)],
                          capture_output=True, text=True, timeout=20, check=False)


def test_s_client_status_sees_the_staple_fetched_from_our_responder(ca: CA, tmp_path: Path) -> None:
    openssl = require("openssl")
    served = serve(ca, tmp_path)
    try:
        served.wait_log(r"OCSP staple for CN=localhost .* refreshed: good")
        output = ""
        for _ in range(20):  # the fetch is logged as it is cached: the first handshake should already see it
            result = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{served.port}", "-servername",
                                     "localhost", "-CAfile", str(ca.root), "-status"], input=b"",
                                    capture_output=True, timeout=20, check=False)
            output = result.stdout.decode("latin-1")
            if "OCSP Response Status" in output:
                break
            time.sleep(0.1)
        assert "OCSP Response Status: successful" in output, f"{OPENSSL}:\n{output}"
        assert "Cert Status: good" in output, output
    finally:
        served.stop()
    off = serve(ca, tmp_path, "--no-stapling")
    try:
        result = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{off.port}", "-servername",
                                 "localhost", "-CAfile", str(ca.root), "-status"], input=b"",
                                capture_output=True, timeout=20, check=False)
        assert "OCSP response: no response sent" in result.stdout.decode("latin-1")
    finally:
        off.stop()


def test_curl_needs_a_client_certificate_and_an_allowed_spiffe_id(ca: CA, tmp_path: Path, upstream: int) -> None:
    served = serve(ca, tmp_path, "--client-ca", str(ca.root), "--verify-client", "required", "--allow-spiffe",
                   "spiffe://cluster.local/ns/*/sa/web", "--proxy", f"http://127.0.0.1:{upstream}")
    try:
        refused = curl(served, ca, None)
        assert refused.returncode != 0 and "alert certificate required" in refused.stderr, f"{CURL}: {refused}"
        served.wait_log(r"failed: certificate_required")

        admitted = curl(served, ca, "web", "/whoami")
        assert admitted.returncode == 0, f"{CURL}: {admitted.stderr}"
        assert '"x-client-cert-subject": "web"' in admitted.stdout, admitted.stdout
        assert f"URI={WEB}" in admitted.stdout and '"x-forwarded-client-cert": "Hash=' in admitted.stdout
        assert served.access(r'"GET /whoami HTTP/1.1" 200 ')["client"] == WEB

        denied = curl(served, ca, "db")
        assert denied.returncode != 0 and "access denied" in denied.stderr, f"{CURL}: {denied}"
        served.wait_log(r"access_denied: SPIFFE ID spiffe://cluster.local/ns/default/sa/db is not allowed")
    finally:
        served.stop()


def _ca_with_a_revoked_client(directory: Path, *, client_days: int) -> Path:
    """A CA (with an intermediate) that issued localhost and two clients, web and old; old is revoked."""
    tlskit("ca", "init", str(directory), "--intermediate")
    tlskit("ca", "issue", str(directory), "localhost", "127.0.0.1", "--days", "1")
    for client in ("web", "old"):
        tlskit("ca", "issue", str(directory), client, "--client", "--days", str(client_days))
    tlskit("ca", "revoke", str(directory), str(directory / "issued" / "old.pem"), "--reason", "keyCompromise")
    return directory


def test_a_revoked_client_certificate_is_refused_with_client_crl(tmp_path: Path) -> None:
    """`tlskit serve` never checked client certificates against a CRL: the README's walkthrough revoked web.pem
    and then got in with it. `--client-crl` (re-read when it changes) refuses it; others still get in."""
    directory = _ca_with_a_revoked_client(tmp_path / "ca", client_days=1)
    tlskit("ca", "crl", str(directory))
    crl_ca = CA(directory, 0)
    served = serve(crl_ca, tmp_path, "--client-ca", str(crl_ca.root), "--client-crl", str(directory / "crl.pem"))
    try:
        assert curl(served, crl_ca, "web").stdout == "hello mtls\n"
        assert not [line for line in served.log if "holds no CRL" in line]  # crl.pem has the root's too
        refused = curl(served, crl_ca, "old")
        assert refused.returncode != 0, f"{CURL}: {refused.stdout}"
        served.wait_log("revoked")
        tlskit("ca", "revoke", str(directory), str(directory / "issued" / "web.pem"))
        tlskit("ca", "crl", str(directory))  # a new CRL: picked up as certificates are
        served.wait_log(r"reloaded \(files changed\)")
        assert curl(served, crl_ca, "web").returncode != 0
    finally:
        served.stop()


def test_a_stale_client_crl_still_refuses_the_revoked_and_refuses_the_rest_as_nginx_does(tmp_path: Path) -> None:
    """A week after `tlskit ca crl` its nextUpdate passed and serve let a revoked client in (soft-fail: a
    warning). nginx's ssl_crl then refuses every client ("CRL has expired"): so does serve, saying why."""
    from tlskit.pki.ca import CertificateAuthority

    directory = _ca_with_a_revoked_client(tmp_path / "ca", client_days=30)
    CertificateAuthority(directory, clock=lambda: time.time() - 8 * 86400).crl(days=7)  # nextUpdate: yesterday
    stale = CA(directory, 0)
    served = serve(stale, tmp_path, "--client-ca", str(stale.root), "--client-crl", str(directory / "crl.pem"),
                   "--no-stapling")
    try:
        assert curl(served, stale, "old").returncode != 0
        served.wait_log("revoked")
        assert curl(served, stale, "web").returncode != 0
        served.wait_log(r"CRL .* is stale")
    finally:
        served.stop()


def test_client_crl_needs_the_roots_crl_too_as_nginx_ssl_crl(tmp_path: Path) -> None:
    """With only the intermediate's CRL (crl.der) a client got in, and a revoked intermediate would have gone
    unnoticed: nginx's ssl_crl (CRL_CHECK_ALL) refuses it ("unable to get certificate CRL"), and so does serve,
    naming the missing CRL and crl.pem."""
    directory = _ca_with_a_revoked_client(tmp_path / "ca", client_days=1)
    tlskit("ca", "crl", str(directory))
    crl_ca = CA(directory, 0)
    served = serve(crl_ca, tmp_path, "--client-ca", str(crl_ca.root), "--client-crl", str(directory / "crl.der"),
                   "--no-stapling")
    try:
        served.wait_log(r"--client-crl holds no CRL of .*: every client whose chain it signs is refused")
        refused = curl(served, crl_ca, "web")
        assert refused.returncode != 0, f"{CURL}: {refused.stdout}"
        served.wait_log(r"failed: certificate_unknown: revocation status of .* no CRL of its issuer .*crl\.pem")
    finally:
        served.stop()


def test_a_client_crl_that_is_no_crl_stops_serve_at_start(ca: CA, tmp_path: Path) -> None:
    """It was accepted: each handshake then logged "cannot load CRL file" and let revoked clients in."""
    result = subprocess.run([sys.executable, "-m", "tlskit", "serve", str(tmp_path), "--port", "0",
                             "--cert", str(ca.issued("localhost")[0]), "--key", str(ca.issued("localhost")[1]),
                             "--client-ca", str(ca.root), "--client-crl", str(ca.issued("web")[0])],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0 and "holds no CRL" in result.stderr, result.stderr
    assert result.stderr.count("\n") <= 2 and "Traceback" not in result.stderr


def test_optional_client_certificates_admit_both(ca: CA, tmp_path: Path) -> None:
    served = serve(ca, tmp_path, "--client-ca", str(ca.root), "--verify-client", "optional", "--no-stapling")
    try:
        anonymous = curl(served, ca, None, "/index.html")
        assert anonymous.returncode == 0 and anonymous.stdout == "hello mtls\n", f"{CURL}: {anonymous.stderr}"
        assert served.access(r'"GET /index.html HTTP/1.1" 200 ')["client"] == "-"
        known = curl(served, ca, "db", "/")
        assert known.returncode == 0 and known.stdout == "hello mtls\n", f"{CURL}: {known.stderr}"
        assert served.access(r'"GET / HTTP/1.1" 200 ')["client"] == "spiffe://cluster.local/ns/default/sa/db"
    finally:
        served.stop()


GET_WHOAMI = b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def s_client(served: Served, ca: CA, client: str | None, session: Path, *, resume: bool,
             early: Path | None = None, request: bytes = GET_WHOAMI) -> str:
    """One ``openssl s_client`` connection with the client certificate ``client``: save the session
    (``-sess_out``) or resume it (``-sess_in``, with ``early`` as 0-RTT data); waits for the server to close."""
    args = [require("openssl"), "s_client", "-connect", f"127.0.0.1:{served.port}", "-servername", "localhost",
            "-CAfile", str(ca.root), "-ign_eof", "-sess_in" if resume else "-sess_out", str(session)]
    if client is not None:
        chain, key = ca.issued(client)
        args += ["-cert", str(chain), "-cert_chain", str(chain), "-key", str(key)]  # leaf, then the intermediate
    if early is not None:
        args += ["-early_data", str(early)]
    result = subprocess.run(args, input=b"" if early is not None else request, capture_output=True, timeout=20,
                            check=False)
    return result.stdout.decode("latin-1") + result.stderr.decode("latin-1")


def test_s_client_with_a_client_certificate_resumes_and_keeps_its_identity(ca: CA, tmp_path: Path,
                                                                          upstream: int) -> None:
    """A ticket carries the client's chain: the resumed connection (no certificate exchanged) is logged with
    the client's SPIFFE ID and proxied with its CN, as the full handshake was."""
    served = serve(ca, tmp_path, "--client-ca", str(ca.root), "--verify-client", "required", "--allow-spiffe",
                   "spiffe://cluster.local/ns/*/sa/web", "--proxy", f"http://127.0.0.1:{upstream}", "--no-stapling")
    try:
        session = tmp_path / "web.session"
        first = s_client(served, ca, "web", session, resume=False)
        assert "New, TLSv1.3" in first and '"x-client-cert-subject": "web"' in first, f"{OPENSSL}:\n{first}"
        assert served.access(r'"GET /whoami HTTP/1.1" 200 .*resumed=0')["client"] == WEB

        again = s_client(served, ca, "web", session, resume=True)
        assert "Reused, TLSv1.3" in again, f"{OPENSSL}:\n{again}"
        assert '"x-client-cert-subject": "web"' in again and f"URI={WEB}" in again, again
        assert served.access(r'"GET /whoami HTTP/1.1" 200 .*resumed=1')["client"] == WEB
    finally:
        served.stop()


def test_early_request_under_mtls_is_answered_with_the_ticket_identity(ca: CA, tmp_path: Path,
                                                                       upstream: int) -> None:
    """``--early-data`` with ``--verify-client required``: a GET in 0-RTT data is proxied with the identity the
    ticket carries (and ``Early-Data: 1``); the access line says resumed, early and the client."""
    served = serve(ca, tmp_path, "--client-ca", str(ca.root), "--verify-client", "required", "--early-data",
                   "--early-data-window", "1", "--proxy", f"http://127.0.0.1:{upstream}", "--no-stapling")
    time.sleep(2.2)  # RFC 8446 §8.2: a freshly started server refuses 0-RTT for twice the window
    try:
        session = tmp_path / "web.session"
        first = s_client(served, ca, "web", session, resume=False)
        assert "Max Early Data: 16384" in first, f"{OPENSSL}:\n{first}"
        early = tmp_path / "early.txt"
        early.write_bytes(GET_WHOAMI)
        resumed = s_client(served, ca, "web", session, resume=True, early=early)
        assert "Reused, TLSv1.3" in resumed and "Early data was accepted" in resumed, f"{OPENSSL}:\n{resumed}"
        assert '"early-data": "1"' in resumed and '"x-client-cert-subject": "web"' in resumed, resumed
        fields = served.access(r'"GET /whoami HTTP/1.1" 200 .*resumed=1')
        assert (fields["early"], fields["client"]) == ("1", WEB), fields
    finally:
        served.stop()


def test_a_ticket_without_a_client_certificate_does_not_resume_under_required(ca: CA, tmp_path: Path) -> None:
    """Two servers sharing a ticket key: a session made without a client certificate under ``optional`` does
    not let the client skip ``required`` (a full handshake asks for the certificate, and fails without one)."""
    subprocess.run([require("openssl"), "rand", "-out", str(tmp_path / "stek.key"), "80"], check=True, timeout=10)
    shared = ("--ticket-key", str(tmp_path / "stek.key"), "--no-stapling", "--client-ca", str(ca.root))
    session = tmp_path / "anonymous.session"
    lenient = serve(ca, tmp_path, *shared, "--verify-client", "optional")
    try:
        anonymous = s_client(lenient, ca, None, session, resume=False, request=b"GET / HTTP/1.1\r\nHost: localhost"
                             b"\r\nConnection: close\r\n\r\n")
        assert "HTTP/1.1 200 OK" in anonymous, f"{OPENSSL}:\n{anonymous}"
        resumed = s_client(lenient, ca, None, session, resume=True, request=b"GET / HTTP/1.1\r\nHost: localhost"
                           b"\r\nConnection: close\r\n\r\n")
        assert "Reused, TLSv1.3" in resumed, f"the shared key resumes under optional ({OPENSSL}):\n{resumed}"
        assert lenient.access(r'"GET / HTTP/1.1" 200 .*resumed=1')["client"] == "-"
    finally:
        lenient.stop()
    strict = serve(ca, tmp_path, *shared, "--verify-client", "required")
    try:
        refused = s_client(strict, ca, None, session, resume=True)
        assert "Reused" not in refused and "certificate required" in refused, f"{OPENSSL}:\n{refused}"
        strict.wait_log(r"failed: certificate_required")
    finally:
        strict.stop()
