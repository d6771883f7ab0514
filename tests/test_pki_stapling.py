"""Server-side OCSP stapling (tlskit.pki.stapling) against our responder running in-process."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from tlskit.config import CertifiedKey
from tlskit.pki.ca import CertificateAuthority, IssuedCertificate
from tlskit.pki.ocsp import build_request, verify_ocsp_response
from tlskit.pki.ocsp_http import OCSPHTTPServer, post_ocsp
from tlskit.pki.stapling import StapleCache, staple_from_file


class Clock:
    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t


def _key(ca: CertificateAuthority, issued: IssuedCertificate) -> CertifiedKey:
    chain = (issued.certificate.public_bytes(Encoding.DER), *(c.public_bytes(Encoding.DER) for c in ca.chain))
    return CertifiedKey(chain=chain, private_key=load_pem_private_key(issued.key_path.read_bytes(), None))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def running(tmp_path: Path, clock: Clock) -> Iterator[tuple[CertificateAuthority, OCSPHTTPServer]]:
    """A CA whose certificates name an in-process responder; the responder shares the test's clock."""
    server = OCSPHTTPServer(responder=None)  # type: ignore[arg-type]  # responder set once the CA exists
    ca = CertificateAuthority.init(tmp_path / "ca", intermediate=True, ocsp_url=server.url + "/ocsp", clock=clock)
    server.responder = ca.responder(validity=dt.timedelta(hours=1))
    server.start()
    yield ca, server
    server.close()


def test_first_handshake_gets_no_staple_then_the_fetched_one(running: tuple[CertificateAuthority, OCSPHTTPServer],
                                                             clock: Clock) -> None:
    ca, _ = running
    issued = ca.issue(["www.test"])
    key = _key(ca, issued)
    cache = StapleCache(background=False, clock=clock, rng=lambda: 0.5)
    assert cache(key) is None  # registered; nothing fetched yet, and the handshake did not wait
    cache.refresh_due()
    staple = cache(key)
    assert staple is not None
    now = dt.datetime.fromtimestamp(clock(), dt.UTC)
    assert verify_ocsp_response(staple, issued.certificate, ca.issuer, now).status == "good"


