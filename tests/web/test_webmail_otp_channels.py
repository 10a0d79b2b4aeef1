"""One-time codes through the real channels: the signed SMS webhook and the SMTP relay."""

from __future__ import annotations

import asyncio
import json
import time
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pytest
from webmail_support import web_settings  # type: ignore[import-not-found]

from missive.notify import signing
from missive.webmail.otp import ChannelOtpSender, OtpDeliveryError

SECRET = "otp-webhook-secret-0123456789abcdef"


async def test_sms_code_is_signed_like_notify(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    settings = web_settings(tmp_path / "d", notify={"sms_webhook_url": "https://gw.test/sms",
                                                    "sms_webhook_secret": SECRET})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sender = ChannelOtpSender(settings, client)
        await sender.send(channel="sms", to="+33612345678", code="123456", minutes=10)
    [request] = seen
    body = request.content
    assert signing.verify(SECRET.encode(), request.headers["X-Missive-Signature"], body,
                          now=time.time())
    data = json.loads(body)
    assert data["type"] == "otp" and data["to"] == "+33612345678" and "123456" in data["text"]
    assert request.headers["Idempotency-Key"] == data["idempotency_key"]


async def test_sms_gateway_refusal_is_reported(tmp_path: Path) -> None:
    settings = web_settings(tmp_path / "d", notify={"sms_webhook_url": "https://gw.test/sms",
                                                    "sms_webhook_secret": SECRET})
    transport = httpx.MockTransport(lambda r: httpx.Response(500))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(OtpDeliveryError):
            await ChannelOtpSender(settings, client).send(channel="sms", to="+33612345678",
                                                          code="123456", minutes=10)


async def test_email_code_goes_through_the_relay(tmp_path: Path) -> None:
    from aiosmtpd.smtp import SMTP

    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope.content)
            return "250 OK"

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Handler()), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        settings = web_settings(tmp_path / "d", notify={
            "smtp_relay": f"127.0.0.1:{port}", "smtp_tls": "none"})
        await ChannelOtpSender(settings).send(channel="email", to="marie@example.org",
                                              code="654321", minutes=10)
    finally:
        server.close()
        await server.wait_closed()
    msg = message_from_bytes(received[0], policy=default)
    assert msg["To"] == "marie@example.org" and msg["Auto-Submitted"] == "auto-generated"
    assert "654321" in msg.get_body().get_content()  # type: ignore[union-attr]
