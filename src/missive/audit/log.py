"""Writing and verifying the hash-chained audit log (SPEC §7).

``append`` runs inside the caller's transaction, so an entry exists exactly when the action it
records was committed. ``verify`` walks the chain and names the first entry that was altered,
removed or reordered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from missive.audit.models import AuditEntry, AuditHead
from missive.db.base import utcnow

GENESIS = "0" * 64
DetailValue = str | int | bool | None


def _canonical(
    seq: int,
    ts: datetime,
    action: str,
    actor: str | None,
    mailbox_id: int | None,
    outcome: str,
    reason: str | None,
    details: str,
) -> bytes:
    record = [seq, ts.isoformat(timespec="microseconds"), action, actor, mailbox_id, outcome,
              reason, details]
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def _chain(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One entry to append (see :func:`append`)."""

    action: str
    actor: str | None = None
    mailbox_id: int | None = None
    outcome: str = "ok"
    reason: str | None = None
    details: Mapping[str, DetailValue] | None = None


async def append(
    session: AsyncSession,
    action: str,
    *,
    actor: str | None = None,
    mailbox_id: int | None = None,
    outcome: str = "ok",
    reason: str | None = None,
    details: Mapping[str, DetailValue] | None = None,
) -> int:
    """Append one entry in the caller's transaction; returns its sequence number."""
    seqs = await append_many(session, [Entry(action, actor, mailbox_id, outcome, reason,
                                             details)])
    return seqs[0]


async def append_many(session: AsyncSession, entries: Sequence[Entry]) -> list[int]:
    """Append entries in order, in the caller's transaction, with one head update."""
    if not entries:
        return []
    return await session.run_sync(append_many_sync, entries)


def _table(model: type) -> Table:
    table = getattr(model, "__table__")  # noqa: B009 - typed as a plain FromClause otherwise
    assert isinstance(table, Table)  # noqa: S101 - declarative models map one Table
    return table


class _Statements:
    """The append statements, built once: Core on the tables, bound parameters only.

    Appending runs in every write that is audited, including the delivery group commit's
    writer thread: ORM-enabled ``insert(AuditEntry)`` / ``update(AuditHead)`` cost more CPU
    (bulk-persistence setup, attribute synchronisation, cache keys) than the SQL itself.
    """

    def __init__(self) -> None:
        head = _table(AuditHead)
        self.head = select(head.c.seq, head.c.hash).where(head.c.id == 1).with_for_update()
        self.new_head = insert(head)
        self.entries = insert(_table(AuditEntry))
        self.move_head = update(head).where(head.c.id == 1).values(
            seq=bindparam("h_seq"), hash=bindparam("h_hash"))


_SQL = _Statements()


