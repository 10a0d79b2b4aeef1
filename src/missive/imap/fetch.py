"""FETCH data from a raw message: ENVELOPE, BODYSTRUCTURE, BODY[section]<partial> (RFC 3501 §6.4.5,
§7.4.2; RFC 9051 §6.4.5, §7.5.2).

Sections must be the *exact octets* of the stored message, so the MIME tree is cut from the raw
bytes here (header/body split at the first empty line, multipart bodies at their boundary lines,
RFC 2046 §5.1.1) and the standard library's ``email`` package (``compat32`` policy, which keeps
header values as written) only parses each part's header fields (types, parameters, addresses).
Re-serialising an ``email.message`` would change folding and line endings, and clients that
verify sizes (mbsync, offlineimap) would then see ``RFC822.SIZE`` disagree with ``BODY[]``.

Part numbering follows RFC 3501 §6.4.5: ``1`` is the body of a single-part message; the parts of
an encapsulated ``message/rfc822`` are numbered under it; ``n.MIME`` is a part's MIME header and
``n.HEADER``/``n.TEXT`` apply to an encapsulated message. Malformed MIME never raises: what
cannot be split is a leaf. Nesting deeper than :data:`MAX_DEPTH` is a leaf too (bounded work).
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from missive.imap.encode import NIL, nstring, paren, quoted_or_literal
from missive.imap.parser import Section

__all__ = ["MimePart", "bodystructure", "envelope", "header_part", "parse_fields", "parse_mime",
           "section_bytes", "split_header"]

MAX_DEPTH = 20
MAX_PARTS = 1000
_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)
#: The first empty line (what :func:`split_header` finds; kept as the reference of its tests).
_BLANK = re.compile(rb"\r?\n\r?\n")


@dataclass
class MimePart:
    """One node of the MIME tree: the raw octets of its header (with the empty line ending it)
    and of its body, its parsed header fields, and its children (multipart) or the message it
    encapsulates (``message/rfc822``)."""

    header: bytes
    body: bytes
    fields: Message
    ctype: str
    children: list[MimePart] = field(default_factory=list)
    message: MimePart | None = None

    @property
    def raw(self) -> bytes:
        return self.header + self.body

    @property
    def maintype(self) -> str:
        return self.ctype.split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return self.ctype.split("/", 1)[1]


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header with the empty line ending it, body), cut at the first empty line."""
    if raw.startswith((b"\r\n", b"\n")):
        cut = 2 if raw.startswith(b"\r\n") else 1
        return raw[:cut], raw[cut:]
    # The first empty line, as ``_BLANK.search`` finds it, with two finds instead of the
    # regular expression (which tries a match at every octet of the header): the match that
    # starts first is the one whose first LF comes first, followed by LF or CR LF.
    lf = raw.find(b"\n\n")
    crlf = raw.find(b"\n\r\n", 0, lf + 1 if lf >= 0 else len(raw))
    if crlf >= 0:
        end = crlf + 3
    elif lf >= 0:
        end = lf + 2
    else:
        return raw, b""
    return raw[:end], raw[end:]


#: RFC 5322 §2.2 / §3.6.8: a field name (printable ASCII but ":") followed by a colon.
_FIELD_NAME = re.compile(r"[\041-\071\073-\176]+:")


def parse_fields(header: bytes) -> Message:
    """The header fields of one header block, as the standard library's ``compat32`` parser
    reads them (values as written, folding kept).

    The common header (ASCII, every line a ``name: value`` field or a continuation, CRLF or LF
    line ends) is read by a direct loop, several times faster than ``email.feedparser``; anything
    else (8-bit octets, a bare CR, a Unix ``From`` line, a line that is neither a field nor a
    continuation) goes to the standard parser, which records the defects.
    """
    fields = _simple_fields(header)
    if fields is not None:
        return fields
    try:
        return _HEADER_PARSER.parsebytes(header)
    except Exception:  # noqa: BLE001 - a header the parser rejects: no fields
        return Message()


