"""The ``tlskit`` command line (``python -m tlskit``)."""
