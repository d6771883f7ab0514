"""Clock-skew tolerance in chain validation (tlskit.pki.verify ``skew=``): the mTLS incident of a client
certificate "not yet valid" on a server whose clock lags the CA's, and its mirror at notAfter."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.certs import Issued, make_ca, make_leaf
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, ConfigError
from tlskit.pki import TrustStore, clear_cache, verify_client_chain, verify_server_chain
from tlskit.pki.ca import CertificateAuthority

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SECOND = dt.timedelta(seconds=1)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Pki:
    root: Issued
    inter: Issued
    trust: TrustStore


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_ca("skew root", not_before=NOW - DAY)
    inter = make_ca("skew intermediate", issuer=root, not_before=NOW - DAY)
    return Pki(root, inter, TrustStore(roots=(root.cert,)))


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def server(chain: list[bytes], pki: Pki, skew: float) -> object:
    return verify_server_chain(chain, server_name="skew.test", trust=pki.trust, now=NOW, skew=skew)


def client(chain: list[bytes], pki: Pki, skew: float) -> object:
    return verify_client_chain(chain, trust=pki.trust, now=NOW, skew=skew)


def refused(call: Callable[..., object], *args: object) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        call(*args)
    return info.value


def test_leaf_not_yet_valid_within_the_tolerance_is_accepted_by_both_verifiers(pki: Pki) -> None:
    early = make_leaf(pki.inter, ["skew.test"], not_before=NOW + 90 * SECOND, client_auth=True)
    chain = [early.der, pki.inter.der]
    assert server(chain, pki, 120) == early.cert
    clear_cache()
    assert client(chain, pki, 120) == early.cert


@pytest.mark.parametrize("verify", [server, client])
def test_leaf_not_yet_valid_beyond_the_tolerance_keeps_the_precise_message(
    pki: Pki, verify: Callable[..., object]
) -> None:
    early = make_leaf(pki.inter, ["skew.test"], not_before=NOW + 90 * SECOND, client_auth=True)
    error = refused(verify, [early.der, pki.inter.der], pki, 60)
    assert error.description is AlertDescription.certificate_expired
    assert "'CN=skew.test' is not yet valid (clock skew?) by 90 seconds" in error.message
    assert "beyond the 60-second clock-skew tolerance" in error.message
    assert f"valid from {early.cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z" in error.message


def test_without_tolerance_the_message_is_unchanged(pki: Pki) -> None:
    early = make_leaf(pki.inter, ["skew.test"], not_before=NOW + 90 * SECOND)
    error = refused(server, [early.der, pki.inter.der], pki, 0)
    assert "not yet valid (clock skew?) by 90 seconds: valid from" in error.message
    assert "tolerance" not in error.message


def test_leaf_just_expired_within_the_tolerance_is_accepted_and_beyond_it_refused(pki: Pki) -> None:
    stale = make_leaf(pki.inter, ["skew.test"], not_before=NOW - DAY, not_after=NOW - 90 * SECOND)
    chain = [stale.der, pki.inter.der]
    assert server(chain, pki, 120) == stale.cert
    clear_cache()
    error = refused(server, chain, pki, 30)
    assert error.description is AlertDescription.certificate_expired
    assert "expired at" in error.message and "90 seconds ago" in error.message
    assert "beyond the 30-second clock-skew tolerance" in error.message


def test_fresh_intermediate_within_the_tolerance_is_accepted_and_named_when_beyond_it() -> None:
    root = make_ca("skew root 2", not_before=NOW - DAY)
    inter = make_ca("brand-new intermediate", issuer=root, not_before=NOW + 45 * SECOND)
    leaf = make_leaf(inter, ["skew.test"], not_before=NOW - DAY)
    trust = TrustStore(roots=(root.cert,))
    chain = [leaf.der, inter.der]
    assert verify_server_chain(chain, server_name="skew.test", trust=trust, now=NOW, skew=60) == leaf.cert
    clear_cache()
    with pytest.raises(CertificateError) as info:
        verify_server_chain(chain, server_name="skew.test", trust=trust, now=NOW, skew=30)
    assert info.value.description is AlertDescription.certificate_expired
    assert "'CN=brand-new intermediate' is not yet valid (clock skew?) by 45 seconds" in info.value.message
    assert "beyond the 30-second clock-skew tolerance" in info.value.message


def test_a_stale_extra_certificate_does_not_spoil_the_tolerance(pki: Pki) -> None:
    # An unused, long-expired certificate at the end of the chain (a stale cross-sign) is ignored when
    # choosing the instant to verify at.
    early = make_leaf(pki.inter, ["skew.test"], not_before=NOW + 30 * SECOND)
    stale = make_ca("long gone", not_before=NOW - 400 * DAY, not_after=NOW - 300 * DAY)
    assert server([early.der, pki.inter.der, stale.der], pki, 60) == early.cert


def test_tolerance_does_not_reach_other_names_or_cas(pki: Pki) -> None:
    early = make_leaf(pki.inter, ["other.test"], not_before=NOW + 30 * SECOND)
    assert refused(server, [early.der, pki.inter.der], pki, 60).description is AlertDescription.bad_certificate
    stranger = make_leaf(make_ca("stranger"), ["skew.test"], not_before=NOW + 30 * SECOND, client_auth=True)
    assert refused(client, [stranger.der], pki, 60).description is AlertDescription.unknown_ca


def test_a_verdict_cached_with_tolerance_is_not_served_to_a_strict_caller(pki: Pki) -> None:
    early = make_leaf(pki.inter, ["skew.test"], not_before=NOW + 90 * SECOND)
    chain = [early.der, pki.inter.der]
    assert server(chain, pki, 120) == early.cert
    assert server(chain, pki, 120) == early.cert  # cache hit
    error = refused(server, chain, pki, 0)
    assert "not yet valid (clock skew?) by 90 seconds" in error.message


@pytest.mark.parametrize("skew", [-1, float("nan"), 86401])
def test_invalid_tolerance_is_a_config_error(pki: Pki, skew: float) -> None:
    leaf = make_leaf(pki.inter, ["skew.test"])
    with pytest.raises(ConfigError, match="clock skew"):
        server([leaf.der, pki.inter.der], pki, skew)


def test_the_incident_a_certificate_issued_at_now_and_a_server_two_minutes_behind(tmp_path: Path) -> None:
    """The CA issues with notBefore = now (no backdate); the server's clock lags by two minutes. Strict
    verification refuses the client; three minutes of tolerance admit it."""
    ca_now = NOW.timestamp()
    ca = CertificateAuthority.init(tmp_path / "ca", clock=lambda: ca_now)
    issued = ca.issue([], client=True, spiffe="spiffe://cluster.local/ns/default/sa/web",
                      backdate=dt.timedelta(0), out=tmp_path / "web")
    chain = [issued.certificate.public_bytes(Encoding.DER)]
    trust = TrustStore(roots=(ca.root,))
    lagging = NOW - dt.timedelta(minutes=2)
    with pytest.raises(CertificateError) as info:
        verify_client_chain(chain, trust=trust, now=lagging)
    assert "not yet valid (clock skew?) by 120 seconds" in info.value.message
    assert verify_client_chain(chain, trust=trust, now=lagging, skew=180) == issued.certificate
