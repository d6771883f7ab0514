"""Stapling end to end: StapleCache as ServerConfig.ocsp_staple, seen by our client and `openssl s_client -status`."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from tests.interop.peers import openssl_client
from tests.pairing import client_config, handshake, server_config
from tlskit.config import CertifiedKey
from tlskit.io.asyncio import start_server
from tlskit.pki import TrustStore
from tlskit.pki.ca import CertificateAuthority
from tlskit.pki.ocsp_http import OCSPHTTPServer
from tlskit.pki.revocation import RevocationPolicy
from tlskit.pki.stapling import StapleCache


@dataclass
class Stapled:
    ca: CertificateAuthority
    key: CertifiedKey
    cache: StapleCache


@pytest.fixture(scope="module")
def stapled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stapled]:
    server = OCSPHTTPServer(responder=None)  # type: ignore[arg-type]
    ca = CertificateAuthority.init(tmp_path_factory.mktemp("st") / "ca", intermediate=True,
                                   ocsp_url=server.url + "/")
    server.responder = ca.responder()
    issued = ca.issue(["localhost", "127.0.0.1"])
    chain = tuple(c.public_bytes(Encoding.DER) for c in (issued.certificate, *ca.chain))
    key = CertifiedKey(chain=chain, private_key=load_pem_private_key(issued.key_path.read_bytes(), None))
    cache = StapleCache(background=False)
    with server:
        assert cache.refresh(key.chain) is not None  # prefetch, as a server would at start-up
    yield Stapled(ca, key, cache)


def test_our_client_receives_and_accepts_the_staple_only_when_it_asks(stapled: Stapled) -> None:
    trust = TrustStore(roots=(stapled.ca.root,))
    server_cfg = server_config(certificates=(stapled.key,), ocsp_staple=stapled.cache)
    pair = handshake(client_config(trust=trust, request_ocsp=True), server_cfg)
    staple = pair.client_complete.ocsp_response
    assert staple is not None and staple == stapled.cache(stapled.key)
    chain = pair.client_complete.peer_certificates
    assert RevocationPolicy(mode="must-staple").check(chain, staple, dt.datetime.now(dt.UTC)) == []
    assert handshake(client_config(trust=trust), server_cfg).client_complete.ocsp_response is None


@pytest.mark.interop
def test_openssl_s_client_status_sees_a_good_staple(stapled: Stapled, tmp_path: Path) -> None:
    config = server_config(certificates=(stapled.key,), ocsp_staple=stapled.cache)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    port: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def main() -> None:
        server = await start_server(handler, "127.0.0.1", 0, config=config)
        port.append(server.sockets[0].getsockname()[1])
        started.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        result = openssl_client(port[0], cafile=stapled.ca.directory / "root.pem", brief=False,
                                extra_args=["-status"])
        out = result.stdout + result.stderr
        assert "OCSP Response Status: successful (0x0)" in out
        assert "Cert Status: good" in out
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
