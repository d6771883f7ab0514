"""Mozilla NSS as an interop peer: ``tstclnt`` (client) and ``selfserv`` (server) from libnss3-tools, and the
NSS database (``certutil``/``pk12util``) they read trust anchors and identities from.

tstclnt reports on stderr (with ``-v``: version, cipher, key exchange bits, signature scheme; always: the
server's subject, ``N stateless resumes``, ``Received N Cert Status items``) and prints what the server sent on
stdout; ``-A FILE`` sends the file on each of the ``-L N`` connections (one process, so the later ones may
resume, with ``-Z`` in 0-RTT). On failure it prints ``tstclnt: <what>: SSL_ERROR_...: <text>``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, load_pem_private_key, pkcs12

from tests.interop.peers import HOST, TIMEOUT, PeerError, PeerServer, StrPath, require, run_client, tool_version

# tstclnt/selfserv -I names
NSS_GROUPS = {"x25519": "x25519", "secp256r1": "P256", "secp384r1": "P384"}
# tstclnt -c takes a TLS suite as ":XXXX" (its hex code point)
NSS_SUITES = {"TLS_AES_128_GCM_SHA256": ":1301", "TLS_AES_256_GCM_SHA384": ":1302",
              "TLS_CHACHA20_POLY1305_SHA256": ":1303"}
_P12_PASSWORD = "tlskit"
# selfserv reports failures by number ("HDX PR_Read returned error -12285:"): the codes the tests meet, from NSS's
# sslerr.h (SSL_ERROR_BASE = -0x3000)
_SSL_ERROR_BASE = -0x3000
SSL_ERRORS = {_SSL_ERROR_BASE + 3: "SSL_ERROR_NO_CERTIFICATE", _SSL_ERROR_BASE + 17: "SSL_ERROR_BAD_CERT_ALERT",
              _SSL_ERROR_BASE + 93: "SSL_ERROR_UNKNOWN_CA_ALERT",
              _SSL_ERROR_BASE + 181: "SSL_ERROR_RX_CERTIFICATE_REQUIRED_ALERT"}


def nss_version() -> str:
    """``NSS 3.87.1``: the library version, from ``nss-config`` when installed, else the Debian package's."""
    try:
        proc = subprocess.run(["nss-config", "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return f"NSS {proc.stdout.strip()}"
    except FileNotFoundError:
        pass
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnss3"], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    if proc.returncode == 0 and proc.stdout:
        return f"NSS {proc.stdout.split(':')[-1]}"
    return "NSS (version unknown)" if tool_version("tstclnt") != "missing" else "missing"


class NssDb:
    """An NSS database (``sql:`` format, no password) in ``directory``: trust anchors and identities."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._run(require("certutil"), "-N", "--empty-password")

    @property
    def spec(self) -> str:
        return f"sql:{os.fspath(self.directory)}"

    def _run(self, *argv: str) -> str:
        proc = subprocess.run([*argv, "-d", self.spec], capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if proc.returncode != 0:
            raise PeerError(f"{nss_version()}: {' '.join(argv)} failed ({proc.returncode}):\n"
                            f"{proc.stdout}{proc.stderr}")
        return proc.stdout

    def trust(self, cafile: StrPath, nickname: str, trust: str = "CT,,") -> NssDb:
        """Trust the (first) certificate of ``cafile`` as an anchor: ``C`` for servers, ``T`` for clients."""
        self._run(require("certutil"), "-A", "-n", nickname, "-t", trust, "-a", "-i", os.fspath(cafile))
        return self

    def add_identity(self, cert: StrPath, key: StrPath, nickname: str) -> NssDb:
        """Import a PEM chain (leaf first) and its PKCS#8 key under ``nickname`` (through a PKCS#12 file)."""
        certs = x509.load_pem_x509_certificates(Path(cert).read_bytes())
        private_key = load_pem_private_key(Path(key).read_bytes(), None)
        p12 = pkcs12.serialize_key_and_certificates(nickname.encode(), private_key, certs[0],  # type: ignore[arg-type]
                                                    certs[1:], BestAvailableEncryption(_P12_PASSWORD.encode()))
        path = self.directory / f"{nickname}.p12"
        path.write_bytes(p12)
        self._run(require("pk12util"), "-i", os.fspath(path), "-W", _P12_PASSWORD)
        return self


@dataclass(frozen=True, slots=True)
class NssReport:
    """One tstclnt connection as NSS reported it (``-v`` output); ``None`` where it did not say."""

    version: str | None  # "3.4" is TLS 1.3
    cipher: str | None  # NSS's name of the symmetric cipher: "AES-GCM", "ChaCha20-Poly1305"
    cipher_bits: int | None
    key_exchange_bits: int | None  # 255 x25519, 256 P-256, 384 P-384
    signature: str | None  # "ecdsa_secp256r1_sha256"
    subject: str | None
    resumed: bool
    stapled: int  # how many OCSP responses the server stapled
    early_data_rejected: bool


_REPORT = re.compile(r"SSL version (\d+\.\d+) using (\d+)-bit (\S+) with")
_KEX = re.compile(r"Key Exchange: (\d+)-bit")


@dataclass(frozen=True, slots=True)
class NssClientResult:
    """A tstclnt run: exit status, what the server sent (stdout), a report per connection, the error name."""

    returncode: int
    stdout: str
    stderr: str
    reports: list[NssReport]
    error: str | None  # "SSL_ERROR_BAD_CERT_ALERT" / "SEC_ERROR_UNKNOWN_ISSUER" when it failed

    def ok(self, connections: int = 1) -> list[NssReport]:
        """The reports once checked: exit 0 and ``connections`` TLS 1.3 handshakes."""
        assert self.returncode == 0 and self.error is None, f"{nss_version()} tstclnt failed:\n{self.stderr}"
        assert len(self.reports) == connections, f"{nss_version()}: {self.reports}\n{self.stderr}"
        assert all(r.version == "3.4" for r in self.reports), f"{nss_version()}: {self.reports}"
        return self.reports


def parse_tstclnt(stderr: str) -> list[NssReport]:
    """Split tstclnt's stderr into one report per handshake (each ends with its ``Cert Status items`` line)."""
    reports: list[NssReport] = []
    for block in re.split(r"(?<=OCSP stapled data\)\n)", stderr):
        if "OCSP stapled data" not in block:
            continue
        match, kex = _REPORT.search(block), _KEX.search(block)
        signature = re.search(r"Signature Scheme: (\S+)", block)
        subject = re.search(r"^subject DN: (.+)$", block, re.MULTILINE)
        resumes = re.search(r"^(\d+) stateless resumes", block, re.MULTILINE)
        stapled = re.search(r"^Received (\d+) Cert Status items", block, re.MULTILINE)
        reports.append(NssReport(
            version=match.group(1) if match else None, cipher=match.group(3) if match else None,
            cipher_bits=int(match.group(2)) if match else None, key_exchange_bits=int(kex.group(1)) if kex else None,
            signature=signature.group(1) if signature else None, subject=subject.group(1) if subject else None,
            # The counter is process-wide: a connection resumed when it went up since the one before.
            resumed=resumes is not None and int(resumes.group(1)) > sum(r.resumed for r in reports),
            stapled=int(stapled.group(1)) if stapled else 0, early_data_rejected=False))
    if "Early data rejected" in stderr and reports:
        reports[-1] = dataclasses.replace(reports[-1], early_data_rejected=True)
    return reports


def tstclnt(
    port: int,
    db: NssDb,
    request: Path,
    *,
    servername: str = "localhost",
    suite: str | None = None,
    groups: Sequence[str] | None = None,
    connections: int = 1,
    tickets: bool = False,
    early_data: bool = False,
    ocsp: bool = False,
    nickname: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = TIMEOUT,
) -> NssClientResult:
    """``tstclnt`` to 127.0.0.1:``port``, TLS 1.3 only, verifying ``servername`` against ``db``'s anchors; sends
    ``request`` on each of ``connections`` connections and reads until the server closes. ``suite`` is an IANA
    name, ``groups`` IANA names in preference order (NSS sends a key share for the first alone)."""
    argv = [require("tstclnt"), "-4", "-h", HOST, "-a", servername, "-p", str(port), "-d", db.spec,
            "-V", "tls1.3:tls1.3", "-v", "-A", os.fspath(request), "-L", str(connections)]
    if suite is not None:
        argv += ["-c", NSS_SUITES[suite]]
    if groups is not None:
        argv += ["-I", ",".join(NSS_GROUPS[g] for g in groups)]
    if tickets or early_data:
        argv.append("-u")
    if early_data:
        argv.append("-Z")
    if ocsp:
        argv.append("-T")
    if nickname is not None:
        argv += ["-n", nickname]
    result = run_client([*argv, *extra_args], timeout=timeout)
    # -v adds a line per poll; keep the rest
    stderr = "\n".join(line for line in result.stderr.splitlines()
                       if not re.search(r"Poll|bytes written|Writing \d+|read \d+ bytes|Read from server", line))
    error = re.search(r"\b((?:SSL|SEC)_ERROR_[A-Z0-9_]+)", result.stderr)
    return NssClientResult(result.returncode, result.stdout, stderr + "\n", parse_tstclnt(stderr + "\n"),
                           error.group(1) if error else None)


class SelfServ(PeerServer):
    """``selfserv`` on 127.0.0.1 serving ``nickname`` from ``db``, TLS 1.3 only, session tickets on. It answers
    each request with ``HTTP/1.0 200 OK`` and the request echoed, then closes. ``alpn`` offers http/1.1 (-Q);
    ``require_client_cert`` asks for and requires one (-r -r); ``ocsp`` staples ``good``/``revoked``/...
    responses it signs with ``ocsp_signer`` (a nickname in ``db`` with its key)."""

    name = "nss-selfserv"
    _bind_failure = re.compile(r"PR_ADDRESS_IN_USE_ERROR|bind", re.IGNORECASE)

    def __init__(self, db: NssDb, nickname: str, *, groups: Sequence[str] | None = None, alpn: bool = False,
                 require_client_cert: bool = False, ocsp: str | None = None, ocsp_signer: str | None = None,
                 early_data: bool = False, port: int | None = None, timeout: float = TIMEOUT) -> None:
        super().__init__(port=port, timeout=timeout)
        self._selfserv = require("selfserv")
        self.db, self.nickname, self.groups, self.alpn = db, nickname, groups, alpn
        self.require_client_cert, self.ocsp, self.ocsp_signer = require_client_cert, ocsp, ocsp_signer
        self.early_data = early_data

    def argv(self) -> list[str]:
        argv = [self._selfserv, "-n", self.nickname, "-p", str(self.port), "-d", self.db.spec,
                "-V", "tls1.3:tls1.3", "-u", "-v"]
        if self.groups is not None:
            argv += ["-I", ",".join(NSS_GROUPS[g] for g in self.groups)]
        if self.alpn:
            argv.append("-Q")
        if self.require_client_cert:
            argv += ["-r", "-r"]
        if self.ocsp is not None:
            argv += ["-T", self.ocsp]
            if self.ocsp_signer is not None:
                argv += ["-A", self.ocsp_signer]
        if self.early_data:
            argv.append("-Z")
        return argv

    def errors(self) -> list[str]:
        """The SSL errors selfserv reported so far, by name where ``SSL_ERRORS`` knows the number."""
        codes = re.findall(r"returned error (-\d+)", self.output())
        return [SSL_ERRORS.get(int(code), code) for code in codes]

    def wait_errors(self, count: int = 1) -> list[str]:
        """``errors()`` once there are ``count`` of them; ``PeerError`` with the output if not in time."""
        self.wait_for_output(rf"(?:returned error -\d+[\s\S]*){{{count}}}")
        return self.errors()

    def handshakes(self) -> int:
        """How many handshakes selfserv has finished (it prints a report per handshake)."""
        return len(re.findall(r"selfserv: SSL version", self.output()))

    def resumed(self) -> int:
        """selfserv's count of stateless (ticket) resumptions so far."""
        counts = re.findall(r"(\d+) stateless resumes", self.output())
        return int(counts[-1]) if counts else 0
