"""``missive.mailbox.views``, the catch-up reads behind every IMAP command: the whole UID list is
read only when something was expunged."""

from __future__ import annotations

from typing import Any


async def test_view_changes_reads_uids_only_after_an_expunge(core: Any) -> None:
    from missive.mailbox import views

    async with core.db.write() as s:
        mid: int = await core.store.create_mailbox(s, kind="professional")
    mbox = await core.store.open(mid)
    inbox = (await mbox.folder("INBOX")).id
    for i in range(5):
        await mbox.append("INBOX", b"Subject: %d\r\n\r\nbody\r\n" % i)
    start = await mbox.highest_modseq()
    assert await views.view_changes(mbox, inbox, start, 5, 5) == (start, [], None)
    await mbox.store_flags("INBOX", [2], ["\\Seen"], "add")
    highest, changed, uids = await views.view_changes(mbox, inbox, start, 5, 5)
    assert highest > start and [m.uid for m in changed] == [2] and uids is None
    assert "\\Seen" in changed[0].flags
    await mbox.store_flags("INBOX", [4], ["\\Deleted"], "add")
    await mbox.expunge("INBOX")
    highest, changed, uids = await views.view_changes(mbox, inbox, start, 5, 5)
    assert uids == [1, 2, 3, 5]
    await mbox.append("INBOX", b"Subject: new\r\n\r\nbody\r\n")
    # A client that already knows the expunge (4 messages up to UID 5) sees only the new one.
    _, changed, uids = await views.view_changes(mbox, inbox, highest, 4, 5)
    assert [m.uid for m in changed] == [6] and uids is None


async def test_views_by_folder_id_agree_with_the_store(core: Any) -> None:
    """``missive.mailbox.views`` (the IMAP session's lean catch-up by folder id) answers as
    the store's ``messages`` does, sees only its own folder's changes, and reads a deleted
    folder as empty."""
    from missive.mailbox import views

    async with core.db.write() as s:
        mid: int = await core.store.create_mailbox(s, kind="professional")
    mbox = await core.store.open(mid)
    folder = await mbox.create_folder("Work")
    for i in range(5):
        await mbox.append("Work", b"Subject: %d\r\n\r\nbody\r\n" % i, ["\\Seen"] if i else [])
    start, infos = await views.folder_messages(mbox, folder.id)
    assert start == await mbox.highest_modseq()
    assert infos == await mbox.messages("Work")
    assert await views.view_changes(mbox, folder.id, start, 5, 5) == (start, [], None)
    await mbox.store_flags("Work", [2], ["\\Flagged"], "add")
    await mbox.append("INBOX", b"Subject: elsewhere\r\n\r\nbody\r\n")
    got = await views.view_changes(mbox, folder.id, start, 5, 5)
    assert got[0] == await mbox.highest_modseq()
    assert got[1] == await mbox.messages("Work", [2]) and got[2] is None
    await mbox.store_flags("Work", [4], ["\\Deleted"], "add")
    await mbox.expunge("Work")
    got = await views.view_changes(mbox, folder.id, start, 5, 5)
    assert got[2] == [1, 2, 3, 5]
    assert got[1] == await mbox.messages("Work", [2])  # the expunged UID 4 is not "changed"
    await mbox.delete_folder("Work")
    await mbox.append("INBOX", b"Subject: later\r\n\r\nbody\r\n")  # the next change
    highest, changed, uids = await views.view_changes(mbox, folder.id, got[0], 4, 5)
    assert highest > got[0] and changed == [] and uids == []
