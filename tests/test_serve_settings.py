"""`tlskit serve` configuration: TOML + flags, errors that name file, line and fix; SNI certificate choice."""

from __future__ import annotations

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
])
def test_bad_config_names_file_line_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    message = error(tmp_path, text)
    assert message.startswith(str(tmp_path / "site.toml").replace("site.toml", "") + expected.format(
        tmp=tmp_path)), message


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
