"""`tlskit serve` against real clients: headless Chromium (Debian `chromium`), curl, `openssl s_client`.

Chromium offers X25519MLKEM768 first, so the access log must show the hybrid post-quantum group; the
development CA is trusted through Chromium's SPKI allow-list (base64 SHA-256 of the leaf's public key).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import make_ca, make_leaf
from tests.interop.peers import chromium_dump_dom, require, tool_version
from tests.served import Served, start

PAGE = "<!doctype html><title>tlskit</title><h1 id=greeting>Hello from tlskit serve</h1>\n"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text(PAGE)
    served = start([str(root), "--host", "127.0.0.1", "--port", "0"], {**os.environ,
                                                                          "XDG_DATA_HOME": str(tmp_path / "xdg")})
    served.host = "localhost"
    yield served
    served.stop()


def test_chromium_loads_the_page_over_x25519mlkem768(site: Served, tmp_path: Path) -> None:
    result = chromium_dump_dom(site.url("/"), site.cacert.parent / "localhost.pem", tmp_path / "chromium")
    version = tool_version("chromium")
    assert '<h1 id="greeting">Hello from tlskit serve</h1>' in result.stdout, (version, result.stderr[-2000:])
    fields = site.access(r'"GET / HTTP/1\.1" 200 .*HeadlessChrome')
    assert fields["group"] == "X25519MLKEM768", (version, fields)
    assert (fields["tls"], fields["alpn"], fields["sni"]) == ("TLSv1.3", "http/1.1", "localhost")


@pytest.mark.parametrize("suite", ["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"])
def test_curl_tls13_ciphers_and_the_dev_ca(site: Served, suite: str) -> None:
    curl = require("curl")
    result = subprocess.run([curl, "-sS", "--tlsv1.3", "--tls13-ciphers", suite, "--cacert", str(site.cacert),
                             "-H", f"user-agent: curl-{suite}", site.url("/")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0 and result.stdout == PAGE, (tool_version("curl"), result.stderr)
    assert site.access(rf'"curl-{suite}"')["suite"] == suite


def test_openssl_s_client_picks_sni_certificate_by_name_and_signature_algorithm(tmp_path: Path) -> None:
    openssl = require("openssl")
    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    for stem, names, key_type in (("a", ["a.test"], "ec256"), ("wild-ec", ["*.b.test"], "ec256"),
                                  ("wild-rsa", ["*.b.test"], "rsa2048")):
        make_leaf(ca, names, key_type=key_type).write(tmp_path, stem)  # type: ignore[arg-type]
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("sni\n")
    config = tmp_path / "site.toml"
    config.write_text("".join(f'[[certificate]]\ncert = "{s}.pem"\nkey = "{s}.key"\n'
                              for s in ("a", "wild-ec", "wild-rsa")) + '[[route]]\nroot = "www"\n')
    served = start(["--config", str(config), "--host", "127.0.0.1", "--port", "0"],
                   {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}, dev=False)
    try:
        def s_client(name: str, *extra: str) -> str:
            result = subprocess.run(
                [openssl, "s_client", "-connect", f"127.0.0.1:{served.port}", "-servername", name, "-tls1_3",
                 "-CAfile", str(tmp_path / "ca.pem"), "-verify_return_error", "-ign_eof", *extra],
                input="GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", capture_output=True, text=True,
                timeout=30, check=False)
            assert result.returncode == 0, (tool_version("openssl"), result.stderr)
            assert "Verify return code: 0 (ok)" in result.stdout and "\n\nsni\n" in result.stdout
            return result.stdout

        assert "CN = a.test" in s_client("a.test")
        ec = s_client("www.b.test", "-sigalgs", "ecdsa_secp256r1_sha256")
        assert "Peer signature type: ECDSA" in ec and "Server Temp Key: X25519" in ec
        rsa = s_client("www.b.test", "-sigalgs", "rsa_pss_rsae_sha256")
        assert "Peer signature type: RSA-PSS" in rsa
        assert "Server Temp Key: ECDH, prime256v1" in s_client("a.test", "-groups", "P-256")
    finally:
        served.stop()


def test_curl_resumes_with_a_session_ticket(site: Served, tmp_path: Path) -> None:
    curl = require("curl")
    urls = [site.url("/"), site.url("/?again")]  # two transfers, each on a new connection: the second resumes
    result = subprocess.run([curl, "-sS", "--cacert", str(site.cacert), "--no-keepalive", "-H", "connection: close",
                             "-H", "user-agent: curl-resume", *urls, "-o", "/dev/null", "-o", "/dev/null"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, (tool_version("curl"), result.stderr)
    first, second = site.access(r'"GET / HTTP/1\.1" .*curl-resume'), site.access(r'"GET /\?again .*curl-resume')
    assert (first["resumed"], second["resumed"]) == ("0", "1"), (tool_version("curl"), first, second)
    assert second["group"] == "x25519"  # psk_dhe_ke: a fresh key exchange even when resuming
