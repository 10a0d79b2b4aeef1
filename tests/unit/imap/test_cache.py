"""Caches shared by the sessions of one mailbox (missive.imap.cache): a second session answers
from what the first computed, mailboxes never share, and the last logout drops everything."""

from __future__ import annotations

from typing import Any

import pytest

from missive.imap import parser as p
from missive.imap.auth import Principal
from missive.imap.cache import SharedCaches
from missive.imap.session import Session


class FakeIO:
    def __init__(self) -> None:
        self.tls = True
        self.out = bytearray()

    def send(self, data: bytes) -> None:
        self.out += data

    async def flush(self) -> None:
        return None

    async def read_line(self) -> bytes | None:
        return None

    async def start_tls(self) -> None:
        return None

    def peer_certificate(self) -> Any:
        return None


class Auth:
    """Logins ``a`` and ``b`` open two different mailboxes."""

    def __init__(self, mailboxes: dict[str, int]) -> None:
        self.mailboxes = mailboxes

    async def password(self, login: str, password: str) -> Principal | None:
        return Principal(login, self.mailboxes[login]) if password == "pw" else None

    async def certificate(self, cert: Any, authzid: str | None) -> Principal | None:
        return None


async def run(sess: Session, line: str) -> list[str]:
    await sess.handle(p.parse_command(line.encode() + b"\r\n"))
    io = sess.io
    assert isinstance(io, FakeIO)
    lines = bytes(io.out).decode().split("\r\n")[:-1]
    io.out.clear()
    return lines


@pytest.fixture
async def mailboxes(core: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for login in ("a", "b"):
        async with core.db.write() as s:
            mid: int = await core.store.create_mailbox(s, kind="professional")
        mbox = await core.store.open(mid)
        for i in range(1, 6):
            await mbox.append("INBOX", (f"From: {login}{i}@example.org\r\nSubject: {login} {i}\r\n"
                                        f"\r\nbody {i}\r\n").encode())
        out[login] = mid
    return out


async def session(core: Any, caches: SharedCaches, mailboxes: dict[str, int],
                  login: str) -> Session:
    sess = Session(core, FakeIO(), Auth(mailboxes), implicit_tls=True, caches=caches)
    assert (await run(sess, f"l LOGIN {login} pw"))[-1].startswith("l OK")
    assert (await run(sess, "s SELECT INBOX"))[-1].startswith("s OK")
    return sess


async def test_second_session_answers_from_the_first_sessions_work(
        core: Any, mailboxes: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    caches = SharedCaches()
    first = await session(core, caches, mailboxes, "a")
    expected = await run(first, "f FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
    assert expected[-1].startswith("f OK") and '"a 3"' in expected[2]
    assert (await run(first, "h SEARCH HEADER Subject \"a 4\""))[0] == "* SEARCH 4"
    second = await session(core, caches, mailboxes, "a")
    assert second.mbox is first.mbox  # one opened mailbox (one private key in memory)
    assert second.mbox is not None

    async def no_decryption(name: str, uids: Any) -> dict[int, bytes]:
        raise AssertionError(f"decrypted {list(uids)} again")

    monkeypatch.setattr(second.mbox, "fetch_many", no_decryption)
    assert await run(second, "f FETCH 1:* (ENVELOPE BODYSTRUCTURE)") == expected
    assert (await run(second, "h SEARCH HEADER Subject \"a 4\""))[0] == "* SEARCH 4"
    await run(first, "z LOGOUT")
    await first.close()
    assert mailboxes["a"] in caches  # the second session still holds it
    await run(second, "z LOGOUT")
    await second.close()
    assert len(caches) == 0  # the last logout drops the mailbox and every cached item


async def test_mailboxes_never_share_and_disconnect_releases(
        core: Any, mailboxes: dict[str, int]) -> None:
    caches = SharedCaches()
    a = await session(core, caches, mailboxes, "a")
    await run(a, "f FETCH 1:* (ENVELOPE)")
    b = await session(core, caches, mailboxes, "b")
    assert b.mbox is not a.mbox and len(caches) == 2
    out = await run(b, "f FETCH 1:* (ENVELOPE)")
    assert out[-1].startswith("f OK")
    assert '"a ' not in "".join(out) and '"b 5"' in out[4]
    shared_a = caches._open[mailboxes["a"]]
    await a.close()  # a dropped connection, no LOGOUT
    assert mailboxes["a"] not in caches and not shared_a.meta and not shared_a.bodies
    await b.close()
    assert len(caches) == 0


async def test_failed_login_acquires_nothing(core: Any, mailboxes: dict[str, int]) -> None:
    caches = SharedCaches()
    sess = Session(core, FakeIO(), Auth(mailboxes), implicit_tls=True, caches=caches)
    assert (await run(sess, "l LOGIN a wrong"))[-1].startswith("l NO")
    assert len(caches) == 0
    await sess.close()


async def test_a_later_login_serves_kept_envelopes_without_decrypting(
        core: Any, mailboxes: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """After the last logout the memory caches are gone, but the ENVELOPE and BODYSTRUCTURE
    items the first session computed were kept by the store, sealed under the mailbox's cache
    key (``content.derived``): the next session answers them identically without decrypting
    or parsing a message; an altered entry is recomputed, never served."""
    from sqlalchemy import select, update

    from missive.mailbox.models import Content

    caches = SharedCaches()
    first = await session(core, caches, mailboxes, "a")
    expected = await run(first, "f FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
    assert expected[-1].startswith("f OK")
    await run(first, "z LOGOUT")
    await first.close()
    await core.store.drain()
    assert len(caches) == 0
    async with core.db.read() as s:
        kept = (await s.execute(select(Content.id, Content.derived).where(
            Content.mailbox_id == mailboxes["a"]))).all()
    assert len(kept) == 5 and all(blob for _, blob in kept)
    assert not any(b"a 3" in blob for _, blob in kept)  # sealed, not in clear (C1)

    second = await session(core, caches, mailboxes, "a")
    assert second.mbox is not None

    async def no_decryption(name: str, uids: Any) -> dict[int, bytes]:
        raise AssertionError(f"decrypted {list(uids)} again")

    with monkeypatch.context() as m:
        m.setattr(second.mbox, "fetch_many", no_decryption)
        assert await run(second, "f FETCH 1:* (ENVELOPE BODYSTRUCTURE)") == expected
    await run(second, "z LOGOUT")
    await second.close()

    # An altered entry does not open: the item is computed again from the message.
    cid = kept[2][0]
    async with core.db.write() as s:
        await s.execute(update(Content).where(Content.id == cid).values(derived=kept[0][1]))
    third = await session(core, caches, mailboxes, "a")
    assert await run(third, "f FETCH 1:* (ENVELOPE BODYSTRUCTURE)") == expected
    await run(third, "z LOGOUT")
    await third.close()
