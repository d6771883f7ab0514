"""Trust: certificate chain verification (RFC 8446 §4.4.2.4, RFC 5280 §6)."""

from .verify import TrustStore, clear_cache, verify_client_chain, verify_server_chain

__all__ = ["TrustStore", "clear_cache", "verify_client_chain", "verify_server_chain"]
