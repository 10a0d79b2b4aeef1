"""The notify worker over the real store and directory (SQLite and PostgreSQL), with recording
channels: coalescing, preferences, account state, quiet hours, retries, dead letters, restarts."""

from __future__ import annotations

import random
import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from notify_helpers import MARKERS, Clock, Recorder, configure, deliver, make_patient
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from missive.audit.models import AuditEntry
from missive.mailbox.models import NotificationOutbox
from missive.notify.channels import ChannelFailure
from missive.notify.models import NotificationDelivery
from missive.notify.worker import NotifyWorker, mailbox_ref


def worker(core: Any, clock: Clock, *channels: Recorder,
           registry: CollectorRegistry | None = None) -> NotifyWorker:
    return NotifyWorker(core, clock=clock, rng=random.Random(1),
                        channels={c.name: c for c in channels}, registry=registry)


async def rows(core: Any) -> list[NotificationDelivery]:
    async with core.db.read() as s:
        return list((await s.execute(select(NotificationDelivery)
                                     .order_by(NotificationDelivery.id))).scalars())


async def audit_actions(core: Any, prefix: str) -> list[tuple[str, int | None, str]]:
    async with core.db.read() as s:
        found = (await s.execute(select(AuditEntry).where(AuditEntry.action.like(prefix + "%"))
                                 .order_by(AuditEntry.seq))).scalars()
        return [(e.action, e.mailbox_id, e.details) for e in found]


async def test_five_messages_in_the_window_make_one_notice(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=60)
    sms = Recorder("sms")
    mid = await make_patient(core, notify="sms")
    for n in range(5):
        await deliver(core, mid, n)
    w = worker(core, clock, sms)
    report = await w.run_once()
    assert report.notices == 0 and sms.sent == []  # the window is still open
    clock.advance(61)
    report = await w.run_once()
    assert (report.folded, report.sent) == (5, 1)
    assert len(sms.sent) == 1
    assert sms.sent[0].count == 5 and sms.sent[0].phone == "+33612345678"
    assert (await w.run_once()).sent == 0  # nothing left
    # A message after the notice starts a new window and a new notice with a new key.
    await deliver(core, mid, 9)
    clock.advance(61)
    await w.run_once()
    assert [n.count for n in sms.sent] == [5, 1]
    assert sms.sent[0].key != sms.sent[1].key
    async with core.db.read() as s:
        states = (await s.execute(select(NotificationOutbox.state))).scalars().all()
    assert sorted(states) == ["batched"] * 6


async def test_notice_carries_no_content(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0)
    sms, mail, relay = Recorder("sms"), Recorder("email"), Recorder("relay")
    mid = await make_patient(core, notify="both")
    await deliver(core, mid)
    await worker(core, clock, sms, mail, relay).run_once()
    for notice in (*sms.sent, *mail.sent, *relay.sent):
        text = repr(notice)
        assert not [m for m in MARKERS if m in text], text
        # An opaque id (keyed hash), not the row id nor the INS.
        assert re.fullmatch(r"mbx_[0-9a-f]{24}", notice.mailbox_ref)
    assert (len(sms.sent), len(mail.sent), len(relay.sent)) == (1, 1, 1)


async def test_preferences_choose_channels(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0)
    sms, mail, relay = Recorder("sms"), Recorder("email"), Recorder("relay")
    boxes = {
        "sms": await make_patient(core, 1, notify="sms"),
        "email": await make_patient(core, 2, notify="email"),
        "both": await make_patient(core, 3, notify="both"),
        "none": await make_patient(core, 4, notify="none"),
    }
    for mid in boxes.values():
        await deliver(core, mid)
    report = await worker(core, clock, sms, mail, relay).run_once()
    pref = {mailbox_ref(core, mid): name for name, mid in boxes.items()}
    assert sorted(pref[n.mailbox_ref] for n in sms.sent) == ["both", "sms"]
    assert sorted(pref[n.mailbox_ref] for n in mail.sent) == ["both", "email"]
    assert sorted(pref[n.mailbox_ref] for n in relay.sent) == ["both", "email", "sms"]
    assert report.skipped == 1  # the "none" patient's outbox row
    async with core.db.read() as s:
        skipped = (await s.execute(select(NotificationOutbox).where(
            NotificationOutbox.mailbox_id == boxes["none"]))).scalar_one()
    assert skipped.state == "skipped" and "no notification" in (skipped.last_error or "")


