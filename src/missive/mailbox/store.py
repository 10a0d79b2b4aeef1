"""The encrypted mailbox store: deliver, list, fetch, flags, copy/move, expunge, search, close.

Every message is sealed at delivery for its recipient mailbox (``mailbox.crypto``); reading needs
a :class:`MailboxSession`, which holds that mailbox's private key in memory only (C6) and is
opened only where the master key is available. Delivery needs only public keys (C2).

Delivery is a transaction in the shape of maddy's ``Start → AddRcpt → Body → Commit/Abort``:
:meth:`MailboxStore.delivery` starts it, :meth:`Delivery.add_local` / :meth:`Delivery.add_remote`
add recipients, :meth:`Delivery.commit` seals the body for every local recipient and writes, in
one database transaction, the messages, the notification outbox rows, the relay queue rows,
the relation hashes (C7) and the audit entries. When ``commit`` returns, all of it is durable
(SQLite ``synchronous=FULL``; PostgreSQL commit): only then may a front answer 250 (P11).

Implementation notes:
- UIDs come from ``UPDATE folder SET uidnext = uidnext + 1 … RETURNING`` inside the writing
  transaction: the row lock (PostgreSQL) or the database write lock (SQLite) orders concurrent
  deliveries, so UIDs are unique and ascend in commit order (RFC 3501 §2.3.1.1).
- Every change takes one new mailbox ``modseq`` (RFC 7162 §3.1: one value may cover several
  messages changed by one operation).
- Nothing here logs message content, subjects or addresses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Connection,
    Select,
    Table,
    bindparam,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from missive.audit import log as audit
from missive.db.base import utcnow
from missive.db.engine import AFTER_COMMIT, BEFORE_COMMIT, MANAGED, Database
from missive.errors import KeyStoreUnavailable, NotFound
from missive.mailbox import crypto
from missive.mailbox.delivery import (
    BODY,
    ENVELOPE,
    META,
    RELAY_LABEL,
    DeliveredCopy,
    Delivery,
    DeliveryResult,
    GroupCommitter,
    MailboxClosed,
    QuotaExceeded,
    RemoteRecipient,
    StoreError,
    meta_of,
    new_job,
    seal_copy,
)
from missive.mailbox.events import ChangeBus
from missive.mailbox.keystore import KeyStore, new_ref
from missive.mailbox.models import (
    Content,
    Conversation,
    Correspondent,
    DelegateKey,
    Folder,
    Mailbox,
    Message,
    NotificationOutbox,
    ReceivedRef,
    RelayQueue,
)
from missive.mailbox.writer import WriteBatcher
from missive.mime.summary import MessageSummary, summarize

log = logging.getLogger(__name__)

MailboxKind = Literal["patient", "professional", "system"]
FlagMode = Literal["add", "remove", "set"]

#: Folders every mailbox starts with, and their RFC 6154 special-use attribute.
DEFAULT_FOLDERS: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Archive", "\\Archive"),
    ("Trash", "\\Trash"),
)


# --- value objects ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FolderInfo:
    id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    subscribed: bool


@dataclass(frozen=True)
class FolderStatus:
    name: str
    messages: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highest_modseq: int
    size: int


@dataclass(frozen=True)
class MessageInfo:
    id: int
    uid: int
    flags: frozenset[str]
    internal_date: datetime
    size: int
    modseq: int
    content_id: int


@dataclass(frozen=True)
class RelationFacts:
    """Facts for policy P6, computed from keyed hashes (C7)."""

    wrote_before: bool
    references_known: bool
    conversation_closed: bool


def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def _flags_set(text: str) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


@dataclass(frozen=True)
class Page:
    """A page of a folder (:meth:`MailboxSession.page`): newest first."""

    messages: list[MessageInfo]
    summaries: dict[int, MessageSummary]
    older: bool
    newer: bool
    highest_modseq: int  # of the mailbox when the page was read


_MESSAGE: Table = Message.__table__  # type: ignore[assignment]
_CONTENT: Table = Content.__table__  # type: ignore[assignment]
_FOLDER: Table = Folder.__table__  # type: ignore[assignment]

_MAILBOX: Table = Mailbox.__table__  # type: ignore[assignment]
_HIGHEST_MODSEQ = select(_MAILBOX.c.highest_modseq).where(_MAILBOX.c.id == bindparam("mid"))
_NEXT_MODSEQ = (update(_MAILBOX).where(_MAILBOX.c.id == bindparam("mid"))
                .values(highest_modseq=_MAILBOX.c.highest_modseq + 1)
                .returning(_MAILBOX.c.highest_modseq))
_CONVERSATION: Table = Conversation.__table__  # type: ignore[assignment]
_CONVERSATION_CLOSED = select(exists().where(_CONVERSATION.c.thread_hash == bindparam("h"),
                                             _CONVERSATION.c.closed_at.is_not(None)))
_DERIVED_ROWS = select(_CONTENT.c.id, _CONTENT.c.derived).where(
    _CONTENT.c.mailbox_id == bindparam("mid"), _CONTENT.c.id.in_(bindparam("ids", expanding=True)))
_DERIVED_RANGE = (select(_CONTENT.c.id, _CONTENT.c.derived)
                  .join_from(_MESSAGE, _CONTENT, _CONTENT.c.id == _MESSAGE.c.content_id)
                  .where(_MESSAGE.c.folder_id == bindparam("fid"),
                         _MESSAGE.c.uid.between(bindparam("lo"), bindparam("hi")),
                         _CONTENT.c.mailbox_id == bindparam("mid")))
_BODY_ROWS = (select(_MESSAGE.c.uid, _CONTENT.c.id, _CONTENT.c.suite, _CONTENT.c.sealed_key,
                     _CONTENT.c.key_cache, _CONTENT.c.body)
              .join_from(_MESSAGE, _CONTENT, _CONTENT.c.id == _MESSAGE.c.content_id)
              .where(_MESSAGE.c.folder_id == bindparam("fid"),
                     _MESSAGE.c.uid.in_(bindparam("uids", expanding=True)),
                     _CONTENT.c.mailbox_id == bindparam("mid")))
# The key cache and the derived items are written back by the store's background task (see
# MailboxStore._write_key_cache): one statement per shape, so that a content whose key and
# items were both computed is rewritten once (a row rewrite copies the sealed body too).
_DERIVED_UPDATE = (update(_CONTENT).where(_CONTENT.c.id == bindparam("b_id"),
                                          _CONTENT.c.mailbox_id == bindparam("b_mailbox"))
                   .values(derived=bindparam("b_derived")))
_KEY_CACHE_UPDATE = (update(_CONTENT).where(_CONTENT.c.id == bindparam("b_id"),
                                            _CONTENT.c.mailbox_id == bindparam("b_mailbox"))
                     .values(key_cache=bindparam("b_cache")))
_BOTH_UPDATE = (update(_CONTENT).where(_CONTENT.c.id == bindparam("b_id"),
                                       _CONTENT.c.mailbox_id == bindparam("b_mailbox"))
                .values(key_cache=bindparam("b_cache"), derived=bindparam("b_derived")))

# The same reads and writes as plain SQL for the sqlite3 driver, on the cursor of the session's
# own transaction (as missive.mailbox.views does): SQLAlchemy's per-statement work (expanding
# IN lists, execution context, result rows) cost more than SQLite's on these hot paths. Table
# and column names of missive.mailbox.models; the tests compare both paths' answers.
_SQL_FOLDER_ID = "SELECT id FROM folder WHERE mailbox_id = ? AND name = ?"
_SQL_BODY_ROWS = ("SELECT m.uid, c.id, c.suite, c.sealed_key, c.key_cache, c.body "
                  "FROM message m JOIN content c ON c.id = m.content_id "
                  "WHERE m.folder_id = ? AND c.mailbox_id = ? AND m.uid IN (%s)")
_SQL_DERIVED_ROWS = "SELECT id, derived FROM content WHERE mailbox_id = ? AND id IN (%s)"
_SQL_DERIVED_RANGE = ("SELECT c.id, c.derived FROM message m JOIN content c "
                      "ON c.id = m.content_id WHERE m.folder_id = ? AND m.uid BETWEEN ? AND ? "
                      "AND c.mailbox_id = ?")
_SQL_KEY_CACHE_UPDATE = "UPDATE content SET key_cache = ? WHERE id = ? AND mailbox_id = ?"
_SQL_DERIVED_UPDATE = "UPDATE content SET derived = ? WHERE id = ? AND mailbox_id = ?"
_SQL_BOTH_UPDATE = ("UPDATE content SET key_cache = ?, derived = ? "
                    "WHERE id = ? AND mailbox_id = ?")


def _driver_cursor(s: Session) -> Any:
    """A cursor of the sqlite3 connection under ``s``, inside ``s``'s transaction."""
    return s.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]


