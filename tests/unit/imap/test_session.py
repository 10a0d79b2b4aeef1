"""The session state machine without sockets: a fake connection records what is sent."""

from __future__ import annotations

from typing import Any

import pytest

from missive.imap import parser as p
from missive.imap.auth import Principal
from missive.imap.session import Session


class FakeIO:
    def __init__(self, tls: bool = True) -> None:
        self.tls = tls
        self.out = bytearray()

    def send(self, data: bytes) -> None:
        self.out += data

    async def flush(self) -> None:
        return None

    async def read_line(self) -> bytes | None:
        return None

    async def start_tls(self) -> None:
        self.tls = True

    def peer_certificate(self) -> Any:
        return None

    def take(self) -> list[str]:
        lines = bytes(self.out).decode().split("\r\n")[:-1]
        self.out.clear()
        return lines


class Auth:
    def __init__(self, mailbox_id: int) -> None:
        self.mailbox_id = mailbox_id

    async def password(self, login: str, password: str) -> Principal | None:
        return Principal(login, self.mailbox_id) if password == "pw" else None

    async def certificate(self, cert: Any, authzid: str | None) -> Principal | None:
        return None


def raw(i: int) -> bytes:
    return (f"From: a{i}@example.org\r\nSubject: s{i}\r\nMessage-ID: <m{i}@x>\r\n\r\n"
            f"body {i}\r\n").encode()


@pytest.fixture
async def mailbox(core: Any) -> int:
    async with core.db.write() as s:
        mid: int = await core.store.create_mailbox(s, kind="professional")
    mbox = await core.store.open(mid)
    for i in range(1, 71):
        await mbox.append("INBOX", raw(i))
    return mid


async def run(sess: Session, line: str) -> list[str]:
    await sess.handle(p.parse_command(line.encode() + b"\r\n"))
    io = sess.io
    assert isinstance(io, FakeIO)
    return io.take()


async def test_states_and_plaintext_refusals(core: Any, mailbox: int) -> None:
    sess = Session(core, FakeIO(tls=False), Auth(mailbox), implicit_tls=False)
    assert "LOGINDISABLED" in sess.greeting().decode()
    assert (await run(sess, "a SELECT INBOX"))[-1].startswith("a BAD")
    assert (await run(sess, "b LOGIN u pw"))[-1].startswith("b NO [PRIVACYREQUIRED]")
    assert (await run(sess, "c FETCH 1 FLAGS"))[-1].startswith("c BAD")
    sess.io.tls = True  # type: ignore[misc]
    assert (await run(sess, "d LOGIN u bad"))[-1].startswith("d NO [AUTHENTICATIONFAILED]")
    assert (await run(sess, "e LOGIN u pw"))[-1].startswith("e OK [CAPABILITY")
    assert (await run(sess, "f LOGIN u pw"))[-1].startswith("f BAD")
    out = await run(sess, "g EXAMINE INBOX")
    assert "* 70 EXISTS" in out and out[-1].startswith("g OK [READ-ONLY]")
    assert (await run(sess, "h STORE 1 +FLAGS (\\Seen)"))[-1].startswith("h NO [READ-ONLY]")
    out = await run(sess, "i FETCH 1 (BODY[])")
    assert "\\Seen" not in "".join(out)  # EXAMINE never sets \Seen
    assert (await run(sess, "j FETCH 71 FLAGS"))[-1].startswith("j BAD")
    assert (await run(sess, "k UID FETCH 71 FLAGS")) == ["k OK FETCH completed"]
    out = await run(sess, "l LOGOUT")
    assert out[0].startswith("* BYE") and out[-1].startswith("l OK")
    await sess.close()


