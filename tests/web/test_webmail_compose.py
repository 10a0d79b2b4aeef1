"""Replies (P6), read receipts (RFC 8098) and export from the webmail."""

from __future__ import annotations

import html
import io
import zipfile

import httpx
from sqlalchemy import update
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

from missive.directory.delegates import add_delegate
from missive.directory.models import Patient
from missive.mime.summary import parse
from missive.runtime import Core


async def pro_inbox(core: Core, mailbox_id: int) -> list[bytes]:
    box = await core.store.open(mailbox_id)
    infos = await box.messages("INBOX")
    got = await box.fetch_many("INBOX", [m.uid for m in infos])
    return [got[m.uid] for m in infos]


async def test_reply_reaches_the_professional_and_is_kept_in_sent(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 50)
    pro = await make_pro(wcore, 50, "Jean Martin", "Cardiologue")
    uid = await deliver(wcore, pro.address, patient,
                        message(pro.address, "p@x", "Votre rendez-vous"))
    await login(client, otp, ins_number(50))
    view = await client.get(f"/boite/reception/{uid}")
    assert f"/boite/reception/{uid}/repondre" in view.text
    form = await client.get(f"/boite/reception/{uid}/repondre")
    assert form.status_code == 200
    empty = await client.post(f"/boite/reception/{uid}/repondre",
                              data={"csrf": csrf_of(form.text), "text": "  "})
    assert empty.status_code == 400
    sent = await client.post(f"/boite/reception/{uid}/repondre",
                             data={"csrf": csrf_of(form.text), "text": "Merci, je viendrai."})
    assert sent.status_code == 303
    received = await pro_inbox(wcore, pro.mailbox_id)
    assert len(received) == 1
    reply = parse(received[0])
    assert reply["Subject"] == "Re: Votre rendez-vous"
    assert reply["From"].addresses[0].addr_spec == \
        f"{ins_number(50).lower()}@{wcore.settings.patient_domain}"
    assert "Merci, je viendrai." in reply.get_body().get_content()  # type: ignore[union-attr]
    assert reply["In-Reply-To"]
    assert "Re: Votre rendez-vous" in (await client.get("/boite/envoyes")).text


async def test_reply_refused_when_closed_or_read_only(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 51)
    pro = await make_pro(wcore, 51)
    closed = await deliver(wcore, pro.address, patient, message(
        pro.address, "p@x", "Fin du suivi", headers={"X-MSS-MES": "FIN"}))
    stranger = await deliver(wcore, f"inconnu@{wcore.settings.domain}", patient, message(
        f"inconnu@{wcore.settings.domain}", "p@x", "Inconnu"))
    await login(client, otp, ins_number(51))
    view = await client.get(f"/boite/reception/{closed}")
    assert "clos cette conversation" in html.unescape(view.text)
    assert "/repondre" not in view.text
    form = await client.get(f"/boite/reception/{closed}/repondre")
    assert form.status_code == 403 and "clos" in html.unescape(form.text)
    page = await client.get("/boite/reception")
    r = await client.post(f"/boite/reception/{closed}/repondre",
                          data={"csrf": csrf_of(page.text), "text": "Encore une question"})
    assert r.status_code == 403
    r = await client.post(f"/boite/reception/{stranger}/repondre",
                          data={"csrf": csrf_of(page.text), "text": "Bonjour"})
    assert r.status_code == 403
    assert await pro_inbox(wcore, pro.mailbox_id) == []


