"""SEARCH over header fields: the fast header-only test (``header_predicate``) answers as the
general evaluator (``matches``) does, for every key it accepts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from missive.imap import parser as p
from missive.imap.search import (
    Candidate,
    Context,
    HeaderColumn,
    column_query,
    header_fields,
    header_predicate,
    matches,
)
from missive.mailbox.store import MessageInfo

MESSAGES = [
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\nSubject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu.example\r\nMessage-Id: <B27397@Blurdybloop.example>\r\n"
    b"Cc: Undisclosed recipients:;\r\n\r\nbody\r\n",
    b"From: Bob <bob@example.org>\r\nSubject: =?iso-8859-1?q?r=E9sum=E9?=\r\n"
    b"To: alice@example.org,\r\n \"Carol Q.\" <carol@example.org>\r\n\r\nbody\r\n",
    b"From: a@example.org\r\nSubject:\r\nX-Empty:\r\n\r\nno final line end",
    b"Subject: no sender\r\nBcc: hidden@example.org\r\n\r\n",
]
KEYS = ["SUBJECT meeting", "FROM bob", "FROM BOB", "SUBJECT résumé", "SUBJECT r=E9",
        "TO carol", "CC undisclosed", "BCC hidden", 'HEADER Subject ""', 'HEADER X-Empty ""',
        "HEADER Message-ID b27397", "HEADER x-missing x", "NOT SUBJECT meeting",
        "OR FROM bob SUBJECT no", "FROM example SUBJECT a", "NOT OR TO alice CC recip"]


@pytest.mark.parametrize("key", KEYS)
def test_header_predicate_agrees_with_matches(key: str) -> None:
    cmd = p.parse_command(b"a SEARCH CHARSET UTF-8 " + key.encode() + b"\r\n")
    assert isinstance(cmd, p.Search)
    test = header_predicate(cmd.key)
    assert test is not None
    ctx = Context(len(MESSAGES), len(MESSAGES), frozenset())
    for n, raw in enumerate(MESSAGES, 1):
        info = MessageInfo(n, n, frozenset(), datetime.now(UTC), len(raw), 1, n)
        general = matches(cmd.key, Candidate(n, info, frozenset(), raw), ctx)
        assert test(header_fields(raw)) == general, (key, n)


def test_keys_beyond_headers_take_the_general_path() -> None:
    for key in ("BODY x", "TEXT x", "SEEN", "FROM a SEEN", "SENTBEFORE 1-Jan-2000", "1:3"):
        cmd = p.parse_command(b"a SEARCH " + key.encode() + b"\r\n")
        assert isinstance(cmd, p.Search)
        assert header_predicate(cmd.key) is None, key


SINGLE_KEYS = [k for k in KEYS if not k.startswith(("NOT", "OR", "FROM example"))]


@pytest.mark.parametrize("key", SINGLE_KEYS)
def test_header_column_agrees_with_the_header_test(key: str) -> None:
    cmd = p.parse_command(b"a SEARCH CHARSET UTF-8 " + key.encode() + b"\r\n")
    assert isinstance(cmd, p.Search)
    query, test = column_query(cmd.key), header_predicate(cmd.key)
    assert query is not None and test is not None
    heads = [header_fields(raw) for raw in MESSAGES]
    column = HeaderColumn(heads, query[0], query[1])
    assert column.find(query[2]) == [i for i, h in enumerate(heads) if test(h)]
