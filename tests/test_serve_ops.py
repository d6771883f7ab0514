"""`tlskit serve` in operation: HTTP limits, metrics, JSON logs, reload, drain, workers (the reverse proxy:
test_serve_ops_proxy.py)."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.certs import make_ca, make_leaf, write_pem
from tests.served import EchoUpstream, Served, json_lines, raw_exchange, site_config, start, v6_loopback


def test_key_files_are_never_served_from_a_static_root(tmp_path: Path, env: dict[str, str]) -> None:
    """The README's `--cert fullchain.pem --key privkey.pem` run where the files are (no [[route]]: the root is
    the current directory) served the private key and the ticket key to anyone; a relative XDG_DATA_HOME put
    the development CA's key under the root too."""
    site = tmp_path / "site"
    site.mkdir()
    root = make_ca("ops root")
    leaf = make_leaf(root, ["localhost", "127.0.0.1"])
    cert, key = leaf.write(site, "server")
    (site / "current.key").write_bytes(os.urandom(80))
    (site / "page.txt").write_text("public\n")
    (site / "alias.pem").symlink_to(key)
    served = start(["--cert", str(cert), "--key", str(key), "--ticket-key", "current.key", "--listing",
                    "--host", "127.0.0.1", "--port", "0"], env, cwd=site, dev=False)
    try:
        served.cacert = write_pem(tmp_path / "ca.pem", [root])
        assert served.fetch("/page.txt")[0] == 200
        for name in (f"/{key.name}", "/current.key", "/alias.pem"):
            status, _, body = served.fetch(name)
            assert status == 404 and b"PRIVATE KEY" not in body, name
        listing = served.fetch("/")[2].decode()
        assert "page.txt" in listing and key.name not in listing and "current.key" not in listing
        served.wait_log(rf"{re.escape(key.name)} is under the static root")
        # keys the server was not told about: the README's CA walkthrough left ca/root.key downloadable
        other = make_leaf(root, ["other"])
        (site / "ca").mkdir()
        (site / "ca" / "root.key").write_bytes(other.key_pem)
        from cryptography.hazmat.primitives import serialization as ser

        (site / "other.der").write_bytes(other.key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8,
                                                                 ser.NoEncryption()))
        (site / "bundle.p12").write_bytes(b"\x30\x82 not really")
        (site / "public.pem").write_bytes(other.pem)  # a certificate: served
        for name in ("/ca/root.key", "/other.der", "/bundle.p12"):
            assert served.fetch(name)[0] == 404, name
        assert served.fetch("/public.pem")[2] == other.pem
        rotated = site / "rotated.pem"  # a new key moved over the old one: a new inode, and the reload fails
        rotated.write_bytes(make_leaf(root, ["localhost"]).key_pem)
        rotated.rename(key)
        time.sleep(2.5)
        status, _, body = served.fetch(f"/{key.name}")
        assert status == 404 and b"PRIVATE KEY" not in body
    finally:
        served.stop()
    (site / "site.toml").write_text('[tls]\nsession_tickets = true\n')  # a config may hold a Redis password
    dev = start(["--config", "site.toml", "--host", "127.0.0.1", "--port", "0"], {**env, "XDG_DATA_HOME": "data"},
                cwd=site)
    try:
        assert not (site / "data").exists()  # a relative XDG_DATA_HOME is ignored (XDG spec)
        assert dev.fetch("/site.toml")[0] == 404 and dev.fetch("/page.txt")[0] == 200
    finally:
        dev.stop()


def test_workers_leave_the_configurations_warnings_to_the_supervisor(tmp_path: Path, env: dict[str, str]) -> None:
    """Each process built the site and warned: with two workers, every warning three times (README walk-through).
    Reload builds it again, in the supervisor and then in each worker: told once more, by the supervisor."""
    root = make_ca("ops root")
    cert, key = make_leaf(root, ["localhost", "127.0.0.1"]).write(tmp_path, "server")
    served = start(["--cert", str(cert), "--key", str(key), "--host", "127.0.0.1", "--port", "0"], env,
                   cwd=tmp_path, dev=False, workers=2)
    try:
        served.cacert = write_pem(tmp_path / "ca.pem", [root])
        for _ in range(4):
            assert served.fetch(f"/{cert.name}")[0] == 200  # a worker served (and had started)
        warned = re.escape(f"{key.name} is under the static root")
        served.wait_log(warned)
        served.signal(signal.SIGHUP)
        served.wait_log(r"reloaded")
        time.sleep(1)  # the workers reload after the supervisor
        assert sum(bool(re.search(warned, line)) for line in served.log) == 2, "".join(served.log)
    finally:
        served.stop()


