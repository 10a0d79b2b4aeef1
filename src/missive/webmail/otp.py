"""Sending login one-time codes through the notification channels (SPEC §5, §6).

The notification component's outbox is for content-free "you have mail" notices, queued in the
delivery transaction; a login code must leave at once and is never retried later (it expires in
minutes). This module therefore defines the small :class:`OtpSender` protocol the webmail needs
and an implementation over the same channels and secrets as ``missive.notify``:

- SMS: POST of a JSON body to ``notify.sms_webhook_url``, signed with HMAC-SHA256 under
  ``notify.sms_webhook_secret`` in ``X-Missive-Signature: sha256=<hex>`` over
  ``<timestamp>.<body>`` with the timestamp in ``X-Missive-Timestamp`` (replay protection on the
  gateway side) and an ``Idempotency-Key`` header;
- e-mail: a short plain-text message through ``notify.smtp_relay`` (aiosmtplib).

The code is the only variable: no name, no health data. Codes are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from email.message import EmailMessage
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


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


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
        notify = self.settings.notify
        if not notify.sms_webhook_url:
            raise OtpDeliveryError("no SMS gateway configured (notify.sms_webhook_url)")
        body = json.dumps({"type": "otp", "to": to, "text": text},
                          ensure_ascii=False).encode()
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Missive-Timestamp": ts,
            "X-Missive-Signature": sign_webhook(notify.sms_webhook_secret.get_secret_value(),
                                                ts, body),
            "Idempotency-Key": uuid.uuid4().hex,
        }
        try:
            if self._client is not None:
                resp = await self._client.post(notify.sms_webhook_url, content=body,
                                               headers=headers, timeout=notify.timeout_seconds)
            else:
                async with httpx.AsyncClient() as client:
                    resp = await client.post(notify.sms_webhook_url, content=body,
                                             headers=headers, timeout=notify.timeout_seconds)
        except httpx.HTTPError as exc:
            log.warning("otp sms webhook failed: %s", type(exc).__name__)
            raise OtpDeliveryError("SMS gateway unreachable") from None
        if resp.status_code >= 300:
            log.warning("otp sms webhook answered %s", resp.status_code)
            raise OtpDeliveryError(f"SMS gateway answered {resp.status_code}")

    async def _email(self, to: str, text: str) -> None:
        import aiosmtplib

        notify = self.settings.notify
        if not notify.smtp_relay:
            raise OtpDeliveryError("no e-mail relay configured (notify.smtp_relay)")
        host, _, port = notify.smtp_relay.rpartition(":")
        msg = EmailMessage()
        msg["From"] = notify.sender
        msg["To"] = to
        msg["Subject"] = "Votre code de connexion Missive"
        msg.set_content(text)
        try:
            await aiosmtplib.send(
                msg, hostname=host or notify.smtp_relay, port=int(port or 25),
                username=notify.smtp_username or None,
                password=notify.smtp_password.get_secret_value() or None,
                start_tls=notify.smtp_tls == "starttls", use_tls=notify.smtp_tls == "tls",
                timeout=notify.timeout_seconds)
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("otp e-mail failed: %s", type(exc).__name__)
            raise OtpDeliveryError("e-mail relay unreachable") from None
