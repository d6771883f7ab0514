"""A real ``redis-server`` (Debian's) on a free loopback port, started and stopped by the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tlskit.stores.redis import redis_client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; ``stop()`` and ``start()`` again on the same port simulate an outage."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed (.ci/run installs Debian's redis-server)")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.exe = exe
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=self.port, socket_timeout=0.2, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if probe.ping():
                    probe.close()
                    return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server accepts nothing and answers nothing (a hung Redis) until ``resume()``."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def client(self, timeout: float = 0.25) -> redis.Redis:
        return redis_client(self.url, timeout=timeout)

    def age_replay_set(self, prefix: str, seconds: float = 3600.0) -> None:
        """Start the replay set under ``prefix`` ``seconds`` ago on this Redis process, as a fleet that has run
        that long has it (a new set refuses 0-RTT until it holds a window of history)."""
        client = self.client()
        run_id = client.info("server")["run_id"]
        secs, micros = client.time()
        client.set(prefix.encode() + b"epoch", f"{run_id}:{secs * 1000 + micros // 1000 - int(seconds * 1000)}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server per test process; tests keep apart by key prefix (see ``prefix``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server this test alone may stop and start."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"
