"""curl (libcurl on OpenSSL) against ``tlskit serve`` run as a user runs it: a subprocess serving a folder.

curl's ``-v`` report names what it negotiated (``SSL connection using TLSv1.3 / TLS_AES_256_GCM_SHA384``,
``ALPN: server accepted http/1.1``); the files must come back byte for byte over HTTP/1.1.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import make_ca, write_pem
from tests.interop.conftest import Pki
from tests.interop.ours import SUITES, TlskitServe
from tests.interop.peers import curl_get, tool_version

CURL = tool_version("curl")


@pytest.fixture(scope="module")
def site(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlskitServe]:
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text("<h1>tlskit interop</h1>\n")
    (root / "big.bin").write_bytes(bytes(range(256)) * 1024)  # 256 KiB: many full records
    with TlskitServe(root, pki) as served:
        yield served


def fetch(site: TlskitServe, pki: Pki, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
    port = site.port
    return curl_get(f"https://localhost:{port}{path}", cacert=pki.cafile,
                    extra=("--resolve", f"localhost:{port}:127.0.0.1", "-v", "-w", "\n%{http_code} %{http_version}",
                           *extra))


def curl_suite(result: subprocess.CompletedProcess[str]) -> str | None:
    match = re.search(r"SSL connection using (TLSv[\d.]+) / (\S+)", result.stderr)
    return f"{match.group(1)} / {match.group(2)}" if match else None


def test_curl_fetches_from_tlskit_serve(site: TlskitServe, pki: Pki) -> None:
    result = fetch(site, pki, "/index.html")
    assert result.returncode == 0, f"{CURL}:\n{result.stderr}\n{site.output()}"
    assert result.stdout == "<h1>tlskit interop</h1>\n\n200 1.1", f"{CURL}: {result.stdout!r}"
    assert "ALPN: server accepted http/1.1" in result.stderr, f"{CURL}:\n{result.stderr}"
    assert curl_suite(result) == "TLSv1.3 / TLS_AES_256_GCM_SHA384", f"{CURL}:\n{result.stderr}"
    assert "SSL certificate verify ok." in result.stderr, f"{CURL}:\n{result.stderr}"


def test_curl_fetches_a_large_file_intact(site: TlskitServe, pki: Pki) -> None:
    result = subprocess.run(
        ["curl", "-sS", "--tlsv1.3", "--max-time", "15", "--cacert", str(pki.cafile),
         "--resolve", f"localhost:{site.port}:127.0.0.1", f"https://localhost:{site.port}/big.bin"],
        capture_output=True, timeout=20, check=False,
    )
    assert result.returncode == 0, f"{CURL}: {result.stderr!r}"
    assert result.stdout == bytes(range(256)) * 1024, f"{CURL} got {len(result.stdout)} bytes"


@pytest.mark.parametrize("suite", list(SUITES))
def test_curl_each_tls13_suite(site: TlskitServe, pki: Pki, suite: str) -> None:
    result = fetch(site, pki, "/index.html", "--tls13-ciphers", suite)
    assert result.returncode == 0, f"{CURL}:\n{result.stderr}\n{site.output()}"
    assert curl_suite(result) == f"TLSv1.3 / {suite}", f"{CURL}:\n{result.stderr}"
    assert result.stdout.endswith("\n200 1.1")


@pytest.mark.parametrize("curve", ["X25519", "P-256", "P-384"])
def test_curl_each_group(site: TlskitServe, pki: Pki, curve: str) -> None:
    # curl -v does not name the group; that it connects offering only this one is the check.
    result = fetch(site, pki, "/index.html", "--curves", curve)
    assert result.returncode == 0, f"{CURL} --curves {curve}:\n{result.stderr}\n{site.output()}"
    assert result.stdout.endswith("\n200 1.1")


def test_curl_rejecting_our_certificate_is_logged_by_tlskit_serve(
    site: TlskitServe, pki: Pki, tmp_path: Path
) -> None:
    other_ca = write_pem(tmp_path / "other-ca.pem", [make_ca("some other root")])
    port = site.port
    result = curl_get(f"https://localhost:{port}/index.html", cacert=other_ca,
                      extra=("--resolve", f"localhost:{port}:127.0.0.1"))
    assert result.returncode == 60, f"{CURL}: {result.returncode} {result.stderr}"
    assert "unable to get local issuer certificate" in result.stderr, f"{CURL}: {result.stderr}"
    # curl (OpenSSL) sends unknown_ca in plaintext; the server must name it, not fail on the record.
    site.wait_output(r"TLS handshake with \S+ \(SNI localhost\) failed: peer sent alert unknown_ca")
