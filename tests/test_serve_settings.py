"""`tlskit serve` configuration: TOML + flags, errors that name file, line and fix; SNI certificate choice."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.certs import make_ca, make_leaf
from tlskit.enums import CipherSuite, NamedGroup, SignatureScheme
from tlskit.serve.certstore import CertificateStore
from tlskit.serve.settings import CertificateSpec, Flags, ProxyRoute, SettingsError, StaticRoute, load_settings

FULL = """\
[server]
workers = 3
log_json = true
drain_timeout = 5

[[listen]]
address = "127.0.0.1"
port = 9443
reuse_port = true

[[listen]]
address = "::1"
port = 9443

[tls]
alpn = ["http/1.1"]
cipher_suites = ["TLS_CHACHA20_POLY1305_SHA256", "tls_aes_128_gcm_sha256"]
groups = ["X25519MLKEM768", "x25519"]

[[certificate]]
cert = "site.pem"
key = "site.key"
names = ["example.test", "*.example.test"]

[http]
max_header_bytes = 8192
idle_timeout = 30

[[route]]
path = "/"
root = "www"
listing = true

[[route]]
path = "/api/"
proxy = "http://127.0.0.1:8080/v1"
preserve_host = false

[metrics]
port = 9100
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "www").mkdir(exist_ok=True)
    ca = make_ca()
    make_leaf(ca, ["example.test"]).write(tmp_path, "site")
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str, flags: Flags | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(flags or Flags(config=path))
    return str(info.value)


def test_full_config_is_read_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    s = load_settings(Flags(config=write(tmp_path, FULL)))
    assert s.workers == 3 and s.log_json and s.drain_timeout == 5
    assert [(lst.address, lst.port, lst.reuse_port) for lst in s.listeners] == [("127.0.0.1", 9443, True),
                                                                                 ("::1", 9443, False)]
    assert s.cipher_suites == (CipherSuite.TLS_CHACHA20_POLY1305_SHA256, CipherSuite.TLS_AES_128_GCM_SHA256)
    assert s.groups == (NamedGroup.X25519MLKEM768, NamedGroup.x25519)
    assert s.certificates == (CertificateSpec(cert=tmp_path / "site.pem", key=tmp_path / "site.key",
                                              names=("example.test", "*.example.test")),)
    assert s.http.max_header_bytes == 8192 and s.http.idle_timeout == 30 and s.http.header_timeout == 10
    static, proxy = s.routes
    assert isinstance(static, StaticRoute) and static.root == tmp_path / "www" and static.listing
    assert isinstance(proxy, ProxyRoute) and (proxy.upstream_host, proxy.upstream_port, proxy.upstream_path) == (
        "127.0.0.1", 8080, "/v1") and not proxy.preserve_host
    assert s.metrics is not None and (s.metrics.address, s.metrics.port) == ("127.0.0.1", 9100)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    s = load_settings(Flags(config=path, port=0, host="localhost", workers=1, log_json=False,
                            groups=("x25519",), root=tmp_path))
    assert [(lst.address, lst.port) for lst in s.listeners] == [("localhost", 0)]
    assert s.workers == 1 and not s.log_json and s.groups == (NamedGroup.x25519,)
    assert isinstance(s.routes[0], StaticRoute) and s.routes[0].root == tmp_path


