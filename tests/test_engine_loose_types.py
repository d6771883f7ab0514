"""What users hand the engine that is wider than its annotations: the pure engine always took these, and the
compiled one (mypyc, TLSKIT_COMPILE=1) checks each annotation at run time, so CI's compiled run holds it to them."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle

from tests.pairing import certified, client_config, handshake, pump, server_config
from tlskit.config import CertifiedKey, EarlyDataPolicy
from tlskit.connection import Connection
from tlskit.events import ApplicationData, HandshakeComplete, SessionTicketReceived
from tlskit.stores.base import StoredTicket
from tlskit.stores.memory import MemoryReplayStore, MemorySessionStore
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


def test_early_data_accept_may_answer_any_truthy_value() -> None:
    assert EarlyDataPolicy(accept=lambda name, alpn: 1).allows("a", None) is True  # type: ignore[arg-type,return-value]
    assert EarlyDataPolicy(accept=lambda name, alpn: None).allows("a", None) is False  # type: ignore[arg-type,return-value]
    keys = TicketKeyRing([TicketKey.generate(os.urandom)])
    for answer in (None, "yes"):
        policy = EarlyDataPolicy(accept=lambda name, alpn, a=answer: a)  # type: ignore[misc]
        server = server_config(ticket_keys=keys, replay_store=MemoryReplayStore(), early_data=policy)
        tickets = MemorySessionStore()
        first = handshake(client_config(session_store=tickets), server)
        first.server.send_data(b"x")
        first.pump()
        client = Connection(client_config(session_store=tickets, early_data=True))
        client.start()
        client.send_data(b"early")
        peer = Connection(server)
        pump(client, peer)
        done = [e for e in peer.events() if isinstance(e, HandshakeComplete)]
        assert len(done) == 1 and done[0].resumed and done[0].early_data_accepted is (answer is not None)


def test_events_pickle_and_copy() -> None:
    keys = TicketKeyRing([TicketKey.generate(os.urandom)])
    pair = handshake(server_cfg=server_config(ticket_keys=keys))
    pair.server.send_data(b"hello")
    pair.pump()
    pair.collect()
    events = pair.client_events
    assert any(isinstance(e, SessionTicketReceived) for e in events)
    assert any(isinstance(e, ApplicationData) for e in events)
    for event in events:
        for clone in (pickle.loads(pickle.dumps(event)), copy.copy(event), copy.deepcopy(event)):
            assert clone == event and type(clone) is type(event)
    assert dataclasses.replace(pair.client_complete, resumed=True) != pair.client_complete
    assert isinstance(pickle.loads(pickle.dumps(pair.client_complete)), HandshakeComplete)


def test_a_session_store_may_hand_back_lists_ints_and_buffers() -> None:
    class JSONishStore(MemorySessionStore):
        def take(self, server_name: str, now: float) -> StoredTicket | None:
            ticket = super().take(server_name, now)
            if ticket is None:
                return None
            return dataclasses.replace(ticket, peer_chain=[bytearray(c) for c in ticket.peer_chain],
                                       cipher_suite=int(ticket.cipher_suite), ticket=bytearray(ticket.ticket),
                                       psk=memoryview(ticket.psk))  # as a JSON or database row gives them back

    keys, tickets = TicketKeyRing([TicketKey.generate(os.urandom)]), JSONishStore()
    first = handshake(client_config(session_store=tickets), server_config(ticket_keys=keys))
    first.server.send_data(b"x")
    first.pump()
    again = handshake(client_config(session_store=tickets), server_config(ticket_keys=keys))
    assert again.client_complete.resumed and again.client_complete.peer_certificates == certified("ec256").chain
