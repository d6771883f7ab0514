"""`tlskit serve` as a user runs it: a subprocess on a free port, fetched with Python ssl/urllib and curl."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.certs import make_ca, make_leaf
from tests.served import Served, start
from tlskit.cli.main import main
from tlskit.serve.devca import dev_certificate


@pytest.fixture
def site(tmp_path: Path, env: dict[str, str]) -> Iterator[Served]:
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "docs" / "notes.txt").write_text("plain notes\n")
    (root / ".env").write_text("SECRET=1\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    served = start([str(root), "--host", "127.0.0.1", "--port", "0"], env)
    yield served
    served.stop()


def test_zero_config_serves_cwd_on_localhost_with_a_dev_ca(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "index.html").write_text("zero\n")
    served = start(["--port", "0"], env, cwd=tmp_path)
    try:
        ca_dir = tmp_path / "xdg" / "tlskit"
        assert served.stdout[0].startswith(f"Serving {tmp_path} at https://localhost:{served.port}/")
        assert served.cacert == ca_dir / "dev-ca.pem"
        assert f"Try: curl --cacert {served.cacert} https://localhost:{served.port}/" in served.stdout[-1]
        assert stat.S_IMODE((ca_dir / "dev-ca-key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE((ca_dir / "localhost-key.pem").stat().st_mode) == 0o600
        assert served.fetch("/")[2] == b"zero\n"
        ca_before = served.cacert.read_bytes()
    finally:
        served.stop()
    again = start(["--port", "0"], env, cwd=tmp_path)
    again.stop()
    assert again.cacert.read_bytes() == ca_before  # made once: trust is not lost on restart


def test_dev_leaf_is_signed_by_the_ca_and_renewed_before_expiry(tmp_path: Path) -> None:
    first = dev_certificate(tmp_path)
    ca = x509.load_pem_x509_certificate(first.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificates(first.cert.read_bytes())[0]
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert dev_certificate(tmp_path).cert.read_bytes() == first.cert.read_bytes()  # still fresh: reused
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=80)  # within 30 days of the 90-day leaf's end
    dev_certificate(tmp_path, now=later)
    renewed = x509.load_pem_x509_certificates(first.cert.read_bytes())[0]
    assert renewed.serial_number != leaf.serial_number and renewed.not_valid_after_utc > leaf.not_valid_after_utc
    assert first.ca_cert.read_bytes() == ca.public_bytes(serialization.Encoding.PEM)  # same CA, still trusted


def test_a_running_server_renews_its_development_leaf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The leaf was re-issued only at start and on reload: a server up for three months served it expired.
    The file poller now asks ``renewal_due`` (hourly) and reloads, which re-issues it."""
    import asyncio

    from tlskit.serve import server as served_module
    from tlskit.serve.settings import Flags, load_settings

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "www").mkdir()
    flags = Flags(root=tmp_path / "www")
    site = served_module.build_site(load_settings(flags))
    now = dt.datetime.now(dt.UTC)
    assert not site.renewal_due(now) and site.renewal_due(now + dt.timedelta(days=80))
    process = served_module.ServeProcess(site, flags, [])
    reloads: list[str] = []
    monkeypatch.setattr(process, "reload", lambda why: reloads.append(why) or True)
    monkeypatch.setattr(served_module.Site, "renewal_due", lambda self, when: True)  # as it will be in 60 days
    monkeypatch.setattr(served_module, "RENEWAL_CHECK_SECONDS", 0.0)

    async def poll_briefly() -> None:
        poller = asyncio.create_task(process._poll_files())
        await asyncio.sleep(site.settings.cert_poll_interval * 1.5)
        poller.cancel()

    asyncio.run(poll_briefly())
    assert reloads and reloads[0] == "development certificate renewal"


