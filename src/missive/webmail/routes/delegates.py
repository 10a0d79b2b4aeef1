"""Caregivers (SPEC §5 delegates): the patient grants, lists and revokes; the caregiver
accepts an invitation with their own login.

Invitations go by e-mail to the caregiver when the notification relay is configured, and are
always shown to the patient as a link to hand over as well (see :mod:`..invitations`).

Revocation is immediate: the delegation row is revoked in the directory, and the next request
of the caregiver is refused by :func:`missive.webmail.deps.viewer`, which checks the delegation
on every request; opened keys of the mailbox are dropped from memory at once.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from missive.audit import log as audit
from missive.db.base import utcnow
from missive.directory import logins as accounts
from missive.directory import validate
from missive.directory.delegates import add_delegate, list_delegates, revoke_delegate
from missive.directory.errors import Conflict, InvalidField
from missive.directory.models import Patient
from missive.errors import NotFound
from missive.webmail import invitations
from missive.webmail.app import page
from missive.webmail.deps import Viewer, ViewerDep, Web, WebDep, current_session
from missive.webmail.passwords import password_problem
from missive.webmail.routes.auth import _form_page, redirect
from missive.webmail.routes.mailbox import base_context, french_date

router = APIRouter()
Field = Annotated[str, Form()]
RIGHTS = {"read": "Lire mes messages", "read_reply": "Lire mes messages et y répondre"}
PARIS = ZoneInfo("Europe/Paris")
log = logging.getLogger(__name__)


def _owner(who: Viewer) -> Patient:
    if not who.is_owner or who.patient is None:
        raise NotFound("only the patient manages their caregivers")
    return who.patient


def _until(text: str) -> datetime | None:
    """End of the given day, Paris time (``AAAA-MM-JJ`` from ``<input type=date>``)."""
    if not text.strip():
        return None
    day = date.fromisoformat(text.strip())
    return datetime.combine(day, time(23, 59, 59), PARIS)


async def _listing(web: Web, patient: Patient) -> dict[str, Any]:
    async with web.core.db.read() as s:
        views = await list_delegates(s, patient_ins=patient.matricule)
        pending = await invitations.pending_for(s, patient.id)
    now = utcnow()
    return {
        "delegations": [{"id": v.delegate.id, "name": v.to_dict(now)["name"],
                         "rights": RIGHTS.get(v.delegate.rights, v.delegate.rights),
                         "until": french_date(v.delegate.expires_at)
                         if v.delegate.expires_at else None}
                        for v in views if v.delegate.in_force(now)],
        "pending": [{"id": i.id, "name": i.display_name, "email": i.login_email,
                     "expires": french_date(i.expires_at)} for i in pending],
        "rights_choices": RIGHTS,
    }


@router.get("/proches")
async def caregivers(request: Request, web: WebDep, who: ViewerDep) -> Response:
    patient = _owner(who)
    return page(request, "caregivers.html", {
        **base_context(who, "proches"), **await _listing(web, patient), "errors": {},
        "values": {"name": "", "email": "", "rights": "read", "until": ""},
        "done": request.query_params.get("fait")})


@router.post("/proches/inviter")
async def invite(request: Request, web: WebDep, who: ViewerDep, name: Field = "",
                 email: Field = "", rights: Field = "read", until: Field = "") -> Response:
    patient = _owner(who)
    errors: dict[str, str] = {}
    values = {"name": name, "email": email, "rights": rights, "until": until}
    if not name.strip():
        errors["name"] = "Indiquez le nom de votre proche."
    try:
        login_email = validate.email(email, "email")
        if login_email is None:
            errors["email"] = "Indiquez l'adresse e-mail de votre proche."
    except InvalidField:
        login_email = None
        errors["email"] = "Cette adresse e-mail n'est pas valide."
    if rights not in RIGHTS:
        errors["rights"] = "Choisissez ce que votre proche pourra faire."
    access_until: datetime | None = None
    try:
        access_until = _until(until)
        if access_until is not None and access_until <= utcnow():
            errors["until"] = "La date de fin doit être dans le futur."
    except ValueError:
        errors["until"] = "Cette date n'est pas valide (exemple : 31/12/2027)."
    if errors or login_email is None:
        return page(request, "caregivers.html", {
            **base_context(who, "proches"), **await _listing(web, patient), "errors": errors,
            "values": values, "done": None}, status_code=400)
    async with web.core.db.write() as s:
        token, row = await invitations.create(
            s, patient_id=patient.id, display_name=name.strip()[:200], login_email=login_email,
            rights=rights, access_until=access_until)
        await audit.append(s, "web.invitation.create", actor=who.actor,
                           mailbox_id=patient.mailbox_id,
                           details={"invitation_id": row.id, "rights": rights})
    base = web.settings.webmail.base_url.rstrip("/") or str(request.base_url).rstrip("/")
    link = f"{base}/invitation/{token}"
    expires = french_date(row.expires_at)
    sent = await _send_invitation(web, patient, row.id, login_email=row.login_email,
                                  caregiver=row.display_name, link=link,
                                  can_reply=rights == "read_reply", expires=expires)
    return page(request, "invitation_created.html", {
        **base_context(who, "proches"),
        "title": "Invitation envoyée" if sent else "Invitation prête",
        "link": link, "name": row.display_name, "expires": expires,
        "email": row.login_email, "sent": sent,
        "send_failed": sent is False})


def patient_name(patient: Patient) -> str:
    """How the patient is named to a caregiver: first given name and family name."""
    return f"{patient.given_names.split()[0]} {patient.family_name}".title()


async def _send_invitation(web: Web, patient: Patient, invitation_id: int, *,
                           login_email: str, caregiver: str, link: str, can_reply: bool,
                           expires: str) -> bool | None:
    """E-mail the invitation through the notification relay: ``None`` when no relay is
    configured (the patient hands the link over), else whether the relay accepted it."""
    from missive.notify.channels import ChannelFailure, send_email

    notify = web.settings.notify
    if not notify.smtp_relay:
        return None
    msg = invitations.email_for(
        sender=notify.sender, domain=web.settings.domain, to=login_email, caregiver=caregiver,
        patient_name=patient_name(patient), link=link, can_reply=can_reply, expires=expires,
        service=notify.service_name)
    try:
        await send_email(notify, msg)
    except ChannelFailure as exc:
        log.warning("invitation e-mail failed: %s", exc.reason)
        sent = False
    else:
        sent = True
    async with web.core.db.write() as s:
        await audit.append(s, "web.invitation.email", actor=f"patient:{patient.id}",
                           mailbox_id=patient.mailbox_id, outcome="ok" if sent else "failed",
                           details={"invitation_id": invitation_id})
    return sent


@router.post("/proches/{delegate_id}/retirer")
async def revoke(web: WebDep, who: ViewerDep, delegate_id: int) -> Response:
    patient = _owner(who)
    try:
        async with web.core.db.write() as s:
            await revoke_delegate(s, web.core.store, delegate_id, actor=who.actor,
                                  patient_id=patient.id)
    except Conflict:
        pass  # already revoked: the outcome the patient wants
    web.vault.drop_mailbox(patient.mailbox_id)
    return RedirectResponse("/proches?fait=retire", status_code=303)


@router.post("/proches/invitations/{invitation_id}/annuler")
async def cancel(web: WebDep, who: ViewerDep, invitation_id: int) -> Response:
    patient = _owner(who)
    async with web.core.db.write() as s:
        if not await invitations.cancel(s, patient.id, invitation_id):
            raise NotFound("no such invitation")
    return RedirectResponse("/proches?fait=annule", status_code=303)


# --- the caregiver's side -------------------------------------------------------------------

async def _invitation_context(web: Web, request: Request, token: str) -> dict[str, Any]:
    async with web.core.db.read() as s:
        inv = await invitations.find(s, token)
        if inv is None:
            raise NotFound("no such invitation")
        patient = await s.get(Patient, inv.patient_id)
        person = await accounts.person_by_email(s, inv.login_email)
    if patient is None or patient.status != "active":
        raise NotFound("no such invitation")
    state = current_session(request)
    logged_in_as_invitee = (state is not None and state.authenticated
                            and state.principal_kind == "person" and person is not None
                            and state.principal_id == person.id)
    return {"inv": inv, "token": token, "rights": RIGHTS.get(inv.rights, inv.rights),
            "patient_name": patient_name(patient),
            "until": french_date(inv.access_until) if inv.access_until else None,
            "has_account": person is not None and person.password_hash is not None,
            "logged_in": logged_in_as_invitee, "errors": {},
            "values": {"name": inv.display_name, "phone": ""}, "title": "Invitation"}


@router.get("/invitation/{token}")
async def invitation(request: Request, web: WebDep, token: str) -> Response:
    ctx = await _invitation_context(web, request, token)
    return await _form_page(request, web, "invitation.html", ctx)


@router.post("/invitation/{token}")
async def accept(request: Request, web: WebDep, token: str, name: Field = "",
                 phone: Field = "", password: Field = "", confirmation: Field = "") -> Response:
    ctx = await _invitation_context(web, request, token)
    inv = ctx["inv"]
    errors: dict[str, str] = ctx["errors"]
    new_password: str | None = None
    phone_number: str | None = None
    if not ctx["logged_in"]:
        if ctx["has_account"]:
            return redirect("/connexion")
        ctx["values"] = {"name": name, "phone": phone}
        if not name.strip():
            errors["name"] = "Indiquez votre nom."
        try:
            phone_number = validate.phone(phone)
            if phone_number is None:
                errors["phone"] = ("Indiquez votre numéro de portable : un code vous y sera "
                                   "envoyé à chaque connexion.")
        except InvalidField:
            errors["phone"] = "Ce numéro n'est pas valide (exemple : 06 12 34 56 78)."
        problem = password_problem(password,
                                   min_length=web.settings.webmail.password_min_length,
                                   user_inputs=[name, inv.login_email])
        if problem:
            errors["password"] = problem
        elif password != confirmation:
            errors["confirmation"] = "Les deux mots de passe ne sont pas identiques."
        new_password = password
        if errors:
            return page(request, "invitation.html", ctx, status_code=400)
    async with web.core.db.write() as s:
        again = await invitations.find(s, token)
        patient = await s.get(Patient, inv.patient_id)
        if again is None or patient is None:
            raise NotFound("no such invitation")
        try:
            view = await add_delegate(
                s, web.core.store, web.settings, patient_ins=patient.matricule,
                login_email=again.login_email,
                display_name=(name.strip() or again.display_name)[:200],
                rights=again.rights, expires_at=again.access_until, password=new_password,
                actor=f"patient:{patient.id}")
        except Conflict:
            errors["name"] = "Vous avez déjà accès à cette messagerie."
            return page(request, "invitation.html", ctx, status_code=409)
        if view.person is not None and phone_number is not None:
            view.person.phone = phone_number
        again.accepted_at = utcnow()
        again.delegate_id = view.delegate.id
        await audit.append(s, "web.invitation.accept", actor=f"delegate:{view.delegate.id}",
                           mailbox_id=patient.mailbox_id, details={"invitation_id": again.id})
    if ctx["logged_in"]:
        state = current_session(request)
        assert state is not None  # noqa: S101 - logged_in implies a session
        async with web.core.db.write() as s:
            await web.sessions.update(s, state.id, active_delegate_id=view.delegate.id)
        return redirect("/boite/reception")
    return redirect("/connexion?ok=invite")
