"""SEARCH evaluation (RFC 3501 §6.4.4, RFC 9051 §6.4.4) over decrypted messages, in the session.

There is no clear-text index (C1), so keys that look at content (HEADER, FROM, SUBJECT, BODY,
TEXT, SENT*) read and decrypt the messages within the authenticated session. Keys that only need
metadata (flags, UIDs, sizes, internal dates) never decrypt anything: :func:`needs_content` tells
the session whether to fetch bodies at all.

Matching is case-insensitive substring matching on Unicode text (``str.casefold``), after
RFC 2047 decoding of header fields and transfer decoding of text parts, as RFC 3501 asks
("case-insensitive substring", charset applied). Dates without time and time zone (§6.4.4):
BEFORE/ON/SINCE compare the internal date, SENT* the ``Date:`` header in its own zone.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from email.message import Message

from missive.imap.fetch import parse_fields, split_header
from missive.imap.parser import SearchKey, SeqSet
from missive.mailbox.store import MessageInfo

__all__ = ["Candidate", "HeaderColumn", "HeaderFields", "column_query", "header_fields",
           "header_predicate", "matches", "needs_body",
           "needs_content"]

_CONTENT_OPS = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "HEADER",
                          "SENTBEFORE", "SENTON", "SENTSINCE"})


def needs_content(key: SearchKey) -> bool:
    if key.op in _CONTENT_OPS:
        return True
    return any(isinstance(a, SearchKey) and needs_content(a) for a in key.args)


def needs_body(key: SearchKey) -> bool:
    """Keys that read the body (BODY, TEXT); the others need at most the header fields."""
    if key.op in ("BODY", "TEXT"):
        return True
    return any(isinstance(a, SearchKey) and needs_body(a) for a in key.args)


class HeaderFields:
    """A message's header fields as (lower-case name, raw unfolded value), in order, with the
    values looked up by name and case-folded for matching built on first use.

    Small and immutable for a given UID, so the mailbox's sessions keep them
    (:class:`missive.imap.cache.MailboxCache`) to answer header searches again without
    decrypting; the lookups are kept too, so a repeated ``SEARCH HEADER``/``FROM``/``SUBJECT``
    costs a dictionary lookup and a substring test per message, not a parse."""

    __slots__ = ("_by_name", "_folded", "fields")

    def __init__(self, fields: tuple[tuple[str, str], ...]) -> None:
        self.fields = fields
        self._by_name: dict[str, list[str]] | None = None
        self._folded: dict[tuple[str, bool], tuple[str, ...]] = {}

    def raw(self, name: str) -> list[str]:
        """The raw values of the fields called ``name`` (lower case), in order."""
        if self._by_name is None:
            by_name: dict[str, list[str]] = {}
            for k, v in self.fields:
                by_name.setdefault(k, []).append(v)
            self._by_name = by_name
        return self._by_name.get(name, [])

    def folded(self, name: str, with_raw: bool) -> tuple[str, ...]:
        """The RFC 2047-decoded values of ``name`` (and, ``with_raw``, the raw ones too),
        case-folded for RFC 3501 §6.4.4's case-insensitive substring match."""
        key = (name, with_raw)
        got = self._folded.get(key)
        if got is None:
            raw = self.raw(name)
            values = [_decode_header(v) for v in raw] + (raw if with_raw else [])
            got = tuple(v.casefold() for v in values)
            self._folded[key] = got
        return got


def header_fields(raw: bytes) -> HeaderFields:
    try:
        msg = parse_fields(split_header(raw)[0])
        return HeaderFields(tuple((k.lower(), re.sub(r"\r?\n(?=[ \t])", "", str(v)))
                                  for k, v in msg.items()))
    except Exception:  # noqa: BLE001 - unparsable header: nothing to match
        return HeaderFields(())


