"""Java's JSSE as an interop peer: ``java/TlsPeer.java`` compiled once per session, run as a batch of client
connections (one JVM for several handshakes: a JVM costs ~0.5 s to start) or as a server.

Each connection the Java side makes or accepts is reported as one JSON line, parsed into ``JavaReport``.
Named groups are JVM-wide in JDK 17 (the ``jdk.tls.namedGroups`` system property), hence ``named_groups``
on a whole client batch or server rather than on a job.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.interop.peers import TIMEOUT, PeerError, PeerServer, StrPath, require, run_client, tool_version

SOURCE = Path(__file__).parent / "java" / "TlsPeer.java"
MAIN_CLASS = "TlsPeer"


def jsse_version() -> str:
    """``openjdk version "17.0.15" 2025-04-15``: the first line of ``java -version``."""
    return tool_version("java")


def compile_peer(directory: Path) -> Path:
    """Compile ``TlsPeer.java`` into ``directory`` (the classpath to run it from); ``PeerError`` on failure."""
    javac = require("javac")
    proc = subprocess.run([javac, "-d", os.fspath(directory), os.fspath(SOURCE)], capture_output=True, text=True,
                          timeout=60, check=False)
    if proc.returncode != 0:
        raise PeerError(f"javac ({jsse_version()}) failed on {SOURCE.name}:\n{proc.stdout}{proc.stderr}")
    return directory


def _java_argv(classpath: Path, named_groups: Sequence[str] | None, security: Path | None, mode: str) -> list[str]:
    argv = [require("java"), "-XX:TieredStopAtLevel=1", "-cp", os.fspath(classpath)]
    if named_groups is not None:
        argv.append(f"-Djdk.tls.namedGroups={','.join(named_groups)}")
    if security is not None:
        argv.append(f"-Djava.security.properties={os.fspath(security)}")  # added to the JDK's java.security
    return [*argv, MAIN_CLASS, mode]


def _write_security(directory: Path, properties: Mapping[str, str]) -> Path | None:
    """A java.security override file, e.g. ``{"jdk.tls.keyLimits": "AES/GCM/NoPadding KeyUpdate 2^12"}``."""
    if not properties:
        return None
    path = directory / "java.security"
    path.write_text("".join(f"{name}={value}\n" for name, value in properties.items()))
    return path


@dataclass(frozen=True, slots=True)
class JavaReport:
    """One connection as JSSE saw it; ``error_type``/``error_message`` set (and the rest None) if it failed."""

    connection: int  # 1, 2, ... within a client job / in the server's accept order
    job: str | None = None  # the client job's id
    protocol: str | None = None  # "TLSv1.3"
    suite: str | None = None  # "TLS_AES_128_GCM_SHA256"
    peer: str | None = None  # the peer certificate's subject, RFC 2253: "CN=localhost"
    alpn: str | None = None
    resumed: bool | None = None
    sni: str | None = None  # server only: the name the client asked for
    echo: str | None = None  # client only: what the server sent back
    error_type: str | None = None  # "javax.net.ssl.SSLHandshakeException"
    error_message: str | None = None

    @classmethod
    def from_json(cls, line: str) -> JavaReport:
        data = json.loads(line)
        error = data.get("error") or {}
        return cls(connection=data["connection"], job=data.get("id"), protocol=data.get("protocol"),
                   suite=data.get("suite"), peer=data.get("peer"), alpn=data.get("alpn"),
                   resumed=data.get("resumed"), sni=data.get("sni"), echo=data.get("echo"),
                   error_type=error.get("type"), error_message=error.get("message"))


def _reports(output: str) -> list[JavaReport]:
    return [JavaReport.from_json(line) for line in output.splitlines()
            if line.startswith("{") and '"listening"' not in line]


@dataclass(frozen=True, slots=True)
class ClientJob:
    """One line of ``TlsPeer client`` input: ``connections`` handshakes with one SSLContext (so later ones may
    resume), each verifying ``sni`` against ``ca`` and, with ``send`` (no spaces), reading its echo."""

    id: str
    port: int
    ca: StrPath
    sni: str = "localhost"
    suites: Sequence[str] = ()
    alpn: Sequence[str] = ()
    connections: int = 1
    cert: StrPath | None = None
    key: StrPath | None = None
    send: str | None = None
    repeat: int = 1

    def line(self) -> str:
        fields = {"id": self.id, "port": str(self.port), "ca": os.fspath(self.ca), "sni": self.sni,
                  "connections": str(self.connections)}
        if self.suites:
            fields["suites"] = ",".join(self.suites)
        if self.alpn:
            fields["alpn"] = ",".join(self.alpn)
        if self.cert is not None and self.key is not None:
            fields["cert"], fields["key"] = os.fspath(self.cert), os.fspath(self.key)
        if self.send is not None:
            fields["send"], fields["repeat"] = self.send, str(self.repeat)
        for name, value in fields.items():
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"job field {name}={value!r} must be non-empty and without spaces")
        return " ".join(f"{name}={value}" for name, value in fields.items())


def java_clients(classpath: Path, jobs: Sequence[ClientJob], *, named_groups: Sequence[str] | None = None,
                 security: Mapping[str, str] | None = None, timeout: float = 2 * TIMEOUT
                 ) -> dict[str, list[JavaReport]]:
    """Run ``jobs`` in order in one JVM; each job's reports by its id. ``security`` overrides java.security
    properties. ``PeerError`` (with the JVM's output) if the JVM fails or reports fewer connections than the
    jobs asked for."""
    data = "".join(job.line() + "\n" for job in jobs).encode()
    with tempfile.TemporaryDirectory(prefix="tlskit-jsse-") as directory:
        argv = _java_argv(classpath, named_groups, _write_security(Path(directory), security or {}), "client")
        result = run_client(argv, data=data, timeout=timeout)
    reports = _reports(result.stdout)
    if result.returncode != 0 or len(reports) != sum(job.connections for job in jobs):
        raise PeerError(f"{jsse_version()}: TlsPeer client exited {result.returncode} after {len(reports)} "
                        f"reports\n$ {' '.join(argv)} <<EOF\n{data.decode()}EOF\n--- stdout\n{result.stdout}"
                        f"\n--- stderr\n{result.stderr}")
    by_job: dict[str, list[JavaReport]] = {job.id: [] for job in jobs}
    for report in reports:
        by_job[str(report.job)].append(report)
    return by_job


class JavaServer(PeerServer):
    """``TlsPeer server`` on 127.0.0.1: JSSE serving ``cert`` (chain) with ``key`` (PKCS#8), echoing each
    connection until the client closes. ``client_auth`` ``"need"``/``"want"`` verifies against ``client_ca``."""

    name = "java-jsse-server"

    def __init__(
        self,
        classpath: Path,
        cert: StrPath,
        key: StrPath,
        *,
        suites: Sequence[str] = (),
        alpn: Sequence[str] = (),
        named_groups: Sequence[str] | None = None,
        security: Mapping[str, str] | None = None,
        client_auth: Literal["none", "want", "need"] = "none",
        client_ca: StrPath | None = None,
        port: int | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        super().__init__(port=port, timeout=timeout)
        self.classpath, self.cert, self.key = classpath, cert, key
        self.suites, self.alpn, self.named_groups = tuple(suites), tuple(alpn), named_groups
        self.client_auth, self.client_ca = client_auth, client_ca
        self.security = _write_security(self._dir, security or {})

    def argv(self) -> list[str]:
        argv = _java_argv(self.classpath, self.named_groups, self.security, "server")
        argv += [f"port={self.port}", f"cert={os.fspath(self.cert)}", f"key={os.fspath(self.key)}",
                 f"client-auth={self.client_auth}"]
        if self.suites:
            argv.append(f"suites={','.join(self.suites)}")
        if self.alpn:
            argv.append(f"alpn={','.join(self.alpn)}")
        if self.client_ca is not None:
            argv.append(f"ca={os.fspath(self.client_ca)}")
        return argv

    def reports(self) -> list[JavaReport]:
        """One report per connection, in the order JSSE finished (or failed) their handshakes."""
        return _reports(self.output())

    def wait_reports(self, count: int, timeout: float | None = None) -> list[JavaReport]:
        """The first ``count`` reports once there are that many; ``PeerError`` with the output if not in time."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(reports := self.reports()) < count:
            if time.monotonic() > deadline:
                raise PeerError(f"{jsse_version()}: {self.name} reported {len(reports)} of {count} connections:\n"
                                f"{self.output()}")
            time.sleep(0.02)
        return reports[:count]
