"""Delivery status notifications: RFC 3464 reports and the RFC 3461 parameters that drive them.

A DSN is a ``multipart/report; report-type=delivery-status`` message (RFC 6522) with three
parts: a human-readable explanation (French first, then English; never the message content),
a ``message/delivery-status`` part (RFC 3464 §2: per-message fields, then one block of
per-recipient fields per recipient), and the returned message: the whole of it
(``message/rfc822``) or its header section only (``text/rfc822-headers``).

RFC 3461 decisions, in one place (:func:`wants` and :func:`return_full`):

- NOTIFY (§4.1): ``NEVER`` means no DSN at all for that recipient; otherwise a DSN is sent for
  the kinds listed. Without NOTIFY we behave as ``FAILURE,DELAY`` (§4.1 lets an MTA choose
  ``FAILURE`` or ``FAILURE,DELAY``; the product promises a warning on long delays).
- RET (§4.3): ``HDRS`` returns the header section only, ``FULL`` the whole message. Without RET
  we return the whole message in a failure report (the report goes back into the sender's own
  encrypted mailbox) and only the headers otherwise; a report with no failure in it returns the
  headers only, whatever RET says.
- ENVID (§4.4) and ORCPT (§4.2) are echoed as ``Original-Envelope-Id`` and
  ``Original-Recipient`` (RFC 3464 §2.2.1, §2.3.1). The queue keeps them as the client sent
  them, xtext-encoded (RFC 3461 §4), so that a relay passes them on unchanged (§5.2); the
  report shows them decoded (:func:`xtext_decode`).

Invariants: the builder is pure (bytes out, no I/O, clock passed in); lines end in CRLF; no
line is longer than 998 octets except inside the returned message, which is copied as is;
addresses with non-ASCII characters switch the report to ``message/global-delivery-status``
with ``utf-8`` address types (RFC 6533 §3, §6).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime
from typing import Literal

Action = Literal["failed", "delayed", "delivered", "relayed", "expanded"]
NotifyKind = Literal["SUCCESS", "FAILURE", "DELAY"]

#: RFC 3461 §4.1: the NOTIFY we apply when the client gave none.
DEFAULT_NOTIFY: tuple[str, ...] = ("FAILURE", "DELAY")

_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class RecipientReport:
    """One per-recipient block (RFC 3464 §2.3)."""

    address: str
    action: Action
    status: str  # RFC 3463 enhanced code, e.g. "5.1.1"
    orcpt: str | None = None
    remote_mta: str | None = None
    diagnostic: str | None = None  # the remote reply, e.g. "550 5.1.1 unknown mailbox"
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None

    def __post_init__(self) -> None:
        if not _STATUS_RE.match(self.status):
            raise ValueError(f"not an RFC 3463 status code: {self.status!r}")


_XTEXT_ESCAPE = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: undo the ``+XX`` escapes of an xtext value (UTF-8 bytes, RFC 6533)."""
    if "+" not in value:
        return value
    raw = _XTEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def notify_set(notify: Sequence[str] | None) -> frozenset[str]:
    """The NOTIFY keywords in force for a recipient (upper-case, default applied)."""
    given = frozenset(n.strip().upper() for n in (notify or ()) if n.strip())
    return given or frozenset(DEFAULT_NOTIFY)


def wants(notify: Sequence[str] | None, kind: NotifyKind) -> bool:
    """Whether a recipient with this NOTIFY asked for a DSN of ``kind`` (RFC 3461 §4.1)."""
    keywords = notify_set(notify)
    return "NEVER" not in keywords and kind in keywords


def return_full(ret: str | None, reports: Sequence[RecipientReport]) -> bool:
    """Whether the report carries the whole message (else the header section only)."""
    if not any(r.action == "failed" for r in reports):
        return False  # RFC 3461 §4.3: no failure reported, headers only
    return (ret or "FULL").upper() != "HDRS"