async def test_sequential_fetches_read_ahead(core: Any, mailbox: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sess = Session(core, FakeIO(), Auth(mailbox), implicit_tls=True)
    await run(sess, "a LOGIN u pw")
    await run(sess, "b SELECT INBOX")
    assert sess.mbox is not None
    calls: list[int] = []
    original = sess.mbox.fetch_many

    async def counting(name: str, uids: Any) -> dict[int, bytes]:
        calls.append(len(uids))
        return await original(name, uids)

    monkeypatch.setattr(sess.mbox, "fetch_many", counting)
    for n in range(1, 71):
        out = await run(sess, f"f{n} FETCH {n} (BODY.PEEK[])")
        assert f"body {n}" in "\r\n".join(out)
    assert len(calls) <= 3, calls  # 70 messages in a handful of store reads
    calls.clear()
    await run(sess, "r FETCH 50 (BODY.PEEK[TEXT])")
    assert calls == []  # served from the session cache
    await sess.close()


async def test_search_and_expunge_responses(core: Any, mailbox: int) -> None:
    sess = Session(core, FakeIO(), Auth(mailbox), implicit_tls=True)
    await run(sess, "a LOGIN u pw")
    await run(sess, "b SELECT INBOX")
    assert (await run(sess, "c SEARCH SUBJECT s1"))[0] == "* SEARCH 1 " + " ".join(
        str(n) for n in range(10, 20))
    assert (await run(sess, "c2 SEARCH HEADER Message-ID \"<m12@\""))[0] == "* SEARCH 12"
    assert (await run(sess, "d UID SEARCH BODY \"body 70\""))[0] == "* SEARCH 70"
    assert (await run(sess, "e SEARCH RETURN (MIN MAX COUNT) UNSEEN"))[0] == \
        '* ESEARCH (TAG "e") MIN 1 MAX 70 COUNT 70'
    await run(sess, "f STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    out = await run(sess, "g EXPUNGE")
    assert out[:2] == ["* 2 EXPUNGE", "* 3 EXPUNGE"]
    out = await run(sess, "h FETCH 2 (UID)")
    assert out[0] == "* 2 FETCH (UID 3)"
    await sess.close()


async def test_header_search_by_column_follows_the_view(core: Any, mailbox: int) -> None:
    """A header SEARCH answered from the view's column (once every message's header fields
    are cached) gives what the per-message evaluation gave, before and after the view's
    messages change (expunge, new message)."""
    sess = Session(core, FakeIO(), Auth(mailbox), implicit_tls=True)
    await run(sess, "a LOGIN u pw")
    await run(sess, "b SELECT INBOX")
    first = await run(sess, "c SEARCH SUBJECT s1")  # reads and caches the header fields
    assert sess.view is not None and not sess.view.columns
    assert await run(sess, "d SEARCH SUBJECT s1") == [first[0], "d OK SEARCH completed"]
    assert sess.view.columns  # the second search used a column
    assert (await run(sess, "e UID SEARCH HEADER Message-ID \"<M12@\""))[0] == "* SEARCH 12"
    assert (await run(sess, "f SEARCH FROM a7@"))[0] == "* SEARCH 7"
    assert (await run(sess, "g SEARCH HEADER X-Missing \"\""))[0] == "* SEARCH"
    assert (await run(sess, "h SEARCH HEADER Subject \"\""))[0] == "* SEARCH " + " ".join(
        str(n) for n in range(1, 71))
    await run(sess, "i STORE 1 +FLAGS.SILENT (\\Deleted)")
    await run(sess, "j EXPUNGE")
    assert not sess.view.columns
    assert (await run(sess, "k SEARCH SUBJECT s1"))[0] == "* SEARCH " + " ".join(
        str(n) for n in range(9, 19))
    assert sess.mbox is not None
    await sess.mbox.append("INBOX", raw(171))
    out = await run(sess, "l SEARCH SUBJECT s17")
    assert "* 70 EXISTS" in out and "* SEARCH 16 70" in out
    await sess.close()


def test_view_fill_is_add_of_each_message() -> None:
    """SELECT fills its view at once (SelectedView.fill): the same view as adding the
    messages one by one."""
    from datetime import UTC, datetime

    from hypothesis import given
    from hypothesis import strategies as st

    from missive.imap.session import SelectedView
    from missive.mailbox.store import MessageInfo

    flag = st.sampled_from(["\\Seen", "\\Flagged", "$Label1", "Junk", "\\Deleted", "x"])

    @given(st.lists(st.frozensets(flag, max_size=4), max_size=30))
    def check(flag_sets: list[frozenset[str]]) -> None:
        when = datetime(2026, 1, 1, tzinfo=UTC)
        infos = [MessageInfo(i, 3 * i + 1, f, when, 10, i, i) for i, f in enumerate(flag_sets)]
        one, bulk = SelectedView("INBOX", False, 7), SelectedView("INBOX", False, 7)
        for m in infos:
            one.add(m)
        bulk.fill(infos)
        assert (bulk.uids, bulk.infos, bulk.keywords) == (one.uids, one.infos, one.keywords)

    check()