def test_serves_files_to_python_ssl(site: Served) -> None:
    status, headers, body = site.fetch("/")
    assert (status, body) == (200, b"<h1>home</h1>\n")
    assert headers["content-type"] == "text/html; charset=utf-8"
    status, headers, body = site.fetch("/docs/notes.txt")
    assert (status, body, headers["content-length"]) == (200, b"plain notes\n", "12")
    status, headers, body = site.fetch("/docs/notes.txt", method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", "12")
    assert site.fetch("/missing.html")[0] == 404
    assert site.fetch("/.env")[0] == 404
    assert site.fetch("/index.html", method="POST", data=b"x")[0] == 405
    assert site.fetch("/docs")[0] == 404  # urllib follows the 301 to /docs/, which has no index


def test_conditional_and_range_requests(site: Served) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", site.port, context=site.context(), timeout=10)
    conn.request("GET", "/docs/notes.txt")
    full = conn.getresponse()
    assert full.read() == b"plain notes\n" and full.headers["accept-ranges"] == "bytes"
    etag, modified = full.headers["etag"], full.headers["last-modified"]

    def get(headers: dict[str, str]) -> http.client.HTTPResponse:
        conn.request("GET", "/docs/notes.txt", headers=headers)
        response = conn.getresponse()
        response.read()
        return response

    assert get({"if-none-match": etag}).status == 304
    assert get({"if-none-match": f'"other", W/{etag}'}).status == 304  # weak comparison
    assert get({"if-modified-since": modified}).status == 304
    assert get({"if-none-match": '"other"', "if-modified-since": modified}).status == 200  # ETag decides
    assert get({"if-match": '"other"'}).status == 412
    conn.request("GET", "/docs/notes.txt", headers={"range": "bytes=6-10"})
    part = conn.getresponse()
    assert (part.status, part.read(), part.headers["content-range"]) == (206, b"notes", "bytes 6-10/12")
    conn.request("GET", "/docs/notes.txt", headers={"range": "bytes=-6"})
    assert conn.getresponse().read() == b"notes\n"
    conn.request("GET", "/docs/notes.txt", headers={"range": "bytes=6-10", "if-range": '"stale"'})
    assert conn.getresponse().read() == b"plain notes\n"  # If-Range mismatch: the whole file
    unsatisfiable = get({"range": "bytes=50-"})
    assert (unsatisfiable.status, unsatisfiable.headers["content-range"]) == (416, "bytes */12")
    conn.close()


def test_keep_alive_serves_several_requests_on_one_connection(site: Served) -> None:
    conn = http.client.HTTPSConnection("localhost", site.port, context=site.context(), timeout=10)
    conn.request("GET", "/")
    first = conn.getresponse()
    assert first.status == 200 and first.read() == b"<h1>home</h1>\n"
    sock = conn.sock
    assert sock is not None and sock.version() == "TLSv1.3" and sock.selected_alpn_protocol() is None
    conn.request("GET", "/docs/notes.txt")
    second = conn.getresponse()
    assert second.status == 200 and second.read() == b"plain notes\n"
    assert conn.sock is sock  # same TLS connection
    conn.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_with_the_printed_cacert(site: Served) -> None:
    assert f"curl --cacert {site.cacert} https://127.0.0.1:{site.port}/" in site.stdout[-1]
    ok = subprocess.run(["curl", "-sS", "--cacert", str(site.cacert), "-w", "\n%{http_code} %{http_version}",
                         site.url("/docs/notes.txt")], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "plain notes\n\n200 1.1"  # ALPN http/1.1, although curl also offers h2
    def raw_path(path: str) -> str:  # curl sends the path as it is: no dot-segment removal of its own
        got = subprocess.run(["curl", "-sS", "--path-as-is", "--cacert", str(site.cacert), "-w", "\n%{http_code}",
                              site.url(path)], capture_output=True, text=True, timeout=30)
        return got.stdout

    # Climbing above the root is a 400, as nginx answers it; nothing outside the root is ever read.
    for attack in ("/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt", "/docs/%2e%2e/%2e%2e/secret.txt",
                   "/docs/..%2f..%2fsecret.txt", "/docs/..%5C..%5Csecret.txt"):
        assert raw_path(attack) == "400 Bad Request\n\n400", attack
    # Dot segments that stay inside the root are resolved before routing (RFC 3986 §5.2.4), slashes merged.
    for inside in ("/docs/../docs/notes.txt", "/docs/./notes.txt", "/docs/%2E%2e/docs//notes.txt", "//docs/notes.txt"):
        assert raw_path(inside) == "plain notes\n\n200", inside
    assert raw_path("/%2e%2e") == "400 Bad Request\n\n400"


def test_odd_paths_and_ranges_get_clean_answers_not_500s(tmp_path: Path, env: dict[str, str]) -> None:
    """Names too long for the file system and symlink loops are 404 (nginx), a Range position of thousands of
    digits is just past the end (no int() of it), and "//docs" is routed as "/docs" (never ``Location: //docs/``,
    which a browser would read as another host)."""
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "notes.txt").write_text("plain notes\n")
    (root / "loop").symlink_to(root / "loop")
    served = start([str(root), "--host", "127.0.0.1", "--port", "0"], env)
    try:
        assert served.fetch("/" + "a" * 300)[0] == 404
        assert served.fetch("/docs/notes.txt/")[0] == 404
        for encoded_slash in ("/docs%2Fnotes.txt", "/%2Fdocs", "/%2F%2Fdocs"):  # no file name has a slash; no
            assert served.fetch(encoded_slash)[0] == 404, encoded_slash  # redirect to a network path either
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as plain:  # HTTP to the HTTPS port
            plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while chunk := plain.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and answer.endswith(b"use https:// in the URL\n")
        # logged as the 400 it is (nginx too), not as a failed TLS handshake at WARNING
        assert '"GET / HTTP/1.1" 400 ' in served.wait_log(r'"GET / HTTP/1\.1" 400 ')
        assert not [line for line in served.log if "WARNING" in line and "handshake" in line]
        assert served.fetch("/loop")[0] == 404
        status, headers, body = served.fetch("/docs/notes.txt", headers={"range": "bytes=3-" + "9" * 5000})
        assert (status, headers.get("content-range"), body) == (206, "bytes 3-11/12", b"in notes\n")
        assert served.fetch("/docs/notes.txt", headers={"range": "bytes=" + "9" * 5000 + "-"})[0] == 416
        connection = http.client.HTTPSConnection("127.0.0.1", served.port, context=served.context(), timeout=10)
        connection.request("GET", "//docs")
        response = connection.getresponse()
        assert (response.status, response.getheader("location")) == (301, "/docs/")
        connection.close()
    finally:
        log = "".join(served.log)
        served.stop()
    assert "Traceback" not in log


def test_access_log_has_combined_fields_and_tls_fields(site: Served) -> None:
    with pytest.raises(urllib.error.URLError):  # system roots reject the dev CA: a failed handshake
        urllib.request.urlopen(site.url("/"), context=ssl.create_default_context(), timeout=10)
    site.wait_log(r"tlskit\.io \w+ TLS handshake with 127\.0\.0\.1:\d+ \(SNI none\) failed: \S")
    assert site.fetch("/", headers={"user-agent": "probe/1", "referer": "https://r.example/"})[0] == 200
    line = site.wait_log(r'"GET / HTTP/1\.1" 200 14 "https://r\.example/" "probe/1"')
    assert line.startswith("127.0.0.1 - - [")
    fields = site.access(r'"probe/1"')
    assert fields["tls"] == "TLSv1.3" and fields["group"] == "x25519" and fields["sni"] == "-"
    assert fields["resumed"] == "0" and fields["early"] == "0" and float(fields["hs_ms"]) > 0
    # Timed with perf_counter, not the loop's clock (uvloop's ticks in whole milliseconds): three handshakes
    # all landing on a whole millisecond would be a one-in-a-billion coincidence.
    for n in range(3):
        site.fetch("/", headers={"user-agent": f"timing/{n}"})
    assert any(float(site.access(rf'"timing/{n}"')["hs_ms"]) % 1 for n in range(3))


def test_directory_listing_is_optional(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a <b>.txt").write_text("a")
    (tmp_path / "files" / ".hidden").write_text("h")
    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--listing"], env)
    try:
        status, _, body = served.fetch("/files/")
        assert status == 200 and b'<a href="a%20%3Cb%3E.txt">a &lt;b&gt;.txt</a>' in body
        assert b"hidden" not in body
    finally:
        served.stop()


def test_own_certificate_is_served(tmp_path: Path, env: dict[str, str]) -> None:
    root_ca = make_ca()
    cert, key = make_leaf(root_ca, ["localhost"]).write(tmp_path, "site")
    (tmp_path / "ca.pem").write_bytes(root_ca.pem)
    (tmp_path / "hello.txt").write_text("hi\n")
    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--cert", str(cert), "--key", str(key)],
                   env, dev=False)
    served.cacert, served.host = tmp_path / "ca.pem", "localhost"
    try:
        assert served.fetch("/hello.txt")[2] == b"hi\n"
    finally:
        served.stop()
    assert not (tmp_path / "xdg").exists()  # no development CA was made


def test_bad_certificate_path_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = subprocess.run([sys.executable, "-m", "tlskit", "serve", str(tmp_path), "--cert", str(missing),
                             "--key", str(missing)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(missing) in result.stderr, result.stderr


@pytest.mark.parametrize("flag", ["--client-ca", "--client-crl"])
def test_an_unusable_client_ca_or_crl_is_named_by_its_flag(tmp_path: Path, flag: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """It was "settings: trust file ... contains no ... block", which names no flag (README walk-through)."""
    ca = make_ca()
    good = tmp_path / "ca.pem"
    good.write_bytes(ca.pem)
    _, key = make_leaf(ca).write(tmp_path, "site")  # a key: neither CA certificates nor a CRL
    argv = ["--client-ca", str(key)] if flag == "--client-ca" else ["--client-ca", str(good), "--client-crl", str(key)]
    assert main(["serve", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {flag}: " in err and str(key) in err, err


def test_key_not_matching_certificate_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = make_ca()
    cert, _ = make_leaf(ca).write(tmp_path, "a")
    _, other_key = make_leaf(ca).write(tmp_path, "b")
    assert main(["serve", str(tmp_path), "--cert", str(cert), "--key", str(other_key)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match" in err


@pytest.mark.parametrize(("kind", "expected"), [
    ("encrypted", "the private key is encrypted and no passphrase was given: decrypt it with `openssl pkey -in "),
    ("certificate", "holds a certificate, not a private key: give the key file"),
    ("der", "no PEM private key found (expected '-----BEGIN PRIVATE KEY-----'); this looks like DER: convert it"),
])
def test_a_key_file_that_does_not_load_says_how_to_fix_it(tmp_path: Path, kind: str, expected: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """It was cryptography's message only: "Password was not given but private key is encrypted", "Valid PEM but
    no BEGIN/END delimiters for a private key found", "Unable to load PEM file. See https://... MalformedFraming"."""
    leaf = make_leaf(make_ca())
    cert, key = leaf.write(tmp_path, "site")
    encoding, form = ((serialization.Encoding.DER, serialization.NoEncryption()) if kind == "der" else
                      (serialization.Encoding.PEM, serialization.BestAvailableEncryption(b"secret")))
    key.write_bytes(cert.read_bytes() if kind == "certificate" else
                    leaf.key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, form))
    assert main(["serve", str(tmp_path), "--cert", str(cert), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: --cert/--key: {key}: {expected}" in err, err


def test_a_chain_file_cut_short_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fullchain half written (the intermediate's PEM block cut short) loaded as the leaf alone: a reload in
    that moment served a chain without its intermediate."""
    root = make_ca()
    inter = make_ca("tlskit test intermediate", issuer=root)
    cert, key = make_leaf(inter).write(tmp_path, "a")
    whole = cert.read_bytes() + inter.pem
    cert.write_bytes(whole[: len(whole) - 200])
    assert main(["serve", str(tmp_path), "--cert", str(cert), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 certificates begin but 1 are complete" in err


def test_a_damaged_dev_ca_is_reported_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged CA file was silently replaced by a new CA (every client that trusted the old one then failed
    with no word why); a data directory that cannot be one was a traceback."""
    from tlskit.serve.devca import dev_certificate

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    made = dev_certificate()
    made.ca_cert.write_bytes(made.ca_cert.read_bytes()[:100])
    before = made.ca_cert.read_bytes()
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "development CA is damaged" in err and "delete both files" in err
    assert made.ca_cert.read_bytes() == before  # still the operator's to decide
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "plain-file"))
    (tmp_path / "plain-file").write_text("")
    assert main(["serve", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the development CA lives in" in err


def test_port_in_use_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env_home = os.environ.get("XDG_DATA_HOME")
        os.environ["XDG_DATA_HOME"] = str(tmp_path / "xdg")
        try:
            assert main(["serve", str(tmp_path), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]) == 1
        finally:
            if env_home is None:
                os.environ.pop("XDG_DATA_HOME")
            else:
                os.environ["XDG_DATA_HOME"] = env_home
    err = capsys.readouterr().err
    assert f"--host: cannot listen on 127.0.0.1 port {port}" in err and "another process listens there" in err


def test_a_chain_in_the_wrong_order_says_so(tmp_path: Path) -> None:
    """The intermediate first: "the private key does not match the leaf", not how to fix it."""
    root = make_ca()
    inter = make_ca("tlskit test intermediate", issuer=root)
    cert, key = make_leaf(inter).write(tmp_path, "a")
    leaf_pem = cert.read_bytes()
    cert.write_bytes(inter.pem + leaf_pem)
    result = subprocess.run([sys.executable, "-m", "tlskit", "serve", str(tmp_path), "--cert", str(cert), "--key",
                             str(key)], capture_output=True, text=True, timeout=30)
    err = result.stderr
    assert result.returncode == 2 and err.count("\n") == 1, err
    assert "matches certificate #2 of the chain" in err and "first" in err


def test_start_warns_of_chains_clients_will_refuse_and_refuses_a_staple_file_that_is_none(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """An expired certificate, a chain whose next certificate is not the issuer, names the certificate lacks: all
    started silently and failed at every handshake; a staple file holding a certificate failed at the first."""
    root = make_ca()
    other = make_ca("another root")
    expired = make_leaf(root, ["localhost"], not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=30),
                        not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    cert, key = expired.write(tmp_path, "old", chain=[other])
    config = tmp_path / "site.toml"
    config.write_text(f'[[certificate]]\ncert = "{cert}"\nkey = "{key}"\n'
                      'names = ["localhost", "other.test", "127.0.0.1"]\n'
                      f'[[route]]\nroot = "{tmp_path}"\n')
    served = start(["--config", str(config), "--host", "127.0.0.1", "--port", "0"], env, dev=False)
    try:
        log = "".join(served.log)
        assert "expired on" in log and "is not issued by the next certificate in the file" in log, log
        assert "'other.test'" in log and "the certificate is not for it" in log and "'127.0.0.1'" not in log
    finally:
        served.stop()
    result = subprocess.run([sys.executable, "-m", "tlskit", "serve", str(tmp_path), "--port", "0", "--staple-file",
                             str(cert), "--cert", str(cert), "--key", str(key)], capture_output=True, text=True,
                            timeout=30, env=env)
    last = result.stderr.strip().splitlines()[-1]  # after the warnings about the chain
    assert result.returncode == 2 and "not a DER OCSP response (it does not parse as one)" in last, result.stderr


def test_a_listen_address_that_does_not_resolve_names_the_config_line(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f'[[listen]]\naddress = "no-such-host.invalid"\nport = 0\n[[route]]\nroot = "{tmp_path}"\n')
    result = subprocess.run([sys.executable, "-m", "tlskit", "serve", "--config", str(config)], capture_output=True,
                            text=True, timeout=30, env=env)
    assert result.returncode == 1 and f"{config}:2: [[listen]] #1: cannot listen on no-such-host.invalid" in \
        result.stderr, result.stderr


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "curl --cacert" in out and "--config" in out and "--workers" in out


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_port_out_of_range_is_a_usage_error_not_a_traceback(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", port])
    assert exit_info.value.code == 2
    assert "argument --port:" in capsys.readouterr().err


def test_suites_and_groups_take_commas_or_colons_in_serve_and_probe(tmp_path: Path, env: dict[str, str]) -> None:
    """serve wanted colons (OpenSSL's) and probe commas, and only serve named its flag --ciphers: each now takes
    either separator and both names (found by the README walk-through)."""
    (tmp_path / "i.txt").write_text("i\n")
    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--groups", "secp384r1,x25519,",
                    "--suites", "TLS_AES_256_GCM_SHA384,TLS_CHACHA20_POLY1305_SHA256"], env)
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "tlskit", "probe", f"127.0.0.1:{served.port}", "--sni", "localhost", "--cafile",
             str(served.cacert), "--groups", "secp384r1:x25519", "--ciphers", "TLS_AES_256_GCM_SHA384", "--json"],
            capture_output=True, text=True, timeout=30, env=env)
        assert probe.returncode == 0, probe.stderr
        assert '"TLS_AES_256_GCM_SHA384"' in probe.stdout and '"secp384r1"' in probe.stdout, probe.stdout
    finally:
        served.stop()


def test_serve_takes_sighup_over_before_importing_the_server() -> None:
    """A SIGHUP's default action ends the process, and a deploy hook may send one right after starting the server:
    the command line installs its recorder before it imports the server and the engine, which took ~0.5 s (the
    package imported all of it on `import tlskit`), so the window is Python's own start-up."""
    script = (
        "import os, signal, sys\n"
        "import tlskit.cli.main as cli\n"
        "def parser():\n"
        "    early = sorted(m for m in ('tlskit.config', 'tlskit.connection', 'tlskit.serve.server',"
        " 'cryptography.x509') if m in sys.modules)\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "    print('survived', early)\n"
        "    raise SystemExit(0)\n"
        "cli._parser = parser\n"
        "cli.main(['serve', '--port', '0'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout.strip()) == (0, "survived []"), proc.stderr


def _catches_sighup(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & 1 << (signal.SIGHUP - 1))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sighup_while_starting_is_a_reload_once_serving(tmp_path: Path, env: dict[str, str], workers: int) -> None:
    (tmp_path / "index.html").write_text("up\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "tlskit", "serve", str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--workers",
         str(workers)], env={**env, "PYTHONUNBUFFERED": "1"}, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not _catches_sighup(process.pid):
            assert process.poll() is None and time.monotonic() < deadline, "never took SIGHUP over"
            time.sleep(0.002)
        process.send_signal(signal.SIGHUP)
        assert process.stdout is not None and process.stdout.readline().startswith("Serving ")
        assert process.stderr is not None
        while "reloaded (SIGHUP while starting)" not in (line := process.stderr.readline()):
            assert line, "the server ended without reloading"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
