"""The webmail in a real browser: headless Chromium from Debian driven by Playwright, axe-core.

The web front runs as in ``missive serve`` (``webmail.server.start`` on this event loop, port 0);
one-time codes go through the real SMS webhook channel to a local HTTP server that checks the
HMAC signature. Every page is checked by axe-core (no serious or critical violation), used with
JavaScript disabled, and photographed at 360 px wide and at 200 % zoom (CSS viewport of 640 px
at device scale 2) without horizontal scrolling. Screenshots go to ``$MISSIVE_ARTEFACTS_DIR``
(default ``build/web-artefacts``). An XSS corpus must execute nothing and load nothing remote.

Skipped, saying why, when ``/usr/bin/chromium`` or Playwright is missing (``scripts/test-deps.sh``
installs Chromium; ``pip install -e '.[test]'`` installs Playwright and axe-playwright-python).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from webmail_support import (  # type: ignore[import-not-found]
    PASSWORD,
    PDF,
    deliver,
    ins_number,
    make_core,
    make_patient,
    make_pro,
    message,
    web_settings,
)

from missive.notify import signing
from missive.runtime import Core
from missive.webmail import codes

CHROMIUM = Path("/usr/bin/chromium")
HOOK_SECRET = "webhook-secret-for-tests-0123456789"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

if not CHROMIUM.exists():
    pytest.skip("Chromium is not installed at /usr/bin/chromium (scripts/test-deps.sh)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="Playwright is not installed (pip install '.[test]')")
axe_api = pytest.importorskip("axe_playwright_python.async_playwright",
                              reason="axe-playwright-python is not installed")


@dataclass
class Recorder:
    """A local HTTP server that records what it receives."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def codes(self) -> list[str]:
        out = []
        for r in self.requests:
            found = re.search(r"\b(\d{6})\b", r.get("json", {}).get("text", ""))
            if found:
                out.append(found.group(1))
        return out


def _serve(recorder: Recorder) -> Iterator[Recorder]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            entry: dict[str, Any] = {"path": self.path, "headers": dict(self.headers),
                                     "body": body}
            try:
                entry["json"] = json.loads(body) if body else {}
            except ValueError:
                entry["json"] = {}
            recorder.requests.append(entry)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = _record

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sms_hook() -> Iterator[Recorder]:
    yield from _serve(Recorder())


@pytest.fixture
def remote() -> Iterator[Recorder]:
    """Stands for the Internet: any request it receives is a leak of remote content."""
    yield from _serve(Recorder())


@dataclass
class Live:
    core: Core
    url: str
    hook: Recorder


@pytest.fixture
async def live(tmp_path: Path, sms_hook: Recorder) -> AsyncIterator[Live]:
    from missive.webmail.server import start

    settings = web_settings(tmp_path / "data", webmail={"port": 0, "secure_cookies": True},
                            notify={"sms_webhook_url": sms_hook.url + "/sms",
                                    "sms_webhook_secret": HOOK_SECRET})
    core = await make_core(settings)
    front = await start(core)
    try:
        yield Live(core, f"http://127.0.0.1:{front.ports['web']}", sms_hook)
    finally:
        await front.stop()
        await core.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        try:
            yield b
        finally:
            await b.close()


