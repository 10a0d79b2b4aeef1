"""Patients: create, look up, list, change status, delete (SPEC §1 patient record, P5).

Status life cycle::

    pending ──▶ active ◀──▶ opposed
       │          │            │
       └──────────┴────────────┴──▶ closed   (terminal: mailbox keys destroyed, C3)

``pending`` accepts mail and keeps it until activation; ``opposed`` refuses mail but keeps the
mailbox (the patient may change their mind); ``closed`` crypto-shreds the mailbox through the
store and can never be left. Deleting a patient is allowed only once closed: the row goes, so
the matricule can be registered again later with a new, empty mailbox; delegations and care
team rows go with it (ON DELETE CASCADE).

Audit entries never carry the matricule or traits, only the patient's row id and statuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from missive.config import Settings
from missive.db.base import utcnow
from missive.directory import validate
from missive.directory.common import MailboxKeeper, audit
from missive.directory.errors import Conflict, InvalidField, NotFound
from missive.directory.models import PATIENT_STATUSES, Patient
from missive.directory.validate import PatientInput

#: Allowed status changes (see the module docstring).
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"active", "opposed", "closed"}),
    "active": frozenset({"opposed", "closed"}),
    "opposed": frozenset({"active", "closed"}),
    "closed": frozenset(),
}


def patient_view(p: Patient, settings: Settings | None = None) -> dict[str, Any]:
    """A plain dict of the record for ``--json`` output and templates."""
    view: dict[str, Any] = {
        "id": p.id,
        "ins": p.matricule,
        "oid": p.oid,
        "family_name": p.family_name,
        "given_names": p.given_names,
        "birth_date": p.birth_date.isoformat(),
        "sex": p.sex,
        "birth_place": p.birth_place,
        "phone": p.phone,
        "email": p.email,
        "notify_channel": p.notify_channel,
        "read_receipts": p.read_receipts,
        "status": p.status,
        "mailbox_id": p.mailbox_id,
        "has_password": p.password_hash is not None,
        "created_at": p.created_at.isoformat(),
        "updated_at": p.updated_at.isoformat(),
    }
    if settings is not None:
        view["address"] = f"{p.matricule.lower()}@{settings.patient_domain}"
    return view


async def get_patient(session: AsyncSession, ins: str) -> Patient:
    """The patient with matricule ``ins`` (checked first: a bad key is reported as such)."""
    matricule = validate.matricule(ins)
    found = await find_patient(session, matricule)
    if found is None:
        raise NotFound(f"no patient with INS {matricule}")
    return found


_PATIENT_BY_ID = select(Patient.__table__).where(
    Patient.__table__.c.id == bindparam("id"))


def read_patient(session: Session, patient_id: int) -> Patient | None:
    """A detached, read-only copy of a patient row, for the checks every web page makes.

    A prepared Core read made into a ``Patient`` that no session tracks: the ORM's identity
    load cost more than the query. Code that changes a patient loads it in its own write
    transaction (these copies are never added to a session).
    """
    row = session.connection().execute(_PATIENT_BY_ID, {"id": patient_id}).first()
    return Patient(**row._mapping) if row is not None else None


async def find_patient(session: AsyncSession, matricule: str) -> Patient | None:
    """The patient with this (already normalised, uppercase) matricule, if any."""
    result = await session.execute(select(Patient).where(Patient.matricule == matricule))
    return result.scalar_one_or_none()


async def insert_patient(
    session: AsyncSession,
    store: MailboxKeeper,
    data: PatientInput,
    *,
    actor: str | None,
) -> Patient:
    """Insert a checked record and create its mailbox in the same transaction."""
    if await find_patient(session, data.matricule) is not None:
        raise Conflict(f"a patient with INS {data.matricule} already exists")
    mailbox_id = await store.create_mailbox(session, kind="patient")
    now = utcnow()
    patient = Patient(
        matricule=data.matricule,
        oid=data.oid,
        family_name=data.family_name,
        given_names=data.given_names,
        birth_date=data.birth_date,
        sex=data.sex,
        birth_place=data.birth_place,
        phone=data.phone,
        email=data.email,
        notify_channel=data.notify_channel,
        read_receipts=data.read_receipts,
        status=data.status,
        mailbox_id=mailbox_id,
        created_at=now,
        updated_at=now,
    )
    session.add(patient)
    await session.flush()
    await audit(
        session,
        "admin.patient.add",
        actor=actor,
        mailbox_id=mailbox_id,
        details={"patient_id": patient.id, "status": patient.status},
    )
    return patient


async def add_patient(
    session: AsyncSession,
    store: MailboxKeeper,
    settings: Settings,
    *,
    actor: str | None,
    **fields: Any,
) -> Patient:
    """Check the fields (see :func:`validate.patient_input`) and create the patient."""
    data = validate.patient_input(settings, **fields)
    return await insert_patient(session, store, data, actor=actor)


async def list_patients(
    session: AsyncSession,
    *,
    status: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Sequence[Patient]:
    query = select(Patient).order_by(Patient.id)
    if status:
        query = query.where(Patient.status == validate.choice("status", status,
                                                                PATIENT_STATUSES, ""))
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return (await session.execute(query)).scalars().all()


async def count_patients(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Patient.status, func.count()).group_by(Patient.status))
    return {str(status): int(n) for status, n in rows.all()}


async def set_patient_status(
    session: AsyncSession,
    store: MailboxKeeper,
    ins: str,
    status: str,
    *,
    actor: str | None,
) -> Patient:
    """Move the patient to ``status``; ``closed`` crypto-shreds the mailbox (C3)."""
    new = validate.choice("status", status, PATIENT_STATUSES, "")
    patient = await get_patient(session, ins)
    old = patient.status
    if new == old:
        return patient
    if new not in TRANSITIONS[old]:
        if old == "closed":
            raise Conflict("the account is closed and its keys destroyed: it cannot be reopened "
                           "(delete it, then add the patient again for a new, empty mailbox)")
        raise Conflict(f"status cannot go from {old} to {new}")
    if new == "closed":
        await store.close_mailbox(session, patient.mailbox_id)
    patient.status = new
    patient.updated_at = utcnow()
    await session.flush()
    await audit(
        session,
        "admin.patient.set_status",
        actor=actor,
        mailbox_id=patient.mailbox_id,
        details={"patient_id": patient.id, "from": old, "to": new},
    )
    return patient


async def update_patient_contact(
    session: AsyncSession,
    ins: str,
    *,
    actor: str | None,
    phone: str | None = None,
    email: str | None = None,
    notify_channel: str | None = None,
    read_receipts: bool | None = None,
) -> Patient:
    """Change contact details and notification preferences (``None`` leaves a field as is;
    an empty string clears a contact)."""
    patient = await get_patient(session, ins)
    if phone is not None:
        patient.phone = validate.phone(phone)
    if email is not None:
        patient.email = validate.email(email)
    if notify_channel is not None or phone is not None or email is not None:
        wanted = notify_channel if notify_channel is not None else patient.notify_channel
        try:
            patient.notify_channel = validate.notify_channel(wanted, patient.phone, patient.email)
        except InvalidField:
            if notify_channel is not None:
                raise
            # A contact was removed: fall back to what the remaining contacts allow.
            patient.notify_channel = validate.notify_channel("", patient.phone, patient.email)
    if read_receipts is not None:
        patient.read_receipts = read_receipts
    patient.updated_at = utcnow()
    await session.flush()
    await audit(
        session,
        "admin.patient.update",
        actor=actor,
        mailbox_id=patient.mailbox_id,
        details={"patient_id": patient.id, "notify_channel": patient.notify_channel},
    )
    return patient


async def delete_patient(
    session: AsyncSession,
    ins: str,
    *,
    actor: str | None,
) -> None:
    """Delete a closed patient's record (see the module docstring)."""
    patient = await get_patient(session, ins)
    if patient.status != "closed":
        raise Conflict(
            f"patient is {patient.status}: close the account first "
            "(`missive admin patient set-status INS closed`, which destroys the mailbox keys), "
            "then delete it"
        )
    await audit(
        session,
        "admin.patient.delete",
        actor=actor,
        mailbox_id=patient.mailbox_id,
        details={"patient_id": patient.id},
    )
    await session.delete(patient)
    await session.flush()
