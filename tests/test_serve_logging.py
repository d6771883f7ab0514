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


def test_access_line_escapes_client_subject_as_utf8_bytes() -> None:
    entry = accesslog.AccessEntry(
        peer="127.0.0.1", time=0.0, method="GET", target="/", http_version="1.1", status=200, size=0, referer="-",
        user_agent="\x1b]0;x\x07\"q\" \\", request_ms=1.0,
        tls=accesslog.TLSFields(version="TLSv1.3", suite="s", group="g", sni="a", alpn="h2", resumed=False,
                                early_data=False, handshake_ms=1.0, client="CN=J\u00fcrgen \u4e2d"))
    line = entry.combined()
    assert '"\\x1b]0;x\\x07\\x22q\\x22 \\x5c"' in line, line
    assert "client=CN=J\\xc3\\xbcrgen_\\xe4\\xb8\\xad " in line, line
    assert line.isascii()
