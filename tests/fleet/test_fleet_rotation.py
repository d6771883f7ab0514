"""Rotation across the ticket lifetime on two nodes sharing RedisTicketKeys (issue 4 item 7), with the
engine in memory and one injected clock: tickets under the previous key resume on either node, older ones
fall back to a full handshake."""

from __future__ import annotations

import time

from tests.fleet.conftest import RedisServer
from tests.pairing import client_config, handshake, server_config
from tlskit.config import ServerConfig
from tlskit.stores import MemorySessionStore
from tlskit.tickets.redis import RedisTicketKeys

HOUR = 3600.0
LIFETIME = 3 * 3600


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def node(server: RedisServer, prefix: str, clock: Clock) -> ServerConfig:
    keys = RedisTicketKeys(server.client(), prefix=prefix, clock=clock, ticket_lifetime=LIFETIME)
    return server_config(ticket_keys=keys, ticket_lifetime=LIFETIME, clock=clock)


def test_previous_key_tickets_resume_on_either_node_and_older_ones_do_full_handshakes(
    redis_server: RedisServer, prefix: str
) -> None:
    clock = Clock()
    a, b = node(redis_server, prefix, clock), node(redis_server, prefix, clock)
    store = MemorySessionStore()
    first = handshake(client_config(session_store=store, clock=clock), a)
    assert not first.server_complete.resumed
    soon, late = MemorySessionStore(), MemorySessionStore()  # one of its two tickets each
    for kept in (soon, late):
        ticket = store.take(client_config().session_key or "", clock())
        assert ticket is not None
        kept.put(client_config().session_key or "", ticket)

    clock.now += HOUR + 1  # one rotation: the tickets' key is now "previous"
    resumed = handshake(client_config(session_store=soon, clock=clock), b)
    assert resumed.server_complete.resumed and resumed.client_complete.resumed

    clock.now += HOUR  # a second rotation retires it; the ticket itself (3 h) has not expired
    full = handshake(client_config(session_store=late, clock=clock), a)
    assert not full.server_complete.resumed and not full.client_complete.resumed
