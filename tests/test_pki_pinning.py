"""SPKI SHA-256 pinning (tlskit.pki.pinning)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from tests.certs import make_ca, make_leaf, write_pem
from tests.interop.peers import require
from tlskit.enums import AlertDescription
from tlskit.errors import CertificateError, ConfigError
from tlskit.pki.pinning import PinSet, SinglePinWarning, spki_sha256

ROOT = make_ca("pin root")
LEAF = make_leaf(ROOT, ["pinned.test"])
BACKUP = base64.b64encode(b"\x01" * 32).decode()


def test_leaf_pin_matches_in_every_accepted_spelling() -> None:
    pin = spki_sha256(LEAF.cert)
    assert spki_sha256(LEAF.der) == pin
    for spelling in (pin, f"sha256/{pin}", f"sha256//{pin}", f'pin-sha256="{pin}"', f'"{pin}"', f"pin-sha256: {pin}",
                     f"pin-sha256:{pin}"):  # the last two: as `tlskit probe` prints it
        assert PinSet([spelling, BACKUP]).check([LEAF.der, ROOT.der]) == pin


def test_ca_pin_matches_only_when_the_chain_was_validated() -> None:
    pins = PinSet([spki_sha256(ROOT.cert), BACKUP])
    assert pins.check([LEAF.cert, ROOT.cert]) == spki_sha256(ROOT.cert)
    with pytest.raises(CertificateError):
        pins.check([LEAF.cert, ROOT.cert], leaf_only=True)


def test_mismatch_names_the_presented_hashes() -> None:
    with pytest.raises(CertificateError) as info:
        PinSet([BACKUP, base64.b64encode(b"\x02" * 32).decode()]).check([LEAF.der])
    assert info.value.description == AlertDescription.bad_certificate
    assert f"presented sha256/{spki_sha256(LEAF.cert)} (CN=pinned.test)" in info.value.message
    assert f"sha256/{BACKUP}" in info.value.message


def test_a_single_pin_warns() -> None:
    with pytest.warns(SinglePinWarning, match="backup"):
        PinSet([spki_sha256(LEAF.cert)])


@pytest.mark.parametrize("pin", ["not base64!", base64.b64encode(b"short").decode()])
def test_bad_pins_are_config_errors(pin: str) -> None:
    with pytest.raises(ConfigError):
        PinSet([pin, BACKUP])


@pytest.mark.interop
def test_pin_equals_the_openssl_recipe(tmp_path: Path) -> None:
    openssl = require("openssl")
    pem = write_pem(tmp_path / "leaf.pem", [LEAF])
    recipe = (f"{openssl} x509 -in {pem} -pubkey -noout | {openssl} pkey -pubin -outform der | "
              f"{openssl} dgst -sha256 -binary | base64")
    out = subprocess.run(["sh", "-c", recipe], capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.strip() == spki_sha256(LEAF.cert)
