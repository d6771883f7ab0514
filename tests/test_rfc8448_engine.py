"""The whole engine replays RFC 8448 (§3 simple 1-RTT, §5 HelloRetryRequest) with injected keys and randoms.

The client side of §3 is reproduced byte for byte: given the RFC's ClientHello and x25519 key, our client
must accept the RFC's server records and emit exactly the RFC's Finished, application data and alert
records. The client side of §5 likewise, with both of the RFC's ClientHellos injected (NSS's second one
orders and pads its extensions its own way) and its P-256 key: the second ClientHello record, every secret
after the HelloRetryRequest's message_hash transcript, the Finished and alert records are the RFC's.

The server side of §3 reproduces the ServerHello and handshake secrets byte for byte; its EncryptedExtensions
differ by design (the RFC's server advertises secp521r1 and FFDHE groups, which tlskit does not implement),
so what follows is checked by decrypting with the RFC's keys instead. On §5's server side the
HelloRetryRequest is checked structurally (its cookie is NSS's own opaque value); from the state it leaves,
the RFC's second ClientHello yields the RFC's ServerHello record and handshake secrets byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.vectors import rfc8448 as rfc
from tlskit.config import CertifiedKey, ClientConfig, ServerConfig
from tlskit.connection import Connection
from tlskit.crypto import groups
from tlskit.crypto.suites import suite_params
from tlskit.enums import CipherSuite, ContentType, HandshakeType, NamedGroup, SignatureScheme
from tlskit.events import ApplicationData, ConnectionClosed, HandshakeComplete, SessionTicketReceived
from tlskit.handshake.client import ClientStart
from tlskit.messages.extensions import extension_map, parse_key_share_client, parse_key_share_hrr
from tlskit.messages.handshake import ClientHello, ServerHello
from tlskit.record import RecordDecryptor, RecordReader


def record(section: int, actor: str, action: str, occurrence: int = 0) -> bytes:
    return rfc.find(section, actor, action, occurrence).values["complete record"]


def payload(section: int, actor: str, action: str, occurrence: int = 0) -> bytes:
    return rfc.find(section, actor, action, occurrence).values["payload"]


def secret(section: int, actor: str, label: str) -> bytes:
    return rfc.find(section, actor, f'derive secret "tls13 {label}"').values["expanded"]


def rfc_server_key() -> rsa.RSAPrivateKey:
    k = {name: int.from_bytes(value, "big") for name, value in rfc.SERVER_RSA_KEY.items()}
    public = rsa.RSAPublicNumbers(k["public exponent"], k["modulus"])
    numbers = rsa.RSAPrivateNumbers(
        k["prime1"], k["prime2"], k["private exponent"], k["exponent1"], k["exponent2"], k["coefficient"], public
    )
    return numbers.private_key()


def fixed_random(*chunks: bytes) -> Callable[[int], bytes]:
    """A ``random`` that hands out the given byte strings in order and fails on anything unexpected."""
    queue = list(chunks)

    def draw(n: int) -> bytes:
        assert queue, f"engine asked for {n} more random bytes than the vectors provide"
        chunk = queue.pop(0)
        assert len(chunk) == n, f"engine asked for {n} random bytes, vector has {len(chunk)}"
        return chunk

    return draw


def key_log_sink() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


def logged(lines: list[str], label: str) -> bytes:
    return bytes.fromhex(next(line.split()[2] for line in lines if line.startswith(label + " ")))


# --- §3 client, byte for byte ---------------------------------------------------------------------------


def section3_client() -> tuple[Connection, list[str]]:
    ch_payload = payload(3, "client", "send handshake record")
    hello = ClientHello.decode(ch_payload[4:])
    private = rfc.find(3, "client", "create an ephemeral x25519 key pair").values["private key"]
    share = groups.client_key_share_from_private(NamedGroup.x25519, private)
    lines, sink = key_log_sink()
    config = ClientConfig(
        server_name="server",
        verify_peer=False,  # the RFC's certificate is a 2016 self-signed "rsa" cert without SANs
        middlebox_compat=False,  # §3 is the non-compatibility trace (§7 is the compatibility one)
        key_log=sink,
        clock=lambda: 1_500_000_000.0,
    )
    conn = Connection(config, initial_state=ClientStart(client_hello=hello, shares=[share]))
    return conn, lines


def test_client_hello_record_is_the_rfc_record() -> None:
    conn, _ = section3_client()
    conn.start()
    assert conn.data_to_send() == record(3, "client", "send handshake record")


def test_client_derives_the_rfc_handshake_and_traffic_secrets() -> None:
    conn, lines = section3_client()
    conn.start()
    conn.data_to_send()
    conn.receive_data(record(3, "server", "send handshake record", 0))
    conn.receive_data(record(3, "server", "send handshake record", 1))
    assert logged(lines, "CLIENT_HANDSHAKE_TRAFFIC_SECRET") == secret(3, "server", "c hs traffic")
    assert logged(lines, "SERVER_HANDSHAKE_TRAFFIC_SECRET") == secret(3, "server", "s hs traffic")
    assert logged(lines, "CLIENT_TRAFFIC_SECRET_0") == secret(3, "server", "c ap traffic")
    assert logged(lines, "SERVER_TRAFFIC_SECRET_0") == secret(3, "server", "s ap traffic")
    assert logged(lines, "EXPORTER_SECRET") == secret(3, "server", "exp master")
    assert all(line.split()[1] == payload(3, "client", "send handshake record")[6:38].hex() for line in lines)


def test_client_replays_section_3_byte_for_byte() -> None:
    conn, _ = section3_client()
    conn.start()
    conn.data_to_send()
    conn.receive_data(record(3, "server", "send handshake record", 0))  # ServerHello
    assert conn.data_to_send() == b""  # no CCS: compatibility mode is off in this trace
    conn.receive_data(record(3, "server", "send handshake record", 1))  # EE, Certificate, CV, Finished
    assert conn.data_to_send() == record(3, "client", "send handshake record", 1)  # client Finished

    (complete,) = conn.events()
    assert isinstance(complete, HandshakeComplete)
    assert complete.cipher_suite is CipherSuite.TLS_AES_128_GCM_SHA256
    assert complete.group is NamedGroup.x25519
    assert complete.signature_scheme is SignatureScheme.rsa_pss_rsae_sha256
    cert_msg = rfc.find(3, "server", "construct a Certificate handshake message").values["Certificate"]
    assert complete.peer_certificates[0] in cert_msg

    conn.receive_data(record(3, "server", "send handshake record", 2))  # NewSessionTicket
    (ticket,) = conn.events()
    assert isinstance(ticket, SessionTicketReceived)
    resumption = rfc.find(3, "server", 'generate resumption secret "tls13 resumption"').values["expanded"]
    assert ticket.psk == resumption
    assert ticket.max_early_data_size == 0x400  # §3's ticket allows 1024 bytes of 0-RTT

    conn.send_data(payload(3, "client", "send application_data record"))
    assert conn.data_to_send() == record(3, "client", "send application_data record")
    conn.receive_data(record(3, "server", "send application_data record"))
    assert conn.events() == [ApplicationData(data=payload(3, "server", "send application_data record"))]

    conn.close()
    assert conn.data_to_send() == record(3, "client", "send alert record")
    conn.receive_data(record(3, "server", "send alert record"))
    (closed,) = conn.events()
    assert isinstance(closed, ConnectionClosed) and closed.by_peer and closed.error is None


def test_client_exporter_uses_the_rfc_exporter_secret() -> None:
    conn, _ = section3_client()
    conn.start()
    conn.receive_data(record(3, "server", "send handshake record", 0) + record(3, "server", "send handshake record", 1))
    from tlskit.crypto.keyschedule import export_keying_material

    params = suite_params(CipherSuite.TLS_AES_128_GCM_SHA256)
    expected = export_keying_material(params, secret(3, "server", "exp master"), b"EXPERIMENTAL test", b"ctx", 32)
    assert conn.export_keying_material(b"EXPERIMENTAL test", b"ctx", 32) == expected


def test_client_rejects_the_rfc_flight_with_one_flipped_bit() -> None:
    conn, _ = section3_client()
    conn.start()
    conn.receive_data(record(3, "server", "send handshake record", 0))
    flight = bytearray(record(3, "server", "send handshake record", 1))
    flight[100] ^= 1
    from tlskit.errors import AlertError

    with pytest.raises(AlertError) as info:
        conn.receive_data(bytes(flight))
    assert info.value.description.name == "bad_record_mac"


# --- §3 server ---------------------------------------------------------------------------------------------


def section3_server() -> tuple[Connection, list[str]]:
    cert_msg = rfc.find(3, "server", "construct a Certificate handshake message").values["Certificate"]
    cert_der = cert_msg[4 + 1 + 3 + 3 :][: int.from_bytes(cert_msg[8:11], "big")]
    certified = CertifiedKey(chain=(cert_der,), private_key=rfc_server_key())
    server_private = rfc.find(3, "server", "create an ephemeral x25519 key pair").values["private key"]
    server_hello = ServerHello.decode(payload(3, "server", "send handshake record")[4:])
    lines, sink = key_log_sink()
    config = ServerConfig(
        certificates=(certified,),
        middlebox_compat=False,
        random=fixed_random(server_private, server_hello.random),
        key_log=sink,
    )
    return Connection(config), lines


def test_server_hello_is_the_rfc_server_hello() -> None:
    conn, lines = section3_server()
    conn.receive_data(record(3, "client", "send handshake record"))
    out = conn.data_to_send()
    sh_record = record(3, "server", "send handshake record", 0)
    assert out.startswith(sh_record)
    assert logged(lines, "CLIENT_HANDSHAKE_TRAFFIC_SECRET") == secret(3, "server", "c hs traffic")
    assert logged(lines, "SERVER_HANDSHAKE_TRAFFIC_SECRET") == secret(3, "server", "s hs traffic")


def test_server_flight_decrypts_under_the_rfc_handshake_key() -> None:
    conn, _ = section3_server()
    conn.receive_data(record(3, "client", "send handshake record"))
    out = conn.data_to_send()
    reader = RecordReader()
    reader.feed(out[len(record(3, "server", "send handshake record", 0)) :])
    rec = reader.next_record()
    assert rec is not None
    params = suite_params(CipherSuite.TLS_AES_128_GCM_SHA256)
    content_type, plain = RecordDecryptor(params, secret(3, "server", "s hs traffic")).open(rec[1], rec[2])
    assert content_type is ContentType.handshake
    # EncryptedExtensions first: ours acknowledges SNI and answers record_size_limit like the RFC's server.
    assert plain[0] == HandshakeType.encrypted_extensions
    ee_len = int.from_bytes(plain[1:4], "big")
    ee = plain[: 4 + ee_len]
    assert b"\x00\x1c\x00\x02\x40\x01" in ee and b"\x00\x00\x00\x00" in ee
    # ...then the RFC's Certificate message exactly, and a CertificateVerify (RSA-PSS is randomized, and
    # our transcript differs from the RFC's from EncryptedExtensions on) that verifies under the RFC's key.
    rest = plain[4 + ee_len :]
    cert_msg = rfc.find(3, "server", "construct a Certificate handshake message").values["Certificate"]
    assert rest.startswith(cert_msg)
    cv = rest[len(cert_msg) :]
    assert cv[0] == HandshakeType.certificate_verify
    assert int.from_bytes(cv[4:6], "big") == SignatureScheme.rsa_pss_rsae_sha256
    assert int.from_bytes(cv[6:8], "big") == 128  # the RFC's server key is RSA-1024


# --- §5 HelloRetryRequest -------------------------------------------------------------------------------


def test_client_answers_the_rfc_hello_retry_request() -> None:
    ch1 = ClientHello.decode(payload(5, "client", "send handshake record", 0)[4:])
    x_private = rfc.find(5, "client", "create an ephemeral x25519 key pair").values["private key"]
    p256 = rfc.find(5, "client", "create an ephemeral P-256 key pair").values
    # client_key_share draws 40 bytes and reduces them mod (n - 1), then adds 1: feed it (d - 1).
    scalar = int.from_bytes(p256["private key"], "big") - 1
    config = ClientConfig(
        server_name="server",
        verify_peer=False,
        middlebox_compat=False,
        groups=(NamedGroup.x25519, NamedGroup.secp256r1),
        random=fixed_random(scalar.to_bytes(40, "big")),
    )
    share = groups.client_key_share_from_private(NamedGroup.x25519, x_private)
    conn = Connection(config, initial_state=ClientStart(client_hello=ch1, shares=[share]))
    conn.start()
    assert conn.data_to_send() == record(5, "client", "send handshake record", 0)
    hrr_payload = payload(5, "server", "send handshake record", 0)
    hrr = ServerHello.decode(hrr_payload[4:])
    assert hrr.is_hello_retry_request
    assert parse_key_share_hrr(extension_map(hrr.extensions)[hrr.extensions[0].type]) is NamedGroup.secp256r1
    conn.receive_data(record(5, "server", "send handshake record", 0))
    out = conn.data_to_send()
    assert out[:3] == b"\x16\x03\x03"  # the second ClientHello is not the first record: legacy version 0x0303
    ch2 = ClientHello.decode(out[5 + 4 :])
    rfc_ch2 = ClientHello.decode(payload(5, "client", "send handshake record", 1)[4:])
    ours, theirs = extension_map(ch2.extensions), extension_map(rfc_ch2.extensions)
    (entry,) = parse_key_share_client(ours[next(e.type for e in ch2.extensions if e.type.name == "key_share")])
    assert entry.group is NamedGroup.secp256r1 and entry.key_exchange == p256["public key"]
    assert (
        ours[next(e.type for e in ch2.extensions if e.type.name == "key_share")]
        == theirs[entry and next(e.type for e in rfc_ch2.extensions if e.type.name == "key_share")]
    )
    cookie_type = next(e.type for e in rfc_ch2.extensions if e.type.name == "cookie")
    assert ours[cookie_type] == theirs[cookie_type]  # the cookie is echoed verbatim (§4.2.2)
    assert ch2.random == ch1.random and ch2.cipher_suites == ch1.cipher_suites


def test_client_replays_section_5_hello_retry_byte_for_byte() -> None:
    """§5 from the client's side: given the RFC's two ClientHellos (NSS orders and pads its extensions its own
    way, so the second one is injected like the first) and key shares, every record we send is the RFC's and
    every secret the RFC's — the transcript's message_hash (§4.4.1) included."""
    ch1 = ClientHello.decode(payload(5, "client", "send handshake record", 0)[4:])
    ch2 = ClientHello.decode(payload(5, "client", "send handshake record", 1)[4:])
    x_private = rfc.find(5, "client", "create an ephemeral x25519 key pair").values["private key"]
    scalar = int.from_bytes(rfc.find(5, "client", "create an ephemeral P-256 key pair").values["private key"], "big")
    lines, sink = key_log_sink()
    config = ClientConfig(
        server_name="server",
        verify_peer=False,
        middlebox_compat=False,
        groups=(NamedGroup.x25519, NamedGroup.secp256r1),
        random=fixed_random((scalar - 1).to_bytes(40, "big")),  # client_key_share reduces 40 bytes mod (n - 1), + 1
        key_log=sink,
    )
    share = groups.client_key_share_from_private(NamedGroup.x25519, x_private)
    conn = Connection(config, initial_state=ClientStart(client_hello=ch1, shares=[share], retry_hello=ch2))
    conn.start()
    assert conn.data_to_send() == record(5, "client", "send handshake record", 0)
    conn.receive_data(record(5, "server", "send handshake record", 0))  # HelloRetryRequest
    assert conn.data_to_send() == record(5, "client", "send handshake record", 1)
    conn.receive_data(record(5, "server", "send handshake record", 1))  # ServerHello
    conn.receive_data(record(5, "server", "send handshake record", 2))  # EE, Certificate, CV, Finished
    assert conn.data_to_send() == record(5, "client", "send handshake record", 2)  # client Finished
    for label, key in (("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "c hs traffic"),
                       ("SERVER_HANDSHAKE_TRAFFIC_SECRET", "s hs traffic"),
                       ("CLIENT_TRAFFIC_SECRET_0", "c ap traffic"), ("SERVER_TRAFFIC_SECRET_0", "s ap traffic"),
                       ("EXPORTER_SECRET", "exp master")):
        assert logged(lines, label) == secret(5, "server", key), label
    (complete,) = conn.events()
    assert isinstance(complete, HandshakeComplete) and complete.hello_retry
    assert complete.group is NamedGroup.secp256r1
    conn.close()
    assert conn.data_to_send() == record(5, "client", "send alert record")
    conn.receive_data(record(5, "server", "send alert record"))
    (closed,) = conn.events()
    assert isinstance(closed, ConnectionClosed) and closed.by_peer and closed.error is None


def test_an_injected_second_client_hello_must_answer_the_hello_retry_request() -> None:
    from tlskit.errors import ConfigError

    ch1 = ClientHello.decode(payload(5, "client", "send handshake record", 0)[4:])
    x_private = rfc.find(5, "client", "create an ephemeral x25519 key pair").values["private key"]
    config = ClientConfig(server_name="server", verify_peer=False, middlebox_compat=False,
                          groups=(NamedGroup.x25519, NamedGroup.secp256r1))  # a fresh P-256 key, not the RFC's
    share = groups.client_key_share_from_private(NamedGroup.x25519, x_private)
    ch2 = ClientHello.decode(payload(5, "client", "send handshake record", 1)[4:])
    conn = Connection(config, initial_state=ClientStart(client_hello=ch1, shares=[share], retry_hello=ch2))
    conn.start()
    with pytest.raises(ConfigError):
        conn.receive_data(record(5, "server", "send handshake record", 0))


def test_server_sends_hello_retry_request_for_the_rfc_first_client_hello() -> None:
    cert_msg = rfc.find(3, "server", "construct a Certificate handshake message").values["Certificate"]
    cert_der = cert_msg[4 + 1 + 3 + 3 :][: int.from_bytes(cert_msg[8:11], "big")]
    config = ServerConfig(
        certificates=(CertifiedKey(chain=(cert_der,), private_key=rfc_server_key()),),
        groups=(NamedGroup.secp256r1,),
        middlebox_compat=False,
    )
    conn = Connection(config)
    conn.receive_data(record(5, "client", "send handshake record", 0))
    out = conn.data_to_send()
    hrr = ServerHello.decode(out[5 + 4 :])
    assert hrr.is_hello_retry_request
    rfc_hrr = ServerHello.decode(payload(5, "server", "send handshake record", 0)[4:])
    assert hrr.cipher_suite == rfc_hrr.cipher_suite and hrr.legacy_session_id == rfc_hrr.legacy_session_id
    ours, theirs = extension_map(hrr.extensions), extension_map(rfc_hrr.extensions)
    assert set(ours) == set(theirs)  # key_share, cookie, supported_versions
    ks = next(e.type for e in hrr.extensions if e.type.name == "key_share")
    assert ours[ks] == theirs[ks]  # both select secp256r1


def test_server_answers_the_rfc_second_client_hello_byte_for_byte() -> None:
    """§5 from the server's side, after its HelloRetryRequest: the state the RFC's HRR left (its NSS cookie
    included) is given, then the RFC's second ClientHello must yield the RFC's ServerHello record and
    handshake secrets (its EncryptedExtensions differ by design, as in §3)."""
    from tlskit.crypto.transcript import Transcript
    from tlskit.handshake.negotiation import read_offer
    from tlskit.handshake.server import ExpectSecondClientHello
    from tlskit.messages.extensions import parse_cookie

    cert_msg = rfc.find(3, "server", "construct a Certificate handshake message").values["Certificate"]
    cert_der = cert_msg[4 + 1 + 3 + 3 :][: int.from_bytes(cert_msg[8:11], "big")]
    p256 = rfc.find(5, "server", "create an ephemeral P-256 key pair").values["private key"]
    server_p256 = int.from_bytes(p256, "big")
    server_hello = ServerHello.decode(payload(5, "server", "send handshake record", 1)[4:])
    lines, sink = key_log_sink()
    config = ServerConfig(
        certificates=(CertifiedKey(chain=(cert_der,), private_key=rfc_server_key()),),
        groups=(NamedGroup.secp256r1,),
        middlebox_compat=False,
        random=fixed_random((server_p256 - 1).to_bytes(40, "big"), server_hello.random),
        key_log=sink,
    )
    ch1_raw = payload(5, "client", "send handshake record", 0)
    hrr_raw = payload(5, "server", "send handshake record", 0)
    hrr = ServerHello.decode(hrr_raw[4:])
    offer = read_offer(config, ClientHello.decode(ch1_raw[4:]))
    params = suite_params(offer.suite)
    transcript = Transcript(params.hash_name)
    transcript.add(ch1_raw)
    transcript.replace_with_message_hash()  # §4.4.1
    transcript.add(hrr_raw)
    cookie = parse_cookie(next(e.data for e in hrr.extensions if e.type.name == "cookie"))
    state = ExpectSecondClientHello(
        first=offer, group=NamedGroup.secp256r1, params=params, transcript=transcript, cookie=cookie
    )
    conn = Connection(config, initial_state=state)
    conn.receive_data(record(5, "client", "send handshake record", 1))
    assert conn.data_to_send().startswith(record(5, "server", "send handshake record", 1))
    assert logged(lines, "CLIENT_HANDSHAKE_TRAFFIC_SECRET") == secret(5, "server", "c hs traffic")
    assert logged(lines, "SERVER_HANDSHAKE_TRAFFIC_SECRET") == secret(5, "server", "s hs traffic")


# --- §4 resumed 0-RTT, client side byte for byte -------------------------------------------------------------


def test_client_replays_section_4_resumption_with_early_data_byte_for_byte() -> None:
    from tlskit.events import EarlyData  # noqa: F401  (server-side event; the client sees none)
    from tlskit.messages.handshake import NewSessionTicket
    from tlskit.stores.base import StoredTicket

    nst_payload = rfc.find(3, "server", "construct a NewSessionTicket handshake message").values["NewSessionTicket"]
    nst = NewSessionTicket.decode(nst_payload[4:])
    psk = rfc.find(3, "server", 'generate resumption secret "tls13 resumption"').values["expanded"]
    ticket = StoredTicket(
        ticket=nst.ticket,
        psk=psk,
        cipher_suite=CipherSuite.TLS_AES_128_GCM_SHA256,
        server_name="server",
        alpn=None,
        received_at=0.0,
        lifetime=nst.lifetime,
        age_add=nst.age_add,
        max_early_data_size=0x400,
    )
    hello = ClientHello.decode(payload(4, "client", "send handshake record")[4:])
    private = rfc.find(4, "client", "create an ephemeral x25519 key pair").values["private key"]
    share = groups.client_key_share_from_private(NamedGroup.x25519, private)
    lines, sink = key_log_sink()
    config = ClientConfig(
        server_name="server", verify_peer=False, middlebox_compat=False, early_data=True, key_log=sink
    )
    conn = Connection(config, initial_state=ClientStart(client_hello=hello, shares=[share], ticket=ticket))
    conn.start()
    assert conn.data_to_send() == record(4, "client", "send handshake record")
    early_secret = rfc.find(4, "client", 'derive secret "tls13 c e traffic"').values["expanded"]
    assert logged(lines, "CLIENT_EARLY_TRAFFIC_SECRET") == early_secret

    conn.send_data(payload(4, "client", "send application_data record"))  # 0-RTT data
    assert conn.data_to_send() == record(4, "client", "send application_data record")

    conn.receive_data(record(4, "server", "send handshake record", 0))  # ServerHello with pre_shared_key
    conn.receive_data(record(4, "server", "send handshake record", 1))  # EE (early_data accepted), Finished
    end_of_early_data = record(4, "client", "send handshake record", 1)
    finished = record(4, "client", "send handshake record", 2)
    assert conn.data_to_send() == end_of_early_data + finished
    (complete,) = conn.events()
    assert isinstance(complete, HandshakeComplete)
    assert complete.resumed and complete.early_data_accepted and complete.peer_certificates == ()

    conn.send_data(payload(4, "client", "send application_data record", 1))
    assert conn.data_to_send() == record(4, "client", "send application_data record", 1)
    conn.receive_data(record(4, "server", "send application_data record"))
    assert conn.events() == [ApplicationData(data=payload(4, "server", "send application_data record"))]
    conn.close()
    assert conn.data_to_send() == record(4, "client", "send alert record")
