"""tlskit: a TLS 1.3 stack for Python."""
