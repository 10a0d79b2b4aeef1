"""RFC-exact responses clients depend on, over TLS: SELECT/EXAMINE data (RFC 3501 §6.3.1/§6.3.2,
RFC 9051 §6.3.2), BODYSTRUCTURE and sections of a multipart/alternative + attachment +
message/rfc822 message (RFC 3501 §6.4.5, §7.4.2), SEARCH edge cases (§6.4.4, §6.4.8, §9), and
EXPUNGE renumbering seen by two sessions (§7.4.1).

Dovecot's imaptest is not packaged by Debian; these cases were checked against Dovecot 2.3's
answers to the same commands (see docs/imap.md, "Compliance") and the RFC text.
"""

from __future__ import annotations

import asyncio
import re

from test_imap_clients import Env, env, message  # noqa: F401 - fixture
from test_imap_condstore import connect

ALT_ATTACH_FWD = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
    b"Subject: afternoon meeting\r\n"
    b"To: mooch@owatagu.siam.edu.example\r\n"
    b"Cc: Undisclosed recipients:;\r\n"
    b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=alt\r\n"
    b"\r\n"
    b"--alt\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Caf=C3=A9 at 3:30?\r\n"
    b"--alt\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Caf&eacute; at 3:30?</p>\r\n"
    b"--alt--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf; name=\"report.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: Bob <bob@example.org>\r\n"
    b"Subject: inner\r\n"
    b"\r\n"
    b"forwarded text\r\n"
    b"--outer--\r\n")


async def test_select_and_examine_untagged_data(env: Env) -> None:  # noqa: F811
    for i in range(3):
        await env.deliver(message(i))
    c = await connect(env)
    out = await c.cmd("STORE 1 +FLAGS (\\Seen)")  # not selected: BAD, no state change
    assert out[-1].startswith("t2 BAD")
    out = await c.cmd("SELECT INBOX")
    # RFC 3501 §6.3.1 / RFC 9051 §6.3.2: required untagged data, then [READ-WRITE].
    assert out[0] == "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
    assert "* 3 EXISTS" in out and "* 0 RECENT" in out
    assert "* OK [UNSEEN 1] first unseen" in out
    uidvalidity = next(m.group(1) for x in out if (m := re.match(
        r"\* OK \[UIDVALIDITY (\d+)\]", x)))
    assert "* OK [UIDNEXT 4] predicted next UID" in out
    assert any(x.startswith("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen "
                            "\\Draft \\*)]") for x in out)
    assert out[-1].startswith("t3 OK [READ-WRITE]")
    await c.cmd("STORE 1 +FLAGS.SILENT (\\Seen)")
    out = await c.cmd("EXAMINE INBOX")
    assert "* OK [UNSEEN 2] first unseen" in out  # the first unseen message's number
    assert "* OK [PERMANENTFLAGS ()] read-only" in out
    assert f"* OK [UIDVALIDITY {uidvalidity}] UIDs valid" in out  # stable across selects
    assert out[-1].startswith("t5 OK [READ-ONLY]")
    # A failed SELECT leaves no mailbox selected (RFC 3501 §6.3.1).
    out = await c.cmd("SELECT Nowhere")
    assert out[-1].startswith("t6 NO [NONEXISTENT]")
    assert (await c.cmd("FETCH 1 (FLAGS)"))[-1].startswith("t7 BAD")
    c.writer.close()


async def test_bodystructure_of_alternative_attachment_and_forwarded_message(
        env: Env) -> None:  # noqa: F811
    await env.deliver(ALT_ATTACH_FWD)
    c = await connect(env)
    await c.cmd("EXAMINE INBOX")
    out = await c.cmd("FETCH 1 (BODYSTRUCTURE ENVELOPE)")
    line = out[0]
    # Sizes are the octets between the part's header and the CRLF that starts the next
    # delimiter (RFC 2046 §5.1.1); text lines are counted likewise.
    plain = b"Caf=C3=A9 at 3:30?"
    html = b"<p>Caf&eacute; at 3:30?</p>"
    inner = b"From: Bob <bob@example.org>\r\nSubject: inner\r\n\r\nforwarded text"
    inner_lines = inner.count(b"\n") + 1  # the last line has no line end of its own
    alternative = (
        f'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" {len(plain)} 1 '
        f'NIL NIL NIL NIL)("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" {len(html)} 1 '
        f'NIL NIL NIL NIL) "ALTERNATIVE" ("BOUNDARY" "alt") NIL NIL NIL)')
    attachment = ('("APPLICATION" "PDF" ("NAME" "report.pdf") NIL NIL "BASE64" 12 NIL '
                  '("ATTACHMENT" ("FILENAME" "report.pdf")) NIL NIL)')
    forwarded = (
        f'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" {len(inner)} '
        '(NIL "inner" (("Bob" NIL "bob" "example.org")) (("Bob" NIL "bob" "example.org")) '
        '(("Bob" NIL "bob" "example.org")) NIL NIL NIL NIL NIL) '
        '("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 14 1 NIL NIL NIL NIL) '
        f'{inner_lines} NIL NIL NIL NIL)')
    expected = (f"BODYSTRUCTURE ({alternative}{attachment}{forwarded} "
                f'"MIXED" ("BOUNDARY" "outer") NIL NIL NIL)')
    assert expected in line, line
    # RFC 3501 §7.4.2: an empty group is its start marker then the end marker.
    assert ' ((NIL NIL "Undisclosed recipients" NIL)(NIL NIL NIL NIL)) NIL NIL' in line
    c.writer.close()