class _IndexedFields(Message):
    """The fields of an ASCII header block read by :func:`_simple_fields`, looked up through a
    dictionary by lower-case name instead of ``Message``'s scan of every field per lookup
    (ENVELOPE alone makes ten). Values are plain ASCII ``str``, which ``compat32`` returns
    unchanged, so the answers are the same; any change to the fields drops the index."""

    _index: dict[str, list[str]] | None = None

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for k, v in self._headers:  # type: ignore[attr-defined]
                index.setdefault(k.lower(), []).append(v)
            self._index = index
        return index

    def get(self, name: str, failobj: Any = None) -> Any:
        values = self._lookup().get(name.lower())
        return values[0] if values else failobj

    def get_all(self, name: str, failobj: Any = None) -> Any:
        values = self._lookup().get(name.lower())
        return list(values) if values else failobj

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def set_raw(self, name: str, value: Any) -> None:
        self._index = None
        super().set_raw(name, value)

    def __setitem__(self, name: str, val: Any) -> None:
        self._index = None
        super().__setitem__(name, val)

    def __delitem__(self, name: str) -> None:
        self._index = None
        super().__delitem__(name)

    def replace_header(self, _name: str, _value: Any) -> None:
        self._index = None
        super().replace_header(_name, _value)

    def add_header(self, _name: str, _value: str, **_params: Any) -> None:
        self._index = None
        super().add_header(_name, _value, **_params)


#: A header block :func:`_simple_fields` takes: ``name: value`` fields, each with its folded
#: continuation lines (RFC 5322 §2.2.3), every line ending in a line break, then at most the
#: empty line that ends the header (RFC 5322 §2.1), nothing after it.
_SIMPLE_HEADER = re.compile(r"(?:[\041-\071\073-\176]+:[^\n]*\n(?:[ \t][^\n]*\n)*)*(?:\r?\n)?")
#: One field of such a block: its name, and its value from the first non-blank octet after
#: the colon to the end of its last continuation line.
_SIMPLE_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*([^\n]*\n(?:[ \t][^\n]*\n)*)")


def _simple_fields(header: bytes) -> Message | None:
    if not header.isascii() or header.count(b"\r") != header.count(b"\r\n"):
        return None
    text = header.decode("ascii")
    if _SIMPLE_HEADER.fullmatch(text) is None:
        return None
    msg = _IndexedFields()
    # compat32 stores (name, value) as given (what set_raw would append, one by one).
    msg._headers = [(m[1], m[2].rstrip("\r\n"))  # type: ignore[attr-defined]
                    for m in _SIMPLE_FIELD.finditer(text)]
    return msg


def _ctype(fields: Message, default: str) -> str:
    value = fields.get("Content-Type")
    if value is None:
        return default
    ctype = str(value).split(";", 1)[0].strip().lower()
    if ctype.count("/") != 1 or not all(ctype.split("/")):
        return "text/plain"
    return ctype


def parse_mime(raw: bytes, default: str = "text/plain", depth: int = 0,
               budget: list[int] | None = None) -> MimePart:
    """The MIME tree of ``raw`` (a message or a part)."""
    budget = budget if budget is not None else [MAX_PARTS]
    header, body = split_header(raw)
    fields = parse_fields(header)
    ctype = _ctype(fields, default)
    part = MimePart(header, body, fields, ctype)
    budget[0] -= 1
    if depth >= MAX_DEPTH or budget[0] <= 0:
        return part
    if part.maintype == "multipart":
        boundary = _param(fields, "boundary")
        if boundary:
            child_default = "message/rfc822" if part.subtype == "digest" else "text/plain"
            for chunk in _multipart_chunks(body, boundary.encode("utf-8", "surrogateescape")):
                part.children.append(parse_mime(chunk, child_default, depth + 1, budget))
                if budget[0] <= 0:
                    break
        if not part.children:
            # RFC 2046 §5.1.1 asks for at least one part; without one the multipart still
            # shows as a multipart (its header says so) with one empty text part, as Dovecot
            # does, so that BODYSTRUCTURE and BODY[1] agree with the Content-Type clients see.
            part.children.append(parse_mime(b"", "text/plain", depth + 1, budget))
    elif ctype in ("message/rfc822", "message/global"):
        part.message = parse_mime(body, "text/plain", depth + 1, budget)
    return part