def test_a_certbot_style_renewal_is_picked_up(tmp_path: Path, env: dict[str, str]) -> None:
    """certbot renews by writing archive/cert2.pem and pointing live/ symlinks at it: the files watched were the
    resolved archive/ targets, which never change, so the old certificate stayed until SIGHUP."""
    root = make_ca("renewal root")
    archive, live = tmp_path / "archive", tmp_path / "live"
    archive.mkdir()
    live.mkdir()
    for n, name in ((1, "first.example"), (2, "second.example")):
        cert, key = make_leaf(root, ["localhost", "127.0.0.1", name]).write(archive, f"v{n}")
        (archive / f"fullchain{n}.pem").write_bytes(cert.read_bytes())
        (archive / f"privkey{n}.pem").write_bytes(key.read_bytes())
    (live / "fullchain.pem").symlink_to("../archive/fullchain1.pem")
    (live / "privkey.pem").symlink_to("../archive/privkey1.pem")
    (tmp_path / "www").mkdir()
    served = start([str(tmp_path / "www"), "--cert", str(live / "fullchain.pem"), "--key", str(live / "privkey.pem"),
                    "--host", "127.0.0.1", "--port", "0"], env, dev=False)
    ctx = ssl.create_default_context(cafile=str(write_pem(tmp_path / "ca.pem", [root])))

    def served_names() -> list[str]:
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            cert = tls.getpeercert()
        assert isinstance(cert, dict)
        return [value for kind, value in cert["subjectAltName"] if kind == "DNS"]

    try:
        assert "first.example" in served_names()
        for name in ("fullchain", "privkey"):  # as certbot does: a new link renamed over the old one
            (live / f"{name}.new").symlink_to(f"../archive/{name}2.pem")
            (live / f"{name}.new").rename(live / f"{name}.pem")
        deadline = time.monotonic() + 10
        while "second.example" not in served_names():
            assert time.monotonic() < deadline, "the renewed certificate was not picked up"
            time.sleep(0.2)
        line = served.wait_log("reloaded \\(files changed\\)")  # and it says what changed:
        assert re.search(r"; new certificate localhost,second\.example \(serial [0-9A-F]+, expires 20\d\d-\d\d-\d\d\); "
                         r"certificate localhost,first\.example \(serial [0-9A-F]+, expires [0-9-]+\) removed$",
                         line.strip()), line
    finally:
        served.stop()


