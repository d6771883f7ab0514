"""Fixtures shared by the unit and interop test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.served import echo_upstream


@pytest.fixture
def upstream() -> Iterator[int]:
    """The port of an HTTP/1.1 upstream that echoes each request as JSON (``tests.served.EchoUpstream``)."""
    with echo_upstream() as port:
        yield port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment for a `tlskit serve` under test: its development CA in this test's own data directory."""
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
