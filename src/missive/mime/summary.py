"""What the store keeps, sealed, about each message so that lists need not open bodies.

The summary is computed once at delivery (RFC 5322 header fields, decoded per RFC 2047) and sealed
with the message's data key; it is never stored in clear (C1). Malformed input never raises: a
message we cannot parse still gets a summary with what could be read.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import functools
import re
from dataclasses import dataclass, field, fields
from email.headerregistry import (
    BaseHeader,
    DateHeader,
    HeaderRegistry,
    MessageIDHeader,
    UniqueDateHeader,
    UniqueUnstructuredHeader,
    UnstructuredHeader,
)
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from typing import Any

from missive.mime.parsing import parse_message
from missive.mime.parts import unnamed

_MAX_HEADER = 2000


@dataclass
class MessageSummary:
    subject: str = ""
    from_name: str = ""
    from_addr: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    date: str = ""
    message_id: str = ""
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    has_attachments: bool = False
    attachment_names: list[str] = field(default_factory=list)
    mss: dict[str, str] = field(default_factory=dict)
    disposition_notification_to: str = ""
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        """``dataclasses.asdict(self)``: the fields in order, lists and dicts copied.

        ``asdict`` deep-copies through a generic recursion that cost more than the JSON
        encoding of the summary at every delivery; the fields hold strings, numbers, booleans
        and flat lists/dicts of strings, so copying one level gives the same dictionary
        (``tests/unit/mime/test_mime_summary_memo.py`` checks it against ``asdict``)."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            out[name] = value.copy() if isinstance(value, list | dict) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MessageSummary:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @property
    def thread_root(self) -> str:
        """The conversation's first Message-ID (RFC 5322 §3.6.4: References lists the thread
        from its root), else the message replied to, else the message itself."""
        if self.references:
            return self.references[0]
        return self.in_reply_to or self.message_id


_FIELDS = tuple(f.name for f in fields(MessageSummary))


def _text(msg: EmailMessage, name: str) -> str:
    """``str(msg.get(name))``, at most :data:`_MAX_HEADER` characters; ``""`` when absent or
    unreadable (a broken header must not stop delivery)."""
    found = _first_fields(msg, (name.lower(),))
    return _field_text(msg, found.get(name.lower()))


#: The single-valued fields the summary reads as text (lowercased names).
_TEXT_FIELDS = ("subject", "date", "message-id", "in-reply-to", "references",
                "disposition-notification-to", "x-mss-codecda", "x-mss-ins", "x-mss-nil",
                "x-mss-mes")


