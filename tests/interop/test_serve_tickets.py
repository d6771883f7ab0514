"""`tlskit serve` session tickets and 0-RTT against `openssl s_client -sess_out` / `-sess_in -early_data`.

RFC 8470 as the server applies it: a GET in early data is served (and proxied with ``Early-Data: 1``), a
POST in early data is answered ``425 Too Early``; with ``--redis`` the replay set lives in a real
``redis-server``, and once it is stopped 0-RTT is refused while resumption and 1-RTT keep working.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.fleet.conftest import RedisServer, own_redis
from tests.interop.peers import require, tool_version
from tests.served import Served, start

__all__ = ["own_redis"]  # the fixture, imported so pytest finds it here

OPENSSL = tool_version("openssl")
GET = b"GET /api/item HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
POST = b"POST /index.html HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"



def serve(tmp_path: Path, upstream: int, *flags: str) -> Served:
    (tmp_path / "www").mkdir(exist_ok=True)
    (tmp_path / "www" / "index.html").write_text("static\n")
    config = tmp_path / "site.toml"
    config.write_text(f'[[route]]\nroot = "www"\n\n[[route]]\npath = "/api/"\nproxy = "http://127.0.0.1:{upstream}"\n')
    return start(["--config", str(config), "--host", "127.0.0.1", "--port", "0", *flags],
                 {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")})


def s_client(served: Served, session: Path, tmp_path: Path, *, early: bytes | None = None,
             after: bytes = b"") -> str:
    """One connection: save the session (first, sending GET) or resume it with ``early`` as 0-RTT data and
    ``after`` once the handshake is done (openssl does not resend rejected early data). Waits for the server
    to close."""
    openssl = require("openssl")
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{served.port}", "-servername", "localhost",
            "-CAfile", str(served.cacert), "-ign_eof"]
    if early is None:
        args += ["-sess_out", str(session)]
    else:
        (tmp_path / "early.txt").write_bytes(early)
        args += ["-sess_in", str(session), "-early_data", str(tmp_path / "early.txt")]
    result = subprocess.run(args, input=GET if early is None else after,
                            capture_output=True, timeout=20, check=False)
    return result.stdout.decode("latin-1") + result.stderr.decode("latin-1")


def upstream_saw(output: str) -> dict[str, Any]:
    """The echo upstream's JSON in s_client's output."""
    seen, _ = json.JSONDecoder().raw_decode(output[output.index('{"path"'):])
    assert isinstance(seen, dict)
    return seen


def test_early_get_is_served_and_proxied_with_early_data_header_and_post_gets_425(tmp_path: Path,
                                                                                  upstream: int) -> None:
    served = serve(tmp_path, upstream, "--early-data", "--early-data-window", "1")
    time.sleep(2.2)  # RFC 8446 §8.2: a freshly started server refuses 0-RTT for twice the window
    try:
        session = tmp_path / "session.pem"
        first = s_client(served, session, tmp_path)
        assert "Max Early Data: 16384" in first, f"{OPENSSL}:\n{first}"
        seen = upstream_saw(first)
        assert "early-data" not in seen["headers"]  # 1-RTT: nothing to flag

        resumed = s_client(served, session, tmp_path, early=GET)
        assert "Reused, TLSv1.3" in resumed and "Early data was accepted" in resumed, f"{OPENSSL}:\n{resumed}"
        assert "HTTP/1.1 200 OK" in resumed, resumed
        seen = upstream_saw(resumed)
        assert seen["headers"]["early-data"] == "1" and seen["path"] == "/api/item"
        fields = served.access(r'"GET /api/item HTTP/1.1" 200 .* resumed=1')
        assert fields["early"] == "1", fields

        refused = s_client(served, session, tmp_path, early=POST)
        assert "Early data was accepted" in refused and "HTTP/1.1 425 Too Early" in refused, f"{OPENSSL}:\n{refused}"
        assert served.access(r'"POST /index.html HTTP/1.1" 425 ')["early"] == "1"
        served.wait_log(r"POST /index.html from 127\.0\.0\.1 \(SNI localhost\) answered 425")  # not "SNI -"
    finally:
        served.stop()


def test_redis_shares_the_replay_set_and_when_it_stops_0rtt_is_refused(tmp_path: Path, upstream: int,
                                                                       own_redis: RedisServer) -> None:
    own_redis.age_replay_set("tlskit:0rtt:")  # a fleet that has run for a while (a new set refuses 0-RTT)
    served = serve(tmp_path, upstream, "--early-data", "--redis", own_redis.url)
    try:
        session = tmp_path / "session.pem"
        s_client(served, session, tmp_path)
        accepted = s_client(served, session, tmp_path, early=GET)
        assert "Early data was accepted" in accepted and "HTTP/1.1 200 OK" in accepted, f"{OPENSSL}:\n{accepted}"
        assert own_redis.client().keys("tlskit:0rtt:*"), "the ClientHello was not recorded in Redis"
        assert own_redis.client().hget("tlskit:stek:ring", "current"), "the ticket keys are not in Redis"

        own_redis.stop()
        refused = s_client(served, session, tmp_path, early=GET, after=GET)
        assert "Reused, TLSv1.3" in refused, f"resumption needs no Redis ({OPENSSL}):\n{refused}"
        assert "Early data was rejected" in refused, f"{OPENSSL}:\n{refused}"
        assert "HTTP/1.1 200 OK" in refused, refused  # sent again after the handshake: served as 1-RTT
        served.wait_log(r" 127\.0\.0\.1:\d+: 0-RTT refused for localhost: replay store unavailable")
        assert served.process.poll() is None

        # Back without its data (no persistence): the replay set is empty, so until it holds a window of
        # history a replay of a ClientHello accepted before the loss would pass as new. 0-RTT stays refused.
        own_redis.start()
        deadline = time.monotonic() + 15
        lost = re.compile(r"0-RTT refused for localhost: the replay set in Redis holds [0-9.]+ s of history")
        while not any(lost.search(line) for line in list(served.log)):
            assert time.monotonic() < deadline, "".join(served.log[-30:])
            again = s_client(served, session, tmp_path, early=GET, after=GET)
            assert "Early data was accepted" not in again, again
            time.sleep(0.5)
    finally:
        served.stop()


def test_ticket_key_files_in_nginx_format_resume(tmp_path: Path, upstream: int) -> None:
    openssl = require("openssl")
    for name in ("new.key", "old.key"):
        subprocess.run([openssl, "rand", "-out", str(tmp_path / name), "80"], check=True, timeout=10)
    served = serve(tmp_path, upstream, "--ticket-key", str(tmp_path / "new.key"), "--ticket-key",
                   str(tmp_path / "old.key"))
    try:
        session = tmp_path / "session.pem"
        s_client(served, session, tmp_path)
        again = s_client(served, session, tmp_path, early=b"", after=GET)
        assert "Reused, TLSv1.3" in again and "HTTP/1.1 200 OK" in again, f"{OPENSSL}:\n{again}"
        assert "Early data was rejected" in again or "Early data was not sent" in again
    finally:
        served.stop()


def test_early_get_is_answered_in_half_rtt_data_before_the_clients_finished(tmp_path: Path, upstream: int) -> None:
    """The response to a GET in 0-RTT data leaves right behind the server's Finished (0.5-RTT data, RFC 8446
    §2.3): our client decrypts it while its own Finished is still unsent; the close follows the handshake."""
    import socket

    from tlskit.config import ClientConfig
    from tlskit.connection import Connection
    from tlskit.events import ApplicationData, ConnectionClosed, HandshakeComplete
    from tlskit.pki.verify import TrustStore
    from tlskit.stores.memory import MemorySessionStore

    request = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    served = serve(tmp_path, upstream, "--early-data", "--early-data-window", "1")
    time.sleep(2.2)  # RFC 8446 §8.2: a freshly started server refuses 0-RTT for twice the window
    try:
        config = ClientConfig(server_name="localhost", trust=TrustStore.from_pem_file(served.cacert),
                              alpn=("http/1.1",), session_store=MemorySessionStore(), early_data=True)

        def connection(early: bool, *, finish: bool) -> tuple[bytes, HandshakeComplete | None, bool]:
            """(plaintext read, the handshake, closed) with ``request`` sent in 0-RTT data (``early``) or after
            the handshake; ``finish`` False sends nothing after the first flight and stops at the response."""
            conn = Connection(config)
            conn.start()
            if early:
                conn.send_data(request)
            received, done, closed, sent = b"", None, False, early
            with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
                sock.sendall(conn.data_to_send())
                while not closed and not (not finish and b"static\n" in received):
                    data = sock.recv(65536)
                    if not data:
                        break
                    conn.receive_data(data)
                    for event in conn.events():
                        if isinstance(event, HandshakeComplete):
                            done = event
                        elif isinstance(event, ApplicationData):
                            received += event.data
                        elif isinstance(event, ConnectionClosed):
                            closed = True
                    if not finish:
                        continue  # our Finished stays queued
                    if done is not None and not sent:
                        conn.send_data(request)
                        sent = True
                    sock.sendall(conn.data_to_send())
                if not finish:
                    sock.settimeout(0.3)  # and the server does not close before our Finished
                    with contextlib.suppress(TimeoutError):
                        closed = closed or not sock.recv(65536)
            return received, done, closed

        received, done, _ = connection(False, finish=True)  # a full handshake leaves a ticket
        assert received.startswith(b"HTTP/1.1 200 OK") and done is not None and not done.resumed
        received, done, closed = connection(True, finish=False)
        assert done is not None and done.resumed and done.early_data_accepted
        assert received.startswith(b"HTTP/1.1 200 OK") and received.endswith(b"static\n"), received
        assert not closed, "the server closed before the handshake completed"
    finally:
        served.stop()


def test_early_h2_request_is_answered_in_half_rtt_data_before_the_clients_finished(tmp_path: Path,
                                                                                  upstream: int) -> None:
    """With h2 offered, a 0-RTT HTTP/2 request is routed by the ALPN the server settled with its flight and is
    answered as 0.5-RTT data too (the h2 package frames the client side)."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    from tlskit.config import ClientConfig
    from tlskit.connection import Connection
    from tlskit.events import ApplicationData, HandshakeComplete
    from tlskit.pki.verify import TrustStore
    from tlskit.stores.memory import MemorySessionStore

    served = serve(tmp_path, upstream, "--early-data", "--early-data-window", "1", "--alpn", "h2", "--alpn",
                   "http/1.1")
    time.sleep(2.2)  # RFC 8446 §8.2: a freshly started server refuses 0-RTT for twice the window
    try:
        config = ClientConfig(server_name="localhost", trust=TrustStore.from_pem_file(served.cacert),
                              alpn=("h2",), session_store=MemorySessionStore(), early_data=True)

        def fetch(early: bool) -> tuple[bytes, HandshakeComplete | None, bool]:
            """(body, the handshake, whether our Finished had been sent when the body arrived)."""
            h2c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
            h2c.initiate_connection()
            h2c.send_headers(1, [(b":method", b"GET"), (b":path", b"/index.html"), (b":scheme", b"https"),
                                 (b":authority", b"localhost")], end_stream=True)
            conn = Connection(config)
            conn.start()
            if early:
                conn.send_data(h2c.data_to_send())
            body, done, finished_sent, ended = b"", None, False, False
            with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
                sock.sendall(conn.data_to_send())
                while not ended:
                    data = sock.recv(65536)
                    if not data:
                        break
                    conn.receive_data(data)
                    for event in conn.events():
                        if isinstance(event, HandshakeComplete):
                            done = event
                        elif isinstance(event, ApplicationData):
                            for h2_event in h2c.receive_data(event.data):
                                if isinstance(h2_event, h2.events.DataReceived):
                                    body += h2_event.data
                                    h2c.acknowledge_received_data(h2_event.flow_controlled_length, 1)
                                ended = ended or isinstance(h2_event, h2.events.StreamEnded)
                    if ended:
                        break  # the answer is complete: was our Finished out yet?
                    if not early and done is not None and not finished_sent:
                        conn.send_data(h2c.data_to_send())  # the request, after the handshake
                    if not early or ended:
                        out = conn.data_to_send()
                        finished_sent = finished_sent or bool(out)
                        sock.sendall(out)
            return body, done, finished_sent

        body, done, _ = fetch(False)  # a full handshake over h2 leaves a ticket
        assert body.endswith(b"static\n") and done is not None and done.alpn == "h2" and not done.resumed
        body, done, finished_sent = fetch(True)
        assert done is not None and done.resumed and done.early_data_accepted and done.alpn == "h2"
        assert body.endswith(b"static\n") and not finished_sent, "the h2 answer waited for our Finished"
    finally:
        served.stop()