def test_responder_down_keeps_the_last_staple_until_it_expires(
        running: tuple[CertificateAuthority, OCSPHTTPServer], clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    ca, server = running
    key = _key(ca, ca.issue(["www.test"]))
    cache = StapleCache(background=False, clock=clock, rng=lambda: 0.5)
    first = cache.refresh(key.chain)
    assert first is not None
    server.close()  # the responder goes away
    clock.t += 31 * 60  # past half-life: time to refresh
    caplog.set_level(logging.WARNING, "tlskit.pki.stapling")
    cache.refresh_due()
    assert cache(key) == first
    assert "keeping the last good staple" in caplog.text
    clock.t += 29 * 60 + 1  # nextUpdate passed: stop stapling rather than staple an expired response
    cache.refresh_due()
    assert cache(key) is None
    assert "not stapling" in caplog.text


def test_a_long_back_off_still_retries_before_the_kept_staple_expires(
        running: tuple[CertificateAuthority, OCSPHTTPServer], clock: Clock) -> None:
    """After failures the back-off grew past the kept staple's nextUpdate: it expired with no try in between
    (a staple of 1 hour validity expired at :47, the retry was due at :48)."""
    ca, server = running
    key = _key(ca, ca.issue(["www.test"]))
    cache = StapleCache(background=False, clock=clock, rng=lambda: 0.5, retry_interval=60, max_retry_interval=3600)
    first = cache.refresh(key.chain)
    assert first is not None
    server.close()
    clock.t += 31 * 60
    from tlskit.pki.stapling import _expiry

    for _ in range(5):  # failures at 31, 32, 34, 38 and 46 minutes; the next back-off is 16 minutes
        cache.refresh_due()
        entry = cache._entries[key.chain[0]]
        assert entry is not None and entry.staple is not None
        clock.t = max(clock.t, entry.refresh_at)
    entry = cache._entries[key.chain[0]]
    assert entry is not None and entry.staple is not None
    assert clock() <= entry.refresh_at < _expiry(entry.staple).timestamp()


def test_refresh_happens_at_half_life_with_jitter(running: tuple[CertificateAuthority, OCSPHTTPServer],
                                                  clock: Clock) -> None:
    ca, _ = running
    key = _key(ca, ca.issue(["www.test"]))
    for rng, expected in ((0.5, 30 * 60), (1.0, 36 * 60), (0.0, 24 * 60)):  # +-10% of the 1-hour lifetime
        cache = StapleCache(background=False, clock=clock, rng=lambda r=rng: r)  # type: ignore[misc]
        first = cache.refresh(key.chain)
        entry = cache._entries[key.chain[0]]
        assert entry is not None and entry.refresh_at - clock() == pytest.approx(expected, abs=1)
        clock.t += expected - 1
        cache.refresh_due()
        assert cache(key) == first  # not refreshed early
        clock.t += 2
        cache.refresh_due()
        assert cache(key) != first  # refreshed: a new thisUpdate
        clock.t -= expected + 1


def test_revoked_certificate_is_never_stapled(running: tuple[CertificateAuthority, OCSPHTTPServer],
                                              clock: Clock) -> None:
    ca, _ = running
    issued = ca.issue(["www.test"])
    key = _key(ca, issued)
    cache = StapleCache(background=False, clock=clock)
    assert cache.refresh(key.chain) is not None
    ca.revoke(issued.serial)
    clock.t += 3600 / 2 + 400
    cache.refresh_due()
    assert cache(key) is None  # the cached "good" is dropped at once


def test_bad_responses_are_not_stapled(running: tuple[CertificateAuthority, OCSPHTTPServer], clock: Clock) -> None:
    ca, server = running
    key = _key(ca, ca.issue(["www.test"]))
    answers = [b"garbage"]
    cache = StapleCache(background=False, clock=clock, fetcher=lambda url, der: answers[0])
    assert cache.refresh(key.chain) is None
    # a response for another certificate is refused too
    other = ca.issue(["other.test"]).certificate
    answers[0] = post_ocsp(server.url, build_request(other, ca.issuer))
    clock.t += 3600
    assert cache.refresh(key.chain) is None


def test_certificates_without_responder_or_issuer_are_not_stapled(tmp_path: Path, clock: Clock) -> None:
    ca = CertificateAuthority.init(tmp_path / "plain", intermediate=True)
    issued = ca.issue(["www.test"])
    cache = StapleCache(background=False, clock=clock, fetcher=lambda url, der: pytest.fail("no fetch expected"))
    assert cache(_key(ca, issued)) is None
    assert cache.refresh(_key(ca, issued).chain) is None


def test_leaf_only_chain_cannot_be_verified_so_is_not_stapled(
        running: tuple[CertificateAuthority, OCSPHTTPServer], clock: Clock) -> None:
    ca, _ = running
    key = _key(ca, ca.issue(["www.test"]))
    cache = StapleCache(background=False, clock=clock)
    assert cache.refresh(key.chain[:1]) is None


def test_background_thread_fetches_without_blocking_the_handshake(
        running: tuple[CertificateAuthority, OCSPHTTPServer]) -> None:
    ca, _ = running
    ca.clock = time.time
    key = _key(ca, ca.issue(["www.test"]))
    cache = StapleCache()
    try:
        assert cache(key) is None
        deadline = time.monotonic() + 10
        while cache(key) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache(key) is not None
    finally:
        cache.close()


def test_staple_file_is_served_while_valid_and_reloaded_when_replaced(
        running: tuple[CertificateAuthority, OCSPHTTPServer], clock: Clock, tmp_path: Path) -> None:
    ca, server = running
    issued = ca.issue(["www.test"])
    key = _key(ca, issued)
    path = tmp_path / "staple.der"
    hook = staple_from_file(path, clock=clock)
    assert hook(key) is None  # no file yet
    path.write_bytes(post_ocsp(server.url, build_request(issued.certificate, ca.issuer)))
    assert hook(key) == path.read_bytes()
    other = _key(ca, ca.issue(["other.test"]))
    assert hook(other) is None  # the file is about another certificate
    clock.t += 3600 + 1
    assert hook(key) is None  # expired
    path.write_bytes(post_ocsp(server.url, build_request(issued.certificate, ca.issuer)))
    assert hook(key) == path.read_bytes()