async def test_caregiver_reply_rights(wcore: Core, client: httpx.AsyncClient,
                                      otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 52)
    pro = await make_pro(wcore, 52)
    uid = await deliver(wcore, pro.address, patient, message(pro.address, "p@x", "Question"))
    async with wcore.db.write() as s:
        view = await add_delegate(s, wcore.store, wcore.settings, patient_ins=ins_number(52),
                                  login_email="fils@example.org", display_name="Paul Dupont",
                                  rights="read_reply", password=PASSWORD, actor="test")
        view.person.phone = "+33611111111"  # type: ignore[union-attr]
    await login(client, otp, "fils@example.org")
    form = await client.get(f"/boite/reception/{uid}/repondre")
    assert form.status_code == 200
    r = await client.post(f"/boite/reception/{uid}/repondre",
                          data={"csrf": csrf_of(form.text), "text": "Pour ma mère : oui."})
    assert r.status_code == 303
    [raw] = await pro_inbox(wcore, pro.mailbox_id)
    body = parse(raw).get_body().get_content()  # type: ignore[union-attr]
    assert "Paul Dupont" in body and "Pour ma mère : oui." in body


async def test_read_receipt_only_when_allowed(wcore: Core, client: httpx.AsyncClient,
                                              otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 53)
    pro = await make_pro(wcore, 53)
    asks = {"Disposition-Notification-To": pro.address}
    first = await deliver(wcore, pro.address, patient,
                          message(pro.address, "p@x", "Avec accusé", headers=asks))
    await login(client, otp, ins_number(53))
    await client.get(f"/boite/reception/{first}")
    await client.get(f"/boite/reception/{first}")  # a second display sends nothing more
    [mdn] = await pro_inbox(wcore, pro.mailbox_id)
    report = parse(mdn)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "disposition-notification"
    assert b"Disposition: manual-action/MDN-sent-automatically; displayed" in mdn
    async with wcore.db.write() as s:
        await s.execute(update(Patient).where(Patient.id == patient.id)
                        .values(read_receipts=False))
    second = await deliver(wcore, pro.address, patient,
                           message(pro.address, "p@x", "Encore un accusé", headers=asks))
    await client.get(f"/boite/reception/{second}")
    assert len(await pro_inbox(wcore, pro.mailbox_id)) == 1


async def test_export_contains_messages_and_attachments(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 54)
    pro = await make_pro(wcore, 54)
    await deliver(wcore, pro.address, patient, message(
        pro.address, "p@x", "Analyse", attachments=[("bilan.pdf", "application/pdf", PDF)]))
    await deliver(wcore, pro.address, patient, message(pro.address, "p@x", "Second"))
    await login(client, otp, ins_number(54))
    form = await client.get("/export")
    r = await client.post("/export", data={"csrf": csrf_of(form.text)})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        assert "reception/000001.eml" in names and "reception/000002.eml" in names
        assert zf.read("reception/000001-pieces-jointes/bilan.pdf") == PDF
        assert parse(zf.read("reception/000002.eml"))["Subject"] == "Second"


async def test_reply_to_another_operator_is_queued_for_relay_and_outside_is_refused(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    from sqlalchemy import func, select

    from missive.directory.trust import add_trust_domain
    from missive.mailbox.models import RelayQueue

    patient = await make_patient(wcore, 55)
    async with wcore.db.write() as s:
        await add_trust_domain(s, "autre-operateur.example", actor="test")
    remote = "dr.who@autre-operateur.example"
    uid = await deliver(wcore, remote, patient, message(remote, "p@x", "De loin"))
    outsider = "spam@ailleurs.example"
    out_uid = await deliver(wcore, outsider, patient, message(outsider, "p@x", "Pas ici"))
    await login(client, otp, ins_number(55))
    form = await client.get(f"/boite/reception/{uid}/repondre")
    assert form.status_code == 200
    r = await client.post(f"/boite/reception/{uid}/repondre",
                          data={"csrf": csrf_of(form.text), "text": "Bien reçu."})
    assert r.status_code == 303
    async with wcore.db.read() as s:
        queued = (await s.execute(select(func.count(RelayQueue.id)).where(
            RelayQueue.domain == "autre-operateur.example"))).scalar_one()
    assert queued == 1
    refused = await client.get(f"/boite/reception/{out_uid}/repondre")
    assert refused.status_code == 403 and "espace de confiance" in html.unescape(refused.text)
