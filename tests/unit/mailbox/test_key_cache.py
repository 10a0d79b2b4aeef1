"""The per-mailbox key cache: a data key opened once with HPKE is reopened with AES-GCM only.

The attack cases come first: a cached key must not open outside its mailbox or its row, and
an altered one must not break reading (HPKE decides, and the cache entry is rewritten).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from missive.mailbox import crypto
from missive.mailbox.models import Content

RAW = (b"From: Dr A <a@test.missive.localhost>\r\nSubject: Cache %d\r\n"
       b"Message-ID: <c%d@test>\r\n\r\nCorps %d\r\n")


async def _mailbox_with(core: Any, count: int) -> int:
    async with core.db.write() as s:
        mid = int(await core.store.create_mailbox(s, kind="patient"))
    for i in range(count):
        d = core.store.delivery(sender="a@test.missive.localhost", source="test")
        d.add_local(mid)
        await d.commit(RAW % (i, i, i))
    return mid


async def _cached(core: Any, mid: int) -> dict[int, bytes | None]:
    async with core.db.read() as s:
        rows = await s.execute(select(Content.id, Content.key_cache).where(
            Content.mailbox_id == mid))
        return {cid: blob for cid, blob in rows}


class _CountingOpen:
    """Counts HPKE decapsulations (``crypto.open_data_key``) while patched in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = crypto.open_data_key

        def counting(private: crypto.PrivateKey, sealed: crypto.SealedKey) -> bytes:
            self.calls += 1
            return real(private, sealed)

        monkeypatch.setattr(crypto, "open_data_key", counting)


async def test_delivery_leaves_the_cache_empty_and_a_first_read_fills_it(core: Any) -> None:
    mid = await _mailbox_with(core, 3)
    assert set((await _cached(core, mid)).values()) == {None}  # C2: delivery has no private key
    box = await core.store.open(mid)
    await box.summaries("INBOX", [1, 2, 3])
    await core.store.drain()
    assert all(blob is not None for blob in (await _cached(core, mid)).values())


async def test_a_new_session_reads_from_the_cache_without_hpke(
        core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mid = await _mailbox_with(core, 5)
    first = await core.store.open(mid)
    assert len(await first.fetch_many("INBOX", [1, 2, 3, 4, 5])) == 5
    await core.store.drain()
    counter = _CountingOpen(monkeypatch)
    second = await core.store.open(mid)
    bodies = await second.fetch_many("INBOX", [1, 2, 3, 4, 5])
    assert bodies[4] == RAW % (3, 3, 3)
    assert (await second.summaries("INBOX", [5]))[5].subject == "Cache 4"
    assert counter.calls == 0


async def test_an_altered_cache_entry_falls_back_to_hpke_and_is_rewritten(
        core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mid = await _mailbox_with(core, 1)
    await (await core.store.open(mid)).fetch("INBOX", 1)
    await core.store.drain()
    (cid, good), = (await _cached(core, mid)).items()
    assert good is not None
    async with core.db.write() as s:
        await s.execute(update(Content).where(Content.id == cid).values(
            key_cache=good[:-1] + bytes([good[-1] ^ 1])))
    counter = _CountingOpen(monkeypatch)
    box = await core.store.open(mid)
    assert await box.fetch("INBOX", 1) == RAW % (0, 0, 0)
    assert counter.calls == 1
    await core.store.drain()
    rewritten = (await _cached(core, mid))[cid]
    assert rewritten is not None and rewritten != good[:-1] + bytes([good[-1] ^ 1])


async def test_a_cache_entry_opens_nothing_on_another_row_or_in_another_mailbox(
        core: Any) -> None:
    mid = await _mailbox_with(core, 2)
    other = await _mailbox_with(core, 1)
    await (await core.store.open(mid)).fetch_many("INBOX", [1, 2])
    await (await core.store.open(other)).fetch("INBOX", 1)
    await core.store.drain()
    mine = await _cached(core, mid)
    theirs = await _cached(core, other)
    box = await core.store.open(mid)
    async with core.db.read() as s:
        rows = {cid: (suite, blob) for cid, suite, blob in await s.execute(
            select(Content.id, Content.suite, Content.sealed_key).where(
                Content.mailbox_id == mid))}
    first, second = sorted(rows)
    cache_key = crypto.derive_cache_key(box._private)
    own = mine[first]
    assert own is not None
    crypto.unwrap_cached_key(cache_key, mid, crypto.SealedKey(*rows[first]), own)  # sanity
    with pytest.raises(crypto.CryptoError):  # moved onto another row of the same mailbox
        crypto.unwrap_cached_key(cache_key, mid, crypto.SealedKey(*rows[second]), own)
    with pytest.raises(crypto.CryptoError):  # claimed for another mailbox id
        crypto.unwrap_cached_key(cache_key, other, crypto.SealedKey(*rows[first]), own)
    foreign = next(iter(theirs.values()))
    assert foreign is not None
    with pytest.raises(crypto.CryptoError):  # another mailbox's entry under this mailbox's key
        crypto.unwrap_cached_key(cache_key, mid, crypto.SealedKey(*rows[first]), foreign)


async def test_the_cache_key_comes_from_the_private_key_only(core: Any) -> None:
    mid = await _mailbox_with(core, 1)
    other = await _mailbox_with(core, 1)
    a = await core.store.open(mid)
    b = await core.store.open(mid)
    c = await core.store.open(other)
    assert crypto.derive_cache_key(a._private) == crypto.derive_cache_key(b._private)
    assert crypto.derive_cache_key(a._private) != crypto.derive_cache_key(c._private)


async def test_a_delegate_session_uses_the_same_cache(
        core: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mid = await _mailbox_with(core, 2)
    owner = await core.store.open(mid)
    async with core.db.write() as s:
        await owner.grant_delegate_key(s, "grant-cache-test")
    await owner.fetch_many("INBOX", [1, 2])
    await core.store.drain()
    counter = _CountingOpen(monkeypatch)
    delegate = await core.store.open_as_delegate(mid, "grant-cache-test")
    assert len(await delegate.fetch_many("INBOX", [1, 2])) == 2
    assert counter.calls == 0