def header_part(raw: bytes) -> MimePart:
    """The top of ``raw`` only: its header fields, no parts (enough for ENVELOPE)."""
    header, body = split_header(raw)
    fields = parse_fields(header)
    return MimePart(header, body, fields, _ctype(fields, "text/plain"))


def _multipart_chunks(body: bytes, boundary: bytes) -> list[bytes]:
    # RFC 2046 §5.1.1: the CRLF before "--boundary" belongs to the delimiter.
    delim = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    chunks: list[bytes] = []
    start: int | None = None
    for m in delim.finditer(body):
        if start is not None:
            chunks.append(body[start:m.start()])
        if m.group(1):
            return chunks
        start = m.end()
    if start is not None:
        chunks.append(body[start:])
    return chunks


def _param(fields: Message, name: str, header: str = "content-type") -> str | None:
    try:
        value = fields.get_param(name, header=header)
    except Exception:  # noqa: BLE001
        return None
    if value is None or isinstance(value, str):
        return value
    return email.utils.collapse_rfc2231_value(value)


# --- locating sections -----------------------------------------------------------------------


def _children(part: MimePart, is_message: bool) -> list[MimePart]:
    if part.children:
        return part.children
    if part.message is not None:
        return _children(part.message, True)
    if part.maintype == "multipart":
        return []
    return [part] if is_message else []


def locate(root: MimePart, parts: tuple[int, ...]) -> MimePart | None:
    cur, is_message = root, True
    for number in parts:
        children = _children(cur, is_message)
        if number > len(children):
            return None
        cur, is_message = children[number - 1], False
    return cur


def _header_lines(header: bytes) -> list[bytes]:
    """Header fields with their continuation lines, each ending in its line break."""
    fields: list[bytes] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _filter_header(header: bytes, names: tuple[str, ...], keep: bool) -> bytes:
    wanted = {n.lower().encode("ascii", "replace") for n in names}
    out = [f for f in _header_lines(header)
           if (f.split(b":", 1)[0].strip().lower() in wanted) == keep]
    return b"".join(out) + b"\r\n"


def section_bytes(root: MimePart, raw: bytes, section: Section) -> bytes | None:
    """The octets of ``BODY[section]`` (before any partial), or None when the part is absent."""
    if not section.parts and section.text is None:
        return raw
    if section.parts:
        part = locate(root, section.parts)
        if part is None:
            return None
        if section.text is None:
            return part.body
        if section.text == "MIME":
            return part.header
        target = part.message
        if target is None:
            # RFC 3501 §6.4.5: HEADER, HEADER.FIELDS[.NOT] and TEXT after a part number need a
            # MESSAGE/RFC822 part; for any other part (including part 1 of a single-part
            # message, which is its body) there is nothing to return.
            return b""
    else:
        target = root
    if section.text == "HEADER":
        return target.header
    if section.text == "TEXT":
        return target.body
    if section.text == "HEADER.FIELDS":
        return _filter_header(target.header, section.fields, True)
    if section.text == "HEADER.FIELDS.NOT":
        return _filter_header(target.header, section.fields, False)
    return None


def partial(data: bytes, span: tuple[int, int] | None) -> bytes:
    if span is None:
        return data
    offset, length = span
    return data[offset:offset + length]


# --- ENVELOPE ----------------------------------------------------------------------------------