class Candidate:
    """One message under test: its sequence number, metadata, and (lazily) its flags and parsed
    content. A plain class with slots: a SEARCH builds one per message of the folder."""

    __slots__ = ("_body", "_flags", "_flags_of", "_msg", "head", "info", "raw", "seq")

    def __init__(self, seq: int, info: MessageInfo, flags: frozenset[str] | None = None,
                 raw: bytes | None = None, head: HeaderFields | None = None, *,
                 flags_of: Callable[[int], frozenset[str]] | None = None) -> None:
        self.seq = seq
        self.info = info
        self._flags = flags
        self._flags_of = flags_of
        self.raw = raw
        self.head = head
        self._msg: Message | None = None
        self._body: str | None = None

    @property
    def flags(self) -> frozenset[str]:
        """The message's flags (with the session's ``\\Recent``), computed when a key asks."""
        if self._flags is None:
            self._flags = self._flags_of(self.info.uid) if self._flags_of else self.info.flags
        return self._flags

    @property
    def message(self) -> Message:
        if self._msg is None:
            self._msg = email.message_from_bytes(self.raw or b"", policy=email.policy.compat32)
        return self._msg

    @property
    def headers(self) -> HeaderFields:
        """The header fields only (header keys need not parse the body)."""
        if self.head is None:
            self.head = header_fields(self.raw or b"")
        return self.head

    def raw_values(self, name: str) -> list[str]:
        return self.headers.raw(name.lower())

    def header_values(self, name: str) -> list[str]:
        return [_decode_header(v) for v in self.raw_values(name)]

    def headers_text(self) -> str:
        return "\n".join(f"{k}: {_decode_header(v)}" for k, v in self.headers.fields)

    def body_text(self) -> str:
        if self._body is None:
            chunks: list[str] = []
            try:
                for part in self.message.walk():
                    if part.is_multipart():
                        continue
                    if part.get_content_maintype() not in ("text", "message"):
                        continue
                    payload = part.get_payload(decode=True)
                    if isinstance(payload, bytes):
                        charset = part.get_content_charset() or "utf-8"
                        try:
                            chunks.append(payload.decode(charset, "replace"))
                        except LookupError:
                            chunks.append(payload.decode("utf-8", "replace"))
            except Exception:  # noqa: BLE001 - malformed MIME: search the raw text
                chunks.append((self.raw or b"").decode("utf-8", "replace"))
            self._body = "\n".join(chunks).casefold()
        return self._body


def _decode_header(value: object) -> str:
    text = str(value)
    if "=?" not in text:  # RFC 2047 §2: no encoded word, nothing to decode (the common case)
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # noqa: BLE001 - malformed encoded words: use the raw text
        return text


def _sent_date(c: Candidate) -> date | None:
    values = c.raw_values("Date")
    if not values:
        return None
    value = values[0]
    try:
        return email.utils.parsedate_to_datetime(str(value)).date()
    except (TypeError, ValueError, IndexError):
        return None


def _contains(haystacks: list[str], needle: str) -> bool:
    n = needle.casefold()
    return any(n in h.casefold() for h in haystacks)


@dataclass(frozen=True)
class Context:
    largest_seq: int
    largest_uid: int
    recent: frozenset[int]


_HEADER_OPS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc", "SUBJECT": "subject"}


def header_predicate(key: SearchKey) -> Callable[[HeaderFields], bool] | None:
    """The key as a test of header fields alone, when it is one (HEADER, FROM, TO, CC, BCC,
    SUBJECT, combined with AND, OR, NOT); None otherwise. Same answers as :func:`matches`,
    without building a :class:`Candidate` per message: what clients search most often
    (Message-ID lookups, sender, subject) costs a lookup and a substring test per message."""
    op, args = key.op, key.args
    if op in _HEADER_OPS:
        name, needle = _HEADER_OPS[op], str(args[0]).casefold()
        return lambda h: any(needle in v for v in h.folded(name, True))
    if op == "HEADER":
        name, needle = str(args[0]).lower(), str(args[1]).casefold()
        return lambda h: any(needle in v for v in h.folded(name, False))
    if op == "ALL":
        return lambda h: True
    if op in ("AND", "OR", "NOT"):
        subs = [header_predicate(a) if isinstance(a, SearchKey) else None for a in args]
        if not subs or any(f is None for f in subs):
            return None
        tests = [f for f in subs if f is not None]
        if op == "NOT":
            return lambda h: not tests[0](h)
        if op == "AND":
            return lambda h: all(t(h) for t in tests)
        return lambda h: any(t(h) for t in tests)
    return None


def column_query(key: SearchKey) -> tuple[str, bool, str] | None:
    """``(field name, with raw values, case-folded needle)`` when ``key`` is one header key
    that a :class:`HeaderColumn` answers (HEADER, FROM, TO, CC, BCC, SUBJECT), else None."""
    if key.op in _HEADER_OPS:
        name, with_raw, needle = _HEADER_OPS[key.op], True, str(key.args[0])
    elif key.op == "HEADER":
        name, with_raw, needle = str(key.args[0]).lower(), False, str(key.args[1])
    else:
        return None
    if "\0" in needle:
        return None
    return name, with_raw, needle.casefold()


