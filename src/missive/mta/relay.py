"""The outbound relay worker: durable queue → trust-space peers, with retries and DSNs.

The mailbox store's delivery transaction writes one ``relay_queue`` row per destination domain
(P11), sealed to the system ``relay`` mailbox. This worker takes due rows, opens them, relays
them over mutually authenticated TLS and records the outcome. SPEC §4 "Outbound relay".

Queue states: ``pending`` (due at ``next_attempt_at``) → ``sending`` (claimed; the lease ends at
``next_attempt_at``) → ``sent`` (every recipient answered, at least one accepted) or
``failed`` (none accepted), or back to ``pending`` with a backoff. ``attempts`` counts claims and
is the fencing token: a worker records an outcome only if ``attempts`` is still the value its
claim set, so a worker that outlived its lease cannot overwrite the row another one took.

Implementation notes:
- Claim: ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (several workers and nodes take
  different rows), ``BEGIN IMMEDIATE`` on SQLite (``Database.write``); the claim commits before
  any network I/O, so a crashed worker's row comes back once its lease
  (``mta.relay_lease_seconds``) is over. A row is done only once the peer answered and the
  outcome was committed; a crash between the two re-sends (SMTP is at-least-once).
- Per recipient (RFC 5321 §4.2.5 replies): 2xx delivered, 5xx failed (DSN now), 4xx or no
  answer deferred. A partial outcome re-seals the envelope with the recipients left.
- Retries: exponential backoff (``relay_backoff_base_seconds`` × ``relay_backoff_factor`` ^ n,
  capped by ``relay_backoff_max_seconds``, ±10 % jitter) until ``relay_retry_days`` after
  queueing; then a failure DSN (``4.4.7``, RFC 3463 "delivery time expired").
- DSNs (RFC 3464, :mod:`missive.mta.dsn`): failures at once, one delay warning per message
  after ``relay_delay_warning_hours``, "relayed" when NOTIFY=SUCCESS and the peer has no DSN
  extension (RFC 3461 §5.2.2). Delivered into the sender's local mailbox with a null sender
  *before* the row's outcome is committed (a crash may repeat a DSN, never lose one); a sender
  that is not local gets none (audited). A message with a null sender never gets a DSN.
- Only trust-space domains are relayed to: the domain is checked again at every attempt (it
  may have left the trust space since queueing; then the message fails, ``5.7.1``), and the
  peer's certificate must chain to a CA registered for that domain (or to our own CA).
- Audit: ``relay.sent`` / ``relay.deferred`` / ``relay.failed`` with the domain, reply code and
  counts; never addresses' local parts or content. Logs likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from missive.audit import log as audit
from missive.db.base import utcnow
from missive.db.engine import Database
from missive.directory.recipients import resolve_recipient
from missive.directory.trust import trust_domain_for, trusted_ca_pems
from missive.errors import MissiveError
from missive.mailbox.models import RelayQueue
from missive.mailbox.store import MailboxSession
from missive.mta import client as smtp_client
from missive.mta import dsn
from missive.mta.routing import DnsResolver, MxResolver, Route, RouteError, routes_for

if TYPE_CHECKING:
    from missive.runtime import Core

log = logging.getLogger(__name__)

#: ``core.extras`` key under which a test or a deployment injects its :class:`MxResolver`.
RESOLVER_EXTRA = "relay.resolver"

#: How long ``stop`` waits for a worker in the middle of a transaction.
STOP_GRACE_SECONDS = 10.0
#: How often the first worker deletes finished entries older than ``relay_keep_days``.
PURGE_INTERVAL = timedelta(hours=1)

Clock = Callable[[], datetime]
TlsFactory = Callable[[Sequence[bytes]], ssl.SSLContext]


@dataclass(frozen=True)
class Outcome:
    """One recipient's result of an attempt."""

    rcpt: dict[str, Any]
    code: int  # 0: no answer
    status: str
    diagnostic: str
    remote: str | None = None

    @property
    def kind(self) -> str:
        if 200 <= self.code < 300:
            return "delivered"
        return "failed" if self.code >= 500 or self.status.startswith("5.") else "deferred"


@dataclass
class Claim:
    """A row this worker holds the lease on, opened."""

    row: RelayQueue
    token: int
    envelope: dict[str, Any]
    raw: bytes


@dataclass
class Attempt:
    outcomes: list[Outcome] = field(default_factory=list)
    dsn_supported: bool = False


