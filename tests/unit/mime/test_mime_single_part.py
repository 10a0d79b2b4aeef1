"""The single-part shortcut of :func:`missive.mime.parsing.parse_message` gives the message the
full parse gives (``email.message_from_bytes`` with the same policy), for any input.

Messages are assembled from the pieces that move the parser's decisions: header lines, folded
lines, lines that are not headers, bare CR/LF, the empty line, multipart and message types,
transfer encodings, a Unix "From " line; the two parses are compared object for object.
"""

from __future__ import annotations

import email
from email.message import EmailMessage, Message

from hypothesis import example, given, settings
from hypothesis import strategies as st

from missive.mime import parsing
from missive.mime.parts import parts_of
from missive.mime.summary import summary_of


def full_parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=parsing.MemoPolicy())
    assert isinstance(msg, EmailMessage)
    return msg


def shape(msg: Message) -> object:
    """Everything the parser sets on a message (recursively), comparable with ==."""
    payload = msg.get_payload()
    if isinstance(payload, list):
        payload = [shape(p) if isinstance(p, Message) else p for p in payload]
    return (msg.get_unixfrom(), list(msg.raw_items()), payload, msg.preamble, msg.epilogue,
            [type(d) for d in msg.defects], msg.get_default_type(), msg.get_charset())


HEADERS = st.sampled_from([
    b"From: A <a@example.org>", b"To: b@example.org", b"Subject: =?utf-8?q?r=C3=A9sum=C3=A9?=",
    b"Subject: plain", b"Date: Mon, 23 Nov 2026 10:00:00 +0000", b"Message-ID: <x@y>",
    b"Content-Type: text/plain; charset=utf-8", b"Content-Type: multipart/mixed; boundary=B",
    b"Content-Type: message/rfc822", b"Content-Type: message/delivery-status",
    b"Content-Type: application/pdf; name=a.pdf", b"Content-Type: bogus",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Disposition: attachment; filename=x.exe", b"MIME-Version: 1.0",
    b" folded continuation", b"\tfolded", b"not a header line", b"From sender@x Mon Nov 23",
    b"X-Empty:", b"Subject: caf\xc3\xa9", b":", b"",
])
ENDINGS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
BODY = st.lists(st.sampled_from([b"hello", b"--B", b"--B--", b"\r\n", b"\n", b"\r", b"JVBERi0x",
                                 b"=C3=A9", b"\x00\xff", b"From: inner@x", b"Content-Type: x/y",
                                 b"caf\xc3\xa9"]), max_size=12).map(b"".join)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(HEADERS, ENDINGS), max_size=8))
    head = b"".join(h + e for h, e in lines)
    return head + draw(st.sampled_from([b"\r\n", b"\n", b""])) + draw(BODY)


@settings(max_examples=1500, deadline=None)
@given(messages())
@example(b"Subject: x\r\n\r\nbody\r\n")
@example(b"\r\nSubject: x\r\n\r\nbody")
@example(b"Subject: x\r\nnot a header\r\n\r\nbody")
@example(b"Subject: x\nTo: y\r\n\r\nbody")
@example(b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n")
@example(b"Subject : spaced name\r\nTo: y\r\n\r\nbody")
@example(b" leading continuation\r\nTo: y\r\n\r\nbody")
@example(b"Subject: form\x0cfeed \x1c\x85 and \xe2\x80\xa8 separators\r\n\tfolded\r\n\r\nbody")
@example(b"From me@x Mon Nov 23\r\nTo: y\r\n\r\nbody")
@example(b"To: y\r\nFrom me@x Mon Nov 23\r\n\r\nbody")
@example(b"X:\r\n:no name\r\n\r\nbody")
@example(b"Subject: a\r\n b\r\n\tc\r\nTo: y\r\n \r\n\r\nbody")
@example(b"\r\n\r\nbody")
def test_shortcut_gives_the_full_parse(raw: bytes) -> None:
    fast = parsing.parse_message(raw)
    full = full_parse(raw)
    assert shape(fast) == shape(full)
    assert summary_of(fast, raw) == summary_of(full, raw)
    assert parts_of(fast) == parts_of(full)


def test_plain_header_blocks_are_built_directly() -> None:
    """The direct construction is taken for plain blocks (and left for the others)."""
    policy = parsing.MemoPolicy()
    plain = b"From: a@example.org\r\nSubject: x\r\n  folded\r\n\tagain\r\nX-Empty:\r\n\r\n"
    built = parsing._plain_header_block(plain, policy)
    assert built is not None
    assert list(built.raw_items()) == [("From", "a@example.org"),
                                       ("Subject", "x\r\n  folded\r\n\tagain"), ("X-Empty", "")]
    for head in (b" x\r\nA: b\r\n\r\n", b"A: b\r\nnot a field\r\n\r\n",
                 b"From a@b Mon\r\n\r\n", b"\r\n\r\n", b":x\r\n\r\n"):
        assert parsing._plain_header_block(head, policy) is None, head


def test_shortcut_is_taken_for_a_plain_message_only() -> None:
    plain = b"From: a@example.org\r\nSubject: x\r\n\r\nhello\r\n.dots\r\n"
    assert parsing._parse_single_part(plain) is not None
    for raw in (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B--\r\n",
                b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx",
                b"Subject: x\nTo: y\r\n\r\nbody", b"Subject: x\r\nnot a header\r\n\r\nbody",
                b"\r\nSubject: x\r\n\r\nbody", b"Subject: no body at all\r\n"):
        assert parsing._parse_single_part(raw) is None, raw
