"""The memoised address pairs of the summary are those of ``email.utils.getaddresses``."""

from __future__ import annotations

import email.utils

from missive.mime import summary
from missive.mime.summary import summarize


def direct(values: list[str]) -> list[tuple[str, str]]:
    return [(n, a.lower()) for n, a in email.utils.getaddresses(values) if a]


def test_repeated_and_long_address_fields_give_getaddresses_pairs() -> None:
    long_to = ", ".join(f"P{i} <P{i}@Example.org>" for i in range(60))
    for to in ("A <A@Example.org>", '"B, C" <b@example.org>, d@example.org', "A <A@Example.org>",
               long_to, long_to, "=?utf-8?q?=C3=89lise?= <E@x.org>", ",,,", "A <A@Example.org>"):
        raw = f"From: Dr X <X@Example.org>\r\nTo: {to}\r\nSubject: s\r\n\r\nbody\r\n".encode()
        got = summarize(raw)
        msg = email.message_from_bytes(raw)
        assert got.to == [a for _, a in direct([str(v) for v in msg.get_all("To") or []])][:50]
        assert (got.from_name, got.from_addr) == ("Dr X", "x@example.org")
    assert summary._memo_pairs.cache_info().hits > 0
