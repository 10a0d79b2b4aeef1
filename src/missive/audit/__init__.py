"""Append-only, hash-chained audit log (SPEC §7)."""
