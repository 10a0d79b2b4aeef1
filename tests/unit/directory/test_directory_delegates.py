"""Delegations (professional or external person) and care teams, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from missive.db.base import utcnow
from missive.directory import delegates, patients, professionals
from missive.directory.errors import Conflict, InvalidField, NotFound

INS = "279035121518989"


@pytest.fixture
async def people(core: Any) -> dict[str, Any]:
    d = core.settings.domain
    async with core.db.write() as s:
        patient = await patients.add_patient(
            s, core.store, core.settings, actor="admin", ins=INS, oid=None,
            family_name="DUPONT", given_names="Marie", birth_date_text="1979-03-05",
            sex_text="F", birth_place_text="51215", status="active")
        pro = await professionals.add_professional(
            s, core.store, core.settings, actor="admin", rpps="10001234565", name="M C",
            profession="Médecin", address=f"mc@{d}")
    return {"patient": patient, "pro": pro}


async def test_person_delegate_grant_login_revoke(core: Any, people: dict[str, Any]) -> None:
    async with core.db.write() as s:
        view = await delegates.add_delegate(s, core.store, core.settings, patient_ins=INS,
                                            login_email="Fille@Example.FR",
            display_name="Julie Dupont", rights="read-reply", password="pw-julie",
            actor="admin")
        data = view.to_dict()
        assert (data["kind"], data["login"], data["rights"], data["in_force"]) == (
            "person", "fille@example.fr", "read_reply", True)
        with pytest.raises(Conflict, match="already has delegation"):
            await delegates.add_delegate(s, core.store, core.settings, patient_ins=INS,
                                         login_email="fille@example.fr", actor="admin")
    async with core.db.write() as s:
        person = await delegates.authenticate_delegate_person(
            s, "FILLE@example.fr", "pw-julie", settings=core.settings)
        assert person is not None
        assert await delegates.authenticate_delegate_person(
            s, "fille@example.fr", "wrong", settings=core.settings) is None
        active = await delegates.delegations_in_force(s, person_id=person.id)
        assert [v.patient.matricule for v in active] == [INS]
        await delegates.revoke_delegate(s, core.store, data["id"], actor="admin")
        assert await delegates.delegations_in_force(s, person_id=person.id) == []
        with pytest.raises(Conflict, match="already revoked"):
            await delegates.revoke_delegate(s, core.store, data["id"], actor="admin")
        assert await delegates.list_delegates(s, patient_ins=INS) == []
        assert len(await delegates.list_delegates(s, patient_ins=INS, include_revoked=True)) == 1


async def test_professional_delegate_and_expiry(core: Any, people: dict[str, Any]) -> None:
    pro = people["pro"]
    async with core.db.write() as s:
        with pytest.raises(InvalidField, match="future"):
            await delegates.add_delegate(s, core.store, core.settings, patient_ins=INS,
                                         professional=pro.address,
                                         expires_at=utcnow() - timedelta(days=1), actor="admin")
        view = await delegates.add_delegate(s, core.store, core.settings, patient_ins=INS,
                                            professional=pro.address,
                                            expires_at=utcnow() + timedelta(days=30),
                                            actor="admin")
        assert view.to_dict()["kind"] == "professional"
        active = await delegates.delegations_in_force(s, professional_id=pro.id)
        assert [v.delegate.id for v in active] == [view.delegate.id]
        # Once expired, the delegation no longer counts.
        view.delegate.expires_at = utcnow() - timedelta(seconds=1)
        await s.flush()
        assert await delegates.delegations_in_force(s, professional_id=pro.id) == []
        with pytest.raises(NotFound):
            await delegates.revoke_delegate(s, core.store, 99999, actor="admin")
        with pytest.raises(InvalidField, match="either"):
            await delegates.add_delegate(s, core.store, core.settings, patient_ins=INS,
                                         actor="admin")


async def test_care_team(core: Any, people: dict[str, Any]) -> None:
    patient, pro = people["patient"], people["pro"]
    async with core.db.write() as s:
        assert not await delegates.in_care_team(s, patient.id, pro.id)
        await delegates.add_to_care_team(s, INS, pro.address, actor="admin")
        assert await delegates.in_care_team(s, patient.id, pro.id)
        assert [p.id for p in await delegates.care_team(s, patient.id)] == [pro.id]
        with pytest.raises(Conflict):
            await delegates.add_to_care_team(s, INS, pro.address, actor="admin")
        await delegates.remove_from_care_team(s, INS, pro.address, actor="admin")
        assert not await delegates.in_care_team(s, patient.id, pro.id)
        with pytest.raises(NotFound):
            await delegates.remove_from_care_team(s, INS, pro.address, actor="admin")
