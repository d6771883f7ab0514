"""Crafted ClientHellos for scanning and diagnosis, and the first answer they get.

tlskit speaks only TLS 1.3, but telling what a server accepts needs hellos it would never send: TLS 1.0-1.2
hellos (RFC 5246 §7.4.1.2 layout, no supported_versions), TLS 1.3 hellos offering a single suite, group or
signature scheme, or no key share at all (to provoke a HelloRetryRequest, RFC 8446 §4.1.4). Only the first
server flight is read: a ServerHello, an alert, a reset, or bytes that are not TLS.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..codec import Reader, Writer
from ..crypto.groups import client_key_share
from ..enums import (
    AlertDescription,
    CipherSuite,
    ExtensionType,
    NamedGroup,
    ProtocolVersion,
    PskKeyExchangeMode,
    SignatureScheme,
)
from ..errors import TLSError
from ..messages import extensions as ext
from ..messages.extensions import Extension, KeyShareEntry
from ..messages.handshake import ClientHello, ServerHello

__all__ = ["TLS12_SUITES", "Answer", "HelloSpec", "build_client_hello", "fetch_legacy_chain", "send_hello"]

# TLS 1.2 suites worth asking about (IANA names), strongest first; enough to see what a server picks.
TLS12_SUITES: dict[int, str] = {
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    0x0005: "TLS_RSA_WITH_RC4_128_SHA",
}
_LEGACY_GROUPS = (NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1, NamedGroup.secp521r1)
_LEGACY_SIGALGS = (
    SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384,
    SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pkcs1_sha256,
    SignatureScheme.rsa_pkcs1_sha384, SignatureScheme.ed25519, SignatureScheme.rsa_pkcs1_sha1,
    SignatureScheme.ecdsa_sha1,
)
_TLS13_SUITES = (CipherSuite.TLS_AES_128_GCM_SHA256, CipherSuite.TLS_AES_256_GCM_SHA384,
                 CipherSuite.TLS_CHACHA20_POLY1305_SHA256)
_TLS13_GROUPS = (NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1, NamedGroup.X25519MLKEM768)
_TLS13_SIGALGS = (
    SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384,
    SignatureScheme.ecdsa_secp521r1_sha512, SignatureScheme.ed25519, SignatureScheme.ed448,
    SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512,
    SignatureScheme.rsa_pss_pss_sha256, SignatureScheme.rsa_pss_pss_sha384, SignatureScheme.rsa_pss_pss_sha512,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class HelloSpec:
    """What a crafted ClientHello offers. ``version`` below TLS 1.3 builds a legacy hello of that version;
    TLS 1.3 sends supported_versions (``also_tls12`` adds 1.2 to it)."""

    version: int = ProtocolVersion.TLS1_3
    server_name: str | None = None
    suites: Sequence[int] = ()
    groups: Sequence[NamedGroup] = ()
    key_shares: Sequence[NamedGroup] | None = None  # None: a share for the first group
    signature_algorithms: Sequence[SignatureScheme] = ()
    alpn: Sequence[str] = ()
    also_tls12: bool = False
    status_request: bool = False


def build_client_hello(spec: HelloSpec) -> bytes:
    """The ClientHello as one plaintext record (record version 0x0301, as §D.1 / RFC 5246 §E.1 advise)."""
    tls13 = spec.version >= ProtocolVersion.TLS1_3
    groups = tuple(spec.groups) or (_TLS13_GROUPS if tls13 else _LEGACY_GROUPS)
    exts: list[Extension] = []
    if spec.server_name:
        exts.append(Extension(ExtensionType.server_name, ext.server_name_body(spec.server_name)))
    exts.append(Extension(ExtensionType.supported_groups, ext.supported_groups_body(groups)))
    sigalgs = tuple(spec.signature_algorithms) or (_TLS13_SIGALGS if tls13 else _LEGACY_SIGALGS)
    exts.append(Extension(ExtensionType.signature_algorithms, ext.signature_algorithms_body(sigalgs)))
    if spec.alpn:
        exts.append(Extension(ExtensionType.application_layer_protocol_negotiation, ext.alpn_body(spec.alpn)))
    if spec.status_request:
        exts.append(Extension(ExtensionType.status_request, ext.status_request_body()))
    if tls13:
        shares = groups[:1] if spec.key_shares is None else tuple(spec.key_shares)
        entries = [KeyShareEntry(g, client_key_share(g, os.urandom).public) for g in shares]
        exts.append(Extension(ExtensionType.key_share, ext.key_share_client_body(entries)))
        versions = [ProtocolVersion.TLS1_3] + ([ProtocolVersion.TLS1_2] if spec.also_tls12 else [])
        exts.append(Extension(ExtensionType.supported_versions, ext.supported_versions_client_body(versions)))
        exts.append(Extension(ExtensionType.psk_key_exchange_modes,
                              ext.psk_modes_body([PskKeyExchangeMode.psk_dhe_ke])))
        suites = tuple(spec.suites) or _TLS13_SUITES
        if spec.also_tls12:
            suites = tuple(suites) + tuple(TLS12_SUITES)
    else:
        exts.append(Extension(ExtensionType.ec_point_formats, b"\x01\x00"))  # uncompressed (RFC 8422 §5.1.2)
        exts.append(Extension(ExtensionType.renegotiation_info, b"\x00"))  # RFC 5746 §3.4
        suites = tuple(spec.suites) or tuple(TLS12_SUITES)
    hello = ClientHello(
        legacy_version=ProtocolVersion.TLS1_2 if tls13 else spec.version,
        random=os.urandom(32),
        legacy_session_id=os.urandom(32) if tls13 else b"",
        cipher_suites=tuple(CipherSuite(s) for s in suites),
        extensions=tuple(exts),
    ).encode()
    w = Writer()
    w.u8(22)
    w.u16(ProtocolVersion.TLS1_0)
    w.vector(2, hello)
    return w.getvalue()


AnswerKind = Literal["server_hello", "hello_retry", "alert", "eof", "reset", "timeout", "not_tls", "connect"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Answer:
    """The server's first reply to a crafted hello."""

    kind: AnswerKind
    version: int | None = None  # negotiated (supported_versions, else legacy_version)
    cipher_suite: int | None = None
    group: NamedGroup | None = None  # key_share of a ServerHello, or the group a HelloRetryRequest asks for
    cookie: bool = False  # a HelloRetryRequest carried a cookie
    alert: AlertDescription | None = None
    downgrade_sentinel: bool = False  # ServerHello.random ends in DOWNGRADE_TLS12/11 (§4.1.3)
    raw: bytes = b""
    seconds: float = 0.0
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.kind in ("server_hello", "hello_retry")


