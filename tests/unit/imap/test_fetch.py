"""ENVELOPE, BODYSTRUCTURE and section extraction over exact message octets (RFC 3501 §6.4.5)."""

from __future__ import annotations

import email.parser
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.imap import encode, utf7
from missive.imap.fetch import bodystructure, envelope, parse_mime, partial, section_bytes
from missive.imap.parser import Section

INNER = (b"From: Bob <bob@example.org>\r\nSubject: inner\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\n\r\nforwarded body\r\n")
RAW = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    b"Sender: a@x.example, b@y.example\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"To: mooch@owatagu.siam.edu.example,\r\n \"Other, One\" <o@x.example>\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    b"--XX\r\n"
    b"Content-Type: application/pdf; name=\"r.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=\"r.pdf\"\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--XX\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n" + INNER +
    b"--XX--\r\n"
    b"epilogue\r\n"
)


@pytest.fixture
def root():
    return parse_mime(RAW)


def test_tree_shape(root) -> None:
    assert root.ctype == "multipart/mixed"
    assert [c.ctype for c in root.children] == ["text/plain", "application/pdf",
                                               "message/rfc822"]
    assert root.children[2].message is not None
    assert root.header + root.body == RAW


@pytest.mark.parametrize("section,expected", [
    (Section(), RAW),
    (Section((1,)), b"Hello Joe, do you think we can meet at 3:30 tomorrow?"),
    (Section((1,), "MIME"), b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"),
    (Section((2,)), b"JVBERi0xLjQK"),
    (Section((3,)), INNER[:-2]),  # the CRLF before "--XX" is the delimiter's
    (Section((3,), "HEADER"), INNER.split(b"\r\n\r\n")[0] + b"\r\n\r\n"),
    (Section((3,), "TEXT"), b"forwarded body"),
    (Section((3, 1)), b"forwarded body"),
    (Section((), "HEADER.FIELDS", ("subject", "TO")),
     b"Subject: =?utf-8?q?caf=C3=A9?=\r\nTo: mooch@owatagu.siam.edu.example,\r\n"
     b" \"Other, One\" <o@x.example>\r\n\r\n"),
    (Section((3,), "HEADER.FIELDS.NOT", ("Content-Type",)),
     b"From: Bob <bob@example.org>\r\nSubject: inner\r\n\r\n"),
    (Section((9,)), None),
    (Section((1, 1)), None),
])
def test_sections(root, section: Section, expected: bytes | None) -> None:
    assert section_bytes(root, RAW, section) == expected


def test_header_and_text_of_the_message(root) -> None:
    header = section_bytes(root, RAW, Section((), "HEADER"))
    text = section_bytes(root, RAW, Section((), "TEXT"))
    assert header is not None and text is not None
    assert header.endswith(b"\r\n\r\n")
    assert header + text == RAW


def test_single_part_message_part_one_is_its_body() -> None:
    raw = b"Subject: x\r\n\r\nbody\r\n"
    root = parse_mime(raw)
    assert section_bytes(root, raw, Section((1,))) == b"body\r\n"
    assert section_bytes(root, raw, Section((2,))) is None
    assert bodystructure(root) == (b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 6 1'
                                   b" NIL NIL NIL NIL)")


def test_partial() -> None:
    assert partial(b"0123456789", (2, 3)) == b"234"
    assert partial(b"0123456789", (20, 3)) == b""
    assert partial(b"0123", None) == b"0123"


def test_envelope(root) -> None:
    env = envelope(root)
    assert env.startswith(b'("Mon, 7 Feb 1994 21:52:25 -0800" "=?utf-8?q?caf=C3=A9?=" '
                          b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
                          b'((NIL NIL "a" "x.example")(NIL NIL "b" "y.example")) '
                          b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
                          b'((NIL NIL "mooch" "owatagu.siam.edu.example")'
                          b'("Other, One" NIL "o" "x.example")) NIL NIL NIL '
                          b'"<B27397-0100000@Blurdybloop.example>")')


def test_bodystructure(root) -> None:
    bs = bodystructure(root)
    assert bs.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 53 1 NIL NIL '
                         b'NIL NIL)("APPLICATION" "PDF" ("NAME" "r.pdf") NIL NIL "BASE64" 12 '
                         b'NIL ("ATTACHMENT" ("FILENAME" "r.pdf")) NIL NIL)("MESSAGE" "RFC822" '
                         b'NIL NIL NIL "7BIT" 102 (NIL "inner" (("Bob" NIL "bob" "example.org"))')
    assert bs.endswith(b' "MIXED" ("BOUNDARY" "XX") NIL NIL NIL)')
    body = bodystructure(root, extended=False)
    assert body.endswith(b' "MIXED")')
    assert b"ATTACHMENT" not in body
    assert bs.count(b"(") == bs.count(b")")


def test_malformed_mime_never_raises() -> None:
    for raw in (b"", b"\r\n", b"Content-Type: multipart/mixed\r\n\r\nno boundary",
                b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nunterminated",
                b"Content-Type: message/rfc822\r\n\r\n", b"\xff\xfe: \x00\r\n\r\n\xff"):
        root = parse_mime(raw)
        bs = bodystructure(root)
        assert bs.count(b"(") >= 1
        envelope(root)


def test_deep_nesting_is_bounded() -> None:
    raw = b"Subject: x\r\n\r\nend\r\n"
    for _ in range(200):
        raw = b"Content-Type: message/rfc822\r\n\r\n" + raw
    bodystructure(parse_mime(raw))


@pytest.mark.parametrize("name", ["INBOX", "Tom & Jerry", "Été/Reçus", "日本語", "a~b"])
def test_utf7_round_trip(name: str) -> None:
    assert utf7.decode(utf7.encode(name)) == name


