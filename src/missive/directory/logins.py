"""Who a webmail login designates: a patient (INS or registered e-mail) or a caregiver.

A login is a matricule INS (a patient), or an e-mail address: the patient whose registered
e-mail it is — only when exactly one patient has it (a family address shared by several
patients identifies nobody) — and/or the caregiver whose login it is. The password decides
between them. Lookups use the directory's normalised, indexed columns.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from missive.directory import validate
from missive.directory.errors import InvalidField
from missive.directory.models import DelegatePerson, Patient
from missive.directory.patients import find_patient

Account = Patient | DelegatePerson


async def person_by_email(s: AsyncSession, email: str) -> DelegatePerson | None:
    return (await s.execute(select(DelegatePerson).where(
        DelegatePerson.login_email == email.strip().lower()))).scalar_one_or_none()


async def patient_by_ins(s: AsyncSession, text: str) -> Patient | None:
    """The patient of an INS as typed (spaces allowed); None if malformed or unknown."""
    try:
        matricule = validate.matricule("".join(text.split()))
    except InvalidField:
        return None
    return await find_patient(s, matricule)


async def candidates(s: AsyncSession, identifier: str) -> list[tuple[str, Account]]:
    """``("patient" | "person", account)`` pairs that ``identifier`` may designate."""
    ident = identifier.strip()
    if "@" not in ident:
        patient = await patient_by_ins(s, ident)
        return [("patient", patient)] if patient is not None else []
    email = ident.lower()
    found: list[tuple[str, Account]] = []
    patients = (await s.execute(select(Patient).where(Patient.email == email)
                                .limit(2))).scalars().all()
    if len(patients) == 1:
        found.append(("patient", patients[0]))
    person = await person_by_email(s, email)
    if person is not None:
        found.append(("person", person))
    return found
