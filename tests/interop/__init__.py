"""Tests against real third-party TLS implementations; ``peers.py`` is the harness."""
