"""Mutual TLS between our client and server in memory (RFC 8446 §4.3.2, §4.4.2, §4.4.3)."""

from __future__ import annotations

import functools

import pytest

from tests.certs import make_ca, make_leaf
from tests.pairing import client_config, connect, root, server_config, trust
from tlskit.config import CertifiedKey, ClientAuth
from tlskit.enums import AlertDescription, ExtensionType, HandshakeType
from tlskit.errors import AlertError, CertificateError, ConfigError, RemoteAlert
from tlskit.events import ApplicationData, HandshakeComplete
from tlskit.messages.extensions import extension_map, parse_certificate_authorities
from tlskit.pki.verify import TrustStore


@functools.cache
def client_cert() -> CertifiedKey:
    issued = make_leaf(root(), ("client.test",), client_auth=True, server_auth=False)
    return CertifiedKey(chain=(issued.der,), private_key=issued.key)


@functools.cache
def stranger_cert() -> CertifiedKey:
    other = make_ca("some other CA")
    issued = make_leaf(other, ("client.test",), client_auth=True, server_auth=False)
    return CertifiedKey(chain=(issued.der,), private_key=issued.key)


def run(client_certificate: CertifiedKey | None, mode: str = "required") -> tuple[object, object]:
    pair = connect(
        client_config(certificate=client_certificate),
        server_config(client_auth=ClientAuth(mode=mode, trust=trust())),  # type: ignore[arg-type]
    )
    pair.pump()
    return pair.client, pair.server


def test_client_certificate_is_verified_and_exposed_to_the_server() -> None:
    client, server = run(client_cert())
    (s_done,) = [e for e in server.events() if isinstance(e, HandshakeComplete)]  # type: ignore[attr-defined]
    assert s_done.peer_certificates == client_cert().chain
    client.send_data(b"hi")  # type: ignore[attr-defined]
    server.receive_data(client.data_to_send())  # type: ignore[attr-defined]
    assert ApplicationData(data=b"hi") in server.events()  # type: ignore[attr-defined]


def test_certificate_request_names_the_accepted_cas() -> None:
    from tlskit.handshake.server import _certificate_request
    from tlskit.messages.handshake import CertificateRequest

    cr = _certificate_request(server_config(client_auth=ClientAuth(mode="optional", trust=trust())))
    assert cr[0] == HandshakeType.certificate_request
    exts = extension_map(CertificateRequest.decode(cr[4:]).extensions)
    assert parse_certificate_authorities(exts[ExtensionType.certificate_authorities]) == [
        root().cert.subject.public_bytes()
    ]