def _marks(n: int) -> str:
    return ",".join("?" * n)
_FOLDER_ID = select(_FOLDER.c.id).where(_FOLDER.c.mailbox_id == bindparam("mid"),
                                         _FOLDER.c.name == bindparam("name"))
_EXISTS_BELOW = select(exists().where(_MESSAGE.c.folder_id == bindparam("fid"),
                                      _MESSAGE.c.uid < bindparam("uid")))
_EXISTS_ABOVE = select(exists().where(_MESSAGE.c.folder_id == bindparam("fid"),
                                      _MESSAGE.c.uid > bindparam("uid")))


@functools.cache
def _page_query(direction: str) -> Select[Any]:
    """The page statement of :meth:`MailboxSession.page`, built once per direction."""
    m, c = _MESSAGE.c, _CONTENT.c
    q = (select(m.id, m.uid, m.flags, m.internal_date, m.size, m.modseq, m.content_id,
                c.suite, c.sealed_key, c.key_cache, c.meta)
         .join_from(_MESSAGE, _CONTENT, c.id == m.content_id)
         .where(m.folder_id == bindparam("fid")))
    if direction == "above":
        q = q.where(m.uid > bindparam("uid")).order_by(m.uid.asc())
    else:
        if direction == "below":
            q = q.where(m.uid < bindparam("uid"))
        q = q.order_by(m.uid.desc())
    return q.limit(bindparam("lim"))


#: The columns of a :class:`MessageInfo`, for reads that need no ORM objects.
_INFO_COLUMNS = (Message.id, Message.uid, Message.flags, Message.internal_date, Message.size,
                 Message.modseq, Message.content_id)
_FLAG_ROWS = select(*_INFO_COLUMNS).where(
    _MESSAGE.c.folder_id == bindparam("fid"),
    _MESSAGE.c.uid.in_(bindparam("uids", expanding=True))).order_by(_MESSAGE.c.uid)
_SET_FLAGS = (update(_MESSAGE).where(_MESSAGE.c.id == bindparam("b_id"))
              .values(flags=bindparam("b_flags"), modseq=bindparam("b_modseq")))


def _info_row(r: Sequence[object]) -> MessageInfo:
    return MessageInfo(r[0], r[1], _flags_set(r[2]), r[3], r[4], r[5], r[6])  # type: ignore[arg-type]


def _info(m: Message) -> MessageInfo:
    return MessageInfo(m.id, m.uid, _flags_set(m.flags), m.internal_date, m.size, m.modseq,
                       m.content_id)


def _folder_info(f: Folder) -> FolderInfo:
    return FolderInfo(f.id, f.name, f.special_use, f.uidvalidity, f.uidnext, f.subscribed)


def _write_cache_rows(s: Session, rows: Sequence[tuple[int, int, bytes | None, bytes | None]]
                      ) -> None:
    """Write key-cache and derived entries: one UPDATE per content row (when both were
    computed, both columns in the same statement: every rewrite of a row copies its sealed
    body), as one executemany per statement shape (Core, not the ORM's bulk update)."""
    conn = s.connection()
    both = [{"b_id": c, "b_mailbox": m, "b_cache": k, "b_derived": d}
            for c, m, k, d in rows if k is not None and d is not None]
    keys = [{"b_id": c, "b_mailbox": m, "b_cache": k} for c, m, k, d in rows
            if k is not None and d is None]
    derived = [{"b_id": c, "b_mailbox": m, "b_derived": d} for c, m, k, d in rows
               if k is None and d is not None]
    for stmt, params in ((_BOTH_UPDATE, both), (_KEY_CACHE_UPDATE, keys),
                         (_DERIVED_UPDATE, derived)):
        if params:
            conn.execute(stmt, params)


def _write_cache_rows_sqlite(s: Session, rows: Sequence[tuple[int, int, bytes | None,
                                                                bytes | None]]) -> None:
    """:func:`_write_cache_rows` on the sqlite3 cursor of the writer's transaction."""
    cur = _driver_cursor(s)
    both = [(k, d, c, m) for c, m, k, d in rows if k is not None and d is not None]
    keys = [(k, c, m) for c, m, k, d in rows if k is not None and d is None]
    derived = [(d, c, m) for c, m, k, d in rows if k is None and d is not None]
    for sql, params in ((_SQL_BOTH_UPDATE, both), (_SQL_KEY_CACHE_UPDATE, keys),
                        (_SQL_DERIVED_UPDATE, derived)):
        if params:
            cur.executemany(sql, params)


