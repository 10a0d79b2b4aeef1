"""Webmail flows over ASGI: activation, login with a one-time code, reading, sorting, search,
settings, journal, closing the account (SPEC §5)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from webmail_support import (  # type: ignore[import-not-found]
    PASSWORD,
    PDF,
    FakeOtp,
    csrf_of,
    deliver,
    ins_number,
    login,
    make_patient,
    make_pro,
    message,
)

from missive.directory.models import Patient
from missive.runtime import Core
from missive.webmail import codes


async def test_activation_then_login_with_one_time_code(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 1, status="pending", password=None)
    async with wcore.db.write() as s:
        issued = await codes.issue_code(s, wcore.settings, patient.id, "activation")
    page = await client.get("/activation")
    assert page.status_code == 200
    wrong = await client.post("/activation", data={
        "csrf": csrf_of(page.text), "ins": ins_number(1), "code": "AAAA-BBBB-CCCC"})
    assert wrong.status_code == 400 and "pas valable" in wrong.text
    ok = await client.post("/activation", data={
        "csrf": csrf_of(wrong.text), "ins": ins_number(1), "code": issued.display.lower()})
    assert ok.status_code == 303 and ok.headers["location"] == "/mot-de-passe"
    form = await client.get("/mot-de-passe")
    weak = await client.post("/mot-de-passe", data={
        "csrf": csrf_of(form.text), "password": "motdepasse123", "confirmation": "motdepasse123"})
    assert weak.status_code == 400 and "trop facile" in weak.text
    short = await client.post("/mot-de-passe", data={
        "csrf": csrf_of(weak.text), "password": "court", "confirmation": "court"})
    assert short.status_code == 400 and "au moins 12" in short.text
    done = await client.post("/mot-de-passe", data={
        "csrf": csrf_of(short.text), "password": PASSWORD, "confirmation": PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/connexion?ok=pw"
    async with wcore.db.read() as s:
        row = (await s.execute(select(Patient).where(Patient.id == patient.id))).scalar_one()
    assert row.status == "active" and row.password_hash and PASSWORD not in row.password_hash
    # The code is single-use.
    again = await client.get("/activation")
    reused = await client.post("/activation", data={
        "csrf": csrf_of(again.text), "ins": ins_number(1), "code": issued.code})
    assert reused.status_code == 400
    await login(client, otp, ins_number(1))
    assert otp.sent[-1][0] == "sms" and otp.sent[-1][1] == "+33612345678"
    inbox = await client.get("/boite/reception")
    assert inbox.status_code == 200 and "Boîte de réception" in inbox.text


async def test_wrong_one_time_code_is_refused_then_exhausted(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    await make_patient(wcore, 2)
    page = await client.get("/connexion")
    r = await client.post("/connexion", data={"csrf": csrf_of(page.text),
                                              "identifier": ins_number(2), "password": PASSWORD})
    assert r.status_code == 303
    wrong = "000000" if otp.last_code != "000000" else "111111"
    for _ in range(4):
        form = await client.get("/connexion/code")
        r = await client.post("/connexion/code", data={"csrf": csrf_of(form.text),
                                                       "code": wrong})
        assert r.status_code == 401 and "pas le bon" in r.text
    form = await client.get("/connexion/code")
    r = await client.post("/connexion/code", data={"csrf": csrf_of(form.text), "code": wrong})
    assert r.status_code == 401 and "Reconnectez-vous" in r.text
    assert (await client.get("/boite/reception")).status_code == 303


async def test_read_message_attachment_and_sort(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 3)
    pro = await make_pro(wcore, 3, "Marie Curie", "Radiologue")
    raw = message(pro.address, f"{ins_number(3).lower()}@x", "Résultats de votre scanner",
                  "Voici le compte rendu.", attachments=[("compte rendu.pdf", "application/pdf",
                                                          PDF)])
    uid = await deliver(wcore, pro.address, patient, raw)
    await login(client, otp, ins_number(3))
    inbox = await client.get("/boite/reception")
    assert "Résultats de votre scanner" in inbox.text
    assert "Marie Curie" in inbox.text and "Radiologue" in inbox.text
    assert pro.address not in inbox.text  # name and profession, not the address
    assert "Non lu" in inbox.text and "Pièce jointe" in inbox.text
    view = await client.get(f"/boite/reception/{uid}")
    assert view.status_code == 200 and "Voici le compte rendu." in view.text
    assert "compte rendu.pdf" in view.text
    inbox = await client.get("/boite/reception")
    assert "Non lu" not in inbox.text
    part = re.search(rf'/boite/reception/{uid}/piece/([0-9.]+)"', view.text)
    assert part
    dl = await client.get(f"/boite/reception/{uid}/piece/{part.group(1)}")
    assert dl.status_code == 200 and dl.content == PDF
    assert dl.headers["content-type"] == "application/pdf"
    assert dl.headers["content-disposition"].startswith("attachment;")
    assert "filename*=UTF-8''compte%20rendu.pdf" in dl.headers["content-disposition"]
    inline = await client.get(f"/boite/reception/{uid}/piece/{part.group(1)}/voir")
    assert inline.headers["content-disposition"].startswith("inline;")
    # Archive, then trash from the archive, then restore to the inbox.
    r = await client.post(f"/boite/reception/{uid}/archiver", data={"csrf": csrf_of(view.text)})
    assert r.status_code == 303
    archives = await client.get("/boite/archives")
    assert "Résultats de votre scanner" in archives.text
    assert "Résultats de votre scanner" not in (await client.get("/boite/reception")).text
    auid = int(re.search(r'/boite/archives/(\d+)"', archives.text).group(1))  # type: ignore[union-attr]
    r = await client.post(f"/boite/archives/{auid}/supprimer",
                          data={"csrf": csrf_of(archives.text)})
    trash = await client.get("/boite/corbeille")
    assert "Résultats de votre scanner" in trash.text
    tuid = int(re.search(r'/boite/corbeille/(\d+)"', trash.text).group(1))  # type: ignore[union-attr]
    r = await client.post(f"/boite/corbeille/{tuid}/restaurer",
                          data={"csrf": csrf_of(trash.text)})
    assert "Résultats de votre scanner" in (await client.get("/boite/reception")).text
    # Search (POST: the words stay out of the URL).
    form = await client.get("/recherche")
    found = await client.post("/recherche", data={"csrf": csrf_of(form.text), "q": "scanner"})
    assert found.status_code == 200 and "Résultats de votre scanner" in found.text
    none = await client.post("/recherche", data={"csrf": csrf_of(form.text), "q": "zzzqqq"})
    assert "Aucun message" in none.text
    # Journal lists the reading and the download.
    journal = await client.get("/journal")
    journal_text = html.unescape(journal.text)
    assert "Lecture d'un message" in journal_text
    assert "Ouverture d'une pièce jointe" in journal_text


async def test_xdm_documents_are_listed(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    import io
    import zipfile

    patient = await make_patient(wcore, 4)
    pro = await make_pro(wcore, 4)
    metadata = """<?xml version="1.0"?>
