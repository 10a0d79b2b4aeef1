"""Request-scoped helpers: the web context, the session, and who is looking at which mailbox.

Authorisation is resolved on every request from the database, never from the cookie alone:
:func:`viewer` loads the principal (a patient whose account is active, or a caregiver), and the
mailbox they are looking at (their own, or a delegation in force *now*: a revoked or expired
delegation is refused at the next request). Routes then address messages only by folder and
UID *inside that mailbox*, so an identifier from another mailbox simply does not exist (404).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from missive.config import Settings
from missive.directory.models import Delegate, DelegatePerson, Patient
from missive.directory.patients import read_patient
from missive.mailbox.store import MailboxSession
from missive.runtime import Core
from missive.webmail.keys import KeyVault
from missive.webmail.otp import OtpSender
from missive.webmail.sessions import SessionState, SessionStore

COOKIE_SECURE = "__Host-missive"
COOKIE_PLAIN = "missive"


@dataclass
class Web:
    """Everything the routes share, built once by ``create_app``."""

    settings: Settings
    core: Core
    sessions: SessionStore
    vault: KeyVault
    templates: Jinja2Templates
    otp: OtpSender
    #: Small per-process caches (no patient data: e.g. professionals' display labels).
    caches: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def cookie_name(self) -> str:
        return COOKIE_SECURE if self.settings.webmail.secure_cookies else COOKIE_PLAIN


class LoginRequired(Exception):
    """No authenticated session: the handler redirects to the login page."""


class AccessRevoked(Exception):
    """The delegation in use ended (revoked, expired) or the account is no longer active."""


def get_web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


WebDep = Annotated[Web, Depends(get_web)]


async def load_session(request: Request) -> None:
    """Application-wide dependency: attach the live session (or None) to ``request.state``."""
    web = get_web(request)
    cookie = request.cookies.get(web.cookie_name)
    state: SessionState | None = None
    session_id = web.sessions.session_id(cookie)
    if session_id is not None:
        def read(s: Session) -> tuple[SessionState | None, bool, Patient | None]:
            state, needs_write = web.sessions.peek(s, session_id)
            patient = None
            if state is not None and state.authenticated and state.principal_kind == "patient" \
                    and state.principal_id is not None:
                # Read with the session (one read less per page); ``viewer`` still checks the
                # status. Routes that change the patient load it again to write.
                patient = read_patient(s, state.principal_id)
            return state, needs_write, patient

        # Every page pays this read: one synchronous read (Database.run_read), not a round
        # trip to the driver's thread per statement.
        state, needs_write, request.state.patient = await web.core.db.run_read(read)
        if needs_write:
            async with web.core.db.write() as s:
                state = await web.sessions.touch(s, session_id)
            if state is None:
                web.vault.drop_session(session_id)
    if cookie and state is None:
        request.state.expired = True
    request.state.web_session = state


def current_session(request: Request) -> SessionState | None:
    state: SessionState | None = getattr(request.state, "web_session", None)
    return state


@dataclass(frozen=True)
class MailboxChoice:
    delegate_id: int | None
    label: str
    active: bool


@dataclass
class Viewer:
    """An authenticated principal and the mailbox they are looking at now."""

    session: SessionState
    kind: str
    principal_id: int
    display_name: str
    patient: Patient | None  # owner of the mailbox in view
    delegate: Delegate | None  # the delegation in use, if any
    choices: list[MailboxChoice] = field(default_factory=list)

    @property
    def mailbox_id(self) -> int | None:
        return self.patient.mailbox_id if self.patient is not None else None

    @property
    def actor(self) -> str:
        """How this viewer appears in audit entries (no name, no address)."""
        if self.delegate is not None:
            return f"delegate:{self.delegate.id}"
        return f"{self.kind}:{self.principal_id}"

    @property
    def can_reply(self) -> bool:
        return self.delegate is None or self.delegate.rights == "read_reply"

    @property
    def is_owner(self) -> bool:
        return self.kind == "patient" and self.delegate is None


async def _delegations(s: AsyncSession, person_id: int) -> list[tuple[Delegate, Patient]]:
    from missive.directory.delegates import delegations_in_force

    views = await delegations_in_force(s, person_id=person_id)
    return [(v.delegate, v.patient) for v in views if v.patient.status == "active"]


def _patient_viewer(state: SessionState, patient: Patient) -> Viewer:
    if patient.status != "active":
        raise AccessRevoked()
    name = f"{patient.given_names.split()[0]} {patient.family_name}".title()
    return Viewer(state, "patient", patient.id, name, patient, None,
                  [MailboxChoice(None, "Ma messagerie", True)])


async def viewer(request: Request) -> Viewer:
    """The authenticated viewer, or LoginRequired / AccessRevoked."""
    web = get_web(request)
    state = current_session(request)
    if state is None or not state.authenticated or state.principal_id is None:
        raise LoginRequired()
    preloaded: Patient | None = getattr(request.state, "patient", None)
    if state.principal_kind == "patient" and preloaded is not None \
            and preloaded.id == state.principal_id:
        return _patient_viewer(state, preloaded)
    async with web.core.db.read() as s:
        if state.principal_kind == "patient":
            patient = await s.get(Patient, state.principal_id)
            if patient is None:
                raise AccessRevoked()
            return _patient_viewer(state, patient)
        if state.principal_kind != "person":
            raise LoginRequired()
        person = await s.get(DelegatePerson, state.principal_id)
        if person is None:
            raise AccessRevoked()
        pairs = await _delegations(s, person.id)
    choices = [MailboxChoice(d.id, f"{p.given_names.split()[0]} {p.family_name}".title(),
                             d.id == state.active_delegate_id) for d, p in pairs]
    current = next(((d, p) for d, p in pairs if d.id == state.active_delegate_id), None)
    if state.active_delegate_id is not None and current is None:
        # Revoked or expired since the last request: refuse this one, and forget the choice so
        # that the next page shows the caregiver's remaining mailboxes (if any).
        async with web.core.db.write() as s:
            await web.sessions.update(s, state.id, active_delegate_id=None)
        raise AccessRevoked()
    if current is None and pairs:
        current = pairs[0]
        choices[0] = MailboxChoice(choices[0].delegate_id, choices[0].label, True)
        async with web.core.db.write() as s:  # remembered, so that revocation is noticed
            await web.sessions.update(s, state.id, active_delegate_id=current[0].id)
    return Viewer(state, "person", person.id, person.display_name,
                  current[1] if current else None, current[0] if current else None, choices)


ViewerDep = Annotated[Viewer, Depends(viewer)]


async def opened_mailbox(web: Web, who: Viewer) -> MailboxSession:
    """The viewer's mailbox, opened for this web session (C6); 404 when there is none."""
    from missive.errors import NotFound

    if who.mailbox_id is None:
        raise NotFound("no mailbox in view")
    from missive.directory.delegates import key_grant_ref

    grant = key_grant_ref(who.delegate.id) if who.delegate is not None else None
    return await web.vault.get(who.session.id, who.mailbox_id, grant)
