"""Prometheus gauges for certificate and CRL expiry (SPEC §7 metrics, §4 TLS).

A collector reads the files at scrape time (a few small PEM files), so the values are right
even after a certificate was replaced by another process, and nothing has to remember to
update a gauge. Exposed series (one per item of :func:`missive.certs.ca.check_expiry`):

- ``missive_certificate_expiry_timestamp_seconds{role,serial}``: ``notAfter`` (``nextUpdate``
  for the CRL) as a Unix time; alert on ``… - time() < 14 * 86400``.
- ``missive_certificate_expiring{role,serial}``: 0 ok, 1 within ``certs.warn_days``, 2 expired.

Professional certificates are not exported one by one (cardinality, and the names of who holds
one are not a metric); they appear in ``missive certs check``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from missive.certs import ca
from missive.certs.errors import CertError
from missive.config import Settings

log = logging.getLogger(__name__)

_LEVEL = {"ok": 0, "warning": 1, "expired": 2}


class CertificateExpiryCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        expiry = GaugeMetricFamily(
            "missive_certificate_expiry_timestamp_seconds",
            "notAfter of the certificates (nextUpdate of the CRL) the deployment depends on.",
            labels=["role", "serial"],
        )
        state = GaugeMetricFamily(
            "missive_certificate_expiring",
            "0 ok, 1 expires within certs.warn_days, 2 expired.",
            labels=["role", "serial"],
        )
        try:
            report = ca.check_expiry(self.settings, log_warnings=False)
        except (OSError, ValueError, CertError) as exc:
            log.warning("certs: expiry metrics unavailable: %s", exc)
            return
        for item in report.items:
            if item.role == "professional":
                continue
            labels = [item.role, item.serial]
            expiry.add_metric(labels, item.not_after.timestamp())
            state.add_metric(labels, _LEVEL[item.state])
        yield expiry
        yield state


def register_metrics(registry: CollectorRegistry, settings: Settings) -> Collector:
    """Register the expiry collector on ``registry`` (the runtime's) and return it."""
    collector = CertificateExpiryCollector(settings)
    registry.register(collector)
    return collector
