"""P2's ``From:``/``Sender:`` view read from the message's one parse equals the view the front
took from a second, ``compat32`` parse of the header block (``read_headers``, transcribed below
as it was), on generated messages.

Messages reach the check only without bare CR or LF (P12 refuses them first), so the generated
ones use CRLF line ends; everything else that moves a parser is generated: folded lines,
RFC 2047 words (valid, malformed, unknown charsets), raw 8-bit bytes, fields repeated or
absent, a line that is not a field (which ends the header block), an empty first line,
multipart bodies (the full parse rather than the single-part shortcut).
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy

from hypothesis import example, given, settings
from hypothesis import strategies as st

from missive.mime.analysis import analyze_parsed
from missive.mta.framing import has_bare_line_ending
from missive.mta.handlers import HeaderView, header_view


def read_headers(raw: bytes) -> HeaderView:
    """The front's former view: a ``compat32`` parse of the header block (the oracle)."""
    try:
        head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        return HeaderView([_decoded(v) for v in msg.get_all("From") or []],
                          [_decoded(v) for v in msg.get_all("Sender") or []])
    except Exception:  # noqa: BLE001
        return HeaderView([], [])


def _decoded(value: object) -> str:
    text = str(value)
    if "=?" not in text:
        return " ".join(text.split())
    return " ".join(str(email.header.make_header(email.header.decode_header(text))).split())


VALUES = st.sampled_from([
    b"<a@example.org>", b"A <a@example.org>", b"\"Dr, A\" <a@example.org>",
    b"=?utf-8?q?Dr_Andr=C3=A9?= <a@example.org>", b"=?iso-8859-1?b?QW5kcuk=?= <a@x.org>",
    b"=?utf-8?q?broken <a@x.org>", b"=?x-unknown?q?abc?= <a@x.org>", b"=?utf-8?b?!!?= <a@x>",
    b"Andr\xc3\xa9 <a@x.org>", b"\xff\xfe <a@x.org>", b"a@x.org, b@y.org", b"", b" ",
    b"undisclosed-recipients:;", b"(comment) a@x.org", b"=?utf-8?q?a?= =?utf-8?q?b?= <c@d>",
])
FIELDS = st.sampled_from([b"From", b"Sender", b"from", b"SENDER", b"Reply-To", b"Subject"])
FOLD = st.sampled_from([b"", b"\r\n ", b"\r\n\t", b"\r\n  "])
OTHER = st.sampled_from([
    b"To: b@example.org", b"Subject: =?utf-8?q?r=C3=A9sum=C3=A9?=", b"MIME-Version: 1.0",
    b"Content-Type: text/plain; charset=utf-8", b"Content-Type: multipart/mixed; boundary=B",
    b"not a header line", b" continuation first", b"X-Empty:", b"X-Sp : v",
])
BODIES = st.sampled_from([
    b"", b"Hello\r\n", b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n",
    b"From: <inside@body>\r\n", b"\r\nFrom: <after@blank>\r\n",
])


@st.composite
def field_line(draw: st.DrawFn) -> bytes:
    name = draw(FIELDS)
    parts = draw(st.lists(VALUES, min_size=1, max_size=3))
    joined = draw(FOLD).join(parts) if len(parts) > 1 else parts[0]
    space = draw(st.sampled_from([b" ", b"", b"  ", b"\t"]))
    return name + b":" + space + joined


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.one_of(field_line(), OTHER), max_size=8))
    lead = draw(st.sampled_from([b"", b"\r\n"]))
    return lead + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + draw(BODIES)


@settings(max_examples=1500, deadline=None)
@given(messages())
@example(b"From: =?utf-8?q?Dr_Andr=C3=A9?= <a@x.org>\r\nSender: <s@x.org>\r\n\r\nbody\r\n")
@example(b"From: A\r\n <a@x.org>\r\nFrom: \xff <b@x>\r\n\r\n")
@example(b"Content-Type: multipart/mixed; boundary=B\r\nFrom: <a@x>\r\n\r\n--B\r\n\r\n--B--\r\n")
def test_header_view_matches_the_compat32_parse(raw: bytes) -> None:
    assert not has_bare_line_ending(raw)
    msg, _, _ = analyze_parsed(raw)
    assert header_view(msg) == read_headers(raw)


@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")))
@settings(max_examples=500, deadline=None)
def test_header_view_matches_on_arbitrary_bytes(raw: bytes) -> None:
    msg, _, _ = analyze_parsed(raw)
    assert header_view(msg) == read_headers(raw)
