"""SPEC §3 properties C1–C4, on SQLite and PostgreSQL, shown the way an attacker would look."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from missive.db.schema import all_metadata, create_schema
from missive.errors import KeyStoreUnavailable
from missive.mailbox import crypto
from missive.mailbox.keys import rotate_master_key
from missive.mailbox.keystore import MailboxKek
from missive.mailbox.models import Mailbox
from missive.runtime import build_core

MARKERS = {
    "subject": "SUBJMARK7f3a9c",
    "body": "BODYMARK51e2d0",
    "display": "NAMEMARK9b8c7d",
    "filename": "FILEMARK2a4e6f",
}


def marked_message() -> bytes:
    """A message with a marker in each sensitive place; built once, byte-identical."""
    return _MESSAGE


def _build() -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Dr {MARKERS['display']} Élodie <pro@test.missive.localhost>"
    msg["To"] = "279035121518989@patient.test.missive.localhost"
    # Non-ASCII forces RFC 2047 encoded words, so the marker is also checked in encoded form.
    msg["Subject"] = f"Résultat {MARKERS['subject']} d'analyse"
    msg["Message-ID"] = "<c1@test>"
    msg.set_content(f"Compte rendu confidentiel {MARKERS['body']} — à lire.\n" * 20,
                    cte="quoted-printable")
    msg.add_attachment(b"%PDF-1.4 " + MARKERS["body"].encode() * 50, maintype="application",
                       subtype="pdf", filename=f"résultats-{MARKERS['filename']}.pdf")
    msg.set_boundary("==boundary-c1==")
    return msg.as_bytes()


_MESSAGE = _build()


def needles(raw: bytes) -> list[bytes]:
    """The markers, raw, and every line of the message as transmitted (its own encodings)."""
    found = [m.encode() for m in MARKERS.values()]
    found += [line for line in raw.split(b"\n") if len(line.strip()) >= 20]
    return found


async def _deliver(core: Any, mailbox_id: int, raw: bytes, n: int = 3) -> None:
    for _ in range(n):
        d = core.store.delivery(sender="pro@test.missive.localhost", source="test")
        d.add_local(mailbox_id)
        await d.commit(raw)


async def _all_values(core: Any) -> list[bytes]:
    """Every value of every table, as bytes: a logical dump of the database."""
    out: list[bytes] = []
    async with core.db.read() as s:
        for table in all_metadata().sorted_tables:
            for row in (await s.execute(select(table))).all():
                for value in row:
                    if isinstance(value, bytes):
                        out.append(value)
                    elif value is not None:
                        out.append(str(value).encode())
    return out


async def test_c1_database_and_files_reveal_no_content(core: Any) -> None:
    raw = marked_message()
    async with core.db.write() as s:
        mid = await core.store.create_mailbox(s, kind="patient")
    await _deliver(core, mid, raw)
    session = await core.store.open(mid)
    summary = (await session.summaries("INBOX", [1]))[1]
    assert MARKERS["subject"] in summary.subject  # the markers really were delivered
    assert any(MARKERS["filename"] in n for n in summary.attachment_names)
    dump = b"\n".join(await _all_values(core))
    for needle in needles(raw):
        assert needle not in dump, needle[:40]
    # On SQLite, the files themselves: database, WAL, shared memory, key store, everything.
    for path in core.settings.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles(raw):
                assert needle not in data, (path.name, needle[:40])


async def test_c2_delivery_without_master_key(backend_settings: Any) -> None:
    backend_settings.data_dir.mkdir(parents=True, exist_ok=True)
    full = await build_core(backend_settings, with_master_key=True)
    await create_schema(full.db)
    await full.store.ensure_system_mailbox()
    async with full.db.write() as s:
        mid = await full.store.create_mailbox(s, kind="patient")
    await full.close()
    # The SMTP-facing process: no master key on its disk, no key store.
    hidden = backend_settings.master_key_path.with_suffix(".away")
    backend_settings.master_key_path.rename(hidden)
    smtp_core = await build_core(backend_settings, with_master_key=False)
    try:
        assert not smtp_core.keys.has_master
        await _deliver(smtp_core, mid, marked_message(), n=1)
        with pytest.raises(KeyStoreUnavailable, match="not available"):
            await smtp_core.store.open(mid)
        async with smtp_core.db.write() as s:
            with pytest.raises(KeyStoreUnavailable):
                await smtp_core.store.create_mailbox(s, kind="patient")
    finally:
        await smtp_core.close()
    hidden.rename(backend_settings.master_key_path)
    reader = await build_core(backend_settings, with_master_key=True)
    try:
        session = await reader.store.open(mid)
        assert await session.fetch("INBOX", 1) == marked_message()
    finally:
        await reader.close()


async def test_c3_closed_mailbox_unrecoverable_even_from_backup(core: Any) -> None:
    raw = marked_message()
    async with core.db.write() as s:
        mid = await core.store.create_mailbox(s, kind="patient")
    await _deliver(core, mid, raw, n=2)
    async with core.db.read() as s:
        before = await s.get(Mailbox, mid)
        assert before is not None
        backup_wrapped, backup_ref = before.wrapped_private_key, before.key_ref
    async with core.keystore.db.read() as s:
        wrapped_kek = (await s.execute(select(MailboxKek.wrapped).where(
            MailboxKek.ref == backup_ref))).scalar_one()
    async with core.db.write() as s:
        await core.store.close_mailbox(s, mid)
    # Restore the mailbox row from a backup taken before the closing: still unopenable.
    async with core.db.write() as s:
        await s.execute(update(Mailbox).where(Mailbox.id == mid).values(
            wrapped_private_key=backup_wrapped, key_ref=backup_ref, status="active"))
    with pytest.raises(KeyStoreUnavailable, match="destroyed"):
        await core.store.open(mid)
    # The wrapped KEK is nowhere on disk any more (secure_delete, WAL truncated).
    for path in core.settings.keys_dir.rglob("*"):
        if path.is_file():
            assert wrapped_kek not in path.read_bytes(), path.name


async def test_c3_sqlite_backup_file_after_close(settings: Any, tmp_path: Path) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    core = await build_core(settings, with_master_key=True)
    await create_schema(core.db)
    async with core.db.write() as s:
        mid = await core.store.create_mailbox(s, kind="patient")
    await _deliver(core, mid, marked_message(), n=1)
    backup = tmp_path / "backup.db"
    src = sqlite3.connect(settings.data_dir / "missive.db")
    dst = sqlite3.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    async with core.db.write() as s:
        await core.store.close_mailbox(s, mid)
    await core.close()
    # An operator restores the old backup over the live database: the mail stays shredded.
    shutil.copy(backup, settings.data_dir / "missive.db")
    for suffix in ("-wal", "-shm"):
        (settings.data_dir / f"missive.db{suffix}").unlink(missing_ok=True)
    restored = await build_core(settings, with_master_key=True)
    try:
        with pytest.raises(KeyStoreUnavailable):
            await restored.store.open(mid)
    finally:
        await restored.close()


async def test_c4_rotation_keeps_mail_and_retires_old_key(core: Any) -> None:
    raw = marked_message()
    ids = []
    for _ in range(3):
        async with core.db.write() as s:
            ids.append(await core.store.create_mailbox(s, kind="patient"))
    for mid in ids:
        await _deliver(core, mid, raw, n=1)
    old = core.keys.master()
    old_file = core.settings.master_key_path.read_text()
    result = await rotate_master_key(core.db, core.keystore, core.keys,
                                     core.settings.master_key_path)
    assert result.rewrapped == 4  # three patients and the relay mailbox
    assert core.settings.master_key_path.read_text() != old_file
    assert core.settings.master_key_path.stat().st_mode & 0o077 == 0
    # A fresh process with the new key file opens every message.
    fresh = await build_core(core.settings, with_master_key=True)
    try:
        for mid in ids:
            session = await fresh.store.open(mid)
            assert await session.fetch("INBOX", 1) == raw
    finally:
        await fresh.close()
    # The old master key opens no KEK any more.
    async with core.keystore.db.read() as s:
        rows = (await s.execute(select(MailboxKek))).scalars().all()
    assert rows
    for row in rows:
        with pytest.raises(crypto.CryptoError):
            crypto.unwrap_secret(old, row.wrapped, row.ref.encode())


async def test_key_file_readable_by_others_is_refused(settings: Any) -> None:
    settings.master_key_path.chmod(0o644)
    with pytest.raises(KeyStoreUnavailable, match="chmod 600"):
        await build_core(settings, with_master_key=True)


async def test_concurrent_deliverers_get_unique_ascending_uids(core: Any) -> None:
    async with core.db.write() as s:
        mid = await core.store.create_mailbox(s, kind="professional")
    raw = b"Subject: x\r\n\r\nhello\r\n"
    # Four independent deliverers, each with its own engine, pool and group committer, as four
    # processes would have: they contend in the database itself, not in one writer task.
    deliverers = [await build_core(core.settings, with_master_key=False) for _ in range(4)]

    async def deliverer(c: Any, n: int) -> list[int]:
        uids = []
        for _ in range(n):
            d = c.store.delivery(sender="a@b", source="test")
            d.add_local(mid)
            result = await d.commit(raw)
            uids.append(result.local[0].uid)
        return uids

    try:
        per_task = await asyncio.gather(*(deliverer(c, 200) for c in deliverers))
    finally:
        for c in deliverers:
            await c.close()
    for uids in per_task:
        assert uids == sorted(uids)  # each deliverer sees its own UIDs ascend
    everything = [u for uids in per_task for u in uids]
    assert sorted(everything) == list(range(1, 801))  # unique, none lost, no gaps
    session = await core.store.open(mid)
    stored = [m.uid for m in await session.messages("INBOX")]
    assert stored == list(range(1, 801))
    async with core.db.read() as s:
        modseqs = (await s.execute(text(
            "SELECT COUNT(DISTINCT modseq) FROM message WHERE mailbox_id = :m"), {"m": mid})
        ).scalar_one()
    assert modseqs == 800