def backoff_seconds(attempts: int, *, base: float, factor: float, cap: float,
                    jitter: float = 0.1, rng: random.Random | None = None) -> float:
    """Wait before attempt ``attempts + 1``: ``base × factor^(attempts-1)``, capped, jittered."""
    exponent = max(0, attempts - 1)
    wait = base * factor ** min(exponent, 64) if factor > 1 else base
    wait = min(wait, cap) if cap > 0 else wait
    chooser = rng or random.Random()  # noqa: S311 - spreading retries, not security
    return max(0.0, wait * (1 + chooser.uniform(-jitter, jitter)))


class RelayWorker:
    """Takes due rows and relays them. ``run_once`` handles one row; ``start`` loops."""

    def __init__(self, core: Core, *, resolver: MxResolver | None = None,
                 clock: Clock = utcnow, tls_factory: TlsFactory | None = None) -> None:
        self.core = core
        self.settings = core.settings
        injected = core.extras.get(RESOLVER_EXTRA)
        if resolver is None and isinstance(injected, MxResolver):
            resolver = injected
        self.resolver: MxResolver = resolver or DnsResolver(
            core.settings.mta.relay_dns_timeout_seconds)
        self.clock = clock
        self.tls_factory = tls_factory or self._default_tls
        self._session: MailboxSession | None = None

    def _default_tls(self, peer_cas: Sequence[bytes]) -> ssl.SSLContext:
        from missive.certs.tls import client_context

        return client_context(self.settings, client_cert=True, extra_ca_pem=peer_cas)

    async def session(self) -> MailboxSession:
        if self._session is None:
            self._session = await self.core.store.relay_open_session()
        return self._session

    # --- queue ------------------------------------------------------------------------------
    async def claim(self) -> Claim | None:
        """Take the next due row (lease committed before returning), opened; None if idle."""
        session = await self.session()
        while True:
            now = self.clock()
            lease = timedelta(seconds=self.settings.mta.relay_lease_seconds)
            async with self.core.db.write() as s:
                row = (await s.execute(
                    select(RelayQueue)
                    .where(RelayQueue.state.in_(("pending", "sending")),
                           RelayQueue.next_attempt_at <= now)
                    .order_by(RelayQueue.next_attempt_at, RelayQueue.id)
                    .limit(1)
                    .with_for_update(skip_locked=True))).scalar_one_or_none()
                if row is None:
                    return None
                row.state = "sending"
                row.attempts = (row.attempts or 0) + 1
                row.next_attempt_at = now + lease
                token = row.attempts
            try:
                envelope, raw = session.open_relay_item(row)
            except MissiveError as exc:
                await self._unreadable(row, token, exc)
                continue
            return Claim(row, token, envelope, raw)

    async def _unreadable(self, row: RelayQueue, token: int, exc: Exception) -> None:
        log.error("relay: queue row %s cannot be opened (%s); marked failed", row.id,
                  type(exc).__name__)
        async with self.core.db.write() as s:
            current = await self._fenced(s, row.id, token)
            if current is not None:
                current.state = "failed"
                current.last_error = "sealed queue entry cannot be opened"
                await audit.append(s, "relay.failed", outcome="error",
                                   reason="queue entry cannot be opened",
                                   details={"domain": row.domain, "code": 0})

    async def _fenced(self, s: Any, row_id: int, token: int) -> RelayQueue | None:
        return (await s.execute(
            select(RelayQueue).where(RelayQueue.id == row_id, RelayQueue.attempts == token,
                                     RelayQueue.state == "sending")
            .with_for_update())).scalar_one_or_none()

    async def run_once(self) -> bool:
        """Relay one due row if there is one; True when a row was handled."""
        claim = await self.claim()
        if claim is None:
            return False
        attempt = await self.attempt(claim)
        await self.finish(claim, attempt)
        return True

    # --- one attempt --------------------------------------------------------------------------
    async def attempt(self, claim: Claim) -> Attempt:
        """Try the hosts of the row's domain in order until one answers per recipient."""
        domain = claim.row.domain
        rcpts: list[dict[str, Any]] = list(claim.envelope.get("recipients") or [])
        async with self.core.db.read() as s:
            trusted = await trust_domain_for(s, domain)
            cas = await trusted_ca_pems(s, domain) if trusted is not None else []
        if trusted is None:
            return _all(rcpts, 550, "5.7.1",
                        f"550 5.7.1 {domain} is no longer in the trust space")
        try:
            routes = await routes_for(domain, self.settings, self.resolver)
        except RouteError as exc:
            code = 550 if exc.permanent else 0
            return _all(rcpts, code, exc.status, exc.text)
        try:
            tls = self.tls_factory(cas)
        except (MissiveError, OSError, ssl.SSLError) as exc:
            log.error("relay: cannot build the TLS client context: %s", exc)
            return _all(rcpts, 0, "4.7.5", f"local TLS configuration: {exc}")
        recipients = [smtp_client.Recipient(str(r["address"]), tuple(r.get("notify") or ()),
                                             r.get("orcpt")) for r in rcpts]
        last: smtp_client.TransactionError | None = None
        for route in routes:
            try:
                sent = await self._send(route, tls, claim, recipients)
            except smtp_client.TransactionError as exc:
                log.info("relay: %s at %s: %s", domain, route, exc.stage)
                last = exc
                if exc.permanent:
                    return _all(rcpts, exc.code or 550, exc.status, exc.diagnostic, route.host)
                continue
            by_addr = {r.address: r for r in sent.recipients}
            out = Attempt(dsn_supported=sent.dsn_supported)
            for r in rcpts:
                res = by_addr[str(r["address"])]
                out.outcomes.append(Outcome(r, res.code, res.status, res.diagnostic,
                                            sent.host))
            return out
        assert last is not None  # noqa: S101 - routes is never empty
        return _all(rcpts, 0, last.status, last.diagnostic)

    async def _send(self, route: Route, tls: ssl.SSLContext, claim: Claim,
                    recipients: list[smtp_client.Recipient]) -> smtp_client.SendResult:
        env = claim.envelope
        return await smtp_client.send(
            route, tls=tls, helo=self.settings.mta.hostname,
            sender=str(env.get("sender") or ""), recipients=recipients, raw=claim.raw,
            ret=env.get("ret"), envid=env.get("envid"),
            timeout=self.settings.mta.relay_timeout_seconds)

    # --- recording the outcome ----------------------------------------------------------------
    async def finish(self, claim: Claim, attempt: Attempt) -> None:
        """DSNs first, then the row's new state (fenced by the claim's token) and audit."""
        mta = self.settings.mta
        now = self.clock()
        row = claim.row
        created = row.created_at
        expires = created + timedelta(days=mta.relay_retry_days)
        delivered = [o for o in attempt.outcomes if o.kind == "delivered"]
        failed = [o for o in attempt.outcomes if o.kind == "failed"]
        deferred = [o for o in attempt.outcomes if o.kind == "deferred"]
        if deferred and now >= expires:
            failed += [Outcome(o.rcpt, o.code, "4.4.7",
                               f"{o.diagnostic} (gave up after {mta.relay_retry_days:g} days)",
                               o.remote) for o in deferred]
            deferred = []
        warn = (bool(deferred) and not row.delay_notified
                and now >= created + timedelta(hours=mta.relay_delay_warning_hours))
        reports: list[dsn.RecipientReport] = []
        for o in failed:
            if dsn.wants(o.rcpt.get("notify"), "FAILURE"):
                reports.append(self._report(o, "failed", now))
        if warn:
            for o in deferred:
                if dsn.wants(o.rcpt.get("notify"), "DELAY"):
                    reports.append(self._report(o, "delayed", now, until=expires))
        if not attempt.dsn_supported:
            for o in delivered:
                if dsn.wants(o.rcpt.get("notify"), "SUCCESS"):
                    reports.append(self._report(o, "relayed", now))
        if reports and await self._still_ours(row.id, claim.token):
            try:
                await self._deliver_dsn(claim, reports, now)
            except MissiveError as exc:
                # The peer has answered: the outcome must be recorded whatever happens to the
                # report, or the message would be sent again.
                log.error("relay: DSN for queue row %s not delivered: %s", row.id, exc)
                async with self.core.db.write() as s:
                    await audit.append(s, "relay.dsn", outcome="error", reason=str(exc)[:200],
                                       details={"domain": row.domain})
        async with self.core.db.write() as s:
            current = await self._fenced(s, row.id, claim.token)
            if current is None:
                log.warning("relay: lease on queue row %s was lost; outcome not recorded",
                            row.id)
                return
            if deferred:
                current.state = "pending"
                wait = backoff_seconds(claim.token, base=mta.relay_backoff_base_seconds,
                                       factor=mta.relay_backoff_factor,
                                       cap=mta.relay_backoff_max_seconds)
                current.next_attempt_at = min(now + timedelta(seconds=wait), expires)
                current.delay_notified = current.delay_notified or warn
                current.last_error = deferred[0].diagnostic[:500]
                if delivered or failed:
                    left = dict(claim.envelope)
                    left["recipients"] = [o.rcpt for o in deferred]
                    current.envelope = (await self.session()).reseal_relay_envelope(
                        current, left)
            else:
                current.state = "sent" if delivered else "failed"
                current.next_attempt_at = now
                current.last_error = failed[0].diagnostic[:500] if failed else None
                current.body = b""  # done: the sealed copy is no longer needed
            for kind, group in (("sent", delivered), ("failed", failed),
                                ("deferred", deferred)):
                if group:
                    await audit.append(
                        s, f"relay.{kind}", outcome="ok" if kind == "sent" else kind,
                        details={"domain": row.domain, "code": group[0].code,
                                 "status": group[0].status, "recipients": len(group),
                                 "attempt": claim.token, "queue_id": row.id})
        log.info("relay: %s attempt %d: %d sent, %d failed, %d deferred", row.domain,
                 claim.token, len(delivered), len(failed), len(deferred))

    def _report(self, o: Outcome, action: dsn.Action, now: datetime,
                until: datetime | None = None) -> dsn.RecipientReport:
        return dsn.RecipientReport(
            address=str(o.rcpt["address"]), action=action,
            status=o.status if action != "relayed" else "2.0.0",
            orcpt=o.rcpt.get("orcpt"), remote_mta=o.remote,
            diagnostic=o.diagnostic or None, last_attempt=now, will_retry_until=until)

    async def _still_ours(self, row_id: int, token: int) -> bool:
        async with self.core.db.read() as s:
            found = (await s.execute(select(RelayQueue.id).where(
                RelayQueue.id == row_id, RelayQueue.attempts == token,
                RelayQueue.state == "sending"))).scalar()
        return found is not None

    async def _deliver_dsn(self, claim: Claim, reports: list[dsn.RecipientReport],
                           now: datetime) -> None:
        sender = str(claim.envelope.get("sender") or "")
        actions = sorted({r.action for r in reports})
        if not sender:
            return  # RFC 5321 §4.5.5: never a report about a message with a null sender
        async with self.core.db.read() as s:
            info = await resolve_recipient(s, sender, self.settings)
        if not (info.local and info.known and info.mailbox_id is not None):
            async with self.core.db.write() as s:
                await audit.append(s, "relay.dsn", outcome="dropped",
                                   reason="sender is not a local mailbox",
                                   details={"domain": claim.row.domain,
                                            "actions": ",".join(actions)})
            return
        report = dsn.build_dsn(
            reports, original=claim.raw, to=sender, reporting_mta=self.settings.mta.hostname,
            postmaster=f"mailer-daemon@{self.settings.domain}", now=now,
            ret=claim.envelope.get("ret"), envid=claim.envelope.get("envid"),
            arrival=claim.row.created_at)
        delivery = self.core.store.delivery(sender="", source="dsn", actor="relay")
        delivery.add_local(info.mailbox_id)
        await delivery.commit(report)
        log.info("relay: DSN (%s) for a message to %s delivered to its sender",
                 ",".join(actions), claim.row.domain)

    # --- the loop -----------------------------------------------------------------------------
    async def loop(self, stop: asyncio.Event, *, housekeeping: bool = False) -> None:
        """Relay due rows until ``stop``; with ``housekeeping`` also purge finished rows
        (``relay_keep_days``) about once per ``PURGE_INTERVAL``."""
        poll = self.settings.mta.relay_poll_seconds
        last_purge: datetime | None = None
        while not stop.is_set():
            now = self.clock()
            if housekeeping and (last_purge is None or now - last_purge >= PURGE_INTERVAL):
                last_purge = now
                try:
                    keep = timedelta(days=self.settings.mta.relay_keep_days)
                    purged = await purge_done(self.core.db, now - keep)
                    if purged:
                        log.info("relay: purged %d finished queue entries", purged)
                except Exception:
                    log.exception("relay: could not purge finished queue entries")
            try:
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay: worker error; retrying after the poll interval")
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll)