def _raw_header(fields: Message, name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    text = str(value)
    # Unfold (RFC 5322 §2.2.3); keep encoded words as they are (RFC 3501 §7.4.2).
    return _unfold(text).strip()


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _unfold(text: str) -> str:
    return _FOLD.sub("", text) if "\n" in text else text


def _addresses(fields: Message, name: str) -> bytes:
    values = fields.get_all(name)
    if not values:
        return NIL
    text = ", ".join(_unfold(str(v)) for v in values)
    out: list[bytes] = []
    for kind, chunk in _groups(text):
        if kind == "start":
            # RFC 3501 §7.4.2: a group starts with (NIL NIL "group name" NIL) ...
            out.append(paren([NIL, NIL, nstring(chunk or None), NIL]))
        elif kind == "end":
            out.append(b"(NIL NIL NIL NIL)")  # ... and ends with an all-NIL address
        else:
            mailboxes = _mailboxes(chunk)
            if mailboxes is None:
                return NIL
            out += mailboxes
    # RFC 3501 §9: env-from = "(" 1*address ")": addresses follow each other without spaces.
    return b"(" + b"".join(out) + b")" if out else NIL


def _mailboxes(text: str) -> list[bytes] | None:
    pairs = _simple_addresses(text)
    if pairs is None:
        try:
            pairs = email.utils.getaddresses([text])
        except Exception:  # noqa: BLE001 - unparsable address list
            return None
    out: list[bytes] = []
    for display, addr in pairs:
        if not addr and not display:
            continue
        local, _, host = addr.rpartition("@") if "@" in addr else (addr, "", "")
        out.append(paren([nstring(display or None), NIL, nstring(local or None),
                          nstring(host or None)]))
    return out


def _groups(text: str) -> list[tuple[str, str]]:
    """An address list cut at its groups (RFC 5322 §3.4: ``name: member, member;``):
    ("list", addresses), ("start", group name), ("end", ""). Colons and semicolons inside
    quoted strings, comments, angle brackets (routes) and domain literals are not group marks."""
    if ":" not in text:
        return [("list", text)]
    out: list[tuple[str, str]] = []
    start, last_comma, in_group = 0, 0, False
    quoted = escaped = False
    comment = 0
    angle = bracket = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\" and (quoted or comment):
            escaped = True
        elif quoted:
            quoted = c != '"'
        elif comment:
            comment += 1 if c == "(" else -1 if c == ")" else 0
        elif c == '"':
            quoted = True
        elif c == "(":
            comment = 1
        elif c in "<>":
            angle = c == "<"
        elif c in "[]":
            bracket = c == "["
        elif angle or bracket:
            continue
        elif c == "," and not in_group:
            last_comma = i
        elif c == ":" and not in_group:
            if text[start:last_comma].strip(", "):
                out.append(("list", text[start:last_comma]))
            out.append(("start", _phrase(text[max(start, last_comma):i].lstrip(","))))
            start, in_group = i + 1, True
        elif c == ";" and in_group:
            out.append(("list", text[start:i]))
            out.append(("end", ""))
            start, last_comma, in_group = i + 1, i + 1, False
    rest = text[start:]
    if rest.strip(", "):
        out.append(("list", rest))
    if in_group:
        out.append(("end", ""))
    return out


def _phrase(text: str) -> str:
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


#: What sends an address list to the full parser (quotes, comments, groups, escapes, routes).
_SPECIALS = re.compile(r'["()\\:;\[\]]')
_ANGLE = re.compile(r"\s*([^<>]*?)\s*<([^<>@\s]+@[^<>@\s]+)>\s*")
_BARE = re.compile(r"\s*([^<>@\s,]+@[^<>@\s,]+)\s*")


def _simple_addresses(text: str) -> list[tuple[str, str]] | None:
    """Fast path for the common ``Name <a@b>, c@d`` lists; None sends the text to the full
    RFC 5322 parser (quotes, comments, groups, escapes)."""
    if _SPECIALS.search(text) is not None:
        return None
    out: list[tuple[str, str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        m = _ANGLE.fullmatch(item)
        if m is not None:
            out.append((" ".join(m.group(1).split()), m.group(2)))
            continue
        m = _BARE.fullmatch(item)
        if m is None:
            return None
        out.append(("", m.group(1)))
    return out


def envelope(part: MimePart) -> bytes:
    """``ENVELOPE`` (RFC 3501 §7.4.2): date, subject, from, sender, reply-to, to, cc, bcc,
    in-reply-to, message-id; sender and reply-to default to from."""
    f = part.fields
    sender = _addresses(f, "Sender")
    from_ = _addresses(f, "From")
    reply = _addresses(f, "Reply-To")
    return paren([
        nstring(_raw_header(f, "Date")),
        nstring(_raw_header(f, "Subject")),
        from_,
        sender if sender != NIL else from_,
        reply if reply != NIL else from_,
        _addresses(f, "To"),
        _addresses(f, "Cc"),
        _addresses(f, "Bcc"),
        nstring(_raw_header(f, "In-Reply-To")),
        nstring(_raw_header(f, "Message-ID")),
    ])


# --- BODYSTRUCTURE -----------------------------------------------------------------------------


def _upper_string(value: str) -> bytes:
    return quoted_or_literal(value.upper())


def _params(fields: Message, header: str, skip_first: bool = True) -> bytes:
    try:
        params = fields.get_params(header=header, unquote=True) or []
    except Exception:  # noqa: BLE001
        params = []
    items: list[bytes] = []
    for key, value in params[1 if skip_first else 0:]:
        if not key:
            continue
        if isinstance(value, tuple):
            text = email.utils.collapse_rfc2231_value(value)
        else:
            text = value
        items.append(quoted_or_literal(key.upper()))
        items.append(quoted_or_literal(text))
    return paren(items) if items else NIL


def _disposition(fields: Message) -> bytes:
    value = fields.get("Content-Disposition")
    if value is None:
        return NIL
    kind = str(value).split(";", 1)[0].strip()
    if not kind:
        return NIL
    return paren([_upper_string(kind), _params(fields, "content-disposition")])


def _language(fields: Message) -> bytes:
    value = _raw_header(fields, "Content-Language")
    if not value:
        return NIL
    langs = [v.strip() for v in value.split(",") if v.strip()]
    return paren([quoted_or_literal(v) for v in langs]) if langs else NIL


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def bodystructure(part: MimePart, extended: bool = True) -> bytes:
    """``BODYSTRUCTURE`` (``extended``) or ``BODY`` (RFC 3501 §7.4.2)."""
    f = part.fields
    if part.maintype == "multipart":
        if not part.children:
            # A multipart with no parts: show it as an empty text part (Dovecot does the same).
            return _single(part, f, ("text", "plain"), extended)
        items = [b"".join(bodystructure(c, extended) for c in part.children),
                 _upper_string(part.subtype)]
        if extended:
            items += [_params(f, "content-type"), _disposition(f), _language(f),
                      nstring(_raw_header(f, "Content-Location"))]
        return paren(items)
    return _single(part, f, (part.maintype, part.subtype), extended)


def _single(part: MimePart, f: Message, ctype: tuple[str, str], extended: bool) -> bytes:
    params = _params(f, "content-type") if f.get("Content-Type") else NIL
    if ctype[0] == "text" and params == NIL:
        params = b'("CHARSET" "US-ASCII")'
    encoding = (_raw_header(f, "Content-Transfer-Encoding") or "7BIT").upper()
    items = [
        _upper_string(ctype[0]), _upper_string(ctype[1]), params,
        nstring(_raw_header(f, "Content-ID")),
        nstring(_raw_header(f, "Content-Description")),
        quoted_or_literal(encoding),
        b"%d" % len(part.body),
    ]
    if part.message is not None:
        items += [envelope(part.message), bodystructure(part.message, extended),
                  b"%d" % _line_count(part.body)]
    elif ctype[0] == "text":
        items.append(b"%d" % _line_count(part.body))
    if extended:
        items += [nstring(_raw_header(f, "Content-MD5")), _disposition(f), _language(f),
                  nstring(_raw_header(f, "Content-Location"))]
    return paren(items)