def send_hello(host: str, port: int, spec: HelloSpec, *, timeout: float = 5.0, limit: int = 1 << 18) -> Answer:
    """Send one crafted ClientHello on a new TCP connection and classify the first answer: within ``timeout``
    seconds in all and ``limit`` bytes read, however the server drips or streams them."""
    start = time.perf_counter()
    deadline = start + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return Answer(kind="timeout" if isinstance(e, TimeoutError) else "connect", detail=str(e.strerror or e))
    with sock:
        buf = bytearray()
        try:
            sock.sendall(build_client_hello(spec))
            while True:
                answer = _classify(bytes(buf))
                if answer is not None:
                    return _timed(answer, start)
                if len(buf) > limit:
                    return _timed(Answer(kind="not_tls", raw=bytes(buf[:64]),
                                         detail=f"no ServerHello or alert within the first {limit} bytes"), start)
                data = _recv_by(sock, deadline)
                if not data:
                    return _timed(Answer(kind="eof", raw=bytes(buf), detail="closed without a reply"), start)
                buf += data
        except TimeoutError:
            what = f"no complete reply ({len(buf)} bytes)" if buf else "no reply"
            return _timed(Answer(kind="timeout", raw=bytes(buf), detail=f"{what} within {timeout:g} s"), start)
        except OSError as e:
            return _timed(Answer(kind="reset", raw=bytes(buf), detail=str(e.strerror or e)), start)


def _recv_by(sock: socket.socket, deadline: float) -> bytes:
    """``sock.recv`` that raises TimeoutError once ``deadline`` (``perf_counter``) has passed: a socket timeout
    alone restarts with every byte, so a server sending one now and then would hold us for ever."""
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)
    return sock.recv(16384)


def _timed(answer: Answer, start: float) -> Answer:
    return Answer(**{**{f: getattr(answer, f) for f in answer.__dataclass_fields__},
                     "seconds": time.perf_counter() - start})


