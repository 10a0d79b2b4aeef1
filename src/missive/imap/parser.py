"""Pure IMAP command parser: one complete command (bytes, literals inlined) in, a typed command out.

RFC 3501 §9 (formal syntax), with the RFC 9051 clarifications, and the extensions we announce:
LITERAL+ (RFC 7888: ``{n+}``), UIDPLUS ``UID EXPUNGE`` (RFC 4315), MOVE (RFC 6851), ENABLE
(RFC 5161), ID (RFC 2971), SPECIAL-USE ``CREATE … (USE (…))`` and ``LIST … RETURN
(SPECIAL-USE)`` (RFC 6154), CONDSTORE ``CHANGEDSINCE``/``UNCHANGEDSINCE``/``MODSEQ`` (RFC 7162).

The connection (``server.py``) reads a command line by line; when a line ends in a literal
announcement ``{n}`` / ``{n+}`` it reads exactly ``n`` octets and keeps reading, so the buffer
handed to :func:`parse_command` holds the whole command with each literal *inlined* after its
``{n}\\r\\n`` prefix. The parser never does I/O and never grows memory beyond its input.

Invariant: :func:`parse_command` returns a :class:`Command` or raises :class:`ParseError`, which
carries the tag (when one could be read) and a reason fit for ``tag BAD <reason>``. Any other
exception escaping is a bug (the hypothesis tests check this).

Mailbox names are decoded from modified UTF-7 (RFC 3501 §5.1.3) here, so commands carry Unicode
names; a name that is not valid modified UTF-7 is refused with a reason rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

from missive.imap import utf7

__all__ = [
    "Append",
    "Authenticate",
    "Command",
    "Copy",
    "Create",
    "Enable",
    "Fetch",
    "FetchAttr",
    "IdCmd",
    "ListCmd",
    "Login",
    "MailboxCmd",
    "ParseError",
    "Rename",
    "Search",
    "SearchKey",
    "Section",
    "Select",
    "SeqSet",
    "Simple",
    "Status",
    "Store",
    "UidExpunge",
    "parse_command",
]

LITERAL_RE = re.compile(rb"\{(\d{1,20})(\+?)\}\r\n\Z")
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0, 32)) | {127}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
MAX_NESTING = 32  # search-key parentheses / NOT chains; deeper input is refused (bounded stack)
MAX_NUMBER = 2**63 - 1


class ParseError(Exception):
    """A command that cannot be understood: answered ``tag BAD reason`` (or ``* BAD``)."""

    def __init__(self, reason: str, tag: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag


# --- command objects -------------------------------------------------------------------------


@dataclass(frozen=True)
class SeqSet:
    """A sequence set (RFC 3501 §9 ``sequence-set``); ``*`` is stored as ``0`` until resolved."""

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False  # "$" (RFC 5182 SEARCHRES): not supported, refused by the parser

    def resolve(self, largest: int) -> list[int]:
        """The members, ascending, capped to ``largest`` (``*`` is ``largest``). Ranges are
        unordered per RFC 3501 (``4:2`` is ``2:4``)."""
        out: set[int] = set()
        for lo, hi in self.ranges:
            a = largest if lo == 0 else lo
            b = largest if hi == 0 else hi
            if a > b:
                a, b = b, a
            if a > largest:
                continue
            out.update(range(max(a, 1), min(b, largest) + 1))
        return sorted(out)

    def contains(self, n: int, largest: int) -> bool:
        for lo, hi in self.ranges:
            a = largest if lo == 0 else lo
            b = largest if hi == 0 else hi
            if min(a, b) <= n <= max(a, b):
                return True
        return False


@dataclass(frozen=True)
class Section:
    """``section-spec``: part numbers then an optional text specifier (RFC 3501 §6.4.5)."""

    parts: tuple[int, ...] = ()
    text: str | None = None  # HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def spec(self) -> str:
        """The section as echoed in the FETCH response."""
        out = ".".join(str(p) for p in self.parts)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
            if self.fields:
                out += " (" + " ".join(self.fields) + ")"
        return out


@dataclass(frozen=True)
class FetchAttr:
    """One FETCH data item. ``name`` is upper case: FLAGS, UID, ENVELOPE, BODY, BODYSTRUCTURE,
    INTERNALDATE, RFC822, RFC822.HEADER, RFC822.TEXT, RFC822.SIZE, BINARY, BINARY.SIZE, MODSEQ.
    ``section`` is set for ``BODY[…]``/``BINARY[…]``; ``peek`` for the ``.PEEK`` forms."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False


