"""The key store: one key-encryption key (KEK) per mailbox, kept *outside* the main database.

Why a second store: C3 asks that closing a mailbox makes its messages unrecoverable "also from
backups". A database backup holds the mailbox's wrapped private key; if the master key alone
unwrapped it, any old backup plus the (still current) master key would bring the mail back. So
the private key is wrapped by a per-mailbox KEK, and the KEK, itself wrapped by the master key,
lives here. Closing a mailbox deletes its KEK (``secure_delete`` on, WAL truncated): database
backups then hold a private key that nothing can unwrap. The key store is backed up separately,
with its own (short) retention, or not at all when an HSM/KMS holds it.

Default backend: a SQLite file ``DIR/keys/keystore.db`` (mode 0600). Nodes sharing PostgreSQL
set ``store.keystore_url`` to a separate PostgreSQL database (never the mail database, or C1's
"copy of the database without the key store" would include it).

Implementation notes: writes here are not in the same transaction as the main database. Order
makes this safe: a KEK is written before the mailbox row that needs it (an orphan KEK is
harmless and collected), and deleted after the closing transaction committed (a crash in between
leaves a KEK whose mailbox is closed: :meth:`KeyStore.collect` deletes it at start-up).
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import LargeBinary, MetaData, String, delete, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from missive.db.base import UTCDateTime, utcnow
from missive.db.engine import Database
from missive.errors import KeyStoreUnavailable
from missive.mailbox import crypto


class _KeyBase(DeclarativeBase):
    metadata = MetaData()


class MailboxKek(_KeyBase):
    __tablename__ = "mailbox_kek"

    ref: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    master_key_id: Mapped[str] = mapped_column(String(32))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)


class KeyStore:
    """Per-mailbox KEKs, wrapped by the master key. Needs the master key for every use."""

    def __init__(self, url: str, keys: crypto.KeyRing) -> None:
        self.db = Database(url)
        self.keys = keys

    @classmethod
    def for_path(cls, path: Path, keys: crypto.KeyRing) -> KeyStore:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        return cls(f"sqlite+aiosqlite:///{path}", keys)

    async def setup(self) -> None:
        async with self.db.engine.begin() as conn:
            await conn.run_sync(_KeyBase.metadata.create_all)
            if self.db.is_sqlite:
                await conn.exec_driver_sql("PRAGMA secure_delete=ON")

    async def close(self) -> None:
        await self.db.dispose()

    async def create(self, ref: str) -> bytes:
        """A new KEK registered under ``ref`` (a random id the mailbox row will carry)."""
        kek, row = self.prepare(ref)
        await self.save([row])
        return kek

    def prepare(self, ref: str) -> tuple[bytes, dict[str, object]]:
        """A new KEK and its wrapped row, not yet stored (see :meth:`save`)."""
        master = self.keys.master()
        kek = crypto.new_data_key()
        return kek, {"ref": ref, "master_key_id": master.key_id, "created_at": utcnow(),
                     "wrapped": crypto.wrap_secret(master, kek, ref.encode())}

    async def save(self, rows: list[dict[str, object]]) -> None:
        """Store prepared KEKs in one key-store transaction (one fsync for a whole import)."""
        if rows:
            async with self.db.write() as s:
                await s.execute(insert(MailboxKek), rows)

    async def get(self, ref: str) -> bytes:
        async with self.db.read() as s:
            row = (await s.execute(select(MailboxKek).where(MailboxKek.ref == ref))
                   ).scalar_one_or_none()
        if row is None:
            raise KeyStoreUnavailable("the key of this mailbox was destroyed or is missing")
        return crypto.unwrap_secret(self.keys.master(row.master_key_id), row.wrapped,
                                    ref.encode())

    async def destroy(self, ref: str) -> None:
        async with self.db.write() as s:
            if self.db.is_sqlite:
                await s.execute(text("PRAGMA secure_delete=ON"))
            await s.execute(delete(MailboxKek).where(MailboxKek.ref == ref))
        await self._truncate_wal()

    async def _truncate_wal(self) -> None:
        if self.db.is_sqlite:
            async with self.db.engine.connect() as conn:
                with contextlib.suppress(Exception):
                    await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def uses_master(self, key_id: str) -> bool:
        async with self.db.read() as s:
            found = (await s.execute(select(MailboxKek.ref).where(
                MailboxKek.master_key_id == key_id).limit(1))).scalar()
        return found is not None

    async def refs(self, *, older_than: timedelta = timedelta(0)) -> set[str]:
        cutoff = utcnow() - older_than
        async with self.db.read() as s:
            return set((await s.execute(select(MailboxKek.ref).where(
                MailboxKek.created_at <= cutoff))).scalars())

    async def collect(self, live_refs: set[str], *,
                      older_than: timedelta = timedelta(hours=1)) -> int:
        """Delete KEKs no live mailbox names (closed, or never committed).

        Only KEKs older than ``older_than``: a young one may belong to a mailbox whose creating
        transaction, on this node or another, has not committed yet.
        """
        dead = (await self.refs(older_than=older_than)) - live_refs
        for ref in dead:
            await self.destroy(ref)
        return len(dead)

    async def rewrap_all(self, new: crypto.MasterKey) -> int:
        """Re-wrap every KEK under ``new`` in one transaction (C4)."""
        count = 0
        async with self.db.write() as s:
            for row in (await s.execute(select(MailboxKek))).scalars():
                kek = crypto.unwrap_secret(self.keys.master(row.master_key_id), row.wrapped,
                                           row.ref.encode())
                row.wrapped = crypto.wrap_secret(new, kek, row.ref.encode())
                row.master_key_id = new.key_id
                count += 1
        return count


def new_ref() -> str:
    return os.urandom(16).hex()
