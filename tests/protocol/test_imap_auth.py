"""Authentication against the directory (P3) and with professional certificates (EXTERNAL),
audited with their outcome (SPEC §7)."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import ssl
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from missive.audit.models import AuditEntry

RPPS = "10001234565"
ADDRESS = "marie.curie@test.missive.localhost"
PASSWORD = "s3cret-pass"


@pytest.fixture
async def front(settings: Any, tmp_path: Path) -> Any:
    from missive.certs import ca
    from missive.certs.files import CertsLayout
    from missive.db.schema import create_schema
    from missive.directory import professionals as pros
    from missive.imap.server import start
    from missive.runtime import build_core

    settings.imap = settings.imap.model_copy(update={"port": 0, "tls_port": 0,
                                                     "auth_failure_delay": 0})
    # Re-read certificate files at every handshake, so a revocation is seen at once.
    settings.certs = settings.certs.model_copy(update={"reload_seconds": 0})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ca.init_ca(settings)
    ca.issue_server(settings, ["localhost"], ["127.0.0.1"])
    info = ca.issue_professional(settings, RPPS, "Marie Curie")
    pem = tmp_path / "pro.pem"
    pem.write_bytes(ca.export_pem(settings, info.serial, include_key=True))
    core = await build_core(settings, with_master_key=True)
    await create_schema(core.db)
    async with core.db.write() as s:
        pro = await pros.add_professional(s, core.store, settings, actor="admin",
                                          password=PASSWORD, rpps=RPPS, name="Marie Curie",
                                          profession="Médecin", address=ADDRESS)
    imap = await start(core)  # production path: TLS from missive.certs, directory logins
    cafile = str(CertsLayout.of(settings).ca_cert)
    try:
        yield core, imap, cafile, pem, pro.mailbox_id, settings, info.serial
    finally:
        await imap.stop()
        await core.close()


async def test_directory_password_login_and_audit(front: Any) -> None:
    core, imap, cafile, _pem, mailbox_id, _settings, _serial = front
    ctx = ssl.create_default_context(cafile=cafile)

    def scenario() -> None:
        c = imaplib.IMAP4_SSL("localhost", imap.ports["imaps"], ssl_context=ctx, timeout=10)
        with pytest.raises(imaplib.IMAP4.error):
            c.login(ADDRESS, "wrong")
        c.login(ADDRESS.upper(), PASSWORD)
        assert c.select("INBOX")[0] == "OK"
        c.logout()

    await asyncio.to_thread(scenario)
    async with core.db.read() as s:
        rows = list((await s.execute(select(AuditEntry).where(
            AuditEntry.action == "auth.imap").order_by(AuditEntry.seq))).scalars())
    assert [r.outcome for r in rows] == ["refused", "ok"]
    assert rows[1].mailbox_id == mailbox_id
    assert all(PASSWORD not in (r.details or "") and "wrong" not in (r.details or "")
               for r in rows)


async def test_external_with_a_professional_certificate(front: Any) -> None:
    _core, imap, cafile, pem, _mailbox_id, _settings, _serial = front
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.load_cert_chain(str(pem))

    def scenario() -> None:
        c = imaplib.IMAP4_SSL("localhost", imap.ports["imaps"], ssl_context=ctx, timeout=10)
        assert "AUTH=EXTERNAL" in c.capabilities
        typ, _ = c.authenticate("EXTERNAL", lambda _: b"")
        assert typ == "OK"
        assert c.select("INBOX")[0] == "OK"
        c.logout()
        plain = ssl.create_default_context(cafile=cafile)
        c = imaplib.IMAP4_SSL("localhost", imap.ports["imaps"], ssl_context=plain, timeout=10)
        assert "AUTH=EXTERNAL" not in c.capabilities
        token = base64.b64encode(b"").decode() or "="
        c.send(f"x AUTHENTICATE EXTERNAL {token}\r\n".encode())
        assert c.readline().startswith(b"x NO [AUTHENTICATIONFAILED]")
        c.logout()

    await asyncio.to_thread(scenario)


async def test_revoked_certificate_cannot_authenticate(front: Any) -> None:
    from missive.certs import ca

    _core, imap, cafile, pem, _mailbox_id, settings, serial = front
    ca.revoke(settings, serial, "keyCompromise")
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.load_cert_chain(str(pem))

    def scenario() -> None:
        try:
            c = imaplib.IMAP4_SSL("localhost", imap.ports["imaps"], ssl_context=ctx, timeout=10)
            c.send(b"x AUTHENTICATE EXTERNAL =\r\n")
            reply = c.readline()
        except (ssl.SSLError, OSError, imaplib.IMAP4.abort):
            return  # refused in the TLS handshake (the CRL is loaded into it)
        assert reply.startswith(b"x NO") or reply == b"", reply

    await asyncio.to_thread(scenario)