class MailboxStore:
    """Entry point of the store. One instance per process; cheap to share."""

    def __init__(
        self,
        db: Database,
        keys: crypto.KeyRing,
        *,
        keystore: KeyStore | None = None,
        suite: str = crypto.HYBRID,
        default_quota: int = 2 * 1024**3,
        events: ChangeBus | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self._keystore = keystore
        self._public_keys: dict[int, crypto.PublicKey] = {}
        self.committer = GroupCommitter(self)
        self.writer = WriteBatcher(db)
        self.suite = suite
        self.default_quota = default_quota
        self.events = events or ChangeBus()
        self._cache_dirty: set[MailboxSession] = set()
        self._cache_task: asyncio.Task[None] | None = None

    @property
    def keystore(self) -> KeyStore:
        if self._keystore is None:
            raise KeyStoreUnavailable(
                "the key store is not available in this process: mailboxes cannot be created "
                "or opened here")
        return self._keystore

    async def public_key(self, mailbox_id: int) -> crypto.PublicKey:
        """A mailbox public key (cached: it never changes; closing is checked at commit)."""
        key = self._public_keys.get(mailbox_id)
        if key is None:
            async with self.db.read() as s:
                row = (await s.execute(select(Mailbox.suite, Mailbox.public_key).where(
                    Mailbox.id == mailbox_id))).one_or_none()
            if row is None:
                raise NotFound("no such mailbox")
            key = self._public_keys[mailbox_id] = crypto.PublicKey(row[0], row[1])
        return key

    async def relay_public_key(self) -> crypto.PublicKey:
        async with self.db.read() as s:
            mid = (await s.execute(select(Mailbox.id).where(Mailbox.label == RELAY_LABEL))
                   ).scalar()
        if mid is None:
            raise StoreError("relay mailbox missing: run `missive init`")
        return await self.public_key(int(mid))

    # --- relation hashes (C7) ----------------------------------------------------------------
    def peer_hash(self, mailbox_id: int, peer: str) -> str:
        return self.keys.index.digest("peer", mailbox_id, peer.lower())

    def ref_hash(self, mailbox_id: int, message_id: str, peer: str) -> str:
        return self.keys.index.digest("ref", mailbox_id, message_id.lower(), peer.lower())

    def thread_hash(self, root_message_id: str) -> str:
        return self.keys.index.digest("thread", root_message_id.lower())

    def actor_hash(self, address: str) -> str:
        """How a sender appears in audit entries that tie it to a recipient (C7)."""
        return "h:" + self.keys.index.digest("actor", address.lower())[:24]

    # --- mailboxes ----------------------------------------------------------------------------
    async def create_mailbox(
        self, session: AsyncSession, *, kind: MailboxKind, label: str | None = None,
        quota: int | None = None,
    ) -> int:
        """Create a mailbox with a fresh key pair and the default folders; returns its id.

        Runs in the caller's transaction. Needs the key store (the private key is wrapped by a
        new KEK registered there).
        """
        public, private = crypto.generate_keypair(self.suite)
        ref = new_ref()
        kek = await self._new_kek(session, ref)
        box = Mailbox(kind=kind, label=label, status="active", suite=public.suite,
                      public_key=public.raw,
                      wrapped_private_key=crypto.wrap_private_key(kek, public, private),
                      key_ref=ref, highest_modseq=1,
                      quota_bytes=quota or self.default_quota, used_bytes=0)
        session.add(box)
        await session.flush()
        for name, special in DEFAULT_FOLDERS:
            session.add(Folder(mailbox_id=box.id, name=name, special_use=special,
                               uidvalidity=_new_uidvalidity(), uidnext=1, subscribed=True))
        await session.flush()
        await audit.append(session, "mailbox.create", mailbox_id=box.id,
                           details={"kind": kind, "suite": public.suite})
        return box.id

    async def _new_kek(self, session: AsyncSession, ref: str) -> bytes:
        """A KEK for a new mailbox, durable in the key store *before* the mailbox row commits.

        Inside ``Database.write`` the KEKs of one transaction are saved together just before
        its commit (one key-store fsync for a whole import); elsewhere, at once.
        """
        keystore = self.keystore
        if not session.info.get(MANAGED):
            return await keystore.create(ref)
        kek, row = keystore.prepare(ref)
        pending: list[dict[str, object]] | None = session.info.get("missive_pending_keks")
        if pending is None:
            pending = session.info["missive_pending_keks"] = []
            pending_rows = pending

            async def _save(_: object) -> None:
                await keystore.save(pending_rows)

            session.info.setdefault(BEFORE_COMMIT, []).append(_save)
        pending.append(row)
        return kek

    async def ensure_system_mailbox(self, label: str = RELAY_LABEL) -> int:
        """The system mailbox whose key seals the outbound relay queue (created by init)."""
        async with self.db.write() as s:
            found = (await s.execute(select(Mailbox.id).where(Mailbox.label == label))).scalar()
            if found is not None:
                return int(found)
            return await self.create_mailbox(s, kind="system", label=label)

    async def close_mailbox(self, session: AsyncSession, mailbox_id: int) -> None:
        """Crypto-shredding (C3): the mailbox's KEK is destroyed when the caller's transaction
        has committed, and the wrapped private key and sealed data are deleted in it.

        Backups of the database made before keep a wrapped private key, but its KEK existed only
        in the key store: nothing can unwrap it any more.
        """
        box = await session.get(Mailbox, mailbox_id, with_for_update=True)
        if box is None:
            raise NotFound("no such mailbox")
        ref = box.key_ref
        box.wrapped_private_key = None
        box.key_ref = None
        box.status = "closed"
        box.closed_at = utcnow()
        box.used_bytes = 0
        await session.execute(delete(Message).where(Message.mailbox_id == mailbox_id))
        await session.execute(delete(Content).where(Content.mailbox_id == mailbox_id))
        await session.execute(delete(Correspondent).where(Correspondent.mailbox_id == mailbox_id))
        await session.execute(delete(ReceivedRef).where(ReceivedRef.mailbox_id == mailbox_id))
        await session.execute(delete(NotificationOutbox).where(
            NotificationOutbox.mailbox_id == mailbox_id))
        delegate_refs = list((await session.execute(select(DelegateKey.key_ref).where(
            DelegateKey.mailbox_id == mailbox_id))).scalars())
        await session.execute(delete(DelegateKey).where(DelegateKey.mailbox_id == mailbox_id))
        await audit.append(session, "mailbox.close", mailbox_id=mailbox_id)
        await self.events.notify_in_transaction(session, {mailbox_id})
        for key_ref in ([ref] if ref is not None else []) + delegate_refs:
            self._destroy_after_commit(session, key_ref)

    @staticmethod
    def _after_commit(session: AsyncSession, action: Callable[[object], Awaitable[None]]) -> None:
        """Run ``action`` once the caller's transaction has committed (never if it rolls back)."""
        pending: list[Callable[[object], Awaitable[None]]] = session.info.setdefault(
            AFTER_COMMIT, [])
        pending.append(action)

    async def collect_keys(self, *, older_than: timedelta = timedelta(hours=1)) -> int:
        """Destroy KEKs of closed or never-created mailboxes (a crash between the two stores)."""
        async with self.db.read() as s:
            live = set((await s.execute(select(Mailbox.key_ref).where(
                Mailbox.key_ref.is_not(None)))).scalars())
            live |= set((await s.execute(select(DelegateKey.key_ref))).scalars())
        return await self.keystore.collect({r for r in live if r}, older_than=older_than)

    async def open(self, mailbox_id: int) -> MailboxSession:
        """Unwrap the mailbox private key for a session (C6). Needs the master key."""
        async with self.db.read() as s:
            box = await s.get(Mailbox, mailbox_id)
        if box is None:
            raise NotFound("no such mailbox")
        if box.status != "active" or box.wrapped_private_key is None:
            raise MailboxClosed("this mailbox is closed")
        if box.key_ref is None:
            raise MailboxClosed("this mailbox is closed")
        public = crypto.PublicKey(box.suite, box.public_key)
        kek = await self.keystore.get(box.key_ref)
        private = crypto.unwrap_private_key(kek, public, box.wrapped_private_key)
        return MailboxSession(self, mailbox_id, box.kind, public, private)

    # --- delivery -----------------------------------------------------------------------------
    async def open_as_delegate(self, mailbox_id: int, grant_ref: str) -> MailboxSession:
        """Open a mailbox with the key wrapped for the delegation ``grant_ref`` (C6).

        The caller (webmail) has already checked that the delegation is in force; this only
        proves that a key was granted for it and not destroyed by a revocation.
        """
        async with self.db.read() as s:
            row = (await s.execute(select(DelegateKey).where(
                DelegateKey.grant_ref == grant_ref,
                DelegateKey.mailbox_id == mailbox_id))).scalar_one_or_none()
            box = await s.get(Mailbox, mailbox_id)
        if row is None or box is None:
            raise NotFound("no key was granted for this delegation")
        if box.status != "active" or box.wrapped_private_key is None:
            raise MailboxClosed("this mailbox is closed")
        public = crypto.PublicKey(box.suite, box.public_key)
        kek = await self.keystore.get(row.key_ref)
        private = crypto.unwrap_private_key(kek, public, row.wrapped_private_key)
        return MailboxSession(self, mailbox_id, box.kind, public, private)

    async def revoke_delegate_key(self, session: AsyncSession, grant_ref: str) -> bool:
        """Destroy the key of a delegation (after the caller's transaction commits)."""
        row = (await session.execute(select(DelegateKey).where(
            DelegateKey.grant_ref == grant_ref))).scalar_one_or_none()
        if row is None:
            return False
        await session.delete(row)
        await audit.append(session, "mailbox.delegate_key.revoke", mailbox_id=row.mailbox_id)
        self._destroy_after_commit(session, row.key_ref)
        return True

    def _destroy_after_commit(self, session: AsyncSession, key_ref: str) -> None:
        keystore = self.keystore

        async def _destroy(_session: object) -> None:
            await keystore.destroy(key_ref)

        self._after_commit(session, _destroy)

    # --- the key cache (see ``crypto``) ----------------------------------------------------------
    _CACHE_BATCH = 1000

    def cache_keys_later(self, box: MailboxSession) -> None:
        """Write ``box``'s newly opened data keys to the key cache, in the background.

        One writer task per store batches the entries of every session. It is a cache: a lost
        write (crash, shutdown) only means one more HPKE decapsulation later.
        """
        self._cache_dirty.add(box)
        if self._cache_task is None or self._cache_task.done():
            self._cache_task = asyncio.get_running_loop().create_task(self._write_key_cache())

    async def _write_key_cache(self) -> None:
        while self._cache_dirty:
            boxes = list(self._cache_dirty)
            self._cache_dirty.clear()
            # (content id, mailbox id, wrapped data key or None, sealed derived items or None)
            rows: list[tuple[int, int, bytes | None, bytes | None]] = []
            for box in boxes:
                keys, derived = box.take_cache_writes()
                rows += [(cid, box.mailbox_id, blob, derived.get(cid))
                         for cid, blob in keys.items()]
                rows += [(cid, box.mailbox_id, None, blob) for cid, blob in derived.items()
                         if cid not in keys]
            for start in range(0, len(rows), self._CACHE_BATCH):
                batch = rows[start:start + self._CACHE_BATCH]
                write = _write_cache_rows_sqlite if self.db.is_sqlite else _write_cache_rows
                try:
                    await self.db.run_write(functools.partial(write, rows=batch))
                except Exception as exc:  # noqa: BLE001 - a cache: never fail a reader for it
                    log.warning("key cache not written: %s", type(exc).__name__)
                    return

    async def drain(self) -> None:
        """Wait for background writes of this store (before closing the database)."""
        while self._cache_task is not None and not self._cache_task.done():
            await asyncio.shield(self._cache_task)

    def delivery(self, *, sender: str, source: str, actor: str | None = None) -> Delivery:
        """Start a delivery transaction (nothing is written before :meth:`Delivery.commit`)."""
        return Delivery(self, sender=sender, source=source, actor=actor)

    async def relation_facts(
        self, patient_mailbox_id: int, professional: str, references: Sequence[str],
        thread_root: str | None,
    ) -> RelationFacts:
        """P6 facts for a patient writing to ``professional``, from keyed hashes only."""
        async with self.db.read() as s:
            wrote = (await s.execute(select(exists().where(
                Correspondent.mailbox_id == patient_mailbox_id,
                Correspondent.peer_hash == self.peer_hash(patient_mailbox_id, professional),
            )))).scalar_one()
            hashes = [self.ref_hash(patient_mailbox_id, r, professional) for r in references[:100]]
            known = False
            if hashes:
                known = (await s.execute(select(exists().where(
                    ReceivedRef.mailbox_id == patient_mailbox_id,
                    ReceivedRef.ref_hash.in_(hashes),
                )))).scalar_one()
            closed = False
            if thread_root:
                closed = (await s.execute(select(exists().where(
                    Conversation.thread_hash == self.thread_hash(thread_root),
                    Conversation.closed_at.is_not(None),
                )))).scalar_one()
        return RelationFacts(bool(wrote), bool(known), bool(closed))

    async def conversation_closed(self, thread_root: str) -> bool:
        digest = self.thread_hash(thread_root)
        return await self.db.run_read(lambda s: bool(s.connection().execute(
            _CONVERSATION_CLOSED, {"h": digest}).scalar_one()))

    async def relay_open_session(self) -> MailboxSession:
        """The relay worker's session on the system relay mailbox (needs the master key)."""
        async with self.db.read() as s:
            mid = (await s.execute(select(Mailbox.id).where(Mailbox.label == RELAY_LABEL))
                   ).scalar()
        if mid is None:
            raise NotFound("relay mailbox missing: run `missive init`")
        return await self.open(int(mid))

    async def stats(self) -> dict[str, int]:
        async with self.db.read() as s:
            mailboxes = (await s.execute(select(func.count(Mailbox.id)))).scalar_one()
            messages = (await s.execute(select(func.count(Message.id)))).scalar_one()
            pending_notify = (await s.execute(select(func.count(NotificationOutbox.id)).where(
                NotificationOutbox.state == "pending"))).scalar_one()
            pending_relay = (await s.execute(select(func.count(RelayQueue.id)).where(
                RelayQueue.state == "pending"))).scalar_one()
        return {"mailboxes": mailboxes, "messages": messages,
                "notifications_pending": pending_notify, "relay_pending": pending_relay}


def _new_uidvalidity() -> int:
    # RFC 3501 §2.3.1.1: a non-zero 32-bit value that must change if UIDs are ever reused for
    # this name; a random value differs from any earlier folder of the same name.
    return secrets.randbelow(2**31 - 1) + 1


class MailboxSession:
    """An opened mailbox: its private key in memory, every read and change of its folders.

    Obtain with :meth:`MailboxStore.open`. Data keys of recently opened messages are cached
    (bounded) so that a client fetching headers then bodies pays HPKE once per message.
    """

    _CACHE = 4096

    def __init__(self, store: MailboxStore, mailbox_id: int, kind: str,
                 public: crypto.PublicKey, private: crypto.PrivateKey) -> None:
        self.store = store
        self.mailbox_id = mailbox_id
        self.kind = kind
        self._public = public
        self._private = private
        self._cache_key = crypto.derive_cache_key(private)
        self._keys: OrderedDict[int, bytes] = OrderedDict()
        self._to_cache: dict[int, bytes] = {}
        self._to_derive: dict[int, bytes] = {}

    @property
    def db(self) -> Database:
        return self.store.db

    async def grant_delegate_key(self, session: AsyncSession, grant_ref: str) -> None:
        """Wrap this mailbox's private key for a delegation, under a new KEK (C6).

        Runs in the caller's transaction (the one that records the grant); needs this opened
        session, i.e. the owner (or an operator holding the master key) present.
        """
        ref = new_ref()
        kek = await self.store._new_kek(session, ref)
        session.add(DelegateKey(mailbox_id=self.mailbox_id, grant_ref=grant_ref, key_ref=ref,
                                wrapped_private_key=crypto.wrap_private_key(
                                    kek, self._public, self._private)))
        await session.flush()
        await audit.append(session, "mailbox.delegate_key.grant", mailbox_id=self.mailbox_id)

    # --- folders ------------------------------------------------------------------------------
    async def folders(self) -> list[FolderInfo]:
        def read(s: Session) -> list[FolderInfo]:
            rows = s.execute(select(Folder).where(Folder.mailbox_id == self.mailbox_id)
                             .order_by(Folder.name)).scalars()
            return [_folder_info(f) for f in rows]

        return await self.db.run_read(read)

    async def folder(self, name: str) -> FolderInfo:
        return await self.db.run_read(lambda s: _folder_info(self._folder_sync(s, name)))

    async def _folder(self, s: AsyncSession, name: str) -> Folder:
        if name.upper() == "INBOX":
            name = "INBOX"
        f = (await s.execute(select(Folder).where(Folder.mailbox_id == self.mailbox_id,
                                                  Folder.name == name))).scalar_one_or_none()
        if f is None:
            raise NotFound(f"no folder named {name!r}")
        return f

    def _folder_sync(self, s: Session, name: str) -> Folder:
        if name.upper() == "INBOX":
            name = "INBOX"
        f = s.execute(select(Folder).where(Folder.mailbox_id == self.mailbox_id,
                                           Folder.name == name)).scalar_one_or_none()
        if f is None:
            raise NotFound(f"no folder named {name!r}")
        return f

    async def create_folder(self, name: str, special_use: str | None = None) -> FolderInfo:
        if not name or name.upper() == "INBOX" or len(name) > 255:
            raise StoreError("invalid folder name")
        async with self.db.write() as s:
            exists_ = (await s.execute(select(Folder.id).where(
                Folder.mailbox_id == self.mailbox_id, Folder.name == name))).scalar()
            if exists_ is not None:
                raise StoreError("folder already exists")
            f = Folder(mailbox_id=self.mailbox_id, name=name, special_use=special_use,
                       uidvalidity=_new_uidvalidity(), uidnext=1, subscribed=True)
            s.add(f)
            await s.flush()
            await self.store.events.notify_in_transaction(s, {self.mailbox_id})
            info = _folder_info(f)
        self.store.events.publish(self.mailbox_id)
        return info

    async def delete_folder(self, name: str) -> None:
        async with self.db.write() as s:
            f = await self._folder(s, name)
            if f.name == "INBOX":
                raise StoreError("INBOX cannot be deleted")
            content_ids = list((await s.execute(select(Message.content_id).where(
                Message.folder_id == f.id))).scalars())
            size = (await s.execute(select(func.coalesce(func.sum(Message.size), 0)).where(
                Message.folder_id == f.id))).scalar_one()
            await s.execute(delete(Message).where(Message.folder_id == f.id))
            await s.delete(f)
            await self._gc_contents(s, content_ids)
            await s.execute(update(Mailbox).where(Mailbox.id == self.mailbox_id).values(
                used_bytes=func.max(Mailbox.used_bytes - size, 0)
                if self.db.is_sqlite else func.greatest(Mailbox.used_bytes - size, 0)))
            await audit.append(s, "folder.delete", mailbox_id=self.mailbox_id)
            await self.store.events.notify_in_transaction(s, {self.mailbox_id})
        self.store.events.publish(self.mailbox_id)

    async def rename_folder(self, old: str, new: str) -> None:
        """RFC 3501 §6.3.5. Renaming INBOX moves its messages to a new folder; INBOX stays."""
        if not new or new.upper() == "INBOX":
            raise StoreError("invalid folder name")
        if old.upper() == "INBOX":
            await self.create_folder(new)
            uids = [m.uid for m in await self.messages("INBOX")]
            if uids:
                await self.move("INBOX", uids, new)
            return
        async with self.db.write() as s:
            f = await self._folder(s, old)
            taken = (await s.execute(select(Folder.id).where(
                Folder.mailbox_id == self.mailbox_id, Folder.name == new))).scalar()
            if taken is not None:
                raise StoreError("folder already exists")
            # Children move with their parent (hierarchy delimiter "/").
            children = (await s.execute(select(Folder).where(
                Folder.mailbox_id == self.mailbox_id, Folder.name.like(old + "/%")))).scalars()
            for child in children:
                child.name = new + child.name[len(old):]
            f.name = new
            await self.store.events.notify_in_transaction(s, {self.mailbox_id})
        self.store.events.publish(self.mailbox_id)

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        async with self.db.write() as s:
            f = await self._folder(s, name)
            f.subscribed = subscribed

    async def status(self, name: str) -> FolderStatus:
        def read(s: Session) -> FolderStatus:
            f = self._folder_sync(s, name)
            count, size = s.execute(select(
                func.count(Message.id), func.coalesce(func.sum(Message.size), 0)).where(
                Message.folder_id == f.id)).one()
            seen = s.execute(select(func.count(Message.id)).where(
                Message.folder_id == f.id, Message.flags.like("%\\Seen%"))).scalar_one()
            modseq = s.execute(select(Mailbox.highest_modseq).where(
                Mailbox.id == self.mailbox_id)).scalar_one()
            return FolderStatus(f.name, count, count - seen, f.uidnext, f.uidvalidity, modseq,
                                int(size))

        return await self.db.run_read(read)

    # --- messages -----------------------------------------------------------------------------
    async def messages(self, name: str, uids: Sequence[int] | None = None) -> list[MessageInfo]:
        """Messages of a folder in UID order (all, or those among ``uids``)."""
        wanted = None if uids is None else list(uids)

        def read(s: Session) -> list[MessageInfo]:
            f = self._folder_sync(s, name)
            q = select(*_INFO_COLUMNS).where(Message.folder_id == f.id)
            if wanted is not None:
                q = q.where(Message.uid.in_(wanted))
            return [_info_row(r) for r in s.execute(q.order_by(Message.uid))]

        return await self.db.run_read(read)

    def _data_keys(self, s: Session, content_ids: Sequence[int]) -> dict[int, bytes]:
        """Data keys of contents: from memory, else the key cache (one AES-GCM), else HPKE."""
        out: dict[int, bytes] = {}
        missing = []
        for cid in content_ids:
            key = self._keys.get(cid)
            if key is None:
                missing.append(cid)
            else:
                out[cid] = key
        for start in range(0, len(missing), 500):
            rows = s.execute(select(
                Content.id, Content.suite, Content.sealed_key, Content.key_cache).where(
                Content.id.in_(missing[start:start + 500]),
                Content.mailbox_id == self.mailbox_id)).all()
            for cid, suite, blob, cached in rows:
                out[cid] = self._open_key(cid, suite, blob, cached)
        return out

    def _open_key(self, cid: int, suite: str, blob: bytes, cached: bytes | None) -> bytes:
        """One content's data key, from memory, the key cache, or HPKE (then queued for the
        key cache; the async caller calls :meth:`_cache_later`, so that readers never wait
        for that write)."""
        key = self._keys.get(cid)
        if key is not None:
            return key
        sealed = crypto.SealedKey(suite, blob)
        if cached is not None:
            try:
                key = crypto.unwrap_cached_key(self._cache_key, self.mailbox_id, sealed, cached)
            except crypto.CryptoError:
                key = None  # altered or foreign: HPKE decides, and the cache is redone
        if key is None:
            key = crypto.open_data_key(self._private, sealed)
            self._to_cache[cid] = crypto.wrap_cached_key(self._cache_key, self.mailbox_id,
                                                         sealed, key)
        self._remember(cid, key)
        return key

    def _cache_later(self) -> None:
        if self._to_cache:
            self.store.cache_keys_later(self)

    def take_cache_writes(self) -> tuple[dict[int, bytes], dict[int, bytes]]:
        """The key-cache and derived entries waiting to be written (handed over once)."""
        keys, self._to_cache = self._to_cache, {}
        derived, self._to_derive = self._to_derive, {}
        return keys, derived

    async def derived_items(self, content_ids: Sequence[int]) -> dict[int, dict[str, bytes]]:
        """What a reading front computed earlier from these messages (see :meth:`keep_derived`),
        by content id; contents without any, or whose entry does not open, are left out."""
        ids = list(content_ids)
        mid = self.mailbox_id

        def read_sqlite(s: Session) -> dict[int, dict[str, bytes]]:
            out: dict[int, dict[str, bytes]] = {}
            cur = _driver_cursor(s)
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                self._open_derived_rows(cur.execute(_SQL_DERIVED_ROWS % _marks(len(chunk)),
                                                    (mid, *chunk)).fetchall(), out)
            return out

        def read(s: Session) -> dict[int, dict[str, bytes]]:
            out: dict[int, dict[str, bytes]] = {}
            conn = s.connection()
            for start in range(0, len(ids), 500):
                self._open_derived_rows(conn.execute(_DERIVED_ROWS, {
                    "mid": mid, "ids": ids[start:start + 500]}), out)
            return out

        if not ids:
            return {}
        return await self.db.run_read(read_sqlite if self.db.is_sqlite else read)

    async def derived_range(self, folder_id: int, first: int, last: int
                            ) -> dict[int, dict[str, bytes]]:
        """:meth:`derived_items` of the messages of folder ``folder_id`` (an id this session
        resolved) with ``first <= uid <= last``, by content id, in one read: a client that
        fetches ``1:* (ENVELOPE)`` asks for a whole range, which an index range scan answers
        without a list of ids."""
        mid = self.mailbox_id

        def read_sqlite(s: Session) -> dict[int, dict[str, bytes]]:
            out: dict[int, dict[str, bytes]] = {}
            self._open_derived_rows(_driver_cursor(s).execute(
                _SQL_DERIVED_RANGE, (folder_id, first, last, mid)).fetchall(), out)
            return out

        def read(s: Session) -> dict[int, dict[str, bytes]]:
            out: dict[int, dict[str, bytes]] = {}
            self._open_derived_rows(s.connection().execute(_DERIVED_RANGE, {
                "fid": folder_id, "lo": first, "hi": last, "mid": mid}), out)
            return out

        return await self.db.run_read(read_sqlite if self.db.is_sqlite else read)

    def _open_derived_rows(self, rows: Iterable[Sequence[Any]],
                           out: dict[int, dict[str, bytes]]) -> None:
        """Open ``(content id, sealed derived items)`` rows into ``out``; entries that are
        missing, altered or foreign are left out (the front computes them again)."""
        cache_key, mid = self._cache_key, self.mailbox_id
        for cid, blob in rows:
            if blob is None:
                continue
            try:
                out[cid] = _derived_decode(crypto.open_derived(cache_key, mid, cid, blob))
            except (crypto.CryptoError, ValueError, AttributeError, TypeError):
                continue  # altered or foreign: recomputed from the message

    def keep_derived(self, content_id: int, items: Mapping[str, bytes]) -> None:
        """Keep ``items`` computed from a message (all that are known for it: the entry is
        replaced), sealed under the mailbox's cache key; written in the background, like the
        key cache (a lost write only means computing them again)."""
        self._to_derive[content_id] = crypto.seal_derived(self._cache_key, self.mailbox_id,
                                                          content_id, _derived_encode(items))
        self.store.cache_keys_later(self)

    def _remember(self, cid: int, key: bytes) -> None:
        self._keys[cid] = key
        if len(self._keys) > self._CACHE:
            self._keys.popitem(last=False)

    async def summaries(self, name: str, uids: Sequence[int]) -> dict[int, MessageSummary]:
        """Decrypted summaries (subject, sender, attachments…) of messages, by UID."""
        wanted = list(uids)

        def read(s: Session) -> dict[int, MessageSummary]:
            f = self._folder_sync(s, name)
            rows = s.execute(select(Message.uid, Content.id, Content.meta).join(
                Content, Content.id == Message.content_id).where(
                Message.folder_id == f.id, Message.uid.in_(wanted))).all()
            keys = self._data_keys(s, [r[1] for r in rows])
            return {uid: MessageSummary.from_dict(json.loads(crypto.decrypt(keys[cid], meta,
                                                                            META)))
                    for uid, cid, meta in rows}

        try:
            return await self.db.run_read(read)
        finally:
            self._cache_later()

    async def page(self, name: str, *, limit: int, below: int | None = None,
                   above: int | None = None) -> Page:
        """A page of a folder for list views, newest first, with the summaries: the ``limit``
        messages just below UID ``below`` (default: the newest), or just above ``above``.

        Keyset pagination on the (folder, uid) index: a page costs the same in a folder of 100
        or 100,000 messages. One read: the mailbox's modseq, the folder, the messages with
        their sealed metadata and cached keys, one existence check for the other direction;
        prepared Core statements (no ORM objects) on this hot path of the webmail.
        """
        direction = "above" if above is not None else "below" if below is not None else "top"

        def read(s: Session) -> Page:
            conn = s.connection()
            highest = self._highest_modseq(s)
            fid = self._folder_id(conn, name)
            got = conn.execute(_page_query(direction), {
                "fid": fid, "uid": above if above is not None else below,
                "lim": limit + 1}).all()
            beyond = len(got) > limit
            rows = list(got[:limit])
            if above is not None:
                rows.reverse()
            infos = [_info_row(r) for r in rows]
            summaries = {
                r[1]: MessageSummary.from_dict(json.loads(crypto.decrypt(
                    self._open_key(r[6], r[7], r[8], r[9]), r[10], META)))
                for r in rows}
            older = beyond if above is None else bool(rows) and bool(conn.execute(
                _EXISTS_BELOW, {"fid": fid, "uid": rows[-1][1]}).scalar())
            newer = beyond if above is not None else bool(rows) and bool(conn.execute(
                _EXISTS_ABOVE, {"fid": fid, "uid": rows[0][1]}).scalar())
            return Page(infos, summaries, older, newer, highest)

        try:
            return await self.db.run_read(read)
        finally:
            self._cache_later()

    def _folder_id(self, conn: Connection, name: str) -> int:
        fid = conn.execute(_FOLDER_ID, {"mid": self.mailbox_id, "name": (
            "INBOX" if name.upper() == "INBOX" else name)}).scalar()
        if fid is None:
            raise NotFound(f"no folder named {name!r}")
        return int(fid)

    async def read_message(self, name: str, uid: int) -> tuple[MessageInfo, bytes,
                                                               MessageSummary]:
        """One message with its attributes, raw bytes and summary, in one read (a reader
        opening a message); :class:`NotFound` when the folder has no such UID."""
        m, c = _MESSAGE.c, _CONTENT.c

        def read(s: Session) -> tuple[MessageInfo, bytes, MessageSummary]:
            conn = s.connection()
            fid = self._folder_id(conn, name)
            row = conn.execute(
                select(m.id, m.uid, m.flags, m.internal_date, m.size, m.modseq, m.content_id,
                       c.suite, c.sealed_key, c.key_cache, c.meta, c.body)
                .join_from(_MESSAGE, _CONTENT, c.id == m.content_id)
                .where(m.folder_id == fid, m.uid == uid)).one_or_none()
            if row is None:
                raise NotFound("no such message")
            key = self._open_key(row[6], row[7], row[8], row[9])
            summary = MessageSummary.from_dict(json.loads(crypto.decrypt(key, row[10], META)))
            return _info_row(row), crypto.decrypt(key, row[11], BODY), summary

        try:
            return await self.db.run_read(read)
        finally:
            self._cache_later()

    async def fetch(self, name: str, uid: int) -> bytes:
        got = await self.fetch_many(name, [uid])
        if uid not in got:
            raise NotFound("no such message")
        return got[uid]

    async def fetch_many(self, name: str, uids: Sequence[int]) -> dict[int, bytes]:
        """Decrypted raw messages (RFC 5322 bytes), by UID.

        The hot read of the IMAP front (bodies, read-ahead, SEARCH on text): per batch one
        read of the folder's id and one of the messages joined to their sealed contents,
        prepared Core statements, on SQLite plain SQL on the ``sqlite3`` cursor."""
        out: dict[int, bytes] = {}
        wanted = list(uids)
        folder = "INBOX" if name.upper() == "INBOX" else name
        mid = self.mailbox_id
        # Batches of 200 in separate reads: a large FETCH does not hold the loop for long.
        for start in range(0, len(wanted), 200):
            batch = wanted[start:start + 200]

            def read_sqlite(s: Session, batch: list[int] = batch) -> None:
                cur = _driver_cursor(s)
                got = cur.execute(_SQL_FOLDER_ID, (mid, folder)).fetchone()
                if got is None:
                    raise NotFound(f"no folder named {name!r}")
                self._open_bodies(cur.execute(_SQL_BODY_ROWS % _marks(len(batch)),
                                              (got[0], mid, *batch)).fetchall(), out)

            def read(s: Session, batch: list[int] = batch) -> None:
                conn = s.connection()
                fid = self._folder_id(conn, name)
                self._open_bodies(conn.execute(_BODY_ROWS, {"fid": fid, "mid": mid,
                                                            "uids": batch}).all(), out)

            try:
                await self.db.run_read(read_sqlite if self.db.is_sqlite else read)
            finally:
                self._cache_later()
        return out

    def _open_bodies(self, rows: Iterable[Sequence[Any]], out: dict[int, bytes]) -> None:
        """Decrypt ``(uid, content id, suite, sealed key, cached key, sealed body)`` rows into
        ``out`` by UID."""
        keys = self._keys
        for uid, cid, suite, sealed, cached, body in rows:
            key = keys.get(cid)
            if key is None:
                key = self._open_key(cid, suite, sealed, cached)
            out[uid] = crypto.decrypt(key, body, BODY)

    # --- the outbound relay queue (system relay mailbox only) ---------------------------------
    def open_relay_item(self, row: RelayQueue) -> tuple[dict[str, object], bytes]:
        """Open a ``relay_queue`` row sealed to this (relay) mailbox: (envelope, raw message).

        The envelope is the JSON written by :meth:`Delivery.commit`: ``sender``, ``ret``,
        ``envid`` and ``recipients`` (``address``, ``notify``, ``orcpt``). Raises
        :class:`crypto.CryptoError` when the row was not sealed to this mailbox or was altered.
        """
        key = crypto.open_data_key(self._private, crypto.SealedKey(row.suite, row.sealed_key))
        envelope = json.loads(crypto.decrypt(key, row.envelope, ENVELOPE))
        if not isinstance(envelope, dict):
            raise crypto.CryptoError("relay envelope is not a JSON object")
        return envelope, crypto.decrypt(key, row.body, BODY)

    def reseal_relay_envelope(self, row: RelayQueue, envelope: dict[str, object]) -> bytes:
        """A new sealed ``envelope`` for ``row`` under its own data key (e.g. fewer recipients
        left after a partial delivery); the caller stores it in ``row.envelope``."""
        key = crypto.open_data_key(self._private, crypto.SealedKey(row.suite, row.sealed_key))
        return crypto.encrypt(key, json.dumps(envelope).encode(), ENVELOPE)

    async def append(self, name: str, raw: bytes, flags: Iterable[str] = (),
                     internal_date: datetime | None = None) -> tuple[int, int]:
        """Seal and file a message (IMAP APPEND, Sent copies); returns (uidvalidity, uid).

        Goes through the same group-commit writer as deliveries, held to the quota.
        """
        folder = "INBOX" if name.upper() == "INBOX" else name
        summary = summarize(raw)
        copy = seal_copy(self._public, self.mailbox_id, folder, raw, meta_of(summary))
        job = new_job(sender="", source="append", actor=None, summary=summary, copies=[copy],
                      size=len(raw), notify=False, flags=_flags_text(flags),
                      internal_date=internal_date, enforce_quota=True, action="message.append")
        result = await self.store.committer.submit(job)
        stored = result.local[0]
        return stored.uidvalidity, stored.uid

    async def store_flags(self, name: str, uids: Sequence[int], flags: Iterable[str],
                          mode: FlagMode) -> list[MessageInfo]:
        """Change flags (RFC 3501 §6.4.6); returns the messages whose flags changed."""
        wanted = frozenset(flags)
        uid_list = list(uids)

        def change(s: Session) -> list[MessageInfo]:
            # Prepared Core statements: IMAP STORE and every first read in the webmail come
            # here, and the ORM's unit of work cost more than the SQL.
            conn = s.connection()
            fid = self._folder_id(conn, name)
            updates: list[tuple[MessageInfo, frozenset[str]]] = []
            for row in conn.execute(_FLAG_ROWS, {"fid": fid, "uids": uid_list}):
                info = _info_row(row)
                new = info.flags | wanted if mode == "add" else info.flags - wanted \
                    if mode == "remove" else wanted
                if new != info.flags:
                    updates.append((info, new))
            if not updates:
                return []
            modseq = self._next_modseq_sync(s)
            conn.execute(_SET_FLAGS, [{"b_id": info.id, "b_flags": _flags_text(new),
                                       "b_modseq": modseq} for info, new in updates])
            self.store.events.notify_sync(s, {self.mailbox_id})
            return [dataclasses.replace(info, flags=new, modseq=modseq)
                    for info, new in updates]

        changed = await self.store.writer.run(change)
        if changed:
            self.store.events.publish(self.mailbox_id)
        return changed

    def _next_modseq_sync(self, s: Session) -> int:
        return int(s.connection().execute(_NEXT_MODSEQ, {"mid": self.mailbox_id}).scalar_one())

    async def copy(self, name: str, uids: Sequence[int], dest: str) -> tuple[int, list[
            tuple[int, int]]]:
        """Copy messages (RFC 3501 §6.4.7, UIDPLUS COPYUID); returns (uidvalidity, pairs)."""
        return await self._copy(name, uids, dest, move=False)

    async def move(self, name: str, uids: Sequence[int], dest: str) -> tuple[int, list[
            tuple[int, int]]]:
        """Move messages (RFC 6851); the sealed content is shared, not re-encrypted."""
        return await self._copy(name, uids, dest, move=True)

    async def _copy(self, name: str, uids: Sequence[int], dest: str, *,
                    move: bool) -> tuple[int, list[tuple[int, int]]]:
        uid_list = list(uids)

        def change(s: Session) -> tuple[int, list[tuple[int, int]]]:
            pairs: list[tuple[int, int]] = []
            src = self._folder_sync(s, name)
            dst = self._folder_sync(s, dest)
            msgs = list(s.execute(select(Message).where(
                Message.folder_id == src.id, Message.uid.in_(uid_list))
                .order_by(Message.uid)).scalars())
            if msgs:
                if not move:
                    total = sum(m.size for m in msgs)
                    box = s.get(Mailbox, self.mailbox_id)
                    assert box is not None  # noqa: S101
                    if box.used_bytes + total > box.quota_bytes:
                        raise QuotaExceeded("mailbox quota exceeded")
                    box.used_bytes += total
                first = s.execute(update(Folder).where(Folder.id == dst.id).values(
                    uidnext=Folder.uidnext + len(msgs)).returning(Folder.uidnext)
                ).scalar_one() - len(msgs)
                modseq = self._next_modseq_sync(s)
                for offset, m in enumerate(msgs):
                    new_uid = first + offset
                    s.add(Message(mailbox_id=self.mailbox_id, folder_id=dst.id, uid=new_uid,
                                  content_id=m.content_id, flags=m.flags,
                                  internal_date=m.internal_date, size=m.size, modseq=modseq))
                    pairs.append((m.uid, new_uid))
                    if move:
                        s.delete(m)
                audit.append_many_sync(s, [audit.Entry(
                    "message.move" if move else "message.copy", None, self.mailbox_id, "ok",
                    None, {"count": len(msgs), "to": dst.special_use or "folder"})])
                self.store.events.notify_sync(s, {self.mailbox_id})
            return dst.uidvalidity, pairs

        validity, pairs = await self.store.writer.run(change)
        if pairs:
            self.store.events.publish(self.mailbox_id)
        return validity, pairs

    async def expunge(self, name: str, uids: Sequence[int] | None = None) -> list[int]:
        """Remove messages flagged ``\\Deleted`` (only those in ``uids`` if given: UID EXPUNGE,
        RFC 4315 §2.1); returns the removed UIDs in ascending order."""
        uid_list = None if uids is None else list(uids)

        def change(s: Session) -> list[int]:
            f = self._folder_sync(s, name)
            q = select(Message).where(Message.folder_id == f.id,
                                      Message.flags.like("%\\Deleted%"))
            if uid_list is not None:
                q = q.where(Message.uid.in_(uid_list))
            msgs = [m for m in s.execute(q.order_by(Message.uid)).scalars()
                    if "\\Deleted" in _flags_set(m.flags)]
            if not msgs:
                return []
            removed = [m.uid for m in msgs]
            freed = sum(m.size for m in msgs)
            content_ids = [m.content_id for m in msgs]
            s.execute(delete(Message).where(Message.id.in_([m.id for m in msgs])))
            self._gc_contents_sync(s, content_ids)
            box = s.get(Mailbox, self.mailbox_id)
            assert box is not None  # noqa: S101
            box.used_bytes = max(0, box.used_bytes - freed)
            self._next_modseq_sync(s)
            audit.append_many_sync(s, [audit.Entry("message.expunge", None, self.mailbox_id,
                                                   "ok", None, {"count": len(removed)})])
            self.store.events.notify_sync(s, {self.mailbox_id})
            return removed

        removed = await self.store.writer.run(change)
        if not removed:
            return []
        self.store.events.publish(self.mailbox_id)
        return removed

    async def _gc_contents(self, s: AsyncSession, content_ids: Sequence[int]) -> None:
        await s.run_sync(self._gc_contents_sync, content_ids)

    def _gc_contents_sync(self, s: Session, content_ids: Sequence[int]) -> None:
        """Delete sealed contents no longer referenced by any message (copies share one)."""
        if not content_ids:
            return
        s.flush()
        s.execute(delete(Content).where(
            Content.id.in_(list(set(content_ids))),
            ~exists().where(Message.content_id == Content.id)))
        for cid in content_ids:
            self._keys.pop(cid, None)

    async def quota(self) -> tuple[int, int]:
        async with self.db.read() as s:
            used, limit = (await s.execute(select(Mailbox.used_bytes, Mailbox.quota_bytes).where(
                Mailbox.id == self.mailbox_id))).one()
        return int(used), int(limit)

    async def highest_modseq(self) -> int:
        return await self.db.run_read(self._highest_modseq)

    def _highest_modseq(self, s: Session) -> int:
        return int(s.connection().execute(_HIGHEST_MODSEQ, {"mid": self.mailbox_id}
                                          ).scalar_one())

    async def search_text(self, name: str, query: str, *,
                          uids: Sequence[int] | None = None) -> list[int]:
        """UIDs whose decrypted summary or body contains ``query`` (case-insensitive).

        Search happens here, in the opened session, because no clear-text index exists (C1).
        """
        needle = query.casefold()
        infos = await self.messages(name, uids)
        found: list[int] = []
        for start in range(0, len(infos), 200):
            batch = [m.uid for m in infos[start:start + 200]]
            bodies = await self.fetch_many(name, batch)
            for uid in batch:
                raw = bodies.get(uid)
                if raw is not None and needle in _searchable_text(raw):
                    found.append(uid)
        return found


#: Version byte of the ``content.derived`` plain text written by :func:`_derived_encode`.
_DERIVED_V1 = b"\x01"
_DERIVED_NAME = re.compile(r"[A-Za-z0-9.\-\[\]]+")


def _derived_encode(items: Mapping[str, bytes]) -> bytes:
    """The plain text of a ``content.derived`` entry: a version byte, one line of
    ``name:length`` specs separated by spaces, then the items' octets one after the other.

    Read back by slicing (no parser: a later login opens one entry per message it lists,
    and decoding was the largest part of that after the AES-GCM open). Entries written
    before as a JSON object of name → latin-1 text are still read (:func:`_derived_decode`).
    """
    specs: list[bytes] = []
    for name, item in items.items():
        if _DERIVED_NAME.fullmatch(name) is None:
            raise ValueError(f"not an item name: {name!r}")
        specs.append(b"%s:%d" % (name.encode("ascii"), len(item)))
    return b"".join([_DERIVED_V1, b" ".join(specs), b"\n", *items.values()])


def _derived_decode(data: bytes) -> dict[str, bytes]:
    """The items of a ``content.derived`` entry (see :func:`_derived_encode`); ValueError,
    AttributeError or TypeError when it is not such an entry."""
    if data[:1] != _DERIVED_V1:
        # The first format: a JSON object of item name -> item, octets as latin-1 code points.
        return {str(k): v.encode("latin-1") for k, v in json.loads(data).items()}
    cut = data.index(b"\n")
    out: dict[str, bytes] = {}
    pos = cut + 1
    if cut > 1:
        for spec in data[1:cut].split(b" "):
            name, _, size = spec.partition(b":")
            end = pos + int(size)
            if end > len(data) or not name:
                raise ValueError("truncated derived entry")
            out[name.decode("ascii")] = data[pos:end]
            pos = end
    if pos != len(data):
        raise ValueError("trailing octets in a derived entry")
    return out


def _searchable_text(raw: bytes) -> str:
    """Headers and decoded text parts of a message, case-folded, for substring search."""
    from missive.mime.summary import parse

    msg = parse(raw)
    chunks: list[str] = []
    for key, value in msg.items():
        chunks.append(f"{key}: {value}")
    try:
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                try:
                    chunks.append(str(part.get_content()))
                except Exception:  # noqa: BLE001 - undecodable part: search what we have
                    payload = part.get_payload(decode=True)
                    if isinstance(payload, bytes):
                        chunks.append(payload.decode("utf-8", "replace"))
            filename = part.get_filename()
            if filename:
                chunks.append(str(filename))
    except Exception:  # noqa: BLE001
        chunks.append(raw.decode("utf-8", "replace"))
    return "\n".join(chunks).casefold()


__all__ = [
    "DEFAULT_FOLDERS",
    "DeliveredCopy",
    "Delivery",
    "DeliveryResult",
    "FolderInfo",
    "FolderStatus",
    "MailboxClosed",
    "MailboxSession",
    "MailboxStore",
    "MessageInfo",
    "QuotaExceeded",
    "RelationFacts",
    "RemoteRecipient",
    "StoreError",
]
