"""P12 line checks, RFC 3461 parameters, enhanced codes and the Received header."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from missive.mta import codes
from missive.mta.framing import has_bare_line_ending, is_strict_line
from missive.mta.params import (
    MAIL_DSN,
    RCPT_DSN,
    ParamError,
    parse_mail_dsn,
    parse_rcpt_dsn,
    split_dsn,
    xtext_decode,
)
from missive.mta.received import protocol, received_header
from missive.mta.session import TlsInfo


@pytest.mark.parametrize(("data", "bare"), [
    (b"a\r\nb\r\n", False),
    (b"", False),
    (b"a\nb\r\n", True),
    (b"a\rb\r\n", True),
    (b"a\n\r", True),
    (b"a\r\r\n\n", True),
    (b"a\r\n\x00.\r\n", False),
])
def test_bare_line_endings(data: bytes, bare: bool) -> None:
    assert has_bare_line_ending(data) is bare


def test_strict_command_lines() -> None:
    assert is_strict_line(b"NOOP\r\n")
    assert not is_strict_line(b"NOOP\n")
    assert not is_strict_line(b"NO\rOP\r\n")
    assert not is_strict_line(b"NOOP")


def test_split_dsn_keeps_case_and_other_params() -> None:
    rest, found = split_dsn("FROM:<a@b.test> SIZE=10 ret=hdrs ENVID=Ab+2B1", MAIL_DSN)
    assert rest == "FROM:<a@b.test> SIZE=10"
    assert found == {"RET": "hdrs", "ENVID": "Ab+2B1"}
    rest, found = split_dsn('TO:<"x y NOTIFY=NEVER"@b.test> NOTIFY=SUCCESS,DELAY', RCPT_DSN)
    assert rest == 'TO:<"x y NOTIFY=NEVER"@b.test>'
    assert found == {"NOTIFY": "SUCCESS,DELAY"}
    with pytest.raises(ParamError):
        split_dsn("FROM:<a@b.test> RET=FULL RET=HDRS", MAIL_DSN)


def test_dsn_values_checked() -> None:
    assert parse_mail_dsn({"RET": "full", "ENVID": "x"}).ret == "FULL"
    assert parse_rcpt_dsn({"NOTIFY": "never"}).notify == ["NEVER"]
    assert parse_rcpt_dsn({"ORCPT": "rfc822;a+2Bb@c.test"}).orcpt == "rfc822;a+2Bb@c.test"
    for bad in ({"RET": "ALL"}, {"ENVID": "x" * 101}, {"ENVID": "a=b"}):
        with pytest.raises(ParamError):
            parse_mail_dsn(bad)
    for bad in ({"NOTIFY": "NEVER,SUCCESS"}, {"NOTIFY": "SOMETIMES"}, {"ORCPT": "rfc822"},
                {"ORCPT": "rfc822;a b"}):
        with pytest.raises(ParamError):
            parse_rcpt_dsn(bad)
    assert xtext_decode("a+2Bb+3Dc") == "a+b=c"


@pytest.mark.parametrize(("given", "expected"), [
    ("250 OK", "250 2.0.0 OK"),
    ("503 Error: need MAIL command", "503 5.5.1 need MAIL command"),
    ("501 Syntax: HELO hostname", "501 5.5.4 Syntax: HELO hostname"),
    ("552 Error: Too much mail data", codes.MESSAGE_TOO_BIG),
    ('500 Error: command "XYZ" not recognized', "500 5.5.1 Command not recognized"),
    ("250 2.1.0 Sender OK", "250 2.1.0 Sender OK"),
    ("334 VXNlcm5hbWU6", "334 VXNlcm5hbWU6"),
    ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
])
def test_enhanced_codes(given: str, expected: str) -> None:
    assert codes.enhance(given) == expected


def test_received_header_shape_and_sanitising() -> None:
    tls = TlsInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", bits=256)
    header = received_header(
        helo="evil\r\nX-Injected: yes", client_ip="192.0.2.1", hostname="mail.test",
        queue_id="abc", tls=tls, esmtp=True, authenticated=True, utf8=False,
        recipients=["dr@x.test"], now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    text = header.decode()
    assert text.startswith("Received: from evilX-Injected:yes ([192.0.2.1])\r\n")
    assert "with ESMTPSA id abc" in text
    assert "\ttls TLS_AES_256_GCM_SHA384 (TLSv1.3, 256 bits)\r\n" in text
    assert text.endswith("\tfor <dr@x.test>; Fri, 02 Jan 2026 03:04:05 +0000\r\n")
    two = received_header(helo="h", client_ip="::1", hostname="m", queue_id="q", tls=None,
                          esmtp=True, authenticated=False, utf8=False,
                          recipients=["a@x.test", "b@x.test"]).decode()
    assert "[IPv6:::1]" in two and "for <" not in two and "with ESMTP id q;" in two


def test_protocol_keywords() -> None:
    assert protocol(esmtp=True, tls=True, auth=True, utf8=False) == "ESMTPSA"
    assert protocol(esmtp=True, tls=True, auth=False, utf8=True) == "UTF8SMTPS"
    assert protocol(esmtp=False, tls=False, auth=False, utf8=False) == "SMTP"
