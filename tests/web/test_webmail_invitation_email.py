"""Caregiver invitations sent by e-mail through the notification relay (``notify.smtp_relay``),
received by a real local SMTP server (aiosmtpd); the link shown when there is no relay or
when the relay refuses the message."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import httpx
import pytest
from webmail_support import (
    PASSWORD,
    FakeOtp,
    csrf_of,
    deliver,
    ins_number,
    login,
    make_core,
    make_patient,
    make_pro,
    message,
    new_client,
    web_settings,
)

from missive.runtime import Core

LINK = re.compile(r"https?://\S+/invitation/[A-Za-z0-9_-]+")


@dataclass
class Sink:
    """A local SMTP server that keeps what it receives (or refuses everything)."""

    port: int = 0
    refuse: bool = False
    received: list[tuple[list[str], bytes]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "550 5.7.1 not today"
        self.received.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    from aiosmtpd.smtp import SMTP

    found = Sink()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(found), "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    try:
        yield found
    finally:
        server.close()
        await server.wait_closed()


async def _relay_core(tmp_path: Path, sink: Sink) -> Core:
    return await make_core(web_settings(tmp_path / "data", notify={
        "smtp_relay": f"127.0.0.1:{sink.port}", "smtp_tls": "none",
        "sender": "ne-pas-repondre@test.missive.localhost"},
        webmail={"base_url": "https://messagerie.example.fr"}))


async def _invite(c: httpx.AsyncClient) -> httpx.Response:
    form = await c.get("/proches")
    return await c.post("/proches/inviter", data={
        "csrf": csrf_of(form.text), "name": "Julie Martin", "email": "Julie.Martin@Example.org",
        "rights": "read_reply", "until": ""})


async def test_invitation_is_emailed_to_the_caregiver_and_works(tmp_path: Path,
                                                                sink: Sink) -> None:
    core = await _relay_core(tmp_path, sink)
    otp = FakeOtp()
    try:
        patient = await make_patient(core, 71)
        pro = await make_pro(core, 71)
        await deliver(core, pro.address, patient, message(
            pro.address, "p@x", "Résultats IRM cérébrale", "Lésion à surveiller."))
        async with await new_client(core, otp) as c:
            await login(c, otp, ins_number(71))
            made = await _invite(c)
            assert made.status_code == 200, made.text
            shown = html.unescape(made.text)
            assert "Nous avons envoyé l'invitation par e-mail" in shown
            assert "julie.martin@example.org" in shown
            page_link = LINK.search(shown)
            assert page_link  # still shown, in case the e-mail does not arrive
            journal = html.unescape((await c.get("/journal")).text)
            assert "Invitation envoyée par e-mail à un proche" in journal

        [(rcpts, raw)] = sink.received
        assert rcpts == ["julie.martin@example.org"]
        msg = message_from_bytes(raw, policy=default)
        assert isinstance(msg, EmailMessage)
        assert msg["To"] == "julie.martin@example.org"
        assert msg["From"] == "ne-pas-repondre@test.missive.localhost"
        assert msg["Auto-Submitted"] == "auto-generated"  # RFC 3834 §5
        assert msg["Subject"] == "Marie Dupont vous invite sur sa messagerie Missive"
        body = msg.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert text.startswith("Bonjour Julie Martin,")
        assert "lire ses messages et y répondre" in text
        mailed = LINK.search(text)
        assert mailed and mailed.group(0) == page_link.group(0)
        assert mailed.group(0).startswith("https://messagerie.example.fr/invitation/")
        # Nothing about the patient's mail or health: no subject, body, sender or INS.
        for secret in ("IRM", "Lésion", pro.name, pro.address, ins_number(71)):
            assert secret not in raw.decode("utf-8", "replace") and secret not in text

        # The caregiver follows the link from the e-mail.
        path = "/invitation/" + mailed.group(0).rsplit("/", 1)[1]
        async with await new_client(core, otp) as carer:
            page = await carer.get(path)
            assert page.status_code == 200 and "Marie Dupont" in page.text
            done = await carer.post(path, data={
                "csrf": csrf_of(page.text), "name": "Julie Martin", "phone": "06 22 33 44 55",
                "password": PASSWORD, "confirmation": PASSWORD})
            assert done.status_code == 303 and done.headers["location"] == "/connexion?ok=invite"
            await login(carer, otp, "julie.martin@example.org")
            inbox = await carer.get("/boite/reception")
            assert "Résultats IRM cérébrale" in html.unescape(inbox.text)
    finally:
        await core.close()


async def test_refused_invitation_email_falls_back_to_the_link(tmp_path: Path,
                                                               sink: Sink) -> None:
    sink.refuse = True
    core = await _relay_core(tmp_path, sink)
    otp = FakeOtp()
    try:
        await make_patient(core, 72)
        async with await new_client(core, otp) as c:
            await login(c, otp, ins_number(72))
            made = await _invite(c)
            assert made.status_code == 200
            shown = html.unescape(made.text)
            assert "n'a pas pu être envoyé" in shown and "Donnez ce lien" in shown
            assert LINK.search(shown)
    finally:
        await core.close()
    assert sink.received == []


async def test_without_relay_the_link_is_shown_and_nothing_sent(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    assert not wcore.settings.notify.smtp_relay
    await make_patient(wcore, 73)
    await login(client, otp, ins_number(73))
    made = await _invite(client)
    assert made.status_code == 200
    shown = html.unescape(made.text)
    assert "Invitation prête" in shown and "Donnez ce lien" in shown
    assert "par e-mail" not in shown and LINK.search(shown)