def _classify(data: bytes) -> Answer | None:
    """An Answer once ``data`` holds enough to tell, else None."""
    if len(data) < 5:
        return None
    if data[0] not in (21, 22) or data[1] != 3:
        return Answer(kind="not_tls", raw=data[:64], detail=f"reply is not TLS: {data[:40]!r}")
    length = int.from_bytes(data[3:5], "big")
    if len(data) < 5 + length:
        return None
    body = data[5 : 5 + length]
    if data[0] == 21:
        if len(body) < 2:
            return Answer(kind="not_tls", raw=data[:64], detail="truncated alert")
        return Answer(kind="alert", alert=AlertDescription(body[1]), raw=data[:64])
    if len(body) < 4:
        return None  # a ServerHello split over records: rare enough to wait for more
    size = int.from_bytes(body[1:4], "big")
    if body[0] != 2 or len(body) < 4 + size:
        if body[0] != 2:
            return Answer(kind="not_tls", raw=data[:64], detail=f"first handshake message is type {body[0]}")
        return None
    try:
        hello = ServerHello.decode(body[4 : 4 + size])
    except TLSError as e:
        return Answer(kind="not_tls", raw=data[:64], detail=f"malformed ServerHello: {e}")
    exts = ext.extension_map(hello.extensions)
    version = hello.legacy_version
    group = None
    try:
        if ExtensionType.supported_versions in exts:
            version = ext.parse_supported_versions_server(exts[ExtensionType.supported_versions])
        share = exts.get(ExtensionType.key_share)
        if share is not None:
            group = ext.parse_key_share_hrr(share) if hello.is_hello_retry_request else \
                ext.parse_key_share_server(share).group
    except TLSError as e:
        return Answer(kind="not_tls", raw=data[:64], detail=f"malformed ServerHello extension: {e}")
    sentinel = hello.random[-8:] in (bytes.fromhex("444f574e47524401"), bytes.fromhex("444f574e47524400"))
    return Answer(kind="hello_retry" if hello.is_hello_retry_request else "server_hello", version=version,
                  cipher_suite=int(hello.cipher_suite), group=group, cookie=ExtensionType.cookie in exts,
                  downgrade_sentinel=sentinel, raw=data[:64])


def fetch_legacy_chain(host: str, port: int, spec: HelloSpec, *, timeout: float = 5.0,
                       limit: int = 1 << 18) -> tuple[tuple[bytes, ...], str]:
    """The certificate_list of a TLS 1.0-1.2 server (RFC 5246 §7.4.2: its Certificate message goes in the clear,
    after the ServerHello), from a crafted legacy hello: (DER certificates, "") or ((), why there are none).
    Reads at most ``limit`` bytes, within ``timeout`` seconds in all."""
    deadline = time.perf_counter() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return (), str(e.strerror or e)
    with sock:
        records, messages = bytearray(), bytearray()
        try:
            sock.sendall(build_client_hello(spec))
            while True:
                while len(records) >= 5:  # whole records -> handshake bytes
                    length = int.from_bytes(records[3:5], "big")
                    if len(records) < 5 + length:
                        break
                    kind, body = records[0], bytes(records[5 : 5 + length])
                    del records[: 5 + length]
                    if kind == 21 and len(body) >= 2:
                        return (), f"alert {AlertDescription.of(body[1]).name}"
                    if kind != 22:
                        return (), f"record of content type {kind} before the Certificate"
                    messages += body
                while len(messages) >= 4:  # whole handshake messages
                    size = int.from_bytes(messages[1:4], "big")
                    if len(messages) < 4 + size:
                        break
                    msg_type, body = messages[0], bytes(messages[4 : 4 + size])
                    del messages[: 4 + size]
                    if msg_type == 11:
                        return _certificate_list(body), ""
                    if msg_type == 14:  # ServerHelloDone
                        return (), "the server sent no Certificate"
                if len(records) + len(messages) > limit:
                    return (), f"no Certificate within the first {limit} bytes"
                data = _recv_by(sock, deadline)
                if not data:
                    return (), "closed before the Certificate"
                records += data
        except TimeoutError:
            return (), f"no Certificate within {timeout:g} s"
        except (OSError, TLSError) as e:
            return (), str(getattr(e, "strerror", None) or e)


def _certificate_list(body: bytes) -> tuple[bytes, ...]:
    """``ASN.1Cert certificate_list<0..2^24-1>`` (RFC 5246 §7.4.2)."""
    r = Reader(body)
    entries = r.sub(3)
    r.finish()
    chain = []
    while entries.remaining:
        chain.append(entries.vector(3, 1))
    return tuple(chain)
