"""The summary's field texts, computed without header objects where the value is plain, equal
the texts of ``email.policy.default``'s header objects; the whole summary equals the one the
former ``summary_of`` (transcribed below: ``str(msg.get(name))`` per field, ``get_filename`` and
``get_content_disposition`` per part) gives, on generated values and messages.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

from hypothesis import example, given, settings
from hypothesis import strategies as st

from missive.mime import summary
from missive.mime.parsing import MemoPolicy, parse_message
from missive.mime.summary import MessageSummary, _addresses, _ids, _plain_text, summary_of


def former_text(msg: EmailMessage, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # noqa: BLE001
        return ""
    return str(value)[:2000] if value is not None else ""


def former_summary_of(msg: EmailMessage, raw: bytes) -> MessageSummary:
    """``summary_of`` before the field fast paths (the oracle)."""
    froms = _addresses(msg, "From")
    s = MessageSummary(size=len(raw))
    s.subject = former_text(msg, "Subject")
    if froms:
        s.from_name, s.from_addr = froms[0]
    s.to = [a for _, a in _addresses(msg, "To")][:50]
    s.cc = [a for _, a in _addresses(msg, "Cc")][:50]
    s.date = former_text(msg, "Date")
    mid = _ids(former_text(msg, "Message-ID"))
    s.message_id = mid[0] if mid else ""
    irt = _ids(former_text(msg, "In-Reply-To"))
    s.in_reply_to = irt[0] if irt else ""
    s.references = _ids(former_text(msg, "References"))
    s.disposition_notification_to = former_text(msg, "Disposition-Notification-To")
    for key in ("X-MSS-CODECDA", "X-MSS-INS", "X-MSS-NIL", "X-MSS-MES"):
        value = former_text(msg, key)
        if value:
            s.mss[key] = value
    try:
        for part in msg.walk():
            if part.is_multipart():
                continue
            filename = part.get_filename()
            if filename or part.get_content_disposition() == "attachment":
                s.has_attachments = True
                if filename:
                    s.attachment_names.append(str(filename)[:255])
    except Exception:  # noqa: BLE001
        s.has_attachments = s.has_attachments or b"filename" in raw.lower()
    return s


def _date_text(moment: datetime) -> str:
    return email.utils.format_datetime(moment)


DATES = st.one_of(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)),
                                            timezone(timedelta(hours=-9, minutes=-30))])
                 ).map(_date_text),
    st.sampled_from([
        "Mon, 23 Nov 2026 10:00:00 +0000", "23 Nov 2026 10:00 GMT", "Mon, 23 Nov 26 10:00:00 EST",
        "Mon, 23 Nov 2026 10:00:00 -0000", "Mon, 31 Feb 2026 10:00:00 +0000", "tomorrow",
        "Mon, 23 Nov 2026 10:00:00 +9999", "", " ", "Mon,  23  Nov 2026\r\n 10:00:00 +0100",
        "Mon, 23 Nov 2026 25:61:61 +0000", "2026-11-23T10:00:00Z", "Mon, 23 Nov 2026 10:00:00",
        "=?utf-8?q?Mon=2C_23_Nov?=", "Mon, 23 Nov 2026 10:00:00 +0000 (CET)",
    ]),
)
ATOMS = st.text(alphabet="abcXYZ019!#$%&'*+-/=?^_`{|}~", min_size=1, max_size=6)
IDS = st.one_of(
    st.tuples(st.lists(ATOMS, min_size=1, max_size=3), st.lists(ATOMS, min_size=1, max_size=3))
    .map(lambda t: "<" + ".".join(t[0]) + "@" + ".".join(t[1]) + ">"),
    st.sampled_from(["<a@b>", "<a..b@c>", "<.a@b>", "<a@b.>", "<a@[1.2.3.4]>", "a@b", "<a@b",
                     " <a@b> ", "<a@b> (comment)", "<\"q\"@b>", "<a b@c>", "<a@b><c@d>", "",
                     "<a@b>\r\n", "<é@b>"]),
)
TEXTS = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=40),
    st.sampled_from(["=?utf-8?q?r=C3=A9sum=C3=A9?=", "a =?utf-8?b?w6k=?= b", "=?bad?q?x",
                     "x=?utf-8?q?y?=z", "  lead and trail  ", "fold\r\n\tline", "\udcc3\udca9",
                     "tab\there", "FIN", "[FIN] Fin de la conversation", "a\x00b\x7f"]),
)
NAMES = st.sampled_from(["Subject", "SUBJECT", "Date", "date", "Message-ID", "In-Reply-To",
                         "References", "X-MSS-MES", "Disposition-Notification-To", "Resent-Date",
                         "Orig-Date", "Comments", "Content-ID"])


@settings(max_examples=3000, deadline=None)
@given(NAMES, st.one_of(DATES, IDS, TEXTS))
@example("Date", "Mon, 23 Nov 2026 10:00:00 +0000")
@example("Message-ID", "<bench1.2@bench.test>")
@example("Subject", "Bench 1")
def test_plain_text_is_the_header_object_text(name: str, raw: str) -> None:
    for policy in (email.policy.default, MemoPolicy()):
        fast = _plain_text(policy, name, raw)
        if fast is not None:
            assert fast == str(policy.header_fetch_parse(name, raw))


def test_plain_text_covers_the_common_values() -> None:
    policy = email.policy.default
    assert _plain_text(policy, "Date", "Mon, 23 Nov 2026 10:00:00 +0000") is not None
    assert _plain_text(policy, "Message-ID", "<bench1.2@bench.test>") is not None
    assert _plain_text(policy, "Subject", "Bench 1") == "Bench 1"
    assert _plain_text(policy, "Subject", "=?utf-8?q?x?=") is None
    assert _plain_text(email.policy.compat32, "Subject", "x") is None


HEADER_LINES = st.one_of(
    st.tuples(NAMES, st.one_of(DATES, IDS, TEXTS)).map(lambda t: f"{t[0]}: {t[1]}"),
    st.sampled_from(["From: Dr A <a@x.org>", "To: b@y.org, c@z.org", "MIME-Version: 1.0",
                     "Content-Type: text/plain; charset=utf-8",
                     "Content-Type: application/pdf; name=\"cr.pdf\"",
                     "Content-Type: text/plain; NAME=a.exe", "Content-Type: text/plain; x=filename",
                     "Content-Disposition: attachment", "Content-Disposition: inline; filename=a",
                     "Content-Type: multipart/mixed; boundary=B", "X-MSS-INS: 1.2.250.1.213",
                     "Content-Type: text/plain; name*=UTF-8''r%C3%A9s.pdf"]),
)
BODIES = st.sampled_from([
    b"hello\r\n",
    b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B\r\nContent-Disposition: attachment\r\n"
    b"\r\ny\r\n--B\r\nContent-Type: application/pdf; name=a.pdf\r\n\r\n%PDF\r\n--B--\r\n",
    b"--B\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\nx\r\n--B--\r\n",
    b"--B\r\n\r\nno headers\r\n--B--\r\n",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(HEADER_LINES, max_size=10), BODIES)
def test_summary_of_equals_the_former_function(lines: list[str], body: bytes) -> None:
    raw = "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")
    raw += b"\r\n" + body
    for msg in (parse_message(raw), email.message_from_bytes(raw, policy=email.policy.default)):
        assert isinstance(msg, EmailMessage)
        assert summary_of(msg, raw) == former_summary_of(msg, raw)


def test_text_helper_keeps_its_meaning() -> None:
    msg = parse_message(b"Subject: a\r\nsubject: b\r\nDate: x\r\n\r\n")
    assert summary._text(msg, "Subject") == "a" == former_text(msg, "Subject")
    assert summary._text(msg, "Missing") == ""
