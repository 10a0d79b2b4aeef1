"""The group commit's ``sqlite3`` path writes exactly the rows its SQLAlchemy Core path writes.

On SQLite the batch transaction (and its audit append) binds its values on the driver's cursor
itself (``delivery._SqliteOps``, ``audit.append_many_sync``); the Core path stays for
PostgreSQL. The same batches go through each path on two fresh databases, with the clock, the
outbox keys and the keyed hashes made deterministic, and every row the writer touches is
compared as stored (Python type of each value included, so a timestamp written in another text
format or a boolean as text would show); then the rows are read back through the ORM (aware
UTC datetimes) and the audit chain is verified.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import make_url, select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from missive.audit import log as audit
from missive.db.base import UTCDateTime
from missive.mailbox import delivery
from missive.mailbox.delivery import _Copy, _RelayRow, new_job
from missive.mailbox.models import Content, Message, NotificationOutbox
from missive.mime.summary import MessageSummary
from support import make_settings

NOW = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
LATER = datetime(2026, 3, 4, 5, 6, 8, tzinfo=UTC)  # microsecond 0: still six digits
#: Given in another zone: stored in UTC.
APPENDED = datetime(2025, 12, 31, 23, 59, 59, 5, tzinfo=timezone(timedelta(hours=2)))

#: Every table the batch writes, with the columns compared (all of them).
TABLES = ("content", "message", "correspondent", "received_ref", "notification_outbox",
          "relay_queue", "conversation", "audit_log", "audit_head")


def _hash(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _copy(mid: int, folder: str, n: int) -> _Copy:
    return _Copy(mid, folder, "suite-1", b"key-%d-%d" % (mid, n), b"meta%d" % n,
                 b"body%d" % n * 10, 40 + n)


def _relay(n: int) -> _RelayRow:
    return _RelayRow("peer.example", "suite-1", b"relay-key-%d" % n, b"env", b"body", 10,
                     ["a@peer.example", "b@peer.example"])


def _summary(mid: str) -> MessageSummary:
    return MessageSummary(message_id=mid)


async def _batch(committer: Any, jobs: list[Any]) -> list[Any]:
    # Submitted together, so that one drain writes them as one batch.
    return list(await asyncio.gather(*(committer.submit(j) for j in jobs)))


async def _scenario(tmp: Path, *, core_path: bool, monkeypatch: pytest.MonkeyPatch
                    ) -> tuple[dict[str, list[tuple[Any, ...]]], list[Any], Any]:
    from missive.db.schema import create_schema
    from missive.runtime import build_core

    settings = make_settings(tmp / "data")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    counter = iter(range(1, 10_000))
    monkeypatch.setattr(delivery, "utcnow", lambda: NOW)
    monkeypatch.setattr(audit, "utcnow", lambda: NOW)
    monkeypatch.setattr(delivery, "uuid", type("U", (), {"uuid4": staticmethod(
        lambda: uuid.UUID(int=next(counter)))}))
    monkeypatch.setattr(audit, "_FORCE_CORE", core_path)
    core = await build_core(settings, with_master_key=True)
    try:
        await create_schema(core.db)
        await core.store.ensure_system_mailbox()
        store = core.store
        monkeypatch.setattr(store, "peer_hash", lambda m, p: _hash("peer", m, p))
        monkeypatch.setattr(store, "ref_hash", lambda m, i, p: _hash("ref", m, i, p))
        monkeypatch.setattr(store, "actor_hash", lambda a: _hash("actor", a))
        store.committer.force_core = core_path
        async with core.db.write() as s:
            patient = int(await store.create_mailbox(s, kind="patient"))
            pro = int(await store.create_mailbox(s, kind="professional"))
        results = []

        def job(**kw: Any) -> Any:
            defaults: dict[str, Any] = {"sender": "dr@test", "source": "smtp", "actor": None,
                                        "summary": _summary("<m@x>"), "size": 50}
            return new_job(**(defaults | kw))

        results += await _batch(store.committer, [
            job(copies=[_copy(patient, "INBOX", 1), _copy(pro, "INBOX", 2)]),
            # Same sender, same mailbox, same batch: one correspondent row.
            job(copies=[_copy(patient, "INBOX", 3)], summary=_summary("<m2@x>")),
            job(sender="", actor="mailer-daemon", copies=[_copy(patient, "INBOX", 4)],
                summary=_summary("")),
            job(copies=[_copy(pro, "INBOX", 5)], relays=[_relay(1), _relay(2)],
                thread_hash=_hash("thread")),
        ])
        monkeypatch.setattr(delivery, "utcnow", lambda: LATER)
        monkeypatch.setattr(audit, "utcnow", lambda: LATER)
        results += await _batch(store.committer, [
            # The correspondent exists already (ON CONFLICT DO NOTHING); a folder other than
            # INBOX (read, not cached); an APPEND-style copy with flags and a date.
            job(copies=[_copy(patient, "INBOX", 6), _copy(pro, "Sent", 7)], notify=False),
            job(sender="", actor="me", copies=[_copy(pro, "Archive", 8)],
                flags="\\Seen \\Flagged", internal_date=APPENDED, enforce_quota=True,
                action="message.append"),
            job(copies=[_copy(patient, "Drafts", 9)]),
        ])
        path = make_url(core.db.url).database
        assert path is not None
        with sqlite3.connect(path) as raw:
            rows = {t: raw.execute(f"SELECT * FROM {t} ORDER BY id").fetchall()  # noqa: S608
                    for t in TABLES}
            rows["folder"] = raw.execute(
                "SELECT id, mailbox_id, name, uidnext FROM folder ORDER BY id").fetchall()
            rows["mailbox"] = raw.execute(
                "SELECT id, highest_modseq, used_bytes FROM mailbox ORDER BY id").fetchall()
        # Read back through the ORM: aware UTC datetimes, the values given.
        async with core.db.read() as s:
            dates = (await s.execute(select(Message.internal_date).order_by(Message.id))
                     ).scalars().all()
            created = (await s.execute(select(Content.created_at))).scalars().all()
            due = (await s.execute(select(NotificationOutbox.next_attempt_at))).scalars().all()
            verified = await audit.verify(s)
        assert verified.ok, verified
        assert APPENDED in dates and NOW in dates and LATER in dates
        assert all(d.tzinfo is not None for d in [*dates, *created, *due])
        assert set(created) == {NOW, LATER}
        # (uidvalidity is random per folder: left out)
        return rows, [([(c.mailbox_id, c.folder, c.uid) for c in r.local], r.relayed,
                       r.outbox_ids) for r in results], verified
    finally:
        await core.close()


async def test_sqlite_path_writes_the_rows_of_the_core_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, fast_results, fast_audit = await _scenario(tmp_path / "fast", core_path=False,
                                                     monkeypatch=monkeypatch)
    with monkeypatch.context() as m:
        core, core_results, core_audit = await _scenario(tmp_path / "core", core_path=True,
                                                         monkeypatch=m)
    assert fast_results == core_results
    for table in fast:
        assert fast[table] == core[table], table
        assert [[type(v) for v in row] for row in fast[table]] == [
            [type(v) for v in row] for row in core[table]], table
    assert fast_audit == core_audit
    assert len(fast["message"]) == 9 and len(fast["relay_queue"]) == 2
    assert len(fast["correspondent"]) == 2  # (patient, dr) and (pro, dr)
    assert "2025-12-31 21:59:59.000005" in {row[6] for row in fast["message"]}  # internal_date


@given(st.datetimes(timezones=st.timezones()))
def test_sqlite_timestamp_is_utcdatetime_on_sqlite(value: datetime) -> None:
    try:
        dialect = sqlite_dialect.dialect()
        process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        assert process is not None
        expected: object = process(value)
    except (ValueError, OverflowError) as err:  # naive, or out of range once in UTC
        with pytest.raises(type(err)):
            audit.sqlite_timestamp(value)
        return
    assert audit.sqlite_timestamp(value) == expected


def test_sqlite_timestamp_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        audit.sqlite_timestamp(datetime(2026, 1, 1))  # naive: the case tested
