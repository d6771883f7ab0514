"""Launch ``tests.fleet.node`` processes (two "nodes" sharing one Redis) and read what they report."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0


class Node:
    """A server process; ``events(n)`` are the lines it printed about its n-th connection (from 1)."""

    def __init__(self, redis_url: str, prefix: str, cert: Path, key: Path, *, early_data: bool = True) -> None:
        self.argv = [sys.executable, "-m", "tests.fleet.node", "--redis", redis_url, "--prefix", prefix,
                     "--cert", str(cert.resolve()), "--key", str(key.resolve())]
        if early_data:
            self.argv.append("--early-data")
        self.lines: list[str] = []
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(self.argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait_for(r"^listening (\d+)$").group(1))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := re.search(pattern, line):
                        return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"node never printed {pattern!r}; it printed:\n" + "\n".join(self.lines))
                self._changed.wait(left)

    def finished(self, n: int) -> list[str]:
        """Every line about connection ``n``, once it has ended."""
        self.wait_for(rf"^{n} end$")
        return [line.split(" ", 1)[1] for line in self.lines if line.startswith(f"{n} ")]
