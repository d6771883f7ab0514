"""Sanity checks of the RFC 8448 trace parser (tests/vectors/rfc8448.py)."""

from __future__ import annotations

import pytest

from tests.vectors import rfc8448


def test_section_3_client_hello_payload_is_whole() -> None:
    record = rfc8448.find(3, "client", "send handshake record")
    payload = record.values["payload"]
    assert len(payload) == 196
    assert payload.startswith(bytes.fromhex("010000c0"))
    assert payload.endswith(bytes.fromhex("001c00024001"))  # record_size_limit, the last extension
    assert record.values["complete record"] == bytes.fromhex("16030100c4") + payload
    assert rfc8448.find(3, "client", "construct a ClientHello").values["ClientHello"] == payload


def test_step_counts_per_section() -> None:
    assert [len(rfc8448.section(n)) for n in range(3, 8)] == [55, 60, 54, 52, 51]


def test_client_x25519_key_pair_section_3() -> None:
    step = rfc8448.find(3, "client", "create an ephemeral x25519 key pair")
    assert step.values["private key"].hex().startswith("70a1a8f491e82d53")
    assert step.values["public key"].hex().startswith("4cfdfcd178b784bf")
    assert len(step.values["public key"]) == 32


def test_value_spanning_a_page_break_is_parsed_whole() -> None:
    # The server's x25519 private key in §3 is preceded by a page footer/header (page 4 → 5).
    assert rfc8448.find(3, "server", "create an ephemeral x25519 key pair").values["private key"].hex() == (
        "5aa93ea18f4c5e4a39856f573af4ec1503bad0d5cdabaffc26c1ab4c361f86c8"
    )
    certificate = rfc8448.find(3, "server", "construct a Certificate handshake").values["Certificate"]
    assert len(certificate) == 445
    assert certificate[:1] == b"\x0b" and int.from_bytes(certificate[1:4]) == 441


def test_long_records_have_declared_lengths() -> None:
    # Every value is length-checked at import; spot-check the longest encrypted server flights.
    records = [s.values.get("complete record", b"") for n in range(3, 8) for s in rfc8448.section(n)]
    lengths = sorted(len(r) for r in records)
    assert lengths[-1] == 679


def test_hello_retry_request_has_two_client_hellos() -> None:
    first = rfc8448.find(5, "client", "construct a ClientHello", 0).values["ClientHello"]
    second = rfc8448.find(5, "client", "construct a ClientHello", 1).values["ClientHello"]
    assert first[0] == second[0] == 1 and first != second
    p256 = rfc8448.find(5, "client", "create an ephemeral P-256 key pair").values["public key"]
    assert len(p256) == 65 and p256[0] == 4


def test_wrapped_headings_are_joined_and_special_values_decoded() -> None:
    step = rfc8448.find(3, "client", 'extract secret "handshake"')
    assert step.action == 'extract secret "handshake" (same as server handshake secret)'
    assert step.values == {}
    early = rfc8448.find(3, "server", 'extract secret "early"')
    assert early.values["salt"] == bytes(32)
    assert early.values["secret"].hex().startswith("33ad0a1c607ec03b")
    keys = rfc8448.find(3, "server", "derive write traffic keys for application data")
    assert keys.values["key info"][:2] == b"\x00\x10" and len(keys.values["iv expanded"]) == 12


def test_server_rsa_key_from_section_2() -> None:
    key = rfc8448.SERVER_RSA_KEY
    assert len(key["modulus"]) == 128 and key["public exponent"] == b"\x01\x00\x01"
    p, q = int.from_bytes(key["prime1"]), int.from_bytes(key["prime2"])
    assert p * q == int.from_bytes(key["modulus"])


def test_find_reports_missing_step() -> None:
    with pytest.raises(KeyError, match="#9"):
        rfc8448.find(3, "client", "send handshake record", occurrence=9)
