"""What users hand the engine that is wider than its annotations: the pure engine always took these, and the
compiled one (mypyc, TLSKIT_COMPILE=1) checks each annotation at run time, so CI's compiled run holds it to them."""

from __future__ import annotations

import os

from tests.pairing import certified, client_config, handshake, server_config
from tlskit.config import CertifiedKey
from tlskit.events import SessionTicketReceived
from tlskit.tickets.keyring import TicketKey, TicketKeyRing


def buffers(kind: type[bytearray] | type[memoryview]) -> object:
    return lambda n: kind(os.urandom(n))


def test_random_may_return_a_bytearray_or_a_memoryview() -> None:
    for kind in (bytearray, memoryview):
        keys = TicketKeyRing([TicketKey.generate(os.urandom)])
        for group in ("x25519", "secp256r1", "X25519MLKEM768"):
            pair = handshake(client_config(random=buffers(kind), groups=(group,)),
                             server_config(random=buffers(kind), groups=(group,), ticket_keys=keys))
            pair.server.send_data(b"x")
            pair.pump()
            pair.collect()
            assert any(isinstance(e, SessionTicketReceived) for e in pair.client_events)
            assert pair.client_complete.group is not None and pair.client_complete.group.name == group


def test_certified_key_takes_lists() -> None:
    key = certified("ec256")
    listed = CertifiedKey(chain=list(key.chain), private_key=key.private_key, schemes=list(key.schemes),
                          ocsp_response=bytearray(b"staple"))
    assert listed.chain == key.chain and listed.schemes == key.schemes and listed.ocsp_response == b"staple"
    pair = handshake(client_config(request_ocsp=True), server_config(certificates=(listed,)))
    assert pair.client_complete.ocsp_response == b"staple"


def test_ocsp_staple_callback_may_return_a_bytearray() -> None:
    pair = handshake(client_config(request_ocsp=True), server_config(ocsp_staple=lambda cert: bytearray(b"s")))
    assert pair.client_complete.ocsp_response == b"s"
