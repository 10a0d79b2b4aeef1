"""A running SMTP front with a populated directory, for the ``test_smtp_*`` protocol tests.

:func:`smtp_env` builds, in ``tmp_path``: settings (ports 0), the CA and server certificate,
the schema, professionals (active, suspended), patients (active, pending, opposed, closed),
and two trust-space peer operators, each with its own CA and operator certificate. The front
runs on a core built **without the master key** (C2: the SMTP process only seals).

Clients: :meth:`SmtpEnv.client_context` trusts our CA (and can present a certificate);
:meth:`SmtpEnv.submit` is a small smtplib helper that returns the last reply.
"""

from __future__ import annotations

import asyncio
import email.utils
import smtplib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from missive.certs import ca
from missive.certs.files import CertsLayout
from missive.config import Settings, load_settings
from missive.db.schema import create_schema
from missive.directory.passwords import hash_password
from missive.directory.patients import add_patient, find_patient, set_patient_status
from missive.directory.professionals import add_professional
from missive.directory.trust import add_trust_domain
from missive.identity.ins import compute_key
from missive.identity.rpps import luhn_check_digit
from missive.mailbox import crypto
from missive.mta.server import SmtpFront, start
from missive.runtime import Core, build_core


def make_settings_for(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {"environment": "test", "domain": "test.missive.localhost",
                            "test_mode": True}
    base.update(overrides)
    settings = load_settings(data_dir, **base)
    crypto.create_key_files(settings.master_key_path, settings.index_key_path)
    return settings


def ins_number(n: int) -> str:
    """A valid matricule INS whose order number is ``n``."""
    nir = f"27903512{15:02d}{n:03d}"
    return nir + compute_key(nir)


def rpps_number(n: int) -> str:
    payload = f"1{n:09d}"
    return payload + luhn_check_digit(payload)


PASSWORD = "correct horse battery staple"
PATIENT_PASSWORD = "patient password 123"



@dataclass
class Peer:
    """A trust-space operator: its domain, CA and operator certificate files."""

    domain: str
    ca_pem: Path
    cert: Path
    key: Path


@dataclass
class SmtpEnv:
    settings: Settings
    admin: Core
    core: Core
    front: SmtpFront
    pro: str
    pro_rpps: str
    suspended: str
    pro2: str
    patient: str
    patient_ins: str
    pending: str
    opposed: str
    closed: str
    peers: dict[str, Peer] = field(default_factory=dict)

    @property
    def ports(self) -> dict[str, int]:
        return self.front.ports

    @property
    def domain(self) -> str:
        return self.settings.domain

    @property
    def ca_file(self) -> Path:
        return CertsLayout.of(self.settings).ca_cert

    def client_context(self, cert: Path | None = None, key: Path | None = None,
                       extra_ca: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if extra_ca is not None:
            ctx.load_verify_locations(cafile=str(extra_ca))
        ctx.check_hostname = False
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
        return ctx

    def smtp(self, *, listener: str = "submission", cert: Path | None = None,
             key: Path | None = None, starttls: bool = True) -> smtplib.SMTP:
        """A connected smtplib client (STARTTLS done unless ``starttls=False``)."""
        ctx = self.client_context(cert, key)
        if listener == "submission_tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", self.ports["smtp_submission_tls"],
                                                    context=ctx, timeout=60)
            client.ehlo("client.test")
            return client
        port = self.ports["smtp_mx" if listener == "mx" else "smtp_submission"]
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        client.ehlo("client.test")
        if starttls:
            client.starttls(context=ctx)
            client.ehlo("client.test")
        return client

    def login(self, user: str | None = None, password: str = PASSWORD,
              listener: str = "submission") -> smtplib.SMTP:
        client = self.smtp(listener=listener)
        client.login(user or self.pro, password)
        return client

    async def mailbox_count(self, mailbox_of: str) -> int:
        """Messages in the INBOX of a local address (counted with the master key)."""
        from sqlalchemy import func, select

        from missive.directory.recipients import resolve_recipient
        from missive.mailbox.models import Message

        async with self.admin.db.read() as s:
            info = await resolve_recipient(s, mailbox_of, self.settings)
            assert info.mailbox_id is not None
            return int((await s.execute(select(func.count(Message.id)).where(
                Message.mailbox_id == info.mailbox_id))).scalar_one())

    async def fetch_all(self, mailbox_of: str) -> list[bytes]:
        """Raw messages of a local address, opened with the master key."""
        from missive.directory.recipients import resolve_recipient

        async with self.admin.db.read() as s:
            info = await resolve_recipient(s, mailbox_of, self.settings)
        assert info.mailbox_id is not None
        box = await self.admin.store.open(info.mailbox_id)
        out: list[bytes] = []
        for msg in await box.messages("INBOX"):
            out.append(await box.fetch("INBOX", msg.uid))
        return out


def message(sender: str, to: str, subject: str = "Compte rendu", body: str = "Bonjour.\r\n",
            extra: str = "", message_id: str | None = None) -> bytes:
    mid = message_id or email.utils.make_msgid(domain="client.test")
    head = (f"From: Dr Test <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: {mid}\r\n{extra}"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
    return (head + body).encode()


def _peer(tmp: Path, domain: str) -> tuple[Peer, str]:
    peer_settings = make_settings_for(tmp / f"peer-{domain}", domain=domain)
    ca.ensure_initialised(peer_settings)
    info = ca.issue_operator(peer_settings, domain)
    layout = CertsLayout.of(peer_settings)
    assert info.key_file is not None
    return Peer(domain, layout.ca_cert, Path(info.cert_file), Path(info.key_file)), info.subject


async def smtp_env(tmp_path: Path, database_url: str | None = None,
                   **mta: Any) -> SmtpEnv:
    """Build and start the environment described in the module docstring."""
    options: dict[str, Any] = {"submission_port": 0, "submission_tls_port": 0, "mx_port": 0,
                               "patient_submission": True, "auth_lockout_seconds": 60.0,
                               "command_timeout": 30.0, "data_timeout": 30.0,
               "directory_cache_seconds": 0.0}
    options.update(mta)
    extra: dict[str, Any] = {"mta": options}
    if database_url:
        extra["database_url"] = database_url
    settings = make_settings_for(tmp_path / "data", **extra)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(ca.ensure_initialised, settings)
    admin = await build_core(settings, with_master_key=True)
    await create_schema(admin.db)
    await admin.store.ensure_system_mailbox()
    d = settings.domain
    pd = settings.patient_domain
    names = {"pro": f"marie.curie@{d}", "suspended": f"louis.pasteur@{d}",
             "pro2": f"claude.bernard@{d}"}
    ins = {k: ins_number(i) for i, k in enumerate(("active", "pending", "opposed", "closed"), 1)}
    async with admin.db.write() as s:
        for i, (key, address) in enumerate(names.items(), 1):
            await add_professional(s, admin.store, settings, actor="test", password=PASSWORD,
                                   rpps=rpps_number(i), name=f"Pro {key}",
                                   profession="Médecin", address=address,
                                   status="suspended" if key == "suspended" else "active")
        for key, number in ins.items():
            await add_patient(s, admin.store, settings, actor="test", ins=number,
                              oid="1.2.250.1.213.1.4.10", family_name="DUPONT",
                              given_names="Marie", birth_date_text="1979-03-05", sex_text="F",
                              birth_place_text="51215",
                              status=key if key in ("active", "pending") else "active")
        for key in ("opposed", "closed"):
            await set_patient_status(s, admin.store, ins[key], key, actor="test")
        active = await find_patient(s, ins["active"])
        assert active is not None
        active.password_hash = await hash_password(settings, PATIENT_PASSWORD)
    peers: dict[str, Peer] = {}
    for domain in ("peer.test", "other.test"):
        peer, subject = await asyncio.to_thread(_peer, tmp_path, domain)
        async with admin.db.write() as s:
            await add_trust_domain(s, domain, ca_data=peer.ca_pem.read_bytes(),
                                   operator_dn=subject, actor="test")
        peers[domain] = peer
    core = await build_core(settings, with_master_key=False)
    front = await start(core)
    return SmtpEnv(settings=settings, admin=admin, core=core, front=front, pro=names["pro"],
                   pro_rpps=rpps_number(1), suspended=names["suspended"], pro2=names["pro2"],
                   patient=f"{ins['active']}@{pd}", patient_ins=ins["active"],
                   pending=f"{ins['pending']}@{pd}", opposed=f"{ins['opposed']}@{pd}",
                   closed=f"{ins['closed']}@{pd}", peers=peers)


async def stop_env(env: SmtpEnv) -> None:
    await env.front.stop()
    await env.core.close()
    await env.admin.close()


def reply_of(exc: BaseException) -> tuple[int, str]:
    """(code, text) of an smtplib refusal exception."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return code, text.decode()
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code, exc.smtp_error.decode()
    raise AssertionError(f"not an SMTP reply: {exc!r}")


def send(client: smtplib.SMTP, sender: str, rcpts: list[str], data: bytes,
         mail_options: tuple[str, ...] = (), rcpt_options: tuple[str, ...] = ()) -> tuple[int, str]:
    """MAIL, RCPT…, DATA step by step; returns the first refusal or the final reply."""
    code, text = client.mail(sender, list(mail_options))
    if code != 250:
        client.rset()
        return code, text.decode()
    for rcpt in rcpts:
        code, text = client.rcpt(rcpt, list(rcpt_options))
        if code not in (250, 251):
            client.rset()
            return code, text.decode()
    code, text = client.data(data)
    return code, text.decode()