async def test_unconfigured_channel_is_left_out(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0)
    mail = Recorder("email")
    mid = await make_patient(core, notify="sms")  # wants SMS, but no SMS gateway here
    await deliver(core, mid)
    report = await worker(core, clock, mail).run_once()
    assert (report.sent, report.skipped, mail.sent) == (0, 1, [])


async def test_pending_account_gets_invitation_and_opposed_gets_nothing(
        core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0)
    sms = Recorder("sms")
    pending = await make_patient(core, 1, notify="sms", status="pending")
    active = await make_patient(core, 2, notify="sms")
    await deliver(core, pending)
    await deliver(core, active)
    await worker(core, clock, sms).run_once()
    assert sorted(n.kind for n in sms.sent) == ["invitation", "new"]
    # Opposed after the notice was queued: it is skipped at sending time, not sent.
    from notify_helpers import ins_number

    from missive.directory import patients
    await deliver(core, active, 2)
    w = worker(core, clock, sms)
    clock.advance(1)
    async with core.db.write() as s:
        await patients.set_patient_status(s, core.store, ins_number(2), "opposed", actor="t")
    report = await w.run_once()
    assert report.sent == 0 and len(sms.sent) == 2


async def test_quiet_hours_defer_sms_not_email(core: Any, clock: Clock) -> None:
    local = clock.now.astimezone(ZoneInfo("Europe/Paris"))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=2)).strftime("%H:%M")
    configure(core, coalesce_seconds=0, quiet_hours=f"{start}-{end}", timezone="Europe/Paris")
    sms, mail = Recorder("sms"), Recorder("email")
    mid = await make_patient(core, notify="both")
    await deliver(core, mid)
    w = worker(core, clock, sms, mail)
    report = await w.run_once()
    assert (report.deferred, len(sms.sent), len(mail.sent)) == (1, 0, 1)
    (sms_row,) = [r for r in await rows(core) if r.channel == "sms"]
    assert sms_row.attempts == 0 and sms_row.state == "pending"
    assert sms_row.next_attempt_at > clock.now + timedelta(hours=1)
    clock.advance(3600)
    assert (await w.run_once()).sent == 0  # still quiet
    clock.now = sms_row.next_attempt_at + timedelta(seconds=1)
    assert (await w.run_once()).sent == 1
    assert len(sms.sent) == 1


async def test_retry_with_backoff_then_success_keeps_key(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0, retry_base_seconds=10, retry_max_seconds=100)
    registry = CollectorRegistry()
    sms = Recorder("sms", fail=[ChannelFailure("webhook answered HTTP 500"),
                                ChannelFailure("webhook timed out")])
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    w = worker(core, clock, sms, registry=registry)
    assert (await w.run_once()).retried == 1
    (row,) = await rows(core)
    first_delay = (row.next_attempt_at - clock.now).total_seconds()
    assert 5 <= first_delay <= 10  # equal jitter on base 10
    assert (await w.run_once()).outcomes == {}  # not due yet
    clock.now = row.next_attempt_at
    assert (await w.run_once()).retried == 1
    (row,) = await rows(core)
    assert 10 <= (row.next_attempt_at - clock.now).total_seconds() <= 20
    clock.now = row.next_attempt_at
    assert (await w.run_once()).sent == 1
    assert len(set(sms.attempts)) == 1 and len(sms.attempts) == 3 and len(sms.sent) == 1
    (row,) = await rows(core)
    assert (row.state, row.attempts, row.last_error) == ("sent", 3, None)
    value = registry.get_sample_value
    assert value("missive_notify_sent_total", {"channel": "sms"}) == 1
    assert value("missive_notify_failed_total", {"channel": "sms"}) == 2
    assert value("missive_notify_retried_total", {"channel": "sms"}) == 2
    assert await audit_actions(core, "notify.") == [
        ("notify.sent", mid, row_details(row))]


class Killed(BaseException):
    """Not an Exception: nothing in the worker may catch it, like a SIGKILL."""


def row_details(row: NotificationDelivery) -> str:
    import json

    return json.dumps({"attempts": row.attempts, "channel": row.channel, "count": row.count,
                       "key": row.idempotency_key}, sort_keys=True)


