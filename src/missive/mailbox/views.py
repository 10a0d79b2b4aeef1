"""Lean reads of a folder for clients that mirror it (the IMAP selected view), by folder id.

Why a module beside :mod:`missive.mailbox.store`: an IMAP session catches up with its folder
before and after most commands (RFC 3501 §7.4.1, RFC 9051 §5.2), so with several clients on one
mailbox every flag change makes each of them run these reads. Built as ORM statements on the
session they cost ~0.5 ms of Python each (statement coercion, ORM compile state, loading), more
than SQLite's own work; here they are Core statements built once, run on the session's
connection, and the folder is named by its id (resolved once at SELECT), so a catch-up with
nothing new is one indexed read and one with changes three. On SQLite they go one step lower,
to the ``sqlite3`` cursor of the same transaction (SQLAlchemy's per-statement execution context
still cost ~0.15 ms; the driver's ~0.02 ms), with the same columns and the same values: the
UTC timestamps SQLAlchemy writes as naive ISO text are read back aware, as
:class:`missive.db.base.UTCDateTime` does.

Read-only, through :meth:`missive.db.engine.Database.run_read` (inline on SQLite, ``run_sync``
on PostgreSQL), like the store's hot reads; the store keeps every write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session

from missive.mailbox.models import Mailbox, Message
from missive.mailbox.store import MailboxSession, MessageInfo

__all__ = ["folder_messages", "view_changes"]

_M: Table = Message.__table__  # type: ignore[assignment]
_B: Table = Mailbox.__table__  # type: ignore[assignment]

_INFO = (_M.c.id, _M.c.uid, _M.c.flags, _M.c.internal_date, _M.c.size, _M.c.modseq,
         _M.c.content_id)
_HIGHEST = select(_B.c.highest_modseq).where(_B.c.id == bindparam("mailbox"))
_ALL = select(*_INFO).where(_M.c.folder_id == bindparam("folder")).order_by(_M.c.uid)
_CHANGED = select(*_INFO).where(
    _M.c.mailbox_id == bindparam("mailbox"), _M.c.folder_id == bindparam("folder"),
    _M.c.modseq > bindparam("modseq")).order_by(_M.c.uid)
_REMAINING = select(func.count()).select_from(_M).where(
    _M.c.folder_id == bindparam("folder"), _M.c.uid <= bindparam("last"))
_UIDS = select(_M.c.uid).where(_M.c.folder_id == bindparam("folder")).order_by(_M.c.uid)

# The same reads as plain SQL for the sqlite3 driver (positional "?" parameters).
# (Table and column names of missive.mailbox.models; the tests compare both paths' answers.)
_SQL_HIGHEST = "SELECT highest_modseq FROM mailbox WHERE id = ?"
_SQL_ALL = ("SELECT id, uid, flags, internal_date, size, modseq, content_id FROM message "
            "WHERE folder_id = ? ORDER BY uid")
_SQL_CHANGED = ("SELECT id, uid, flags, internal_date, size, modseq, content_id FROM message "
                "WHERE mailbox_id = ? AND folder_id = ? AND modseq > ? ORDER BY uid")
_SQL_REMAINING = "SELECT count(*) FROM message WHERE folder_id = ? AND uid <= ?"
_SQL_UIDS = "SELECT uid FROM message WHERE folder_id = ? ORDER BY uid"

#: Flag sets are few (a handful of combinations per folder): share one frozenset per text.
_FLAG_SETS: dict[str, frozenset[str]] = {}


def _flags(text: str) -> frozenset[str]:
    got = _FLAG_SETS.get(text)
    if got is None:
        got = frozenset(text.split()) if text else frozenset()
        if len(_FLAG_SETS) < 4096:
            _FLAG_SETS[text] = got
    return got


def _infos(rows: Iterable[Sequence[Any]]) -> list[MessageInfo]:
    return [MessageInfo(r[0], r[1], _flags(r[2]), r[3], r[4], r[5], r[6]) for r in rows]


def _utc(value: Any) -> datetime:
    """A timestamp column as :class:`missive.db.base.UTCDateTime` gives it back."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value + "+00:00")  # naive UTC text: the usual case
        except ValueError:
            value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_infos(rows: Iterable[Sequence[Any]]) -> list[MessageInfo]:
    return [MessageInfo(r[0], r[1], _flags(r[2] or ""), _utc(r[3]), r[4], r[5], r[6])
            for r in rows]


