"""Fixtures of the HTTP/2 tests: a site root with a small and a 300 kB file, and `tlskit serve` on it with h2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http2.peer import BIG, serve_h2
from tests.served import Served


@pytest.fixture
def root(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    www.mkdir()
    (www / "big.bin").write_bytes(BIG)
    (www / "index.html").write_text("<h1>h2</h1>\n")
    return www


@pytest.fixture
def served(tmp_path: Path, root: Path) -> Iterator[Served]:
    s = serve_h2(tmp_path, str(root))
    yield s
    s.stop()
