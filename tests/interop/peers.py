"""Launch real third-party TLS peers (OpenSSL, GnuTLS, curl) and capture tools (tcpdump, tshark) from tests.

Every process runs in its own session, is bounded by a timeout and is killed (whole process group) when
its context manager exits or its timeout passes. Servers listen on 127.0.0.1 on a free port unless told
otherwise. A missing binary fails the test when ``CI`` is set and skips it elsewhere (``require``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

import pytest

HOST = "127.0.0.1"
TIMEOUT = 15.0
"""Default bound, in seconds, on starting a server or running one client exchange."""

GNUTLS_TLS13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3"
"""GnuTLS priority string allowing TLS 1.3 only; append e.g. ``:-GROUP-ALL:+GROUP-X25519``."""

StrPath = str | os.PathLike[str]

_APT_PACKAGE = {"gnutls-cli": "gnutls-bin", "gnutls-serv": "gnutls-bin", "dumpcap": "wireshark-common",
                "java": "openjdk-17-jdk-headless", "javac": "openjdk-17-jdk-headless", "nghttp": "nghttp2-client",
                **dict.fromkeys(("tstclnt", "selfserv", "certutil", "pk12util"), "libnss3-tools")}


class PeerError(RuntimeError):
    """A peer process failed to start, or did not finish in time; the message carries its output."""


# --------------------------------------------------------------------------------------------- tools


def require(tool: str) -> str:
    """Return the path of ``tool``; fail the test in CI, skip it elsewhere, when it is not installed."""
    path = shutil.which(tool)
    if path is not None:
        return path
    message = f"{tool} is not installed: `bash .ci/run` installs it (apt-get install {_APT_PACKAGE.get(tool, tool)})"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


_VERSION_ARGS = {
    "openssl": ["version"],
    "gnutls-cli": ["--version"],
    "gnutls-serv": ["--version"],
    "curl": ["--version"],
    "tshark": ["--version"],
    "tcpdump": ["--version"],
    "nginx": ["-v"],
    "java": ["-version"],
}


@cache
def tool_version(tool: str) -> str:
    """First line of ``tool``'s version output (e.g. ``OpenSSL 3.0.19 27 Jan 2026``), or ``"missing"``."""
    if shutil.which(tool) is None:
        return "missing"
    proc = subprocess.run(
        [tool, *_VERSION_ARGS.get(tool, ["--version"])],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


# --------------------------------------------------------------------------------------------- ports


def chromium_dump_dom(url: str, leaf_pem: Path, profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium's ``--dump-dom`` of ``url``, trusting the leaf certificate in ``leaf_pem`` by its SPKI
    pin (no NSS database needed); ``profile`` is a fresh user-data directory."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    chromium = require("chromium")
    leaf = x509.load_pem_x509_certificates(leaf_pem.read_bytes())[0]
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--ignore-certificate-errors-spki-list={pin}", "--dump-dom", url],
        capture_output=True, text=True, timeout=60, check=False)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def is_listening(port: int) -> bool:
    """Whether something listens on TCP ``port``, read from /proc so no connection is spent on it."""
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = TCP_LISTEN
                return True
    if found_table:
        return False
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def wait_listening(
    port: int, *, proc: subprocess.Popen[bytes] | None = None, timeout: float = TIMEOUT, what: str = "server"
) -> None:
    """Wait until ``port`` is listening; raise ``PeerError`` if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not is_listening(port):
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"{what} exited with status {proc.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise PeerError(f"{what} did not listen on port {port} within {timeout:.0f}s")
        time.sleep(0.02)


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 3.0) -> None:
    """Signal the process group of ``proc`` (started with ``start_new_session``), then SIGKILL it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()


# --------------------------------------------------------------------------------------------- servers


class PeerServer:
    """A third-party server process on ``.port``; use as a context manager. Subclasses build ``argv``."""

    name = "server"
    _bind_failure = re.compile(r"address already in use|bind|cannot listen", re.IGNORECASE)

    def __init__(self, *, port: int | None = None, timeout: float = TIMEOUT) -> None:
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix=f"tlskit-{self.name}-"))
        self._log_path = self._dir / "output.log"
        self._log: IO[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the server and wait until its port listens; retries on a port lost to a race."""
        for attempt in range(3):
            self._log = self._log_path.open("wb")
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.PIPE,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                wait_listening(self.port, proc=self.proc, timeout=self.timeout, what=self.name)
                return self
            except PeerError as exc:
                self.stop()
                output = self.output()
                if attempt < 2 and not self._fixed_port and self._bind_failure.search(output):
                    self.port = free_port()
                    continue
                argv = self.argv()
                raise PeerError(f"{exc} [{tool_version(Path(argv[0]).name)}]\n$ {' '.join(argv)}\n{output}") from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Kill the server (idempotent); its output stays readable until the context exits."""
        if self.proc is not None:
            _kill_group(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        try:
            return self._log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, pattern: str | re.Pattern[str], timeout: float | None = None) -> re.Match[str]:
        """Wait until the server's output matches ``pattern`` (a regex); raise ``PeerError`` on timeout."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            match = regex.search(self.output())
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise PeerError(f"{self.name} output never matched {regex.pattern!r}:\n{self.output()}")
            time.sleep(0.02)

    def send(self, data: bytes) -> None:
        """Write to the server's stdin (``openssl s_server`` in ``plain`` mode sends it to the client)."""
        if self.proc is None or self.proc.stdin is None:
            raise PeerError(f"{self.name} is not running")
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class OpenSSLServer(PeerServer):
    """``openssl s_server`` on 127.0.0.1.

    ``mode``: ``"www"`` answers ``GET /`` with a status page and closes, ``"rev"`` echoes each line
    reversed, ``"plain"`` prints what the client sends (see ``output()``) and sends ``send()`` data.
    """

    name = "openssl-s_server"

    def __init__(
        self,
        cert: StrPath,
        key: StrPath,
        *,
        mode: Literal["www", "rev", "plain"] = "www",
        tls13_only: bool = True,
        ciphersuites: str | None = None,
        groups: str | None = None,
        sigalgs: str | None = None,
        alpn: Sequence[str] | None = None,
        naccept: int | None = None,
        keylog: StrPath | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        super().__init__(port=port, timeout=timeout)
        self._openssl = require("openssl")
        self.cert, self.key, self.mode, self.tls13_only = cert, key, mode, tls13_only
        self.ciphersuites, self.groups, self.sigalgs, self.alpn = ciphersuites, groups, sigalgs, alpn
        self.naccept, self.keylog, self.extra_args = naccept, keylog, tuple(extra_args)

    def argv(self) -> list[str]:
        argv = [self._openssl, "s_server", "-accept", f"{HOST}:{self.port}"]
        argv += ["-cert", os.fspath(self.cert), "-key", os.fspath(self.key)]
        # s_server reads only the first certificate of -cert; the rest of a full-chain file is its chain.
        pems = re.findall(
            rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?",
            Path(self.cert).read_bytes(),
            re.DOTALL,
        )
        if len(pems) > 1:
            chain = self._dir / "chain.pem"
            chain.write_bytes(b"".join(pems[1:]))
            argv += ["-cert_chain", os.fspath(chain)]
        if self.tls13_only:
            argv.append("-tls1_3")
        if self.mode != "plain":
            argv.append(f"-{self.mode}")
        argv += _openssl_options(self.ciphersuites, self.groups, self.sigalgs, self.alpn)
        if self.naccept is not None:
            argv += ["-naccept", str(self.naccept)]
        if self.keylog is not None:
            argv += ["-keylogfile", os.fspath(self.keylog)]
        return argv + list(self.extra_args)


class GnuTLSServer(PeerServer):
    """``gnutls-serv`` (listens on every address; GnuTLS has no bind option). ``mode``: echo or http.

    ``client_cert``: ``"none"`` (gnutls-serv asks for one by default; we turn that off), ``"request"``
    (ask, verify if sent), ``"require"``; give ``extra_args=("--x509cafile=CA",)`` to verify them.
    """

    name = "gnutls-serv"

    def __init__(
        self,
        cert: StrPath,
        key: StrPath,
        *,
        mode: Literal["echo", "http"] = "echo",
        priority: str = GNUTLS_TLS13,
        alpn: Sequence[str] | None = None,
        client_cert: Literal["none", "request", "require"] = "none",
        extra_args: Sequence[str] = (),
        port: int | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        super().__init__(port=port, timeout=timeout)
        self._serv = require("gnutls-serv")
        self.cert, self.key, self.mode, self.priority = cert, key, mode, priority
        self.alpn, self.client_cert, self.extra_args = alpn, client_cert, tuple(extra_args)

    def argv(self) -> list[str]:
        argv = [self._serv, f"--{self.mode}", "-p", str(self.port), f"--priority={self.priority}"]
        argv += [f"--x509certfile={os.fspath(self.cert)}", f"--x509keyfile={os.fspath(self.key)}"]
        argv.append(
            {
                "none": "--disable-client-cert",
                "request": "--verify-client-cert",
                "require": "--require-client-cert",
            }[self.client_cert]
        )
        for protocol in self.alpn or ():
            argv.append(f"--alpn={protocol}")
        return argv + list(self.extra_args)


class NginxServer(PeerServer):
    """nginx (the Debian package) on 127.0.0.1 with a generated configuration: TLS 1.3 only, one server
    block whose every location answers ``200`` with ``verify=$ssl_client_verify dn=$ssl_client_s_dn``.

    Started in the foreground with its own prefix (``nginx -p DIR -c nginx.conf -g 'daemon off; pid
    DIR/nginx.pid;'``), error log at ``DIR/error.log`` (``error_log()``; ``output()`` includes it), access
    log and temporary files in DIR. ``client_ca`` with ``verify_client`` (``on``/``optional``) turns on
    ``ssl_verify_client``; ``stapling_file`` staples that DER OCSPResponse (``ssl_stapling_file``);
    ``stapling_responder`` fetches staples from that OCSP URL and verifies them against ``stapling_trust``
    (``ssl_stapling_verify``). ``directives`` go into the server block verbatim.
    """

    name = "nginx"

    def __init__(
        self,
        cert: StrPath,
        key: StrPath,
        *,
        client_ca: StrPath | None = None,
        verify_client: Literal["on", "optional"] = "on",
        verify_depth: int = 2,
        stapling_file: StrPath | None = None,
        stapling_responder: str | None = None,
        stapling_trust: StrPath | None = None,
        directives: Sequence[str] = (),
        port: int | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        super().__init__(port=port, timeout=timeout)
        self._nginx = require("nginx")
        self.cert, self.key, self.client_ca, self.verify_client = cert, key, client_ca, verify_client
        self.verify_depth, self.stapling_file, self.directives = verify_depth, stapling_file, tuple(directives)
        self.stapling_responder, self.stapling_trust = stapling_responder, stapling_trust

    def config(self) -> str:
        d = self._dir
        lines = [
            f"ssl_certificate {os.fspath(self.cert)};",
            f"ssl_certificate_key {os.fspath(self.key)};",
        ]
        if self.client_ca is not None:
            lines += [f"ssl_client_certificate {os.fspath(self.client_ca)};",
                      f"ssl_verify_client {self.verify_client};", f"ssl_verify_depth {self.verify_depth};"]
        if self.stapling_file is not None or self.stapling_responder is not None:
            lines.append("ssl_stapling on;")
        if self.stapling_file is not None:
            lines.append(f"ssl_stapling_file {os.fspath(self.stapling_file)};")
        if self.stapling_responder is not None:
            lines.append(f"ssl_stapling_responder {self.stapling_responder};")
        if self.stapling_trust is not None:
            lines += ["ssl_stapling_verify on;", f"ssl_trusted_certificate {os.fspath(self.stapling_trust)};"]
        body = "\n        ".join([*lines, *self.directives])
        temp = " ".join(f"{kind}_temp_path {d}/tmp-{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                         "uwsgi", "scgi"))
        return f"""\
worker_processes 1;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    {temp}
    server {{
        listen {HOST}:{self.port} ssl;
        ssl_protocols TLSv1.3;
        {body}
        default_type text/plain;
        location / {{ return 200 "verify=$ssl_client_verify dn=$ssl_client_s_dn\\n"; }}
    }}
}}
"""

    def argv(self) -> list[str]:
        (self._dir / "nginx.conf").write_text(self.config())  # again on a retry: the port may have changed
        return [self._nginx, "-p", os.fspath(self._dir), "-e", os.fspath(self._dir / "error.log"),
                "-c", "nginx.conf", "-g", f"daemon off; pid {self._dir}/nginx.pid;"]

    def error_log(self) -> str:
        try:
            return (self._dir / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        return super().output() + self.error_log()


def _openssl_options(
    ciphersuites: str | None, groups: str | None, sigalgs: str | None, alpn: Sequence[str] | None
) -> list[str]:
    argv: list[str] = []
    if ciphersuites is not None:
        argv += ["-ciphersuites", ciphersuites]
    if groups is not None:
        argv += ["-groups", groups]
    if sigalgs is not None:
        argv += ["-sigalgs", sigalgs]
    if alpn:
        argv += ["-alpn", ",".join(alpn)]
    return argv


# --------------------------------------------------------------------------------------------- clients


def run_client(
    argv: Sequence[str],
    *,
    data: bytes = b"",
    expect: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a client: write ``data`` to its stdin, wait for ``expect`` on its stdout if given, then close
    stdin and wait for it to exit. Raises ``PeerError`` (with its output) if it overruns ``timeout``."""
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:

        def raw(stream: IO[bytes]) -> bytes:
            stream.seek(0)
            return stream.read()

        def captured(stream: IO[bytes]) -> str:
            return raw(stream).decode("utf-8", "replace")

        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            env={**os.environ, **env} if env is not None else None,
            start_new_session=True,
        )
        assert proc.stdin is not None
        try:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(data)
                proc.stdin.flush()
            while expect is not None and proc.poll() is None and expect not in raw(out):
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(list(argv), timeout)
                time.sleep(0.02)
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            raise PeerError(
                f"{tool_version(Path(argv[0]).name)}: client did not finish within {timeout:.0f}s"
                + (f" (waiting for {expect!r})" if expect is not None else "")
                + f"\n$ {' '.join(argv)}\n--- stdout\n{captured(out)}\n--- stderr\n{captured(err)}"
            ) from None
        finally:
            _kill_group(proc, signal.SIGKILL)
        return subprocess.CompletedProcess(list(argv), proc.returncode, captured(out), captured(err))


def openssl_client(
    port: int,
    *,
    servername: str = "localhost",
    cafile: StrPath,
    host: str = HOST,
    ciphersuites: str | None = None,
    groups: str | None = None,
    sigalgs: str | None = None,
    alpn: Sequence[str] | None = None,
    data: bytes = b"",
    expect: bytes | None = None,
    wait_for_close: bool = False,
    brief: bool = True,
    keylog: StrPath | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` to ``host:port``, TLS 1.3 only, verifying the chain and ``servername``.

    ``data`` goes to the server; s_client hangs up when its stdin closes, so pass ``expect`` (bytes to
    wait for on stdout) or ``wait_for_close=True`` (``-ign_eof``: until the server closes) to read a reply.
    With ``brief`` the handshake summary is on stderr and stdout holds only application data; without
    it the full report (which includes ``ALPN protocol:``) shares stdout. Parse with ``negotiated()``.
    """
    argv = [require("openssl"), "s_client", "-connect", f"{host}:{port}", "-tls1_3"]
    argv += ["-verify_return_error", "-CAfile", os.fspath(cafile)]
    argv += ["-servername", servername, "-verify_hostname", servername]
    argv += _openssl_options(ciphersuites, groups, sigalgs, alpn)
    if brief:
        argv.append("-brief")
    if wait_for_close:
        argv.append("-ign_eof")
    if keylog is not None:
        argv += ["-keylogfile", os.fspath(keylog)]
    return run_client([*argv, *extra_args], data=data, expect=expect, timeout=timeout)


def gnutls_client(
    port: int,
    *,
    servername: str = "localhost",
    cafile: StrPath,
    host: str = HOST,
    priority: str = GNUTLS_TLS13,
    alpn: Sequence[str] | None = None,
    data: bytes = b"",
    expect: bytes | None = None,
    keylog: StrPath | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``gnutls-cli`` to ``host:port`` with SNI and hostname check on ``servername``.

    e.g. ``priority=GNUTLS_TLS13 + ":-CIPHER-ALL:+AES-128-GCM:-GROUP-ALL:+GROUP-X25519"``. gnutls-cli
    sends ``bye`` when stdin closes: pass ``expect`` to wait for a reply first. Its report is on stdout.
    """
    argv = [require("gnutls-cli"), "-p", str(port), f"--x509cafile={os.fspath(cafile)}"]
    argv += [f"--priority={priority}", f"--sni-hostname={servername}", f"--verify-hostname={servername}"]
    for protocol in alpn or ():
        argv.append(f"--alpn={protocol}")
    env = {"SSLKEYLOGFILE": os.fspath(keylog)} if keylog is not None else None
    return run_client([*argv, *extra_args, host], data=data, expect=expect, env=env, timeout=timeout)


def curl_get(
    url: str,
    *,
    cacert: StrPath,
    keylog: StrPath | None = None,
    extra: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``curl`` over TLS 1.3 (at least) verifying against ``cacert``; ``keylog`` sets SSLKEYLOGFILE.

    For ``https://localhost:PORT/`` against a server on 127.0.0.1, add
    ``extra=("--resolve", f"localhost:{port}:127.0.0.1")`` to skip the ::1 attempt.
    """
    argv = [require("curl"), "-sS", "--tlsv1.3", "--max-time", f"{timeout:.0f}"]
    argv += ["--cacert", os.fspath(cacert), *extra, url]
    env = {"SSLKEYLOGFILE": os.fspath(keylog)} if keylog is not None else None
    return run_client(argv, env=env, timeout=timeout + 5)


# --------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What a third-party client reports it negotiated; ``None`` where its output did not say."""

    protocol: str | None  # "TLSv1.3" (OpenSSL) / "TLS1.3" (GnuTLS)
    cipher: str | None  # "TLS_AES_128_GCM_SHA256" (OpenSSL) / "AES-128-GCM" (GnuTLS)
    group: str | None  # IANA-style name: "x25519", "secp256r1", "secp384r1", "X25519MLKEM768", ...
    signature: str | None  # "ECDSA", "RSA-PSS" (OpenSSL) / "ECDSA-SECP256R1-SHA256" (GnuTLS)
    alpn: str | None  # OpenSSL only without brief; GnuTLS always
    verified: bool  # the peer's chain and name were accepted
    verify_error: str | None  # e.g. "hostname mismatch"


_OPENSSL_GROUPS = {"prime256v1": "secp256r1", "X25519": "x25519", "X448": "x448"}
_GNUTLS_GROUPS = {
    "X25519": "x25519",
    "X448": "x448",
    "SECP256R1": "secp256r1",
    "SECP384R1": "secp384r1",
    "SECP521R1": "secp521r1",
}


def _search(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1).strip() if match else None


def parse_openssl_client(text: str) -> Negotiated:
    """Parse ``openssl s_client`` output (brief or full, OpenSSL 3.0 to 3.5) into ``Negotiated``."""
    protocol = _search(r"^Protocol version: (\S+)", text) or _search(r"^New, (TLSv[\d.]+), Cipher is", text)
    cipher = _search(r"^Ciphersuite: (\S+)", text) or _search(r"^New, \S+, Cipher is (\S+)", text)
    group = _search(r"^Negotiated TLS1\.3 group: (\S+)", text)
    if group is None:
        temp_key = _search(r"^Server Temp Key: (.+)$", text)  # "X25519, 253 bits" / "ECDH, prime256v1, 256 bits"
        if temp_key is not None:
            parts = [p.strip() for p in temp_key.split(",")]
            group = parts[1] if parts[0] == "ECDH" and len(parts) > 2 else parts[0]
    signature = _search(r"^Signature type: (\S+)", text) or _search(r"^Peer signature type: (\S+)", text)
    alpn = _search(r"^ALPN protocol: (\S+)", text)
    verify_error = _search(r"^verify error:num=\d+:(.+)$", text) or _search(r"^Verification error: (.+)$", text)
    verified = verify_error is None and (
        _search(r"^(Verification: OK)", text) is not None
        or _search(r"^Verify return code: (0) \(ok\)", text) is not None
    )
    return Negotiated(
        protocol=protocol,
        cipher=cipher,
        group=_OPENSSL_GROUPS.get(group, group) if group else None,
        signature=signature,
        alpn=alpn,
        verified=verified,
        verify_error=verify_error,
    )


def parse_gnutls_client(text: str) -> Negotiated:
    """Parse ``gnutls-cli`` output, whose summary reads
    ``- Description: (TLS1.3-X.509)-(ECDHE-X25519)-(ECDSA-SECP256R1-SHA256)-(AES-128-GCM)``."""
    description = _search(r"^- Description: (.+)$", text)
    protocol = cipher = group = signature = None
    if description is not None:
        parts = re.findall(r"\(([^)]*)\)", description)
        if len(parts) == 4:
            protocol = parts[0].split("-", 1)[0]
            group = parts[1].split("-", 1)[1] if "-" in parts[1] else parts[1]
            group = _GNUTLS_GROUPS.get(group, group)
            signature, cipher = parts[2], parts[3]
    verify_error = _search(r"^- Status: The certificate is NOT trusted\. (.+)$", text)
    if verify_error is None:
        verify_error = _search(r"^\*\*\* (PKI verification of server certificate failed.*)$", text)
    verified = verify_error is None and "- Status: The certificate is trusted." in text
    return Negotiated(
        protocol=protocol,
        cipher=cipher,
        group=group,
        signature=signature,
        alpn=_search(r"^- Application protocol: (\S+)", text),
        verified=verified,
        verify_error=verify_error,
    )


def negotiated(result: subprocess.CompletedProcess[str]) -> Negotiated:
    """Parse what ``openssl_client`` or ``gnutls_client`` negotiated (both of its output streams)."""
    text = f"{result.stdout}\n{result.stderr}"
    program = Path(result.args[0]).name
    return parse_gnutls_client(text) if program.startswith("gnutls") else parse_openssl_client(text)


# --------------------------------------------------------------------------------------------- capture


@contextlib.contextmanager
def capture(port: int, *, iface: str = "lo", pcap: StrPath | None = None, timeout: float = TIMEOUT) -> Iterator[Path]:
    """Capture TCP ``port`` on ``iface`` with tcpdump while the block runs; yields the pcap path.

    Capture is live when the block starts (tcpdump said ``listening on``); the file is complete when it
    ends. Without ``pcap`` the file goes in a temporary folder removed afterwards: read it inside.
    """
    tcpdump = require("tcpdump")
    with contextlib.ExitStack() as stack:
        if pcap is None:
            pcap = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlskit-pcap-"))) / "capture.pcap"
        path = Path(pcap)
        err = stack.enter_context(tempfile.TemporaryFile())
        # --immediate-mode and -U hand each packet to the file as it comes: without them packets still in
        # the kernel ring are lost at SIGINT (the pcap ends up empty). -Z root keeps tcpdump from
        # dropping to a user that cannot write into a root-owned temporary folder.
        argv = [tcpdump, "-i", iface, "--immediate-mode", "-U", "-n", "-Z", "root", "-w", os.fspath(path)]
        argv.append(f"tcp port {port}")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )

        def stderr_text() -> str:
            err.seek(0)
            return err.read().decode("utf-8", "replace")

        try:
            deadline = time.monotonic() + timeout
            while "listening on" not in stderr_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise PeerError(f"tcpdump did not start capturing\n$ {' '.join(argv)}\n{stderr_text()}")
                time.sleep(0.02)
            yield path
            _kill_group(proc, signal.SIGINT, grace=timeout)  # SIGINT: tcpdump flushes and closes the file
        finally:
            _kill_group(proc, signal.SIGKILL)


def tshark(
    pcap: StrPath,
    *args: str,
    keylog: StrPath | None = None,
    tls_port: int | None = None,
    app: str | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``tshark -r pcap`` with ``args``; ``keylog`` decrypts TLS, ``tls_port`` decodes that port as
    TLS and, with ``app`` (e.g. ``"http"``), its decrypted payload as that protocol."""
    argv = [require("tshark"), "-n", "-r", os.fspath(pcap)]
    if keylog is not None:
        argv += ["-o", f"tls.keylog_file:{os.fspath(keylog)}"]
    if tls_port is not None:
        argv += ["-d", f"tcp.port=={tls_port},tls"]
        if app is not None:
            argv += ["-d", f"tls.port=={tls_port},{app}"]
    proc = subprocess.run(
        [*argv, *args], capture_output=True, text=True, errors="replace", timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise PeerError(f"tshark failed ({proc.returncode})\n$ {' '.join(proc.args)}\n{proc.stderr}")
    return proc


def tshark_decrypt(
    pcap: StrPath,
    keylog: StrPath,
    *,
    port: int,
    app: str = "http",
    display_filter: str = "http",
    fields: Sequence[str] = ("http.request.method", "http.request.uri", "http.request.version"),
) -> str:
    """Decrypt the TLS on ``port`` in ``pcap`` with ``keylog`` and print ``fields`` (space-separated) of
    the packets matching ``display_filter``, one packet a line: by default ``GET /path HTTP/1.1``.
    An empty answer means nothing decrypted. (``http.request.line`` is the header lines, not the
    request line.) For everything, call ``tshark(pcap, "-V", keylog=..., tls_port=...)``."""
    args = ["-Y", display_filter, "-T", "fields", "-E", "separator=/s"]
    for field in fields:
        args += ["-e", field]
    return tshark(pcap, *args, keylog=keylog, tls_port=port, app=app).stdout
