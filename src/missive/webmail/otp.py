"""Sending login one-time codes through the notification channels (SPEC §5, §6).

The notification component's outbox is for content-free "you have mail" notices, queued in the
delivery transaction and coalesced; a login code must leave at once and is never retried later
(it expires in minutes). This module therefore defines the small :class:`OtpSender` protocol the
webmail needs and an implementation over the same channels, secrets and wire format as
``missive.notify.channels``:

- SMS: ``{"type": "otp", "to": "+33…", "text": "…", "idempotency_key": "…"}`` POSTed to
  ``notify.sms_webhook_url``, signed by :func:`missive.notify.channels.post_signed`
  (``X-Missive-Signature: t=<unix>,v1=<HMAC-SHA256 hex>``, ``Idempotency-Key``,
  ``X-Missive-Event: login.otp``), so the gateway verifies it like every other notice;
- e-mail: a short plain-text message through ``notify.smtp_relay`` (aiosmtplib), marked
  ``Auto-Submitted: auto-generated`` (RFC 3834 §5).

The code is the only variable: no name, no health data. Codes are never logged.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from email.message import EmailMessage
from email.policy import SMTP
from typing import Literal, Protocol

import httpx

from missive.config import Settings

log = logging.getLogger(__name__)
Channel = Literal["sms", "email"]


class OtpDeliveryError(Exception):
    """The code could not be handed to the channel (the user is told to try again)."""


class OtpSender(Protocol):
    async def send(self, *, channel: Channel, to: str, code: str, minutes: int) -> None:
        """Hand a one-time code to ``channel`` for ``to``; raise OtpDeliveryError on failure."""


def otp_text(code: str, minutes: int) -> str:
    return (f"Missive : votre code de connexion est {code}. Il est valable {minutes} minutes. "
            "Ne le communiquez à personne.")


class ChannelOtpSender:
    """OTP over the SMS webhook and the e-mail relay configured in ``[notify]``."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._client = client

    async def send(self, *, channel: Channel, to: str, code: str, minutes: int) -> None:
        if channel == "sms":
            await self._sms(to, otp_text(code, minutes))
        else:
            await self._email(to, otp_text(code, minutes))

    async def _sms(self, to: str, text: str) -> None:
        import json

        from missive.notify.channels import ChannelFailure, post_signed

        notify = self.settings.notify
        if not notify.sms_webhook_url:
            raise OtpDeliveryError("no SMS gateway configured (notify.sms_webhook_url)")
        key = uuid.uuid4().hex
        body = json.dumps({"type": "otp", "to": to, "text": text, "idempotency_key": key},
                          ensure_ascii=False, separators=(",", ":")).encode()
        secret = notify.sms_webhook_secret.get_secret_value().encode()
        try:
            if self._client is not None:
                await post_signed(self._client, notify.sms_webhook_url, secret, body, key=key,
                                  event="login.otp", timestamp=int(time.time()))
            else:
                async with httpx.AsyncClient(timeout=notify.timeout_seconds) as client:
                    await post_signed(client, notify.sms_webhook_url, secret, body, key=key,
                                      event="login.otp", timestamp=int(time.time()))
        except ChannelFailure as exc:
            log.warning("otp sms webhook failed: %s", exc.reason)
            raise OtpDeliveryError("SMS gateway did not accept the code") from None

    async def _email(self, to: str, text: str) -> None:
        import aiosmtplib

        notify = self.settings.notify
        if not notify.smtp_relay:
            raise OtpDeliveryError("no e-mail relay configured (notify.smtp_relay)")
        host, _, port = notify.smtp_relay.rpartition(":")
        msg = EmailMessage(policy=SMTP)
        msg["From"] = notify.sender
        msg["To"] = to
        msg["Subject"] = "Votre code de connexion Missive"
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text, charset="utf-8", cte="quoted-printable")
        context: ssl.SSLContext | None = None
        if notify.smtp_tls != "none":
            cafile = getattr(notify, "smtp_ca_file", None)
            context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            await aiosmtplib.send(
                msg, hostname=host.strip("[]") or notify.smtp_relay, port=int(port or 25),
                username=notify.smtp_username or None,
                password=(notify.smtp_password.get_secret_value()
                          if notify.smtp_username else None),
                start_tls=notify.smtp_tls == "starttls", use_tls=notify.smtp_tls == "tls",
                tls_context=context, timeout=notify.timeout_seconds)
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("otp e-mail failed: %s", type(exc).__name__)
            raise OtpDeliveryError("e-mail relay did not accept the code") from None