def test_missing_client_certificate_is_certificate_required() -> None:
    pair = connect(client_config(), server_config(client_auth=ClientAuth(mode="required", trust=trust())))
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    with pytest.raises(AlertError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.description is AlertDescription.certificate_required
    with pytest.raises(RemoteAlert) as seen:
        pair.client.receive_data(pair.server.data_to_send())
    assert seen.value.description is AlertDescription.certificate_required


def test_optional_client_auth_admits_a_client_without_certificate() -> None:
    _, server = run(None, mode="optional")
    (s_done,) = [e for e in server.events() if isinstance(e, HandshakeComplete)]  # type: ignore[attr-defined]
    assert s_done.peer_certificates == ()


def test_client_certificate_from_an_unknown_ca_is_unknown_ca() -> None:
    pair = connect(
        client_config(certificate=stranger_cert()),
        server_config(client_auth=ClientAuth(mode="required", trust=trust())),
    )
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    with pytest.raises(CertificateError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.description is AlertDescription.unknown_ca


def test_client_picks_the_certificate_the_servers_ca_names_ask_for() -> None:
    """§4.2.4: certificate_authorities guides the client's choice among several identities."""
    pair = connect(
        client_config(certificates=(stranger_cert(), client_cert())),
        server_config(client_auth=ClientAuth(mode="required", trust=trust())),  # names root() by default
    )
    pair.pump()
    (s_done,) = [e for e in pair.server.events() if isinstance(e, HandshakeComplete)]
    assert s_done.peer_certificates == client_cert().chain


def test_without_ca_names_the_client_sends_its_first_usable_certificate() -> None:
    pair = connect(
        client_config(certificates=(stranger_cert(), client_cert())),
        server_config(client_auth=ClientAuth(mode="required", trust=trust(), send_ca_names=False)),
    )
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    with pytest.raises(CertificateError) as info:  # the stranger's certificate went first
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.description is AlertDescription.unknown_ca


def test_an_identity_that_cannot_sign_a_requested_scheme_is_skipped() -> None:
    from tlskit.enums import SignatureScheme
    from tlskit.handshake.client import choose_identity

    issued = make_leaf(root(), ("client.test",), key_type="ed25519", client_auth=True, server_auth=False)
    ed = CertifiedKey(chain=(issued.der,), private_key=issued.key)
    ecdsa_only = [SignatureScheme.ecdsa_secp256r1_sha256]
    assert choose_identity((ed, client_cert()), ecdsa_only, []) == (client_cert(), ecdsa_only[0])
    assert choose_identity((ed,), ecdsa_only, []) is None
    names = [root().cert.subject.public_bytes()]
    assert choose_identity((stranger_cert(), client_cert()), ecdsa_only, names)[0] is client_cert()  # type: ignore[index]


def test_client_auth_needs_a_trust_store() -> None:
    with pytest.raises(ConfigError, match="trust"):
        ClientAuth(mode="required")
    assert ClientAuth(mode="none").trust is None
    assert isinstance(TrustStore(roots=(root().cert,)), TrustStore)


@pytest.mark.parametrize(("extension", "alert"), [
    (ExtensionType.status_request, AlertDescription.unsupported_extension),  # allowed there, but not requested
    (ExtensionType.key_share, AlertDescription.illegal_parameter),  # §4.2: never allowed in a Certificate
])
def test_client_certificate_entries_may_carry_only_what_we_requested(extension: ExtensionType,
                                                                     alert: AlertDescription) -> None:
    """§4.4.2: "Extensions in the Certificate message from the client MUST correspond to extensions in the
    CertificateRequest message from the server" (ours asks for none); they were not looked at. OpenSSL answers
    unsupported_extension; unknown types are ignored, as there."""
    import dataclasses

    from tests.pairing import key_log_secret, records, split_messages
    from tlskit.enums import ContentType
    from tlskit.messages.extensions import Extension
    from tlskit.messages.handshake import Certificate
    from tlskit.record import RecordDecryptor, RecordEncryptor

    pair = connect(client_config(certificate=client_cert()),
                   server_config(client_auth=ClientAuth(mode="required", trust=trust())))
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    flight = pair.client.data_to_send()
    secret = key_log_secret(pair.client_key_log, "CLIENT_HANDSHAKE_TRAFFIC_SECRET")
    params = pair.client._session.params  # type: ignore[union-attr]
    opener, plain, messages = RecordDecryptor(params, secret), b"", b""
    for kind, fragment in records(flight):
        if kind == ContentType.application_data:
            messages += opener.open(b"\x17\x03\x03" + len(fragment).to_bytes(2, "big"), fragment)[1]
        else:
            plain += bytes((kind, 3, 3)) + len(fragment).to_bytes(2, "big") + fragment
    certificate = Certificate.decode(split_messages(messages)[0][4:])
    first = dataclasses.replace(certificate.entries[0], extensions=(Extension(extension, b"\x00\x1d\x00\x00"),))
    altered = dataclasses.replace(certificate, entries=(first, *certificate.entries[1:])).encode()
    with pytest.raises(AlertError) as raised:
        pair.server.receive_data(plain + RecordEncryptor(params, secret).seal(ContentType.handshake, altered))
    assert raised.value.description is alert
