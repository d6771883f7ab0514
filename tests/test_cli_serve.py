"""`tlskit serve` as a user runs it: a subprocess on a free port, fetched with Python ssl and curl."""

from __future__ import annotations

import http.client
import os
import queue
import re
import shutil
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from tests.certs import make_ca, make_leaf
from tlskit.cli.main import main


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    cacert: Path
    stdout: list[str]
    log: list[str]  # stderr lines, appended as they arrive

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    def wait_log(self, pattern: str, timeout: float = 10) -> str:
        """The first log line matching ``pattern``, polling until it appears."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.log):
                if re.search(pattern, line):
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no log line matches {pattern!r}: {self.log}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _pump(stream: IO[str], put: Callable[[str | None], object]) -> None:
    for line in stream:
        put(line)
    put(None)  # EOF


def start(args: list[str], env: dict[str, str]) -> Served:
    """Start ``tlskit serve`` and wait (polling its stdout, 20 s at most) until it prints its URL."""
    process = subprocess.Popen([sys.executable, "-m", "tlskit", "serve", *args], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, lines.put), daemon=True).start()
    threading.Thread(target=_pump, args=(process.stderr, lambda line: log.append(line or "")),
                     daemon=True).start()
    seen: list[str] = []
    try:
        while (line := lines.get(timeout=20)) is not None:
            seen.append(line)
            if line.startswith("Try:") or (line.startswith("Serving") and "--cert" in args):
                port = int(re.search(r"https://\S+:(\d+)/", seen[0]).group(1))  # type: ignore[union-attr]
                found = re.search(r"--cacert (\S+)", line)
                return Served(process, port, Path(found.group(1)) if found else Path(), seen, log)
    except queue.Empty:
        pass
    process.kill()
    process.wait(timeout=10)
    raise AssertionError(f"server did not start: {''.join(seen)} {''.join(log)}")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "docs" / "notes.txt").write_text("plain notes\n")
    (root / ".env").write_text("SECRET=1\n")
    (tmp_path / "secret.txt").write_text("outside the root\n")
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("SSLKEYLOGFILE", None)
    served = start([str(root), "--host", "127.0.0.1", "--port", "0"], env)
    yield served
    if served.process.poll() is None:
        served.stop()


def fetch(served: Served, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(served.cacert))
    request = urllib.request.Request(served.url(path), method=method)
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_serves_files_to_python_ssl(site: Served) -> None:
    status, headers, body = fetch(site, "/")
    assert (status, body) == (200, b"<h1>home</h1>\n")
    assert headers["content-type"] == "text/html; charset=utf-8"
    status, headers, body = fetch(site, "/docs/notes.txt")
    assert (status, body, headers["content-length"]) == (200, b"plain notes\n", "12")
    status, headers, body = fetch(site, "/docs/notes.txt", method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", "12")
    assert fetch(site, "/missing.html")[0] == 404
    assert fetch(site, "/.env")[0] == 404
    assert fetch(site, "/index.html", method="POST")[0] == 405
    status, headers, _ = fetch(site, "/docs")  # urllib follows the redirect to /docs/, which has no index
    assert status == 404


def test_keep_alive_serves_several_requests_on_one_connection(site: Served) -> None:
    ctx = ssl.create_default_context(cafile=str(site.cacert))
    conn = http.client.HTTPSConnection("localhost", site.port, context=ctx, timeout=10)
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
    missing = subprocess.run(["curl", "-sS", "--cacert", str(site.cacert), "-o", "/dev/null", "-w", "%{http_code}",
                              site.url("/nope")], capture_output=True, text=True, timeout=30)
    assert missing.stdout == "404"
    for attack in ("/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt", "/docs/%2e%2e/%2e%2e/secret.txt"):
        traversal = subprocess.run(["curl", "-sS", "--path-as-is", "--cacert", str(site.cacert),
                                    "-w", "\n%{http_code}", site.url(attack)], capture_output=True, text=True,
                                   timeout=30)
        assert traversal.stdout.endswith("\n404"), (attack, traversal.stdout)
        assert "outside the root" not in traversal.stdout


def test_handshake_failures_are_logged_with_peer_and_sni(site: Served) -> None:
    ctx = ssl.create_default_context()  # system roots: the self-signed certificate is rejected
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(site.url("/"), context=ctx, timeout=10)
    assert fetch(site, "/")[0] == 200  # still serving
    site.wait_log(r"tlskit\.io \w+ TLS handshake with 127\.0\.0\.1:\d+ \(SNI localhost\) failed: \S")
    site.wait_log(r'127\.0\.0\.1:\d+ "GET /" 200 14')


def test_self_signed_certificate_is_private_and_reused(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    first = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0"], env)
    first.stop()
    cert_dir = tmp_path / "xdg" / "tlskit"
    key = cert_dir / "localhost-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert first.cacert == cert_dir / "localhost.pem"
    cert_before, key_before = first.cacert.read_bytes(), key.read_bytes()
    second = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0"], env)
    second.stop()
    assert second.cacert == first.cacert
    assert first.cacert.read_bytes() == cert_before and key.read_bytes() == key_before


def test_own_certificate_is_served(tmp_path: Path) -> None:
    root_ca = make_ca()
    cert, key = make_leaf(root_ca, ["localhost"]).write(tmp_path, "site")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(root_ca.pem)
    (tmp_path / "hello.txt").write_text("hi\n")
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--cert", str(cert),
                    "--key", str(key)], env)
    served.cacert = ca
    try:
        assert fetch(served, "/hello.txt")[2] == b"hi\n"
    finally:
        served.stop()
    assert not (tmp_path / "xdg").exists()  # no self-signed certificate was made


def test_bad_certificate_path_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = subprocess.run([sys.executable, "-m", "tlskit", "serve", str(tmp_path), "--cert", str(missing),
                             "--key", str(missing)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(missing) in result.stderr, result.stderr


def test_key_not_matching_certificate_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = make_ca()
    cert, _ = make_leaf(ca).write(tmp_path, "a")
    _, other_key = make_leaf(ca).write(tmp_path, "b")
    assert main(["serve", str(tmp_path), "--cert", str(cert), "--key", str(other_key)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match" in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and re.fullmatch(r"tlskit \S+\n", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "curl --cacert" in capsys.readouterr().out
