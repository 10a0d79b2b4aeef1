"""The delivery transaction and its group commit.

Shape (maddy's): :meth:`MailboxStore.delivery` starts a :class:`Delivery`; ``add_local`` and
``add_remote`` add recipients; :meth:`Delivery.commit` seals the message for every local
recipient and returns only once everything is durable; ``abort`` drops it. Atomicity rules:

- One delivery is all-or-nothing: its messages in every recipient mailbox, its notification
  outbox rows, its relay queue rows, its relation hashes (C7) and its audit entries are written
  in one database transaction (P11). A front answers 250 only after ``commit`` returned.
- Sealing (HPKE + AES-GCM, CPU only) happens *before* the transaction, so the database write
  lock is held only for the inserts.
- **Group commit**: concurrent deliveries of one process are written together in one
  transaction by a single writer task (one fsync for many messages, as Postfix and databases
  do). If a batch fails, each of its deliveries is retried alone, so one bad delivery never
  fails another; each caller gets its own result or error.
- A caller that stops waiting (client gone) does not cancel the write: the message may then be
  delivered without the client having seen 250; SMTP tolerates that duplicate, never a loss.

Implementation notes: the batch transaction runs in the writer thread (``Database.run_write``)
and holds the database write lock, so its Python cost is kept low. The transaction's logic
(:meth:`GroupCommitter._write_sync`) asks its database work of an ``_Ops`` object, one per
driver. On PostgreSQL (:class:`_CoreOps`) the statements are SQLAlchemy Core statements built
once per committer (:class:`_Statements`, bound parameters only) and executed on the session's
connection, with "insertmanyvalues" for the rows of a batch, and UIDs and modseqs allocated with
one ``UPDATE … RETURNING`` for all the folders (and one for all the mailboxes) of a batch:
there, statements, not rows, are what the writer thread pays for. On SQLite
(:class:`_SqliteOps`) the same SQL runs on the ``sqlite3`` cursor of the session's transaction
(as the store's hot reads do, :mod:`missive.mailbox.views`): SQLAlchemy's execution context
was most of the writer thread's CPU, a driver statement costs a few microseconds, so rows go
one ``INSERT`` each (ids from ``lastrowid``) or by ``executemany``. Both write the same rows
(``tests/unit/mailbox/test_delivery_sqlite.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import BindParameter, Connection, Table, bindparam, case, insert, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from missive.audit import log as audit
from missive.db.base import utcnow
from missive.errors import MissiveError, NotFound
from missive.mailbox import crypto
from missive.mailbox.models import (
    Content,
    Conversation,
    Correspondent,
    Folder,
    Mailbox,
    Message,
    NotificationOutbox,
    ReceivedRef,
    RelayQueue,
)
from missive.mime.summary import MessageSummary, summarize

if TYPE_CHECKING:
    from missive.mailbox.store import MailboxStore

log = logging.getLogger(__name__)

BODY = b"body"
META = b"meta"
ENVELOPE = b"envelope"
RELAY_LABEL = "relay"
#: Largest number of deliveries written in one transaction.
MAX_BATCH = 64


class StoreError(MissiveError):
    """A store operation was refused (closed mailbox, quota, bad folder name…)."""


class MailboxClosed(StoreError):
    pass


class QuotaExceeded(StoreError):
    pass


@dataclass(frozen=True)
class DeliveredCopy:
    mailbox_id: int
    folder: str
    uid: int
    uidvalidity: int


@dataclass(frozen=True)
class RemoteRecipient:
    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass
class DeliveryResult:
    local: list[DeliveredCopy] = field(default_factory=list)
    relayed: list[str] = field(default_factory=list)
    outbox_ids: list[int] = field(default_factory=list)


@dataclass
class _Copy:
    """One sealed copy for one recipient mailbox folder, ready to insert."""

    mailbox_id: int
    folder: str
    suite: str
    sealed_key: bytes
    meta: bytes
    body: bytes
    size: int


@dataclass
class _RelayRow:
    domain: str
    suite: str
    sealed_key: bytes
    envelope: bytes
    body: bytes
    size: int
    recipients: list[str]


@dataclass
class _Job:
    sender: str
    source: str
    actor: str | None
    notify: bool
    message_id: str
    thread_hash: str | None
    copies: list[_Copy]
    relays: list[_RelayRow]
    size: int
    future: asyncio.Future[DeliveryResult]
    #: IMAP APPEND / Sent copies: initial flags and date, quota enforced, own audit action.
    flags: str = ""
    internal_date: datetime | None = None
    enforce_quota: bool = False
    action: str = "message.deliver"


def seal_copy(public: crypto.PublicKey, mailbox_id: int, folder: str, raw: bytes,
              meta: bytes) -> _Copy:
    """Seal one copy of a message for a mailbox (a fresh data key; no database access)."""
    data_key = crypto.new_data_key()
    sealed = crypto.seal_data_key(public, data_key)
    return _Copy(mailbox_id, folder, sealed.suite, sealed.blob,
                 crypto.encrypt(data_key, meta, META), crypto.encrypt(data_key, raw, BODY),
                 len(raw))


def meta_of(summary: MessageSummary) -> bytes:
    return json.dumps(summary.to_dict(), ensure_ascii=False).encode()


def new_job(*, sender: str, source: str, actor: str | None, summary: MessageSummary,
            copies: list[_Copy], size: int, notify: bool = True, thread_hash: str | None = None,
            relays: list[_RelayRow] | None = None, **extra: object) -> _Job:
    return _Job(sender, source, actor, notify, summary.message_id, thread_hash, copies,
                relays or [], size, asyncio.get_running_loop().create_future(),
                **extra)  # type: ignore[arg-type]


class Delivery:
    """One delivery transaction: add recipients, then ``commit(raw)`` or ``abort()``."""

    def __init__(self, store: MailboxStore, *, sender: str, source: str,
                 actor: str | None) -> None:
        self.store = store
        self.sender = sender
        self.source = source
        self.actor = actor
        self.local: list[tuple[int, str]] = []
        self.remote: list[RemoteRecipient] = []
        self.close_conversation = False
        self.notify = True
        self.ret: str | None = None
        self.envid: str | None = None
        self._done = False

    def add_local(self, mailbox_id: int, folder: str = "INBOX") -> None:
        if (mailbox_id, folder) not in self.local:
            self.local.append((mailbox_id, folder))

    def add_remote(self, address: str, *, notify: Sequence[str] = (),
                   orcpt: str | None = None) -> None:
        self.remote.append(RemoteRecipient(address, tuple(notify), orcpt))

    def abort(self) -> None:
        self._done = True

    async def commit(self, raw: bytes, *, summary: MessageSummary | None = None) -> DeliveryResult:
        """Seal and store for every recipient; durable when it returns (P11)."""
        if self._done:
            raise StoreError("delivery already finished")
        self._done = True
        store = self.store
        summary = summary or summarize(raw)
        meta = meta_of(summary)
        copies = [seal_copy(await store.public_key(mailbox_id), mailbox_id, folder, raw, meta)
                  for mailbox_id, folder in self.local]
        relays = await self._seal_remote(raw) if self.remote else []
        thread = summary.thread_root if self.close_conversation else ""
        job = new_job(sender=self.sender, source=self.source, actor=self.actor, summary=summary,
                      copies=copies, size=len(raw), notify=self.notify, relays=relays,
                      thread_hash=store.thread_hash(thread) if thread else None)
        return await store.committer.submit(job)

    async def _seal_remote(self, raw: bytes) -> list[_RelayRow]:
        public = await self.store.relay_public_key()
        by_domain: dict[str, list[RemoteRecipient]] = {}
        for r in self.remote:
            by_domain.setdefault(r.address.rsplit("@", 1)[-1].lower(), []).append(r)
        rows = []
        for domain, rcpts in sorted(by_domain.items()):
            data_key = crypto.new_data_key()
            sealed = crypto.seal_data_key(public, data_key)
            envelope = json.dumps({
                "sender": self.sender, "ret": self.ret, "envid": self.envid,
                "recipients": [{"address": r.address, "notify": list(r.notify),
                                "orcpt": r.orcpt} for r in rcpts],
            }).encode()
            rows.append(_RelayRow(domain, sealed.suite, sealed.blob,
                                  crypto.encrypt(data_key, envelope, ENVELOPE),
                                  crypto.encrypt(data_key, raw, BODY), len(raw),
                                  [r.address for r in rcpts]))
        return rows


def _table(model: type) -> Table:
    table = getattr(model, "__table__")  # noqa: B009 - typed as a plain FromClause otherwise
    assert isinstance(table, Table)  # noqa: S101 - declarative models map one Table
    return table


class _Statements:
    """The batch writer's statements, built once (Core, bound parameters only), so a batch
    spends its time in the database rather than in statement construction."""

    def __init__(self, dialect: str) -> None:
        box = _table(Mailbox)
        folder = _table(Folder)
        content = _table(Content)
        outbox = _table(NotificationOutbox)
        module = pg_dialect if dialect == "postgresql" else sqlite_dialect
        self.boxes = select(box.c.id, box.c.status, box.c.kind, box.c.used_bytes,
                            box.c.quota_bytes).where(
            box.c.id.in_(bindparam("ids", expanding=True)))
        self.folders = select(folder.c.id, folder.c.mailbox_id, folder.c.name,
                              folder.c.uidvalidity).where(
            folder.c.mailbox_id.in_(bindparam("mids", expanding=True)),
            folder.c.name.in_(bindparam("names", expanding=True)))
        self._folder = folder
        self._box = box
        self._uid_bumps: dict[int, Executable] = {}
        self._modseq_bumps: dict[int, Executable] = {}
        # Ids of inserted rows are matched to the rows by a column unique within the batch
        # (the HPKE encapsulation of a fresh data key; the outbox's idempotency key), so the
        # rows go in one multi-row INSERT … RETURNING on every backend; SQLite cannot keep
        # RETURNING in parameter order, and SQLAlchemy then inserts row by row (``*_ordered``,
        # kept for a batch whose keys are not all distinct).
        self.content = insert(content).returning(content.c.id, content.c.sealed_key)
        self.content_ordered = insert(content).returning(content.c.id,
                                                         sort_by_parameter_order=True)
        self.message = insert(_table(Message))
        self.correspondent = module.insert(_table(Correspondent)).on_conflict_do_nothing(
            index_elements=["mailbox_id", "peer_hash"])
        self.received_ref = insert(_table(ReceivedRef))
        self.outbox = insert(outbox).returning(outbox.c.id, outbox.c.idempotency_key)
        self.outbox_ordered = insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True)
        self.relay = insert(_table(RelayQueue))

    def uid_bump(self, n: int) -> Executable:
        """``UPDATE folder`` of ``n`` folders at once: ``uidnext += c_i`` for folder ``f_i``,
        returning ``(id, uidnext)``: one statement per batch instead of one per folder (the
        UIDs of a batch are allocated under its write lock either way). Built once per ``n``."""
        stmt = self._uid_bumps.get(n)
        if stmt is None:
            folder = self._folder
            # Typed parameters: PostgreSQL cannot infer the type of a parameter in CASE.
            ids: list[BindParameter[int]] = [bindparam(f"f{i}", type_=folder.c.id.type)
                                             for i in range(n)]
            step = case(*((folder.c.id == ids[i],
                           bindparam(f"c{i}", type_=folder.c.uidnext.type)) for i in range(n)))
            stmt = self._uid_bumps[n] = update(folder).where(folder.c.id.in_(ids)).values(
                uidnext=folder.c.uidnext + step).returning(folder.c.id, folder.c.uidnext)
        return stmt

    def modseq_bump(self, n: int) -> Executable:
        """The same for ``n`` mailboxes: ``highest_modseq += c_i``, ``used_bytes += s_i``,
        returning ``(id, highest_modseq)``."""
        stmt = self._modseq_bumps.get(n)
        if stmt is None:
            box = self._box
            ids: list[BindParameter[int]] = [bindparam(f"m{i}", type_=box.c.id.type)
                                             for i in range(n)]
            count = case(*((box.c.id == ids[i],
                            bindparam(f"c{i}", type_=box.c.highest_modseq.type))
                           for i in range(n)))
            size = case(*((box.c.id == ids[i], bindparam(f"s{i}", type_=box.c.used_bytes.type))
                          for i in range(n)))
            stmt = self._modseq_bumps[n] = update(box).where(box.c.id.in_(ids)).values(
                highest_modseq=box.c.highest_modseq + count,
                used_bytes=box.c.used_bytes + size).returning(box.c.id, box.c.highest_modseq)
        return stmt


#: Columns of the rows the batch inserts, in the order the rows are built (tuples: building a
#: dictionary per row was a visible share of the writer's time).
_CONTENT = ("mailbox_id", "suite", "sealed_key", "meta", "body", "size", "created_at")
_MESSAGE = ("mailbox_id", "folder_id", "uid", "content_id", "flags", "internal_date", "size",
            "modseq")
_CORRESPONDENT = ("mailbox_id", "last_seen", "peer_hash")
_REF = ("mailbox_id", "ref_hash")
_OUTBOX = ("mailbox_id", "event", "idempotency_key", "state", "attempts", "created_at",
           "next_attempt_at")
_RELAY = ("domain", "state", "attempts", "suite", "sealed_key", "envelope", "body", "size",
          "created_at", "next_attempt_at")

Row = tuple[object, ...]
#: A row read back (the driver's tuple or SQLAlchemy's ``Row``).
Fetched = Sequence[Any]


class _Ops(Protocol):
    """What the batch transaction asks of the database (one implementation per driver)."""

    def timestamp(self, value: datetime) -> object: ...
    def boxes(self, ids: list[int]) -> Sequence[Fetched]: ...
    def folders(self, mids: list[int], names: list[str]) -> Sequence[Fetched]: ...
    def bump_uids(self, bumps: list[tuple[int, int]]) -> Sequence[tuple[int, int]]: ...
    def bump_modseqs(self, bumps: list[tuple[int, int, int]]
                     ) -> Sequence[tuple[int, int]]: ...
    def insert_contents(self, rows: list[Row]) -> list[int]: ...
    def insert_messages(self, rows: list[Row]) -> None: ...
    def insert_correspondents(self, rows: list[Row]) -> None: ...
    def insert_refs(self, rows: list[Row]) -> None: ...
    def insert_outbox(self, rows: list[Row]) -> list[int]: ...
    def insert_relays(self, rows: list[Row]) -> None: ...


def _dicts(columns: tuple[str, ...], rows: list[Row]) -> list[dict[str, object]]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


class _CoreOps:
    """The batch's statements through SQLAlchemy Core (:class:`_Statements`): PostgreSQL, and
    any SQLite connection that is not the plain ``sqlite3`` driver."""

    def __init__(self, conn: Connection, sql: _Statements) -> None:
        self.conn = conn
        self.sql = sql

    def timestamp(self, value: datetime) -> object:
        return value  # UTCDateTime binds it

    def boxes(self, ids: list[int]) -> Sequence[Fetched]:
        return [tuple(r) for r in self.conn.execute(self.sql.boxes, {"ids": ids}).all()]

    def folders(self, mids: list[int], names: list[str]) -> Sequence[Fetched]:
        return [tuple(r) for r in self.conn.execute(self.sql.folders,
                                                    {"mids": mids, "names": names}).all()]

    def bump_uids(self, bumps: list[tuple[int, int]]) -> Sequence[tuple[int, int]]:
        params: dict[str, int] = {}
        for i, (fid, count) in enumerate(bumps):
            params[f"f{i}"], params[f"c{i}"] = fid, count
        return [(int(f), int(e)) for f, e in self.conn.execute(self.sql.uid_bump(len(bumps)),
                                                               params).all()]

    def bump_modseqs(self, bumps: list[tuple[int, int, int]]) -> Sequence[tuple[int, int]]:
        params: dict[str, int] = {}
        for i, (mid, count, size) in enumerate(bumps):
            params[f"m{i}"], params[f"c{i}"], params[f"s{i}"] = mid, count, size
        return [(int(m), int(e)) for m, e in self.conn.execute(
            self.sql.modseq_bump(len(bumps)), params).all()]

    def insert_contents(self, rows: list[Row]) -> list[int]:
        return _inserted_ids(self.conn, self.sql.content, self.sql.content_ordered,
                             _dicts(_CONTENT, rows), "sealed_key")

    def insert_messages(self, rows: list[Row]) -> None:
        self.conn.execute(self.sql.message, _dicts(_MESSAGE, rows))

    def insert_correspondents(self, rows: list[Row]) -> None:
        self.conn.execute(self.sql.correspondent, _dicts(_CORRESPONDENT, rows))

    def insert_refs(self, rows: list[Row]) -> None:
        self.conn.execute(self.sql.received_ref, _dicts(_REF, rows))

    def insert_outbox(self, rows: list[Row]) -> list[int]:
        return _inserted_ids(self.conn, self.sql.outbox, self.sql.outbox_ordered,
                             _dicts(_OUTBOX, rows), "idempotency_key")

    def insert_relays(self, rows: list[Row]) -> None:
        self.conn.execute(self.sql.relay, _dicts(_RELAY, rows))


def _insert_sql(model: type, columns: tuple[str, ...], extra: str = "") -> str:
    """``INSERT INTO <table> (<columns>) VALUES (?, …)`` for the ``sqlite3`` driver, with the
    names checked against the model (a renamed column fails at import, not in a delivery)."""
    table = _table(model)
    for name in columns:
        table.c[name]  # KeyError on a column the model does not have
    marks = ", ".join("?" * len(columns))
    return (f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608 - model names
            f"VALUES ({marks}){extra}")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class _SqliteOps:
    """The same statements as plain SQL on the ``sqlite3`` cursor of the session's transaction.

    Why: SQLAlchemy's per-statement execution context (parameter processing, compiled-cache
    lookup, result metadata) was most of the writer thread's CPU; the driver's own work is a
    few microseconds a statement. Values are what SQLAlchemy would bind: UTC timestamps as
    the naive ISO text of its SQLite ``DATETIME`` (:func:`audit.sqlite_timestamp`), booleans
    as 0/1, the Python-side column defaults the Core inserts would add (``relay_queue``'s
    ``delay_notified``). Ids come from ``lastrowid`` of one ``INSERT`` per row (a prepared
    statement the driver reuses), in row order; ``tests/unit/mailbox/test_delivery_sqlite.py``
    compares the rows written with those of :class:`_CoreOps`.
    """

    CONTENT = _insert_sql(Content, _CONTENT)
    MESSAGE = _insert_sql(Message, _MESSAGE)
    CORRESPONDENT = _insert_sql(Correspondent, _CORRESPONDENT,
                                " ON CONFLICT (mailbox_id, peer_hash) DO NOTHING")
    REF = _insert_sql(ReceivedRef, _REF)
    OUTBOX = _insert_sql(NotificationOutbox, _OUTBOX)
    RELAY = _insert_sql(RelayQueue, (*_RELAY, "delay_notified"))
    UID_BUMP = "UPDATE folder SET uidnext = uidnext + ? WHERE id = ? RETURNING uidnext"
    MODSEQ_BUMP = ("UPDATE mailbox SET highest_modseq = highest_modseq + ?, "
                   "used_bytes = used_bytes + ? WHERE id = ? RETURNING highest_modseq")

    def __init__(self, conn: Connection) -> None:
        self.cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    timestamp = staticmethod(audit.sqlite_timestamp)

    def boxes(self, ids: list[int]) -> Sequence[Fetched]:
        sql = ("SELECT id, status, kind, used_bytes, quota_bytes FROM mailbox "  # noqa: S608
               f"WHERE id IN ({_marks(len(ids))})")  # (placeholders only)
        return self.cur.execute(sql, ids).fetchall()

    def folders(self, mids: list[int], names: list[str]) -> Sequence[Fetched]:
        sql = ("SELECT id, mailbox_id, name, uidvalidity FROM folder "  # noqa: S608
               f"WHERE mailbox_id IN ({_marks(len(mids))}) "  # (placeholders only)
               f"AND name IN ({_marks(len(names))})")
        return self.cur.execute(sql, [*mids, *names]).fetchall()

    def bump_uids(self, bumps: list[tuple[int, int]]) -> Sequence[tuple[int, int]]:
        # One statement per folder: on this driver a statement costs microseconds (the
        # single CASE statement of :class:`_CoreOps` saved SQLAlchemy's per-statement cost).
        execute = self.cur.execute
        return [(fid, execute(self.UID_BUMP, (count, fid)).fetchone()[0])
                for fid, count in bumps]

    def bump_modseqs(self, bumps: list[tuple[int, int, int]]) -> Sequence[tuple[int, int]]:
        execute = self.cur.execute
        return [(mid, execute(self.MODSEQ_BUMP, (count, size, mid)).fetchone()[0])
                for mid, count, size in bumps]

    def _inserted(self, sql: str, rows: list[Row]) -> list[int]:
        cur = self.cur
        out = []
        for row in rows:
            cur.execute(sql, row)
            out.append(cur.lastrowid)
        return out

    def insert_contents(self, rows: list[Row]) -> list[int]:
        return self._inserted(self.CONTENT, rows)

    def insert_messages(self, rows: list[Row]) -> None:
        self.cur.executemany(self.MESSAGE, rows)

    def insert_correspondents(self, rows: list[Row]) -> None:
        self.cur.executemany(self.CORRESPONDENT, rows)

    def insert_refs(self, rows: list[Row]) -> None:
        self.cur.executemany(self.REF, rows)

    def insert_outbox(self, rows: list[Row]) -> list[int]:
        return self._inserted(self.OUTBOX, rows)

    def insert_relays(self, rows: list[Row]) -> None:
        self.cur.executemany(self.RELAY, [(*row, 0) for row in rows])


class GroupCommitter:
    """Writes queued deliveries in batches, one transaction per batch (see module docstring)."""

    def __init__(self, store: MailboxStore) -> None:
        self.store = store
        self._pending: list[_Job] = []
        self._task: asyncio.Task[None] | None = None
        self._inbox_cache: dict[int, tuple[int, int]] = {}
        self._statements: _Statements | None = None
        #: Tests only: take the SQLAlchemy Core path on SQLite too (to compare the two).
        self.force_core = False

    def _sql(self, conn: Connection) -> _Statements:
        if self._statements is None:
            self._statements = _Statements(conn.dialect.name)
        return self._statements

    async def submit(self, job: _Job) -> DeliveryResult:
        self._pending.append(job)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        # shield: a caller giving up must not cancel a write other callers share.
        return await asyncio.shield(job.future)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                results = await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - isolate the failing delivery below
                if len(batch) == 1:
                    _resolve(batch[0].future, exc=exc)
                    continue
                for job in batch:
                    try:
                        (result,) = await self._write([job])
                    except Exception as single:  # noqa: BLE001 - reported to its caller
                        _resolve(job.future, exc=single)
                    else:
                        _resolve(job.future, result=result)
                continue
            for job, result in zip(batch, results, strict=True):
                _resolve(job.future, result=result)

    def _folders(self, ops: _Ops, wanted: set[tuple[int, str]]
                 ) -> dict[tuple[int, str], tuple[int, int]]:
        """(mailbox, folder name) -> (folder id, uidvalidity). INBOX ids are cached: INBOX
        can be neither deleted nor renamed away (RFC 3501 §6.3.4–5)."""
        out: dict[tuple[int, str], tuple[int, int]] = {}
        missing: set[tuple[int, str]] = set()
        for key in wanted:
            if key[1] == "INBOX" and key[0] in self._inbox_cache:
                out[key] = self._inbox_cache[key[0]]
            else:
                missing.add(key)
        if missing:
            rows = ops.folders(sorted({m for m, _ in missing}), sorted({n for _, n in missing}))
            for fid, mid, name, validity in rows:
                if (mid, name) in missing:
                    out[(mid, name)] = (fid, validity)
                    if name == "INBOX":
                        self._inbox_cache[mid] = (fid, validity)
        return out

    async def _write(self, batch: list[_Job]) -> list[DeliveryResult]:
        results = await self.store.db.run_write(lambda s: self._write_sync(s, batch))
        for mid in {c.mailbox_id for job in batch for c in job.copies}:
            self.store.events.publish(mid)
        return results

    def _ops(self, s: Session) -> _Ops:
        """The statements' runner for this transaction: the ``sqlite3`` cursor on SQLite's
        synchronous driver (``Database.run_write``'s), SQLAlchemy Core everywhere else."""
        conn = s.connection()
        if conn.dialect.driver == "pysqlite" and not self.force_core:
            return _SqliteOps(conn)
        return _CoreOps(conn, self._sql(conn))

    def _write_sync(self, s: Session, batch: list[_Job]) -> list[DeliveryResult]:
        """The batch transaction, on a synchronous session (see ``Database.run_write``)."""
        store = self.store
        ops = self._ops(s)
        now = utcnow()
        stamp = ops.timestamp(now)
        results = [DeliveryResult() for _ in batch]
        ids = {c.mailbox_id for job in batch for c in job.copies}
        boxes = {row[0]: (row[1], row[2], row[3], row[4])
                 for row in ops.boxes(sorted(ids))} if ids else {}
        folders = self._folders(ops, {(c.mailbox_id, c.folder)
                                      for job in batch for c in job.copies})
        used_now = {mid: box[2] for mid, box in boxes.items()}
        for job in batch:
            for c in job.copies:
                if c.mailbox_id not in boxes:
                    raise NotFound("no such mailbox")
                if boxes[c.mailbox_id][0] != "active":
                    raise MailboxClosed("recipient mailbox is closed")
                if (c.mailbox_id, c.folder) not in folders:
                    raise NotFound(f"no folder {c.folder!r}")
                used_now[c.mailbox_id] += c.size
                if job.enforce_quota and used_now[c.mailbox_id] > boxes[c.mailbox_id][3]:
                    # Only APPEND and copies are held to the quota: mail from professionals is
                    # never refused for space (a health document must not be lost).
                    raise QuotaExceeded("mailbox quota exceeded")
        # UIDs and modseqs: the folders' and mailboxes' counters moved once for the batch.
        per_folder: dict[int, int] = {}
        per_box: dict[int, tuple[int, int]] = {}
        for job in batch:
            for c in job.copies:
                fid = folders[(c.mailbox_id, c.folder)][0]
                per_folder[fid] = per_folder.get(fid, 0) + 1
                n, size = per_box.get(c.mailbox_id, (0, 0))
                per_box[c.mailbox_id] = (n + 1, size + c.size)
        next_uid: dict[int, int] = {}
        if per_folder:
            for fid, end in ops.bump_uids(sorted(per_folder.items())):
                next_uid[fid] = end - per_folder[fid]
        next_modseq: dict[int, int] = {}
        if per_box:
            for mid, end in ops.bump_modseqs([(mid, count, size) for mid, (count, size)
                                              in sorted(per_box.items())]):
                next_modseq[mid] = end - per_box[mid][0] + 1
        copies = [(i, c) for i, job in enumerate(batch) for c in job.copies]
        content_ids: list[int] = []
        if copies:
            content_ids = ops.insert_contents([
                (c.mailbox_id, c.suite, c.sealed_key, c.meta, c.body, c.size, stamp)
                for _, c in copies])
        messages: list[tuple[object, ...]] = []
        correspondents: list[tuple[object, ...]] = []
        seen_peers: set[tuple[int, str]] = set()
        refs: list[tuple[object, ...]] = []
        outbox: list[tuple[int, tuple[object, ...]]] = []
        entries: list[audit.Entry] = []
        for (i, c), content_id in zip(copies, content_ids, strict=True):
            job = batch[i]
            fid, validity = folders[(c.mailbox_id, c.folder)]
            uid = next_uid[fid]
            next_uid[fid] += 1
            modseq = next_modseq[c.mailbox_id]
            next_modseq[c.mailbox_id] += 1
            messages.append((c.mailbox_id, fid, uid, content_id, job.flags,
                             ops.timestamp(job.internal_date) if job.internal_date else stamp,
                             c.size, modseq))
            results[i].local.append(DeliveredCopy(c.mailbox_id, c.folder, uid, validity))
            if job.sender:
                peer = store.peer_hash(c.mailbox_id, job.sender)
                if (c.mailbox_id, peer) not in seen_peers:
                    seen_peers.add((c.mailbox_id, peer))
                    correspondents.append((c.mailbox_id, stamp, peer))
                if job.message_id:
                    refs.append((c.mailbox_id, store.ref_hash(c.mailbox_id, job.message_id,
                                                              job.sender)))
            if boxes[c.mailbox_id][1] == "patient" and job.notify and c.folder == "INBOX":
                outbox.append((i, (c.mailbox_id, "message.delivered", uuid.uuid4().hex,
                                   "pending", 0, stamp, stamp)))
            entries.append(audit.Entry(
                job.action,
                actor=store.actor_hash(job.sender) if job.sender else job.actor,
                mailbox_id=c.mailbox_id,
                details={"uid": uid, "folder": c.folder, "size": c.size,
                         "source": job.source}))
        if messages:
            ops.insert_messages(messages)
        if correspondents:
            ops.insert_correspondents(correspondents)
        if refs:
            ops.insert_refs(refs)
        if outbox:
            ids_out = ops.insert_outbox([row for _, row in outbox])
            for (i, _), oid in zip(outbox, ids_out, strict=True):
                results[i].outbox_ids.append(oid)
        for i, job in enumerate(batch):
            if job.thread_hash:
                s.execute(_insert_ignore(s, Conversation, ["thread_hash"]),
                                [{"thread_hash": job.thread_hash, "closed_at": now}])
                s.execute(update(Conversation).where(
                    Conversation.thread_hash == job.thread_hash,
                    Conversation.closed_at.is_(None)).values(closed_at=now))
            if job.relays:
                ops.insert_relays([
                    (r.domain, "pending", 0, r.suite, r.sealed_key, r.envelope, r.body, r.size,
                     stamp, stamp) for r in job.relays])
            for r in job.relays:
                results[i].relayed.extend(r.recipients)
                entries.append(audit.Entry("message.relay_queued", actor=job.actor,
                                           details={"domain": r.domain,
                                                    "recipients": len(r.recipients),
                                                    "size": r.size}))
        audit.append_many_sync(s, entries)
        store.events.notify_sync(s, set(per_box))
        return results

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def _resolve(future: asyncio.Future[DeliveryResult], *, result: DeliveryResult | None = None,
             exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        assert result is not None  # noqa: S101
        future.set_result(result)


def _inserted_ids(conn: Connection, by_key: Executable, ordered: Executable,
                  rows: list[dict[str, object]], key: str) -> list[int]:
    """The ids of ``rows``, inserted, in the order of ``rows``: ``by_key`` returns
    ``(id, row[key])`` in any order; ``ordered`` (row by row on SQLite) is used only when the
    keys of the batch are not all distinct."""
    keys = [row[key] for row in rows]
    if len(set(keys)) != len(keys):
        return list(conn.execute(ordered, rows).scalars())
    found = {k: int(i) for i, k in conn.execute(by_key, rows).all()}
    return [found[k] for k in keys]


def _insert_ignore(s: Session, table: type, keys: list[str]) -> Executable:
    """INSERT … ON CONFLICT DO NOTHING for SQLite and PostgreSQL (executemany-able)."""
    dialect = s.bind.dialect.name if s.bind is not None else "sqlite"
    module = pg_dialect if dialect == "postgresql" else sqlite_dialect
    return module.insert(table).on_conflict_do_nothing(index_elements=keys)