@dataclass(frozen=True)
class SearchKey:
    """A search key node: ``op`` upper case, ``args`` its operands (sub-keys for AND/OR/NOT)."""

    op: str
    args: tuple[object, ...] = ()


@dataclass(frozen=True)
class Command:
    tag: str
    name: str


@dataclass(frozen=True)
class Simple(Command):
    """CAPABILITY NOOP LOGOUT STARTTLS CHECK CLOSE EXPUNGE UNSELECT IDLE NAMESPACE."""


@dataclass(frozen=True)
class Login(Command):
    user: str
    password: str


@dataclass(frozen=True)
class Authenticate(Command):
    mechanism: str
    initial: str | None  # SASL-IR initial response, base64 text ("=" means empty)


@dataclass(frozen=True)
class Select(Command):
    """SELECT / EXAMINE."""

    mailbox: str
    condstore: bool = False


@dataclass(frozen=True)
class MailboxCmd(Command):
    """DELETE SUBSCRIBE UNSUBSCRIBE."""

    mailbox: str


@dataclass(frozen=True)
class Create(Command):
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rename(Command):
    old: str
    new: str


@dataclass(frozen=True)
class ListCmd(Command):
    """LIST / LSUB (RFC 3501 §6.3.8-9) with RFC 5258 selection/return options we support."""

    reference: str
    patterns: tuple[str, ...]
    select_opts: tuple[str, ...] = ()
    return_opts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Append(Command):
    mailbox: str
    flags: tuple[str, ...]
    date: datetime | None
    message: bytes


@dataclass(frozen=True)
class Fetch(Command):
    seqset: SeqSet
    attrs: tuple[FetchAttr, ...]
    uid: bool = False
    changedsince: int | None = None


@dataclass(frozen=True)
class Store(Command):
    seqset: SeqSet
    mode: str  # "set" | "add" | "remove"
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False
    unchangedsince: int | None = None


@dataclass(frozen=True)
class Copy(Command):
    """COPY / MOVE (and their UID forms)."""

    seqset: SeqSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True)
class Search(Command):
    key: SearchKey
    charset: str | None = None
    uid: bool = False
    returns: tuple[str, ...] | None = None  # ESEARCH RETURN (…); None: classic SEARCH


@dataclass(frozen=True)
class UidExpunge(Command):
    seqset: SeqSet


@dataclass(frozen=True)
class Enable(Command):
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class IdCmd(Command):
    params: tuple[tuple[str, str | None], ...] | None = field(default=None)


