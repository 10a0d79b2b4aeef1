"""All SQL of the notify worker: folding outbox rows into notices, claiming, recording.

Transactions (each one short; nothing is sent while a transaction is open):

1. :func:`form_batches`: for each mailbox whose oldest ``pending`` outbox row is older than the
   coalescing window, lock its pending rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's
   ``BEGIN IMMEDIATE`` serialises writers), read the patient's preferences and account state
   from the directory, create one ``notification_delivery`` row per channel with the key
   ``<first outbox key>-<channel>``, and mark the outbox rows ``batched`` (or ``skipped`` with a
   reason). An outbox row therefore belongs to exactly one notice.
2. :func:`claim`: take due ``pending`` deliveries (``SKIP LOCKED``), defer SMS inside quiet hours,
   skip those whose account was opposed/closed or lost the contact, and lease the rest: one more
   attempt, ``next_attempt_at = now + lease``. A worker that dies after this leaves its rows to
   come back when the lease ends, with the same idempotency key.
3. :func:`mark_sent` / :func:`mark_failed`: the outcome, with the audit entry (``notify.sent``,
   ``notify.dead``) in the same transaction. A stale worker (lease expired and row re-claimed)
   cannot overwrite a newer attempt's failure.

The admin helpers at the end serve ``missive admin notify list/show/retry``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from missive.audit import log as audit
from missive.db.engine import Database
from missive.directory.models import Patient
from missive.errors import NotFound
from missive.mailbox.models import NotificationOutbox
from missive.notify.models import NotificationDelivery
from missive.notify.schedule import QuietHours

ACTOR = "notify"
#: Channels a notify_channel preference asks for (the relay event follows any but "none").
PERSONAL = {"sms": ("sms",), "email": ("email",), "both": ("sms", "email"), "none": ()}
CONTACT = {"sms": "phone", "email": "email"}


@dataclass(frozen=True)
class Job:
    """A claimed delivery, with the contact read from the directory at claim time."""

    id: int
    mailbox_id: int
    channel: str
    key: str
    kind: str
    count: int
    first_at: datetime
    attempts: int
    phone: str | None
    email: str | None


@dataclass
class BatchReport:
    notices: int = 0
    folded: int = 0
    skipped: int = 0


@dataclass
class ClaimReport:
    jobs: list[Job]
    deferred: list[str]  # channels of deferred deliveries
    dead: list[str] = field(default_factory=list)  # channels of leases that ran out of attempts
    skipped: int = 0


def _channels_for(patient: Patient | None, available: Sequence[str]) -> tuple[list[str], str]:
    """Channels for a notice, or ``([], reason)``."""
    if patient is None:
        return [], "no directory entry for this mailbox"
    if patient.status not in ("pending", "active"):
        return [], f"account {patient.status}"
    pref = patient.notify_channel if patient.notify_channel in PERSONAL else "none"
    if pref == "none":
        return [], "the patient chose no notification"
    chosen = [c for c in PERSONAL[pref]
              if c in available and getattr(patient, CONTACT[c])]
    if "relay" in available:
        chosen.append("relay")
    if not chosen:
        return [], f"no configured channel for preference {pref}"
    return chosen, ""


async def form_batches(db: Database, *, now: datetime, window: timedelta,
                       available: Sequence[str], limit: int = 50) -> BatchReport:
    """Fold each ripe mailbox's pending outbox rows into one notice per channel."""
    report = BatchReport()
    cutoff = now - window
    async with db.write() as s:
        ripe = (await s.execute(
            select(NotificationOutbox.mailbox_id)
            .where(NotificationOutbox.state == "pending")
            .group_by(NotificationOutbox.mailbox_id)
            .having(func.min(NotificationOutbox.created_at) <= cutoff)
            .order_by(func.min(NotificationOutbox.created_at))
            .limit(limit))).scalars().all()
        if not ripe:
            return report
        patients = {p.mailbox_id: p for p in (await s.execute(
            select(Patient).where(Patient.mailbox_id.in_(ripe)))).scalars()}
        for mailbox_id in ripe:
            rows = (await s.execute(
                select(NotificationOutbox)
                .where(NotificationOutbox.mailbox_id == mailbox_id,
                       NotificationOutbox.state == "pending")
                .order_by(NotificationOutbox.id)
                .with_for_update(skip_locked=True))).scalars().all()
            # Another worker holds some of them, or only young rows are left: not ripe here.
            if not rows or min(r.created_at for r in rows) > cutoff:
                continue
            patient = patients.get(mailbox_id)
            channels, reason = _channels_for(patient, available)
            if not channels:
                for r in rows:
                    r.state, r.last_error = "skipped", reason
                report.skipped += len(rows)
                continue
            batch_key = rows[0].idempotency_key
            kind = "invitation" if patient is not None and patient.status == "pending" else "new"
            for channel in channels:
                s.add(NotificationDelivery(
                    mailbox_id=mailbox_id, batch_key=batch_key, channel=channel,
                    idempotency_key=f"{batch_key}-{channel}", kind=kind, count=len(rows),
                    first_at=min(r.created_at for r in rows), state="pending", attempts=0,
                    next_attempt_at=now, created_at=now))
                report.notices += 1
            for r in rows:
                r.state = "batched"
            report.folded += len(rows)
    return report


