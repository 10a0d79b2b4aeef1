"""The three ways a notice leaves: SMS webhook, e-mail through an SMTP relay, relay webhook.

Each channel sends one :class:`Notice` and either returns (accepted) or raises
:class:`ChannelFailure` saying whether a retry can help (``permanent``). Every request carries
the notice's idempotency key, the same on every attempt: ``Idempotency-Key`` header and JSON
field for webhooks, ``Message-ID: <key@domain>`` for e-mail, so that a receiver can drop the
duplicate that a retry after a lost answer or a worker crash produces.

What goes out (nothing else; no content, sender or specialty can be reached from here):

- SMS webhook: ``{"type": "sms", "to": "+33…", "text": "…", "idempotency_key": "…"}``.
- Relay webhook: ``{"event": "message.delivered", "mailbox": "<opaque>", "count": n,
  "time": "<ISO 8601 UTC>"}``; the opaque id is a keyed hash of the mailbox id (index key), so
  the relay can tell mailboxes apart but learns neither the INS nor the internal row id.
- E-mail (RFC 5322): ``From``, ``To``, ``Subject``, ``Date``, ``Message-ID``,
  ``Auto-Submitted: auto-generated`` (RFC 3834 §5: no auto-reply to it) and
  ``X-Auto-Response-Suppress: All``, a ``text/plain; charset=utf-8`` body.

Webhook bodies are signed (:mod:`.signing`). HTTP answers: 2xx accepted; 408, 425, 429 and 5xx
are temporary; any other status is permanent. SMTP: 5xx replies are permanent, 4xx and network
errors temporary (RFC 5321 §4.2.1).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Protocol

import aiosmtplib
import httpx

from missive.config import NotifySettings
from missive.notify import signing
from missive.notify.templates import NoticeFacts, Renderer

USER_AGENT = "missive-notify/1"
_TEMPORARY_HTTP = {408, 425, 429}


class ChannelFailure(Exception):
    """A notice was not accepted; ``permanent`` when retrying cannot help."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason[:400]
        self.permanent = permanent


@dataclass(frozen=True)
class Notice:
    """One notice to send: what the worker knows, and nothing from the messages themselves."""

    key: str
    channel: str
    mailbox_ref: str
    count: int
    kind: str
    first_at: datetime
    phone: str | None = None
    email: str | None = None


class Channel(Protocol):
    name: str

    async def send(self, notice: Notice) -> None: ...


async def post_signed(client: httpx.AsyncClient, url: str, secret: bytes, body: bytes, *,
                      key: str, event: str, timestamp: int) -> None:
    """POST a signed JSON body; raise :class:`ChannelFailure` unless answered 2xx."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.IDEMPOTENCY_HEADER: key,
        signing.EVENT_HEADER: event,
        signing.SIGNATURE_HEADER: signing.sign(secret, body, timestamp),
    }
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise ChannelFailure("webhook timed out") from None
    except httpx.HTTPError as exc:
        raise ChannelFailure(f"webhook unreachable: {type(exc).__name__}: {exc}") from None
    status = response.status_code
    if 200 <= status < 300:
        return
    permanent = not (status >= 500 or status in _TEMPORARY_HTTP)
    raise ChannelFailure(f"webhook answered HTTP {status}", permanent=permanent)


def _json(data: dict[str, object]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class SmsWebhook:
    """SMS through the gateway's HTTP webhook."""

    name = "sms"

    def __init__(self, url: str, secret: bytes, client: httpx.AsyncClient, renderer: Renderer,
                 *, wallclock: Callable[[], float] = time.time) -> None:
        self.url, self.secret, self.client = url, secret, client
        self.renderer, self.wallclock = renderer, wallclock

    async def send(self, notice: Notice) -> None:
        if not notice.phone:
            raise ChannelFailure("the patient has no mobile phone number", permanent=True)
        rendered = self.renderer.render(NoticeFacts(notice.count, notice.kind, "sms"))
        body = _json({"type": "sms", "to": notice.phone, "text": rendered.text,
                      "idempotency_key": notice.key})
        await post_signed(self.client, self.url, self.secret, body, key=notice.key,
                          event="notification.sms", timestamp=int(self.wallclock()))


class RelayWebhook:
    """The generic ``message.delivered`` event for notification relays."""

    name = "relay"

    def __init__(self, url: str, secret: bytes, client: httpx.AsyncClient,
                 *, wallclock: Callable[[], float] = time.time) -> None:
        self.url, self.secret, self.client, self.wallclock = url, secret, client, wallclock

    async def send(self, notice: Notice) -> None:
        body = _json({"event": "message.delivered", "mailbox": notice.mailbox_ref,
                      "count": notice.count,
                      "time": notice.first_at.astimezone(UTC).isoformat(timespec="seconds")})
        await post_signed(self.client, self.url, self.secret, body, key=notice.key,
                          event="message.delivered", timestamp=int(self.wallclock()))


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class EmailRelay:
    """E-mail notices through the operator's SMTP relay (aiosmtplib)."""

    name = "email"

    def __init__(self, settings: NotifySettings, domain: str, renderer: Renderer,
                 *, clock: Callable[[], datetime]) -> None:
        self.settings, self.domain, self.renderer, self.clock = settings, domain, renderer, clock
        self.host, self.port = split_hostport(settings.smtp_relay)

    def build(self, notice: Notice) -> EmailMessage:
        if not notice.email:
            raise ChannelFailure("the patient has no e-mail address", permanent=True)
        rendered = self.renderer.render(NoticeFacts(notice.count, notice.kind, "email"))
        msg = EmailMessage(policy=SMTP)
        msg["From"] = self.settings.sender
        msg["To"] = notice.email
        msg["Subject"] = rendered.subject
        msg["Date"] = format_datetime(self.clock().astimezone(UTC))
        msg["Message-ID"] = f"<{notice.key}@{self.domain}>"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5
        msg["X-Auto-Response-Suppress"] = "All"
        msg.set_content(rendered.text, charset="utf-8", cte="quoted-printable")
        return msg

    async def send(self, notice: Notice) -> None:
        await send_email(self.settings, self.build(notice))


def _tls_context(settings: NotifySettings) -> ssl.SSLContext | None:
    if settings.smtp_tls == "none":
        return None
    cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def send_email(settings: NotifySettings, msg: EmailMessage) -> None:
    """Hand one message to the operator's SMTP relay (``notify.smtp_relay``).

    Shared by the e-mail notices and the webmail's other automatic e-mails (login codes,
    caregiver invitations), so that they all leave through one configured, verified relay.
    """
    host, port = split_hostport(settings.smtp_relay)
    mode = settings.smtp_tls
    password = settings.smtp_password.get_secret_value()
    try:
        await aiosmtplib.send(
            msg,
            hostname=host,
            port=port,
            username=settings.smtp_username or None,
            password=password if settings.smtp_username else None,
            use_tls=mode == "tls",
            start_tls=mode == "starttls",
            tls_context=_tls_context(settings),
            timeout=settings.timeout_seconds,
        )
    except aiosmtplib.SMTPResponseException as exc:
        raise ChannelFailure(f"SMTP relay answered {exc.code}",
                             permanent=exc.code >= 500) from None
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [err.code for err in exc.recipients]
        raise ChannelFailure(f"SMTP relay refused the recipient ({codes})",
                             permanent=all(c >= 500 for c in codes)) from None
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        raise ChannelFailure(f"SMTP relay unreachable: {type(exc).__name__}") from None