def _first_fields(msg: Message, wanted: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """The first ``(name, raw value)`` of each wanted field, by lowercased name, in one pass
    over the header list (what ``msg.get`` finds, without one pass per field)."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in msg.raw_items():
        key = name.lower()
        if key in wanted and key not in found:
            found[key] = (name, value)
    return found


def _field_text(msg: Message, item: tuple[str, str] | None) -> str:
    """``str(msg.policy.header_fetch_parse(name, raw))`` (what ``msg.get`` returns), cut to
    :data:`_MAX_HEADER`; a value :func:`_plain_text` knows is computed without building the
    header object."""
    if item is None:
        return ""
    name, raw = item
    try:
        text = _plain_text(msg.policy, name, raw)
        if text is None:
            text = str(msg.policy.header_fetch_parse(name, raw))
    except Exception:  # noqa: BLE001 - a broken header must not stop delivery
        return ""
    return text[:_MAX_HEADER]


#: ``email.policy.EmailPolicy.header_fetch_parse`` removes CR and LF (not what splitlines does).
_LINESEP = re.compile(r"\n|\r")
_UNSTRUCTURED = (UnstructuredHeader, UniqueUnstructuredHeader)
_DATES = (DateHeader, UniqueDateHeader)
#: ``<dot-atom-text@dot-atom-text>`` (RFC 5322 §3.6.4 without CFWS, obsolete forms or
#: literals): the parse tree of such a value prints back the value itself.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_MSG_ID = re.compile(rf"<{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*>")


def _plain_text(policy: object, name: str, raw: str) -> str | None:
    """The text of the header object ``email.policy.default`` would build for a common value,
    or None when the object must be built (``tests/unit/mime/test_mime_summary_fields.py``
    compares the two on generated values).

    Header objects of ``email.policy.default`` are costly for what the summary needs from them
    (Date: about 40 µs, parsing the value, formatting the datetime, then parsing that text
    again into a token tree nobody reads). Their text is, per ``email.headerregistry``:

    - unstructured fields (Subject, In-Reply-To, X-…): the value with RFC 2047 words decoded
      (RFC 2047 §6.1), so an ASCII value without ``=?`` is its own text;
    - ``Date`` (RFC 5322 §3.3): ``format_datetime(parsedate_to_datetime(value))``, or the value
      itself when it is not a date, ``""`` when empty;
    - ``Message-ID``: the printed parse tree, the value itself for a plain ``<id@domain>``.

    Values with raw 8-bit bytes (surrogates, which the header object replaces) and policies
    other than a plain :class:`~email.policy.EmailPolicy` header registry take the slow path.
    """
    if not isinstance(policy, EmailPolicy) or not isinstance(raw, str) or not raw.isascii():
        return None
    factory = policy.header_factory
    if not isinstance(factory, HeaderRegistry) or factory.base_class is not BaseHeader:
        return None
    kind = factory.registry.get(name.lower(), factory.default_class)
    value = "".join(_LINESEP.split(raw))
    if kind in _UNSTRUCTURED:
        return value if "=?" not in value else None
    if kind in _DATES:
        if not value:
            return ""
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except ValueError:
            return value
        return email.utils.format_datetime(moment)
    if kind is MessageIDHeader and _MSG_ID.fullmatch(value):
        return value
    return None


def _ids(text: str) -> list[str]:
    """Message-IDs (``<…>``) in a References / In-Reply-To field, RFC 5322 §3.6.4."""
    out: list[str] = []
    for token in text.replace("\r", " ").replace("\n", " ").split():
        token = token.strip(",")
        if token.startswith("<") and token.endswith(">") and len(token) > 2:
            out.append(token.lower())
    return out[:100]


def _addresses(msg: EmailMessage, name: str) -> list[tuple[str, str]]:
    try:
        values = tuple(str(v) for v in msg.get_all(name) or [])
        if sum(map(len, values)) > _MEMO_MAX_VALUES:
            return list(_pairs(values))
        return list(_memo_pairs(values))
    except Exception:  # noqa: BLE001
        return []


#: Longest address field values (in total) whose pairs are memoised.
_MEMO_MAX_VALUES = 512


def _pairs(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``(display name, lowercased address)`` of address field values."""
    return tuple((n, a.lower()) for n, a in email.utils.getaddresses(list(values)) if a)


#: :func:`_pairs` memoised: a pure function of the values, and the same ``From``/``To`` come
#: back message after message (a practice writes from the same address to the same patients;
#: see :mod:`.parsing`).
_memo_pairs = functools.lru_cache(maxsize=1024)(_pairs)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)  # noqa: S101 - guaranteed by policy.default
    return msg


def summarize(raw: bytes) -> MessageSummary:
    """The summary of a message (one parse; see :func:`missive.mime.analysis.analyze` to get
    the part list from the same parse)."""
    return summary_of(parse_message(raw), raw)


def summary_of(msg: EmailMessage, raw: bytes) -> MessageSummary:
    """The summary of ``msg``, already parsed from ``raw``."""
    froms = _addresses(msg, "From")
    s = MessageSummary(size=len(raw))
    fields = _first_fields(msg, _TEXT_FIELDS)

    def text(key: str) -> str:
        return _field_text(msg, fields.get(key))

    s.subject = text("subject")
    if froms:
        s.from_name, s.from_addr = froms[0]
    s.to = [a for _, a in _addresses(msg, "To")][:50]
    s.cc = [a for _, a in _addresses(msg, "Cc")][:50]
    s.date = text("date")
    mid = _ids(text("message-id"))
    s.message_id = mid[0] if mid else ""
    irt = _ids(text("in-reply-to"))
    s.in_reply_to = irt[0] if irt else ""
    s.references = _ids(text("references"))
    s.disposition_notification_to = text("disposition-notification-to")
    for key in ("X-MSS-CODECDA", "X-MSS-INS", "X-MSS-NIL", "X-MSS-MES"):
        value = text(key.lower())
        if value:
            s.mss[key] = value
    try:
        for part in msg.walk():
            if part.is_multipart():
                continue
            filename, disposition = _name_and_disposition(part)
            if filename or disposition == "attachment":
                s.has_attachments = True
                if filename:
                    s.attachment_names.append(str(filename)[:255])
    except Exception:  # noqa: BLE001 - malformed MIME: keep the summary we have
        s.has_attachments = s.has_attachments or b"filename" in raw.lower()
    return s


def _name_and_disposition(part: Message) -> tuple[str | None, str | None]:
    """``(part.get_filename(), part.get_content_disposition())``, both None without parsing
    parameters for a part that has neither (:func:`missive.mime.parts.unnamed`)."""
    if unnamed(part):
        return None, None
    return part.get_filename(), part.get_content_disposition()
