"""Peer identity and SPIFFE allow-lists (tlskit.pki.identity)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from tests.certs import make_ca, make_leaf
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, ConfigError
from tlskit.pki.ca import CertificateAuthority
from tlskit.pki.identity import SpiffeAllowList, parse_spiffe_id, peer_identity
from tlskit.pki.pinning import spki_sha256

WEB = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path_factory.mktemp("id") / "ca")


def test_identity_of_a_spiffe_svid(ca: CertificateAuthority) -> None:
    cert = ca.issue(["web.default.svc", "10.0.0.7"], client=True, spiffe=WEB).certificate
    identity = peer_identity(cert)
    assert identity.subject == "CN=web.default.svc" and identity.common_name == "web.default.svc"
    assert identity.dns_names == ("web.default.svc",) and identity.ip_addresses == ("10.0.0.7",)
    assert identity.uris == (WEB,) and identity.spiffe_id == WEB
    assert identity.serial == cert.serial_number and identity.spki_sha256 == spki_sha256(cert)


def test_certificate_without_uri_san_has_no_spiffe_id() -> None:
    leaf = make_leaf(make_ca(), ["plain.test"])
    identity = peer_identity(leaf.cert)
    assert identity.spiffe_id is None and identity.dns_names == ("plain.test",)


@pytest.mark.parametrize("text", [WEB, "spiffe://example.org", "spiffe://a-b_c.d/x.y/Z-9_"])
def test_valid_spiffe_ids(text: str) -> None:
    assert str(parse_spiffe_id(text)) == text


@pytest.mark.parametrize("text", ["https://cluster.local/x", "SPIFFE://cluster.local/x", "spiffe:///x",
                                  "spiffe://Cluster.local/x", "spiffe://cluster.local:8080/x",
                                  "spiffe://cluster.local/x/", "spiffe://cluster.local//x",
                                  "spiffe://cluster.local/../x", "spiffe://cluster.local/x?y=1",
                                  "spiffe://user@cluster.local/x"])
def test_invalid_spiffe_ids(text: str) -> None:
    with pytest.raises(ValueError):
        parse_spiffe_id(text)


@pytest.mark.parametrize(("spiffe_id", "allowed"), [
    (WEB, True),
    ("spiffe://cluster.local/ns/prod/sa/web", True),
    ("spiffe://cluster.local/ns/prod/sa/api", False),
    ("spiffe://cluster.local/ns/a/b/sa/web", False),  # '*' stays within one segment
    ("spiffe://other.domain/ns/default/sa/web", False),
    ("spiffe://cluster.local/ns/batch/sa/web-1", True),
    ("spiffe://cluster.local/ns/batch/sa/webx", False),
    ("spiffe://cluster.local/admin", True),
    ("spiffe://cluster.local/admin/tools/x", True),
    ("spiffe://cluster.local/administrator", False),
    (None, False),
    ("not a spiffe id", False),
])
def test_allow_list_patterns(spiffe_id: str | None, allowed: bool) -> None:
    allow = SpiffeAllowList(["spiffe://cluster.local/ns/*/sa/web", "spiffe://cluster.local/ns/batch/sa/web-*",
                             "spiffe://cluster.local/admin/**"])
    assert allow.matches(spiffe_id) is allowed


@pytest.mark.parametrize("pattern", ["spiffe://*.local/x", "https://cluster.local/x", "spiffe://c/**/x",
                                     "spiffe://c/a//b"])
def test_bad_patterns_are_config_errors(pattern: str) -> None:
    with pytest.raises(ConfigError):
        SpiffeAllowList([pattern])


def test_check_returns_identity_or_access_denied(ca: CertificateAuthority, tmp_path: Path) -> None:
    allow = SpiffeAllowList(["spiffe://cluster.local/ns/*/sa/web"])
    web = ca.issue([], client=True, spiffe=WEB, out=tmp_path / "web").certificate
    assert allow.check(web).spiffe_id == WEB
    api = ca.issue([], client=True, spiffe="spiffe://cluster.local/ns/default/sa/api", out=tmp_path / "api")
    with pytest.raises(CertificateError) as info:
        allow.check(api.certificate)
    assert info.value.description == AlertDescription.access_denied and "is not allowed" in info.value.message
    plain: x509.Certificate = ca.issue(["plain.test"], client=True, out=tmp_path / "plain").certificate
    with pytest.raises(CertificateError, match="no SPIFFE ID"):
        allow.check(plain)