def _all(rcpts: list[dict[str, Any]], code: int, status: str, diagnostic: str,
         remote: str | None = None) -> Attempt:
    return Attempt([Outcome(r, code, status, diagnostic, remote) for r in rcpts])


# --- queue administration (for ``missive admin queue`` and harnesses) ---------------------------

@dataclass(frozen=True)
class QueueEntry:
    """What the queue says about a message without opening it (no address, no content)."""

    id: int
    domain: str
    state: str
    attempts: int
    size: int
    created_at: datetime
    next_attempt_at: datetime
    delay_notified: bool
    last_error: str | None

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "domain": self.domain, "state": self.state,
                "attempts": self.attempts, "size": self.size,
                "created_at": self.created_at.isoformat(),
                "next_attempt_at": self.next_attempt_at.isoformat(),
                "delay_notified": self.delay_notified, "last_error": self.last_error}


async def list_queue(db: Database, *, states: Sequence[str] | None = None,
                     domain: str | None = None, limit: int = 100) -> list[QueueEntry]:
    """Queue entries, oldest first (all states unless ``states`` is given)."""
    q = select(RelayQueue.id, RelayQueue.domain, RelayQueue.state, RelayQueue.attempts,
               RelayQueue.size, RelayQueue.created_at, RelayQueue.next_attempt_at,
               RelayQueue.delay_notified, RelayQueue.last_error)
    if states:
        q = q.where(RelayQueue.state.in_(list(states)))
    if domain:
        q = q.where(RelayQueue.domain == domain.lower().rstrip("."))
    async with db.read() as s:
        rows = (await s.execute(q.order_by(RelayQueue.id).limit(limit))).all()
    return [QueueEntry(*row) for row in rows]