# --- the reader ------------------------------------------------------------------------------


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def fail(self, reason: str) -> ParseError:
        return ParseError(reason)

    def peek(self) -> int:
        return self.buf[self.pos] if self.pos < len(self.buf) else -1

    def at_end(self) -> bool:
        return self.buf[self.pos:] in (b"\r\n", b"\n", b"")

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("unexpected text after the command arguments")

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise self.fail("expected a space")
        self.pos += 1

    def expect(self, token: bytes) -> None:
        if self.buf[self.pos:self.pos + len(token)].upper() != token.upper():
            raise self.fail(f"expected {token.decode()!r}")
        self.pos += len(token)

    def maybe(self, token: bytes) -> bool:
        if self.buf[self.pos:self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def _take(self, allowed_extra: bytes = b"") -> bytes:
        start = self.pos
        buf = self.buf
        extra = set(allowed_extra)
        n = len(buf)
        while self.pos < n:
            c = buf[self.pos]
            if c in _ATOM_SPECIALS and c not in extra:
                break
            self.pos += 1
        return buf[start:self.pos]

    def atom(self) -> str:
        token = self._take()
        if not token:
            raise self.fail("expected an atom")
        if not token.isascii():
            raise self.fail("8-bit characters are not allowed here")
        return token.decode("ascii")

    def number(self, nz: bool = False) -> int:
        start = self.pos
        while 0x30 <= self.peek() <= 0x39:
            self.pos += 1
        digits = self.buf[start:self.pos]
        if not digits or len(digits) > 19:
            raise self.fail("expected a number")
        value = int(digits)
        if value > MAX_NUMBER or (nz and value == 0):
            raise self.fail("number out of range")
        return value

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        buf = self.buf
        while True:
            if self.pos >= len(buf):
                raise self.fail("unterminated quoted string")
            c = buf[self.pos]
            if c == 0x22:
                self.pos += 1
                return bytes(out)
            if c == 0x5C:
                self.pos += 1
                if self.pos >= len(buf) or buf[self.pos] not in (0x22, 0x5C):
                    raise self.fail("only \\\" and \\\\ may be escaped in a quoted string")
                c = buf[self.pos]
            elif c in (0x0D, 0x0A, 0):
                raise self.fail("CR, LF or NUL inside a quoted string")
            out.append(c)
            self.pos += 1

    def literal(self) -> bytes:
        m = re.compile(rb"[~]?\{(\d{1,20})\+?\}\r\n").match(self.buf, self.pos)
        if m is None:
            raise self.fail("malformed literal")
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.buf):
            raise self.fail("literal shorter than announced")
        self.pos = start + size
        return self.buf[start:start + size]

    def string(self) -> bytes:
        c = self.peek()
        if c == 0x22:
            return self.quoted()
        if c in (0x7B, 0x7E):
            return self.literal()
        raise self.fail("expected a string")

    def astring(self) -> bytes:
        c = self.peek()
        if c in (0x22, 0x7B):
            return self.string()
        token = self._take(b"]")
        if not token:
            raise self.fail("expected a string or an atom")
        return token

    def text_astring(self, what: str) -> str:
        raw = self.astring()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None

    def nstring_or_nil(self) -> bytes | None:
        if self.maybe(b"NIL"):
            return None
        return self.string()

    def mailbox(self) -> str:
        raw = self.astring()
        return _mailbox_name(raw, self)

    def list_mailbox(self) -> str:
        c = self.peek()
        if c in (0x22, 0x7B):
            raw = self.string()
        else:
            raw = self._take(b"%*]")
            if not raw:
                raise self.fail("expected a mailbox pattern")
        return _mailbox_name(raw, self, inbox=False)

    def paren_list(self, item: str = "atom") -> list[str]:
        self.expect(b"(")
        out: list[str] = []
        if self.maybe(b")"):
            return out
        while True:
            out.append(self.flag() if item == "flag" else self.atom())
            if self.maybe(b")"):
                return out
            self.sp()

    def flag(self) -> str:
        if self.peek() == 0x5C:
            self.pos += 1
            if self.maybe(b"*"):
                return "\\*"
            name = self.atom()
            return "\\" + name
        return self.atom()

    def seqset(self) -> SeqSet:
        if self.maybe(b"$"):
            raise self.fail("$ (SEARCHRES) is not supported")
        ranges: list[tuple[int, int]] = []
        while True:
            lo = self._seq_number()
            hi = lo
            if self.maybe(b":"):
                hi = self._seq_number()
            ranges.append((lo, hi))
            if not self.maybe(b","):
                break
        return SeqSet(tuple(ranges))

    def _seq_number(self) -> int:
        if self.maybe(b"*"):
            return 0
        value = self.number(nz=True)
        if value > 2**32 - 1:
            raise self.fail("sequence number out of range")
        return value

    def date(self) -> date:
        quoted = self.maybe(b'"')
        m = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})").match(self.buf, self.pos)
        if m is None:
            raise self.fail("expected a date like 1-Feb-1994")
        self.pos = m.end()
        if quoted:
            self.expect(b'"')
        month = m.group(2).decode().upper()
        if month not in _MONTHS:
            raise self.fail("unknown month in date")
        try:
            return date(int(m.group(3)), _MONTHS.index(month) + 1, int(m.group(1)))
        except ValueError:
            raise self.fail("invalid date") from None

    def date_time(self) -> datetime:
        m = re.compile(rb'"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"'
                       ).match(self.buf, self.pos)
        if m is None:
            raise self.fail('expected a date-time like "17-Jul-1996 02:44:25 -0700"')
        self.pos = m.end()
        month = m.group(2).decode().upper()
        if month not in _MONTHS:
            raise self.fail("unknown month in date-time")
        sign = 1 if m.group(7) == b"+" else -1
        try:
            offset = timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
            tz = timezone(sign * offset)
            return datetime(int(m.group(3)), _MONTHS.index(month) + 1, int(m.group(1)),
                            int(m.group(4)), int(m.group(5)), int(m.group(6)), tzinfo=tz
                            ).astimezone(UTC)
        except ValueError:
            raise self.fail("invalid date-time") from None


