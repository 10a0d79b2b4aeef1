"""Patients in the directory, on SQLite and PostgreSQL: creation with a mailbox, status life
cycle with crypto-shredding on close, deletion rules, audit entries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from missive.audit.models import AuditEntry
from missive.config import Settings
from missive.directory import patients, validate
from missive.directory.errors import Conflict, InvalidField, NotFound
from missive.mailbox.models import Mailbox

INS = "279035121518989"


async def _add(core: Any, data: dict[str, Any]) -> Any:
    async with core.db.write() as s:
        return await patients.add_patient(s, core.store, core.settings, actor="admin", **data)


async def test_add_creates_patient_and_mailbox(
    core: Any, patient_data: Callable[..., dict[str, Any]]
) -> None:
    p = await _add(core, patient_data(INS, phone_text="06 12 34 56 78",
                                      email_text="Marie@Example.FR"))
    assert p.matricule == INS
    assert p.status == "pending"
    assert p.phone == "+33612345678"
    assert p.email == "Marie@example.fr"
    assert p.notify_channel == "both"
    async with core.db.read() as s:
        box = await s.get(Mailbox, p.mailbox_id)
        assert box is not None and box.kind == "patient"
        found = await patients.get_patient(s, INS)
        assert found.id == p.id
        actions = (await s.execute(select(AuditEntry.action))).scalars().all()
    assert "admin.patient.add" in actions


async def test_duplicate_ins_is_refused(
    core: Any, patient_data: Callable[..., dict[str, Any]]
) -> None:
    await _add(core, patient_data(INS))
    with pytest.raises(Conflict, match="already exists"):
        await _add(core, patient_data(INS))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"ins": "279035121518988"}, "INS key should be 89, got 88"),
        ({"ins": "27903512151898"}, "15 characters"),
        ({"oid": "1.2.250.1.213.1.4.8"}, "refused in test mode"),
        ({"birth_date_text": "1979-13-01"}, "birth_date"),
        ({"birth_date_text": "2999-01-01"}, "future"),
        ({"sex_text": "X"}, "sex: must be M or F"),
        ({"birth_place_text": "5121"}, "birth_place"),
        ({"phone_text": "12"}, "phone"),
        ({"email_text": "not-an-address"}, "email"),
        ({"family_name": "  "}, "family_name: must not be empty"),
        ({"status": "closed"}, "status: must be one of pending, active"),
        ({"notify": "sms"}, "needs a phone number"),
    ],
)
def test_invalid_fields_are_named(
    settings: Settings,
    patient_data: Callable[..., dict[str, Any]],
    override: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(InvalidField, match=message):
        validate.patient_input(settings, **{**patient_data(INS), **override})


async def test_invalid_input_writes_nothing(
    core: Any, patient_data: Callable[..., dict[str, Any]]
) -> None:
    with pytest.raises(InvalidField, match="INS key"):
        await _add(core, {**patient_data(INS), "ins": "279035121518988"})
    async with core.db.read() as s:
        assert await patients.list_patients(s) == []
        actions = (await s.execute(select(AuditEntry.action))).scalars().all()
    assert not any(a.startswith("admin.patient") for a in actions)


async def test_status_life_cycle_and_close_shreds_keys(
    core: Any, patient_data: Callable[..., dict[str, Any]]
) -> None:
    p = await _add(core, patient_data(INS))
    async with core.db.write() as s:
        await patients.set_patient_status(s, core.store, INS, "active", actor="admin")
        await patients.set_patient_status(s, core.store, INS, "opposed", actor="admin")
        await patients.set_patient_status(s, core.store, INS, "active", actor="admin")
    async with core.db.read() as s:
        box = await s.get(Mailbox, p.mailbox_id)
        assert box is not None and box.wrapped_private_key is not None
    async with core.db.write() as s:
        closed = await patients.set_patient_status(s, core.store, INS, "closed", actor="admin")
        assert closed.status == "closed"
    async with core.db.read() as s:
        box = await s.get(Mailbox, p.mailbox_id)
        assert box is not None and box.wrapped_private_key is None
        assert box.status == "closed"
    with pytest.raises(Conflict, match="cannot be reopened"):
        async with core.db.write() as s:
            await patients.set_patient_status(s, core.store, INS, "active", actor="admin")


async def test_delete_requires_closed_then_frees_the_ins(
    core: Any, patient_data: Callable[..., dict[str, Any]]
) -> None:
    await _add(core, patient_data(INS, status="active"))
    with pytest.raises(Conflict, match="close the account first"):
        async with core.db.write() as s:
            await patients.delete_patient(s, INS, actor="admin")
    async with core.db.write() as s:
        await patients.set_patient_status(s, core.store, INS, "closed", actor="admin")
        await patients.delete_patient(s, INS, actor="admin")
    async with core.db.read() as s:
        with pytest.raises(NotFound):
            await patients.get_patient(s, INS)
    again = await _add(core, patient_data(INS))
    assert again.status == "pending"


async def test_list_filters_by_status(
    core: Any, patient_data: Callable[..., dict[str, Any]], make_ins: Callable[..., str]
) -> None:
    for n, status in ((1, "pending"), (2, "active"), (3, "active")):
        await _add(core, patient_data(make_ins(n), status=status))
    async with core.db.read() as s:
        active = await patients.list_patients(s, status="active")
        counts = await patients.count_patients(s)
    assert sorted(p.matricule for p in active) == sorted([make_ins(2), make_ins(3)])
    assert counts == {"pending": 1, "active": 2}


async def test_update_contact_keeps_channel_consistent(
    core: Any, patient_data: Callable[..., dict[str, Any]]
) -> None:
    await _add(core, patient_data(INS, phone_text="+33612345678"))
    async with core.db.write() as s:
        p = await patients.update_patient_contact(s, INS, actor="admin", phone="")
        assert p.phone is None
        assert p.notify_channel == "none"
        with pytest.raises(InvalidField, match="needs an e-mail"):
            await patients.update_patient_contact(s, INS, actor="admin", notify_channel="email")
