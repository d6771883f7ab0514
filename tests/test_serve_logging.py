"""The text log format of `tlskit serve` (tlskit.serve.accesslog): what a peer puts in a message cannot forge a
line or drive the terminal, in the message and in a traceback's exception text."""

from __future__ import annotations

import io
import logging

import pytest

from tlskit.serve import accesslog


def test_control_characters_are_escaped_in_messages_and_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(accesslog.sys, "stderr", stream)
    accesslog.setup_logging(json_lines=False, quiet=False)
    try:
        log = logging.getLogger("tlskit.test")
        log.info("SNI %s failed", "evil\n2026-01-01 00:00:00,000 tlskit.serve WARNING forged\x1b[31m\u2028")
        try:
            raise ValueError("subject CN=x\r\nforged line")
        except ValueError:
            log.exception("chain rejected")
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    assert not [line for line in lines if line.startswith("2026-01-01") or line.strip() == "forged line"], lines
    assert "evil\\x0a2026-01-01" in lines[0] and "\\x1b[31m\\u2028 failed" in lines[0]
    assert lines[-1] == "ValueError: subject CN=x\\x0d\\x0aforged line"
    assert lines[2] == "Traceback (most recent call last):"  # the traceback keeps its own lines
