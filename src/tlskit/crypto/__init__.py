"""Cryptographic building blocks of TLS 1.3: suites, key schedule, transcript, groups, signatures."""