def test_port_flag_keeps_every_listener_and_its_settings(tmp_path: Path) -> None:
    """--port moved only the first [[listen]] and rebuilt it with defaults: the second listener vanished and an
    `ipv6_only = false` / `backlog` was lost."""
    path = write(tmp_path, FULL.replace('address = "::1"\nport = 9443\n',
                                        'address = "::"\nport = 9443\nipv6_only = false\nbacklog = 77\n'))
    s = load_settings(Flags(config=path, port=18811))
    assert [(lst.address, lst.port, lst.reuse_port) for lst in s.listeners] == [
        ("127.0.0.1", 18811, True), ("::", 18811, False)]
    assert not s.listeners[1].ipv6_only and s.listeners[1].backlog == 77
    two_ports = write(tmp_path, '[[listen]]\naddress = "127.0.0.1"\nport = 18501\n'
                                '[[listen]]\naddress = "127.0.0.1"\nport = 18502\n'
                                '[[listen]]\naddress = "my_host"\nport = 18503\n')  # getaddrinfo resolves it
    s = load_settings(Flags(config=two_ports, port=18600))  # one address twice on one port: once
    assert [(lst.address, lst.port) for lst in s.listeners] == [("127.0.0.1", 18600), ("my_host", 18600)]


def test_defaults_serve_the_current_directory_post_quantum_first(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(Flags())
    assert s.routes == (StaticRoute(root=tmp_path),) and s.certificates == () and s.metrics is None
    assert s.groups[0] == NamedGroup.X25519MLKEM768
    assert [(lst.address, lst.port) for lst in s.listeners] == [("localhost", 8443)]


@pytest.mark.parametrize(("text", "expected"), [
    ("[server]\nworkers = \n", r"site.toml:2: TOML syntax error, column 11: Invalid value"),
    ("[server]\nworkers = 0\n", "site.toml:2: [server]: 'workers' must be between 1 and 1024, not 0"),
    ('[server]\nworkers = "2"\n', "site.toml:2: [server]: 'workers' must be a whole number, not '2'"),
    ("[server]\n\nworkerz = 2\n", "site.toml:3: [server]: 'workerz' is not a known setting (known here:"),
    ('[[route]]\nroot = "www"\n[[route]]\npath = "/x/"\nroot = "nowhere"\n',
     "site.toml:5: [[route]] #2: 'root' {tmp}/nowhere is not a directory (create it, or point root elsewhere)"),
    ('[[route]]\npath = "/api/"\nproxy = "https://up"\n', "site.toml:3: [[route]] #1: 'proxy' 'https://up' is not"),
    ('[tls]\ngroups = ["x25519", "x448"]\n', "site.toml:2: [tls]: 'groups' 'x448' is not supported; use some of"),
    ('[[certificate]]\ncert = "site.pem"\n', "site.toml:1: [[certificate]] #1: needs 'key' (a path"),
    ('[[certificate]]\ncert = "site.pem"\nkey = "site.key"\nnames = ["a.*.test"]\n',
     "site.toml:4: [[certificate]] #1: 'names' 'a.*.test' is not a usable wildcard"),
    ("[listen]\nport = 1\n", "site.toml:1: top level: 'listen' must be written [[listen]]"),
    ('[[listen]]\naddress = ""\n', "site.toml:2: [[listen]] #1: 'address' is empty"),  # it bound every interface
    ('[[listen]]\naddress = "300.1.1.1"\n', "site.toml:2: [[listen]] #1: 'address' '300.1.1.1' is neither"),
    ('[[listen]]\nport = 9000\n[[listen]]\nport = 9000\n',
     "site.toml:4: [[listen]] #2: 'port' localhost port 9000 is already a [[listen]] above"),
])
def test_bad_config_names_file_line_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    message = error(tmp_path, text)
    assert message.startswith(str(tmp_path / "site.toml").replace("site.toml", "") + expected.format(
        tmp=tmp_path)), message


def test_certificate_and_route_mistakes_name_the_setting(tmp_path: Path) -> None:
    """A chain or key that cannot be used names the [[certificate]] it came from as well as the PEM file; a
    route that could never answer (same path and hosts as an earlier one) and an ALPN protocol we do not speak
    are refused."""
    path = write(tmp_path, '[[route]]\npath = "/"\n\n[[certificate]]\ncert = "site.pem"\nkey = "site.pem"\n')
    with pytest.raises(SettingsError) as info:
        CertificateStore.load(load_settings(Flags(config=path)).certificates)
    assert str(info.value).startswith(f"{path}:4: [[certificate]] #1: {tmp_path / 'site.pem'}: "), info.value
    message = error(tmp_path, '[[route]]\npath = "/a/"\n\n[[route]]\npath = "/a/"\n')
    assert message.startswith(f"{tmp_path / 'site.toml'}:5: [[route]] #2: 'path' '/a/' is already the path"), message
    # the same path for other hosts is no duplicate
    other_hosts = '[[route]]\npath = "/a/"\nhosts = ["x.test"]\n\n[[route]]\npath = "/a/"\n'
    assert len(load_settings(Flags(config=write(tmp_path, other_hosts))).routes) == 2
    tilde = '[[route]]\npath = "/%7Euser/"\nhosts = ["::1", "A.test"]\n'
    routes = load_settings(Flags(config=write(tmp_path, tilde))).routes
    assert (routes[0].prefix, routes[0].hosts) == ("/~user/", ("[::1]", "a.test"))  # matched as requests are
    message = error(tmp_path, '[tls]\nalpn = ["h3"]\n')
    assert message.startswith(f"{tmp_path / 'site.toml'}:2: [tls]: 'alpn' 'h3' is not served here"), message


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nidle_timeout = "long"\n')
    result = subprocess.run([sys.executable, "-m", "tlskit", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == (f"tlskit serve: error: {path}:2: [http]: 'idle_timeout' must be a number of seconds, "
                             "not 'long'\n")


def test_sni_picks_exact_then_wildcard_then_default_and_rsa_or_ecdsa_by_sigalgs(tmp_path: Path) -> None:
    ca = make_ca()
    a = make_leaf(ca, ["a.test"]).write(tmp_path, "a")
    wild_ec = make_leaf(ca, ["*.b.test"]).write(tmp_path, "b-ec")
    wild_rsa = make_leaf(ca, ["*.b.test"], key_type="rsa2048").write(tmp_path, "b-rsa")
    store = CertificateStore.load([CertificateSpec(cert=c, key=k) for c, k in (a, wild_ec, wild_rsa)])
    ecdsa, pss = [SignatureScheme.ecdsa_secp256r1_sha256], [SignatureScheme.rsa_pss_rsae_sha256]

    def leaf_names(name: str | None, schemes: list[SignatureScheme]) -> tuple[str, str]:
        ck = store.resolve(name, schemes)
        assert ck is not None
        return ck.leaf.subject.rfc4514_string(), type(ck.private_key).__name__

    assert leaf_names("a.test", ecdsa)[0] == leaf_names(None, ecdsa)[0]  # a.test is also the default
    assert "EC" in leaf_names("x.b.test", ecdsa)[1]
    assert "RSA" in leaf_names("X.B.TEST.", pss)[1]  # case and trailing dot do not matter
    assert leaf_names("deep.x.b.test", ecdsa) == leaf_names(None, ecdsa)  # a wildcard covers one label
    assert "RSA" in leaf_names("unknown.test", pss)[1]  # the default set has an RSA partner too


# ------------------------------------------------------------- tickets, 0-RTT, Redis, stapling, mTLS (issues 4, 5)


def test_ticket_early_data_stapling_and_mtls_settings_from_file_and_flags(tmp_path: Path) -> None:
    (tmp_path / "a.key").write_bytes(bytes(80))
    (tmp_path / "clients.pem").write_bytes(make_ca().pem)
    path = write(tmp_path, '[tls]\nticket_rotate = "1h"\nearly_data = true\nmax_early_data_size = 4096\n')
    s = load_settings(Flags(config=path))
    assert (s.ticket_rotate, s.early_data, s.max_early_data_size, s.workers) == (3600.0, True, 4096, 1)
    assert s.stapling and s.session_tickets and s.verify_client == "none"
    s = load_settings(Flags(config=path, ticket_rotate=None, redis="redis://127.0.0.1:6390/0", workers=4))
    assert s.redis == "redis://127.0.0.1:6390/0" and s.workers == 4  # the replay set is shared: any worker count
    s = load_settings(Flags(ticket_keys=(tmp_path / "a.key",), root=tmp_path))
    assert s.ticket_key_files == ((tmp_path / "a.key").resolve(),)
    s = load_settings(Flags(client_ca=tmp_path / "clients.pem", allow_spiffe=("spiffe://c.test/ns/*/sa/web",),
                            root=tmp_path))
    assert (s.verify_client, s.session_tickets) == ("required", True)  # tickets carry the client's chain
    s = load_settings(Flags(client_ca=tmp_path / "clients.pem", verify_client="optional", early_data=True,
                            ticket_rotate=3600.0, root=tmp_path))
    assert (s.verify_client, s.session_tickets, s.early_data, s.ticket_rotate) == ("optional", True, True, 3600.0)
    s = load_settings(Flags(client_ca=tmp_path / "clients.pem", redis="redis://127.0.0.1:6390/0", early_data=True,
                            workers=2, root=tmp_path))
    assert (s.verify_client, s.redis, s.early_data, s.workers) == ("required", "redis://127.0.0.1:6390/0", True, 2)


@pytest.mark.parametrize(("flags", "expected"), [
    (Flags(ticket_keys=(Path("a.key"),), ticket_rotate=3600.0), "--ticket-rotate: ticket key files are rotated "
     "outside the server (`tlskit stek rotate`); --ticket-rotate makes its own keys: give one or the other"),
    (Flags(ticket_rotate=7200.0), "--ticket-rotate: ticket key rotation every 7200s is not shorter than the ticket "
     "lifetime 7200s: rotate more often or issue longer-lived tickets"),
    (Flags(ticket_rotate=600.0), "--ticket-rotate: ticket key rotation every 600s: choose 3600..86400"),
    (Flags(early_data=True, workers=4), "--workers 4: --early-data keeps its state in each process, so with 4 "
     "workers a replayed 0-RTT request could be accepted once per worker; share it through --redis URL"),
    (Flags(ticket_rotate=3600.0, workers=2), "--workers 2: --ticket-rotate makes keys in each process"),
    (Flags(verify_client="required"), "--verify-client: needs the CAs that issue client certificates"),
    (Flags(client_ca=Path("clients.pem"), allow_spiffe=("spiffe://bad domain/x",)), "--allow-spiffe: SPIFFE "
     "pattern 'spiffe://bad domain/x' must look like"),
    (Flags(staple_file=Path("a.key"), stapling=False), "--staple-file: staples, so it cannot go with stapling"),
    (Flags(redis="http://127.0.0.1:6379"), "--redis: 'http://127.0.0.1:6379' is not a Redis URL"),
])
def test_ticket_and_mtls_flags_that_cannot_work_are_one_line_errors(tmp_path: Path, flags: Flags,
                                                                    expected: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.key").write_bytes(bytes(80))
    (tmp_path / "clients.pem").write_bytes(make_ca().pem)
    with pytest.raises(SettingsError) as info:
        load_settings(flags)
    assert str(info.value).startswith(expected), str(info.value)


def test_ticket_settings_errors_in_the_file_name_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, '[server]\nworkers = 2\n\n[tls]\nearly_data = true\n')
    assert message.endswith("site.toml:2: [server]: 'workers' is 2, but --early-data keeps its state in each "
                            "process, so with 2 workers a replayed 0-RTT request could be accepted once per worker; "
                            "share it through --redis URL, or run one worker"), message
    message = error(tmp_path, '[tls]\nsession_tickets = false\nticket_rotate = "1h"\n')
    assert message.endswith("site.toml:3: [tls]: 'ticket_rotate' needs session tickets, but [tls] session_tickets "
                            "is false"), message
    message = error(tmp_path, '[tls]\nticket_rotate = "soon"\n')
    assert message.endswith("site.toml:2: [tls]: 'ticket_rotate' 'soon' is not a duration (e.g. \"1h\", \"90m\", "
                            "3600)"), message


def test_localhost_listens_on_both_loopback_addresses() -> None:
    """RFC 6761 §6.3: "localhost" is 127.0.0.1 and ::1 whatever /etc/hosts says (Debian's often lacks ::1, and
    the zero-config server then refused https://[::1]:8443/ and curl -6)."""
    import socket

    from tests.served import v6_loopback
    from tlskit.serve.listeners import bind
    from tlskit.serve.settings import Listener

    sockets = bind([Listener(address="localhost", port=0)])
    try:
        hosts = {sock.getsockname()[0] for sock in sockets}
        assert "127.0.0.1" in hosts
        if socket.has_ipv6 and v6_loopback():
            assert "::1" in hosts and len({sock.getsockname()[1] for sock in sockets}) == 1
    finally:
        for sock in sockets:
            sock.close()



@pytest.mark.parametrize(("text", "expected"), [
    ('[tls]\nredis = "redis://127.0.0.1:6379/0?foo=bar"\n',
     r"site.toml:2: \[tls\]: 'redis' 'redis://127.0.0.1:6379/0\?foo=bar': .*unexpected keyword argument 'foo'"),
    ('[tls]\nredis = "redis://127.0.0.1:abc"\n', r"site.toml:2: \[tls\]: 'redis' .*Port could not be cast"),
    ('[tls]\nredis = "redis://:s3cret@127.0.0.1:abc/0"\n',  # the password is not repeated in logs and terminals
     r"^(?!.*s3cret).*site.toml:2: \[tls\]: 'redis' 'redis://:\*\*\*@127.0.0.1:abc/0'.*Port could not be cast"),
    ('[tls]\nstapling = false\nstaple_file = "site.pem"\n',
     r"site.toml:3: \[tls\]: 'staple_file' staples, so it cannot go with stapling turned off"),
    ('[server]\nktls = "yes"\n', r"site.toml:2: \[server\]: 'ktls' 'yes': use \"off\", \"auto\" or \"require\""),
    ('[[route]]\npath = "/"\nroot = "www"\nhosts = ["localhost:8443"]\n',
     r"site.toml:4: \[\[route\]\] #1: 'hosts' 'localhost:8443' can never match a request"),
    ('[[route]]\npath = "/"\nproxy = "http://127.0.0.1:0"\n', r"site.toml:3: .*not an upstream URL"),
    ('[[route]]\npath = "/"\nproxy = "http://127.0.0.1:8080/a b"\n', r"site.toml:3: .*no spaces"),
    ('[[route]]\npath = "/"\nproxy = "http://user:pw@127.0.0.1:8080/"\n', r"site.toml:3: .*credentials"),
], ids=["redis-option", "redis-port", "redis-password", "staple-file-in-toml", "ktls", "host-with-port",
        "upstream-port-0", "upstream-space", "upstream-credentials"])
def test_mistakes_caught_at_start_name_the_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each was a traceback (redis options), blamed a flag that was not given, had no line, or was accepted and
    failed at the first request (every request a 404, a 400, or proxied to port 80)."""
    import re

    message = error(tmp_path, text)
    assert re.search(expected, message), message
    assert "\n" not in message


def test_flags_with_mistakes_say_which_flag(tmp_path: Path) -> None:
    fifo = tmp_path / "cert.pem"
    import os

    os.mkfifo(fifo)
    with pytest.raises(SettingsError, match=r"--cert: .*cert.pem is not a readable file"):
        load_settings(Flags(root=tmp_path, cert=fifo, key=fifo))  # a FIFO blocked the start for good
    with pytest.raises(SettingsError, match=r"not a regular file"):
        load_settings(Flags(config=fifo))
    with pytest.raises(SettingsError, match=r"--host: '300.1.1.1' is neither an IP address nor a host name"):
        load_settings(Flags(root=tmp_path, host="300.1.1.1"))
    with pytest.raises(SettingsError, match=r"--host: '\[::1' is neither"):
        load_settings(Flags(root=tmp_path, host="[::1"))


def test_route_hosts_keep_the_form_clients_send(tmp_path: Path) -> None:
    """`::ffff:127.0.0.1` was normalised to `[::ffff:7f00:1]`; curl sends Host: [::ffff:127.0.0.1]."""
    path = write(tmp_path, '[[route]]\npath = "/"\nroot = "www"\nhosts = ["::ffff:127.0.0.1", "Example.TEST"]\n')
    (route,) = load_settings(Flags(config=path)).routes
    assert route.hosts == ("[::ffff:127.0.0.1]", "example.test")


@pytest.mark.parametrize(("key", "value"), [
    ("client_ca", '"site.key"'), ("client_crl", '["site.key"]'), ("staple_file", '"site.pem"'),
    ("ticket_key_files", '["short.key"]'),
])
def test_a_file_that_does_not_load_names_its_setting_and_line(tmp_path: Path, key: str, value: str) -> None:
    """Files read when the site is built (not when the settings are) said "site.toml: trust file ..." or only
    the file's own name (a CRL, a staple, a ticket key): no line, no setting."""
    from tlskit.serve.server import build_site

    ca_line = 'client_ca = "ca.pem"\n' if key == "client_crl" else ""
    path = write(tmp_path, f'[[certificate]]\ncert = "site.pem"\nkey = "site.key"\n[tls]\n{ca_line}{key} = {value}\n')
    (tmp_path / "ca.pem").write_bytes(make_ca().pem)
    (tmp_path / "short.key").write_bytes(b"k" * 50)  # a ticket key file holds 80 or 48 bytes
    with pytest.raises(SettingsError) as info:
        build_site(load_settings(Flags(config=path)))
    line = 6 if ca_line else 5
    assert str(info.value).startswith(f"{path}:{line}: [tls]: '{key}' "), info.value
    assert "\n" not in str(info.value)
    if key in ("staple_file", "ticket_key_files"):  # given as a flag, the flag is named
        flag = Flags(root=tmp_path, cert=tmp_path / "site.pem", key=tmp_path / "site.key",
                     **({"staple_file": tmp_path / "site.pem"} if key == "staple_file" else
                        {"ticket_keys": (tmp_path / "short.key",)}))
        with pytest.raises(SettingsError, match=f"^--{'staple-file' if key == 'staple_file' else 'ticket-key'}: "):
            build_site(load_settings(flag))


def test_an_rsa_key_below_2048_bits_is_refused_naming_the_key_file(tmp_path: Path) -> None:
    """A 1024-bit RSA certificate started silently and every client refused it (OpenSSL 3 does not even load it:
    `openssl s_server` and nginx stop with "ee key too small")."""
    make_leaf(make_ca(), ["localhost"], key_type="rsa1024").write(tmp_path, "weak")
    path = write(tmp_path, '[[certificate]]\ncert = "weak.pem"\nkey = "weak.key"\n')
    with pytest.raises(SettingsError) as info:
        CertificateStore.load(load_settings(Flags(config=path)).certificates)
    assert str(info.value).startswith(f"{path}:1: [[certificate]] #1: {tmp_path / 'weak.key'}: a 1024-bit RSA key, "
                                      "which clients refuse"), info.value
    assert "2048 bits or more, or an ECDSA key" in str(info.value)


def test_metrics_on_a_listeners_port_is_refused_naming_the_line(tmp_path: Path) -> None:
    """It failed at start with "cannot serve metrics on 127.0.0.1 port 8443: Address already in use" (status 1),
    which does not say that the port's other user is the server itself."""
    message = error(tmp_path, '[[listen]]\naddress = "0.0.0.0"\nport = 8443\n\n[metrics]\nport = 8443\n')
    assert message == (f"{tmp_path / 'site.toml'}:6: [metrics]: 'port' 8443 is also the port of a listener "
                       "(0.0.0.0): give metrics its own"), message
    with pytest.raises(SettingsError, match=r"^--metrics-port: 9000 is also the port of a listener \(localhost\)"):
        load_settings(Flags(root=tmp_path, port=9000, metrics_port=9000))
    # another address, or another port: fine
    elsewhere = '[[listen]]\naddress = "10.0.0.1"\nport = 8443\n[metrics]\nport = 8443\n'
    assert load_settings(Flags(config=write(tmp_path, elsewhere))).metrics is not None
    load_settings(Flags(root=tmp_path, port=9000, metrics_port=9001))


def test_ticket_key_files_take_redis_for_the_replay_set_and_warn_without_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Servers sharing ticket key files with --early-data each kept their own replay set, so each took a replayed
    ClientHello once (fleet review; DESIGN §3: the set is shared by every server that shares the keys), and
    --redis was refused beside key files. Now --redis gives them the shared replay set (the keys still come from
    the files), and without it a warning says so."""
    from tlskit.serve.stateful import FailFastReplayStore, Stateful
    from tlskit.stores.memory import MemoryReplayStore

    key = tmp_path / "a.key"
    key.write_bytes(bytes(80))
    s = load_settings(Flags(ticket_keys=(key,), early_data=True, redis="redis://127.0.0.1:6390/0", root=tmp_path))
    shared = Stateful.carry(None, s)
    assert shared.ticket_keys is None and isinstance(shared.replay_store, FailFastReplayStore)  # keys: the files
    with caplog.at_level(logging.WARNING, "tlskit.serve"):
        own = Stateful.carry(None, load_settings(Flags(ticket_keys=(key,), early_data=True, root=tmp_path)))
    assert isinstance(own.replay_store, MemoryReplayStore)
    assert "replay set is this server's own" in caplog.text and "--redis URL" in caplog.text


def test_a_reload_that_rotated_the_ticket_key_files_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tlskit stek rotate` then SIGHUP logged "no change", so an operator could not see the rotation take effect
    (fleet review): the reload line names the keys now in use."""
    from tlskit.serve.server import build_site, reload_changes
    from tlskit.tickets.files import rotate_key_dir

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the development certificate
    rotate_key_dir(tmp_path)
    flags = Flags(ticket_keys=(tmp_path / "current.key", tmp_path / "previous.key"), root=tmp_path)
    before = build_site(load_settings(flags))
    assert reload_changes(before, build_site(load_settings(flags), previous=before)) == "no change"
    rotated = rotate_key_dir(tmp_path)
    changes = reload_changes(before, build_site(load_settings(flags), previous=before))
    assert changes.startswith(f"ticket keys now {rotated.current.hex()}, "), changes


def test_a_reload_that_adds_or_drops_key_files_beside_redis_changes_the_ticket_keys(tmp_path: Path) -> None:
    """With --redis unchanged, a reload that added ticket key files kept the Redis key ring (the files were ignored),
    and one that dropped them kept none (a local key: other servers could not resume; review)."""
    from tlskit.serve.stateful import Stateful

    key = tmp_path / "a.key"
    key.write_bytes(bytes(80))
    url = "redis://127.0.0.1:6390/0"  # (nothing listens: the ring waits for Redis)
    redis_only = Stateful.carry(None, load_settings(Flags(redis=url, root=tmp_path)))
    with_files = Stateful.carry(redis_only, load_settings(Flags(redis=url, ticket_keys=(key,), root=tmp_path)))
    assert redis_only.ticket_keys is not None and with_files.ticket_keys is None  # None: build_site loads the files
    again = Stateful.carry(with_files, load_settings(Flags(redis=url, root=tmp_path)))
    assert again.ticket_keys is not None
    for s in (redis_only, with_files, again):
        s.close_except(None)