class HeaderColumn:
    """One header field's case-folded values for every message of a selected view, joined
    into one string, so that a search for a substring of that field (``SEARCH HEADER
    Message-ID …``, ``FROM``, ``SUBJECT``: what clients send most) is one ``str.find`` run
    over the folder instead of a test per message. The same answers as :func:`matches`:
    every value ends with a NUL, which no needle here contains, so a match never spans two
    values or two messages. Built from the cached header fields; the session drops it when
    its view's messages change."""

    __slots__ = ("_present", "_starts", "_text")

    def __init__(self, heads: Sequence[HeaderFields], name: str, with_raw: bool) -> None:
        parts: list[str] = []
        starts: list[int] = []
        present: list[bool] = []
        pos = 0
        for head in heads:
            values = head.folded(name, with_raw)
            text = "".join(v + "\0" for v in values) or "\0"
            starts.append(pos)
            parts.append(text)
            present.append(bool(values))
            pos += len(text)
        self._text = "".join(parts)
        self._starts = starts
        self._present = present

    def find(self, needle: str) -> list[int]:
        """Indexes (0-based, in view order) of the messages with a value containing the
        case-folded ``needle``; an empty needle finds those that have the field."""
        if not needle:
            return [i for i, has in enumerate(self._present) if has]
        text, starts, found = self._text, self._starts, []
        pos = text.find(needle)
        while pos >= 0:
            i = bisect_right(starts, pos) - 1
            found.append(i)
            if i + 1 >= len(starts):
                break
            pos = text.find(needle, starts[i + 1])
        return found


def matches(key: SearchKey, c: Candidate, ctx: Context) -> bool:
    return _OPS[key.op](key.args, c, ctx)


def _and(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    return all(matches(k, c, ctx) for k in args if isinstance(k, SearchKey))


def _or(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    return any(matches(k, c, ctx) for k in args if isinstance(k, SearchKey))


def _not(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    key = args[0]
    return isinstance(key, SearchKey) and not matches(key, c, ctx)


def _flag(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    name, present = str(args[0]), bool(args[1])
    if name.startswith("\\"):
        has = name.lower() in {f.lower() for f in c.flags}
    else:
        has = name in c.flags
    return has == present


def _seq(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    s = args[0]
    return isinstance(s, SeqSet) and s.contains(c.seq, ctx.largest_seq)


def _uid(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    s = args[0]
    return isinstance(s, SeqSet) and s.contains(c.info.uid, ctx.largest_uid)


def _text_header(name: str) -> Callable[[tuple[object, ...], Candidate, Context], bool]:
    lower = name.lower()

    def check(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
        needle = str(args[0]).casefold()
        return any(needle in h for h in c.headers.folded(lower, True))
    return check


def _header(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    values = c.headers.folded(str(args[0]).lower(), False)
    if not values:
        return False
    needle = str(args[1]).casefold()
    return any(needle in h for h in values)


def _body(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    return str(args[0]).casefold() in c.body_text()


def _text(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
    return _contains([c.headers_text()], str(args[0])) or _body(args, c, ctx)


def _internal(cmp: Callable[[date, date], bool]) -> Callable[
        [tuple[object, ...], Candidate, Context], bool]:
    def check(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
        wanted = args[0]
        return isinstance(wanted, date) and cmp(c.info.internal_date.date(), wanted)
    return check


def _sent(cmp: Callable[[date, date], bool]) -> Callable[
        [tuple[object, ...], Candidate, Context], bool]:
    def check(args: tuple[object, ...], c: Candidate, ctx: Context) -> bool:
        sent = _sent_date(c)
        wanted = args[0]
        return sent is not None and isinstance(wanted, date) and cmp(sent, wanted)
    return check


def _before(a: date, b: date) -> bool:
    return a < b


def _on(a: date, b: date) -> bool:
    return a == b


def _since(a: date, b: date) -> bool:
    return a >= b


def _recent(c: Candidate, ctx: Context) -> bool:
    return c.info.uid in ctx.recent


def _seen(c: Candidate) -> bool:
    return "\\Seen" in c.flags


def _number_arg(args: tuple[object, ...]) -> int:
    value = args[0]
    return value if isinstance(value, int) else 0


_OPS: dict[str, Callable[[tuple[object, ...], Candidate, Context], bool]] = {
    "ALL": lambda a, c, x: True,
    "AND": _and,
    "OR": _or,
    "NOT": _not,
    "FLAG": _flag,
    "SEQ": _seq,
    "UID": _uid,
    "NEW": lambda a, c, x: _recent(c, x) and not _seen(c),
    "OLD": lambda a, c, x: not _recent(c, x),
    "RECENT": lambda a, c, x: _recent(c, x),
    "LARGER": lambda a, c, x: c.info.size > _number_arg(a),
    "SMALLER": lambda a, c, x: c.info.size < _number_arg(a),
    "MODSEQ": lambda a, c, x: c.info.modseq >= _number_arg(a),
    "FROM": _text_header("From"),
    "TO": _text_header("To"),
    "CC": _text_header("Cc"),
    "BCC": _text_header("Bcc"),
    "SUBJECT": _text_header("Subject"),
    "HEADER": _header,
    "BODY": _body,
    "TEXT": _text,
    "BEFORE": _internal(_before),
    "ON": _internal(_on),
    "SINCE": _internal(_since),
    "SENTBEFORE": _sent(_before),
    "SENTON": _sent(_on),
    "SENTSINCE": _sent(_since),
}
