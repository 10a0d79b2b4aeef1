"""Everything the delivery path needs from a message, from a single parse.

The SMTP fronts need, for each message, its :class:`~missive.mime.summary.MessageSummary`
(sealed with it, and read by P6 and the conversation-closing rule) and its leaf parts
(:class:`~missive.mime.parts.PartInfo`, for the attachment rule P9). Both walk the same MIME
tree (RFC 2045/2046), so :func:`analyze` parses the message once (with the header memo of
:mod:`missive.mime.parsing`) and derives both from it: the results are the same as
``summarize(raw)`` and ``list_parts(raw)``, at about half the cost.
"""

from __future__ import annotations

from email.message import EmailMessage

from missive.mime.parsing import parse_message
from missive.mime.parts import PartInfo, parts_of
from missive.mime.summary import MessageSummary, summary_of

__all__ = ["analyze", "analyze_parsed"]


def analyze(raw: bytes) -> tuple[MessageSummary, list[PartInfo]]:
    """``(summarize(raw), list_parts(raw))`` from one parse.

    Like :func:`~missive.mime.summary.summarize`, it raises only if the standard library's
    parser itself does (it is lenient: malformed MIME yields defects, not exceptions).
    """
    msg = parse_message(raw)
    return summary_of(msg, raw), parts_of(msg)


def analyze_parsed(raw: bytes) -> tuple[EmailMessage, MessageSummary, list[PartInfo]]:
    """:func:`analyze`, and the parsed message itself: a caller that needs other header fields
    (the submission front's ``From:``/``Sender:`` check, P2) reads them from this parse
    instead of parsing the header block a second time."""
    msg = parse_message(raw)
    return msg, summary_of(msg, raw), parts_of(msg)