def header_section(raw: bytes) -> bytes:
    """The header section of a message, up to and without the empty line."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end != -1:
            return raw[:end + len(sep) // 2]
    return raw if raw.endswith(b"\n") else raw + b"\r\n"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _needs_utf8(*values: str | None) -> bool:
    return any(v is not None and not v.isascii() for v in values)


def _addr_field(address: str, utf8: bool) -> str:
    return f"{'utf-8' if utf8 and not address.isascii() else 'rfc822'}; {address}"


def _orcpt_field(orcpt: str) -> str:
    addr_type, sep, value = orcpt.partition(";")
    if not sep:
        return f"rfc822; {_one_line(xtext_decode(orcpt.strip()))}"
    return f"{addr_type.strip()}; {_one_line(xtext_decode(value.strip()))}"


def _one_line(text: str) -> str:
    # Diagnostic texts come from the remote server: keep them on one line, printable.
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:900]


def _subject(reports: Sequence[RecipientReport]) -> tuple[str, str]:
    actions = {r.action for r in reports}
    if "failed" in actions:
        return ("Non distribué", "Undelivered Mail Returned to Sender")
    if "delayed" in actions:
        return ("Distribution retardée", "Delivery Delayed")
    return ("Remis", "Delivery Status Notification (Success)")


def _human_text(reports: Sequence[RecipientReport], *, hostname: str, original_subject_hint: bool,
                ) -> str:
    fr: list[str] = [f"Ceci est un message automatique du serveur {hostname}.", ""]
    en: list[str] = [f"This is an automatic message from the mail server {hostname}.", ""]
    for r in reports:
        if r.action == "failed":
            fr.append(f"Votre message n'a pas pu être remis à {r.address}.")
            en.append(f"Your message could not be delivered to {r.address}.")
        elif r.action == "delayed":
            until = (f" jusqu'au {r.will_retry_until:%d/%m/%Y %H:%M} UTC"
                     if r.will_retry_until else "")
            until_en = (f" until {r.will_retry_until:%Y-%m-%d %H:%M} UTC"
                        if r.will_retry_until else "")
            fr.append(f"Votre message pour {r.address} n'est pas encore remis ; "
                      f"de nouvelles tentatives auront lieu{until}. Vous n'avez rien à faire.")
            en.append(f"Your message to {r.address} has not been delivered yet; "
                      f"delivery will be retried{until_en}. No action is needed.")
        else:
            fr.append(f"Votre message a été transmis pour {r.address}.")
            en.append(f"Your message was passed on for {r.address}.")
        if r.diagnostic:
            fr.append(f"  Réponse du serveur distant : {_one_line(r.diagnostic)}")
            en.append(f"  The remote server said: {_one_line(r.diagnostic)}")
    if original_subject_hint:
        fr += ["", "Le message d'origine est joint."]
        en += ["", "The original message is attached."]
    else:
        fr += ["", "Les en-têtes du message d'origine sont joints."]
        en += ["", "The headers of the original message are attached."]
    return "\n".join([*fr, "", "-" * 20, "", *en, ""])


def delivery_status(
    reports: Sequence[RecipientReport], *, reporting_mta: str, envid: str | None,
    arrival: datetime | None, utf8: bool = False,
) -> str:
    """The ``message/delivery-status`` body (RFC 3464 §2.1): message fields, then one block
    per recipient, blocks separated by an empty line."""
    head = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid:
        head.append(f"Original-Envelope-Id: {_one_line(xtext_decode(envid))}")
    if arrival is not None:
        head.append(f"Arrival-Date: {format_datetime(arrival)}")
    blocks = ["\n".join(head)]
    for r in reports:
        lines: list[str] = []
        if r.orcpt:
            lines.append(f"Original-Recipient: {_orcpt_field(r.orcpt)}")
        lines += [f"Final-Recipient: {_addr_field(r.address, utf8)}",
                  f"Action: {r.action}", f"Status: {r.status}"]
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {r.remote_mta}")
        if r.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {_one_line(r.diagnostic)}")
        if r.last_attempt is not None:
            lines.append(f"Last-Attempt-Date: {format_datetime(r.last_attempt)}")
        if r.will_retry_until is not None and r.action == "delayed":
            lines.append(f"Will-Retry-Until: {format_datetime(r.will_retry_until)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def build_dsn(
    reports: Sequence[RecipientReport],
    *,
    original: bytes,
    to: str,
    reporting_mta: str,
    postmaster: str,
    now: datetime,
    ret: str | None = None,
    envid: str | None = None,
    arrival: datetime | None = None,
) -> bytes:
    """A complete RFC 3464 DSN (RFC 5322 bytes, CRLF) addressed to ``to``.

    ``postmaster`` is the ``From:`` address (the report is sent with a null reverse path,
    RFC 5321 §4.5.5, so it can never cause another report). Raises :class:`ValueError` when
    ``reports`` is empty.
    """
    if not reports:
        raise ValueError("a DSN needs at least one recipient report")
    utf8 = _needs_utf8(to, *(r.address for r in reports),
                       *(xtext_decode(r.orcpt) for r in reports if r.orcpt))
    full = return_full(ret, reports)
    boundary = f"=_missive_dsn_{uuid.uuid4().hex}"
    fr_subject, en_subject = _subject(reports)
    subject = Header(f"{fr_subject} / {en_subject}", "utf-8").encode(maxlinelen=76)
    domain = reporting_mta or "localhost"
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    if full:
        returned_type = "message/global" if utf8 else "message/rfc822"
        returned = original
    else:
        returned_type = "message/global-headers" if utf8 else "text/rfc822-headers"
        returned = header_section(original)
    head = "\n".join([
        f"From: {Header('Système de distribution', 'utf-8').encode()} <{postmaster}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{uuid.uuid4().hex}@{domain}>",
        # RFC 3834 §5: automatic responses say so, so that nobody auto-replies to them.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
    ])
    text_part = "\n".join([
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
        "Content-Description: Notification",
        "",
        _human_text(reports, hostname=domain, original_subject_hint=full),
    ])
    status_part = "\n".join([
        f"--{boundary}",
        f"Content-Type: {status_type}",
        "Content-Description: Delivery report",
        "",
        delivery_status(reports, reporting_mta=domain, envid=envid, arrival=arrival, utf8=utf8),
    ])
    returned_head = "\n".join([
        f"--{boundary}",
        f"Content-Type: {returned_type}",
        "Content-Transfer-Encoding: 8bit",
        "Content-Description: " + ("Undelivered message" if full else "Message headers"),
        "",
        "",
    ])
    body = returned if returned.endswith(b"\n") else returned + b"\r\n"
    return (_crlf(head) + _crlf(text_part) + _crlf(status_part) + _crlf(returned_head)
            + body + _crlf(f"--{boundary}--\n"))


__all__ = [
    "DEFAULT_NOTIFY",
    "RecipientReport",
    "build_dsn",
    "delivery_status",
    "header_section",
    "notify_set",
    "return_full",
    "wants",
    "xtext_decode",
]
