"""One server "node" of a test fleet, run as its own process: ``python -m tests.fleet.node --redis URL ...``.

Ticket keys in Redis (``RedisTicketKeys``), the 0-RTT seen-set in Redis (``RedisReplayStore``). It prints
``listening PORT``, then a line per connection event, ``N early HEX`` / ``N done resumed=R early=E`` /
``N error TEXT`` / ``N end``, and answers the first data of each connection (0-RTT data included) by echoing
it, then closes.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import threading

from tlskit.config import CertifiedKey, EarlyDataPolicy, ServerConfig
from tlskit.connection import Connection
from tlskit.errors import TLSError
from tlskit.events import ApplicationData, ConnectionClosed, EarlyData, HandshakeComplete
from tlskit.stores.redis import RedisReplayStore
from tlskit.tickets.redis import RedisTicketKeys

_print_lock = threading.Lock()


def emit(line: str) -> None:
    with _print_lock:
        print(line, flush=True)


def serve_connection(n: int, sock: socket.socket, config: ServerConfig) -> None:
    conn = Connection(config)
    early: list[bytes] = []
    answered = closed = False

    def answer(data: bytes) -> None:
        nonlocal answered
        if not answered:
            conn.send_data(data)
            conn.close()
            answered = True

    try:
        sock.settimeout(10)
        while not closed:
            data = sock.recv(65536)
            try:
                conn.receive_data(data)
            finally:
                for event in conn.events():
                    match event:
                        case EarlyData(data=d):
                            emit(f"{n} early {d.hex()}")
                            early.append(d)
                        case HandshakeComplete():
                            group = event.group.name if event.group is not None else "none"
                            emit(f"{n} done resumed={int(event.resumed)} early={int(event.early_data_accepted)} "
                                 f"group={group}")
                            if early:
                                answer(b"".join(early))
                        case ApplicationData(data=d):
                            answer(d)
                        case ConnectionClosed():
                            closed = True
                if out := conn.data_to_send():
                    sock.sendall(out)
            if not data or answered:
                break
    except (TLSError, OSError) as e:
        emit(f"{n} error {type(e).__name__}: {e}")
    finally:
        emit(f"{n} end")
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--early-data", action="store_true")
    args = parser.parse_args()
    config = ServerConfig(
        certificates=(CertifiedKey.from_pem_files(args.cert, args.key),),
        ticket_keys=RedisTicketKeys.from_url(args.redis, prefix=args.prefix + "stek:"),
        replay_store=RedisReplayStore.from_url(args.redis, args.prefix + "0rtt:"),
        early_data=EarlyDataPolicy(max_early_data_size=16384) if args.early_data else None,
    )
    listener = socket.create_server(("127.0.0.1", 0))
    emit(f"listening {listener.getsockname()[1]}")
    for n in itertools.count(1):
        sock, _ = listener.accept()
        threading.Thread(target=serve_connection, args=(n, sock, config), daemon=True).start()


if __name__ == "__main__":
    main()
