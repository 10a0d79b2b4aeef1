"""Prometheus counters of the notify worker (SPEC §7), on a registry the caller gives.

Nothing is registered at import: :class:`NotifyMetrics` registers on the ``CollectorRegistry``
passed to it (the process registry in ``serve``, a fresh one in tests). Series, each labelled
by ``channel`` (``sms``, ``email``, ``relay``):

- ``missive_notify_sent_total``: notices accepted by the gateway / relay;
- ``missive_notify_failed_total``: failed attempts (each one);
- ``missive_notify_retried_total``: failed attempts that will be retried;
- ``missive_notify_dead_total``: notices given up (dead letters);
- ``missive_notify_deferred_total``: SMS held back by quiet hours;
- ``missive_notify_coalesced_total`` (no label): deliveries folded into a notice.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ("channel",)) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.sent = counter("missive_notify_sent", "Notices accepted by the gateway or relay.")
        self.failed = counter("missive_notify_failed", "Failed notice attempts.")
        self.retried = counter("missive_notify_retried", "Failed attempts that will be retried.")
        self.dead = counter("missive_notify_dead", "Notices given up (dead letters).")
        self.deferred = counter("missive_notify_deferred", "SMS held back by quiet hours.")
        self.coalesced = counter("missive_notify_coalesced",
                                 "Deliveries folded into notices.", ())
