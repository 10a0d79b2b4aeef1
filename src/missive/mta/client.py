"""Outbound SMTP to one peer MTA with aiosmtplib: one transaction, a result per recipient.

What a transaction does (RFC 5321 §3.3, §4.1.1):

1. connect (implicit TLS for ``smtps://`` routes, RFC 8314 §3.3), read the greeting, EHLO;
2. without implicit TLS, STARTTLS is *required* (RFC 3207): a peer that does not offer it, or
   whose certificate does not verify against the trust space, gets nothing — the caller retries
   later; mail is never sent in clear. The TLS context (``missive.certs.tls.client_context``)
   presents our operator certificate (policy P7 on the peer's side) and checks the peer's host
   name (RFC 6125);
3. EHLO again (RFC 3207 §4.2: forget what was learnt before TLS);
4. ``MAIL FROM`` with ``SIZE`` (RFC 1870), ``BODY=8BITMIME`` for 8-bit content (RFC 6152),
   ``SMTPUTF8`` for non-ASCII addresses (RFC 6531 §3.4), and, when the peer offers ``DSN``,
   ``RET``/``ENVID`` (RFC 3461 §4.3, §4.4) — xtext (§4), passed on as received (§5.2);
5. one ``RCPT TO`` per recipient, with ``NOTIFY``/``ORCPT`` when the peer offers ``DSN``
   (RFC 3461 §4.1, §4.2); each reply is kept for that recipient;
6. ``DATA`` if at least one recipient was accepted; its reply applies to every accepted one.

Errors: :class:`TransactionError` for a failure that concerns every recipient at this host
(connection, TLS, ``MAIL``, ``DATA``), with ``permanent`` telling whether another host or a
later attempt may succeed. Replies are returned as the peer gave them; their text is never
logged here (it may name recipients).
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiosmtplib

from missive.mta.routing import Route

log = logging.getLogger(__name__)

_ENHANCED_RE = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def xtext(value: str) -> str:
    """RFC 3461 §4: xtext-encode a value ("+" and "=" and anything outside ``!``..``~``)."""
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (ord("+"), ord("=")):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


_XTEXT_RE = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2})+$")


def as_xtext(value: str) -> str:
    """``value`` if it already is xtext (the queue keeps ENVID and ORCPT as the client sent
    them, so they pass on unchanged, RFC 3461 §5.2), else its xtext encoding."""
    return value if _XTEXT_RE.match(value) else xtext(value)


def enhanced_status(code: int, text: str) -> str:
    """The RFC 3463 status of a reply: the one it carries (RFC 2034), else derived from the
    basic code (X.0.0)."""
    match = _ENHANCED_RE.match(text)
    if match and match.group(1) == str(code)[0]:
        return ".".join(match.groups())
    klass = str(code)[0] if code >= 200 else "4"
    return f"{klass}.0.0"


@dataclass(frozen=True)
class Recipient:
    """An envelope recipient with its RFC 3461 parameters (ORCPT as xtext, as received)."""

    address: str
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass(frozen=True)
class RecipientResult:
    address: str
    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def status(self) -> str:
        return enhanced_status(self.code, self.text)

    @property
    def diagnostic(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass
class SendResult:
    """What one transaction at one host gave: a result per recipient, in envelope order."""

    host: str
    dsn_supported: bool
    recipients: list[RecipientResult] = field(default_factory=list)


class TransactionError(Exception):
    """The transaction failed for every recipient at this host (see the module docstring)."""

    def __init__(self, stage: str, text: str, *, code: int = 0, permanent: bool = False,
                 status: str | None = None) -> None:
        super().__init__(f"{stage}: {code or ''} {text}".strip())
        self.stage = stage
        self.code = code
        self.text = text
        self.permanent = permanent
        self.status = status or enhanced_status(code or (550 if permanent else 451), text)

    @property
    def diagnostic(self) -> str:
        return f"{self.code} {self.text}".strip() if self.code else self.text


def _mail_options(sender: str, recipients: Sequence[Recipient], raw: bytes, *,
                  extensions: dict[str, str], ret: str | None, envid: str | None,
                  ) -> list[str]:
    options: list[str] = []
    if "size" in extensions:
        options.append(f"SIZE={len(raw)}")
    if "8bitmime" in extensions and any(b > 127 for b in raw):
        options.append("BODY=8BITMIME")
    if not sender.isascii() or any(not r.address.isascii() for r in recipients):
        if "smtputf8" not in extensions:
            raise TransactionError(
                "mail", "the peer does not support SMTPUTF8, needed for a non-ASCII address",
                code=553, permanent=True, status="5.6.7")  # RFC 6531 §3.2
        options.append("SMTPUTF8")
    if "dsn" in extensions:
        if ret and ret.upper() in ("FULL", "HDRS"):
            options.append(f"RET={ret.upper()}")
        if envid:
            options.append(f"ENVID={as_xtext(envid)}")
    return options


def _rcpt_options(rcpt: Recipient, dsn: bool) -> list[str]:
    if not dsn:
        return []
    options: list[str] = []
    notify = [n.strip().upper() for n in rcpt.notify if n.strip()]
    if notify:
        options.append("NOTIFY=" + ",".join(notify))
    if rcpt.orcpt:
        addr_type, sep, value = rcpt.orcpt.partition(";")
        if sep:
            options.append(f"ORCPT={addr_type.strip()};{as_xtext(value.strip())}")
    return options


async def send(
    route: Route,
    *,
    tls: ssl.SSLContext,
    helo: str,
    sender: str,
    recipients: Sequence[Recipient],
    raw: bytes,
    ret: str | None = None,
    envid: str | None = None,
    timeout: float = 120.0,  # noqa: ASYNC109 - per SMTP step, as aiosmtplib applies it
) -> SendResult:
    """Run one SMTP transaction at ``route`` (see the module docstring).

    Returns the per-recipient replies; raises :class:`TransactionError` when nothing could be
    tried per recipient.
    """
    smtp = aiosmtplib.SMTP(hostname=route.host, port=route.port, local_hostname=helo,
                           timeout=timeout, use_tls=route.implicit_tls, start_tls=False,
                           tls_context=tls)
    try:
        try:
            await smtp.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            raise TransactionError("connect", exc.message, code=exc.code,
                                   permanent=False) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise TransactionError("connect", f"cannot connect to {route}: {exc}",
                                   status="4.4.1") from None
        try:
            await smtp.ehlo()
            if not route.implicit_tls:
                if not smtp.supports_extension("starttls"):
                    raise TransactionError(
                        "starttls", f"{route.host} does not offer STARTTLS; mail is never "
                        "relayed in clear", status="4.7.10")
                await smtp.starttls(server_hostname=route.host, tls_context=tls)
                await smtp.ehlo()
        except TransactionError:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            raise TransactionError("ehlo", exc.message, code=exc.code,
                                   permanent=False) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise TransactionError("tls", f"TLS with {route.host} failed: {exc}",
                                   status="4.7.5") from None
        extensions = {k.lower(): v for k, v in smtp.esmtp_extensions.items()}
        dsn = "dsn" in extensions
        options = _mail_options(sender, recipients, raw, extensions=extensions, ret=ret,
                                envid=envid)
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        try:
            await smtp.mail(sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            raise TransactionError("mail", exc.message, code=exc.code,
                                   permanent=exc.code >= 500) from None
        result = SendResult(host=route.host, dsn_supported=dsn)
        for rcpt in recipients:
            try:
                reply = await smtp.rcpt(rcpt.address, options=_rcpt_options(rcpt, dsn),
                                        encoding=encoding)
                result.recipients.append(RecipientResult(rcpt.address, reply.code,
                                                         reply.message))
            except aiosmtplib.SMTPResponseException as exc:
                result.recipients.append(RecipientResult(rcpt.address, exc.code, exc.message))
        if not any(r.accepted for r in result.recipients):
            await _quit(smtp)
            return result
        try:
            reply = await smtp.data(raw)
        except aiosmtplib.SMTPResponseException as exc:
            raise TransactionError("data", exc.message, code=exc.code,
                                   permanent=exc.code >= 500) from None
        result.recipients = [
            RecipientResult(r.address, reply.code, reply.message) if r.accepted else r
            for r in result.recipients
        ]
        await _quit(smtp)
        return result
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
        raise TransactionError("session", f"connection to {route.host} lost: {exc}",
                               status="4.4.2") from None
    finally:
        smtp.close()


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        log.debug("relay: QUIT not answered (the transaction is already complete)")


__all__ = [
    "Recipient",
    "RecipientResult",
    "SendResult",
    "TransactionError",
    "as_xtext",
    "enhanced_status",
    "send",
    "xtext",
]
