"""NSS key log files (the ``SSLKEYLOGFILE`` format Wireshark, curl and OpenSSL use).

Each line is ``LABEL <client_random hex> <secret hex>`` with the RFC 8446 §7.1 labels
(``CLIENT_HANDSHAKE_TRAFFIC_SECRET``, ``SERVER_TRAFFIC_SECRET_0``, ...). Anyone holding the file can
decrypt the recorded connections, so it is created readable by its owner only.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["KeyLogFile", "key_log_from_env"]

ENV_VAR = "SSLKEYLOGFILE"
_log = logging.getLogger("tlskit.keylog")
_open_files: dict[str, KeyLogFile] = {}
_open_lock = threading.Lock()


class KeyLogFile:
    """A ``key_log`` sink appending lines to ``path`` (created 0600, line-buffered, safe across threads)."""

    __slots__ = ("_file", "_lock", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", buffering=1, encoding="ascii")
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> KeyLogFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def key_log_from_env() -> Callable[[str], None] | None:
    """The sink ``SSLKEYLOGFILE`` names, or None; one shared file object per path, as curl and OpenSSL do.

    A file that cannot be opened is logged and ignored: a debugging aid must not break connections.
    """
    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    path = os.path.expanduser(path)
    with _open_lock:
        sink = _open_files.get(path)
        if sink is None:
            try:
                sink = _open_files[path] = KeyLogFile(path)
            except OSError as e:
                _log.warning("%s=%s: cannot open key log file (%s); not logging keys", ENV_VAR, path, e)
                return None
        return sink
