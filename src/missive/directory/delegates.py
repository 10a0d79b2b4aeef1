"""Delegations (caregivers, legal guardians) and care teams (SPEC §1 users, §5, P6).

A delegation lets someone read — and with ``read_reply`` also reply — on behalf of a patient,
until ``expires_at`` (optional) or until revoked. The delegate is either a professional of
this server or an external person (``delegate_person``) who logs in to the webmail with a
login e-mail and their own password. Operators set delegations up here (guardianship decided
outside the system); patients grant and revoke them from the webmail through the same
functions. Revocation keeps the row (``revoked_at``) so that the access journal can still say
who had access when.

The care team lists the professionals a patient may write to first (P6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from missive.config import Settings
from missive.db.base import utcnow
from missive.directory import validate
from missive.directory.common import audit
from missive.directory.errors import Conflict, InvalidField, NotFound
from missive.directory.models import CareTeam, Delegate, DelegatePerson, Patient, Professional
from missive.directory.passwords import hash_password, verify_password
from missive.directory.patients import get_patient
from missive.directory.professionals import get_professional

if TYPE_CHECKING:
    from missive.mailbox.store import MailboxStore


@dataclass(frozen=True)
class DelegationView:
    delegate: Delegate
    patient: Patient
    professional: Professional | None
    person: DelegatePerson | None

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        d = self.delegate
        who = (
            self.professional.address
            if self.professional is not None
            else self.person.login_email if self.person is not None else None
        )
        name = (
            self.professional.name
            if self.professional is not None
            else self.person.display_name if self.person is not None else None
        )
        return {
            "id": d.id,
            "patient_ins": self.patient.matricule,
            "kind": d.kind,
            "login": who,
            "name": name,
            # Where an external delegate's one-time login codes go: SMS to this phone, else
            # e-mail to the login address.
            "phone": self.person.phone if self.person is not None else None,
            "rights": d.rights,
            "expires_at": d.expires_at.isoformat() if d.expires_at else None,
            "revoked_at": d.revoked_at.isoformat() if d.revoked_at else None,
            "in_force": d.in_force(now or utcnow()),
            "created_by": d.created_by,
            "created_at": d.created_at.isoformat(),
        }


async def _person(
    session: AsyncSession,
    settings: Settings,
    login_email: str,
    display_name: str | None,
    password: str | None,
    phone: str | None = None,
) -> DelegatePerson:
    email = validate.email(login_email, "login_email")
    if email is None:
        raise InvalidField("login_email", "must not be empty")
    key = email.lower()
    found = (
        await session.execute(select(DelegatePerson).where(DelegatePerson.login_email == key))
    ).scalar_one_or_none()
    if found is None:
        name = validate.text("name", display_name)
        found = DelegatePerson(login_email=key, display_name=name, created_at=utcnow())
        session.add(found)
    if password is not None:
        found.password_hash = await hash_password(settings, password)
    if phone is not None:
        found.phone = validate.phone(phone)
    await session.flush()
    return found


def key_grant_ref(delegate_id: int) -> str:
    """The name under which the mailbox key is wrapped for delegation ``delegate_id`` (C6)."""
    return f"delegate:{delegate_id}"


async def add_delegate(
    session: AsyncSession,
    store: MailboxStore,
    settings: Settings,
    *,
    patient_ins: str,
    professional: str | None = None,
    login_email: str | None = None,
    display_name: str | None = None,
    rights: str | None = None,
    expires_at: datetime | None = None,
    password: str | None = None,
    phone: str | None = None,
    actor: str,
) -> DelegationView:
    """Grant a delegation on ``patient_ins`` to a professional (address/RPPS) or a person.

    ``phone`` (a person only) is the mobile number their one-time login codes go to (a
    guardian an operator sets up for a protected adult has no invitation to give it in);
    without it, codes go by e-mail to the login address.
    """
    if (professional is None) == (login_email is None):
        raise InvalidField("delegate", "give either a professional or a login e-mail")
    if professional is not None and phone is not None:
        raise InvalidField("phone", "only for an external person (login e-mail), not for a "
                                    "professional")
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidField("expires", "must be in the future")
    patient = await get_patient(session, patient_ins)
    if patient.status == "closed":
        raise Conflict("the patient's account is closed")
    level = validate.rights(rights)
    pro: Professional | None = None
    person: DelegatePerson | None = None
    query = select(Delegate).where(Delegate.patient_id == patient.id,
                                   Delegate.revoked_at.is_(None))
    if professional is not None:
        pro = await get_professional(session, professional)
        query = query.where(Delegate.professional_id == pro.id)
    else:
        assert login_email is not None  # noqa: S101 (checked above)
        person = await _person(session, settings, login_email, display_name, password, phone)
        query = query.where(Delegate.person_id == person.id)
    now = utcnow()
    for existing in (await session.execute(query)).scalars():
        if existing.in_force(now):
            raise Conflict(f"this delegate already has delegation #{existing.id}; revoke it "
                           "first to change its rights or expiry")
    row = Delegate(
        patient_id=patient.id,
        professional_id=pro.id if pro else None,
        person_id=person.id if person else None,
        rights=level,
        expires_at=expires_at,
        created_by=actor,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    # C6: the delegate gets the mailbox key wrapped for this delegation, not the owner's; a
    # revocation destroys it. Opening the owner's mailbox here needs the master key (the
    # webmail and the admin CLI have it).
    owner = await store.open(patient.mailbox_id)
    await owner.grant_delegate_key(session, key_grant_ref(row.id))
    await audit(
        session,
        "delegate.grant",
        actor=actor,
        mailbox_id=patient.mailbox_id,
        details={"delegate_id": row.id, "kind": row.kind, "rights": level},
    )
    return DelegationView(row, patient, pro, person)


async def _view(session: AsyncSession, row: Delegate) -> DelegationView:
    patient = await session.get(Patient, row.patient_id)
    if patient is None:  # pragma: no cover (FK)
        raise NotFound(f"delegation #{row.id} has no patient")
    pro = await session.get(Professional, row.professional_id) if row.professional_id else None
    person = await session.get(DelegatePerson, row.person_id) if row.person_id else None
    return DelegationView(row, patient, pro, person)


async def list_delegates(
    session: AsyncSession, *, patient_ins: str | None = None, include_revoked: bool = False
) -> list[DelegationView]:
    query = select(Delegate).order_by(Delegate.id)
    if patient_ins is not None:
        patient = await get_patient(session, patient_ins)
        query = query.where(Delegate.patient_id == patient.id)
    if not include_revoked:
        query = query.where(Delegate.revoked_at.is_(None))
    rows = (await session.execute(query)).scalars().all()
    return [await _view(session, row) for row in rows]


async def revoke_delegate(
    session: AsyncSession, store: MailboxStore, delegate_id: int, *, actor: str,
    patient_id: int | None = None,
) -> DelegationView:
    """Revoke delegation ``delegate_id`` (``patient_id`` restricts it to that patient's); its
    wrapped mailbox key is destroyed once the transaction commits."""
    row = await session.get(Delegate, delegate_id)
    if row is None or (patient_id is not None and row.patient_id != patient_id):
        raise NotFound(f"no delegation #{delegate_id}")
    if row.revoked_at is not None:
        raise Conflict(f"delegation #{delegate_id} was already revoked")
    row.revoked_at = utcnow()
    await session.flush()
    await store.revoke_delegate_key(session, key_grant_ref(row.id))
    view = await _view(session, row)
    await audit(
        session,
        "delegate.revoke",
        actor=actor,
        mailbox_id=view.patient.mailbox_id,
        details={"delegate_id": row.id, "kind": row.kind},
    )
    return view


async def update_delegate_person(
    session: AsyncSession, delegate_id: int, *, actor: str, phone: str | None = None,
    display_name: str | None = None,
) -> DelegationView:
    """Change the phone (``""`` removes it) or name of delegation ``delegate_id``'s external
    person: the contact their one-time login codes go to. A person delegate of several
    patients has one contact for all."""
    row = await session.get(Delegate, delegate_id)
    if row is None:
        raise NotFound(f"no delegation #{delegate_id}")
    view = await _view(session, row)
    if view.person is None:
        raise InvalidField("delegate", f"delegation #{delegate_id} is a professional's: their "
                                       "contact is in the professional directory")
    changed: dict[str, str | int | bool | None] = {"delegate_id": row.id}
    if phone is not None:
        view.person.phone = validate.phone(phone)
        changed["phone"] = view.person.phone is not None
    if display_name is not None:
        view.person.display_name = validate.text("name", display_name)
        changed["name"] = True
    await session.flush()
    await audit(session, "admin.delegate.update", actor=actor,
                mailbox_id=view.patient.mailbox_id, details=changed)
    return view


async def delegations_in_force(
    session: AsyncSession,
    *,
    professional_id: int | None = None,
    person_id: int | None = None,
) -> list[DelegationView]:
    """The delegations a professional or a person may use now (webmail, IMAP)."""
    query = select(Delegate).where(Delegate.revoked_at.is_(None))
    if professional_id is not None:
        query = query.where(Delegate.professional_id == professional_id)
    elif person_id is not None:
        query = query.where(Delegate.person_id == person_id)
    else:
        return []
    now = utcnow()
    rows = [r for r in (await session.execute(query)).scalars() if r.in_force(now)]
    return [await _view(session, r) for r in rows]


async def authenticate_delegate_person(
    session: AsyncSession, login_email: str, password: str, *, settings: Settings
) -> DelegatePerson | None:
    """The external delegate with this login and password, or None (constant-time-ish)."""
    key = login_email.strip().lower()
    person = (
        await session.execute(select(DelegatePerson).where(DelegatePerson.login_email == key))
    ).scalar_one_or_none()
    check = await verify_password(settings, person.password_hash if person else None, password)
    if not check.ok or person is None:
        return None
    if check.needs_rehash:
        person.password_hash = await hash_password(settings, password)
        await session.flush()
    return person


# Care team (P6) ---------------------------------------------------------------------------


async def add_to_care_team(
    session: AsyncSession, patient_ins: str, professional: str, *, actor: str
) -> CareTeam:
    patient = await get_patient(session, patient_ins)
    pro = await get_professional(session, professional)
    exists = await session.execute(
        select(CareTeam).where(CareTeam.patient_id == patient.id,
                               CareTeam.professional_id == pro.id)
    )
    if exists.scalar_one_or_none() is not None:
        raise Conflict(f"{pro.address} is already in this patient's care team")
    row = CareTeam(patient_id=patient.id, professional_id=pro.id, created_at=utcnow())
    session.add(row)
    await session.flush()
    await audit(
        session,
        "admin.care_team.add",
        actor=actor,
        mailbox_id=patient.mailbox_id,
        details={"professional_id": pro.id},
    )
    return row


async def remove_from_care_team(
    session: AsyncSession, patient_ins: str, professional: str, *, actor: str
) -> None:
    patient = await get_patient(session, patient_ins)
    pro = await get_professional(session, professional)
    result = await session.execute(
        delete(CareTeam).where(CareTeam.patient_id == patient.id,
                               CareTeam.professional_id == pro.id)
    )
    if not getattr(result, "rowcount", 0):
        raise NotFound(f"{pro.address} is not in this patient's care team")
    await audit(
        session,
        "admin.care_team.remove",
        actor=actor,
        mailbox_id=patient.mailbox_id,
        details={"professional_id": pro.id},
    )


async def care_team(session: AsyncSession, patient_id: int) -> Sequence[Professional]:
    result = await session.execute(
        select(Professional)
        .join(CareTeam, CareTeam.professional_id == Professional.id)
        .where(CareTeam.patient_id == patient_id)
        .order_by(Professional.name)
    )
    return result.scalars().all()


async def in_care_team(session: AsyncSession, patient_id: int, professional_id: int) -> bool:
    """P6: may this patient write first to this professional?"""
    result = await session.execute(
        select(CareTeam.id).where(CareTeam.patient_id == patient_id,
                                  CareTeam.professional_id == professional_id)
    )
    return result.scalar_one_or_none() is not None