def sqlite_timestamp(value: datetime) -> str:
    """A :class:`missive.db.base.UTCDateTime` value as SQLAlchemy writes it on SQLite: the UTC
    time as naive text in SQLite ``DATETIME``'s storage format ``YYYY-MM-DD HH:MM:SS.ffffff``
    (for writers that bind values on the ``sqlite3`` driver themselves; reads then see what
    they would have seen)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


_SQLITE_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
_SQLITE_NEW_HEAD = "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, ?)"
_SQLITE_ENTRIES = ("INSERT INTO audit_log (seq, ts, action, actor, mailbox_id, outcome, reason, "
                   "details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_MOVE_HEAD = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1"


def append_many_sync(session: Session, entries: Sequence[Entry]) -> list[int]:
    """:func:`append_many` for a synchronous session (batch writers running in a thread).

    On the plain ``sqlite3`` driver the three statements run on its cursor, in the session's
    transaction, with the values SQLAlchemy would bind (``ts`` as :func:`sqlite_timestamp`):
    its per-statement execution cost more than the SQL (``tests/unit/audit`` compares both)."""
    if not entries:
        return []
    conn = session.connection()
    sqlite = conn.dialect.driver == "pysqlite" and not _FORCE_CORE
    cur = conn.connection.driver_connection.cursor() if sqlite else None  # type: ignore[union-attr]
    head = (cur.execute(_SQLITE_HEAD).fetchone() if cur is not None
            else conn.execute(_SQL.head).one_or_none())
    if head is None:
        if cur is not None:
            cur.execute(_SQLITE_NEW_HEAD, (GENESIS,))
        else:
            conn.execute(_SQL.new_head, {"id": 1, "seq": 0, "hash": GENESIS})
        seq, prev = 0, GENESIS
    else:
        seq, prev = int(head[0]), str(head[1])
    ts = utcnow()
    stamp: object = sqlite_timestamp(ts) if cur is not None else ts
    rows: list[tuple[object, ...]] = []
    seqs: list[int] = []
    for e in entries:
        seq += 1
        detail_text = json.dumps(dict(e.details or {}), ensure_ascii=False, sort_keys=True)
        reason = e.reason[:500] if e.reason else e.reason
        digest = _chain(prev, _canonical(seq, ts, e.action, e.actor, e.mailbox_id, e.outcome,
                                         reason, detail_text))
        rows.append((seq, stamp, e.action, e.actor, e.mailbox_id, e.outcome, reason,
                     detail_text, prev, digest))
        seqs.append(seq)
        prev = digest
    if cur is not None:
        cur.executemany(_SQLITE_ENTRIES, rows)
        cur.execute(_SQLITE_MOVE_HEAD, (seq, prev))
    else:
        conn.execute(_SQL.entries, [dict(zip(_ENTRY_COLUMNS, row, strict=True))
                                    for row in rows])
        conn.execute(_SQL.move_head, {"h_seq": seq, "h_hash": prev})
    return seqs


_ENTRY_COLUMNS = ("seq", "ts", "action", "actor", "mailbox_id", "outcome", "reason", "details",
                  "prev_hash", "hash")
#: Tests only: take the SQLAlchemy Core path on SQLite too (to compare the two).
_FORCE_CORE = False


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "entries": self.entries, "first_bad_seq": self.first_bad_seq,
                "problem": self.problem}


async def _rows(session: AsyncSession) -> AsyncIterator[AuditEntry]:
    result = await session.stream_scalars(select(AuditEntry).order_by(AuditEntry.id))
    async for row in result:
        yield row


async def verify(session: AsyncSession) -> VerifyResult:
    """Check the whole chain; the first inconsistency is reported with its sequence number.

    Rows are read in insertion order (``id``), so a reordering shows as a ``seq`` out of place or
    a broken ``prev_hash`` link; a removal as a gap; an alteration as a hash mismatch; a removed
    tail as a head that does not match the last row.
    """
    prev = GENESIS
    expected = 1
    count = 0
    async for row in _rows(session):
        count += 1
        if row.seq != expected:
            return VerifyResult(False, count, expected,
                                f"entry {expected} is missing or out of order (found {row.seq})")
        if row.prev_hash != prev:
            return VerifyResult(False, count, row.seq,
                                f"entry {row.seq} does not follow entry {row.seq - 1}")
        digest = _chain(prev, _canonical(row.seq, row.ts, row.action, row.actor, row.mailbox_id,
                                         row.outcome, row.reason, row.details))
        if digest != row.hash:
            return VerifyResult(False, count, row.seq, f"entry {row.seq} was altered")
        prev = row.hash
        expected += 1
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one_or_none()
    last_seq = expected - 1
    if head is not None and (head.seq != last_seq or (last_seq and head.hash != prev)):
        return VerifyResult(False, count, last_seq + 1,
                            f"entries after {last_seq} were removed (head is at {head.seq})")
    return VerifyResult(True, count)


async def entries_for_mailbox(
    session: AsyncSession, mailbox_id: int, *, limit: int = 200, before_seq: int | None = None
) -> list[AuditEntry]:
    """The newest entries about one mailbox (a patient's access journal)."""
    query = select(AuditEntry).where(AuditEntry.mailbox_id == mailbox_id)
    if before_seq is not None:
        query = query.where(AuditEntry.seq < before_seq)
    query = query.order_by(AuditEntry.seq.desc()).limit(limit)
    return list((await session.execute(query)).scalars())