async def claim(db: Database, *, now: datetime, limit: int, lease: timedelta,
                quiet: QuietHours | None, max_attempts: int) -> ClaimReport:
    """Lease up to ``limit`` due deliveries to this worker (see the module docstring)."""
    report = ClaimReport(jobs=[], deferred=[])
    async with db.write() as s:
        rows = (await s.execute(
            select(NotificationDelivery)
            .where(NotificationDelivery.state == "pending",
                   NotificationDelivery.next_attempt_at <= now)
            .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True))).scalars().all()
        if not rows:
            return report
        ids = {r.mailbox_id for r in rows}
        patients = {p.mailbox_id: p for p in (await s.execute(
            select(Patient).where(Patient.mailbox_id.in_(ids)))).scalars()}
        for row in rows:
            patient = patients.get(row.mailbox_id)
            if patient is None or patient.status not in ("pending", "active"):
                row.state = "skipped"
                row.last_error = ("no directory entry" if patient is None
                                  else f"account {patient.status}")
                report.skipped += 1
                continue
            if row.channel in CONTACT and not getattr(patient, CONTACT[row.channel]):
                row.state, row.last_error = "skipped", f"no {CONTACT[row.channel]} any more"
                report.skipped += 1
                continue
            if row.attempts >= max_attempts:
                # Its last lease ran out: the worker died during every remaining attempt.
                row.state = "dead"
                row.last_error = (row.last_error or "no outcome recorded") + " (attempts used up)"
                report.dead.append(row.channel)
                await audit.append(s, "notify.dead", actor=ACTOR, mailbox_id=row.mailbox_id,
                                   outcome="failed", reason="attempts used up",
                                   details={"channel": row.channel, "attempts": row.attempts,
                                            "key": row.idempotency_key})
                continue
            if row.channel == "sms" and quiet is not None and quiet.contains(now):
                row.next_attempt_at = quiet.release(now)
                report.deferred.append(row.channel)
                continue
            row.attempts += 1
            row.next_attempt_at = now + lease
            report.jobs.append(Job(
                id=row.id, mailbox_id=row.mailbox_id, channel=row.channel,
                key=row.idempotency_key, kind=row.kind, count=row.count, first_at=row.first_at,
                attempts=row.attempts, phone=patient.phone, email=patient.email))
    return report


async def mark_sent(db: Database, job: Job, *, now: datetime) -> bool:
    """Record acceptance and audit ``notify.sent``; False if the row was no longer pending."""
    async with db.write() as s:
        done = await s.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.id == job.id, NotificationDelivery.state == "pending")
            .values(state="sent", sent_at=now, last_error=None))
        if not done.rowcount:  # type: ignore[attr-defined]
            return False
        await audit.append(s, "notify.sent", actor=ACTOR, mailbox_id=job.mailbox_id,
                           details={"channel": job.channel, "count": job.count,
                                    "attempts": job.attempts, "key": job.key})
    return True


