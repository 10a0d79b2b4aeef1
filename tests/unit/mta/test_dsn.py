"""RFC 3464 DSN builder and the RFC 3461 NOTIFY / RET decisions."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from missive.mta import dsn

ORIGINAL = (
    b"From: Dr A <a@one.test>\r\n"
    b"To: b@two.test\r\n"
    b"Subject: Compte rendu\r\n"
    b"Message-ID: <orig-1@one.test>\r\n"
    b"\r\n"
    b"Contenu m\xc3\xa9dical confidentiel.\r\n"
)
NOW = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _failed(address: str = "b@two.test", **kw: object) -> dsn.RecipientReport:
    fields: dict[str, object] = {"address": address, "action": "failed", "status": "5.1.1",
                                 "remote_mta": "mx.two.test",
                                 "diagnostic": "550 5.1.1 no such mailbox",
                                 "last_attempt": NOW}
    fields.update(kw)
    return dsn.RecipientReport(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("notify", "kind", "expected"), [
    ((), "FAILURE", True),          # RFC 3461 §4.1 default: FAILURE,DELAY (our choice)
    ((), "DELAY", True),
    ((), "SUCCESS", False),
    (("NEVER",), "FAILURE", False),
    (("NEVER",), "DELAY", False),
    (("SUCCESS",), "FAILURE", False),
    (("SUCCESS",), "SUCCESS", True),
    (("failure", "delay"), "DELAY", True),
    (("FAILURE",), "DELAY", False),
])
def test_notify_decisions(notify: tuple[str, ...], kind: dsn.NotifyKind, expected: bool) -> None:
    assert dsn.wants(notify, kind) is expected


def test_failure_report_structure() -> None:
    raw = dsn.build_dsn([_failed(orcpt="rfc822;B+2Bx@two.test")], original=ORIGINAL,
                        to="a@one.test", reporting_mta="mail.one.test",
                        postmaster="mailer-daemon@one.test", now=NOW, envid="ENV+2D42",
                        arrival=NOW - timedelta(minutes=5))
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = _parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert "Non distribué" in str(msg["Subject"])
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    human = parts[0].get_content()
    assert "b@two.test" in human and "550 5.1.1" in human
    assert "confidentiel" not in human  # never the content in the explanation
    blocks = [b for b in raw.split(b"\r\n\r\n") if b.startswith((b"Reporting-MTA",
                                                                 b"Original-Recipient"))]
    per_message = blocks[0].decode()
    assert "Reporting-MTA: dns; mail.one.test" in per_message
    assert "Original-Envelope-Id: ENV-42" in per_message
    assert "Arrival-Date:" in per_message
    per_rcpt = blocks[1].decode()
    # ORCPT and ENVID are shown xtext-decoded.
    for line in ("Original-Recipient: rfc822; B+x@two.test", "Final-Recipient: rfc822; b@two.test",
                 "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx.two.test",
                 "Diagnostic-Code: smtp; 550 5.1.1 no such mailbox", "Last-Attempt-Date:"):
        assert line in per_rcpt
    # RET absent + a failure: the whole original comes back.
    assert ORIGINAL in raw


def test_ret_hdrs_returns_headers_only() -> None:
    raw = dsn.build_dsn([_failed()], original=ORIGINAL, to="a@one.test",
                        reporting_mta="mail.one.test", postmaster="m@one.test", now=NOW,
                        ret="HDRS")
    msg = _parse(raw)
    parts = list(msg.iter_parts())
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert b"Subject: Compte rendu" in raw
    assert b"confidentiel" not in raw


def test_delay_report_returns_headers_even_with_ret_full() -> None:
    until = NOW + timedelta(days=5)
    report = dsn.RecipientReport("b@two.test", "delayed", "4.4.1", last_attempt=NOW,
                                 will_retry_until=until, diagnostic="connection refused")
    raw = dsn.build_dsn([report], original=ORIGINAL, to="a@one.test",
                        reporting_mta="mail.one.test", postmaster="m@one.test", now=NOW,
                        ret="FULL")
    assert b"Action: delayed" in raw
    assert b"Will-Retry-Until:" in raw
    assert b"confidentiel" not in raw  # RFC 3461 §4.3: no failure, headers only
    assert "retard" in str(_parse(raw)["Subject"]).lower()


def test_mixed_report_lists_each_recipient() -> None:
    reports = [_failed("x@two.test"),
               dsn.RecipientReport("y@two.test", "delayed", "4.2.2", last_attempt=NOW)]
    raw = dsn.build_dsn(reports, original=ORIGINAL, to="a@one.test",
                        reporting_mta="mail.one.test", postmaster="m@one.test", now=NOW)
    assert raw.count(b"Final-Recipient:") == 2
    assert b"Final-Recipient: rfc822; x@two.test\r\nAction: failed" in raw
    assert b"Final-Recipient: rfc822; y@two.test\r\nAction: delayed" in raw


def test_utf8_address_uses_global_delivery_status() -> None:
    raw = dsn.build_dsn([_failed("élodie@two.test")], original=ORIGINAL, to="a@one.test",
                        reporting_mta="mail.one.test", postmaster="m@one.test", now=NOW)
    assert b"message/global-delivery-status" in raw
    assert "Final-Recipient: utf-8; élodie@two.test".encode() in raw


def test_diagnostic_is_one_printable_line() -> None:
    raw = dsn.build_dsn([_failed(diagnostic="550 5.1.1 bad\r\nInjected: header")],
                        original=ORIGINAL, to="a@one.test", reporting_mta="m.one.test",
                        postmaster="m@one.test", now=NOW)
    assert b"\r\nInjected: header" not in raw


def test_rejects_bad_status_and_empty_reports() -> None:
    with pytest.raises(ValueError, match="RFC 3463"):
        dsn.RecipientReport("b@two.test", "failed", "550")
    with pytest.raises(ValueError, match="at least one"):
        dsn.build_dsn([], original=ORIGINAL, to="a@one.test", reporting_mta="m",
                      postmaster="m@one.test", now=NOW)


def test_header_section() -> None:
    assert dsn.header_section(ORIGINAL).endswith(b"<orig-1@one.test>\r\n")
    assert dsn.header_section(b"A: b\n\nbody") == b"A: b\n"
