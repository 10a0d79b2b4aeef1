"""Caregiver flow from the webmail: grant (invitation), accept with an own login, read, reply
when allowed, journal, revoke (SPEC §5 delegates)."""

from __future__ import annotations

import html
import re

import httpx
from webmail_support import (  # type: ignore[import-not-found]
    PASSWORD,
    FakeOtp,
    csrf_of,
    deliver,
    ins_number,
    login,
    make_patient,
    make_pro,
    message,
    new_client,
)

from missive.directory.delegates import add_delegate
from missive.directory.models import Delegate
from missive.runtime import Core


async def test_grant_accept_read_reply_journal_revoke(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 60)
    other = await make_patient(wcore, 61)
    pro = await make_pro(wcore, 60)
    uid = await deliver(wcore, pro.address, patient, message(pro.address, "p@x", "Bilan sanguin"))
    await deliver(wcore, pro.address, other, message(pro.address, "p@x", "Pour un autre"))
    await login(client, otp, ins_number(60))
    form = await client.get("/proches")
    assert "Personne n'a accès" in html.unescape(form.text)
    bad = await client.post("/proches/inviter", data={
        "csrf": csrf_of(form.text), "name": "", "email": "pas-une-adresse", "rights": "read"})
    assert bad.status_code == 400
    made = await client.post("/proches/inviter", data={
        "csrf": csrf_of(form.text), "name": "Julie Dupont", "email": "julie@example.org",
        "rights": "read_reply", "until": "2099-12-31"})
    assert made.status_code == 200
    link = re.search(r"https?://[^<\s]+/invitation/[A-Za-z0-9_-]+", made.text)
    assert link
    path = "/invitation/" + link.group(0).rsplit("/", 1)[1]

    async with await new_client(wcore, otp) as carer:
        page = await carer.get(path)
        assert page.status_code == 200 and "Marie Dupont" in page.text
        weak = await carer.post(path, data={"csrf": csrf_of(page.text), "name": "Julie Dupont",
                                            "phone": "06 22 33 44 55", "password": "julie",
                                            "confirmation": "julie"})
        assert weak.status_code == 400
        done = await carer.post(path, data={
            "csrf": csrf_of(page.text), "name": "Julie Dupont", "phone": "06 22 33 44 55",
            "password": PASSWORD, "confirmation": PASSWORD})
        assert done.status_code == 303 and done.headers["location"] == "/connexion?ok=invite"
        assert (await carer.get(path)).status_code == 404  # single use
        await login(carer, otp, "julie@example.org")
        assert otp.sent[-1][1] == "+33622334455"
        inbox = await carer.get("/boite/reception")
        assert "Bilan sanguin" in inbox.text and "Pour un autre" not in inbox.text
        view = await carer.get(f"/boite/reception/{uid}")
        assert view.status_code == 200
        reply_form = await carer.get(f"/boite/reception/{uid}/repondre")
        assert reply_form.status_code == 200
        sent = await carer.post(f"/boite/reception/{uid}/repondre", data={
            "csrf": csrf_of(reply_form.text), "text": "Merci docteur."})
        assert sent.status_code == 303

        journal = html.unescape((await client.get("/journal")).text)
        assert "Julie Dupont (proche, accès n°" in journal
        assert "Lecture d'un message : « Bilan sanguin »" in journal
        listing = await client.get("/proches")
        assert "Julie Dupont" in listing.text
        delegate_id = re.search(r'/proches/(\d+)/retirer', listing.text).group(1)  # type: ignore[union-attr]
        r = await client.post(f"/proches/{delegate_id}/retirer",
                              data={"csrf": csrf_of(listing.text)})
        assert r.status_code == 303
        refused = await carer.get(f"/boite/reception/{uid}")
        assert refused.status_code == 403 and "Bilan sanguin" not in refused.text
        assert "Bilan sanguin" not in (await carer.get("/boite/reception")).text


async def test_patient_cannot_revoke_or_cancel_for_another_patient(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    await make_patient(wcore, 62)
    await make_patient(wcore, 63)
    async with await new_client(wcore, otp) as other:
        await login(other, otp, ins_number(63))
        form = await other.get("/proches")
        made = await other.post("/proches/inviter", data={
            "csrf": csrf_of(form.text), "name": "Paul", "email": "paul@example.org",
            "rights": "read"})
        assert made.status_code == 200
        listing = await other.get("/proches")
        inv_id = re.search(r"/proches/invitations/(\d+)/annuler", listing.text).group(1)  # type: ignore[union-attr]
    async with wcore.db.write() as s:
        theirs = await add_delegate(s, wcore.store, wcore.settings, patient_ins=ins_number(63),
                                    login_email="tiers@example.org", display_name="Tiers",
                                    actor="test")
        their_id = theirs.delegate.id
    await login(client, otp, ins_number(62))
    page = await client.get("/proches")
    r = await client.post(f"/proches/invitations/{inv_id}/annuler",
                          data={"csrf": csrf_of(page.text)})
    assert r.status_code == 404
    r = await client.post(f"/proches/{their_id}/retirer", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 404
    async with wcore.db.read() as s:
        row = await s.get(Delegate, their_id)
        assert row is not None and row.revoked_at is None


async def test_caregiver_may_not_archive_or_delete_and_is_told_why(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    """Decision (docs/webmail.md): even "read and reply" does not let a caregiver sort or
    delete the patient's mail. The message page says so, and a POST is refused in words
    (403), leaves the message where it was, and shows in the patient's journal."""
    patient = await make_patient(wcore, 64)
    pro = await make_pro(wcore, 64)
    uid = await deliver(wcore, pro.address, patient, message(pro.address, "p@x", "Compte rendu"))
    async with wcore.db.write() as s:
        await add_delegate(s, wcore.store, wcore.settings, patient_ins=ins_number(64),
                           login_email="aidant64@example.org", display_name="Luc Aidant",
                           rights="read_reply", password=PASSWORD, phone="0611223344",
                           actor="test")
    async with await new_client(wcore, otp) as carer:
        await login(carer, otp, "aidant64@example.org")
        view = await carer.get(f"/boite/reception/{uid}")
        shown = html.unescape(view.text)
        assert view.status_code == 200
        assert "/archiver" not in shown and "/supprimer" not in shown
        assert ("Votre accès permet de lire ces messages et d'y répondre. Les ranger dans les "
                "archives, les mettre à la corbeille ou les restaurer reste réservé à") in shown
        for action in ("archiver", "supprimer"):
            r = await carer.post(f"/boite/reception/{uid}/{action}",
                                 data={"csrf": csrf_of(view.text)})
            assert r.status_code == 403
            refused = html.unescape(r.text)
            assert "Action réservée au titulaire" in refused
            assert "reste réservé à" in refused
            assert f'href="/boite/reception/{uid}"' in refused
        inbox = await carer.get("/boite/reception")
        assert "Compte rendu" in html.unescape(inbox.text)  # not moved
    await login(client, otp, ins_number(64))
    journal = html.unescape((await client.get("/journal")).text)
    assert "Message archivé : « Compte rendu » (refusé)" in journal
    assert "Message mis à la corbeille : « Compte rendu » (refusé)" in journal
    # The patient still sorts their own mail.
    view = await client.get(f"/boite/reception/{uid}")
    assert "/archiver" in view.text and "reste réservé à" not in html.unescape(view.text)
    r = await client.post(f"/boite/reception/{uid}/archiver", data={"csrf": csrf_of(view.text)})
    assert r.status_code == 303
