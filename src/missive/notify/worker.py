"""The notify worker: ``missive serve`` (or ``serve --only notify``) runs one per node.

Each round: fold ripe outbox rows into notices (:func:`queue.form_batches`), claim due notices
(:func:`queue.claim`), send them concurrently through their channel, record each outcome. The
worker never opens a mailbox: it needs neither the master key nor any message (C2); what a
notice can say is limited to :class:`~missive.notify.channels.Notice`.

Implementation notes:

- Crash safety: a notice's idempotency key is written before its first attempt and never
  changes; a claimed notice is leased (``lease``), so a worker killed mid-round leaves it to come
  back after the lease, and it is resent under the same key. Nothing is lost (outbox rows are
  only marked in the transaction that creates their notice) and nothing is sent under two keys.
- Several workers (nodes) share the queue through ``SKIP LOCKED`` (PostgreSQL).
- Clock, sleep, jitter source and channels are injectable, so tests never wait for a window.
- Logs name the notice key, channel and mailbox id, never a phone number or e-mail address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from prometheus_client import CollectorRegistry

from missive.db.base import utcnow
from missive.errors import SettingsError
from missive.notify import queue
from missive.notify.channels import (
    Channel,
    ChannelFailure,
    EmailRelay,
    Notice,
    RelayWebhook,
    SmsWebhook,
)
from missive.notify.metrics import NotifyMetrics
from missive.notify.schedule import QuietHours, backoff
from missive.notify.templates import NotifyTemplateError, Renderer
from missive.runtime import Core

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: How often a worker purges old notices (``notify.keep_days``).
PURGE_EVERY = timedelta(hours=1)
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class RoundReport:
    """What one round did (tests and logs)."""

    notices: int = 0
    folded: int = 0
    skipped: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0
    purged: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)  # idempotency key -> outcome


def check_webhook_url(name: str, url: str, *, production: bool) -> None:
    """A webhook URL must be http(s); in production, https unless it is on this host (the
    SMS body holds the patient's phone number)."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"notify.{name} must be an http(s) URL, got {url!r}")
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if production and parts.scheme != "https" and not local:
        raise SettingsError(f"notify.{name} must use https outside development "
                            f"(it carries personal data), got {url!r}")


def mailbox_ref(core: Core, mailbox_id: int) -> str:
    """The opaque, stable id of a mailbox in relay events (keyed hash, no INS, no row id)."""
    return "mbx_" + core.keys.index.digest("notify-mailbox", mailbox_id)[:24]


class NotifyWorker:
    """One worker; ``start`` runs it in the background, ``stop`` ends it."""

    def __init__(
        self,
        core: Core,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        channels: Mapping[str, Channel] | None = None,
        registry: CollectorRegistry | None = None,
        concurrency: int = 10,
    ) -> None:
        self.core = core
        self.settings = core.settings
        self.config = core.settings.notify
        self.clock: Clock = clock or utcnow
        self.sleep: Sleep = sleep or asyncio.sleep
        self.rng = rng or random.Random()  # noqa: S311 - retry jitter, not a secret
        self.metrics = NotifyMetrics(registry if registry is not None else CollectorRegistry())
        self.quiet = QuietHours.parse(self.config.quiet_hours, self.config.timezone)
        self.renderer = Renderer(self.config, self.settings.webmail)
        self.window = timedelta(seconds=self.config.coalesce_seconds)
        # A claimed notice comes back after this if its worker died: longer than any attempt.
        self.lease = timedelta(seconds=self.config.lease_seconds
                               or 2 * self.config.timeout_seconds + 30)
        self._client: httpx.AsyncClient | None = None
        self.channels: dict[str, Channel] = (
            dict(channels) if channels is not None else self._build_channels())
        self._semaphore = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._purged_at: datetime | None = None
        self.ports: dict[str, int] = {}

    def _build_channels(self) -> dict[str, Channel]:
        c = self.config
        built: dict[str, Channel] = {}
        for name, url in (("sms_webhook_url", c.sms_webhook_url),
                          ("relay_webhook_url", c.relay_webhook_url)):
            check_webhook_url(name, url, production=self.settings.environment == "production")
        if self.settings.environment == "production" and c.smtp_relay and c.smtp_tls == "none":
            raise SettingsError("notify.smtp_tls = \"none\" sends patients' addresses in clear: "
                                "use starttls or tls outside development")
        if c.sms_webhook_url or c.relay_webhook_url:
            self._client = httpx.AsyncClient(timeout=c.timeout_seconds, follow_redirects=False)
        if c.sms_webhook_url and self._client is not None:
            built["sms"] = SmsWebhook(c.sms_webhook_url,
                                      c.sms_webhook_secret.get_secret_value().encode(),
                                      self._client, self.renderer)
        if c.smtp_relay:
            built["email"] = EmailRelay(c, self.settings.domain, self.renderer, clock=self.clock)
        if c.relay_webhook_url and self._client is not None:
            built["relay"] = RelayWebhook(c.relay_webhook_url,
                                          c.relay_webhook_secret.get_secret_value().encode(),
                                          self._client)
        return built

    # --- one round ----------------------------------------------------------------------------
    async def run_once(self) -> RoundReport:
        report = RoundReport()
        now = self.clock()
        if self._purged_at is None or now - self._purged_at > PURGE_EVERY:
            self._purged_at = now
            report.purged = await queue.purge(
                self.core.db, before=now - timedelta(days=self.config.keep_days))
        batches = await queue.form_batches(self.core.db, now=now, window=self.window,
                                           available=list(self.channels),
                                           limit=self.config.batch_size)
        report.notices, report.folded, report.skipped = (
            batches.notices, batches.folded, batches.skipped)
        if batches.folded:
            self.metrics.coalesced.inc(batches.folded)
        claimed = await queue.claim(self.core.db, now=now, limit=self.config.batch_size,
                                    lease=self.lease, quiet=self.quiet,
                                    max_attempts=self.config.max_attempts)
        report.skipped += claimed.skipped
        report.dead += len(claimed.dead)
        for channel in claimed.dead:
            self.metrics.dead.labels(channel).inc()
        report.deferred = len(claimed.deferred)
        for channel in claimed.deferred:
            self.metrics.deferred.labels(channel).inc()
        outcomes = await asyncio.gather(*(self._deliver(job) for job in claimed.jobs))
        for job, outcome in zip(claimed.jobs, outcomes, strict=True):
            report.outcomes[job.key] = outcome
            if outcome == "sent":
                report.sent += 1
            elif outcome == "retry":
                report.retried += 1
            elif outcome == "dead":
                report.dead += 1
        return report

    async def _deliver(self, job: queue.Job) -> str:
        channel = self.channels.get(job.channel)
        notice = Notice(key=job.key, channel=job.channel,
                        mailbox_ref=mailbox_ref(self.core, job.mailbox_id), count=job.count,
                        kind=job.kind, first_at=job.first_at, phone=job.phone, email=job.email)
        async with self._semaphore:
            try:
                if channel is None:
                    raise ChannelFailure(f"channel {job.channel} is not configured any more")
                await channel.send(notice)
            except ChannelFailure as exc:
                return await self._failed(job, exc.reason, exc.permanent)
            except NotifyTemplateError as exc:
                return await self._failed(job, str(exc), True)
            except Exception as exc:  # a channel bug must not wedge the notice
                log.exception("notify: %s (%s) raised", job.key, job.channel)
                return await self._failed(job, f"internal error: {type(exc).__name__}", False)
        now = self.clock()
        if await queue.mark_sent(self.core.db, job, now=now):
            self.metrics.sent.labels(job.channel).inc()
            log.info("notify: sent %s (%s, mailbox %d, attempt %d)", job.key, job.channel,
                     job.mailbox_id, job.attempts)
        return "sent"

    async def _failed(self, job: queue.Job, reason: str, permanent: bool) -> str:
        now = self.clock()
        self.metrics.failed.labels(job.channel).inc()
        retry_at = now + backoff(job.attempts, base=self.config.retry_base_seconds,
                                 maximum=self.config.retry_max_seconds, rng=self.rng)
        outcome = await queue.mark_failed(self.core.db, job, now=now, reason=reason,
                                          permanent=permanent,
                                          max_attempts=self.config.max_attempts,
                                          retry_at=retry_at)
        if outcome == "dead":
            self.metrics.dead.labels(job.channel).inc()
            log.warning("notify: %s (%s, mailbox %d) is a dead letter after %d attempt(s): %s",
                        job.key, job.channel, job.mailbox_id, job.attempts, reason)
        elif outcome == "retry":
            self.metrics.retried.labels(job.channel).inc()
            log.info("notify: %s (%s) failed (%s); retry at %s", job.key, job.channel, reason,
                     retry_at.isoformat(timespec="seconds"))
        return outcome

    # --- background loop ----------------------------------------------------------------------
    async def run(self) -> None:
        """Rounds until :meth:`stop`; a failing round is logged and the next one tried."""
        while not self._stopping:
            try:
                report = await self.run_once()
                busy = bool(report.outcomes or report.notices)
            except Exception:
                log.exception("notify: round failed")
                busy = False
            if self._stopping:
                break
            if not busy:
                self._wake.clear()
                await self._wait()

    async def _wait(self) -> None:
        sleeper = asyncio.ensure_future(self.sleep(self.config.poll_seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()

    def wake(self) -> None:
        """Look for work now (e.g. after ``admin notify retry`` in the same process)."""
        self._wake.set()

    def start(self) -> None:
        if not self.channels:
            log.warning("notify: no channel configured (notify.sms_webhook_url, smtp_relay, "
                        "relay_webhook_url): outbox rows will be marked skipped")
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="missive-notify")

    async def stop(self) -> None:
        """Let the current round finish (bounded by the send timeout), then end."""
        self._stopping = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.config.timeout_seconds + 5)
            except Exception:  # noqa: BLE001 - stopping regardless (timeout or round error)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.aclose()

    async def kill(self) -> None:
        """Cancel at once, mid-round if need be (what a crash does; tests use it)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def start(core: Core) -> NotifyWorker:
    """``missive serve`` entry (``runtime.FRONTS["notify"]``): no ports, runs until stopped."""
    registry = core.extras.get("metrics_registry")
    worker = NotifyWorker(core, registry=registry if isinstance(registry, CollectorRegistry)
                          else None)
    core.extras["notify_worker"] = worker
    worker.start()
    return worker
