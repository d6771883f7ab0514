"""Certificate chain verification (tlskit.pki.verify): RFC 8446 §4.4.2.4 alerts, RFC 6125 name matching."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.certs import Issued, KeyType, make_ca, make_leaf, write_pem
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, ConfigError
from tlskit.pki import TrustStore, clear_cache, verify_client_chain, verify_server_chain
from tlskit.pki import verify as verify_module

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Pki:
    root: Issued
    inter: Issued
    leaf: Issued
    trust: TrustStore


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_ca("tlskit test root")
    inter = make_ca("tlskit test intermediate", issuer=root)
    leaf = make_leaf(inter, ["example.com", "*.wild.example.com", "192.0.2.7", "2001:db8::7"])
    return Pki(root, inter, leaf, TrustStore(roots=(root.cert,)))


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def server_alert(chain: list[bytes], trust: TrustStore, name: str | None = "example.com",
                 now: dt.datetime = NOW) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        verify_server_chain(chain, server_name=name, trust=trust, now=now)
    return info.value


# --- accepted chains -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["example.com", "EXAMPLE.com.", "a.wild.example.com", "192.0.2.7",
                                  "2001:db8::7", "[2001:db8::7]"])
def test_good_chain_matches_dns_wildcard_and_ip_sans(pki: Pki, name: str) -> None:
    leaf = verify_server_chain([pki.leaf.der, pki.inter.der], server_name=name, trust=pki.trust, now=NOW)
    assert leaf == pki.leaf.cert


@pytest.mark.parametrize("key_type", ["ec384", "rsa2048", "rsapss"])
def test_good_chain_with_other_key_types(key_type: KeyType) -> None:
    root = make_ca(key_type=key_type)
    inter = make_ca("inter", issuer=root, key_type=key_type)
    leaf = make_leaf(inter, ["example.com"], key_type=key_type)
    trust = TrustStore(roots=(root.cert,))
    assert verify_server_chain([leaf.der, inter.der], server_name="example.com", trust=trust, now=NOW)


def test_chain_that_also_carries_the_root_is_accepted(pki: Pki) -> None:
    chain = [pki.leaf.der, pki.inter.der, pki.root.der]
    assert verify_server_chain(chain, server_name="example.com", trust=pki.trust, now=NOW) == pki.leaf.cert


def test_no_server_name_still_validates_path_and_server_eku(pki: Pki) -> None:
    assert verify_server_chain([pki.leaf.der, pki.inter.der], server_name=None, trust=pki.trust, now=NOW)
    client_only = make_leaf(pki.inter, ["example.com"], client_auth=True, server_auth=False)
    assert server_alert([client_only.der, pki.inter.der], pki.trust, None).description == (
        AlertDescription.bad_certificate
    )
    assert server_alert([pki.leaf.der], pki.trust, None).description == AlertDescription.unknown_ca


def test_naive_datetime_is_taken_as_utc(pki: Pki) -> None:
    naive = NOW.replace(tzinfo=None)
    assert verify_server_chain([pki.leaf.der, pki.inter.der], server_name="example.com", trust=pki.trust,
                               now=naive)


# --- refused chains: one alert each (RFC 8446 §6.2) ------------------------------------------------------


@pytest.mark.parametrize("name", ["other.example", "example.com.evil", "b.a.wild.example.com", "192.0.2.8"])
def test_name_mismatch_is_bad_certificate_naming_both_sides(pki: Pki, name: str) -> None:
    error = server_alert([pki.leaf.der, pki.inter.der], pki.trust, name)
    assert error.description == AlertDescription.bad_certificate
    assert repr(name) in error.message
    assert "DNS:example.com" in error.message and "IP:192.0.2.7" in error.message


def test_unknown_root_is_unknown_ca(pki: Pki) -> None:
    other = TrustStore(roots=(make_ca("some other root").cert,))
    error = server_alert([pki.leaf.der, pki.inter.der], other)
    assert error.description == AlertDescription.unknown_ca
    assert "tlskit test root" in error.message


def test_missing_intermediate_is_unknown_ca(pki: Pki) -> None:
    error = server_alert([pki.leaf.der], pki.trust)
    assert error.description == AlertDescription.unknown_ca
    assert "tlskit test intermediate" in error.message and "missing intermediate" in error.message


def test_self_signed_leaf_is_unknown_ca(pki: Pki) -> None:
    lone = make_ca("example.com")
    assert server_alert([lone.der], pki.trust).description == AlertDescription.unknown_ca


def test_forged_signature_is_bad_certificate(pki: Pki) -> None:
    impostor = make_ca("tlskit test intermediate", issuer=pki.root)  # same name, different key
    error = server_alert([make_leaf(impostor, ["example.com"]).der, pki.inter.der], pki.trust)
    assert error.description == AlertDescription.bad_certificate
    assert "signature" in error.message


def test_expired_leaf_is_certificate_expired(pki: Pki) -> None:
    old = make_leaf(pki.inter, ["example.com"], not_before=NOW - 40 * DAY, not_after=NOW - DAY)
    error = server_alert([old.der, pki.inter.der], pki.trust)
    assert error.description == AlertDescription.certificate_expired
    assert "expired at" in error.message and "86400 seconds ago" in error.message


def test_not_yet_valid_leaf_is_certificate_expired_with_clock_skew_hint(pki: Pki) -> None:
    early = make_leaf(pki.inter, ["example.com"], not_before=NOW + dt.timedelta(seconds=90))
    error = server_alert([early.der, pki.inter.der], pki.trust)
    assert error.description == AlertDescription.certificate_expired
    assert "not yet valid (clock skew?) by 90 seconds" in error.message


def test_expired_intermediate_is_certificate_expired_naming_it() -> None:
    root = make_ca()
    inter = make_ca("stale intermediate", issuer=root, not_before=NOW - 40 * DAY, not_after=NOW - DAY)
    leaf = make_leaf(inter, ["example.com"], not_before=NOW - 2 * DAY, not_after=NOW + DAY)
    error = server_alert([leaf.der, inter.der], TrustStore(roots=(root.cert,)))
    assert error.description == AlertDescription.certificate_expired
    assert "stale intermediate" in error.message


def test_expired_root_is_certificate_expired() -> None:
    root = make_ca("old root", not_before=NOW - 40 * DAY, not_after=NOW - DAY)
    leaf = make_leaf(root, ["example.com"], not_before=NOW - 2 * DAY, not_after=NOW + DAY)
    error = server_alert([leaf.der], TrustStore(roots=(root.cert,)))
    assert error.description == AlertDescription.certificate_expired
    assert "trusted root 'CN=old root'" in error.message


def test_ed25519_chain_is_unsupported_certificate() -> None:
    # cryptography's WebPKI profile forbids EdDSA keys in certificates (CA/B Forum BR §6.1.5).
    root = make_ca(key_type="ed25519")
    leaf = make_leaf(root, ["example.com"], key_type="ed25519")
    error = server_alert([leaf.der], TrustStore(roots=(root.cert,)))
    assert error.description == AlertDescription.unsupported_certificate
    assert "Ed25519" in error.message


def test_leaf_without_san_is_bad_certificate_even_if_cn_matches(pki: Pki) -> None:
    cn_only = make_leaf(pki.inter, [], common_name="example.com")
    error = server_alert([cn_only.der, pki.inter.der], pki.trust)
    assert error.description == AlertDescription.bad_certificate
    assert "no subjectAltName" in error.message


def test_leaf_without_server_auth_eku_is_bad_certificate(pki: Pki) -> None:
    client_only = make_leaf(pki.inter, ["example.com"], client_auth=True, server_auth=False)
    error = server_alert([client_only.der, pki.inter.der], pki.trust)
    assert error.description == AlertDescription.bad_certificate
    assert "not for serverAuth (extendedKeyUsage: clientAuth" in error.message


@pytest.mark.parametrize("position", [0, 1])
def test_garbage_der_is_bad_certificate(pki: Pki, position: int) -> None:
    chain = [pki.leaf.der, pki.inter.der]
    chain[position] = b"\x30\x03\x02\x01\x00"
    error = server_alert(chain, pki.trust)
    assert error.description == AlertDescription.bad_certificate
    assert ("leaf certificate" if position == 0 else "certificate #1") in error.message


def _subject_cn_as_bit_string(der: bytes) -> bytes:
    """The subject's CN value re-tagged BIT STRING (a type the CN OID cannot have): cryptography refuses the name
    (TypeError) only when it is read, after the signature check already failed."""
    at = der.rfind(b"\x06\x03\x55\x04\x03") + 5  # the last CN in the DER: the subject's
    assert der[at] in (0x0C, 0x13)
    return der[:at] + b"\x03" + der[at + 1:]


def _unknown_key_algorithm(der: bytes) -> bytes:
    """``der`` with its id-ecPublicKey OID changed to one no library knows (a candidate issuer's key)."""
    assert der.count(_EC_PUBLIC_KEY) == 1
    return der.replace(_EC_PUBLIC_KEY, bytes.fromhex("0607018648ce3d0201"))


_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")


@pytest.mark.parametrize("shape", ["bit-string-cn", "issuer-with-unknown-key"])
def test_certificates_cryptography_cannot_read_while_diagnosing_are_bad_certificate(pki: Pki, shape: str) -> None:
    """Found by fuzzing: after the verifier refused a chain, explaining why read names and tried candidate issuers,
    and a TypeError (a BIT STRING CN) or UnsupportedAlgorithm (an unknown key type) escaped: internal_error, on
    the client and the server side. Both are the peer's malformed certificates: bad_certificate (§6.2)."""
    if shape == "bit-string-cn":
        chain = [_subject_cn_as_bit_string(pki.leaf.der), pki.inter.der]
    else:  # the leaf's signature broken, then a "root" of the same name whose key cryptography cannot load
        chain = [pki.leaf.der[:-1] + bytes((pki.leaf.der[-1] ^ 1,)), _unknown_key_algorithm(pki.inter.der)]
    assert server_alert(chain, pki.trust).description == AlertDescription.bad_certificate
    with pytest.raises(CertificateError) as info:
        verify_client_chain(chain, trust=pki.trust, now=NOW)
    assert info.value.description == AlertDescription.bad_certificate


def test_empty_chains(pki: Pki) -> None:
    assert server_alert([], pki.trust).description == AlertDescription.decode_error
    with pytest.raises(CertificateError) as info:
        verify_client_chain([], trust=pki.trust, now=NOW)
    assert info.value.description == AlertDescription.certificate_required


def test_overlong_chain_is_refused_before_parsing(pki: Pki) -> None:
    error = server_alert([pki.leaf.der] + [pki.inter.der] * 20, pki.trust)
    assert error.description == AlertDescription.bad_certificate and "limit" in error.message


@pytest.mark.parametrize("name", ["bad name", "exa_mple..com", ""])
def test_invalid_server_name_is_config_error(pki: Pki, name: str) -> None:
    with pytest.raises(ConfigError, match="server_name"):
        verify_server_chain([pki.leaf.der, pki.inter.der], server_name=name, trust=pki.trust, now=NOW)


# --- client certificates (mTLS) --------------------------------------------------------------------------


def test_client_chain(pki: Pki) -> None:
    client = make_leaf(pki.inter, ["client.example"], client_auth=True, server_auth=False)
    assert verify_client_chain([client.der, pki.inter.der], trust=pki.trust, now=NOW) == client.cert
    with pytest.raises(CertificateError) as info:
        verify_client_chain([pki.leaf.der, pki.inter.der], trust=pki.trust, now=NOW)  # serverAuth only
    assert info.value.description == AlertDescription.bad_certificate
    assert "not for clientAuth" in info.value.message
    with pytest.raises(CertificateError) as info:
        verify_client_chain([client.der], trust=pki.trust, now=NOW)
    assert info.value.description == AlertDescription.unknown_ca


def test_a_client_certificate_without_subject_alt_name_is_accepted_as_openssl_does(pki: Pki, tmp_path: Path) -> None:
    """CN-only client certificates (`openssl req`, Kubernetes users) were refused ("no subjectAltName", a
    server-name rule): `openssl verify -purpose sslclient` and nginx accept them. A server's still needs one."""
    from tlskit.pki.identity import peer_identity

    alice = make_leaf(pki.inter, [], common_name="alice", client_auth=True, server_auth=False)
    assert verify_client_chain([alice.der, pki.inter.der], trust=pki.trust, now=dt.datetime.now(dt.UTC)) == alice.cert
    assert peer_identity(alice.cert).common_name == "alice"
    openssl = shutil.which("openssl")
    assert openssl, "openssl is installed by .ci/run"
    for name, issued in (("root", pki.root), ("inter", pki.inter), ("alice", alice)):
        write_pem(tmp_path / f"{name}.pem", [issued])
    result = subprocess.run([openssl, "verify", "-purpose", "sslclient", "-CAfile", str(tmp_path / "root.pem"),
                             "-untrusted", str(tmp_path / "inter.pem"), str(tmp_path / "alice.pem")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result  # the independent verdict agrees
    server = make_leaf(pki.inter, [], common_name="example.com")
    error = server_alert([server.der, pki.inter.der], pki.trust)
    assert "no subjectAltName" in error.message
    with pytest.raises(CertificateError, match="not for clientAuth"):  # the rest of the profile still holds
        verify_client_chain([make_leaf(pki.inter, [], common_name="bob").der, pki.inter.der], trust=pki.trust,
                            now=NOW)


def test_a_self_signed_client_certificate_listed_as_trusted_is_accepted(pki: Pki) -> None:
    """As for servers (and as OpenSSL and nginx do): it was refused unless it carried an
    authorityKeyIdentifier ("missing required extension"), or when its subject was empty."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carol")])
    carol = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
             .sign(key, hashes.SHA256()))  # as `openssl req -x509` without a config: no key identifiers
    der = carol.public_bytes(serialization.Encoding.DER)
    trust = TrustStore(roots=(pki.root.cert, carol))
    assert verify_client_chain([der], trust=trust, now=NOW) == carol
    server_only = make_leaf(None, [], common_name="dave")
    with pytest.raises(CertificateError, match="not for clientAuth"):
        verify_client_chain([server_only.der], trust=TrustStore(roots=(server_only.cert,)), now=NOW)
    with pytest.raises(CertificateError) as info:  # not listed: still unknown
        verify_client_chain([der], trust=pki.trust, now=NOW)
    assert info.value.description == AlertDescription.unknown_ca


# --- verdict cache ---------------------------------------------------------------------------------------


def test_cache_hit_rechecks_the_validity_window(pki: Pki) -> None:
    leaf = make_leaf(pki.inter, ["example.com"], not_before=NOW - DAY, not_after=NOW + DAY)
    chain = [leaf.der, pki.inter.der]
    assert verify_server_chain(chain, server_name="example.com", trust=pki.trust, now=NOW)
    assert len(verify_module._cache) == 1
    later = NOW + dt.timedelta(hours=1)
    assert verify_server_chain(chain, server_name="example.com", trust=pki.trust, now=later)
    error = server_alert(chain, pki.trust, now=NOW + 2 * DAY)
    assert error.description == AlertDescription.certificate_expired
    assert len(verify_module._cache) == 0
    # The cache is keyed by name and trust store too: a cached success is not reused for either.
    assert verify_server_chain(chain, server_name="example.com", trust=pki.trust, now=NOW)
    assert server_alert(chain, pki.trust, "other.example").description == AlertDescription.bad_certificate
    other = TrustStore(roots=(make_ca("some other root").cert,))
    assert server_alert(chain, other).description == AlertDescription.unknown_ca


def test_cache_is_bounded(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_module, "CACHE_SIZE", 2)
    for name in ["example.com", "a.wild.example.com", "b.wild.example.com"]:
        verify_server_chain([pki.leaf.der, pki.inter.der], server_name=name, trust=pki.trust, now=NOW)
    assert len(verify_module._cache) == 2


# --- TrustStore ------------------------------------------------------------------------------------------


def test_trust_store_from_pem_file(pki: Pki, tmp_path: Path) -> None:
    bundle = write_pem(tmp_path / "ca.pem", [pki.root, make_ca("second root")])
    store = TrustStore.from_pem_file(bundle)
    assert len(store.roots) == 2 and store.roots[0] == pki.root.cert
    assert store.fingerprint == TrustStore.from_pem(bundle.read_bytes()).fingerprint


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read trust file"),
        (b"", "contains no"),
        (b"0\x82\x01\x00 not pem", "looks like DER"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a valid PEM"),
    ],
)
def test_trust_store_file_errors_name_the_file(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "roots.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as info:
        TrustStore.from_pem_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_trust_store_needs_a_root() -> None:
    with pytest.raises(ConfigError):
        TrustStore(roots=())


def test_a_leaf_with_a_weak_key_is_refused(pki: Pki) -> None:
    """An RSA-1024 leaf: WebPKI's policy checks the key sizes of issuers only; OpenSSL, Python ssl and curl
    refuse it ("EE certificate key too weak"). It was accepted."""
    weak = make_leaf(pki.inter, ["example.com"], key_type="rsa1024")
    error = server_alert([weak.der, pki.inter.der], pki.trust)
    assert error.description is AlertDescription.unsupported_certificate and "1024-bit RSA" in str(error)


def test_a_wildcard_right_above_a_top_level_label_matches_nothing(pki: Pki) -> None:
    """``*.test`` for ``example.test``: OpenSSL and curl need two labels after the wildcard (RFC 6125 §7.2);
    it was accepted."""
    leaf = make_leaf(pki.inter, ["*.test", "*.example.test"])
    assert server_alert([leaf.der, pki.inter.der], pki.trust, name="example.test").description is \
        AlertDescription.bad_certificate
    verify_server_chain([leaf.der, pki.inter.der], server_name="a.example.test", trust=pki.trust, now=NOW)


def test_a_trusted_self_signed_leaf_is_checked_as_a_leaf() -> None:
    """A self-signed server certificate given as the CA file (as curl and OpenSSL accept): its wildcard names
    match, but a clientAuth-only EKU or a weak key is refused, as OpenSSL does (both were skipped)."""
    wild = make_leaf(None, ["*.example.test"])
    verify_server_chain([wild.der], server_name="a.example.test", trust=TrustStore(roots=(wild.cert,)), now=NOW)
    client_only = make_leaf(None, ["a.example.test"], client_auth=True, server_auth=False)
    error = server_alert([client_only.der], TrustStore(roots=(client_only.cert,)), name="a.example.test")
    assert error.description is AlertDescription.bad_certificate and "serverAuth" in str(error)
    weak = make_leaf(None, ["a.example.test"], key_type="rsa1024")
    error = server_alert([weak.der], TrustStore(roots=(weak.cert,)), name="a.example.test")
    assert error.description is AlertDescription.unsupported_certificate


def test_a_trusted_self_signed_leaf_with_an_unknown_critical_extension_is_refused() -> None:
    """OpenSSL (and so ssl): "unhandled critical extension". A leaf trusted as the CA file skipped path validation
    and with it RFC 5280's rule for critical extensions."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    base = make_leaf(None, ["a.example.test"])
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    builder = (x509.CertificateBuilder().subject_name(base.cert.subject).issuer_name(base.cert.subject)
               .public_key(base.key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(base.cert.not_valid_before_utc).not_valid_after(base.cert.not_valid_after_utc))
    for extension in base.cert.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    cert = builder.add_extension(odd, critical=True).sign(base.key, hashes.SHA256())  # type: ignore[arg-type]
    from cryptography.hazmat.primitives.serialization import Encoding

    der = cert.public_bytes(Encoding.DER)
    error = server_alert([der], TrustStore(roots=(cert,)), name="a.example.test")
    assert error.description is AlertDescription.unsupported_certificate and "1.3.6.1.4.1.99999.1" in str(error)


def test_the_system_store_honours_ssl_cert_file_and_dir(pki: Pki, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """As OpenSSL (Python ssl, curl) does: SSL_CERT_FILE and SSL_CERT_DIR name the roots; before, certifi's
    bundle came first and the variables were never read."""
    bundle = write_pem(tmp_path / "private-root.pem", [pki.root])
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    assert TrustStore.system().roots == (pki.root.cert,)
    directory = tmp_path / "certs"
    directory.mkdir()
    write_pem(directory / "abcd1234.0", [pki.root])
    (directory / "zzzz0000.0").write_text("-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    assert TrustStore.system().roots == (pki.root.cert,)
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.delenv("SSL_CERT_DIR")
    assert len(TrustStore.system().roots) > 10


def test_system_trust_store_loads() -> None:
    store = TrustStore.system()
    assert len(store.roots) > 10 and TrustStore.system() is store


# --- cross-check with OpenSSL ----------------------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_verdicts_agree_with_openssl_verify(pki: Pki, tmp_path: Path) -> None:
    """OpenSSL 3 `openssl verify` reaches the same verdicts on the same files."""
    expired = make_leaf(pki.inter, ["example.com"], not_before=NOW - 40 * DAY, not_after=NOW - DAY)
    stranger = TrustStore(roots=(make_ca("stranger root").cert,))
    root_pem = write_pem(tmp_path / "root.pem", [pki.root])
    inter_pem = write_pem(tmp_path / "inter.pem", [pki.inter])
    stranger_pem = write_pem(tmp_path / "stranger.pem", stranger.roots)
    # (leaf, intermediates, name, trust, CA file, our alert, OpenSSL X509_V_ERR_* codes:
    #  20 unable to get local issuer, 10 certificate has expired, 62 hostname mismatch)
    alert = AlertDescription
    cases: list[tuple[Issued, list[Issued], str, TrustStore, Path, AlertDescription | None, set[int]]] = [
        (pki.leaf, [pki.inter], "example.com", pki.trust, root_pem, None, set()),
        (pki.leaf, [], "example.com", pki.trust, root_pem, alert.unknown_ca, {20}),
        (expired, [pki.inter], "example.com", pki.trust, root_pem, alert.certificate_expired, {10}),
        (pki.leaf, [pki.inter], "other.example", pki.trust, root_pem, alert.bad_certificate, {62}),
        (pki.leaf, [pki.inter], "example.com", stranger, stranger_pem, alert.unknown_ca, {20}),
    ]
    for index, (leaf, inters, name, trust, ca_file, want, openssl_errors) in enumerate(cases):
        leaf_pem = write_pem(tmp_path / f"leaf{index}.pem", [leaf])
        args = ["openssl", "verify", "-CAfile", str(ca_file), "-verify_hostname", name,
                "-attime", str(int(NOW.timestamp()))]
        args += ["-untrusted", str(inter_pem)] if inters else []
        result = subprocess.run([*args, str(leaf_pem)], capture_output=True, text=True, check=False)
        codes = {int(code) for code in re.findall(r"error (\d+) at \d+ depth", result.stdout + result.stderr)}
        try:
            verify_server_chain([leaf.der, *(i.der for i in inters)], server_name=name, trust=trust, now=NOW)
            ours = None
        except CertificateError as error:
            ours = error.description
        assert ours == want, (index, ours)
        assert (result.returncode == 0) == (want is None), (index, result.stdout, result.stderr)
        assert codes == openssl_errors, (index, result.stdout, result.stderr)


def _constrained_ca(constraints: x509.NameConstraints) -> tuple[x509.Certificate, object]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Good"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "constrained root")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(constraints, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _client_leaf(ca: x509.Certificate, ca_key: object, subject: list[tuple[object, str]],
                 sans: list[str | x509.GeneralName]) -> x509.Certificate:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(oid, value) for oid, value in subject]))  # type: ignore[arg-type]
               .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(n) if isinstance(n, str) else n for n in sans]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]