def _mailbox_name(raw: bytes, r: _Reader, inbox: bool = True) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        # RFC 9051 §5.1: 8-bit names are UTF-8 only after ENABLE UTF8=ACCEPT (not announced).
        raise r.fail("mailbox names must be modified UTF-7 (RFC 3501 §5.1.3)") from None
    try:
        name = utf7.decode(text)
    except ValueError as exc:
        raise r.fail(f"invalid modified UTF-7 mailbox name: {exc}") from None
    if inbox and name.upper() == "INBOX":
        return "INBOX"
    return name


# --- commands --------------------------------------------------------------------------------

_SIMPLE = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "EXPUNGE",
                     "UNSELECT", "IDLE", "NAMESPACE"})
_STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN",
                           "HIGHESTMODSEQ", "SIZE", "DELETED"})
_FETCH_SIMPLE = frozenset({"FLAGS", "UID", "ENVELOPE", "BODYSTRUCTURE", "INTERNALDATE",
                           "RFC822", "RFC822.HEADER", "RFC822.TEXT", "RFC822.SIZE", "BODY",
                           "MODSEQ"})
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


def read_tag(buf: bytes) -> str | None:
    """The tag of a raw command, if one can be read (used to answer a refused command)."""
    r = _Reader(buf)
    token = r._take(b"]")
    if not token or not token.isascii() or b"+" in token or r.peek() != 0x20:
        return None
    return token.decode("ascii", "replace")


def parse_command(buf: bytes) -> Command:
    """Parse one complete command (see the module docstring)."""
    tag = read_tag(buf)
    if tag is None:
        raise ParseError("a command starts with a tag, a space and a command name")
    r = _Reader(buf)
    r.pos = len(tag.encode()) + 1
    try:
        name = r.atom().upper()
        return _dispatch(r, tag, name)
    except ParseError as exc:
        exc.tag = tag
        raise
    except RecursionError:
        raise ParseError("command nested too deeply", tag) from None


def _dispatch(r: _Reader, tag: str, name: str) -> Command:
    uid = False
    if name == "UID":
        r.sp()
        name = r.atom().upper()
        if name not in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE"):
            raise r.fail(f"UID {name} is not a command")
        uid = True
    if name in _SIMPLE and not uid:
        r.end()
        return Simple(tag, name)
    handler = _HANDLERS.get(name)
    if handler is None:
        raise r.fail(f"unknown command {name[:40]}")
    return handler(r, tag, name, uid)


