"""Getting in (SPEC §5): activation, choosing a password, login with a one-time code, logout.

Stages of a session (``web_session.stage``), the token rotated at each arrow::

    anonymous ──(INS or e-mail + password)──▶ otp ──(6-digit code)──▶ active
    anonymous ──(INS + activation/reset code)──▶ activate | reset ──(new password)──▶ (ended)

Error messages sit next to their field, in words; they never say whether an account exists
("identifiant ou mot de passe incorrect"). Failed logins count per account (keyed hash) and
lock it with a growing, bounded delay (:mod:`missive.webmail.codes`). Audit entries:
``web.login`` (ok/fail, on the patient's mailbox when known), ``web.otp``, ``web.activation``,
``web.password.reset``, ``web.logout``; none carries the identifier typed.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from missive.audit import log as audit
from missive.db.base import utcnow
from missive.directory import logins as accounts
from missive.directory import validate
from missive.directory.errors import InvalidField
from missive.directory.models import DelegatePerson, Patient
from missive.directory.passwords import hash_password, verify_password
from missive.webmail import codes, totp
from missive.webmail.app import page
from missive.webmail.deps import Web, WebDep, current_session
from missive.webmail.otp import Channel, OtpDeliveryError
from missive.webmail.passwords import password_problem
from missive.webmail.sessions import SessionState

log = logging.getLogger(__name__)
router = APIRouter()
Field = Annotated[str, Form()]

LOGIN_FAILED = "Identifiant ou mot de passe incorrect. Vérifiez-les puis réessayez."


def set_cookie(web: Web, response: Response, value: str) -> None:
    response.set_cookie(web.cookie_name, value, httponly=True,
                        secure=web.settings.webmail.secure_cookies, samesite="strict", path="/",
                        max_age=web.settings.webmail.session_max_hours * 3600)


def client_address(request: Request) -> str:
    """The peer address (behind a reverse proxy, run uvicorn with ``--proxy-headers``)."""
    return request.client.host if request.client is not None else "unknown"


def clear_cookie(web: Web, response: Response) -> None:
    response.delete_cookie(web.cookie_name, path="/", httponly=True, samesite="strict",
                           secure=web.settings.webmail.secure_cookies)


def redirect(url: str, web: Web | None = None, cookie: str | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if web is not None and cookie is not None:
        set_cookie(web, response, cookie)
    return response


async def _ensure_session(request: Request, web: Web) -> tuple[SessionState, str | None]:
    """The current session, or a new anonymous one (and its cookie to set)."""
    state = current_session(request)
    if state is not None:
        return state, None
    async with web.core.db.write() as s:
        cookie, state = await web.sessions.create(s)
    request.state.web_session = state
    return state, cookie


async def _form_page(request: Request, web: Web, template: str,
                     context: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    _state, cookie = await _ensure_session(request, web)
    response = page(request, template, context, status_code=status_code)
    if cookie is not None:
        set_cookie(web, response, cookie)
    return response


# --- login --------------------------------------------------------------------------------------

@router.get("/")
async def home(request: Request) -> Response:
    state = current_session(request)
    return redirect("/boite/reception" if state and state.authenticated else "/connexion")


@router.get("/connexion")
async def login_form(request: Request, web: WebDep, ok: str | None = None) -> Response:
    state = current_session(request)
    if state is not None and state.authenticated:
        return redirect("/boite/reception")
    notice = {"pw": "Votre mot de passe est enregistré. Vous pouvez maintenant vous connecter.",
              "bye": "Vous êtes déconnecté(e).",
              "invite": "Votre compte est créé et l'accès est accepté. Connectez-vous pour "
                        "consulter la messagerie de votre proche."}.get(ok or "")
    expired = getattr(request.state, "expired", False)
    return await _form_page(request, web, "login.html", {
        "notice": notice,
        "expired": expired and notice is None,
        "identifier": "", "errors": {}})


def _otp_route(kind: str, account: Any) -> tuple[Channel, str] | None:
    """Where a one-time code goes: the phone by SMS if known, else the e-mail."""
    phone = getattr(account, "phone", None)
    mail = account.email if kind == "patient" else account.login_email
    if kind == "patient" and account.notify_channel == "email" and mail:
        return "email", mail
    if phone:
        return "sms", phone
    if mail:
        return "email", mail
    return None


def masked(channel: str, to: str) -> str:
    if channel == "sms":
        return f"au numéro se terminant par {to[-2:]}"
    user, _, domain = to.partition("@")
    return f"à l'adresse {user[:1]}…@{domain}"


@router.post("/connexion")
async def login(request: Request, web: WebDep, identifier: Field = "",
                password: Field = "") -> Response:
    state = current_session(request)
    assert state is not None  # noqa: S101 - csrf_protect refuses requests without a session
    errors: dict[str, str] = {}
    if not identifier.strip():
        errors["identifier"] = "Indiquez votre INS (15 caractères) ou votre adresse e-mail."
    if not password:
        errors["password"] = "Indiquez votre mot de passe."  # noqa: S105
    if errors:
        return page(request, "login.html", {"identifier": identifier, "errors": errors},
                    status_code=400)
    key = web.sessions.signer.keyed("login", " ".join(identifier.split()).lower())
    address_key = web.sessions.signer.keyed("login-address", client_address(request))
    settings = web.settings
    async with web.core.db.write() as s:
        until = await codes.locked_until(s, key) or await codes.locked_until(s, address_key)
        if until is not None:
            minutes = max(1, int((until - utcnow()).total_seconds() + 59) // 60)
            errors["password"] = (f"Trop d'essais incorrects. Par sécurité, attendez {minutes} "
                                  "minute(s) avant de réessayer.")
            return page(request, "login.html", {"identifier": identifier, "errors": errors},
                        status_code=429)
        matched: tuple[str, Any] | None = None
        candidates = await accounts.candidates(s, identifier)
        if not candidates:
            await verify_password(settings, None, password)  # same time as a real check
        for kind, account in candidates:
            if (await verify_password(settings, account.password_hash, password)).ok:
                matched = (kind, account)
                break
        if matched is None or (matched[0] == "patient" and matched[1].status != "active"):
            await codes.record_failure(s, settings, key)
            await codes.record_failure(
                s, settings, address_key,
                max_failures=settings.webmail.login_max_failures * codes.PER_ADDRESS_FACTOR)
            for _kind, account in candidates:
                if isinstance(account, Patient):
                    await audit.append(s, "web.login", mailbox_id=account.mailbox_id,
                                       outcome="fail", reason="bad password")
    if matched is None or (matched[0] == "patient" and matched[1].status != "active"):
        errors["password"] = LOGIN_FAILED
        return page(request, "login.html", {"identifier": identifier, "errors": errors},
                    status_code=401)
    kind, account = matched
    async with web.core.db.read() as s:
        app = await totp.find(s, kind, account.id)
    if app is not None and app.confirmed_at is not None:
        async with web.core.db.write() as s:
            await codes.record_success(s, key)
            cookie, new_state = await web.sessions.rotate(
                s, state.id, stage="otp", principal_kind=kind, principal_id=account.id,
                otp_hash=None, otp_channel="totp", otp_attempts=0, active_delegate_id=None,
                otp_expires_at=utcnow() + timedelta(minutes=settings.webmail.otp_minutes))
        request.state.web_session = new_state
        return redirect("/connexion/code", web, cookie)
    route = _otp_route(kind, account)
    if route is None:
        errors["identifier"] = ("Aucun téléphone ni adresse e-mail n'est enregistré pour vous "
                                "envoyer un code. Contactez le service d'assistance.")
        return page(request, "login.html", {"identifier": identifier, "errors": errors},
                    status_code=400)
    channel, to = route
    code = codes.new_otp()
    minutes = settings.webmail.otp_minutes
    async with web.core.db.write() as s:
        await codes.record_success(s, key)
        cookie, new_state = await web.sessions.rotate(
            s, state.id, stage="otp", principal_kind=kind, principal_id=account.id,
            otp_hash=web.sessions.signer.keyed("otp", f"{kind}:{account.id}:{code}"),
            otp_channel=channel, otp_expires_at=utcnow() + timedelta(minutes=minutes),
            otp_attempts=0, active_delegate_id=None)
    try:
        await web.otp.send(channel=channel, to=to, code=code, minutes=minutes)
    except OtpDeliveryError:
        request.state.web_session = new_state
        errors["identifier"] = ("Nous n'avons pas pu vous envoyer le code de connexion. "
                                "Réessayez dans quelques minutes.")
        response = page(request, "login.html", {"identifier": identifier, "errors": errors},
                        status_code=503)
        set_cookie(web, response, cookie)
        return response
    request.state.web_session = new_state
    return redirect("/connexion/code", web, cookie)


@router.get("/connexion/code")
async def otp_form(request: Request, web: WebDep) -> Response:
    state = current_session(request)
    if state is None or state.stage != "otp":
        return redirect("/connexion")
    return page(request, "otp.html", {"channel": state.otp_channel, "errors": {}})


@router.post("/connexion/code/envoyer")
async def otp_fallback(request: Request, web: WebDep) -> Response:
    """Without the authenticator app at hand: a code by SMS or e-mail instead."""
    state = current_session(request)
    if state is None or state.stage != "otp" or state.otp_channel != "totp" \
            or state.principal_id is None or state.principal_kind is None:
        return redirect("/connexion")
    async with web.core.db.read() as s:
        account: Any = await s.get(Patient if state.principal_kind == "patient"
                                   else DelegatePerson, state.principal_id)
    route = _otp_route(state.principal_kind, account) if account is not None else None
    if route is None:
        return page(request, "otp.html", {"channel": "totp", "errors": {"code": (
            "Aucun téléphone ni adresse e-mail n'est enregistré : utilisez votre application.")}},
            status_code=400)
    channel, to = route
    code = codes.new_otp()
    minutes = web.settings.webmail.otp_minutes
    async with web.core.db.write() as s:
        await web.sessions.update(
            s, state.id, otp_channel=channel, otp_attempts=0,
            otp_hash=web.sessions.signer.keyed(
                "otp", f"{state.principal_kind}:{state.principal_id}:{code}"),
            otp_expires_at=utcnow() + timedelta(minutes=minutes))
    try:
        await web.otp.send(channel=channel, to=to, code=code, minutes=minutes)
    except OtpDeliveryError:
        return page(request, "otp.html", {"channel": "totp", "errors": {"code": (
            "Nous n'avons pas pu vous envoyer de code. Utilisez votre application ou "
            "réessayez dans quelques minutes.")}}, status_code=503)
    return redirect("/connexion/code")


@router.post("/connexion/code")
async def otp_check(request: Request, web: WebDep, code: Field = "") -> Response:
    state = current_session(request)
    if state is None or state.stage != "otp":
        return redirect("/connexion")
    typed = "".join(ch for ch in code if ch.isdigit())
    async with web.core.db.write() as s:
        row = await web.sessions.row(s, state.id)
        if row is None or row.principal_kind is None or row.principal_id is None:
            return redirect("/connexion")
        expected = web.sessions.signer.keyed(
            "otp", f"{row.principal_kind}:{row.principal_id}:{typed}")
        fresh = row.otp_expires_at is not None and row.otp_expires_at > utcnow()
        if row.otp_channel == "totp":
            app = await totp.find(s, row.principal_kind, row.principal_id)
            good = fresh and app is not None and await totp.check(s, web.core.keys, app, typed)
        else:
            good = (fresh and row.otp_hash is not None and len(typed) == 6
                    and secrets.compare_digest(row.otp_hash, expected))
        mailbox_id = None
        if row.principal_kind == "patient" and row.principal_id is not None:
            patient = await s.get(Patient, row.principal_id)
            mailbox_id = patient.mailbox_id if patient else None
        if not good:
            row.otp_attempts += 1
            spent = row.otp_attempts >= web.settings.webmail.otp_max_attempts or not fresh
            await audit.append(s, "web.otp", actor=f"{row.principal_kind}:{row.principal_id}",
                               mailbox_id=mailbox_id, outcome="fail",
                               reason="expired" if not fresh else "wrong code")
            if spent:
                await web.sessions.end(s, state.id)
        else:
            cookie, _ = await web.sessions.rotate(s, state.id, stage="active", otp_hash=None,
                                                  otp_expires_at=None, otp_attempts=0)
            await audit.append(s, "web.login", actor=f"{row.principal_kind}:{row.principal_id}",
                               mailbox_id=mailbox_id)
    if good:
        return redirect("/boite/reception", web, cookie)
    if spent:
        return await _form_page(request, web, "login.html", {
            "identifier": "", "errors": {"identifier": (
                "Le code a expiré ou a été mal saisi trop de fois. Reconnectez-vous pour "
                "recevoir un nouveau code.")}}, status_code=401)
    return page(request, "otp.html", {"channel": state.otp_channel, "errors": {
        "code": "Ce code n'est pas le bon. Vérifiez le dernier message reçu et réessayez."}},
        status_code=401)


# --- activation and reset ---------------------------------------------------------------------

PURPOSE_PAGES = {"activation": "/activation", "reset": "/mot-de-passe-oublie"}


@router.get("/activation")
async def activation_form(request: Request, web: WebDep) -> Response:
    return await _form_page(request, web, "activation.html",
                            {"purpose": "activation", "ins": "", "errors": {}})


@router.get("/mot-de-passe-oublie")
async def reset_form(request: Request, web: WebDep) -> Response:
    return await _form_page(request, web, "activation.html",
                            {"purpose": "reset", "ins": "", "errors": {}})


async def _code_step(request: Request, web: Web, purpose: str, ins: str,
                     code: str) -> Response:
    state = current_session(request)
    assert state is not None  # noqa: S101 - csrf_protect
    errors: dict[str, str] = {}
    ctx: dict[str, Any] = {"purpose": purpose, "ins": ins, "errors": errors}
    try:
        matricule = validate.matricule("".join(ins.split()))
    except InvalidField:
        errors["ins"] = ("Ce numéro INS n'est pas valide : il compte 15 caractères et figure "
                         "sur le courrier reçu ou sur votre carte Vitale.")
        return page(request, "activation.html", ctx, status_code=400)
    if not codes.normalise_code(code):
        errors["code"] = "Indiquez le code reçu par courrier ou par SMS."
        return page(request, "activation.html", ctx, status_code=400)
    key = web.sessions.signer.keyed(purpose, matricule)
    async with web.core.db.write() as s:
        if await codes.locked_until(s, key) is not None:
            errors["code"] = ("Trop d'essais incorrects. Attendez quelques minutes avant de "
                              "réessayer.")
            return page(request, "activation.html", ctx, status_code=429)
        patient = await accounts.patient_by_ins(s, matricule)
        allowed = patient is not None and (
            patient.status == "pending" or (patient.status == "active"))
        ok = allowed and patient is not None and await codes.consume_code(
            s, web.sessions.signer, patient.id, purpose, code)
        if not ok or patient is None:
            await codes.record_failure(s, web.settings, key)
        else:
            await codes.record_success(s, key)
            cookie, _ = await web.sessions.rotate(
                s, state.id, stage="activate" if purpose == "activation" else "reset",
                principal_kind="patient", principal_id=patient.id)
            await audit.append(s, f"web.{purpose}.code", actor=f"patient:{patient.id}",
                               mailbox_id=patient.mailbox_id)
    if not ok:
        errors["code"] = ("Ce code n'est pas valable pour ce numéro INS (il a pu expirer ou "
                          "avoir déjà servi). Vérifiez-le, ou demandez un nouveau code.")
        return page(request, "activation.html", ctx, status_code=400)
    return redirect("/mot-de-passe", web, cookie)


@router.post("/activation")
async def activation(request: Request, web: WebDep, ins: Field = "",
                     code: Field = "") -> Response:
    return await _code_step(request, web, "activation", ins, code)


@router.post("/mot-de-passe-oublie")
async def reset(request: Request, web: WebDep, ins: Field = "", code: Field = "") -> Response:
    return await _code_step(request, web, "reset", ins, code)


@router.get("/mot-de-passe")
async def password_form(request: Request, web: WebDep) -> Response:
    state = current_session(request)
    if state is None or state.stage not in ("activate", "reset"):
        return redirect("/connexion")
    return page(request, "password.html", {"errors": {},
                                           "min_length": web.settings.webmail.password_min_length})


@router.post("/mot-de-passe")
async def choose_password(request: Request, web: WebDep, password: Field = "",
                          confirmation: Field = "") -> Response:
    state = current_session(request)
    if state is None or state.stage not in ("activate", "reset") or state.principal_id is None:
        return redirect("/connexion")
    min_length = web.settings.webmail.password_min_length
    errors: dict[str, str] = {}
    async with web.core.db.read() as s:
        patient = await s.get(Patient, state.principal_id)
    if patient is None or patient.status not in ("pending", "active"):
        return redirect("/connexion")
    inputs = [patient.matricule, patient.family_name, *patient.given_names.split(),
              patient.email or "", patient.birth_date.isoformat(),
              patient.birth_date.strftime("%d%m%Y")]
    problem = password_problem(password, min_length=min_length, user_inputs=inputs)
    if problem:
        errors["password"] = problem
    elif password != confirmation:
        errors["confirmation"] = "Les deux mots de passe ne sont pas identiques."
    if errors:
        return page(request, "password.html", {"errors": errors, "min_length": min_length},
                    status_code=400)
    hashed = await hash_password(web.settings, password)
    async with web.core.db.write() as s:
        row = await s.get(Patient, state.principal_id)
        assert row is not None  # noqa: S101 - read just above
        row.password_hash = hashed
        if row.status == "pending":
            row.status = "active"
        row.updated_at = utcnow()
        await audit.append(s, "web.activation" if state.stage == "activate"
                           else "web.password.reset", actor=f"patient:{row.id}",
                           mailbox_id=row.mailbox_id)
        ended = await web.sessions.end_all(s, "patient", row.id)
        await web.sessions.end(s, state.id)
    for sid in [*ended, state.id]:
        web.vault.drop_session(sid)
    response = redirect("/connexion?ok=pw")
    clear_cookie(web, response)
    return response


@router.post("/session/prolonger")
async def keep_alive(request: Request, web: WebDep) -> Response:
    """The "stay connected" button of the idle warning (WCAG 2.2.1): moves the idle deadline
    (never the absolute one). Answers 204, or 401 when the session already ended."""
    state = current_session(request)
    if state is None or not state.authenticated:
        return Response(status_code=401)
    async with web.core.db.write() as s:
        await web.sessions.update(s, state.id, last_seen_at=utcnow(),
                                  idle_expires_at=min(utcnow() + web.sessions.idle,
                                                      state.expires_at))
    return Response(status_code=204)


# --- logout -----------------------------------------------------------------------------------

@router.post("/deconnexion")
async def logout(request: Request, web: WebDep) -> Response:
    state = current_session(request)
    if state is not None:
        async with web.core.db.write() as s:
            await web.sessions.end(s, state.id)
        web.vault.drop_session(state.id)
    response = redirect("/connexion?ok=bye")
    clear_cookie(web, response)
    return response


@router.post("/deconnexion/partout")
async def logout_everywhere(request: Request, web: WebDep) -> Response:
    state = current_session(request)
    if state is not None and state.authenticated and state.principal_kind and state.principal_id:
        async with web.core.db.write() as s:
            ended = await web.sessions.end_all(s, state.principal_kind, state.principal_id)
            await audit.append(s, "web.logout.all",
                               actor=f"{state.principal_kind}:{state.principal_id}")
        for sid in ended:
            web.vault.drop_session(sid)
    response = redirect("/connexion?ok=bye")
    clear_cookie(web, response)
    return response
