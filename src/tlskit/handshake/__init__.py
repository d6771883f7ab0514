"""Handshake state machines (RFC 8446 §4): client, server, and what they share."""