def _login(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    user = r.text_astring("user name")
    r.sp()
    password = r.text_astring("password")
    r.end()
    return Login(tag, name, user, password)


def _authenticate(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mech = r.atom().upper()
    initial = None
    if r.maybe(b" "):
        token = r._take(b"=+")
        if not token:
            raise r.fail("expected a base64 initial response")
        initial = token.decode("ascii", "replace")
    r.end()
    return Authenticate(tag, name, mech, initial)


def _select(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    condstore = False
    if r.maybe(b" "):
        for param in r.paren_list():
            if param.upper() != "CONDSTORE":
                raise r.fail(f"unknown SELECT parameter {param[:40]}")
            condstore = True
    r.end()
    return Select(tag, name, mailbox, condstore)


def _mailbox_cmd(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.end()
    return MailboxCmd(tag, name, mailbox)


def _create(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    uses: tuple[str, ...] = ()
    if r.maybe(b" "):
        r.expect(b"(")
        r.expect(b"USE")
        r.sp()
        uses = tuple(r.paren_list("flag"))
        r.expect(b")")
    r.end()
    return Create(tag, name, mailbox, uses)


def _rename(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    old = r.mailbox()
    r.sp()
    new = r.mailbox()
    r.end()
    return Rename(tag, name, old, new)


def _list(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    select_opts: tuple[str, ...] = ()
    if name == "LIST" and r.peek() == 0x28:
        select_opts = tuple(o.upper() for o in r.paren_list())
        r.sp()
    reference = _mailbox_name(r.astring(), r, inbox=False)
    r.sp()
    if name == "LIST" and r.peek() == 0x28:
        r.pos += 1
        patterns = [r.list_mailbox()]
        while r.maybe(b" "):
            patterns.append(r.list_mailbox())
        r.expect(b")")
    else:
        patterns = [r.list_mailbox()]
    return_opts: tuple[str, ...] = ()
    if name == "LIST" and r.maybe(b" "):
        r.expect(b"RETURN")
        r.sp()
        return_opts = tuple(o.upper() for o in r.paren_list())
    r.end()
    return ListCmd(tag, name, reference, tuple(patterns), select_opts, return_opts)


def _status(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    items = tuple(i.upper() for i in r.paren_list())
    if not items:
        raise r.fail("STATUS needs at least one item")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise r.fail(f"unknown STATUS item {item[:40]}")
    r.end()
    return Status(tag, name, mailbox, items)


def _append(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    mailbox = r.mailbox()
    r.sp()
    flags: tuple[str, ...] = ()
    when = None
    if r.peek() == 0x28:
        flags = tuple(r.paren_list("flag"))
        r.sp()
    if r.peek() == 0x22:
        when = r.date_time()
        r.sp()
    if r.peek() not in (0x7B, 0x7E):
        raise r.fail("APPEND needs the message as a literal")
    message = r.literal()
    r.end()
    return Append(tag, name, mailbox, flags, when, message)


#: Parsed FETCH item lists by (UID form, the command's text after the sequence set): clients
#: send the same few lists over and over (``(BODY.PEEK[])``, ``(UID FLAGS)``, …) and reading
#: one again cost more than the rest of the command. Only successful parses are kept; the
#: items are immutable, so one tuple serves every command that wrote the same text.
_FETCH_ITEMS: dict[tuple[bool, bytes], tuple[tuple[FetchAttr, ...], int | None]] = {}
_FETCH_ITEMS_MAX = 512
_FETCH_ITEMS_TEXT = 256


def _fetch(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    seqset = r.seqset()
    r.sp()
    key = (uid, bytes(r.buf[r.pos:]))
    known = _FETCH_ITEMS.get(key)
    if known is not None:
        return Fetch(tag, name, seqset, known[0], uid, known[1])
    command = _fetch_items(r, tag, name, uid, seqset)
    if len(key[1]) <= _FETCH_ITEMS_TEXT:
        if len(_FETCH_ITEMS) >= _FETCH_ITEMS_MAX:
            _FETCH_ITEMS.clear()  # e.g. CHANGEDSINCE values: start over with what is sent now
        _FETCH_ITEMS[key] = (command.attrs, command.changedsince)
    return command


def _fetch_items(r: _Reader, tag: str, name: str, uid: bool, seqset: SeqSet) -> Fetch:
    """The rest of a FETCH command after its sequence set (see :func:`_fetch`)."""
    attrs: list[FetchAttr] = []
    if r.peek() == 0x28:
        r.pos += 1
        while True:
            attrs.append(_fetch_att(r))
            if r.maybe(b")"):
                break
            r.sp()
    else:
        save = r.pos
        word = r.atom().upper()
        if word in _MACROS:
            attrs = [FetchAttr(n) for n in _MACROS[word]]
        else:
            r.pos = save
            attrs.append(_fetch_att(r))
    changedsince = None
    if r.maybe(b" "):
        r.expect(b"(")
        r.expect(b"CHANGEDSINCE")
        r.sp()
        changedsince = r.number()
        r.expect(b")")
    r.end()
    if uid and not any(a.name == "UID" for a in attrs):
        attrs.insert(0, FetchAttr("UID"))
    return Fetch(tag, name, seqset, tuple(attrs), uid, changedsince)


def _fetch_att(r: _Reader) -> FetchAttr:
    start = r.pos
    while r.peek() not in (-1, 0x20, 0x28, 0x29, 0x5B, 0x0D, 0x0A):
        r.pos += 1
    word = r.buf[start:r.pos].decode("ascii", "replace").upper()
    peek = False
    if word in ("BODY.PEEK", "BINARY.PEEK"):
        peek = True
        word = word.split(".")[0]
    if word in ("BODY", "BINARY", "BINARY.SIZE") and r.peek() == 0x5B:
        r.pos += 1
        section = _section(r, binary=word != "BODY")
        r.expect(b"]")
        partial = None
        if word != "BINARY.SIZE" and r.maybe(b"<"):
            offset = r.number()
            r.expect(b".")
            length = r.number(nz=True)
            r.expect(b">")
            partial = (offset, length)
        return FetchAttr(word, section, partial, peek)
    if peek or word not in _FETCH_SIMPLE:
        raise r.fail(f"unknown FETCH item {word[:40] or '(empty)'}")
    return FetchAttr(word)


def _section(r: _Reader, binary: bool) -> Section:
    parts: list[int] = []
    while 0x30 <= r.peek() <= 0x39:
        parts.append(r.number(nz=True))
        if not r.maybe(b"."):
            break
        if not 0x30 <= r.peek() <= 0x39:
            break
    if r.peek() == 0x5D:
        if r.buf[r.pos - 1] == 0x2E:
            raise r.fail("section ends with a dot")
        return Section(tuple(parts))
    if binary:
        raise r.fail("BINARY sections are part numbers only")
    word = r._take(b"").decode("ascii", "replace").upper()
    if word == "MIME" and not parts:
        raise r.fail("MIME needs a part number")
    if word in ("HEADER", "TEXT", "MIME"):
        return Section(tuple(parts), word)
    if word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        r.sp()
        r.expect(b"(")
        fields = [r.astring().decode("ascii", "replace")]
        while r.maybe(b" "):
            fields.append(r.astring().decode("ascii", "replace"))
        r.expect(b")")
        return Section(tuple(parts), word, tuple(fields))
    raise r.fail(f"unknown section {word[:40]}")


def _store(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    seqset = r.seqset()
    r.sp()
    unchanged = None
    if r.maybe(b"(UNCHANGEDSINCE "):
        unchanged = r.number()
        r.expect(b")")
        r.sp()
    mode = "set"
    if r.maybe(b"+"):
        mode = "add"
    elif r.maybe(b"-"):
        mode = "remove"
    r.expect(b"FLAGS")
    silent = r.maybe(b".SILENT")
    r.sp()
    if r.peek() == 0x28:
        flags = r.paren_list("flag")
    else:
        flags = [r.flag()]
        while r.maybe(b" "):
            flags.append(r.flag())
    for f in flags:
        if f == "\\*" or (f.startswith("\\") and f.upper() == "\\RECENT"):
            raise r.fail(f"flag {f} cannot be stored")
    r.end()
    return Store(tag, name, seqset, mode, silent, tuple(flags), uid, unchanged)


def _copy(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    seqset = r.seqset()
    r.sp()
    mailbox = r.mailbox()
    r.end()
    return Copy(tag, name, seqset, mailbox, uid)


def _uid_expunge(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    seqset = r.seqset()
    r.end()
    return UidExpunge(tag, "UID EXPUNGE", seqset)


def _enable(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    caps: list[str] = []
    while r.maybe(b" "):
        caps.append(r.atom().upper())
    if not caps:
        raise r.fail("ENABLE needs at least one capability")
    r.end()
    return Enable(tag, name, tuple(caps))


def _id(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    if r.maybe(b"NIL"):
        r.end()
        return IdCmd(tag, name, None)
    r.expect(b"(")
    params: list[tuple[str, str | None]] = []
    while not r.maybe(b")"):
        if params:
            r.sp()
        key = r.string().decode("utf-8", "replace")
        r.sp()
        value = r.nstring_or_nil()
        params.append((key, None if value is None else value.decode("utf-8", "replace")))
        if len(params) > 30:
            raise r.fail("ID takes at most 30 field-value pairs (RFC 2971 §3.3)")
    r.end()
    return IdCmd(tag, name, tuple(params))


def _search(r: _Reader, tag: str, name: str, uid: bool) -> Command:
    r.sp()
    returns: tuple[str, ...] | None = None
    if r.maybe(b"RETURN "):
        returns = tuple(o.upper() for o in r.paren_list())
        for o in returns:
            if o not in ("MIN", "MAX", "ALL", "COUNT"):
                raise r.fail(f"unknown SEARCH RETURN option {o[:40]}")
        r.sp()
    charset = None
    if r.maybe(b"CHARSET "):
        charset = r.astring().decode("ascii", "replace").upper()
        r.sp()
    keys = [_search_key(r, charset, 0)]
    while r.maybe(b" "):
        keys.append(_search_key(r, charset, 0))
    r.end()
    key = keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    return Search(tag, name, key, charset, uid, returns)


_SEARCH_FLAGS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_SEARCH_TEXT = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_SEARCH_DATE = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})


def _search_string(r: _Reader, charset: str | None) -> str:
    raw = r.astring()
    try:
        return raw.decode("utf-8" if charset in (None, "UTF-8", "US-ASCII") else "ascii")
    except UnicodeDecodeError:
        raise r.fail("search string is not valid in the given charset") from None


def _search_key(r: _Reader, charset: str | None, depth: int) -> SearchKey:
    if depth > MAX_NESTING:
        raise r.fail("search keys nested too deeply")
    c = r.peek()
    if c == 0x28:
        r.pos += 1
        keys = [_search_key(r, charset, depth + 1)]
        while r.maybe(b" "):
            keys.append(_search_key(r, charset, depth + 1))
        r.expect(b")")
        return keys[0] if len(keys) == 1 else SearchKey("AND", tuple(keys))
    if 0x30 <= c <= 0x39 or c in (0x2A, 0x24):
        return SearchKey("SEQ", (r.seqset(),))
    word = r.atom().upper()
    if word in ("ALL", "NEW", "OLD", "RECENT"):
        return SearchKey(word)
    if word in _SEARCH_FLAGS:
        flag, present = _SEARCH_FLAGS[word]
        return SearchKey("FLAG", (flag, present))
    if word in ("KEYWORD", "UNKEYWORD"):
        r.sp()
        return SearchKey("FLAG", (r.atom(), word == "KEYWORD"))
    if word in _SEARCH_TEXT:
        r.sp()
        return SearchKey(word, (_search_string(r, charset),))
    if word == "HEADER":
        r.sp()
        field_name = _search_string(r, charset)
        r.sp()
        return SearchKey("HEADER", (field_name, _search_string(r, charset)))
    if word in _SEARCH_DATE:
        r.sp()
        return SearchKey(word, (r.date(),))
    if word in ("LARGER", "SMALLER"):
        r.sp()
        return SearchKey(word, (r.number(),))
    if word == "UID":
        r.sp()
        return SearchKey("UID", (r.seqset(),))
    if word == "NOT":
        r.sp()
        return SearchKey("NOT", (_search_key(r, charset, depth + 1),))
    if word == "OR":
        r.sp()
        a = _search_key(r, charset, depth + 1)
        r.sp()
        return SearchKey("OR", (a, _search_key(r, charset, depth + 1)))
    if word == "MODSEQ":
        r.sp()
        if r.peek() == 0x22:
            r.quoted()
            r.sp()
            r.atom()
            r.sp()
        return SearchKey("MODSEQ", (r.number(),))
    raise r.fail(f"unknown search key {word[:40]}")


_HANDLERS = {
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _create,
    "DELETE": _mailbox_cmd,
    "SUBSCRIBE": _mailbox_cmd,
    "UNSUBSCRIBE": _mailbox_cmd,
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _list,
    "STATUS": _status,
    "APPEND": _append,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "SEARCH": _search,
    "EXPUNGE": _uid_expunge,
    "ENABLE": _enable,
    "ID": _id,
}
