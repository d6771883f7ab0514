"""Operator tools over the engine: probe, scan, diagnose, decrypt, bench (DESIGN §1, applications layer)."""
