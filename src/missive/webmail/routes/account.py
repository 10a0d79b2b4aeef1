"""The patient's control over their account (SPEC §5): notification settings, read receipts,
access journal, switching between mailboxes (caregivers), closing the account.

Closing is irreversible and explained in plain words first; it needs the password and an
explicit confirmation, then goes through ``directory.patients.set_patient_status(…, "closed")``
which crypto-shreds the mailbox (C3) and makes new mail refused (P5); every session of the
patient ends and their opened keys are dropped from memory.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from missive.audit import log as audit
from missive.db.base import utcnow
from missive.directory import validate
from missive.directory.delegates import list_delegates
from missive.directory.errors import InvalidField
from missive.directory.models import Patient
from missive.directory.passwords import verify_password
from missive.directory.patients import set_patient_status, update_patient_contact
from missive.errors import NotFound
from missive.webmail.app import page
from missive.webmail.deps import Viewer, ViewerDep, WebDep, opened_mailbox
from missive.webmail.routes.auth import clear_cookie
from missive.webmail.routes.mailbox import base_context, french_date

router = APIRouter()
Field = Annotated[str, Form()]

CONTACT_NEEDS_LOGIN = ("Pour changer de téléphone ou d'adresse e-mail, indiquez votre "
                       "mot de passe actuel.")
WRONG_CURRENT_PASSWORD = "Ce n'est pas votre mot de passe actuel."  # noqa: S105 - a message
JOURNAL_PAGE = 100
CHANNELS = {"sms": "Par SMS", "email": "Par e-mail", "both": "Par SMS et par e-mail",
            "none": "Ne pas me prévenir"}

#: How audit actions read in the journal (plain French); others show as "Autre opération".
JOURNAL_LABELS = {
    "web.login": "Connexion à la messagerie",
    "web.otp": "Code de connexion saisi",
    "web.message.read": "Lecture d'un message",
    "web.attachment.download": "Ouverture d'une pièce jointe",
    "web.message.archive": "Message archivé",
    "web.message.trash": "Message mis à la corbeille",
    "web.message.restore": "Message restauré",
    "web.search": "Recherche dans les messages",
    "web.settings": "Paramètres modifiés",
    "web.totp.add": "Application d'authentification enregistrée",
    "web.totp.remove": "Application d'authentification retirée",
    "web.message.reply": "Réponse envoyée",
    "web.export": "Téléchargement de tous les messages",
    "web.invitation.create": "Invitation d'un proche préparée",
    "web.invitation.email": "Invitation envoyée par e-mail à un proche",
    "web.invitation.accept": "Invitation acceptée par un proche",
    "web.mdn.sent": "Accusé de lecture envoyé",
    "web.activation": "Activation du compte",
    "web.activation.code": "Code d'activation utilisé",
    "web.reset.code": "Code de réinitialisation utilisé",
    "web.password.reset": "Mot de passe réinitialisé",
    "web.password.change": "Mot de passe changé",
    "message.deliver": "Message reçu",
    "message.move": "Message déplacé",
    "delegate.grant": "Accès donné à un proche",
    "delegate.revoke": "Accès d'un proche retiré",
    "admin.patient.add": "Compte créé par l'opérateur",
    "admin.patient.update": "Coordonnées modifiées par l'opérateur",
    "admin.patient.set_status": "État du compte modifié par l'opérateur",
    "admin.delegate.update": "Coordonnées d'un proche modifiées par l'opérateur",
    "mailbox.create": "Messagerie créée",
}


def _owner(who: Viewer) -> Patient:
    if not who.is_owner or who.patient is None:
        raise NotFound("only the patient manages their account")
    return who.patient


@router.get("/parametres")
async def settings_form(request: Request, who: ViewerDep) -> Response:
    patient = _owner(who)
    return page(request, "settings.html", {
        **base_context(who, "parametres"), "patient": patient, "channels": CHANNELS,
        "errors": {}, "saved": request.query_params.get("fait") == "1",
        "values": {"phone": patient.phone or "", "email": patient.email or "",
                   "channel": patient.notify_channel, "receipts": patient.read_receipts}})


@router.post("/parametres")
async def settings_save(request: Request, web: WebDep, who: ViewerDep, phone: Field = "",
                        email: Field = "", channel: Field = "none",
                        receipts: Field = "", current_password: Field = "") -> Response:
    """Notification settings. Changing the phone or the e-mail — where one-time codes go —
    needs the password again, so that a session left open cannot divert them."""
    patient = _owner(who)
    errors: dict[str, str] = {}
    values: dict[str, Any] = {"phone": phone, "email": email, "channel": channel,
                              "receipts": receipts == "oui"}
    try:
        contact_changed = (validate.phone(phone) != patient.phone
                           or validate.email(email) != patient.email)
    except InvalidField:
        contact_changed = True  # reported below, field by field
    if contact_changed and not (await verify_password(
            web.settings, patient.password_hash, current_password)).ok:
        errors["current_password"] = CONTACT_NEEDS_LOGIN
    if channel not in CHANNELS:
        errors["channel"] = "Choisissez une des possibilités proposées."
    if channel in ("sms", "both") and not phone.strip():
        errors["phone"] = "Pour être prévenu(e) par SMS, indiquez un numéro de portable."
    if channel in ("email", "both") and not email.strip():
        errors["email"] = "Pour être prévenu(e) par e-mail, indiquez une adresse e-mail."
    if not errors:
        try:
            async with web.core.db.write() as s:
                await update_patient_contact(
                    s, patient.matricule, actor=who.actor, phone=phone.strip(),
                    email=email.strip(), notify_channel=channel,
                    read_receipts=receipts == "oui")
                await audit.append(s, "web.settings", actor=who.actor,
                                   mailbox_id=patient.mailbox_id,
                                   details={"notify_channel": channel})
        except InvalidField as exc:
            field = {"phone": "phone", "email": "email"}.get(exc.field, "channel")
            errors[field] = {"phone": "Ce numéro n'est pas valide (exemple : 06 12 34 56 78).",
                             "email": "Cette adresse e-mail n'est pas valide."}.get(
                field, "Ce choix n'est pas possible avec les coordonnées indiquées.")
    if errors:
        return page(request, "settings.html", {
            **base_context(who, "parametres"), "patient": patient, "channels": CHANNELS,
            "errors": errors, "saved": False, "values": values}, status_code=400)
    return RedirectResponse("/parametres?fait=1", status_code=303)


@router.get("/parametres/mot-de-passe")
async def password_change_form(request: Request, web: WebDep, who: ViewerDep) -> Response:
    _owner(who)
    return page(request, "password_change.html", {
        **base_context(who, "parametres"), "errors": {},
        "min_length": web.settings.webmail.password_min_length})


@router.post("/parametres/mot-de-passe")
async def password_change(request: Request, web: WebDep, who: ViewerDep,
                          current_password: Field = "", password: Field = "",
                          confirmation: Field = "") -> Response:
    """Change the password (the current one first); other sessions of the patient end."""
    from missive.directory.passwords import hash_password
    from missive.webmail.passwords import password_problem

    patient = _owner(who)
    min_length = web.settings.webmail.password_min_length
    errors: dict[str, str] = {}
    if not (await verify_password(web.settings, patient.password_hash, current_password)).ok:
        errors["current_password"] = WRONG_CURRENT_PASSWORD
    problem = password_problem(password, min_length=min_length, user_inputs=[
        patient.matricule, patient.family_name, *patient.given_names.split(),
        patient.email or "", patient.birth_date.isoformat()])
    if problem:
        errors["password"] = problem
    elif password != confirmation:
        errors["confirmation"] = "Les deux mots de passe ne sont pas identiques."
    if errors:
        return page(request, "password_change.html", {
            **base_context(who, "parametres"), "errors": errors, "min_length": min_length},
            status_code=400)
    hashed = await hash_password(web.settings, password)
    async with web.core.db.write() as s:
        row = await s.get(Patient, patient.id)
        assert row is not None  # noqa: S101 - the viewer's own record
        row.password_hash = hashed
        row.updated_at = utcnow()
        ended = [sid for sid in await web.sessions.end_all(s, "patient", patient.id)
                 if sid != who.session.id]
        await audit.append(s, "web.password.change", actor=who.actor,
                           mailbox_id=patient.mailbox_id)
    for sid in ended:
        web.vault.drop_session(sid)
    # end_all removed this session too: the patient logs in again with the new password.
    web.vault.drop_session(who.session.id)
    response = RedirectResponse("/connexion?ok=pw", status_code=303)
    clear_cookie(web, response)
    return response


@router.get("/journal")
async def journal(request: Request, web: WebDep, who: ViewerDep) -> Response:
    """Who did what on the mailbox, newest first, in words: the caregivers by name, and the
    message concerned by its subject when it is still where it was (UIDs are never reused in a
    folder, RFC 3501 §2.3.1.1, so a (folder, UID) pair names one message or none)."""
    patient = _owner(who)
    asked = request.query_params.get("avant", "")
    before = int(asked) if asked.isdigit() and len(asked) < 12 else None
    async with web.core.db.read() as s:
        entries = await audit.entries_for_mailbox(s, patient.mailbox_id, limit=JOURNAL_PAGE,
                                                  before_seq=before)
        delegations = await list_delegates(s, patient_ins=patient.matricule,
                                           include_revoked=True)
    carers = {str(v.delegate.id): v.to_dict()["name"] or "un proche" for v in delegations}
    details = [json.loads(e.details or "{}") for e in entries]
    wanted: dict[str, set[int]] = {}
    for d in details:
        if isinstance(d.get("folder"), str) and isinstance(d.get("uid"), int):
            wanted.setdefault(d["folder"], set()).add(d["uid"])
    subjects: dict[tuple[str, int], str] = {}
    if wanted:
        box = await opened_mailbox(web, who)
        known = {f.name for f in await box.folders()}
        for folder, uids in wanted.items():
            if folder in known:
                for uid, summary in (await box.summaries(folder, sorted(uids))).items():
                    subjects[(folder, uid)] = summary.subject or "(sans objet)"
    rows = []
    for e, d in zip(entries, details, strict=True):
        actor = e.actor or ""
        if actor.startswith("delegate:"):
            number = actor.split(":", 1)[1]
            who_text = f"{carers.get(number, 'Un proche')} (proche, accès n° {number})"
        elif actor == f"patient:{patient.id}":
            who_text = "Vous"
        elif actor.startswith("h:"):
            who_text = "Un professionnel"
        elif actor.startswith("admin") or e.action.startswith("admin."):
            who_text = "L'opérateur"
        else:
            who_text = "Le système" if not actor else "Autre"
        subject = subjects.get((d.get("folder"), d.get("uid")))
        rows.append({"date": french_date(e.ts), "action": JOURNAL_LABELS.get(
            e.action, "Autre opération"), "who": who_text, "failed": e.outcome != "ok",
            "subject": subject})
    older = entries[-1].seq if len(entries) == JOURNAL_PAGE else None
    return page(request, "journal.html", {**base_context(who, "journal"), "rows": rows,
                                          "older": older, "first_page": before is None})


@router.post("/boite-affichee")
async def switch_mailbox(web: WebDep, who: ViewerDep, delegation: Field = "") -> Response:
    wanted = int(delegation) if delegation.isdigit() else None
    if wanted is not None and all(c.delegate_id != wanted for c in who.choices):
        raise NotFound("no such mailbox")
    async with web.core.db.write() as s:
        await web.sessions.update(s, who.session.id, active_delegate_id=wanted)
    return RedirectResponse("/boite/reception", status_code=303)


@router.get("/fermer-mon-compte")
async def close_form(request: Request, who: ViewerDep) -> Response:
    _owner(who)
    return page(request, "close.html", {**base_context(who, "parametres"), "errors": {}})


@router.post("/fermer-mon-compte")
async def close_account(request: Request, web: WebDep, who: ViewerDep, password: Field = "",
                        confirm: Field = "") -> Response:
    patient = _owner(who)
    errors: dict[str, str] = {}
    if confirm != "oui":
        errors["confirm"] = "Cochez la case pour confirmer que vous avez compris."
    check = await verify_password(web.settings, patient.password_hash, password)
    if not check.ok:
        errors["password"] = "Mot de passe incorrect."  # noqa: S105 - a message
    if errors:
        return page(request, "close.html", {**base_context(who, "parametres"),
                                            "errors": errors}, status_code=400)
    async with web.core.db.write() as s:
        await set_patient_status(s, web.core.store, patient.matricule, "closed",
                                 actor=who.actor)
        ended = await web.sessions.end_all(s, "patient", patient.id)
    for sid in ended:
        web.vault.drop_session(sid)
    web.vault.drop_mailbox(patient.mailbox_id)
    response = page(request, "closed.html", {"title": "Compte fermé"})
    clear_cookie(web, response)
    return response


# --- authenticator app (TOTP) -----------------------------------------------------------------

async def _app_page(request: Request, web: Any, who: Viewer, errors: dict[str, str],
                    status_code: int = 200) -> Response:
    from missive.webmail import totp

    patient = _owner(who)
    async with web.core.db.read() as s:
        row = await totp.find(s, "patient", patient.id)
    ctx: dict[str, Any] = {**base_context(who, "parametres"), "title": "Application "
                           "d'authentification", "errors": errors, "row": row}
    if row is not None and row.confirmed_at is None:
        secret = totp.secret_of(web.core.keys, row)
        ctx["key"] = totp.grouped(secret)
        ctx["uri"] = totp.uri(secret, patient.matricule)
    return page(request, "totp.html", ctx, status_code=status_code)


@router.get("/parametres/application")
async def app_form(request: Request, web: WebDep, who: ViewerDep) -> Response:
    return await _app_page(request, web, who, {})


@router.post("/parametres/application")
async def app_begin(request: Request, web: WebDep, who: ViewerDep) -> Response:
    from missive.webmail import totp

    patient = _owner(who)
    async with web.core.db.write() as s:
        await totp.begin(s, web.core.keys, "patient", patient.id)
    return RedirectResponse("/parametres/application", status_code=303)


@router.post("/parametres/application/confirmer")
async def app_confirm(request: Request, web: WebDep, who: ViewerDep,
                      code: Field = "") -> Response:
    from missive.webmail import totp

    patient = _owner(who)
    async with web.core.db.write() as s:
        row = await totp.find(s, "patient", patient.id)
        ok = row is not None and await totp.check(s, web.core.keys, row, code)
        if ok:
            await audit.append(s, "web.totp.add", actor=who.actor, mailbox_id=patient.mailbox_id)
    if not ok:
        return await _app_page(request, web, who, {"code": (
            "Ce code n'est pas le bon. Vérifiez que l'heure de votre téléphone est juste, puis "
            "saisissez le code affiché maintenant.")}, status_code=400)
    return RedirectResponse("/parametres?fait=1", status_code=303)


@router.post("/parametres/application/retirer")
async def app_remove(web: WebDep, who: ViewerDep) -> Response:
    from missive.webmail import totp

    patient = _owner(who)
    async with web.core.db.write() as s:
        await totp.remove(s, "patient", patient.id)
        await audit.append(s, "web.totp.remove", actor=who.actor, mailbox_id=patient.mailbox_id)
    return RedirectResponse("/parametres?fait=1", status_code=303)
