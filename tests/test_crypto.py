"""Key schedule, transcript, groups and signatures against RFC 8448 §3 and §5 (and paired round trips)."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.vectors import rfc8448
from tlskit.crypto import keyschedule as ks
from tlskit.crypto.groups import (
    SUPPORTED_GROUPS,
    client_key_share,
    client_key_share_from_private,
    server_key_share,
    server_key_share_from_private,
)
from tlskit.crypto.signatures import (
    CERT_SIGNATURE_SCHEMES,
    TLS13_SIGNATURE_SCHEMES,
    certificate_verify_input,
    schemes_for_key,
    sign,
    verify,
)
from tlskit.crypto.suites import SUITES, suite_params
from tlskit.crypto.transcript import PendingTranscript, Transcript
from tlskit.enums import AlertDescription, CipherSuite, NamedGroup, SignatureScheme
from tlskit.errors import AlertError, ConfigError

SHA256 = suite_params(CipherSuite.TLS_AES_128_GCM_SHA256)


def value(section: int, actor: str, action: str, label: str, occurrence: int = 0) -> bytes:
    return rfc8448.find(section, actor, action, occurrence).values[label]


def _sha256(*messages: bytes) -> bytes:
    return hashlib.sha256(b"".join(messages)).digest()


# RFC 8448 §3 handshake messages
CH = value(3, "client", "construct a ClientHello", "ClientHello")
SH = value(3, "server", "construct a ServerHello", "ServerHello")
EE = value(3, "server", "construct a EncryptedExtensions", "EncryptedExtensions")
CERT = value(3, "server", "construct a Certificate handshake", "Certificate")
CV = value(3, "server", "construct a CertificateVerify", "CertificateVerify")
SFIN = value(3, "server", "construct a Finished", "Finished")
CFIN = value(3, "client", "construct a Finished", "Finished")
NST = value(3, "server", "construct a NewSessionTicket", "NewSessionTicket")


# --- suites -----------------------------------------------------------------------------------------


def test_suite_params_cover_the_three_tls13_suites() -> None:
    assert set(SUITES) == {
        CipherSuite.TLS_AES_128_GCM_SHA256,
        CipherSuite.TLS_AES_256_GCM_SHA384,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    }
    p = suite_params(CipherSuite.TLS_AES_256_GCM_SHA384)
    assert (p.hash_name, p.hash_len, p.key_len, p.iv_len) == ("sha384", 48, 32, 12)
    assert p.empty_hash == hashlib.sha384().digest()
    with pytest.raises(ValueError):
        suite_params(CipherSuite.TLS_AES_128_CCM_SHA256)


# --- key schedule: RFC 8448 §3 ----------------------------------------------------------------------


def test_rfc8448_s3_key_schedule_secrets() -> None:
    early = ks.EarlySecret(SHA256)
    assert early.secret == value(3, "server", 'extract secret "early"', "secret")

    shared = value(3, "server", 'extract secret "handshake"', "IKM")
    hs = early.handshake_secret(shared)
    assert hs.secret == value(3, "server", 'extract secret "handshake"', "secret")

    h_sh = _sha256(CH, SH)
    assert h_sh == value(3, "server", '"tls13 c hs traffic"', "hash")
    c_hs = hs.client_traffic_secret(h_sh)
    s_hs = hs.server_traffic_secret(h_sh)
    assert c_hs == value(3, "server", '"tls13 c hs traffic"', "expanded")
    assert s_hs == value(3, "server", '"tls13 s hs traffic"', "expanded")

    master = hs.master_secret()
    assert master.secret == value(3, "server", 'extract secret "master"', "secret")

    h_sfin = _sha256(CH, SH, EE, CERT, CV, SFIN)
    assert master.client_traffic_secret(h_sfin) == value(3, "server", '"tls13 c ap traffic"', "expanded")
    assert master.server_traffic_secret(h_sfin) == value(3, "server", '"tls13 s ap traffic"', "expanded")
    assert master.exporter_master_secret(h_sfin) == value(3, "server", '"tls13 exp master"', "expanded")
    rms = master.resumption_master_secret(_sha256(CH, SH, EE, CERT, CV, SFIN, CFIN))
    assert rms == value(3, "client", '"tls13 res master"', "expanded")

    nonce = value(3, "server", 'generate resumption secret "tls13 resumption"', "hash")
    assert NST[12:15] == b"\x02" + nonce  # ticket_nonce<0..255> inside the NewSessionTicket
    assert ks.resumption_psk(SHA256, rms, nonce) == value(3, "server", '"tls13 resumption"', "expanded")


def test_rfc8448_s3_traffic_keys_and_ivs() -> None:
    h_sh = _sha256(CH, SH)
    h_sfin = _sha256(CH, SH, EE, CERT, CV, SFIN)
    hs = ks.EarlySecret(SHA256).handshake_secret(value(3, "server", 'extract secret "handshake"', "IKM"))
    master = hs.master_secret()
    cases = [
        (hs.server_traffic_secret(h_sh), "server", "derive write traffic keys for handshake data"),
        (hs.client_traffic_secret(h_sh), "server", "derive read traffic keys for handshake data"),
        (master.server_traffic_secret(h_sfin), "server", "derive write traffic keys for application data"),
        (master.client_traffic_secret(h_sfin), "client", "derive write traffic keys for application data"),
    ]
    for secret, actor, action in cases:
        step = rfc8448.find(3, actor, action)
        assert step.values["PRK"] == secret
        assert ks.traffic_key_iv(SHA256, secret) == (step.values["key expanded"], step.values["iv expanded"])


def test_rfc8448_s3_finished_verify_data() -> None:
    h_sh = _sha256(CH, SH)
    hs = ks.EarlySecret(SHA256).handshake_secret(value(3, "server", 'extract secret "handshake"', "IKM"))
    server = ks.finished_verify_data(SHA256, hs.server_traffic_secret(h_sh), _sha256(CH, SH, EE, CERT, CV))
    assert server == value(3, "server", 'calculate finished "tls13 finished"', "finished")
    assert b"\x14\x00\x00\x20" + server == SFIN
    client = ks.finished_verify_data(
        SHA256, hs.client_traffic_secret(h_sh), _sha256(CH, SH, EE, CERT, CV, SFIN)
    )
    assert client == value(3, "client", 'calculate finished "tls13 finished"', "finished", 1)
    assert b"\x14\x00\x00\x20" + client == CFIN


def test_hkdf_expand_label_matches_rfc8448_info() -> None:
    step = rfc8448.find(3, "server", 'derive secret "tls13 c hs traffic"')
    info = step.values["info"]
    assert info == b"\x00\x20\x12tls13 c hs traffic\x20" + step.values["hash"]
    out = ks.hkdf_expand_label("sha256", step.values["PRK"], b"c hs traffic", step.values["hash"], 32)
    assert out == step.values["expanded"]


def test_hkdf_expand_longer_than_one_block_matches_rfc5869_case_1() -> None:
    prk = ks.hkdf_extract("sha256", bytes.fromhex("000102030405060708090a0b0c"), b"\x0b" * 22)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = ks.hkdf_expand("sha256", prk, bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_psk_ke_uses_zero_shared_secret_and_binder_labels_differ() -> None:
    psk = bytes(range(32))
    early = ks.EarlySecret(SHA256, psk)
    assert early.handshake_secret(None).secret == early.handshake_secret(bytes(32)).secret
    assert early.binder_key() != early.binder_key(external=True)
    assert early.binder_key() == ks.derive_secret(SHA256, early.secret, b"res binder", SHA256.empty_hash)
    ch_hash = _sha256(CH)
    assert early.client_early_traffic_secret(ch_hash) != early.early_exporter_master_secret(ch_hash)


@pytest.mark.parametrize("suite", [CipherSuite.TLS_AES_128_GCM_SHA256, CipherSuite.TLS_AES_256_GCM_SHA384])
def test_full_handshake_secret_is_extract_from_the_derived_salt(suite: CipherSuite) -> None:
    """The shared no-PSK early secret keys its "derived" salt into HMAC once (§7.1): the same Extract."""
    p = suite_params(suite)
    zeros = bytes(p.hash_len)
    early = ks.EarlySecret.without_psk(p)
    salt = ks.derive_secret(p, ks.hkdf_extract(p.hash_name, b"", zeros), b"derived", p.empty_hash)
    for ikm in (bytes(range(32)), bytes(range(48)), None):
        expected = ks.hkdf_extract(p.hash_name, salt, zeros if ikm is None else ikm)
        assert early.handshake_secret(ikm).secret == expected
        assert ks.EarlySecret(p).handshake_secret(ikm).secret == expected


@pytest.mark.parametrize("suite", list(SUITES))
def test_handshake_traffic_keys_are_key_iv_and_finished_key(suite: CipherSuite) -> None:
    """One keying of the secret gives what ``traffic_key_iv`` and ``finished_verify_data`` derive (§7.3, §4.4.4)."""
    p = suite_params(suite)
    secret = bytes(range(p.hash_len))
    key_iv, finished_key = ks.handshake_traffic_keys(p, secret)
    assert key_iv == ks.traffic_key_iv(p, secret)
    assert finished_key == ks.hkdf_expand_label(p.hash_name, secret, b"finished", b"", p.hash_len)
    th = hashlib.new(p.hash_name, b"transcript").digest()
    assert ks.verify_data(p, finished_key, th) == ks.finished_verify_data(p, secret, th)


def test_next_traffic_secret_and_exporter_are_expand_label() -> None:
    secret = bytes(range(32))
    assert ks.next_traffic_secret(SHA256, secret) == ks.hkdf_expand_label(
        "sha256", secret, b"traffic upd", b"", 32
    )
    derived = ks.derive_secret(SHA256, secret, b"EXPORTER-test", SHA256.empty_hash)
    expected = ks.hkdf_expand_label("sha256", derived, b"exporter", _sha256(b"ctx"), 20)
    assert ks.export_keying_material(SHA256, secret, b"EXPORTER-test", b"ctx", 20) == expected


def test_sha384_key_schedule_lengths() -> None:
    p = suite_params(CipherSuite.TLS_AES_256_GCM_SHA384)
    master = ks.EarlySecret(p).handshake_secret(bytes(32)).master_secret()
    assert len(master.secret) == 48
    key, iv = ks.traffic_key_iv(p, master.client_traffic_secret(p.empty_hash))
    assert (len(key), len(iv)) == (32, 12)


# --- transcript: RFC 8448 §3 and §5 (HelloRetryRequest) ----------------------------------------------


def test_transcript_digest_copy_and_pending_resolve() -> None:
    pending = PendingTranscript()
    pending.add(CH)
    transcript = pending.resolve("sha256")
    transcript.add(SH)
    assert transcript.digest() == value(3, "server", '"tls13 c hs traffic"', "hash")
    fork = transcript.copy()
    fork.add(EE)
    assert transcript.digest() == _sha256(CH, SH)
    assert fork.digest() == _sha256(CH, SH, EE)


def test_rfc8448_s5_hello_retry_request_transcript_and_p256() -> None:
    ch1 = value(5, "client", "construct a ClientHello", "ClientHello", 0)
    hrr = value(5, "server", "construct a ServerHello", "ServerHello", 0)
    ch2 = value(5, "client", "construct a ClientHello", "ClientHello", 1)
    sh = value(5, "server", "construct a ServerHello", "ServerHello", 1)

    transcript = Transcript("sha256")
    transcript.add(ch1)
    transcript.replace_with_message_hash()
    assert transcript.digest() == _sha256(b"\xfe\x00\x00\x20" + _sha256(ch1))
    for message in (hrr, ch2, sh):
        transcript.add(message)
    assert transcript.digest() == value(5, "server", '"tls13 c hs traffic"', "hash")

    client_private = value(5, "client", "create an ephemeral P-256 key pair", "private key")
    client_public = value(5, "client", "create an ephemeral P-256 key pair", "public key")
    server_private = value(5, "server", "create an ephemeral P-256 key pair", "private key")
    server_public = value(5, "server", "create an ephemeral P-256 key pair", "public key")
    shared = value(5, "server", 'extract secret "handshake"', "IKM")

    share = client_key_share_from_private(NamedGroup.secp256r1, client_private)
    assert share.public == client_public
    assert server_key_share_from_private(NamedGroup.secp256r1, client_public, server_private) == (
        server_public,
        shared,
    )
    assert share.finish(server_public) == shared

    hs = ks.EarlySecret(SHA256).handshake_secret(shared)
    expected = value(5, "server", '"tls13 c hs traffic"', "expanded")
    assert hs.client_traffic_secret(transcript.digest()) == expected


# --- groups -----------------------------------------------------------------------------------------


def test_rfc8448_s3_x25519_shared_secret() -> None:
    client_private = value(3, "client", "create an ephemeral x25519", "private key")
    client_public = value(3, "client", "create an ephemeral x25519", "public key")
    server_private = value(3, "server", "create an ephemeral x25519", "private key")
    server_public = value(3, "server", "create an ephemeral x25519", "public key")
    shared = value(3, "server", 'extract secret "handshake"', "IKM")

    share = client_key_share_from_private(NamedGroup.x25519, client_private)
    assert (share.group, share.public) == (NamedGroup.x25519, client_public)
    assert share.finish(server_public) == shared
    assert server_key_share_from_private(NamedGroup.x25519, client_public, server_private) == (
        server_public,
        shared,
    )


@pytest.mark.parametrize(
    ("group", "client_len", "server_len", "secret_len"),
    [
        (NamedGroup.x25519, 32, 32, 32),
        (NamedGroup.secp256r1, 65, 65, 32),
        (NamedGroup.secp384r1, 97, 97, 48),
        (NamedGroup.X25519MLKEM768, 1216, 1120, 64),
    ],
)
def test_client_and_server_key_shares_agree(
    group: NamedGroup, client_len: int, server_len: int, secret_len: int
) -> None:
    assert group in SUPPORTED_GROUPS
    share = client_key_share(group, os.urandom)
    assert share.group == group
    assert len(share.public) == client_len
    server_public, server_secret = server_key_share(group, share.public, os.urandom)
    assert len(server_public) == server_len
    assert len(server_secret) == secret_len
    assert share.finish(server_public) == server_secret


def test_client_key_share_is_deterministic_in_injected_randomness() -> None:
    for group in SUPPORTED_GROUPS:
        a = client_key_share(group, lambda n: b"\x07" * n)
        b = client_key_share(group, lambda n: b"\x07" * n)
        assert a.public == b.public


_BAD_SHARES = [
    (NamedGroup.x25519, b"\x01" * 31),
    (NamedGroup.x25519, bytes(32)),  # low-order point: all-zero shared secret
    (NamedGroup.secp256r1, b"\x04" + b"\x01" * 64),  # not on the curve
    (NamedGroup.secp256r1, b"\x02" + b"\x01" * 32),  # compressed points are not allowed
    (NamedGroup.secp384r1, b"\x04" + b"\x01" * 64),  # wrong length
    (NamedGroup.X25519MLKEM768, b"\x01" * 1215),
    (NamedGroup.X25519MLKEM768, b"\xff" * 1184 + b"\x09" + bytes(31)),  # coefficients out of range
]


@pytest.mark.parametrize(("group", "share"), _BAD_SHARES)
def test_server_rejects_bad_client_share_with_illegal_parameter(group: NamedGroup, share: bytes) -> None:
    with pytest.raises(AlertError) as info:
        server_key_share(group, share, os.urandom)
    assert info.value.description == AlertDescription.illegal_parameter


@pytest.mark.parametrize(
    ("group", "share"),
    [
        (NamedGroup.x25519, bytes(32)),
        (NamedGroup.secp256r1, b"\x04" + bytes(64)),
        (NamedGroup.X25519MLKEM768, bytes(1119)),
        (NamedGroup.X25519MLKEM768, bytes(1120)),  # x25519 half is a low-order point
    ],
)
def test_client_rejects_bad_server_share_with_illegal_parameter(group: NamedGroup, share: bytes) -> None:
    with pytest.raises(AlertError) as info:
        client_key_share(group, os.urandom).finish(share)
    assert info.value.description == AlertDescription.illegal_parameter


# --- signatures -------------------------------------------------------------------------------------


def test_certificate_verify_input_layout() -> None:
    data = certificate_verify_input(True, b"\xaa" * 32)
    assert data == b" " * 64 + b"TLS 1.3, server CertificateVerify\x00" + b"\xaa" * 32
    assert certificate_verify_input(False, b"").startswith(b" " * 64 + b"TLS 1.3, client")


def test_rfc8448_s3_certificate_verify_signature_verifies() -> None:
    k = {name: int.from_bytes(v, "big") for name, v in rfc8448.SERVER_RSA_KEY.items()}
    public_key = rsa.RSAPublicNumbers(k["public exponent"], k["modulus"]).public_key()
    assert CV[:4] == b"\x0f\x00\x00\x84" and CV[4:8] == b"\x08\x04\x00\x80"  # rsa_pss_rsae_sha256
    data = certificate_verify_input(True, _sha256(CH, SH, EE, CERT))
    verify(public_key, SignatureScheme.rsa_pss_rsae_sha256, data, CV[8:])
    with pytest.raises(AlertError) as info:
        verify(public_key, SignatureScheme.rsa_pss_rsae_sha256, data[:-1] + b"\x00", CV[8:])
    assert info.value.description == AlertDescription.decrypt_error


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_P256 = ec.generate_private_key(ec.SECP256R1())
_P384 = ec.generate_private_key(ec.SECP384R1())
_ED25519 = ed25519.Ed25519PrivateKey.generate()


def test_schemes_for_key() -> None:
    S = SignatureScheme
    assert schemes_for_key(_P256) == (S.ecdsa_secp256r1_sha256,)
    assert schemes_for_key(_P384) == (S.ecdsa_secp384r1_sha384,)
    assert schemes_for_key(_ED25519) == (S.ed25519,)
    assert schemes_for_key(_RSA) == (S.rsa_pss_rsae_sha256, S.rsa_pss_rsae_sha384, S.rsa_pss_rsae_sha512)
    assert schemes_for_key(_RSA, pss_oid=True) == (
        S.rsa_pss_pss_sha256,
        S.rsa_pss_pss_sha384,
        S.rsa_pss_pss_sha512,
    )
    assert set(TLS13_SIGNATURE_SCHEMES) < set(CERT_SIGNATURE_SCHEMES)
    assert S.rsa_pkcs1_sha256 not in TLS13_SIGNATURE_SCHEMES


_TestKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
_KEY_FOR: dict[SignatureScheme, _TestKey] = {
    SignatureScheme.ecdsa_secp256r1_sha256: _P256,
    SignatureScheme.ecdsa_secp384r1_sha384: _P384,
    SignatureScheme.ed25519: _ED25519,
}


@pytest.mark.parametrize("scheme", TLS13_SIGNATURE_SCHEMES, ids=lambda s: s.name)
def test_sign_verify_round_trip(scheme: SignatureScheme) -> None:
    key: _TestKey = _KEY_FOR.get(scheme, _RSA)
    data = certificate_verify_input(True, os.urandom(32))
    signature = sign(key, scheme, data)
    verify(key.public_key(), scheme, data, signature)
    with pytest.raises(AlertError) as info:
        verify(key.public_key(), scheme, data + b"x", signature)
    assert info.value.description == AlertDescription.decrypt_error


def test_rsa_pss_signature_uses_hash_length_salt() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    data = b"content"
    signature = sign(_RSA, SignatureScheme.rsa_pss_rsae_sha384, data)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    _RSA.public_key().verify(signature, data, pss, hashes.SHA384())


@pytest.mark.parametrize(
    ("key", "scheme"),
    [
        (_P256, SignatureScheme.ecdsa_secp384r1_sha384),  # wrong curve
        (_P256, SignatureScheme.rsa_pss_rsae_sha256),
        (_RSA, SignatureScheme.rsa_pkcs1_sha256),  # not allowed in CertificateVerify
        (_RSA, SignatureScheme.rsa_pkcs1_sha1),
        (_P256, SignatureScheme.ecdsa_sha1),
        (_RSA, SignatureScheme.ed25519),
        (_ED25519, SignatureScheme.ecdsa_secp256r1_sha256),
    ],
    ids=lambda x: getattr(x, "name", type(x).__name__),
)
def test_verify_rejects_scheme_not_fitting_key(key: _TestKey, scheme: SignatureScheme) -> None:
    with pytest.raises(AlertError) as info:
        verify(key.public_key(), scheme, b"data", b"\x00" * 64)
    assert info.value.description == AlertDescription.illegal_parameter
    with pytest.raises(ConfigError):
        sign(key, scheme, b"data")


def test_verify_with_known_key_oid_pins_rsa_pss_family() -> None:
    data = b"content"
    signature = sign(_RSA, SignatureScheme.rsa_pss_pss_sha256, data)
    verify(_RSA.public_key(), SignatureScheme.rsa_pss_pss_sha256, data, signature, pss_oid=True)
    with pytest.raises(AlertError) as info:
        verify(_RSA.public_key(), SignatureScheme.rsa_pss_pss_sha256, data, signature, pss_oid=False)
    assert info.value.description == AlertDescription.illegal_parameter


def test_malformed_ecdsa_signature_is_decrypt_error() -> None:
    with pytest.raises(AlertError) as info:
        verify(_P256.public_key(), SignatureScheme.ecdsa_secp256r1_sha256, b"data", b"\x30\x01")
    assert info.value.description == AlertDescription.decrypt_error
