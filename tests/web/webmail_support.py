"""Helpers for the webmail tests (importable as ``webmail_support``): settings, a core, people,
messages, a fake one-time-code sender, login. The fixtures are in ``conftest.py``.

The app is built with a :class:`FakeOtp` that records the one-time codes instead of
sending them (the browser tests use a real local webhook server instead). The client talks
HTTPS to ``testserver`` so that Secure cookies are sent back, as a browser would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from missive.config import Settings, load_settings
from missive.db.base import utcnow
from missive.directory.models import Patient, Professional
from missive.directory.passwords import hash_password
from missive.directory.patients import add_patient
from missive.directory.professionals import add_professional
from missive.identity.ins import compute_key
from missive.identity.rpps import luhn_check_digit
from missive.mailbox import crypto
from missive.runtime import Core, build_core

PASSWORD = "tulipe velo orage mardi"


def ins_number(n: int) -> str:
    nir = f"2790351215{n:03d}"
    return nir + compute_key(nir)


def rpps_number(n: int) -> str:
    payload = f"1{n:09d}"
    return payload + luhn_check_digit(payload)


def web_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"environment": "test", "domain": "test.missive.localhost",
                            "test_mode": True}
    base.update(overrides)
    settings = load_settings(data_dir, **base)
    crypto.create_key_files(settings.master_key_path, settings.index_key_path)
    return settings


async def make_core(settings: Settings) -> Core:
    from missive.db.schema import create_schema

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    core = await build_core(settings, with_master_key=True)
    await create_schema(core.db)
    await core.store.ensure_system_mailbox()
    return core


@dataclass
class FakeOtp:
    sent: list[tuple[str, str, str]] = field(default_factory=list)

    async def send(self, *, channel: str, to: str, code: str, minutes: int) -> None:
        self.sent.append((channel, to, code))

    @property
    def last_code(self) -> str:
        return self.sent[-1][2]


async def new_client(core: Core, otp: FakeOtp) -> httpx.AsyncClient:
    """A second, independent browser (other cookies) on a new app over the same core."""
    from missive.webmail.app import create_app

    app = create_app(core.settings, core, otp_sender=otp)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="https://testserver")


async def make_patient(core: Core, n: int, *, status: str = "active",
                       password: str | None = PASSWORD, phone: str | None = "+33612345678",
                       email: str | None = None) -> Patient:
    async with core.db.write() as s:
        patient = await add_patient(
            s, core.store, core.settings, actor="test", ins=ins_number(n),
            oid="1.2.250.1.213.1.4.10", family_name="DUPONT", given_names="Marie Louise",
            birth_date_text="1979-03-05", sex_text="F", birth_place_text="51215",
            phone_text=phone, email_text=email, status="pending")
        if password is not None:
            patient.password_hash = await hash_password(core.settings, password)
        patient.status = status
        patient.updated_at = utcnow()
        await s.flush()
        s.expunge(patient)
    return patient


async def make_pro(core: Core, n: int, name: str = "Marie Curie",
                   profession: str = "Médecin généraliste",
                   password: str | None = None) -> Professional:
    async with core.db.write() as s:
        pro = await add_professional(
            s, core.store, core.settings, actor="test", password=password,
            rpps=rpps_number(n), name=name, profession=profession,
            address=f"pro{n}@{core.settings.domain}")
        s.expunge(pro)
    return pro


def message(sender: str, to: str, subject: str, text: str | None = "Bonjour,\nvoici.",
            *, html: str | None = None, attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
            headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Dr Expéditeur <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0100"
    msg["Message-ID"] = f"<{abs(hash((subject, to)))}@{sender.split('@')[1]}>"
    for k, v in (headers or {}).items():
        msg[k] = v
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


async def deliver(core: Core, sender: str, patient: Patient, raw: bytes) -> int:
    delivery = core.store.delivery(sender=sender, source="test")
    delivery.add_local(patient.mailbox_id)
    result = await delivery.commit(raw)
    return result.local[0].uid


CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


async def login(c: httpx.AsyncClient, otp: FakeOtp, identifier: str,
                password: str = PASSWORD) -> httpx.Response:
    page = await c.get("/connexion")
    r = await c.post("/connexion", data={"csrf": csrf_of(page.text), "identifier": identifier,
                                         "password": password})
    assert r.status_code == 303, r.text
    code_page = await c.get("/connexion/code")
    r = await c.post("/connexion/code", data={"csrf": csrf_of(code_page.text),
                                              "code": otp.last_code})
    assert r.status_code == 303 and r.headers["location"] == "/boite/reception", r.text
    return r


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
