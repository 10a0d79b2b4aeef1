"""Professionals on SQLite and PostgreSQL: creation, lookups, aliases (P2), authentication (P3),
password rehashing, deletion rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from argon2 import PasswordHasher, profiles

from missive.config import Settings
from missive.directory import professionals as pros
from missive.directory import validate
from missive.directory.errors import Conflict, InvalidField, NotFound
from missive.mailbox.models import Mailbox

RPPS = "10001234565"


async def _add(core: Any, *, rpps: str = RPPS, address: str = "Marie.Curie@TEST.missive.localhost",
               password: str | None = "s3cret-pass", **extra: Any) -> Any:  # noqa: S107
    async with core.db.write() as s:
        return await pros.add_professional(
            s, core.store, core.settings, actor="admin", password=password, rpps=rpps,
            name="Marie Curie", profession="Médecin", address=address, **extra,
        )


async def test_add_normalises_and_creates_mailbox(core: Any) -> None:
    p = await _add(core, specialty="Radiologie")
    assert p.national_id == "8" + RPPS
    assert p.address == "marie.curie@test.missive.localhost"
    assert p.status == "active" and p.mailbox_type == "personal"
    assert p.password_hash is not None and p.password_hash.startswith("$argon2id$")
    async with core.db.read() as s:
        box = await s.get(Mailbox, p.mailbox_id)
        assert box is not None and box.kind == "professional"
        for ref in (RPPS, "8" + RPPS, "MARIE.CURIE@test.missive.localhost"):
            assert (await pros.get_professional(s, ref)).id == p.id


async def test_adeli_professional(core: Any) -> None:
    async with core.db.write() as s:
        p = await pros.add_professional(
            s, core.store, core.settings, actor="admin", rpps=None, adeli="751234567",
            name="Jean Infirmier", profession="Infirmier",
            address="jean@test.missive.localhost",
        )
    assert p.national_id == "0751234567" and p.rpps is None
    async with core.db.read() as s:
        for ref in ("751234567", "0751234567"):
            assert (await pros.get_professional(s, ref)).id == p.id


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rpps": "10001234566"}, "RPPS check digit should be 5, got 6"),
        ({"address": "x@elsewhere.example"}, "operator domain"),
        ({"address": "x@patient.test.missive.localhost"}, "patient domain"),
        ({"address": "no-at-sign"}, "not a valid address"),
        ({"mailbox_type": "shared"}, "mailbox_type"),
    ],
)
def test_invalid_fields(settings: Settings, fields: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"rpps": RPPS, "name": "Marie Curie", "profession": "Médecin",
                            "address": f"mc@{settings.domain}"}
    with pytest.raises(InvalidField, match=message):
        validate.professional_input(settings, **{**base, **fields})


async def test_invalid_input_writes_nothing(core: Any) -> None:
    with pytest.raises(InvalidField, match="check digit"):
        await _add(core, rpps="10001234566")
    async with core.db.read() as s:
        assert await pros.list_professionals(s) == []


async def test_duplicates_refused(core: Any, make_rpps: Callable[[int], str]) -> None:
    await _add(core)
    with pytest.raises(Conflict, match="national id"):
        await _add(core, address="other@test.missive.localhost")
    with pytest.raises(Conflict, match="already in use"):
        await _add(core, rpps=make_rpps(7))


async def test_authentication_rules(core: Any) -> None:
    await _add(core)
    login = "marie.curie@test.missive.localhost"
    async with core.db.write() as s:
        ok = await pros.authenticate_professional(s, login.upper(), "s3cret-pass",
                                                  settings=core.settings)
        assert ok is not None and ok.address == login
        assert await pros.authenticate_professional(s, login, "wrong",
                                                    settings=core.settings) is None
        assert await pros.authenticate_professional(s, "nobody@test.missive.localhost", "x",
                                                    settings=core.settings) is None
        assert await pros.authenticate_professional(s, "not an address", "x",
                                                    settings=core.settings) is None
        await pros.set_professional_status(s, login, "suspended", actor="admin")
        # P3: a suspended professional never authenticates, even with the right password.
        assert await pros.authenticate_professional(s, login, "s3cret-pass",
                                                    settings=core.settings) is None


async def test_outdated_hash_is_rehashed(core: Any) -> None:
    # A hash made with other parameters than the test profile (CHEAPEST: m=8, t=1, p=1).
    strong = PasswordHasher(memory_cost=16, time_cost=1, parallelism=1).hash("pw")
    assert profiles.CHEAPEST.memory_cost == 8
    p = await _add(core, password=None)
    async with core.db.write() as s:
        pro = await pros.get_professional(s, p.address)
        pro.password_hash = strong
    async with core.db.write() as s:
        assert await pros.authenticate_professional(s, p.address, "pw",
                                                    settings=core.settings) is not None
    async with core.db.read() as s:
        pro = await pros.get_professional(s, p.address)
        assert pro.password_hash != strong
        assert "m=8," in (pro.password_hash or "")


async def test_aliases_are_owned(core: Any) -> None:
    p = await _add(core)
    async with core.db.write() as s:
        await pros.add_alias(s, core.settings, p.address, "secretariat@test.missive.localhost",
                             actor="admin")
        with pytest.raises(Conflict):
            await pros.add_alias(s, core.settings, p.address, p.address, actor="admin")
        owned = await pros.owned_addresses(s, p)
        by_alias = await pros.get_professional(s, "Secretariat@test.missive.localhost")
    assert owned == {p.address, "secretariat@test.missive.localhost"}
    assert by_alias.id == p.id
    async with core.db.write() as s:
        await pros.remove_alias(s, "secretariat@test.missive.localhost", actor="admin")
        assert await pros.owned_addresses(s, p) == {p.address}


async def test_delete_requires_suspension_and_shreds(core: Any) -> None:
    p = await _add(core)
    with pytest.raises(Conflict, match="suspend the account first"):
        async with core.db.write() as s:
            await pros.delete_professional(s, core.store, RPPS, actor="admin")
    async with core.db.write() as s:
        await pros.set_professional_status(s, RPPS, "suspended", actor="admin")
        await pros.delete_professional(s, core.store, RPPS, actor="admin")
    async with core.db.read() as s:
        with pytest.raises(NotFound):
            await pros.get_professional(s, RPPS)
        box = await s.get(Mailbox, p.mailbox_id)
        assert box is not None and box.wrapped_private_key is None


async def test_list_and_search(core: Any, make_rpps: Callable[[int], str]) -> None:
    await _add(core)
    await _add(core, rpps=make_rpps(2), address="louis.pasteur@test.missive.localhost",
               status="suspended")
    async with core.db.read() as s:
        assert len(await pros.list_professionals(s)) == 2
        suspended = await pros.list_professionals(s, status="suspended")
        found = await pros.list_professionals(s, search="PASTEUR")
    assert [p.address for p in suspended] == ["louis.pasteur@test.missive.localhost"]
    assert [p.address for p in found] == ["louis.pasteur@test.missive.localhost"]
