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


def test_to_dict_is_asdict() -> None:
    from dataclasses import asdict

    raw = (b"From: A <a@example.org>\r\nTo: b@example.org, c@example.org\r\nCc: d@example.org\r\n"
           b"Subject: s\r\nReferences: <r@x> <s@x>\r\nX-MSS-MES: FIN\r\n"
           b"Content-Type: application/pdf; name=a.pdf\r\n\r\n%PDF-1.7\r\n")
    s = summarize(raw)
    d = s.to_dict()
    assert d == asdict(s) and list(d) == list(asdict(s))
    d["to"].append("x@y")
    d["mss"]["X"] = "y"
    assert s.to == ["b@example.org", "c@example.org"] and "X" not in s.mss
