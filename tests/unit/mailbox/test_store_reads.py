"""The store's lean read and write-back paths give the same answers as the ORM statements they
replaced (``fetch_many``, ``derived_items``/``derived_range``, the key-cache and derived
write-back), on SQLite (plain SQL on the driver's cursor) and PostgreSQL (Core statements)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from missive.mailbox import crypto
from missive.mailbox.delivery import BODY
from missive.mailbox.models import Content, Folder, Message
from missive.mailbox.store import (
    _derived_decode,
    _derived_encode,
    _write_cache_rows,
    _write_cache_rows_sqlite,
)

RAW = b"From: a%d@example.org\r\nSubject: s%d\r\nMessage-ID: <r%d@x>\r\n\r\nbody %d\r\n"


async def _filled(core: Any, count: int) -> int:
    async with core.db.write() as s:
        mid = int(await core.store.create_mailbox(s, kind="professional"))
    mbox = await core.store.open(mid)
    await mbox.create_folder("Other")
    for i in range(count):
        await mbox.append("INBOX" if i % 3 else "Other", RAW % (i, i, i, i))
    return mid


def _orm_bodies(box: Any, s: Session, name: str, uids: list[int]) -> dict[int, bytes]:
    """``fetch_many`` as it was written with ORM statements (the reference)."""
    f = box._folder_sync(s, name)
    rows = s.execute(select(Message.uid, Content.id, Content.body).join(
        Content, Content.id == Message.content_id).where(
        Message.folder_id == f.id, Message.uid.in_(uids))).all()
    keys = box._data_keys(s, [r[1] for r in rows])
    return {uid: crypto.decrypt(keys[cid], body, BODY) for uid, cid, body in rows}


async def test_fetch_many_matches_the_orm_read(core: Any) -> None:
    mid = await _filled(core, 30)
    box = await core.store.open(mid)
    for name in ("INBOX", "inbox", "Other"):
        infos = await box.messages(name)
        uids = [m.uid for m in infos] + [999]  # a UID that is not there is left out
        reference = await core.db.run_read(lambda s, n=name, u=uids: _orm_bodies(box, s, n, u))
        fresh = await core.store.open(mid)  # no data key in memory: the cache or HPKE
        assert await fresh.fetch_many(name, uids) == reference
        assert await box.fetch_many(name, uids) == reference  # keys in memory
        assert len(reference) == len(infos)
    await core.store.drain()
    assert await (await core.store.open(mid)).fetch_many("Other", [1, 2]) == \
        await core.db.run_read(lambda s: _orm_bodies(box, s, "Other", [1, 2]))


async def test_fetch_many_of_a_missing_folder_is_not_found(core: Any) -> None:
    from missive.errors import NotFound

    box = await core.store.open(await _filled(core, 2))
    with pytest.raises(NotFound):
        await box.fetch_many("Nope", [1])


async def test_derived_range_and_items_agree(core: Any) -> None:
    mid = await _filled(core, 12)
    box = await core.store.open(mid)
    infos = await box.messages("INBOX")
    for i, info in enumerate(infos):
        if i != 3:  # one message without kept items
            box.keep_derived(info.content_id, {"ENVELOPE": b"ENVELOPE (%d \xff\x00)" % i,
                                               "BODY": b"BODY (x)"})
    await core.store.drain()
    fid = await core.db.run_read(lambda s: s.execute(select(Folder.id).where(
        Folder.mailbox_id == mid, Folder.name == "INBOX")).scalar_one())
    ids = [m.content_id for m in infos]
    by_ids = await box.derived_items(ids)
    assert len(by_ids) == len(infos) - 1 and infos[3].content_id not in by_ids
    assert by_ids[infos[0].content_id] == {"ENVELOPE": b"ENVELOPE (0 \xff\x00)",
                                           "BODY": b"BODY (x)"}
    assert await box.derived_range(fid, infos[0].uid, infos[-1].uid) == by_ids
    assert await box.derived_range(fid, infos[2].uid, infos[5].uid) == {
        m.content_id: by_ids[m.content_id] for m in infos[2:6] if m.content_id in by_ids}
    assert await box.derived_range(fid, 10_000, 20_000) == {}
    other = await _filled(core, 3)  # another mailbox's session opens none of these
    assert await (await core.store.open(other)).derived_items(ids) == {}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["ENVELOPE", "BODYSTRUCTURE", "BODY", "BODY[1]"]),
                       st.binary(max_size=300)))
def test_derived_codec_round_trips_any_octets(items: dict[str, bytes]) -> None:
    assert _derived_decode(_derived_encode(items)) == items
    # The format written before: a JSON object of name -> latin-1 text, still read.
    legacy = json.dumps({k: v.decode("latin-1") for k, v in items.items()}).encode()
    assert _derived_decode(legacy) == items


@pytest.mark.parametrize("bad", [b"\x01ENVELOPE:5\nabc", b"\x01ENVELOPE:2\nabc",
                                 b"\x01:1\nx", b"\x01ENVELOPE:x\nabc", b"\x01ENVELOPE:3",
                                 b"[1]", b"\x02"])
def test_derived_decode_refuses_malformed_entries(bad: bytes) -> None:
    with pytest.raises((ValueError, AttributeError, TypeError)):
        _derived_decode(bad)


def test_derived_encode_refuses_odd_names() -> None:
    with pytest.raises(ValueError):
        _derived_encode({"A B": b""})


async def test_write_back_shapes_agree(core: Any) -> None:
    """Key only, derived only, both: the statement shapes of the write-back give the same
    rows as writing each column by itself, on the Core path and (SQLite) the driver path."""
    mid = await _filled(core, 9)

    async def contents() -> dict[int, tuple[bytes | None, bytes | None]]:
        async with core.db.read() as s:
            return {cid: (k, d) for cid, k, d in await s.execute(select(
                Content.id, Content.key_cache, Content.derived).where(
                Content.mailbox_id == mid).order_by(Content.id))}

    ids = sorted(await contents())
    rows = [(cid, mid, b"k%d" % cid if i % 3 != 1 else None,
             b"d%d" % cid if i % 3 != 0 else None) for i, cid in enumerate(ids)]
    writers = [_write_cache_rows] + ([_write_cache_rows_sqlite] if core.db.is_sqlite else [])
    for write in writers:
        await core.db.run_write(lambda s: _write_cache_rows(s, [(c, mid, b"", b"") for c in ids]))
        await core.db.run_write(lambda s, w=write: w(s, rows))
        got = await contents()
        assert got == {c: (k if k is not None else b"", d if d is not None else b"")
                       for c, _m, k, d in rows}
    # Rows of another mailbox are never touched.
    await core.db.run_write(lambda s: _write_cache_rows(s, [(ids[0], mid + 1000, b"x", b"y")]))
    assert (await contents())[ids[0]] != (b"x", b"y")


async def test_a_first_envelope_fetch_writes_key_and_items_in_one_row_update(core: Any) -> None:
    """A content whose data key was opened with HPKE and whose items were computed in the
    same session is written back once, both columns together."""
    mid = await _filled(core, 4)
    box = await core.store.open(mid)
    infos = await box.messages("INBOX")
    await box.fetch_many("INBOX", [m.uid for m in infos])
    for m in infos:
        box.keep_derived(m.content_id, {"ENVELOPE": b"ENVELOPE %d" % m.uid})
    keys, derived = box.take_cache_writes()
    assert set(keys) == set(derived) == {m.content_id for m in infos}
    box._to_cache, box._to_derive = keys, derived
    written: list[list[tuple[int, int, bytes | None, bytes | None]]] = []
    import missive.mailbox.store as store_module

    real = store_module._write_cache_rows_sqlite if core.db.is_sqlite else \
        store_module._write_cache_rows

    def spy(s: Session, rows: Any) -> None:
        written.append(list(rows))
        real(s, rows)

    name = "_write_cache_rows_sqlite" if core.db.is_sqlite else "_write_cache_rows"
    setattr(store_module, name, spy)
    try:
        core.store.cache_keys_later(box)
        await core.store.drain()
    finally:
        setattr(store_module, name, real)
    assert [(c, k is not None, d is not None) for c, _m, k, d in written[0]] == [
        (m.content_id, True, True) for m in infos]
    assert len(await (await core.store.open(mid)).derived_items(list(derived))) == len(infos)