def _cursor(s: Session) -> Any:
    """A cursor of the sqlite3 connection under ``s``, inside ``s``'s transaction."""
    return s.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]


async def folder_messages(mbox: MailboxSession, folder_id: int) -> tuple[int, list[MessageInfo]]:
    """(the mailbox's highest modseq, every message of the folder in UID order), read in one
    transaction, so that a change after the read is seen by the next :func:`view_changes`."""
    def read_sqlite(s: Session) -> tuple[int, list[MessageInfo]]:
        cur = _cursor(s)
        highest = int(cur.execute(_SQL_HIGHEST, (mbox.mailbox_id,)).fetchone()[0])
        return highest, _sqlite_infos(cur.execute(_SQL_ALL, (folder_id,)).fetchall())

    if mbox.db.is_sqlite:
        return await mbox.db.run_read(read_sqlite)

    def read(s: Session) -> tuple[int, list[MessageInfo]]:
        conn = s.connection()
        highest = int(conn.execute(_HIGHEST, {"mailbox": mbox.mailbox_id}).scalar_one())
        return highest, _infos(conn.execute(_ALL, {"folder": folder_id}))

    return await mbox.db.run_read(read)


async def view_changes(mbox: MailboxSession, folder_id: int, modseq: int, known: int,
                       last_uid: int) -> tuple[int, list[MessageInfo], list[int] | None]:
    """What changed in a folder for a client that holds ``known`` messages up to UID
    ``last_uid`` (an IMAP selected view, RFC 7162 style): ``(highest modseq, messages changed
    since ``modseq``, every UID of the folder or None)``. The UID list is read only when some of
    the ``known`` messages up to ``last_uid`` are gone (UIDs are never reused, RFC 3501
    §2.3.1.1); a folder deleted meanwhile reads as empty (all expunged)."""
    def read_sqlite(s: Session) -> tuple[int, list[MessageInfo], list[int] | None]:
        cur = _cursor(s)
        highest = int(cur.execute(_SQL_HIGHEST, (mbox.mailbox_id,)).fetchone()[0])
        if highest <= modseq:
            return highest, [], None
        changed = _sqlite_infos(cur.execute(_SQL_CHANGED, (mbox.mailbox_id, folder_id,
                                                           modseq)).fetchall())
        remaining = int(cur.execute(_SQL_REMAINING, (folder_id, last_uid)).fetchone()[0])
        if remaining == known:
            return highest, changed, None
        return highest, changed, [int(r[0]) for r in cur.execute(_SQL_UIDS, (folder_id,))]

    if mbox.db.is_sqlite:
        return await mbox.db.run_read(read_sqlite)

    def read(s: Session) -> tuple[int, list[MessageInfo], list[int] | None]:
        conn = s.connection()
        highest = int(conn.execute(_HIGHEST, {"mailbox": mbox.mailbox_id}).scalar_one())
        if highest <= modseq:
            return highest, [], None
        changed = _infos(conn.execute(_CHANGED, {"mailbox": mbox.mailbox_id,
                                                 "folder": folder_id, "modseq": modseq}))
        remaining = int(conn.execute(_REMAINING, {"folder": folder_id,
                                                  "last": last_uid}).scalar_one())
        if remaining == known:
            return highest, changed, None
        return highest, changed, [int(u) for u in conn.execute(_UIDS, {"folder": folder_id})
                                  .scalars()]

    return await mbox.db.run_read(read)
