"""Fixtures shared by the unit and interop test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.served import echo_upstream


@pytest.fixture
def upstream() -> Iterator[int]:
    """The port of an HTTP/1.1 upstream that echoes each request as JSON (``tests.served.EchoUpstream``)."""
    with echo_upstream() as port:
        yield port
