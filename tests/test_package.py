"""The ``tlskit`` package itself: ``import tlskit`` is lazy (PEP 562), and the names it re-exports resolve."""

from __future__ import annotations

import subprocess
import sys

import tlskit


def test_import_tlskit_loads_no_engine_until_a_name_is_used() -> None:
    script = ("import sys, tlskit\n"
              "print(sorted(m for m in sys.modules if m.startswith('tlskit.')))\n"
              "tlskit.Connection\n"
              "print('tlskit.connection' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert proc.stdout.split("\n")[:2] == ["[]", "True"], proc.stdout


def test_every_exported_name_resolves_and_odd_attributes_are_attribute_errors() -> None:
    for name in tlskit.__all__:
        assert getattr(tlskit, name) is not None, name
    assert set(tlskit.__all__) <= set(dir(tlskit))
    assert tlskit.errors.TLSError is tlskit.TLSError  # a subpackage by name
    assert not hasattr(tlskit, "no_such_name") and not hasattr(tlskit, "a.b")
