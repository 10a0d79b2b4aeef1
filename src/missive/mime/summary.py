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
from dataclasses import dataclass, field, fields
from email.message import EmailMessage
from typing import Any

from missive.mime.parsing import parse_message

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
    try:
        value = msg.get(name)
    except Exception:  # noqa: BLE001 - a broken header must not stop delivery
        return ""
    return str(value)[:_MAX_HEADER] if value is not None else ""


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
    s.subject = _text(msg, "Subject")
    if froms:
        s.from_name, s.from_addr = froms[0]
    s.to = [a for _, a in _addresses(msg, "To")][:50]
    s.cc = [a for _, a in _addresses(msg, "Cc")][:50]
    s.date = _text(msg, "Date")
    mid = _ids(_text(msg, "Message-ID"))
    s.message_id = mid[0] if mid else ""
    irt = _ids(_text(msg, "In-Reply-To"))
    s.in_reply_to = irt[0] if irt else ""
    s.references = _ids(_text(msg, "References"))
    s.disposition_notification_to = _text(msg, "Disposition-Notification-To")
    for key in ("X-MSS-CODECDA", "X-MSS-INS", "X-MSS-NIL", "X-MSS-MES"):
        value = _text(msg, key)
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
    except Exception:  # noqa: BLE001 - malformed MIME: keep the summary we have
        s.has_attachments = s.has_attachments or b"filename" in raw.lower()
    return s