@pytest.mark.parametrize("value,wire", [
    ("plain", b'"plain"'), ('q"uo\\te', b'"q\\"uo\\\\te"'), ("caf\u00e9", b"{5}\r\ncaf\xc3\xa9"),
    ("line\r\nbreak", b"{11}\r\nline\r\nbreak"),
])
def test_strings(value: str, wire: bytes) -> None:
    assert encode.quoted_or_literal(value) == wire


def test_astring_and_nil() -> None:
    assert encode.astring("INBOX") == b"INBOX"
    assert encode.astring("a b") == b'"a b"'
    assert encode.astring("NIL") == b'"NIL"'
    assert encode.nstring(None) == b"NIL"


_STDLIB_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@pytest.mark.parametrize("header,fast", [
    (b"From: A <a@b.example>\r\nTo: c@d.example,\r\n e@f.example\r\n"
     b"Subject:  hi \r\n\tthere\r\n\r\n", True),
    (b"From: a@b\nX:\n\n", True),  # LF line ends, empty value
    (b"A: 1\r\nA: 2\r\nContent-Type: text/plain; charset=\"utf-8\"; format=flowed\r\n\r\n",
     True),
    (b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\n", True),
    (b"X-Empty:\r\n folded\r\n\r\n", True),
    (b"Subject: no line end after the header\r\n", True),
    (b"\r\n", True),
    (b"From someone@example Mon Nov 23 2026\r\nX: y\r\n\r\n", False),  # Unix From line
    (b"X: caf\xc3\xa9\r\n\r\n", False),  # 8-bit: the stdlib keeps it as unknown-8bit
    (b" continuation first\r\nX: y\r\n\r\n", False),
    (b"X: a\rb\r\n\r\n", False),  # a bare CR is a line end for the stdlib parser
    (b"not a field\r\nX: y\r\n\r\n", False),
    (b"X: y", False),
])
def test_parse_fields_reads_what_the_standard_parser_reads(header: bytes, fast: bool) -> None:
    from missive.imap.fetch import _simple_fields, parse_fields

    assert (_simple_fields(header) is not None) is fast
    ours, stdlib = parse_fields(header), _STDLIB_HEADERS.parsebytes(header)
    assert [(k, str(v)) for k, v in ours.items()] == [(k, str(v)) for k, v in stdlib.items()]
    assert ours.get_params() == stdlib.get_params()


def test_envelope_group_syntax() -> None:
    """RFC 3501 §7.4.2: a group is (NIL NIL "name" NIL), its members, then (NIL NIL NIL NIL);
    an empty group (``Undisclosed recipients:;``) is the two markers alone."""
    raw = (b"From: a@example.org\r\n"
           b"To: grp: x@example.org, \"Y; Z\" <y@example.org>;, z@example.org\r\n"
           b"Cc: Undisclosed recipients:;\r\n"
           b"Bcc: \"Not: a group\" <n@example.org>, <@route:r@example.org>\r\n\r\n")
    env = envelope(parse_mime(raw))
    assert (b' ((NIL NIL "grp" NIL)(NIL NIL "x" "example.org")("Y; Z" NIL "y" "example.org")'
            b'(NIL NIL NIL NIL)(NIL NIL "z" "example.org"))'
            b' ((NIL NIL "Undisclosed recipients" NIL)(NIL NIL NIL NIL))'
            b' (("Not: a group" NIL "n" "example.org")(NIL NIL "r" "example.org")) ') in env


def test_header_and_text_need_a_message_part() -> None:
    """RFC 3501 §6.4.5: ``n.HEADER``/``n.TEXT`` apply to MESSAGE/RFC822 parts only; part 1 of a
    single-part message is its body, which has no header of its own."""
    raw = b"Subject: x\r\nTo: y@example.org\r\n\r\nbody\r\n"
    root = parse_mime(raw)
    assert section_bytes(root, raw, Section((1,), "HEADER")) == b""
    assert section_bytes(root, raw, Section((1,), "TEXT")) == b""
    header = b"Subject: x\r\nTo: y@example.org\r\n\r\n"
    assert section_bytes(root, raw, Section((1,), "MIME")) == header
    assert section_bytes(root, raw, Section((), "HEADER")) == header


def test_multipart_without_parts_stays_a_multipart() -> None:
    raw = (b"Subject: x\r\nContent-Type: multipart/mixed; boundary=e\r\n\r\n"
           b"no parts, only a preamble\r\n")
    root = parse_mime(raw)
    assert bodystructure(root) == (b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 0 0 '
                                   b'NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "e") NIL NIL NIL)')
    assert section_bytes(root, raw, Section((1,))) == b""


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b":", b" ", b"\n\n", b"\r\n\r\n",
                                 b"\n\r\n", b"\r\r"]), max_size=24).map(b"".join))
def test_split_header_cuts_where_the_regular_expression_did(raw: bytes) -> None:
    """split_header finds the first empty line with ``bytes.find``; the cut is the one the
    regular expression ``_BLANK`` (the earlier implementation) gives."""
    from missive.imap import fetch

    def reference(raw: bytes) -> tuple[bytes, bytes]:
        if raw.startswith((b"\r\n", b"\n")):
            cut = 2 if raw.startswith(b"\r\n") else 1
            return raw[:cut], raw[cut:]
        m = fetch._BLANK.search(raw)
        return (raw, b"") if m is None else (raw[:m.end()], raw[m.end():])

    assert fetch.split_header(raw) == reference(raw)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='ab <>@,."()\\:;[] \t', max_size=40))
def test_address_specials_test_is_the_character_scan(text: str) -> None:
    from missive.imap import fetch

    assert (fetch._SPECIALS.search(text) is not None) == any(c in text for c in '"()\\:;[]')