<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
  xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>
<rim:ExtrinsicObject id="doc1" mimeType="text/xml"
  objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
<rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>
<rim:Name><rim:LocalizedString value="Compte rendu opératoire"/></rim:Name>
</rim:ExtrinsicObject></rim:RegistryObjectList></SubmitObjectsRequest>"""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata)
        zf.writestr("IHE_XDM/SUBSET01/DOC0001.XML", "<ClinicalDocument/>")
    raw = message(pro.address, "p@x", "Votre dossier",
                  attachments=[("IHE_XDM.ZIP", "application/zip", buf.getvalue())])
    uid = await deliver(wcore, pro.address, patient, raw)
    await login(client, otp, ins_number(4))
    view = await client.get(f"/boite/reception/{uid}")
    assert "Compte rendu opératoire" in view.text


async def test_settings_and_close_account(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 5)
    await login(client, otp, ins_number(5))
    form = await client.get("/parametres")
    bad = await client.post("/parametres", data={"csrf": csrf_of(form.text), "channel": "email",
                                                 "phone": "", "email": ""})
    assert bad.status_code == 400 and "adresse e-mail" in bad.text
    diverted = await client.post("/parametres", data={
        "csrf": csrf_of(form.text), "channel": "both", "phone": "06 99 99 99 99",
        "email": "marie@example.org"})
    assert diverted.status_code == 400 and "mot de passe actuel" in diverted.text
    ok = await client.post("/parametres", data={
        "csrf": csrf_of(form.text), "channel": "both", "phone": "06 12 34 56 78",
        "email": "marie@example.org", "current_password": PASSWORD})
    assert ok.status_code == 303
    unchanged = await client.post("/parametres", data={  # same contacts: no password needed
        "csrf": csrf_of(form.text), "channel": "both", "phone": "+33612345678",
        "email": "marie@example.org"})
    assert unchanged.status_code == 303
    async with wcore.db.read() as s:
        row = await s.get(Patient, patient.id)
        assert row is not None
        assert row.notify_channel == "both" and row.email == "marie@example.org"
        assert row.read_receipts is False
    close = await client.get("/fermer-mon-compte")
    assert "effacés définitivement" in close.text
    refused = await client.post("/fermer-mon-compte", data={
        "csrf": csrf_of(close.text), "password": PASSWORD})
    assert refused.status_code == 400 and "Cochez" in refused.text
    done = await client.post("/fermer-mon-compte", data={
        "csrf": csrf_of(close.text), "password": PASSWORD, "confirm": "oui"})
    assert done.status_code == 200 and "Votre compte est fermé" in done.text
    async with wcore.db.read() as s:
        row = await s.get(Patient, patient.id)
        assert row is not None and row.status == "closed"
    assert (await client.get("/boite/reception")).status_code == 303


async def test_logout_everywhere_ends_other_sessions(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    from webmail_support import new_client  # type: ignore[import-not-found]

    await make_patient(wcore, 6)
    await login(client, otp, ins_number(6))
    async with await new_client(wcore, otp) as other:
        await login(other, otp, ins_number(6))
        assert (await other.get("/boite/reception")).status_code == 200
        form = await client.get("/parametres")
        r = await client.post("/deconnexion/partout", data={"csrf": csrf_of(form.text)})
        assert r.status_code == 303
        assert (await other.get("/boite/reception")).status_code == 303
    assert (await client.get("/boite/reception")).status_code == 303


async def test_pages_walk_every_message_once_in_both_directions(
        tmp_path: Path, otp: FakeOtp) -> None:
    from webmail_support import make_core, new_client, web_settings  # type: ignore[import-not-found]

    core = await make_core(web_settings(tmp_path / "d", webmail={"page_size": 3}))
    try:
        patient = await make_patient(core, 7)
        pro = await make_pro(core, 7)
        uids = [await deliver(core, pro.address, patient,
                              message(pro.address, "p@x", f"Message numéro {i:02d}"))
                for i in range(10)]
        box = await core.store.open(patient.mailbox_id)
        await box.move("INBOX", [uids[2], uids[5], uids[6]], "Archive")  # gaps in the UIDs
        expected = [f"Message numéro {i:02d}" for i in reversed(range(10)) if i not in (2, 5, 6)]
        async with await new_client(core, otp) as c:
            await login(c, otp, ins_number(7))
            seen: list[str] = []
            url: str | None = "/boite/reception"
            pages: list[str] = []
            while url:
                text = (await c.get(url)).text
                pages.append(url)
                seen += re.findall(r"Message numéro \d\d", text)
                older = re.search(r'href="(/boite/reception\?avant=\d+)"', text)
                url = older.group(1) if older else None
            assert seen == expected and len(pages) == 3
            back: list[str] = []
            text = (await c.get(pages[-1])).text
            while True:
                back = re.findall(r"Message numéro \d\d", text) + back
                newer = re.search(r'href="(/boite/reception\?apres=\d+)"', text)
                if not newer:
                    break
                text = (await c.get(newer.group(1))).text
            assert back == expected
    finally:
        await core.close()


async def test_idle_session_ends_with_a_message(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from missive.db.base import utcnow
    from missive.webmail.models import WebSession

    await make_patient(wcore, 8)
    await login(client, otp, ins_number(8))
    assert (await client.get("/boite/reception")).status_code == 200
    async with wcore.db.write() as s:
        await s.execute(update(WebSession).values(
            idle_expires_at=utcnow() - timedelta(seconds=1)))
    r = await client.get("/boite/reception")
    assert r.status_code == 303 and r.headers["location"] == "/connexion"
    page = await client.get("/connexion")
    assert "sans activité" in html.unescape(page.text)


async def test_authenticator_app_replaces_sms_codes_with_fallback(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    import base64
    import time

    from missive.webmail import totp

    await make_patient(wcore, 9)
    await login(client, otp, ins_number(9))
    page = await client.get("/parametres/application")
    r = await client.post("/parametres/application", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    page = await client.get("/parametres/application")
    key = re.search(r'<p class="target"><code>([A-Z2-7 ]+)</code>', page.text)
    assert key
    text = key.group(1).replace(" ", "")
    secret = base64.b32decode(text + "=" * (-len(text) % 8))
    step = totp.step_of(time.time())
    bad = await client.post("/parametres/application/confirmer",
                            data={"csrf": csrf_of(page.text), "code": "000000"
                                  if totp.hotp(secret, step) != "000000" else "111111"})
    assert bad.status_code == 400
    ok = await client.post("/parametres/application/confirmer",
                           data={"csrf": csrf_of(page.text), "code": totp.hotp(secret, step)})
    assert ok.status_code == 303
    form = await client.get("/parametres")
    await client.post("/deconnexion", data={"csrf": csrf_of(form.text)})

    sent_before = len(otp.sent)
    page = await client.get("/connexion")
    r = await client.post("/connexion", data={"csrf": csrf_of(page.text),
                                              "identifier": ins_number(9), "password": PASSWORD})
    assert r.status_code == 303 and len(otp.sent) == sent_before  # no SMS
    code_page = await client.get("/connexion/code")
    assert "application" in code_page.text
    reused = await client.post("/connexion/code", data={"csrf": csrf_of(code_page.text),
                                                        "code": totp.hotp(secret, step)})
    assert reused.status_code == 401  # a code is accepted once (RFC 6238 §5.2)
    r = await client.post("/connexion/code", data={"csrf": csrf_of(code_page.text),
                                                   "code": totp.hotp(secret, step + 1)})
    assert r.status_code == 303 and r.headers["location"] == "/boite/reception"
    form = await client.get("/parametres")
    await client.post("/deconnexion", data={"csrf": csrf_of(form.text)})

    # Without the phone app: a code by SMS instead.
    page = await client.get("/connexion")
    await client.post("/connexion", data={"csrf": csrf_of(page.text),
                                          "identifier": ins_number(9), "password": PASSWORD})
    code_page = await client.get("/connexion/code")
    r = await client.post("/connexion/code/envoyer", data={"csrf": csrf_of(code_page.text)})
    assert r.status_code == 303 and len(otp.sent) == sent_before + 1
    code_page = await client.get("/connexion/code")
    r = await client.post("/connexion/code", data={"csrf": csrf_of(code_page.text),
                                                   "code": otp.last_code})
    assert r.status_code == 303 and r.headers["location"] == "/boite/reception"


async def test_stay_connected_moves_the_idle_deadline_only(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    from datetime import timedelta

    from sqlalchemy import select, update

    from missive.db.base import utcnow
    from missive.webmail.models import WebSession

    await make_patient(wcore, 10)
    await login(client, otp, ins_number(10))
    inbox = await client.get("/boite/reception")
    assert 'src="/static/session.js"' in inbox.text and "<script>" not in inbox.text
    token = re.search(r'name="missive-csrf" content="([^"]+)"', inbox.text).group(1)  # type: ignore[union-attr]
    soon = utcnow() + timedelta(seconds=30)
    async with wcore.db.write() as s:
        await s.execute(update(WebSession).values(idle_expires_at=soon))
    assert (await client.post("/session/prolonger")).status_code == 403  # no token
    r = await client.post("/session/prolonger", headers={"X-CSRF-Token": token})
    assert r.status_code == 204
    async with wcore.db.read() as s:
        row = (await s.execute(select(WebSession))).scalars().one()
    assert row.idle_expires_at > soon + timedelta(minutes=5)
    assert row.idle_expires_at <= row.expires_at


async def test_password_change_needs_the_current_one_and_ends_sessions(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    from webmail_support import new_client  # type: ignore[import-not-found]

    await make_patient(wcore, 11)
    await login(client, otp, ins_number(11))
    async with await new_client(wcore, otp) as other:
        await login(other, otp, ins_number(11))
        form = await client.get("/parametres/mot-de-passe")
        new = "girafe piano neige samedi"
        wrong = await client.post("/parametres/mot-de-passe", data={
            "csrf": csrf_of(form.text), "current_password": "pas le bon",
            "password": new, "confirmation": new})
        assert wrong.status_code == 400 and "actuel" in html.unescape(wrong.text)
        done = await client.post("/parametres/mot-de-passe", data={
            "csrf": csrf_of(form.text), "current_password": PASSWORD,
            "password": new, "confirmation": new})
        assert done.status_code == 303
        assert (await other.get("/boite/reception")).status_code == 303
    assert (await client.get("/boite/reception")).status_code == 303
    await login(client, otp, ins_number(11), password="girafe piano neige samedi")


async def test_journal_pages_and_public_help(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 12)
    pro = await make_pro(wcore, 12)
    help_page = await client.get("/aide")
    assert help_page.status_code == 200 and "Accessibilité" in help_page.text
    for i in range(105):
        await deliver(wcore, pro.address, patient, message(pro.address, "p@x", f"M{i}"))
    await login(client, otp, ins_number(12))
    first = html.unescape((await client.get("/journal")).text)
    older = re.search(r'href="(/journal\?avant=\d+)"', first)
    assert older and first.count("<tr>") == 101  # header + 100 entries
    second = html.unescape((await client.get(older.group(1))).text)
    assert "Revenir aux plus récentes" in second and "Messagerie créée" in second
    assert 1 < second.count("<tr>") < 101


async def test_a_rendered_folder_page_is_reused_only_while_nothing_changes(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from missive.mailbox.store import MailboxSession

    patient = await make_patient(wcore, 12)
    pro = await make_pro(wcore, 12)
    await deliver(wcore, pro.address, patient, message(pro.address, "p@x", "Premier envoi"))
    await login(client, otp, ins_number(12))
    web = client._transport.app.state.web  # type: ignore[attr-defined]
    calls = 0
    real_page = MailboxSession.page

    async def counting_page(self: MailboxSession, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real_page(self, *args, **kwargs)

    monkeypatch.setattr(MailboxSession, "page", counting_page)
    first = (await client.get("/boite/reception")).text
    again = (await client.get("/boite/reception")).text
    assert again == first and calls == 1  # nothing changed: the same page, not re-read
    # A new message (a new modseq) is shown at once.
    await deliver(wcore, pro.address, patient, message(pro.address, "p@x", "Second envoi"))
    fresh = (await client.get("/boite/reception")).text
    assert "Second envoi" in fresh and calls == 2
    # Another URL is another page; reading a message (a flag change) is seen at once too.
    await client.get("/boite/reception?avant=2")
    assert calls == 3
    assert "<strong" in fresh or "non lu" in fresh.lower()  # sanity: unread marks exist
    await client.get("/boite/reception/2")
    after_read = (await client.get("/boite/reception")).text
    assert calls == 4 and after_read != fresh
    assert any(k[1] == patient.mailbox_id for k in web.vault._pages)
    # Logging out drops the session's pages with its opened mailbox.
    form = await client.get("/parametres")
    await client.post("/deconnexion", data={"csrf": csrf_of(form.text)})
    assert not any(k[1] == patient.mailbox_id for k in web.vault._pages)