async def test_dead_letter_after_max_attempts(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0, max_attempts=3, retry_base_seconds=1)
    registry = CollectorRegistry()
    sms = Recorder("sms", fail=[ChannelFailure("webhook answered HTTP 503")] * 10)
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    w = worker(core, clock, sms, registry=registry)
    outcomes = []
    for _ in range(6):
        report = await w.run_once()
        outcomes.extend(report.outcomes.values())
        clock.advance(10)
    assert outcomes == ["retry", "retry", "dead"]
    (row,) = await rows(core)
    assert (row.state, row.attempts) == ("dead", 3)
    assert "503" in (row.last_error or "")
    assert registry.get_sample_value("missive_notify_dead_total", {"channel": "sms"}) == 1
    assert [a[0] for a in await audit_actions(core, "notify.")] == ["notify.dead"]


async def test_permanent_refusal_is_dead_at_once(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0)
    sms = Recorder("sms", fail=[ChannelFailure("webhook answered HTTP 400", permanent=True)])
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    report = await worker(core, clock, sms).run_once()
    assert report.dead == 1 and len(sms.attempts) == 1


async def test_crash_after_claim_resends_under_the_same_key(core: Any, clock: Clock) -> None:
    """A worker dies after claiming (and maybe sending) but before recording: the lease runs
    out and the next worker sends the same notice with the same key; nothing is lost."""
    configure(core, coalesce_seconds=0, timeout_seconds=5)
    mid = await make_patient(core, notify="sms")
    for n in range(3):
        await deliver(core, mid, n)

    class Dies(Recorder):
        async def send(self, notice: Any) -> None:
            await super().send(notice)
            raise Killed  # stands for the process being killed mid-round

    first = Dies("sms")
    w1 = worker(core, clock, first)
    try:
        await w1.run_once()
    except Killed:
        pass
    assert len(first.sent) == 1
    second = Recorder("sms")
    w2 = worker(core, clock, second)
    assert (await w2.run_once()).outcomes == {}  # leased by the dead worker
    clock.advance(w2.lease.total_seconds() + 1)
    assert (await w2.run_once()).sent == 1
    assert [n.key for n in second.sent] == [n.key for n in first.sent]
    assert second.sent[0].count == 3
    (row,) = await rows(core)
    assert (row.state, row.attempts) == ("sent", 2)


async def test_late_answer_of_a_stale_worker_does_not_undo_a_newer_attempt(
        core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0)
    from missive.notify import queue

    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    await queue.form_batches(core.db, now=clock.now, window=timedelta(0), available=["sms"])
    lease = timedelta(seconds=30)
    old = (await queue.claim(core.db, now=clock.now, limit=5, lease=lease, quiet=None,
                             max_attempts=5)).jobs[0]
    clock.advance(31)
    new = (await queue.claim(core.db, now=clock.now, limit=5, lease=lease, quiet=None,
                             max_attempts=5)).jobs[0]
    assert (old.key, new.attempts) == (new.key, 2)
    assert await queue.mark_failed(core.db, old, now=clock.now, reason="late", permanent=True,
                                   max_attempts=5, retry_at=clock.now) == "stale"
    assert await queue.mark_sent(core.db, new, now=clock.now)
    (row,) = await rows(core)
    assert row.state == "sent"


async def test_closed_mailbox_outbox_rows_are_gone(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=60)
    sms = Recorder("sms")
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    from notify_helpers import ins_number

    from missive.directory import patients
    async with core.db.write() as s:
        await patients.set_patient_status(s, core.store, ins_number(1), "closed", actor="t")
    clock.advance(61)
    assert (await worker(core, clock, sms).run_once()).sent == 0


async def test_two_workers_never_send_one_notice_twice(core: Any, clock: Clock) -> None:
    """Two nodes on one database: SKIP LOCKED (PostgreSQL) / the write lock (SQLite) give each
    notice to one worker only."""
    import asyncio

    configure(core, coalesce_seconds=0)
    boxes = [await make_patient(core, n, notify="sms") for n in range(1, 7)]
    for mid in boxes:
        await deliver(core, mid)
    a, b = Recorder("sms"), Recorder("sms")
    wa, wb = worker(core, clock, a), worker(core, clock, b)
    await asyncio.gather(wa.run_once(), wb.run_once(), wa.run_once(), wb.run_once())
    keys = [n.key for n in a.sent + b.sent]
    assert len(keys) == len(set(keys)) == len(boxes)
    assert [r.state for r in await rows(core)] == ["sent"] * len(boxes)


