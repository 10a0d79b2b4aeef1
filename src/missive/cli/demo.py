"""``missive demo``: a ready-to-try deployment on loopback, with sample users and mail.

Creates (once) a test-mode data directory for the domain ``demo.localhost``: two
professionals with passwords, three patients (one active with a password, one pending with an
activation code, one who opposed the service), and a few sealed messages, then serves every
front. What it prints is all a person needs to log in with a mail client or the webmail.
Everything here is sample data on test INS OIDs; the passwords are printed on purpose.
"""

from __future__ import annotations

import asyncio
import json
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from missive.config import Settings, load_settings

DOMAIN = "demo.localhost"
PRO_PASSWORD = "demo-pro-password"  # noqa: S105 - printed sample credential of the demo
PATIENT_PASSWORD = "demo-patient-password"  # noqa: S105 - printed sample credential
MARKER = "demo-seeded.json"


def _nir_with_key(nir13: str) -> str:
    from missive.identity.ins import compute_key

    return nir13 + compute_key(nir13)


def _rpps(payload10: str) -> str:
    from missive.identity.rpps import luhn_check_digit

    return payload10 + luhn_check_digit(payload10)


def sample_message(sender: str, sender_name: str, to: str, subject: str, body: str,
                   pdf_name: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"{sender_name} <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=DOMAIN)
    msg["X-MSS-INS"] = "O"
    msg.set_content(body)
    if pdf_name:
        pdf = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages"
               b"/Kids[3 0 R]/Count 1>>endobj 3 0 obj<</Type/Page/Parent 2 0 R/MediaBox"
               b"[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=pdf_name)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


async def _seed(settings: Settings) -> dict[str, Any]:
    from missive.directory.passwords import hash_password
    from missive.directory.patients import add_patient, set_patient_status
    from missive.directory.professionals import add_professional
    from missive.runtime import build_core

    core = await build_core(settings, with_master_key=True)
    pros = [
        {"rpps": _rpps("1000123456"), "name": "Dr Marie Curie", "profession": "Médecin",
         "specialty": "Médecine générale", "address": f"marie.curie@{DOMAIN}"},
        {"rpps": _rpps("1000765432"), "name": "Laboratoire Pasteur", "profession": "Biologiste",
         "address": f"labo.pasteur@{DOMAIN}"},
    ]
    patients = [
        {"ins": "279035121518989", "family_name": "DUPONT", "given_names": "Marie Louise",
         "birth_date_text": "1979-03-05", "sex_text": "F", "birth_place_text": "51215",
         "status": "active", "email_text": "marie.dupont@example.org",
         "phone_text": "+33611223344", "notify": "sms"},
        {"ins": _nir_with_key("1480675056123"), "family_name": "MARTIN",
         "given_names": "Jean", "birth_date_text": "1948-06-01", "sex_text": "M",
         "birth_place_text": "75056", "status": "pending", "phone_text": "+33612345678",
         "notify": "sms"},
        {"ins": _nir_with_key("2551233063045"), "family_name": "BERNARD",
         "given_names": "Lucie", "birth_date_text": "1955-12-01", "sex_text": "F",
         "birth_place_text": "33063", "status": "active", "then": "opposed"},
    ]
    report: dict[str, Any] = {"professionals": [], "patients": []}
    try:
        async with core.db.write() as s:
            for p in pros:
                pro = await add_professional(s, core.store, settings, actor="demo",
                                             password=PRO_PASSWORD, **p)
                report["professionals"].append({"address": pro.address, "name": pro.name})
            for p in patients:
                fields = {k: v for k, v in p.items() if k != "then"}
                patient = await add_patient(s, core.store, settings, actor="demo",
                                            oid="1.2.250.1.213.1.4.11", **fields)
                if "then" in p:
                    patient = await set_patient_status(s, core.store, patient.matricule,
                                                       p["then"], actor="demo")
                if patient.status == "active":
                    patient.password_hash = await hash_password(settings, PATIENT_PASSWORD)
                report["patients"].append({"ins": patient.matricule, "status": patient.status,
                                           "mailbox_id": patient.mailbox_id})
        curie = pros[0]["address"]
        labo = pros[1]["address"]
        deliveries = [
            (curie, "Dr Marie Curie", patients[0], "Compte rendu de consultation",
             "Bonjour Madame,\n\nVous trouverez ci-joint le compte rendu de notre consultation.\n"
             "\nBien cordialement,\nDr Marie Curie", "compte-rendu.pdf"),
            (labo, "Laboratoire Pasteur", patients[0], "Vos résultats d'analyses",
             "Bonjour,\n\nVos résultats sont disponibles en pièce jointe.\n", "resultats.pdf"),
            (curie, "Dr Marie Curie", patients[1], "Bienvenue dans votre messagerie de santé",
             "Bonjour Monsieur,\n\nJe vous écrirai désormais ici.\n\nDr Marie Curie", None),
            (labo, "Laboratoire Pasteur", {"address": curie}, "Résultat critique à rappeler",
             "Bonjour Docteur,\n\nMerci de rappeler le laboratoire.\n", None),
        ]
        for sender, name, target, subject, body, pdf in deliveries:
            to = target.get("address") or f"{target['ins']}@{settings.patient_domain}"
            mailbox = next((p["mailbox_id"] for p in report["patients"]
                            if p["ins"] == target.get("ins")), None)
            if mailbox is None:
                async with core.db.read() as s:
                    from missive.directory.professionals import professional_by_address

                    found = await professional_by_address(s, to)
                    mailbox = found.mailbox_id if found else None
            assert mailbox is not None  # noqa: S101 - seeded just above
            d = core.store.delivery(sender=sender, source="demo", actor="demo")
            d.add_local(mailbox)
            await d.commit(sample_message(sender, name, to, subject, body, pdf))
        try:
            from missive.webmail import codes
        except ModuleNotFoundError:
            pass
        else:
            async with core.db.write() as s:
                from missive.directory.patients import get_patient

                pending = await get_patient(s, patients[1]["ins"])
                issued = await codes.issue_code(s, settings, pending.id, "activation")
                report["activation_code"] = issued.display
    finally:
        await core.close()
    return report


async def prepare_demo(data_dir: str) -> tuple[Settings, str]:
    """Initialise and seed ``data_dir`` (once); returns the settings and the login banner."""
    from missive.cli.init import initialise, write_config

    root = Path(data_dir).expanduser().resolve()  # noqa: ASYNC240 - start-up, nothing else runs
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (root / "missive.toml").exists():
        write_config(root, {"domain": DOMAIN, "test_mode": True, "environment": "development"})
    settings = load_settings(root)
    await initialise(settings)
    marker = root / MARKER
    if marker.exists():
        report = json.loads(marker.read_text())
    else:
        report = await _seed(settings)
        marker.write_text(json.dumps(report, indent=2) + "\n")
    return settings, banner(settings, report)


class DemoSmsGateway:
    """A stand-in SMS gateway on loopback that prints what it receives.

    The demo has no real SMS provider: login one-time codes and "you have mail" notices are
    POSTed here, signed like for a real gateway, and shown on the console so that a person
    trying the webmail can read their code.
    """

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}/sms"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            length = 0
            for header in head.split(b"\r\n"):
                if header.lower().startswith(b"content-length:"):
                    length = min(int(header.split(b":", 1)[1]), 65536)
            body = await asyncio.wait_for(reader.readexactly(length), timeout=10)
            try:
                data = json.loads(body)
                text = data.get("text") or json.dumps(data, ensure_ascii=False)
                line = f"[SMS de démonstration pour {data.get('to', '?')}] {text}"
            except (ValueError, AttributeError):
                line = "[SMS de démonstration] (message illisible)"
            print(line, flush=True)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError, ValueError):
            pass
        finally:
            writer.close()