def test_name_constraints_bind_client_certificates_without_sans_and_directory_names(tmp_path: Path) -> None:
    """Found by the diff review, compared with `openssl verify -purpose sslclient`: a CA constrained to
    good.example issued CN=evil.example without a SAN, and it was accepted; a directoryName constraint (O=Good)
    was never checked (the path validator leaves it). Each verdict is openssl's too."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    dns_ca, dns_key = _constrained_ca(x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("good.example")], excluded_subtrees=None))
    dir_ca, dir_key = _constrained_ca(x509.NameConstraints(permitted_subtrees=[x509.DirectoryName(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Good")]))], excluded_subtrees=None))
    excl_ca, excl_key = _constrained_ca(x509.NameConstraints(permitted_subtrees=None, excluded_subtrees=[
        x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil")]))]))
    mail_ca, mail_key = _constrained_ca(x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("good.example")], excluded_subtrees=None))
    at_ca, at_key = _constrained_ca(x509.NameConstraints(
        permitted_subtrees=None, excluded_subtrees=[x509.RFC822Name("@evil.example")]))
    cases = [
        (dns_ca, _client_leaf(dns_ca, dns_key, [(NameOID.COMMON_NAME, "evil.example")], []), False),
        (dns_ca, _client_leaf(dns_ca, dns_key, [(NameOID.COMMON_NAME, "a")], ["a.good.example"]), True),
        (dir_ca, _client_leaf(dir_ca, dir_key, [(NameOID.ORGANIZATION_NAME, "Evil"), (NameOID.COMMON_NAME, "x")],
                              ["x.example"]), False),
        (dir_ca, _client_leaf(dir_ca, dir_key, [(NameOID.ORGANIZATION_NAME, "Good"), (NameOID.COMMON_NAME, "y")],
                              ["y.example"]), True),
        # the second diff review: a SAN with no DNS name left the CN unchecked; directoryNames compared exactly
        # (O=evil escaped an excluded O=Evil, O=good was refused under O=Good); a directoryName-only CA refused
        # every SAN-less client; the subject's emailAddress went unchecked
        (dns_ca, _client_leaf(dns_ca, dns_key, [(NameOID.COMMON_NAME, "evil.example")],
                              [x509.RFC822Name("nobody@mail.test")]), False),
        (dns_ca, _client_leaf(dns_ca, dns_key, [(NameOID.COMMON_NAME, "evil.example")],
                              [x509.UniformResourceIdentifier("spiffe://evil.example/x")]), False),
        (dns_ca, _client_leaf(dns_ca, dns_key, [(NameOID.COMMON_NAME, "Alice Smith")], []), True),  # no host name
        (dir_ca, _client_leaf(dir_ca, dir_key, [(NameOID.ORGANIZATION_NAME, "good"), (NameOID.COMMON_NAME, "z")],
                              []), True),
        (excl_ca, _client_leaf(excl_ca, excl_key, [(NameOID.ORGANIZATION_NAME, " evil "),
                                                   (NameOID.COMMON_NAME, "m")], ["m.example"]), False),
        (excl_ca, _client_leaf(excl_ca, excl_key, [(NameOID.ORGANIZATION_NAME, "Eviler"),
                                                   (NameOID.COMMON_NAME, "m")], ["m.example"]), True),
        (mail_ca, _client_leaf(mail_ca, mail_key, [(NameOID.COMMON_NAME, "x"),
                                                   (NameOID.EMAIL_ADDRESS, "a@evil.example")], ["x.example"]), False),
        (mail_ca, _client_leaf(mail_ca, mail_key, [(NameOID.COMMON_NAME, "x"),
                                                   (NameOID.EMAIL_ADDRESS, "a@Good.Example")], ["x.example"]), True),
        # the third review: a NUL inside a CN hid it from the check; "@host" bases; Unicode folding (U+212A is
        # "k" to str.lower(), U+00A0 a space to str.split()) where OpenSSL folds ASCII only
        (dns_ca, _client_leaf(dns_ca, dns_key, [(NameOID.COMMON_NAME, "evil.example\0.good")], []), False),
        (at_ca, _client_leaf(at_ca, at_key, [(NameOID.COMMON_NAME, "x"), (NameOID.EMAIL_ADDRESS, "a@evil.example")],
                             ["x.example"]), False),
        (mail_ca, _client_leaf(mail_ca, mail_key, [(NameOID.COMMON_NAME, "x"),
                                                   (NameOID.EMAIL_ADDRESS, "a@goo\u212a.example")], ["x.example"]),
         False),
        (excl_ca, _client_leaf(excl_ca, excl_key, [(NameOID.ORGANIZATION_NAME, "\u00a0Evil"),
                                                   (NameOID.COMMON_NAME, "m")], ["m.example"]), True),
    ]
    openssl = shutil.which("openssl")
    assert openssl, "openssl is installed by .ci/run"
    for number, (ca, leaf, accepted) in enumerate(cases):
        (tmp_path / "ca.pem").write_bytes(ca.public_bytes(Encoding.PEM))
        (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
        verdict = subprocess.run([openssl, "verify", "-purpose", "sslclient", "-CAfile", str(tmp_path / "ca.pem"),
                                  str(tmp_path / "leaf.pem")], capture_output=True, text=True, timeout=30,
                                 check=False)
        assert (verdict.returncode == 0) == accepted, (number, verdict.stdout, verdict.stderr)
        trust = TrustStore(roots=(ca,))
        if ca in (dir_ca, excl_ca) and not _directory_constraints_supported(dir_ca, dir_key):
            # cryptography >= 50 refuses every path through a CA with directoryName constraints: fail closed
            with pytest.raises(CertificateError, match=r"unsupported directoryName constraint"):
                verify_client_chain([leaf.public_bytes(Encoding.DER)], trust=trust, now=NOW)
        elif accepted:
            assert verify_client_chain([leaf.public_bytes(Encoding.DER)], trust=trust, now=NOW) == leaf
        else:
            with pytest.raises(CertificateError, match=r"constrains|outside the names"):
                verify_client_chain([leaf.public_bytes(Encoding.DER)], trust=trust, now=NOW)


def test_a_self_issued_intermediate_is_exempt_from_name_constraints(tmp_path: Path) -> None:
    """RFC 5280 §6.1.3 (b): a self-issued CA certificate (key rollover: same name, new key) below a constrained
    CA is not held to the constraints; only the certificates it issues are. openssl verify accepts the chain;
    tlskit refused it (found by the review)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    root, root_key = _constrained_ca(x509.NameConstraints(permitted_subtrees=[x509.DirectoryName(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Other")]))], excluded_subtrees=None))
    if not _directory_constraints_supported(root, root_key):
        with pytest.raises(CertificateError, match=r"unsupported directoryName constraint"):
            verify_client_chain([_client_leaf(root, root_key, [(NameOID.ORGANIZATION_NAME, "Other")], [])
                                 .public_bytes(Encoding.DER)], trust=TrustStore(roots=(root,)), now=NOW)
        return
    key = ec.generate_private_key(ec.SECP256R1())
    rollover = (x509.CertificateBuilder().subject_name(root.subject).issuer_name(root.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root.public_key()),  # type: ignore[arg-type]
                               critical=False)
                .sign(root_key, hashes.SHA256()))  # type: ignore[arg-type]
    leaf = _client_leaf(rollover, key, [(NameOID.ORGANIZATION_NAME, "Other"), (NameOID.COMMON_NAME, "x")], [])
    for name, cert in (("root.pem", root), ("int.pem", rollover), ("leaf.pem", leaf)):
        (tmp_path / name).write_bytes(cert.public_bytes(Encoding.PEM))
    verdict = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(tmp_path / "root.pem"),
                              "-untrusted", str(tmp_path / "int.pem"), str(tmp_path / "leaf.pem")],
                             capture_output=True, text=True, timeout=30, check=False)
    assert verdict.returncode == 0, (verdict.stdout, verdict.stderr)
    assert verify_client_chain([leaf.public_bytes(Encoding.DER), rollover.public_bytes(Encoding.DER)],
                               trust=TrustStore(roots=(root,)), now=NOW) == leaf


def _directory_constraints_supported(ca: x509.Certificate, key: object) -> bool:
    """Whether the installed ``cryptography`` builds paths through a CA with directoryName name constraints
    (46-49 do and leave them to us; 50 refuses them as unsupported)."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    leaf = _client_leaf(ca, key, [(NameOID.ORGANIZATION_NAME, "Good"), (NameOID.COMMON_NAME, "probe")], [])
    try:
        verify_client_chain([leaf.public_bytes(Encoding.DER)], trust=TrustStore(roots=(ca,)), now=NOW)
    except CertificateError as e:
        return "unsupported directoryName constraint" not in str(e)  # else the path was built: ours to check
    return True


def test_a_trusted_leaf_that_may_not_sign_is_refused() -> None:
    """Listed in the trust store but with keyUsage keyEncipherment only: accepted (the path validator, which
    would have refused it, is skipped for a trusted leaf); openssl: "unsuitable certificate purpose"."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinned")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
            .add_extension(x509.KeyUsage(False, False, True, False, False, False, False, False, False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.com")]), critical=False)
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    trust = TrustStore(roots=(cert,))
    for verify in (lambda: verify_client_chain([der], trust=trust, now=NOW),
                   lambda: verify_server_chain([der], server_name="example.com", trust=trust, now=NOW)):
        with pytest.raises(CertificateError, match="may not sign"):
            verify()
