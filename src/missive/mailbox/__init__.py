"""The encrypted mailbox store: the only place that seals and opens mail (SPEC §3)."""
