"""The encrypted store on SQLite and PostgreSQL: delivery, reading, flags, copy/move, expunge."""

from __future__ import annotations

from typing import Any

import pytest

from missive.errors import NotFound
from missive.mailbox.store import MailboxClosed

RAW = (
    b"From: Dr Marie Curie <marie.curie@test.missive.localhost>\r\n"
    b"To: 279035121518989@patient.test.missive.localhost\r\n"
    b"Subject: Resultats\r\n"
    b"Message-ID: <m1@test>\r\n"
    b"\r\n"
    b"Bonjour, voici vos resultats.\r\n"
)


async def _mailbox(core: Any, kind: str = "patient") -> int:
    async with core.db.write() as s:
        return int(await core.store.create_mailbox(s, kind=kind))


async def test_deliver_then_read_back(core: Any) -> None:
    mid = await _mailbox(core)
    d = core.store.delivery(sender="marie.curie@test.missive.localhost", source="test")
    d.add_local(mid)
    result = await d.commit(RAW)
    assert [(c.mailbox_id, c.folder, c.uid) for c in result.local] == [(mid, "INBOX", 1)]
    assert len(result.outbox_ids) == 1  # patient recipients get a notification row
    session = await core.store.open(mid)
    assert await session.fetch("INBOX", 1) == RAW
    summary = (await session.summaries("INBOX", [1]))[1]
    assert summary.subject == "Resultats"
    assert summary.from_name == "Dr Marie Curie"
    status = await session.status("INBOX")
    assert (status.messages, status.unseen, status.uidnext) == (1, 1, 2)


async def test_professional_recipient_gets_no_notification(core: Any) -> None:
    mid = await _mailbox(core, "professional")
    d = core.store.delivery(sender="a@b", source="test")
    d.add_local(mid)
    assert (await d.commit(RAW)).outbox_ids == []


async def test_flags_copy_move_expunge(core: Any) -> None:
    mid = await _mailbox(core)
    for _ in range(3):
        d = core.store.delivery(sender="x@y", source="test")
        d.add_local(mid)
        await d.commit(RAW)
    s = await core.store.open(mid)
    changed = await s.store_flags("INBOX", [1, 2], {"\\Seen"}, "add")
    assert [m.uid for m in changed] == [1, 2]
    assert await s.store_flags("INBOX", [1], {"\\Seen"}, "add") == []  # no change, no modseq
    assert (await s.status("INBOX")).unseen == 1
    validity, pairs = await s.copy("INBOX", [1, 3], "Archive")
    assert pairs == [(1, 1), (3, 2)]
    assert validity == (await s.folder("Archive")).uidvalidity
    _, moved = await s.move("INBOX", [2], "Trash")
    assert moved == [(2, 1)]
    assert [m.uid for m in await s.messages("INBOX")] == [1, 3]
    await s.store_flags("INBOX", [1, 3], {"\\Deleted"}, "add")
    assert await s.expunge("INBOX", [3]) == [3]
    assert await s.expunge("INBOX") == [1]
    # The copy in Archive shares the sealed content and still opens after the original is gone.
    assert await s.fetch("Archive", 1) == RAW
    with pytest.raises(NotFound):
        await s.fetch("INBOX", 1)


async def test_uids_never_reused_after_expunge(core: Any) -> None:
    mid = await _mailbox(core)
    s = await core.store.open(mid)
    _, uid1 = await s.append("Drafts", RAW, {"\\Draft"})
    await s.store_flags("Drafts", [uid1], {"\\Deleted"}, "add")
    await s.expunge("Drafts")
    _, uid2 = await s.append("Drafts", RAW)
    assert uid2 == uid1 + 1


async def test_search_text_in_session(core: Any) -> None:
    mid = await _mailbox(core)
    d = core.store.delivery(sender="x@y", source="test")
    d.add_local(mid)
    await d.commit(RAW)
    s = await core.store.open(mid)
    assert await s.search_text("INBOX", "RÉSULTATS".replace("É", "E")) == [1]
    assert await s.search_text("INBOX", "absent-word") == []


async def test_closed_mailbox_refuses_delivery_and_opening(core: Any) -> None:
    mid = await _mailbox(core)
    async with core.db.write() as s:
        await core.store.close_mailbox(s, mid)
    with pytest.raises(MailboxClosed):
        await core.store.open(mid)
    d = core.store.delivery(sender="x@y", source="test")
    d.add_local(mid)
    with pytest.raises(MailboxClosed):
        await d.commit(RAW)


async def test_relation_facts_and_conversation_close(core: Any) -> None:
    patient = await _mailbox(core)
    pro = "marie.curie@test.missive.localhost"
    d = core.store.delivery(sender=pro, source="test")
    d.add_local(patient)
    await d.commit(RAW)
    facts = await core.store.relation_facts(patient, pro, ["<m1@test>"], "<m1@test>")
    assert (facts.wrote_before, facts.references_known, facts.conversation_closed) == (
        True, True, False)
    other = await core.store.relation_facts(patient, "someone@else", ["<m1@test>"], None)
    assert (other.wrote_before, other.references_known) == (False, False)
    fin = core.store.delivery(sender=pro, source="test")
    fin.add_local(patient)
    fin.close_conversation = True
    await fin.commit(RAW.replace(b"Message-ID: <m1@test>", b"Message-ID: <m2@test>\r\n"
                                 b"References: <m1@test>"))
    assert (await core.store.relation_facts(patient, pro, ["<m1@test>"], "<m1@test>")
            ).conversation_closed


async def test_remote_recipients_are_queued_sealed(core: Any) -> None:
    d = core.store.delivery(sender="x@test.missive.localhost", source="test")
    d.add_remote("dr.who@other.example")
    result = await d.commit(RAW)
    assert result.relayed == ["dr.who@other.example"]
    relay = await core.store.relay_open_session()
    assert relay.kind == "system"