async def mark_failed(db: Database, job: Job, *, now: datetime, reason: str, permanent: bool,
                      max_attempts: int, retry_at: datetime) -> str:
    """Record a failed attempt: ``"retry"``, ``"dead"`` (audited), or ``"stale"``."""
    dead = permanent or job.attempts >= max_attempts
    async with db.write() as s:
        values: dict[str, object] = {"last_error": reason[:500]}
        if dead:
            values["state"] = "dead"
        else:
            values["next_attempt_at"] = retry_at
        done = await s.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.id == job.id, NotificationDelivery.state == "pending",
                   NotificationDelivery.attempts == job.attempts)
            .values(**values))
        if not done.rowcount:  # type: ignore[attr-defined]
            return "stale"
        if dead:
            await audit.append(s, "notify.dead", actor=ACTOR, mailbox_id=job.mailbox_id,
                               outcome="failed", reason=reason[:200],
                               details={"channel": job.channel, "attempts": job.attempts,
                                        "key": job.key})
    return "dead" if dead else "retry"


async def purge(db: Database, *, before: datetime) -> int:
    """Delete sent/skipped notices and folded outbox rows created before ``before``."""
    async with db.write() as s:
        gone = await s.execute(delete(NotificationDelivery).where(
            NotificationDelivery.state.in_(("sent", "skipped")),
            NotificationDelivery.created_at < before))
        folded = await s.execute(delete(NotificationOutbox).where(
            NotificationOutbox.state.in_(("batched", "skipped")),
            NotificationOutbox.created_at < before))
        return int(gone.rowcount or 0) + int(folded.rowcount or 0)  # type: ignore[attr-defined]


# --- admin (``missive admin notify``) --------------------------------------------------------

def view(row: NotificationDelivery) -> dict[str, object]:
    return {
        "id": row.id, "mailbox_id": row.mailbox_id, "channel": row.channel,
        "state": row.state, "kind": row.kind, "count": row.count, "attempts": row.attempts,
        "idempotency_key": row.idempotency_key, "batch_key": row.batch_key,
        "first_at": row.first_at.isoformat(), "created_at": row.created_at.isoformat(),
        "next_attempt_at": row.next_attempt_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "last_error": row.last_error,
    }


async def list_deliveries(session: AsyncSession, *, state: str | None = None,
                          mailbox_id: int | None = None, limit: int = 100
                          ) -> list[NotificationDelivery]:
    query = select(NotificationDelivery).order_by(NotificationDelivery.id.desc()).limit(limit)
    if state:
        query = query.where(NotificationDelivery.state == state)
    if mailbox_id is not None:
        query = query.where(NotificationDelivery.mailbox_id == mailbox_id)
    return list((await session.execute(query)).scalars().all())


async def get_delivery(session: AsyncSession, ident: str) -> NotificationDelivery:
    """By row id or idempotency key."""
    query = select(NotificationDelivery)
    if ident.isdigit():
        query = query.where(NotificationDelivery.id == int(ident))
    else:
        query = query.where(NotificationDelivery.idempotency_key == ident)
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no notification {ident!r} (see `missive admin notify list`)")
    return row


async def counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    deliveries = await session.execute(select(NotificationDelivery.state, func.count())
                                       .group_by(NotificationDelivery.state))
    outbox = await session.execute(select(NotificationOutbox.state, func.count())
                                   .group_by(NotificationOutbox.state))
    return {"deliveries": {str(k): int(v) for k, v in deliveries.all()},
            "outbox": {str(k): int(v) for k, v in outbox.all()}}


async def retry(session: AsyncSession, rows: Sequence[NotificationDelivery], *, now: datetime,
                actor: str | None) -> int:
    """Put dead (or skipped) notices back in the queue with a fresh attempt budget; the
    idempotency key stays the same."""
    changed = 0
    for row in rows:
        if row.state not in ("dead", "skipped"):
            continue
        row.state, row.attempts, row.next_attempt_at = "pending", 0, now
        await audit.append(session, "notify.retry", actor=actor, mailbox_id=row.mailbox_id,
                           details={"channel": row.channel, "key": row.idempotency_key})
        changed += 1
    return changed
