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
- e-mail: a short plain-text message through ``notify.smtp_relay``
  (:func:`missive.notify.channels.send_email`), marked ``Auto-Submitted: auto-generated``
  (RFC 3834 §5).

The code is the only variable: no name, no health data. Codes are never logged.
"""

from __future__ import annotations

import logging
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
        from missive.notify.channels import ChannelFailure, send_email

        notify = self.settings.notify
        if not notify.smtp_relay:
            raise OtpDeliveryError("no e-mail relay configured (notify.smtp_relay)")
        msg = EmailMessage(policy=SMTP)
        msg["From"] = notify.sender
        msg["To"] = to
        msg["Subject"] = "Votre code de connexion Missive"
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(text, charset="utf-8", cte="quoted-printable")
        try:
            await send_email(notify, msg)
        except ChannelFailure as exc:
            log.warning("otp e-mail failed: %s", exc.reason)
            raise OtpDeliveryError("e-mail relay did not accept the code") from None