async def test_append_keeps_flags_and_date_and_enforces_quota(core: Any) -> None:
    from datetime import UTC, datetime

    from missive.mailbox.store import QuotaExceeded

    async with core.db.write() as s:
        mid = int(await core.store.create_mailbox(s, kind="professional", quota=len(RAW) * 2))
    session = await core.store.open(mid)
    when = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    validity, uid = await session.append("Sent", RAW, {"\\Seen", "$Label1"}, when)
    assert validity == (await session.folder("Sent")).uidvalidity
    (info,) = await session.messages("Sent", [uid])
    assert info.flags == {"\\Seen", "$Label1"} and info.internal_date == when
    await session.append("Drafts", RAW)
    with pytest.raises(QuotaExceeded):
        await session.append("Drafts", RAW)
    # Deliveries from professionals are never refused for quota (a document is never lost).
    d = core.store.delivery(sender="x@y", source="test")
    d.add_local(mid)
    assert (await d.commit(RAW)).local


async def test_collect_keys_finishes_an_interrupted_shredding(core: Any) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from missive.errors import KeyStoreUnavailable
    from missive.mailbox.models import Mailbox

    keep = await _mailbox(core)
    doomed = await _mailbox(core)
    async with core.db.read() as s:
        ref = (await s.get(Mailbox, doomed)).key_ref
    # A crash after the closing transaction but before the key store was told.
    async with core.db.write() as s:
        await s.execute(update(Mailbox).where(Mailbox.id == doomed).values(
            key_ref=None, wrapped_private_key=None, status="closed"))
    assert await core.store.collect_keys() == 0  # young keys are left alone (other nodes)
    assert await core.store.collect_keys(older_than=timedelta(0)) == 1
    with pytest.raises(KeyStoreUnavailable):
        await core.keystore.get(ref)
    assert (await core.store.open(keep)).mailbox_id == keep


async def test_delegate_key_is_wrapped_per_delegation_and_revocable(core: Any) -> None:
    from missive.errors import KeyStoreUnavailable
    from missive.mailbox.models import DelegateKey

    mid = await _mailbox(core)
    d = core.store.delivery(sender="x@y", source="test")
    d.add_local(mid)
    await d.commit(RAW)
    owner = await core.store.open(mid)
    async with core.db.write() as s:
        await owner.grant_delegate_key(s, "delegation:1")
        await owner.grant_delegate_key(s, "delegation:2")
    caregiver = await core.store.open_as_delegate(mid, "delegation:1")
    assert await caregiver.fetch("INBOX", 1) == RAW
    with pytest.raises(NotFound):
        await core.store.open_as_delegate(mid + 999, "delegation:1")  # not for another mailbox
    async with core.db.read() as s:
        backup = (await s.execute(select_delegate(DelegateKey, "delegation:1"))).scalar_one()
        backup_row = (backup.key_ref, backup.wrapped_private_key)
    async with core.db.write() as s:
        assert await core.store.revoke_delegate_key(s, "delegation:1")
    with pytest.raises(NotFound):
        await core.store.open_as_delegate(mid, "delegation:1")
    # Even a restored copy of the revoked row opens nothing: its KEK is gone.
    with pytest.raises(KeyStoreUnavailable):
        await core.keystore.get(backup_row[0])
    assert await (await core.store.open_as_delegate(mid, "delegation:2")).fetch("INBOX", 1) == RAW
    async with core.db.read() as s:
        second = (await s.execute(select_delegate(DelegateKey, "delegation:2"))).scalar_one()
    async with core.db.write() as s:
        await core.store.close_mailbox(s, mid)
    with pytest.raises((NotFound, MailboxClosed)):
        await core.store.open_as_delegate(mid, "delegation:2")
    with pytest.raises(KeyStoreUnavailable):  # closing shreds the delegates' keys too (C3)
        await core.keystore.get(second.key_ref)


def select_delegate(model: Any, ref: str) -> Any:
    from sqlalchemy import select

    return select(model).where(model.grant_ref == ref)


async def test_page_is_keyset_paginated_newest_first_across_gaps(core: Any) -> None:
    mid = await _mailbox(core)
    for i in range(9):
        d = core.store.delivery(sender="x@y", source="test")
        d.add_local(mid)
        await d.commit(RAW.replace(b"Resultats", b"Page %d" % i))
    s = await core.store.open(mid)
    await s.move("INBOX", [3, 6], "Archive")  # gaps: UIDs 1 2 4 5 7 8 9 remain
    first = await s.page("INBOX", limit=3)
    assert [m.uid for m in first.messages] == [9, 8, 7]
    assert (first.older, first.newer) == (True, False)
    assert first.summaries[8].subject == "Page 7"
    second = await s.page("INBOX", limit=3, below=7)
    assert [m.uid for m in second.messages] == [5, 4, 2]
    assert (second.older, second.newer) == (True, True)
    last = await s.page("INBOX", limit=3, below=2)
    assert [m.uid for m in last.messages] == [1] and (last.older, last.newer) == (False, True)
    back = await s.page("INBOX", limit=3, above=1)
    assert [m.uid for m in back.messages] == [5, 4, 2]
    assert (back.older, back.newer) == (True, True)
    top = await s.page("INBOX", limit=3, above=5)
    assert [m.uid for m in top.messages] == [9, 8, 7] and (top.older, top.newer) == (True, False)
    empty = await s.page("Drafts", limit=3)
    assert (empty.messages, empty.older, empty.newer) == ([], False, False)
    with pytest.raises(NotFound):
        await s.page("Nowhere", limit=3)
