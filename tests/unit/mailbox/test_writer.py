"""The store's write batcher: changes that arrive together share one transaction, each in its
own SAVEPOINT, so that a failing change fails alone and the others are durable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from missive.mailbox.models import Message

RAW = b"From: <a@test.missive.localhost>\r\nSubject: Lot\r\n\r\nCorps\r\n"


async def test_a_failing_change_fails_alone_in_a_shared_batch(core: Any) -> None:
    async with core.db.write() as s:
        mid = int(await core.store.create_mailbox(s, kind="professional"))
    box = await core.store.open(mid)
    for _ in range(3):
        await box.append("INBOX", RAW)

    def broken(s: Session) -> None:
        # Writes, then fails: its write must be rolled back with it (its SAVEPOINT).
        s.connection().execute(Message.__table__.update().where(  # type: ignore[attr-defined]
            Message.__table__.c.mailbox_id == mid).values(flags="\\Broken"))  # type: ignore[attr-defined]
        raise RuntimeError("this change fails")

    results = await asyncio.gather(
        box.store_flags("INBOX", [1], {"\\Seen"}, "add"),
        core.store.writer.run(broken),
        box.store_flags("INBOX", [2], {"\\Flagged"}, "add"),
        box.store_flags("INBOX", [3], {"\\Answered"}, "add"),
        return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert [[m.uid for m in r] for r in (results[0], results[2], results[3])] == [[1], [2], [3]]
    async with core.db.read() as s:
        flags = dict((await s.execute(select(Message.uid, Message.flags).where(
            Message.mailbox_id == mid))).all())
    assert "\\Broken" not in " ".join(flags.values())
    assert "\\Seen" in flags[1] and "\\Flagged" in flags[2] and "\\Answered" in flags[3]


async def test_a_change_is_durable_when_run_returns(core: Any) -> None:
    async with core.db.write() as s:
        mid = int(await core.store.create_mailbox(s, kind="professional"))
    box = await core.store.open(mid)
    await box.append("INBOX", RAW)
    await box.store_flags("INBOX", [1], {"\\Seen"}, "add")
    # Another connection (a fresh read transaction) sees it at once.
    assert "\\Seen" in (await box.messages("INBOX"))[0].flags
    with pytest.raises(ValueError, match="nothing"):
        await core.store.writer.run(lambda s: (_ for _ in ()).throw(ValueError("nothing")))
