"""Build hook. ``TLSKIT_COMPILE=1`` compiles the sans-IO engine with mypyc (opt-in; pure Python otherwise).

    pip install mypy setuptools
    TLSKIT_COMPILE=1 pip install --no-build-isolation .     # not -e: a stale .so would shadow edited sources

The compiled modules are the same sources (``mypy --strict`` clean) turned into C extensions for the
interpreter that builds them; ``tlskit --version`` says which build runs. Everything else (configs, front
ends, serve, stores, PKI) stays Python either way.
"""

from __future__ import annotations

import os

from setuptools import setup

# The engine: what a handshake and the record layer run (DESIGN.md §1, the floors above "policy & trust").
ENGINE = [
    "codec.py", "connection.py", "enums.py", "events.py", "keylog.py", "record.py",
    "crypto/__init__.py", "crypto/groups.py", "crypto/keyschedule.py", "crypto/signatures.py", "crypto/suites.py",
    "crypto/transcript.py",
    "handshake/__init__.py", "handshake/client.py", "handshake/common.py", "handshake/negotiation.py",
    "handshake/psk.py", "handshake/server.py",
    "messages/__init__.py", "messages/extensions.py", "messages/handshake.py",
]


def engine_extensions() -> list[object]:
    if os.environ.get("TLSKIT_COMPILE", "").lower() not in ("1", "yes", "true"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit("TLSKIT_COMPILE=1 needs mypy in the build environment: pip install mypy setuptools, "
                         "then pip install --no-build-isolation .") from None
    return list(mypycify([f"src/tlskit/{path}" for path in ENGINE], opt_level="3", debug_level="1"))


setup(ext_modules=engine_extensions())
