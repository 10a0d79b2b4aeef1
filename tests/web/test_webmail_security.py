"""Security properties of the webmail (SPEC §5 security): headers, cookies, CSRF, IDOR, XSS,
lockout, delegation revocation."""

from __future__ import annotations

import html
import re

import httpx
import pytest
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
    new_client,
)

from missive.directory.delegates import add_delegate, revoke_delegate
from missive.runtime import Core


async def test_headers_on_pages(wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    r = await client.get("/connexion")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src 'self'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-missive=")
    lowered = cookie.lower()
    assert "httponly" in lowered and "secure" in lowered and "samesite=strict" in lowered
    static = await client.get("/static/missive.css")
    assert static.status_code == 200 and "no-store" not in static.headers.get("cache-control", "")
    assert "<script" not in r.text and "style=" not in r.text


async def test_health_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_post_without_or_with_wrong_csrf_is_refused(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    await make_patient(wcore, 20)
    await client.get("/connexion")
    r = await client.post("/connexion", data={"identifier": ins_number(20),
                                              "password": PASSWORD})
    assert r.status_code == 403 and not otp.sent
    r = await client.post("/connexion", data={"csrf": "x" * 43, "identifier": ins_number(20),
                                              "password": PASSWORD})
    assert r.status_code == 403 and not otp.sent
    await login(client, otp, ins_number(20))
    r = await client.post("/deconnexion/partout", data={})
    assert r.status_code == 403
    form = await client.get("/parametres")
    r = await client.post("/deconnexion", data={"csrf": csrf_of(form.text)},
                          headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert (await client.get("/boite/reception")).status_code == 200


async def test_session_token_rotates_at_login(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    await make_patient(wcore, 21)
    await client.get("/connexion")
    before = client.cookies.get("__Host-missive")
    await login(client, otp, ins_number(21))
    after = client.cookies.get("__Host-missive")
    assert before and after and before != after
    async with await new_client(wcore, otp) as thief:
        thief.cookies.set("__Host-missive", before)
        assert (await thief.get("/boite/reception")).status_code == 303


async def test_another_patients_identifiers_give_404(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    alice = await make_patient(wcore, 22)
    bob = await make_patient(wcore, 23)
    pro = await make_pro(wcore, 22)
    raw = message(pro.address, "x@y", "Pour Alice seulement", html=None,
                  attachments=[("a.pdf", "application/pdf", PDF)])
    alice_uid = await deliver(wcore, pro.address, alice, raw)
    for _ in range(3):
        await deliver(wcore, pro.address, bob, message(pro.address, "x@y", "Bob"))
    # Bob's UIDs 1-3 exist; Alice's only message has UID 1 in *her* mailbox: Bob reaches his own.
    await login(client, otp, ins_number(23))
    missing = alice_uid + 10
    for url in (f"/boite/reception/{missing}", f"/boite/reception/{missing}/piece/2",
                f"/boite/reception/{missing}/piece/2/voir", f"/boite/reception/{missing}/lien/0",
                "/boite/inconnu", "/boite/reception/1/piece/9"):
        r = await client.get(url)
        assert r.status_code == 404, url
    own = await client.get(f"/boite/reception/{alice_uid}")
    assert own.status_code == 200 and "Pour Alice seulement" not in own.text
    form = await client.get("/boite/reception")
    r = await client.post(f"/boite/reception/{missing}/archiver", data={"csrf": csrf_of(form.text)})
    assert r.status_code == 404
    # Alice still has her message.
    async with await new_client(wcore, otp) as alice_client:
        await login(alice_client, otp, ins_number(22))
        assert "Pour Alice seulement" in (await alice_client.get("/boite/reception")).text


async def test_html_messages_are_sanitised(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 24)
    pro = await make_pro(wcore, 24)
    evil = ('<p onclick="alert(1)">Bonjour <b>Marie</b></p><script>alert(2)</script>'
            '<img src="http://127.0.0.1:9/pixel.png"><a href="javascript:alert(3)">x</a>'
            '<a href="https://example.org/rdv?id=42">Prendre rendez-vous</a>'
            '<div style="background:url(http://127.0.0.1:9/bg)">fond</div>'
            '<iframe src="https://evil.example"></iframe><form action="https://evil.example">'
            '<input name="pw"></form><svg onload="alert(4)"></svg>')
    uid = await deliver(wcore, pro.address, patient,
                        message(pro.address, "x@y", "HTML", text=None, html=evil))
    await login(client, otp, ins_number(24))
    page = (await client.get(f"/boite/reception/{uid}")).text
    body = page.split('<div class="html">', 1)[1].split("</div>\n", 1)[0]
    for bad in ("onclick", "<script", "alert(", "<img", "javascript:", "style=", "<iframe",
                "<form", "<input", "<svg", "127.0.0.1", "example.org"):
        assert bad not in body, bad
    assert "<b>Marie</b>" in body
    assert "bloqués" in page
    link = re.search(r'href="(/boite/reception/\d+/lien/\d+)"', body)
    assert link
    warning = await client.get(link.group(1))
    assert warning.status_code == 200
    assert "https://example.org/rdv?id=42" in html.unescape(warning.text)


async def test_login_lockout_is_temporary_and_generic(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    await make_patient(wcore, 25)
    page = await client.get("/connexion")
    for _ in range(wcore.settings.webmail.login_max_failures):
        r = await client.post("/connexion", data={"csrf": csrf_of(page.text),
                                                  "identifier": ins_number(25),
                                                  "password": "mauvais mot de passe"})
        assert r.status_code == 401 and "incorrect" in r.text
    r = await client.post("/connexion", data={"csrf": csrf_of(page.text),
                                              "identifier": ins_number(25),
                                              "password": PASSWORD})
    assert r.status_code == 429 and not otp.sent
    unknown = await client.post("/connexion", data={"csrf": csrf_of(page.text),
                                                    "identifier": ins_number(99),
                                                    "password": PASSWORD})
    assert unknown.status_code == 401 and "incorrect" in unknown.text


async def test_caregiver_reads_is_journaled_and_revocation_is_immediate(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    patient = await make_patient(wcore, 26)
    pro = await make_pro(wcore, 26)
    uid = await deliver(wcore, pro.address, patient, message(pro.address, "x@y", "Ordonnance"))
    async with wcore.db.write() as s:
        view = await add_delegate(s, wcore.store, wcore.settings, patient_ins=ins_number(26),
                                  login_email="fille@example.org", display_name="Julie Dupont",
                                  rights="read", password=PASSWORD, actor="test")
        view.person.phone = "+33698765432"  # type: ignore[union-attr]
        delegation_id = view.delegate.id
    await login(client, otp, "fille@example.org")
    assert otp.sent[-1][1] == "+33698765432"
    inbox = await client.get("/boite/reception")
    assert inbox.status_code == 200 and "Ordonnance" in inbox.text
    assert "lecture seule" in inbox.text
    read = await client.get(f"/boite/reception/{uid}")
    assert read.status_code == 200
    # A caregiver does not sort the patient's mail, nor reach the patient's settings.
    r = await client.post(f"/boite/reception/{uid}/archiver", data={"csrf": csrf_of(read.text)})
    assert r.status_code == 403  # refused in words (see test_webmail_caregivers.py)
    assert "Votre accès permet de lire ces messages. Les ranger" in html.unescape(r.text)
    assert (await client.get("/parametres")).status_code == 404
    async with await new_client(wcore, otp) as owner:
        await login(owner, otp, ins_number(26))
        journal = html.unescape((await owner.get("/journal")).text)
        assert f"Julie Dupont (proche, accès n° {delegation_id})" in journal
        # The caregiver's read did not mark the message as read for the patient.
        assert "Non lu" in (await owner.get("/boite/reception")).text
    async with wcore.db.write() as s:
        await revoke_delegate(s, wcore.store, delegation_id, actor="test")
    refused = await client.get("/boite/reception")
    assert refused.status_code == 403
    # Later requests find no mailbox in view any more.
    again = await client.get(f"/boite/reception/{uid}")
    assert again.status_code == 404 and "Ordonnance" not in again.text
    assert "Ordonnance" not in (await client.get("/boite/reception")).text


async def test_one_address_failing_on_many_accounts_is_slowed_down(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp) -> None:
    from missive.webmail import codes

    await make_patient(wcore, 27)
    page = await client.get("/connexion")
    limit = wcore.settings.webmail.login_max_failures * codes.PER_ADDRESS_FACTOR
    for n in range(limit):
        r = await client.post("/connexion", data={"csrf": csrf_of(page.text),
                                                  "identifier": ins_number(100 + n % 200),
                                                  "password": "essai"})
        assert r.status_code == 401
    r = await client.post("/connexion", data={"csrf": csrf_of(page.text),
                                              "identifier": ins_number(27),
                                              "password": PASSWORD})
    assert r.status_code == 429 and not otp.sent


async def test_no_message_content_or_identifier_in_logs(
        wcore: Core, client: httpx.AsyncClient, otp: FakeOtp,
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    patient = await make_patient(wcore, 28)
    pro = await make_pro(wcore, 28)
    secret_subject, secret_body = "Sérologie confidentielle", "Résultat positif au marqueur"
    uid = await deliver(wcore, pro.address, patient, message(
        pro.address, "p@x", secret_subject, secret_body,
        attachments=[("bilan-secret.pdf", "application/pdf", PDF)]))
    # Our code at every level; libraries at INFO (aiosqlite's DEBUG log prints SQL parameters:
    # deployments must keep driver loggers above DEBUG).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="missive")
    await login(client, otp, ins_number(28))
    view = await client.get(f"/boite/reception/{uid}")
    await client.get(f"/boite/reception/{uid}/piece/2")
    await client.post("/recherche", data={"csrf": csrf_of(view.text), "q": "Sérologie"})
    form = await client.get(f"/boite/reception/{uid}/repondre")
    await client.post(f"/boite/reception/{uid}/repondre",
                      data={"csrf": csrf_of(form.text), "text": "Merci pour la sérologie"})
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(r.getMessage() for r in server_side)
    for leak in (secret_subject, secret_body, "bilan-secret", "sérologie", "Sérologie",
                 ins_number(28), PASSWORD, otp.last_code):
        assert leak not in text, leak
    # And the URLs the browser used carry no content either.
    for r in caplog.records:
        if r.name.startswith("httpx"):
            assert secret_subject not in r.getMessage() and "rologie" not in r.getMessage()