async def test_admin_retry_resets_the_budget_and_keeps_the_key(core: Any, clock: Clock) -> None:
    from missive.notify import queue

    configure(core, coalesce_seconds=0, max_attempts=1)
    sms = Recorder("sms", fail=[ChannelFailure("webhook answered HTTP 500")])
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    w = worker(core, clock, sms)
    assert (await w.run_once()).dead == 1
    async with core.db.write() as s:
        dead = await queue.list_deliveries(s, state="dead")
        assert await queue.retry(s, dead, now=clock.now, actor="cli:test") == 1
        assert await queue.retry(s, dead, now=clock.now, actor="cli:test") == 0  # not dead now
    assert (await w.run_once()).sent == 1
    assert len(set(sms.attempts)) == 1
    assert [a[0] for a in await audit_actions(core, "notify.")] == [
        "notify.dead", "notify.retry", "notify.sent"]


async def test_worker_runs_without_the_master_key(core: Any, clock: Clock) -> None:
    """The worker never opens a mailbox: a core that cannot (C2) notifies just the same."""
    from missive.errors import KeyStoreUnavailable
    from missive.runtime import build_core

    configure(core, coalesce_seconds=0)
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    public_only = await build_core(core.settings, with_master_key=False)
    try:
        with pytest.raises(KeyStoreUnavailable):
            await public_only.store.open(mid)
        sms = Recorder("sms")
        assert (await worker(public_only, clock, sms).run_once()).sent == 1
    finally:
        await public_only.close()
    assert sms.sent[0].count == 1


@pytest.mark.parametrize(("url", "production", "ok"), [
    ("", True, True),
    ("https://sms.example.fr/hook", True, True),
    ("http://127.0.0.1:8080/hook", True, True),
    ("http://sms.example.fr/hook", True, False),
    ("http://sms.example.fr/hook", False, True),
    ("ftp://sms.example.fr/hook", False, False),
    ("sms.example.fr", False, False),
])
def test_webhook_urls(url: str, production: bool, ok: bool) -> None:
    from missive.errors import SettingsError
    from missive.notify.worker import check_webhook_url

    if ok:
        check_webhook_url("sms_webhook_url", url, production=production)
    else:
        with pytest.raises(SettingsError, match="sms_webhook_url"):
            check_webhook_url("sms_webhook_url", url, production=production)


async def test_admin_notify_human_output(core: Any, clock: Clock,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from missive.cli import admin_notify

    configure(core, coalesce_seconds=0, max_attempts=1)
    sms = Recorder("sms", fail=[ChannelFailure("webhook answered HTTP 404", permanent=True)])
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    await worker(core, clock, sms).run_once()
    core.settings.config_file.write_text(
        'environment = "test"\n' + (f'database_url = "{core.settings.database_url}"\n'
                                    if core.settings.database_url else ""))
    base = {"data_dir": str(core.settings.data_dir), "json": False}
    ns = argparse.Namespace(**base, state=None, mailbox=None, limit=10)
    assert await admin_notify.list_command(ns) == 0
    out = capsys.readouterr().out
    assert "dead 1" in out and "webhook answered HTTP 404" in out and "CHANNEL" in out
    assert await admin_notify.show_command(argparse.Namespace(**base, notice="1")) == 0
    assert "idempotency_key" in capsys.readouterr().out
    from missive.cli.common import CommandError

    with pytest.raises(CommandError, match="no notification"):
        await admin_notify.show_command(argparse.Namespace(**base, notice="nope"))
    (row,) = await rows(core)
    ns = argparse.Namespace(**base, notice=None, all_dead=True)
    assert await admin_notify.retry_command(ns) == 0
    assert "1 notice(s) queued again" in capsys.readouterr().out
    ns = argparse.Namespace(**base, notice=str(row.id), all_dead=False)
    with pytest.raises(CommandError, match="is pending: only dead or skipped"):
        await admin_notify.retry_command(ns)



async def test_old_notices_are_purged_but_dead_letters_kept(core: Any, clock: Clock) -> None:
    configure(core, coalesce_seconds=0, keep_days=30, max_attempts=1)
    ok, broken = Recorder("sms"), Recorder("email", fail=[ChannelFailure("HTTP 500")])
    mid = await make_patient(core, notify="both")
    await deliver(core, mid)
    w = worker(core, clock, ok, broken)
    assert (await w.run_once()).purged == 0
    assert sorted(r.state for r in await rows(core)) == ["dead", "sent"]
    clock.advance(29 * 86400)
    assert (await w.run_once()).purged == 0
    clock.advance(2 * 86400)
    assert (await w.run_once()).purged == 2  # the sent notice and its outbox row
    assert [r.state for r in await rows(core)] == ["dead"]
    async with core.db.read() as s:
        assert (await s.execute(select(NotificationOutbox))).scalars().all() == []