def artefacts() -> Path:
    path = Path(os.environ.get("MISSIVE_ARTEFACTS_DIR", "build/web-artefacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


async def submit(page: Any, button: str) -> None:
    async with page.expect_navigation():
        await page.get_by_role("button", name=button).click()


async def browser_login(page: Any, live: Live, identifier: str) -> None:
    await page.goto(live.url + "/connexion")
    await page.get_by_label("Numéro INS ou adresse e-mail").fill(identifier)
    await page.get_by_label("Mot de passe").fill(PASSWORD)
    before = len(live.hook.codes())
    await submit(page, "Continuer")
    assert len(live.hook.codes()) == before + 1, "no one-time code reached the SMS webhook"
    await page.get_by_label("Code à 6 chiffres").fill(live.hook.codes()[-1])
    await submit(page, "Valider le code")
    assert page.url.endswith("/boite/reception")


def xdm_zip() -> bytes:
    import io
    import zipfile

    metadata = """<?xml version="1.0"?>
<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
  xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>
<rim:ExtrinsicObject id="d1" mimeType="text/xml"
  objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
<rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>
<rim:Name><rim:LocalizedString value="Lettre de liaison"/></rim:Name>
</rim:ExtrinsicObject></rim:RegistryObjectList></SubmitObjectsRequest>"""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata)
        zf.writestr("IHE_XDM/SUBSET01/DOC0001.XML", "<ClinicalDocument/>")
    return buf.getvalue()


PRO_PASSWORD = "stethoscope marine violon jeudi"


async def imap_inbox_subjects(live: Live, login: str) -> list[str]:
    """The professional's INBOX read over IMAP (implicit TLS, the IMAP front of this core)."""
    import asyncio
    import email
    import email.policy
    import imaplib
    import ssl

    from missive.certs.files import CertsLayout
    from missive.imap.server import start as start_imap

    settings = live.core.settings
    settings.imap = settings.imap.model_copy(update={"port": 0, "tls_port": 0,
                                                     "auth_failure_delay": 0})
    front = await start_imap(live.core)
    try:
        ctx = ssl.create_default_context(cafile=str(CertsLayout.of(settings).ca_cert))

        def fetch() -> list[str]:
            with imaplib.IMAP4_SSL("localhost", front.ports["imaps"], ssl_context=ctx,
                                   timeout=10) as client:
                client.login(login, PRO_PASSWORD)
                client.select("INBOX", readonly=True)
                _typ, data = client.uid("SEARCH", "ALL")
                subjects = []
                for uid in data[0].split():
                    _typ, parts = client.uid("FETCH", uid, "(BODY.PEEK[HEADER])")
                    raw = parts[0][1]  # type: ignore[index]
                    msg = email.message_from_bytes(raw, policy=email.policy.default)
                    subjects.append(str(msg["Subject"]))
                return subjects

        return await asyncio.to_thread(fetch)
    finally:
        await front.stop()


async def submit_over_smtp(live: Live, sender: str, recipient: str, raw: bytes) -> None:
    """Submission with implicit TLS and AUTH, as a professional's mail client does."""
    import asyncio
    import smtplib
    import ssl

    from missive.certs.files import CertsLayout
    from missive.mta.server import start as start_smtp

    settings = live.core.settings
    settings.mta = settings.mta.model_copy(update={
        "submission_port": 0, "submission_tls_port": 0, "mx_port": 0})
    front = await start_smtp(live.core)
    try:
        ctx = ssl.create_default_context(cafile=str(CertsLayout.of(settings).ca_cert))

        def send() -> None:
            with smtplib.SMTP_SSL("localhost", front.ports["smtp_submission_tls"],
                                  context=ctx, timeout=20) as client:
                client.login(sender, PRO_PASSWORD)
                # RFC 5321 §2.3.8: CRLF line ends (a bare LF is refused, P12).
                client.sendmail(sender, [recipient],
                                raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

        await asyncio.to_thread(send)
    finally:
        await front.stop()


async def test_patient_and_caregiver_journeys_without_javascript_then_axe_and_layout(
        live: Live, browser: Any) -> None:
    import io
    import zipfile

    from missive.certs import ca

    core = live.core
    ca.init_ca(core.settings)
    ca.issue_server(core.settings, ["localhost"], ["127.0.0.1"])
    patient = await make_patient(core, 40, status="pending", password=None)
    pro = await make_pro(core, 40, "Marie Curie", "Radiologue", password=PRO_PASSWORD)
    address = f"{ins_number(40).lower()}@{core.settings.patient_domain}"
    # The first message comes over SMTP submission, while the account is still pending (P5:
    # accepted and kept until activation).
    await submit_over_smtp(live, pro.address, address, message(
        pro.address, address, "Résultats du scanner", "Bonjour,\nvoici le compte rendu.",
        attachments=[("compte-rendu.pdf", "application/pdf", PDF)]))
    uid = 1
    xdm_uid = await deliver(core, pro.address, patient, message(
        pro.address, "p@x", "Dossier de sortie",
        attachments=[("IHE_XDM.ZIP", "application/zip", xdm_zip())]))
    async with core.db.write() as s:
        issued = await codes.issue_code(s, core.settings, patient.id, "activation")

    context = await browser.new_context(java_script_enabled=False, accept_downloads=True,
                                        locale="fr-FR")
    page = await context.new_page()
    # Activation and password.
    await page.goto(live.url + "/activation")
    await page.get_by_label("Numéro INS").fill(ins_number(40))
    await page.get_by_label("Code reçu").fill(issued.display)
    await submit(page, "Continuer")
    await page.get_by_label("Nouveau mot de passe").fill(PASSWORD)
    await page.get_by_label("Confirmer le mot de passe").fill(PASSWORD)
    await submit(page, "Enregistrer mon mot de passe")
    assert "Votre mot de passe est enregistré" in await page.content()
    # Login with the code that reached the SMS webhook, signed.
    await browser_login(page, live, ins_number(40))
    hook = live.hook.requests[-1]
    assert signing.verify(HOOK_SECRET.encode(), hook["headers"]["X-Missive-Signature"],
                          hook["body"], now=time.time())
    assert hook["json"]["to"] == "+33612345678"
    cookies = await context.cookies()
    assert any(c["name"] == "__Host-missive" and c["httpOnly"] and c["sameSite"] == "Strict"
               for c in cookies)
    # Read, download the PDF, list the XDM documents.
    await page.get_by_role("link", name=re.compile("Résultats du scanner")).click()
    assert page.url.endswith(f"/boite/reception/{uid}")
    assert "voici le compte rendu" in await page.content()
    async with page.expect_download() as dl_info:
        await page.get_by_role("link", name=re.compile("^Télécharger")).click()
    download = await dl_info.value
    assert download.suggested_filename == "compte-rendu.pdf"
    assert Path(await download.path()).read_bytes() == PDF
    await page.goto(live.url + f"/boite/reception/{xdm_uid}")
    assert "Lettre de liaison" in await page.content()
    # Reply; it arrives in the professional's INBOX over IMAP.
    await page.goto(live.url + f"/boite/reception/{uid}")
    await page.get_by_role("link", name=re.compile("^Répondre")).click()
    await page.get_by_label("Votre message").fill("Merci docteur, à bientôt.")
    await submit(page, "Envoyer ma réponse")
    assert "Votre réponse a été envoyée" in await page.content()
    assert "Re: Résultats du scanner" in await imap_inbox_subjects(live, pro.address)
    # Archive, delete to trash, restore.
    await submit(page, "Archiver")
    assert "rangé dans les archives" in await page.content()
    await page.get_by_role("link", name="Archives", exact=True).click()
    await page.get_by_role("link", name=re.compile("Résultats du scanner")).click()
    await submit(page, "Mettre à la corbeille")
    await page.get_by_role("link", name="Corbeille", exact=True).click()
    await page.get_by_role("link", name=re.compile("Résultats du scanner")).click()
    await submit(page, "Remettre dans la boîte de réception")
    assert "remis dans la boîte de réception" in await page.content()
    # Search.
    await page.get_by_role("link", name="Rechercher").click()
    await page.get_by_label("Mots à chercher").fill("scanner")
    await submit(page, "Rechercher")
    assert "Résultats du scanner" in await page.content()
    # Export: the ZIP opens and holds the messages.
    await page.goto(live.url + "/export")
    async with page.expect_download() as dl_info:
        await page.get_by_role("button", name="Télécharger le fichier ZIP").click()
    exported = Path(await (await dl_info.value).path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(exported)) as zf:
        emls = [n for n in zf.namelist() if n.endswith(".eml")]
        assert len(emls) >= 3 and any(n.startswith("envoyes/") for n in emls)
    # Notification settings.
    await page.goto(live.url + "/parametres")
    await page.get_by_label("Par SMS et par e-mail", exact=True).check()
    await page.get_by_label("Adresse e-mail").fill("marie@example.org")
    await page.get_by_label("Mot de passe actuel").fill(PASSWORD)
    await submit(page, "Enregistrer")
    assert "Vos réglages sont enregistrés" in await page.content()

    # Caregiver: invitation, acceptance with an own login, reading, journal, revocation.
    await page.goto(live.url + "/proches")
    await page.get_by_label("Nom de votre proche").fill("Julie Dupont")
    await page.get_by_label("Adresse e-mail de votre proche").fill("julie@example.org")
    await page.get_by_label("Lire mes messages", exact=True).check()
    await submit(page, "Préparer l'invitation")
    link = (await page.locator(".target code").inner_text()).strip()
    carer_ctx = await browser.new_context(java_script_enabled=False)
    carer = await carer_ctx.new_page()
    await carer.goto(link)
    await carer.get_by_label("Votre téléphone portable").fill("06 22 33 44 55")
    await carer.get_by_label("Choisissez un mot de passe").fill(PASSWORD)
    await carer.get_by_label("Confirmez le mot de passe").fill(PASSWORD)
    await submit(carer, "Créer mon compte et accepter")
    await browser_login(carer, live, "julie@example.org")
    assert live.hook.requests[-1]["json"]["to"] == "+33622334455"
    await carer.get_by_role("link", name=re.compile("Dossier de sortie")).click()
    assert "Lettre de liaison" in await carer.content()
    await page.goto(live.url + "/journal")
    assert "Julie Dupont (proche" in await page.content()

    # Accessibility and layout of every page, while the account is open.
    public = ["/connexion", "/activation", "/mot-de-passe-oublie", "/aide"]
    await _check_pages(browser, live, public, logged_in=False)
    pages = ["/boite/reception", f"/boite/reception/{xdm_uid}", "/boite/archives",
             "/boite/corbeille", "/boite/envoyes", "/boite/envoyes/1",
             f"/boite/reception/{xdm_uid}/repondre", "/recherche", "/parametres", "/journal",
             "/proches", "/export", "/parametres/application", "/parametres/mot-de-passe",
             "/fermer-mon-compte"]
    await _check_pages(browser, live, pages, logged_in=True)
    await _check_pages(browser, live, ["/boite/reception", f"/boite/reception/{xdm_uid}"],
                       logged_in=True, identifier="julie@example.org", prefix="proche-")

    await page.goto(live.url + "/proches")
    await submit(page, "Retirer l'accès de Julie Dupont")
    response = await carer.reload()
    assert response is not None and response.status == 403
    await carer_ctx.close()

    # Closing the account.
    await page.goto(live.url + "/fermer-mon-compte")
    await page.get_by_label("J'ai compris").check()
    await page.get_by_label("Mon mot de passe").fill(PASSWORD)
    await submit(page, "Fermer définitivement mon compte")
    assert "Votre compte est fermé" in await page.content()
    response = await page.goto(live.url + "/boite/reception")
    assert response is not None and page.url.endswith("/connexion")
    await context.close()


async def _check_pages(browser: Any, live: Live, paths: list[str], *, logged_in: bool,
                       identifier: str | None = None, prefix: str = "") -> None:
    out = artefacts()
    for label, viewport, scale in (("360px", {"width": 360, "height": 740}, 1),
                                   ("zoom200", {"width": 640, "height": 400}, 2)):
        context = await browser.new_context(viewport=viewport, device_scale_factor=scale,
                                            locale="fr-FR")
        page = await context.new_page()
        violations: list[str] = []
        page.on("console", lambda m, out=violations: out.append(m.text)
                if "Content Security Policy" in m.text or m.type == "error" else None)
        if logged_in:
            await browser_login(page, live, identifier or ins_number(40))
        for path in paths:
            response = await page.goto(live.url + path)
            assert response is not None and response.status == 200, path
            if label == "360px":
                results = await axe_api.Axe().run(page)
                bad = [v for v in results.response["violations"]
                       if v.get("impact") in ("serious", "critical")]
                assert not bad, (path, [(v["id"], v["help"]) for v in bad])
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            name = prefix + (re.sub(r"[^a-z0-9]+", "-", path.strip("/")) or "racine")
            await page.screenshot(path=str(out / f"{name}-{label}.png"), full_page=True)
            assert overflow <= 0, f"{path} scrolls horizontally by {overflow}px at {label}"
            if logged_in:  # the session warning script is loaded and allowed by the CSP
                assert await page.evaluate("document.scripts.length") == 1
        assert violations == [], violations
        await context.close()


XSS_CORPUS = [
    '<script>window.__pwned = 1; alert(1)</script>',
    '<img src="{remote}/img1" onerror="window.__pwned=2">',
    '<svg onload="window.__pwned=3"></svg>',
    '<a href="javascript:window.__pwned=4">clic</a>',
    '<iframe src="javascript:window.top.__pwned=5"></iframe>',
    '<body onload="window.__pwned=6">',
    '<div style="background-image:url({remote}/bg)">fond</div>',
    '<link rel="stylesheet" href="{remote}/css">',
    '<style>@import url("{remote}/import"); body {{ background: url({remote}/bg2) }}</style>',
    '<object data="{remote}/obj"></object><embed src="{remote}/embed">',
    '<video poster="{remote}/poster"></video><audio src="{remote}/audio"></audio>',
    '<table background="{remote}/tbg"><tr><td>t</td></tr></table>',
    '<math><mtext><table><mglyph><style><img src="{remote}/mx" onerror="window.__pwned=7">',
    '<noscript><p title="</noscript><img src=x onerror=window.__pwned=8>">',
    '<form action="{remote}/form"><button>envoyer</button></form>',
    '<meta http-equiv="refresh" content="0;url={remote}/refresh">',
    '<base href="{remote}/"><a href="rel">relatif</a>',
    '<input autofocus onfocus="window.__pwned=9">',
    '<details open ontoggle="window.__pwned=10">',
    '"><img src=x onerror=window.__pwned=11>',
]


async def test_xss_corpus_executes_nothing_and_loads_nothing_remote(
        live: Live, browser: Any, remote: Recorder) -> None:
    core = live.core
    patient = await make_patient(core, 41)
    pro = await make_pro(core, 41)
    html = "<p>Bonjour</p>" + "".join(x.format(remote=remote.url) for x in XSS_CORPUS)
    uid = await deliver(core, pro.address, patient,
                        message(pro.address, "p@x", "Piège", text=None, html=html))
    context = await browser.new_context()
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    await browser_login(page, live, ins_number(41))
    await page.goto(live.url + f"/boite/reception/{uid}")
    await page.wait_for_load_state("networkidle")
    await page.keyboard.press("Tab")
    for element in await page.query_selector_all("details, a"):
        await element.focus()
    assert await page.evaluate("window.__pwned === undefined")
    assert dialogs == []
    assert remote.requests == [], [r["path"] for r in remote.requests]
    await context.close()


async def test_keyboard_only_login_reading_and_sorting(live: Live, browser: Any) -> None:
    """Everything by keyboard: Tab moves through the fields in reading order, the skip link
    comes first, Enter submits and follows links, the focused element is always visible."""
    core = live.core
    patient = await make_patient(core, 42)
    pro = await make_pro(core, 42)
    await deliver(core, pro.address, patient, message(pro.address, "p@x", "Clavier seul"))
    context = await browser.new_context(locale="fr-FR")
    page = await context.new_page()

    async def focused() -> str:
        return str(await page.evaluate(
            "(document.activeElement.id || document.activeElement.textContent || '').trim()"))

    async def outline_visible() -> bool:
        return bool(await page.evaluate(
            "(() => { const s = getComputedStyle(document.activeElement);"
            " return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2; })()"))

    await page.goto(live.url + "/connexion")
    await page.keyboard.press("Tab")
    assert await focused() == "Aller au contenu" and await outline_visible()
    await page.keyboard.press("Enter")  # the skip link jumps over the banner
    await page.keyboard.press("Tab")
    assert await focused() == "identifier" and await outline_visible()
    await page.keyboard.type(ins_number(42))
    await page.keyboard.press("Tab")
    assert await focused() == "password"
    await page.keyboard.type(PASSWORD)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    assert await focused() == "code"
    await page.keyboard.type(live.hook.codes()[-1])
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert page.url.endswith("/boite/reception")
    for _ in range(30):  # Tab until the message link
        await page.keyboard.press("Tab")
        if "Clavier seul" in await focused():
            break
    assert "Clavier seul" in await focused() and await outline_visible()
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await focused() == "Archiver":
            break
    assert await focused() == "Archiver" and await outline_visible()
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert "rangé dans les archives" in await page.content()
    await context.close()