async def retry_now(db: Database, queue_id: int | None = None, *,
                    now: datetime | None = None) -> int:
    """Make waiting (``pending``) entries due now — one, or all; returns how many.

    Entries being sent are left alone (their lease protects them)."""
    q = update(RelayQueue).where(RelayQueue.state == "pending")
    if queue_id is not None:
        q = q.where(RelayQueue.id == queue_id)
    async with db.write() as s:
        result = await s.execute(q.values(next_attempt_at=now or utcnow()))
        count = int(getattr(result, "rowcount", 0) or 0)
        if count:
            await audit.append(s, "relay.retry_now", details={"entries": count,
                                                             "queue_id": queue_id})
    return count


async def purge_done(db: Database, older_than: datetime) -> int:
    """Delete finished entries (``sent``/``failed``) whose last change is before
    ``older_than``; returns how many. Their outcome stays in the audit log."""
    async with db.write() as s:
        result = await s.execute(delete(RelayQueue).where(
            RelayQueue.state.in_(("sent", "failed")), RelayQueue.next_attempt_at < older_than))
        return int(getattr(result, "rowcount", 0) or 0)


class RelayFront:
    """What ``missive serve`` runs: ``relay_workers`` loops; no listening port."""

    def __init__(self, core: Core, workers: list[RelayWorker]) -> None:
        self.core = core
        self.ports: dict[str, int] = {}
        self.workers = workers
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(w.loop(self._stop, housekeeping=i == 0),
                                           name=f"relay-{i}")
                       for i, w in enumerate(workers)]

    async def stop(self) -> None:
        """Let each worker finish the row in hand for a short grace period, then cancel it.

        A cancelled attempt leaves its row leased; it is retried when the lease ends (the peer
        may then receive the message twice, as with any SMTP client that loses a reply)."""
        self._stop.set()
        grace = min(STOP_GRACE_SECONDS, self.core.settings.mta.relay_timeout_seconds)
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, grace)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                log.exception("relay: worker stopped with an error")


async def start(core: Core) -> RelayFront:
    """Start the relay workers (registered as ``missive.mta.relay:start``).

    Needs the master key (the queue is sealed to the relay mailbox): fails at start, with the
    reason, in a process that has none.
    """
    first = RelayWorker(core)
    await first.session()  # fail now, clearly, without the master key or the relay mailbox
    workers = [first] + [RelayWorker(core, resolver=first.resolver)
                         for _ in range(core.settings.mta.relay_workers - 1)]
    for w in workers[1:]:
        w._session = first._session
    log.info("relay: %d worker(s) started", len(workers))
    return RelayFront(core, workers)


__all__ = [
    "RESOLVER_EXTRA",
    "Attempt",
    "Claim",
    "Outcome",
    "QueueEntry",
    "RelayFront",
    "RelayWorker",
    "backoff_seconds",
    "list_queue",
    "purge_done",
    "retry_now",
    "start",
]