def banner(settings: Settings, report: dict[str, Any]) -> str:
    web = f"http://{settings.webmail.bind}:{settings.webmail.port}/"
    lines = [
        "",
        "Sample accounts (test data, domain demo.localhost):",
        f"  Professionals (SMTP submission {settings.mta.bind}:{settings.mta.submission_port} "
        f"STARTTLS or :{settings.mta.submission_tls_port} TLS; IMAP "
        f":{settings.imap.port} STARTTLS or :{settings.imap.tls_port} TLS):",
    ]
    for pro in report["professionals"]:
        lines.append(f"    login {pro['address']}  password {PRO_PASSWORD}")
    lines.append(f"  Patients (webmail {web}):")
    for patient in report["patients"]:
        extra = ""
        if patient["status"] == "active":
            extra = f"  password {PATIENT_PASSWORD}"
        elif patient["status"] == "pending" and report.get("activation_code"):
            extra = f"  activation code {report['activation_code']}"
        lines.append(f"    INS {patient['ins']} ({patient['status']}){extra}")
    lines.append(f"  The TLS certificates come from the demo CA: {settings.certs_dir}/ca/ca.pem")
    lines.append("  Login codes and notifications sent by SMS are printed below, as "
                 "[SMS de démonstration …].")
    return "\n".join(lines)
