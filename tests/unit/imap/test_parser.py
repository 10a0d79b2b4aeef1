"""Parser tables from RFC 3501/9051 examples, refusals with reasons, and fuzzing."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.imap import parser as p


def parse(line: str | bytes) -> p.Command:
    data = line.encode() if isinstance(line, str) else line
    return p.parse_command(data + b"\r\n")


@pytest.mark.parametrize("line,name", [
    ("a001 CAPABILITY", "CAPABILITY"), ("a002 NOOP", "NOOP"), ("A023 LOGOUT", "LOGOUT"),
    ("a001 starttls", "STARTTLS"), ("FXXZ CHECK", "CHECK"), ("A341 CLOSE", "CLOSE"),
    ("A202 EXPUNGE", "EXPUNGE"), ("a UNSELECT", "UNSELECT"), ("a IDLE", "IDLE"),
    ("A001 NAMESPACE", "NAMESPACE"),
])
def test_simple_commands(line: str, name: str) -> None:
    cmd = parse(line)
    assert isinstance(cmd, p.Simple)
    assert cmd.name == name
    assert cmd.tag == line.split()[0]


def test_login_quoted_atom_and_literal() -> None:
    cmd = parse('a001 LOGIN SMITH "sesame \\"x\\""')
    assert isinstance(cmd, p.Login)
    assert (cmd.user, cmd.password) == ("SMITH", 'sesame "x"')
    cmd = parse(b"a001 LOGIN {5}\r\nsmith {6+}\r\nsesame")
    assert isinstance(cmd, p.Login)
    assert (cmd.user, cmd.password) == ("smith", "sesame")


def test_authenticate_with_initial_response() -> None:
    cmd = parse("a AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0")
    assert isinstance(cmd, p.Authenticate)
    assert (cmd.mechanism, cmd.initial) == ("PLAIN", "AGZyZWQAc2VjcmV0")
    cmd = parse("a AUTHENTICATE external =")
    assert isinstance(cmd, p.Authenticate)
    assert (cmd.mechanism, cmd.initial) == ("EXTERNAL", "=")


def test_select_examine_and_inbox_case() -> None:
    cmd = parse("A142 SELECT inbox")
    assert isinstance(cmd, p.Select)
    assert cmd.mailbox == "INBOX"
    cmd = parse("A932 EXAMINE blurdybloop (CONDSTORE)")
    assert isinstance(cmd, p.Select)
    assert (cmd.name, cmd.mailbox, cmd.condstore) == ("EXAMINE", "blurdybloop", True)


def test_mailbox_names_are_modified_utf7() -> None:
    cmd = parse("a CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-")
    assert isinstance(cmd, p.Create)
    assert cmd.mailbox == "~peter/mail/台北/日本語"
    cmd = parse('a CREATE "Tom &- Jerry" (USE (\\Archive))')
    assert isinstance(cmd, p.Create)
    assert (cmd.mailbox, cmd.special_use) == ("Tom & Jerry", ("\\Archive",))


@pytest.mark.parametrize("line", ["a SELECT Tom&Jerry", "a SELECT &Jjo", "a SELECT &AGE-",
                                  b"a SELECT caf\xc3\xa9"])
def test_bad_mailbox_names_are_refused_with_a_reason(line: str | bytes) -> None:
    with pytest.raises(p.ParseError) as info:
        parse(line)
    assert info.value.tag == "a"
    assert "UTF-7" in info.value.reason


def test_list_forms() -> None:
    cmd = parse('A101 LIST "" ""')
    assert isinstance(cmd, p.ListCmd)
    assert (cmd.reference, cmd.patterns) == ("", ("",))
    cmd = parse("A202 LIST ~/Mail/ %")
    assert isinstance(cmd, p.ListCmd)
    assert (cmd.reference, cmd.patterns) == ("~/Mail/", ("%",))
    cmd = parse('t1 LIST (SPECIAL-USE) "" ("*" Sent) RETURN (SPECIAL-USE CHILDREN)')
    assert isinstance(cmd, p.ListCmd)
    assert cmd.select_opts == ("SPECIAL-USE",)
    assert cmd.patterns == ("*", "Sent")
    assert cmd.return_opts == ("SPECIAL-USE", "CHILDREN")
    cmd = parse('A002 LSUB "#news." "comp.mail.*"')
    assert isinstance(cmd, p.ListCmd)
    assert cmd.name == "LSUB"


def test_status() -> None:
    cmd = parse("A042 STATUS blurdybloop (UIDNEXT MESSAGES unseen)")
    assert isinstance(cmd, p.Status)
    assert cmd.items == ("UIDNEXT", "MESSAGES", "UNSEEN")
    with pytest.raises(p.ParseError, match="unknown STATUS item"):
        parse("A042 STATUS x (BOGUS)")


def test_append_rfc3501_example() -> None:
    msg = b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nSubject: x\r\n\r\nHello\r\n"
    cmd = parse(b'A003 APPEND saved-messages (\\Seen $Label) "05-Jan-1999 20:55:23 +0100" {%d}'
                % len(msg) + b"\r\n" + msg)
    assert isinstance(cmd, p.Append)
    assert cmd.flags == ("\\Seen", "$Label")
    assert cmd.date == datetime(1999, 1, 5, 19, 55, 23, tzinfo=UTC)
    assert cmd.message == msg
    cmd = parse(b"A003 APPEND INBOX {3+}\r\nabc")
    assert isinstance(cmd, p.Append)
    assert (cmd.flags, cmd.date, cmd.message) == ((), None, b"abc")


def test_fetch_items_sections_and_partials() -> None:
    cmd = parse("A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    assert isinstance(cmd, p.Fetch)
    assert cmd.seqset.resolve(10) == [2, 3, 4]
    assert cmd.attrs == (p.FetchAttr("FLAGS"), p.FetchAttr(
        "BODY", p.Section((), "HEADER.FIELDS", ("DATE", "FROM"))))
    cmd = parse("a FETCH 1 (BODY.PEEK[4.2.2.1]<0.2048> BODY[3.MIME] body[TEXT] RFC822.SIZE)")
    assert isinstance(cmd, p.Fetch)
    assert cmd.attrs[0] == p.FetchAttr("BODY", p.Section((4, 2, 2, 1)), (0, 2048), True)
    assert cmd.attrs[1].section == p.Section((3,), "MIME")
    assert cmd.attrs[2].section == p.Section((), "TEXT")
    cmd = parse("a UID FETCH 1:* (BODY.PEEK[1.HEADER.FIELDS.NOT (Subject)])")
    assert isinstance(cmd, p.Fetch)
    assert cmd.uid
    assert cmd.attrs[0].name == "UID"
    assert cmd.attrs[1].section == p.Section((1,), "HEADER.FIELDS.NOT", ("Subject",))


@pytest.mark.parametrize("macro,count", [("ALL", 4), ("FAST", 3), ("FULL", 5)])
def test_fetch_macros(macro: str, count: int) -> None:
    cmd = parse(f"a FETCH 1:* {macro}")
    assert isinstance(cmd, p.Fetch)
    assert len(cmd.attrs) == count


def test_sequence_sets() -> None:
    cmd = parse("a FETCH 1,3:5,9:*,*:20 FLAGS")
    assert isinstance(cmd, p.Fetch)
    assert cmd.seqset.resolve(12) == [1, 3, 4, 5, 9, 10, 11, 12]
    assert cmd.seqset.resolve(0) == []
    assert cmd.seqset.contains(12, 12)
    assert not cmd.seqset.contains(7, 12)


def test_store_forms() -> None:
    cmd = parse("A003 STORE 2:4 +FLAGS (\\Deleted)")
    assert isinstance(cmd, p.Store)
    assert (cmd.mode, cmd.silent, cmd.flags) == ("add", False, ("\\Deleted",))
    cmd = parse("A003 UID STORE 2 -FLAGS.SILENT \\Seen $Work")
    assert isinstance(cmd, p.Store)
    assert (cmd.mode, cmd.silent, cmd.flags, cmd.uid) == ("remove", True, ("\\Seen", "$Work"),
                                                          True)
    cmd = parse("a STORE 1 (UNCHANGEDSINCE 12) FLAGS ()")
    assert isinstance(cmd, p.Store)
    assert (cmd.mode, cmd.flags, cmd.unchangedsince) == ("set", (), 12)
    with pytest.raises(p.ParseError, match="cannot be stored"):
        parse("a STORE 1 +FLAGS (\\Recent)")


def test_copy_move_uid_expunge() -> None:
    cmd = parse("A003 COPY 2:4 MEETING")
    assert isinstance(cmd, p.Copy)
    assert (cmd.name, cmd.mailbox, cmd.uid) == ("COPY", "MEETING", False)
    cmd = parse("a UID MOVE 42:69 foo")
    assert isinstance(cmd, p.Copy)
    assert (cmd.name, cmd.uid) == ("MOVE", True)
    cmd = parse("A003 UID EXPUNGE 3000:3002")
    assert isinstance(cmd, p.UidExpunge)
    assert cmd.seqset.resolve(4000) == [3000, 3001, 3002]


def test_search_rfc_examples() -> None:
    cmd = parse('A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"')
    assert isinstance(cmd, p.Search)
    assert cmd.key == p.SearchKey("AND", (
        p.SearchKey("FLAG", ("\\Flagged", True)), p.SearchKey("SINCE", (date(1994, 2, 1),)),
        p.SearchKey("NOT", (p.SearchKey("FROM", ("Smith",)),))))
    cmd = parse('A283 SEARCH TEXT "string not in mailbox"')
    assert isinstance(cmd, p.Search)
    assert cmd.key == p.SearchKey("TEXT", ("string not in mailbox",))
    cmd = parse(b"A284 SEARCH CHARSET UTF-8 TEXT {6}\r\n\xd0\xa2\xd0\xb5\xd1\x81")
    assert isinstance(cmd, p.Search)
    assert cmd.charset == "UTF-8"
    assert cmd.key == p.SearchKey("TEXT", ("Тес",))
    cmd = parse("a UID SEARCH OR (SEEN UID 1:3) HEADER X-Mss-Ins O 2,4 LARGER 10")
    assert isinstance(cmd, p.Search)
    assert cmd.uid
    assert cmd.key.op == "AND"
    assert cmd.key.args[0] == p.SearchKey("OR", (
        p.SearchKey("AND", (p.SearchKey("FLAG", ("\\Seen", True)),
                            p.SearchKey("UID", (p.SeqSet(((1, 3),)),)))),
        p.SearchKey("HEADER", ("X-Mss-Ins", "O"))))


def test_enable_id() -> None:
    cmd = parse("t1 ENABLE CONDSTORE X-GOOD-IDEA")
    assert isinstance(cmd, p.Enable)
    assert cmd.capabilities == ("CONDSTORE", "X-GOOD-IDEA")
    cmd = parse('a023 ID ("name" "sodr" "version" NIL)')
    assert isinstance(cmd, p.IdCmd)
    assert cmd.params == (("name", "sodr"), ("version", None))
    cmd = parse("a023 ID NIL")
    assert isinstance(cmd, p.IdCmd)
    assert cmd.params is None


@pytest.mark.parametrize("line,reason", [
    ("", "tag"), ("a", "tag"), ("+ NOOP", "tag"), ("a FROB", "unknown command"),
    ("a NOOP extra", "unexpected text"), ("a FETCH 0 FLAGS", "out of range"),
    ("a FETCH 1 (FLAGS", "expected"), ("a FETCH 1 BODY.PEEK", "unknown FETCH item"),
    ("a FETCH 1 BODY[MIME]", "MIME needs a part"), ("a FETCH 1 BODY[1.]", "dot"),
    ('a LOGIN "unterminated', "quoted"), ("a LOGIN {10}\r\nabc", "shorter"),
    ("a SEARCH BOGUS", "unknown search key"), ("a SEARCH " + "NOT " * 40 + "ALL", "deeply"),
    ("a SEARCH SINCE 31-Feb-2020", "invalid date"), ("a UID NOOP", "not a command"),
    ("a SEARCH $", "SEARCHRES"), ("a ENABLE", "at least one"),
])
def test_refusals_carry_a_reason(line: str, reason: str) -> None:
    with pytest.raises(p.ParseError) as info:
        parse(line)
    assert reason in info.value.reason


def test_read_tag() -> None:
    assert p.read_tag(b"abc NOOP\r\n") == "abc"
    assert p.read_tag(b"+abc NOOP\r\n") is None
    assert p.read_tag(b"\r\n") is None


_WORDS = st.sampled_from([
    "FETCH", "UID", "STORE", "SEARCH", "LOGIN", "SELECT", "APPEND", "LIST", "STATUS", "BODY[",
    "BODY.PEEK[", "HEADER.FIELDS", "(", ")", "[", "]", "<", ">", "{", "}", "{3}\r\n", "{2+}\r\n",
    '"', "\\", "*", "%", "1:*", "2,4", " ", "NOT", "OR", "FLAGS", "+FLAGS", "\\Seen", "&", "-",
    "CHARSET", "UTF-8", "1.2.MIME", "TEXT", "NIL", "\r\n", "\x00", "é", "ENABLE", "ID",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_WORDS, max_size=30).map("".join))
def test_fuzz_token_soup_only_raises_parse_error(text: str) -> None:
    try:
        p.parse_command(b"t " + text.encode() + b"\r\n")
    except p.ParseError as exc:
        assert exc.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes_only_raises_parse_error(data: bytes) -> None:
    try:
        p.parse_command(data)
    except p.ParseError as exc:
        assert exc.reason


_FETCH_WORDS = st.sampled_from([
    "BODY.PEEK[]", "BODY[]", "BODY[1.2.MIME]", "BODY.PEEK[HEADER.FIELDS (From To)]", "UID",
    "FLAGS", "ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "INTERNALDATE", "BINARY[1]", "<0.10>",
    "MODSEQ", "ALL", "FAST", " ", "(", ")", "(CHANGEDSINCE 5)", "BOGUS", "\r\n", "[", "]",
])


def _parse(line: bytes) -> tuple[str, p.Command | None]:
    try:
        return "ok", p.parse_command(line)
    except p.ParseError as exc:
        return f"error {exc.reason} {exc.tag}", None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["FETCH 1:* ", "UID FETCH 4,7:9 ", "FETCH 12 "]),
       st.lists(_FETCH_WORDS, max_size=8).map("".join), st.sampled_from(["a1", "b22"]))
def test_fetch_item_lists_parse_the_same_from_the_memo(head: str, items: str, tag: str) -> None:
    """FETCH item lists are kept parsed by their text (parser._FETCH_ITEMS): a command
    answered from the memo equals the same command parsed afresh, and errors are never kept."""
    line = f"{tag} {head}{items}\r\n".encode()
    p._FETCH_ITEMS.clear()
    fresh = _parse(line)
    again = _parse(line)  # from the memo when the first parse succeeded
    assert again == fresh
    assert bool(p._FETCH_ITEMS) == (fresh[0] == "ok")  # errors are never kept
    other = _parse(line.replace(b"1:*", b"5").replace(b"4,7:9", b"3"))  # same items
    p._FETCH_ITEMS.clear()
    assert other == _parse(line.replace(b"1:*", b"5").replace(b"4,7:9", b"3"))


def test_fetch_item_memo_is_bounded_and_keyed_by_uid_form() -> None:
    p._FETCH_ITEMS.clear()
    plain = p.parse_command(b"a FETCH 1 (FLAGS)\r\n")
    uid = p.parse_command(b"a UID FETCH 1 (FLAGS)\r\n")
    assert isinstance(plain, p.Fetch) and isinstance(uid, p.Fetch)
    assert [a.name for a in plain.attrs] == ["FLAGS"]
    assert [a.name for a in uid.attrs] == ["UID", "FLAGS"]  # RFC 3501 §6.4.8: UID implied
    for i in range(p._FETCH_ITEMS_MAX + 50):
        p.parse_command(b"a FETCH 1 (BODY.PEEK[%d])\r\n" % (i + 1))
    assert len(p._FETCH_ITEMS) <= p._FETCH_ITEMS_MAX
    assert (False, b"(BODY.PEEK[%d])\r\n" % (p._FETCH_ITEMS_MAX + 50)) in p._FETCH_ITEMS
    long_items = b"(" + b" ".join([b"FLAGS"] * 60) + b")"
    p._FETCH_ITEMS.clear()
    p.parse_command(b"a FETCH 1 " + long_items + b"\r\n")
    assert not p._FETCH_ITEMS  # longer than _FETCH_ITEMS_TEXT: not kept