async def test_sections_of_nested_parts(env: Env) -> None:  # noqa: F811
    await env.deliver(ALT_ATTACH_FWD)

    def run() -> None:
        client = env.imaplib()

        def fetch(item: str) -> bytes | None:
            typ, data = client.fetch("1", f"({item})")
            assert typ == "OK", data
            first = data[0]
            return first[1] if isinstance(first, tuple) else None

        client.select("INBOX", readonly=True)
        assert fetch("BODY.PEEK[1.1]") == b"Caf=C3=A9 at 3:30?"
        assert fetch("BODY.PEEK[1.2.MIME]") == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        assert fetch("BINARY.PEEK[1.1]") == "Café at 3:30?".encode()
        assert fetch("BODY.PEEK[3.HEADER]") == (b"From: Bob <bob@example.org>\r\n"
                                                b"Subject: inner\r\n\r\n")
        assert fetch("BODY.PEEK[3.TEXT]") == b"forwarded text"
        assert fetch("BODY.PEEK[3.1]") == b"forwarded text"  # the part 1 of the inner message
        assert fetch("BODY.PEEK[3.HEADER.FIELDS (SUBJECT)]") == b"Subject: inner\r\n\r\n"
        assert fetch("BODY.PEEK[2]<4.4>") == b"Ri0x"
        assert fetch("BODY.PEEK[2.HEADER]") == b""  # a PDF has no header (RFC 3501 §6.4.5)
        client.logout()

    await asyncio.to_thread(run)


async def test_search_edge_cases(env: Env) -> None:  # noqa: F811
    c = await connect(env)
    await c.cmd("SELECT INBOX")
    assert (await c.cmd("SEARCH ALL"))[0] == "* SEARCH"  # empty result: no trailing space
    for i in range(1, 6):
        await env.deliver(message(i, subject="Résumé" if i == 3 else None))
    await c.cmd("NOOP")
    assert (await c.cmd("SEARCH 2:4 NOT 3"))[0] == "* SEARCH 2 4"
    assert (await c.cmd("SEARCH OR 1 5 UNSEEN"))[0] == "* SEARCH 1 5"
    # RFC 3501 §6.4.8: "UID range of 559:* always includes the UID of the last message".
    assert (await c.cmd("UID SEARCH UID 100:*"))[0] == "* SEARCH 5"
    # §6.4.4: a zero-length HEADER string matches every message having that field.
    assert (await c.cmd('SEARCH HEADER Message-ID ""'))[0] == "* SEARCH 1 2 3 4 5"
    assert (await c.cmd('SEARCH HEADER X-Absent ""'))[0] == "* SEARCH"
    # Encoded words are decoded (RFC 2047) and matching ignores case.
    assert (await c.cmd('SEARCH CHARSET UTF-8 SUBJECT "résumé"'))[0] == "* SEARCH 3"
    out = await c.cmd("SEARCH CHARSET X-UNKNOWN SUBJECT a")
    assert out[-1].split(" ", 2)[1:2] == ["NO"] and "[BADCHARSET" in out[-1]
    assert (await c.cmd("SEARCH SMALLER 1"))[0] == "* SEARCH"
    c.writer.close()


async def test_expunge_renumbering_seen_by_two_sessions(env: Env) -> None:  # noqa: F811
    for i in range(1, 8):
        await env.deliver(message(i))
    a, b = await connect(env), await connect(env)
    await a.cmd("SELECT INBOX")
    await b.cmd("SELECT INBOX")
    out = await a.cmd("STORE 3,4,7 +FLAGS (\\Deleted)")
    assert out[:-1] == ["* 3 FETCH (FLAGS (\\Deleted))", "* 4 FETCH (FLAGS (\\Deleted))",
                        "* 7 FETCH (FLAGS (\\Deleted))"]
    out = await a.cmd("EXPUNGE")
    # RFC 3501 §7.4.1: each EXPUNGE renumbers the following messages at once, so deleting
    # 3, 4 and 7 of 7 is announced as 3, 3, 5.
    assert out[:-1] == ["* 3 EXPUNGE", "* 3 EXPUNGE", "* 5 EXPUNGE"]
    out = await b.cmd("FETCH 1:* (UID)")  # never EXPUNGE during a non-UID FETCH
    assert not any("EXPUNGE" in x for x in out)
    out = await b.cmd("NOOP")
    assert [x for x in out if "EXPUNGE" in x] == ["* 3 EXPUNGE", "* 3 EXPUNGE",
                                                  "* 5 EXPUNGE"]
    out = await b.cmd("FETCH 1:* (UID)")
    assert out[:-1] == [f"* {n} FETCH (UID {u})" for n, u in enumerate((1, 2, 5, 6), 1)]
    await env.deliver(message(8))
    out = await b.cmd("NOOP")
    assert "* 5 EXISTS" in out and "* 1 RECENT" in out
    # A message delivered between two commands is announced, then answered, within the next.
    out = await a.cmd("UID FETCH 8 (FLAGS)")
    assert out[:-1] == ["* 5 EXISTS", "* 1 RECENT", "* 5 FETCH (UID 8 FLAGS (\\Recent))"]
    a.writer.close()
    b.writer.close()