def test_a_reload_reaches_keep_alive_connections(tmp_path: Path, env: dict[str, str]) -> None:
    """Requests on a connection opened before a SIGHUP are routed by the new configuration (they kept the old
    routes for as long as the client kept the connection busy: up to 1000 requests)."""
    for name in ("www", "docs"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "page.txt").write_text(f"{name}\n")
    path = site_config(tmp_path, '[[route]]\nroot = "www"\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0"], env)
    try:
        kept = http.client.HTTPSConnection("127.0.0.1", served.port, context=served.context(), timeout=10)
        kept.request("GET", "/docs/page.txt")
        assert kept.getresponse().read() and kept.sock is not None
        sock = kept.sock
        path.write_text('[[route]]\npath = "/docs/"\nroot = "docs"\n\n[[route]]\nroot = "www"\n')
        served.signal(signal.SIGHUP)
        served.wait_log(r"reloaded \(SIGHUP\): 1 certificate\(s\), 2 route\(s\); routes$")
        kept.request("GET", "/docs/page.txt")
        response = kept.getresponse()
        assert (response.status, response.read()) == (200, b"docs\n") and kept.sock is sock
        kept.close()
    finally:
        served.stop()


def test_listen_backlog_is_the_configured_one(tmp_path: Path, env: dict[str, str]) -> None:
    """asyncio listened again with its default of 100: `backlog = 777` never took effect (ss shows it)."""
    ss = shutil.which("ss")
    assert ss is not None, "ss (iproute2) is needed"
    (tmp_path / "www").mkdir()
    path = site_config(tmp_path, '[[listen]]\naddress = "127.0.0.1"\nport = 0\nbacklog = 777\n\n'
                                 '[[route]]\nroot = "www"\n')
    served = start(["--config", str(path)], env)
    try:
        out = subprocess.run([ss, "-ltnH", f"sport = :{served.port}"], capture_output=True, text=True,
                             check=True).stdout
        assert out.split()[2] == "777", out  # State Recv-Q Send-Q(= backlog) ...
    finally:
        served.stop()


def test_workers_refuse_new_connections_while_draining(tmp_path: Path, env: dict[str, str], upstream: int) -> None:
    """With --workers the supervisor kept its copy of the listening socket open until every worker had exited:
    a new client was accepted by the kernel, then hung and was reset (nginx, and one worker, refuse it)."""
    served = start(["--proxy", f"http://127.0.0.1:{upstream}", "--host", "127.0.0.1", "--port", "0"], env, workers=2)
    done: list[int] = []

    def slow() -> None:
        with contextlib.suppress(OSError):  # on a loaded machine it may still be queued when the drain starts
            done.append(served.fetch("/slow")[0])

    seen = EchoUpstream.slow_arrivals
    thread = threading.Thread(target=slow)
    thread.start()
    EchoUpstream.wait_slow(seen)
    served.signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()
    thread.join(timeout=10)
    assert served.process.wait(timeout=15) == 0


def test_a_request_half_received_at_sigterm_is_answered(tmp_path: Path, env: dict[str, str]) -> None:
    """The connection counted as idle until its whole head was read, so the drain closed it under a client
    that had begun a request (README: SIGTERM lets requests finish)."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("still here\n")
    served = start([str(tmp_path / "www"), "--host", "127.0.0.1", "--port", "0"], env)
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw, \
            served.context().wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /index.html HTTP/1.1\r\nHost: loc")
        time.sleep(0.3)
        served.signal(signal.SIGTERM)
        time.sleep(0.3)
        tls.sendall(b"alhost\r\n\r\n")
        answer = b""
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            while chunk := tls.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"still here\n"), answer
    assert b"connection: close" in answer.lower()
    assert served.process.wait(timeout=10) == 0


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path, env: dict[str, str]) -> None:
    """kill -9 of the supervisor left its workers serving, holding the port (a restart then failed with
    "Address already in use"); they now drain and exit (PR_SET_PDEATHSIG)."""
    (tmp_path / "www").mkdir()
    (tmp_path / "tmp").mkdir()
    env = {**env, "TMPDIR": str(tmp_path / "tmp")}
    args = [str(tmp_path / "www"), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"]
    served = start(args, env, workers=2)
    children = [int(pid) for pid in Path(f"/proc/{served.process.pid}/task/{served.process.pid}/children")
                .read_text().split()]
    assert len(children) == 2
    served.process.kill()
    served.process.wait(timeout=5)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid) for pid in children):
        assert time.monotonic() < deadline, "workers outlived their supervisor"
        time.sleep(0.1)
    with socket.create_server(("127.0.0.1", served.port)):  # the port is free again
        pass
    # its metrics directory was left behind; the next supervisor removes it (its lock is free), and keeps one
    # whose lock is held though its pid is no process here (a supervisor in another PID namespace sharing
    # /tmp: the review saw its workers drop connections) and one without a lock (not ours to judge)
    left = list((tmp_path / "tmp").glob(f"tlskit-metrics-{served.process.pid}-*"))
    assert len(left) == 1
    import fcntl

    live = tmp_path / "tmp" / "tlskit-metrics-99999999999-other"
    live.mkdir()
    lock = os.open(live / ".supervisor.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    unknown = tmp_path / "tmp" / "tlskit-metrics-\u00b2-old"
    unknown.mkdir()
    try:
        again = start(args, env, workers=2)
        try:
            assert not left[0].exists()
            assert live.is_dir() and unknown.is_dir()
            assert list((tmp_path / "tmp").glob(f"tlskit-metrics-{again.process.pid}-*"))
        finally:
            again.stop()
    finally:
        os.close(lock)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_every_listener_is_announced_and_restart_only_changes_are_named(tmp_path: Path, env: dict[str, str]) -> None:
    """Each socket was announced under the first [[listen]]'s address (127.0.0.1 twice for 127.0.0.1 + ::1); a
    reload that changes what only a restart applies said nothing (workers, [metrics], log_json)."""
    if not v6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    (tmp_path / "www").mkdir()
    text = ('[[listen]]\naddress = "127.0.0.1"\nport = 0\n\n[[listen]]\naddress = "::1"\nport = 0\n\n'
            '[[route]]\nroot = "www"\n')
    path = site_config(tmp_path, text)
    served = start(["--config", str(path)], env)
    try:
        first = served.stdout[0]
        assert "https://127.0.0.1:" in first and "https://[::1]:" in first, first
        path.write_text('[server]\nlog_json = true\n\n' + text)
        served.signal(signal.SIGHUP)
        served.wait_log(r"changes to log_json take effect after a restart")
    finally:
        served.stop()


def test_a_reload_cannot_split_0rtt_state_across_running_workers(tmp_path: Path, env: dict[str, str]) -> None:
    """With the default workers (one per core), a reload that turned on early_data without Redis was applied:
    each worker then kept its own replay set, and a replayed 0-RTT request was accepted by the other worker."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: the default is one worker")
    (tmp_path / "www").mkdir()
    path = site_config(tmp_path, '[[route]]\nroot = "www"\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0"], env, workers=0)
    try:
        children = _children(served.process.pid)
        assert len(children) >= 2
        path.write_text('[tls]\nearly_data = true\n\n[[route]]\nroot = "www"\n')
        served.signal(signal.SIGHUP)
        served.wait_log(r"reload \(SIGHUP\) refused, workers keep the previous configuration: early_data")
        assert _children(served.process.pid) == children
    finally:
        served.stop()


def test_unreadable_requests_are_answered_logged_and_counted(tmp_path: Path, env: dict[str, str]) -> None:
    """What nginx does with requests it cannot serve: 400 for garbage, 501 for an unknown transfer coding, 505 for
    another HTTP version, each in the access log (with the request line as far as it came) and in the metrics;
    empty lines before a request line are skipped (RFC 9112 §2.2)."""
    (tmp_path / "index.html").write_text("i\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--metrics-port", str(metrics_port)], env)
    try:
        assert raw_exchange(served, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request\r\n")
        served.wait_log(r'"GARBAGE" 400 ')
        answer = raw_exchange(served, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
        served.wait_log(r'"POST / HTTP/1\.1" 501 ')
        answer = raw_exchange(served, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
        answer = raw_exchange(served, b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\ni\n")
        # an empty line after a body, in the same read (old clients): skipped too; HTTP/1.2 is served as 1.1
        answer = raw_exchange(served, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody\r\n"
                                       b"GET / HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 405 ") and answer.count(b"HTTP/1.1 ") == 2
        assert b"HTTP/1.1 200 " in answer and answer.endswith(b"\r\n\r\ni\n")
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        for status, count in (("400", 1), ("501", 1), ("505", 1), ("200", 2), ("405", 1)):
            assert f'tlskit_http_requests_total{{code="{status}"}} {count}.0' in text, status
    finally:
        served.stop()


def test_limits_give_408_413_431(tmp_path: Path, env: dict[str, str], upstream: int) -> None:
    path = site_config(tmp_path, f'[http]\nheader_timeout = 0.5\nmax_header_bytes = 2048\nmax_body_bytes = 100\n'
                            f'idle_timeout = 1\n\n[[route]]\nproxy = "http://127.0.0.1:{upstream}"\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0"], env)
    ctx = served.context()
    try:
        assert served.fetch("/", method="POST", data=b"x" * 101)[0] == 413
        assert served.fetch("/", headers={"x-big": "y" * 4000})[0] == 431
        with socket.create_connection(("127.0.0.1", served.port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
            started = time.monotonic()
            reply = tls.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", served.port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            started = time.monotonic()
            assert tls.recv(4096) == b""  # idle: closed without a word after idle_timeout
            assert 0.8 < time.monotonic() - started < 3
    finally:
        served.stop()


def test_metrics_endpoint_counts_handshakes_failures_and_connections(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "index.html").write_text("m\n")
    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"], env)
    try:
        assert served.metrics_port is not None
        conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=served.context(), timeout=10)
        conn.request("GET", "/")
        conn.getresponse().read()  # kept open: one active connection
        with pytest.raises(ssl.SSLError):
            socket_ = socket.create_connection(("127.0.0.1", served.port))
            ssl.create_default_context().wrap_socket(socket_, server_hostname="127.0.0.1")  # unknown_ca
        served.wait_log("failed: peer sent alert unknown_ca")
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as plain:  # http:// to the TLS port
            plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            while plain.recv(4096):
                pass
        served.wait_log(r'"GET / HTTP/1\.1" 400 ')
        text = urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10).read().decode()
        assert 'tlskit_tls_handshake_failures_total{reason="plain_http"} 1.0' in text  # not unexpected_message
        assert 'tlskit_http_requests_total{code="400"} 1.0' in text
        assert re.search(r'tlskit_tls_handshakes_total\{cipher_suite="TLS_AES_256_GCM_SHA384",early_data="false",'
                         r'group="x25519",resumed="false",version="TLSv1.3"\} 1\.0', text), text
        assert 'tlskit_tls_handshake_failures_total{reason="remote_unknown_ca"} 1.0' in text
        assert "tlskit_active_connections 1.0" in text
        assert re.search(r"tlskit_tls_handshake_duration_seconds_count 1\.0", text)
        assert 'tlskit_http_requests_total{code="200"} 1.0' in text
        conn.close()
    finally:
        served.stop()


def test_the_open_file_limit_is_raised_to_the_hard_limit(tmp_path: Path, env: dict[str, str]) -> None:
    """A soft limit of 64 descriptors (1024 is common) would close connections past it at once, silently."""
    import resource

    (tmp_path / "index.html").write_text("f\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard == resource.RLIM_INFINITY or hard > 64
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))  # inherited by the server
    try:
        served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0"], env)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        limits = Path(f"/proc/{served.process.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        expected = "1048576" if hard == resource.RLIM_INFINITY else str(min(hard, 1 << 20))
        assert line.split()[3] == expected, line
        assert served.fetch("/")[0] == 200
    finally:
        served.stop()


def test_idle_keep_alive_connections_are_closed_without_waiting_for_the_client(tmp_path: Path,
                                                                              env: dict[str, str]) -> None:
    """At the idle timeout the server sends close_notify and closes, as nginx at keepalive_timeout: it half-closed
    and held each connection's descriptor up to 30 s more, waiting for a client that need never close."""
    (tmp_path / "index.html").write_text("i\n")
    path = site_config(tmp_path, '[[route]]\nroot = "."\n\n[http]\nidle_timeout = 0.5\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0"], env, cwd=tmp_path)
    fds = Path(f"/proc/{served.process.pid}/fd")
    try:
        baseline = len(list(fds.iterdir()))
        clients = []
        for _ in range(5):
            conn = http.client.HTTPSConnection("127.0.0.1", served.port, context=served.context(), timeout=10)
            conn.request("GET", "/index.html")
            assert conn.getresponse().read() == b"i\n"
            clients.append(conn)  # kept open, and never closed by us while the server times it out
        assert len(list(fds.iterdir())) >= baseline + 5
        deadline = time.monotonic() + 5
        while len(list(fds.iterdir())) > baseline:
            assert time.monotonic() < deadline, f"{len(list(fds.iterdir()))} descriptors, {baseline} before"
            time.sleep(0.1)
        assert clients[0].sock is not None and clients[0].sock.recv(10) == b""  # close_notify, then EOF
        for conn in clients:
            conn.close()
        # ... but not while the last response is still on its way: a client that reads slowly and then sends
        # its next request into the closed socket would make the kernel reset it and drop the rest (review)
        (tmp_path / "mid.bin").write_bytes(os.urandom(200 * 1024))
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        raw.connect(("127.0.0.1", served.port))
        with served.context().wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /mid.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            time.sleep(1.6)  # past the idle timeout, most of the response unread
            tls.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
            got = b""
            with contextlib.suppress(OSError):
                while data := tls.recv(65536):
                    got += data
        body = got.partition(b"\r\n\r\n")[2]
        assert body[:200 * 1024] == (tmp_path / "mid.bin").read_bytes(), len(body)
    finally:
        served.stop()


def test_a_slow_but_steady_reader_is_not_cut_off_at_the_send_timeout(tmp_path: Path, env: dict[str, str]) -> None:
    """send_timeout (= idle_timeout) counts time without progress, not the time until asyncio resumes writing,
    which waits for the kernel to free a third of a send buffer of megabytes: curl --limit-rate 2M of an 8 MB
    file was cut off under a 1 s timeout (found by the review). The reader here takes 16 KiB every 16 ms (about
    1 MB/s): curl --limit-rate reads in bursts and then sleeps, at times longer than the timeout, when any server
    (nginx's send_timeout too) may rightly cut it off."""
    (tmp_path / "big.bin").write_bytes(os.urandom(6 << 20))
    path = site_config(tmp_path, '[[route]]\nroot = "."\n\n[http]\nidle_timeout = 1\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0"], env, cwd=tmp_path)
    try:
        got = bytearray()
        with served.context().wrap_socket(socket.create_connection(("127.0.0.1", served.port), timeout=10),
                                          server_hostname="localhost") as tls:
            tls.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            with contextlib.suppress(ssl.SSLEOFError):  # unexpected EOF: the server cut the connection off
                while chunk := tls.recv(16384):
                    got += chunk
                    time.sleep(0.016)
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and len(body) == 6 << 20, (head[:40], len(body))
        assert body == (tmp_path / "big.bin").read_bytes()
    finally:
        served.stop()


def test_tcp_health_checks_are_not_counted_or_logged_as_failed_handshakes(tmp_path: Path,
                                                                           env: dict[str, str]) -> None:
    """A connect-and-close (a load balancer's TCP check) is ``closed_before_hello``, not ``eof``, and is not an
    INFO line; a client that hangs up part-way through its ClientHello still is both."""
    (tmp_path / "index.html").write_text("h\n")
    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"], env)
    try:
        assert served.metrics_port is not None
        for _ in range(3):
            socket.create_connection(("127.0.0.1", served.port), timeout=5).close()
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as partial:
            partial.sendall(bytes.fromhex("160301020001"))  # the start of a ClientHello record, then gone
        served.wait_log(r"failed: .*(closed|EOF|eof)")
        assert served.fetch("/")[0] == 200  # after the probes: they were handled (and counted) before it
        text = urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10).read().decode()
        assert 'tlskit_tls_handshake_failures_total{reason="closed_before_hello"} 3.0' in text, text
        assert 'tlskit_tls_handshake_failures_total{reason="eof"} 1.0' in text, text
        assert len([line for line in served.log if "TLS handshake with" in line]) == 1, served.log
    finally:
        served.stop()


def test_json_log_lines(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "index.html").write_text("j\n")
    served = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--log-json"], env)
    try:
        assert served.fetch("/", headers={"user-agent": "json-test"})[0] == 200
        served.wait_log("json-test")
    finally:
        served.stop()
    records = json_lines(served.log)
    access = next(r for r in records if r.get("user_agent") == "json-test")
    assert access["status"] == 200 and access["method"] == "GET" and access["logger"] == "tlskit.access"
    tls = access["tls"]
    assert isinstance(tls, dict) and tls["version"] == "TLSv1.3" and tls["group"] == "x25519"
    assert any(r.get("message", "").startswith("shutting down") for r in records)  # type: ignore[union-attr]
    assert {type(r["time"]) for r in records} == {str}  # the same type for a key in every line (log pipelines)


def _leaf_serial(served: Served) -> int:
    with socket.create_connection(("127.0.0.1", served.port)) as raw, \
            served.context().wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_reload_keeps_old_certificate_on_error_and_swaps_valid_one_without_dropping(
        tmp_path: Path, env: dict[str, str]) -> None:
    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("r\n")
    first = make_leaf(ca, ["localhost"])
    cert, key = first.write(tmp_path, "site")
    path = site_config(tmp_path, f'[server]\ncert_poll_interval = 0.2\n[[certificate]]\ncert = "{cert}"\n'
                                 f'key = "{key}"\n[[route]]\nroot = "www"\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0"], env, dev=False)
    served.cacert = tmp_path / "ca.pem"
    try:
        old = _leaf_serial(served)
        assert old == first.cert.serial_number
        kept = http.client.HTTPSConnection("localhost", served.port, context=served.context(), timeout=10)
        kept.request("GET", "/")
        assert kept.getresponse().read() == b"r\n"

        cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
        served.signal(signal.SIGHUP)
        served.wait_log(r"reload \(SIGHUP\) failed, still serving the previous configuration: .*site\.pem")
        assert _leaf_serial(served) == old

        second = make_leaf(ca, ["localhost"])
        mark = len(served.log)
        second.write(tmp_path, "site")  # picked up by the mtime poll, no signal
        served.wait_log(r"reloaded \(files changed\)", after=mark)
        assert _leaf_serial(served) == second.cert.serial_number
        kept.request("GET", "/")  # the connection opened before the reload still works
        assert kept.getresponse().read() == b"r\n"
        kept.close()
    finally:
        served.stop()


def test_sigterm_drains_requests_in_flight(tmp_path: Path, env: dict[str, str], upstream: int) -> None:
    served = start(["--proxy", f"http://127.0.0.1:{upstream}", "--host", "127.0.0.1", "--port", "0"], env)
    result: dict[str, object] = {}

    def slow() -> None:
        result["response"] = served.fetch("/slow")

    idle = http.client.HTTPSConnection("127.0.0.1", served.port, context=served.context(), timeout=10)
    idle.request("GET", "/")
    idle.getresponse().read()
    seen = EchoUpstream.slow_arrivals
    thread = threading.Thread(target=slow)
    thread.start()
    EchoUpstream.wait_slow(seen)  # the slow request is now at the upstream
    served.signal(signal.SIGTERM)
    time.sleep(0.2)
    served.signal(signal.SIGHUP)  # e.g. a certbot deploy hook: it killed the draining process (status 129)
    thread.join(timeout=10)
    assert served.process.wait(timeout=10) == 0
    response = result["response"]
    assert isinstance(response, tuple) and response[0] == 200 and json.loads(response[2])["path"] == "/slow"
    assert served.wait_log(r"shutting down: no new connections; 2 open")
    assert served.wait_log(r"SIGHUP ignored: shutting down")
    with pytest.raises(ConnectionError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()


def test_a_second_stop_signal_ends_the_drain_at_once(tmp_path: Path, env: dict[str, str], upstream: int) -> None:
    """Ctrl-C twice: the busy connections are closed and the server exits 0 (it was KeyboardInterrupt's
    traceback and status 130, or -15 for a second SIGTERM)."""
    served = start(["--proxy", f"http://127.0.0.1:{upstream}", "--host", "127.0.0.1", "--port", "0"], env)
    def slow() -> None:
        with contextlib.suppress(OSError):  # cut off by the second signal
            served.fetch("/slow")

    seen = EchoUpstream.slow_arrivals
    thread = threading.Thread(target=slow)
    thread.start()
    EchoUpstream.wait_slow(seen)
    began = time.monotonic()
    served.signal(signal.SIGINT)
    time.sleep(0.1)
    served.signal(signal.SIGINT)
    assert served.process.wait(timeout=10) == 0 and time.monotonic() - began < 5
    thread.join(timeout=10)
    assert served.wait_log(r"second stop signal: closing 1 connection") and not any("Traceback" in line
                                                                                  for line in served.log)


def test_workers_share_the_port_and_reload_validates_first(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("w\n")
    path = site_config(tmp_path, '[[route]]\nroot = "www"\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"], env,
                   workers=2)
    try:
        assert "Workers: 2 processes sharing the listening sockets" in "".join(served.stdout)
        children = _children(served.process.pid)
        assert len(children) == 2
        for _ in range(6):
            assert served.fetch("/")[2] == b"w\n"
        ctx = served.context()
        session = _request(served, ctx, None)[0]
        assert all(_request(served, ctx, session)[1] for _ in range(6))  # one ticket key shared by the workers
        text = urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10).read().decode()
        assert re.search(r'tlskit_http_requests_total\{code="200"\} 13\.0', text), text  # summed over workers
        assert re.search(r'tlskit_tls_handshakes_total\{[^}]*resumed="true"[^}]*\} 6\.0', text), text
        path.write_text('[[route]]\nroot = "nowhere"\n')
        served.signal(signal.SIGHUP)
        served.wait_log("reload \\(SIGHUP\\) failed, workers keep the previous configuration: .*site.toml:2")
        assert served.fetch("/")[2] == b"w\n" and _children(served.process.pid) == children
        text = urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/metrics", timeout=10).read().decode()
        assert 'tlskit_config_reloads_total{result="failed"} 1.0' in text, text  # counted once, by the supervisor
        # A worker killed now is replaced by one running the configuration the supervisor runs (it read the
        # broken file, exited with status 2 and was started again every 0.5 s: a fork loop, one worker short)
        os.kill(children[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while len(_children(served.process.pid)) < 2 or served.fetch("/")[2] != b"w\n":
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.2)
        time.sleep(2.5)  # long enough for a replacement that reads the broken file to have failed
        assert not [line for line in served.log if "exited with status 2" in line]
        assert len(_children(served.process.pid)) == 2 and served.fetch("/")[2] == b"w\n"
        children = _children(served.process.pid)
    finally:
        assert served.stop() == 0
    assert not any(Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid) for pid in children)


def test_a_sighup_right_after_start_reaches_workers_and_kills_none(tmp_path: Path, env: dict[str, str]) -> None:
    """Until a worker's loop handled SIGHUP, its default action killed it: a reload right after start (or while a
    worker was being replaced: a certbot hook) left the port without workers for a second. A reload with a Redis
    URL redis-py cannot use stopped the whole supervisor with a traceback."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("w\n")
    path = site_config(tmp_path, '[[route]]\nroot = "www"\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0"], env, workers=2)
    try:
        served.signal(signal.SIGHUP)
        served.wait_log(r"reload \(SIGHUP\): configuration valid, passed to 2 workers; no change$")
        time.sleep(1.5)
        assert not [line for line in served.log if "exited with status" in line], "".join(served.log)
        assert served.fetch("/")[2] == b"w\n"
        path.write_text('[[route]]\nroot = "www"\n[tls]\nredis = "redis://127.0.0.1:6379/0?foo=bar"\n')
        served.signal(signal.SIGHUP)
        line = served.wait_log(r"reload \(SIGHUP\) failed, workers keep the previous configuration: .*site.toml:4")
        assert "foo" in line and served.process.poll() is None and served.fetch("/")[2] == b"w\n"
        assert not [line for line in served.log if "Traceback" in line]
    finally:
        assert served.stop() == 0


def _request(served: Served, ctx: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[ssl.SSLSession | None, bool]:
    """One request on a new connection, resuming ``session``: (the session to resume next, whether resumed)."""
    with socket.create_connection(("127.0.0.1", served.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while tls.recv(4096):
            pass
        return tls.session, tls.session_reused


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_reuse_port_lets_two_servers_share_a_port(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "index.html").write_text("p\n")
    one = start([str(tmp_path), "--host", "127.0.0.1", "--port", "0", "--reuse-port"], env)
    try:
        two = start([str(tmp_path), "--host", "127.0.0.1", "--port", str(one.port), "--reuse-port"], env)
        two.stop()
    finally:
        one.stop()


def test_a_burst_of_sighups_neither_hangs_the_supervisor_nor_queues_a_reload_each(tmp_path: Path,
                                                                                  env: dict[str, str]) -> None:
    """The supervisor's signal handler set a threading.Event: a SIGHUP arriving while the main thread held the
    Event's lock deadlocked it for good (no reload, and SIGTERM no longer stopped it). Each SIGHUP also queued
    its own reload."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("w\n")
    path = site_config(tmp_path, '[[route]]\nroot = "www"\n')
    served = start(["--config", str(path), "--host", "127.0.0.1", "--port", "0"], env, workers=2)
    try:
        time.sleep(0.5)  # the workers handle SIGHUP
        for _ in range(4):
            for _ in range(3000):
                served.signal(signal.SIGHUP)
            time.sleep(0.1)
        served.wait_log(r"reload \(SIGHUP\): configuration valid")
        time.sleep(1)
        reloads = len([line for line in served.log if "reload (SIGHUP)" in line])
        assert reloads < 50, reloads
        assert served.fetch("/")[2] == b"w\n"
    finally:
        assert served.stop() == 0, "".join(served.log[-20:])


def test_a_client_cannot_forge_log_lines_through_its_sni(tmp_path: Path, env: dict[str, str]) -> None:
    """openssl sends an SNI as given: with a newline it wrote a second, fake access line (and a raw ESC) into the
    text log; a handshake it failed put one into the error lines (same stream). nginx writes ``\\x0A``."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl is installed by .ci/run"
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("w\n")
    served = start([str(tmp_path / "www"), "--host", "127.0.0.1", "--port", "0"], env)
    forged = '1.2.3.4 - - [27/Nov/2026:00:00:00 +0000] "GET /forged HTTP/1.1" 200 1'
    try:
        for extra in ([], ["-ciphersuites", "TLS_AES_128_CCM_SHA256"]):  # answered, then refused
            subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{served.port}", "-servername",
                            f"evil\n{forged}\x1b[31m", "-quiet", "-ign_eof", *extra],
                           input=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                           capture_output=True, timeout=20, check=False)
        served.wait_log(r'"GET / HTTP/1\.1" 200 .* sni=evil\\x0a1\.2\.3\.4\\x20-')
        served.wait_log(r"SNI evil\\x0a1\.2\.3\.4 - .*\\x1b\[31m\) failed: handshake_failure")
        assert not [line for line in served.log if line.startswith("1.2.3.4") or "\x1b" in line], served.log
    finally:
        served.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_log_json_makes_every_line_json_from_the_start(tmp_path: Path, env: dict[str, str], workers: int) -> None:
    """Warnings made while the site was built (a key under the static root, Redis unreachable) came before
    logging was set up: bare text lines in a --log-json stream."""
    site = tmp_path / "site"
    site.mkdir()
    root = make_ca("json root")
    cert, key = make_leaf(root, ["localhost", "127.0.0.1"]).write(site, "server")
    (site / "index.html").write_text("hi\n")
    served = start([str(site), "--cert", str(cert), "--key", str(key), "--log-json", "--host", "127.0.0.1",
                    "--port", "0"], env, dev=False, workers=workers)
    try:
        served.cacert = write_pem(tmp_path / "ca.pem", [root])
        assert served.fetch("/")[2] == b"hi\n"
        served.wait_log(r'"status":200')
        warnings = [e for e in json_lines(served.log) if "under the static root" in str(e.get("message"))]
        assert warnings and warnings[0]["level"] == "warning"
        lines = [line for line in served.log if line.strip()]
        assert len(json_lines(lines)) == len(lines), [line for line in lines if not json_lines([line])]
    finally:
        served.stop()


