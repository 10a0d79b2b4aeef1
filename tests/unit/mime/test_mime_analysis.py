"""analyze: one parse gives exactly what summarize and list_parts give with email.policy.default.

The memo policy (missive.mime.parsing) must not change any result: each message below is read
by the reference path (the standard library's ``email.policy.default``, headers re-parsed on
every read) and by :func:`missive.mime.analyze`, and the results compared field by field.
"""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
from email.message import EmailMessage

import pytest

from missive.mime import analyze
from missive.mime.parsing import parse_message
from missive.mime.parts import list_parts, parts_of, sniff
from missive.mime.summary import summarize, summary_of

PDF = b"%PDF-1.7\n" + b"0" * 100


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("IHE_XDM/SUBSET01/METADATA.XML", "<?xml version='1.0'?><x/>")
        zf.writestr("run.exe", b"MZ" + b"\x00" * 100)
    return buf.getvalue()


def _rich() -> bytes:
    msg = EmailMessage()
    msg["From"] = '"Dupont, Marie (Dr)" <Marie.Dupont@Example.org>'
    msg["Sender"] = "secretariat@example.org"
    msg["To"] = "279035121518989@patient.example.org, Autre <autre@example.org>"
    msg["Cc"] = "=?utf-8?q?C=C3=A9line?= <celine@example.org>"
    msg["Subject"] = "=?utf-8?b?UsOpc3VsdGF0cyBkJ2FuYWx5c2U=?="
    msg["Message-ID"] = "<Abc.1@example.org>"
    msg["In-Reply-To"] = "<root@example.org>"
    msg["References"] = "<root@example.org> <mid@example.org>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg["X-MSS-MES"] = "FIN"
    msg["X-MSS-CODECDA"] = "11502-2"
    msg["Disposition-Notification-To"] = "marie.dupont@example.org"
    msg.set_content("Bonjour,\n\tvoici vos résultats.\n")
    msg.add_alternative("<p>Bonjour</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf",
                       filename="compte rendu é.pdf")
    msg.add_attachment(_zip(), maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    inner = EmailMessage()
    inner["Subject"] = "transféré"
    inner.set_content("texte")
    inner.add_attachment(b"#!/bin/sh\n", maintype="application", subtype="x-sh",
                         filename="a.sh")
    msg.add_attachment(inner)
    return msg.as_bytes()


MESSAGES = {
    "rich": _rich(),
    "plain": (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhello\r\n"),
    "rfc2231": (b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
                b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
                b"Content-Type: text/plain\r\n\r\nhi\r\n--XX\r\n"
                b"Content-Type: application/pdf; name=\"other.exe\"\r\n"
                b"Content-Disposition: attachment;\r\n"
                b" filename*0*=UTF-8''r%C3%A9sultat;\r\n filename*1=\".pdf\"\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjcK\r\n--XX--\r\n"),
    "repeated-headers": (b"From: a@example.org\r\nMIME-Version: 1.0\r\n"
                         b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
                         + b"".join(b"--B\r\nContent-Type: text/plain\r\n"
                                    b"Content-Disposition: attachment; filename=a.txt\r\n\r\n"
                                    b"x\r\n" for _ in range(5)) + b"--B--\r\n"),
    "malformed": (b"From: <<<@@>\r\nTo: ,,,\r\nSubject: =?bad?q?x\r\n"
                  b"Content-Type: multipart/mixed\r\nMessage-ID: no-brackets\r\n\r\n"
                  b"--\r\n\x00\x01binary\r\n"),
    "headers-only": b"Subject: nothing else",
    "empty": b"",
}


def _reference(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_analyze_matches_the_default_policy(name: str) -> None:
    raw = MESSAGES[name]
    summary, parts = analyze(raw)
    assert summary == summary_of(_reference(raw), raw)
    assert parts == parts_of(_reference(raw))


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_wrappers_match_analyze(name: str) -> None:
    raw = MESSAGES[name]
    assert (summarize(raw), list_parts(raw)) == analyze(raw)


def test_rich_message_is_read_fully() -> None:
    summary, parts = analyze(MESSAGES["rich"])
    assert summary.from_name == "Dupont, Marie (Dr)"
    assert summary.from_addr == "marie.dupont@example.org"
    assert summary.subject == "Résultats d'analyse"
    assert summary.cc == ["celine@example.org"]
    assert summary.references == ["<root@example.org>", "<mid@example.org>"]
    assert summary.mss == {"X-MSS-MES": "FIN", "X-MSS-CODECDA": "11502-2"}
    assert "compte rendu é.pdf" in summary.attachment_names
    names = {p.filename for p in parts}
    assert {"compte rendu é.pdf", "IHE_XDM.ZIP", "a.sh"} <= names
    zipped = next(p for p in parts if p.filename == "IHE_XDM.ZIP")
    assert zipped.zip_members is not None
    assert {m.name for m in zipped.zip_members} == {"IHE_XDM/SUBSET01/METADATA.XML", "run.exe"}


def test_memo_returns_one_header_object_per_field() -> None:
    msg = parse_message(MESSAGES["rich"])
    assert msg["Subject"] is msg["Subject"]
    assert msg.get_content_type() == "multipart/mixed"


@pytest.mark.parametrize(("head", "expected"), [
    (b"plain text\twith tab\r\nand lines\f", "text"),
    ("accentué, ½ et 東京\n".encode(), "text"),
    ("cut in a char é".encode()[:-1], "text"),
    (b"text with a NUL \x00 inside", None),
    (b"escape \x1b[31m", None),
    ("zero width \u200b space".encode(), None),
    ("line separator \u2028".encode(), None),
    (b"\xff\xfe not utf-8 at all, early on" + b"x" * 20, None),
])
def test_text_sniffing(head: bytes, expected: str | None) -> None:
    assert sniff(head) == expected


def test_repeated_address_and_mime_fields_are_shared_between_messages() -> None:
    first = parse_message(MESSAGES["rich"])
    second = parse_message(MESSAGES["rich"])
    assert first["From"] is second["From"]
    assert first["Content-Type"] is second["Content-Type"]
    # Per-message fields are never shared (each parse builds its own).
    assert first["Subject"] is not second["Subject"]
    assert first["Subject"] == second["Subject"]


def test_shared_fields_still_match_the_default_policy_message_after_message() -> None:
    base = b"Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n"
    for from_value in (b"A <a@example.org>", b'"A, B" <a@example.org>', b"a@example.org",
                       b"=?utf-8?q?=C3=89lise?= <a@example.org>", b"A <a@example.org>"):
        raw = b"From: " + from_value + b"\r\n" + base
        summary, parts = analyze(raw)
        assert summary == summary_of(_reference(raw), raw)
        assert parts == parts_of(_reference(raw))


def test_long_values_are_not_shared() -> None:
    long_to = ", ".join(f"p{i}@example.org" for i in range(100)).encode()
    raw = b"From: a@example.org\r\nTo: " + long_to + b"\r\n\r\nx\r\n"
    assert parse_message(raw)["To"] is not parse_message(raw)["To"]
    assert analyze(raw)[0] == summary_of(_reference(raw), raw)
