"""Trust space and recipient resolution (P4, P5, P7 facts) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from missive.directory import patients, professionals, trust
from missive.directory.errors import InvalidField, NotFound
from missive.directory.recipients import resolve_recipient

INS = "279035121518989"


async def test_add_domain_with_cas_is_idempotent(core: Any, make_ca: Callable[..., bytes]) -> None:
    ca1, ca2 = make_ca("Operator A CA"), make_ca("Operator A CA 2")
    async with core.db.write() as s:
        entry, added = await trust.add_trust_domain(
            s, "MSS.Operator-A.example.", ca_data=ca1 + ca2, operator_dn="CN=mta.a",
            actor="admin")
        assert entry.domain == "mss.operator-a.example"
        assert [c.subject for c in added] == ["CN=Operator A CA", "CN=Operator A CA 2"]
        _, again = await trust.add_trust_domain(s, "mss.operator-a.example", ca_data=ca1,
                                                actor="admin")
        assert again == []
    async with core.db.read() as s:
        pems = await trust.trusted_ca_pems(s, "mss.operator-a.example")
        assert pems == [ca1, ca2]
        assert await trust.trusted_ca_pems(s) == [ca1, ca2]
        assert await trust.trusted_ca_pems(s, "unknown.example") == []
        found = await trust.trust_domain_for(s, "MSS.OPERATOR-A.EXAMPLE")
        assert found is not None and found.operator_dn == "CN=mta.a"


async def test_non_ca_and_garbage_refused(core: Any, make_ca: Callable[..., bytes]) -> None:
    async with core.db.write() as s:
        with pytest.raises(InvalidField, match="not a CA certificate"):
            await trust.add_trust_domain(s, "a.example", ca_data=make_ca("leaf", ca=False),
                                         actor="admin")
        with pytest.raises(InvalidField, match="not a PEM or DER"):
            await trust.add_trust_domain(s, "a.example", ca_data=b"hello", actor="admin")
        with pytest.raises(InvalidField, match="domain"):
            await trust.add_trust_domain(s, "bad..domain", actor="admin")


async def test_remove_one_ca_then_domain(core: Any, make_ca: Callable[..., bytes]) -> None:
    async with core.db.write() as s:
        _, added = await trust.add_trust_domain(s, "b.example",
                                                ca_data=make_ca("x") + make_ca("y"),
                                                actor="admin")
        await trust.delete_trust_domain(s, "b.example", fingerprint=added[0].fingerprint,
                                        actor="admin")
        assert len(await trust.trusted_ca_pems(s, "b.example")) == 1
        await trust.delete_trust_domain(s, "b.example", actor="admin")
        with pytest.raises(NotFound):
            await trust.get_trust_domain(s, "b.example")


async def test_resolve_recipient_kinds(core: Any) -> None:
    settings = core.settings
    async with core.db.write() as s:
        await patients.add_patient(
            s, core.store, settings, actor="admin", ins=INS, oid=None, family_name="DUPONT",
            given_names="Marie", birth_date_text="1979-03-05", sex_text="F",
            birth_place_text="51215", status="active")
        await professionals.add_professional(
            s, core.store, settings, actor="admin", rpps="10001234565", name="M C",
            profession="Médecin", address=f"mc@{settings.domain}")
        await trust.add_trust_domain(s, "mss.remote.example", actor="admin")
        # Our own domain listed in the trust space must still resolve as local.
        await trust.add_trust_domain(s, settings.domain, actor="admin")
    pd = settings.patient_domain
    async with core.db.read() as s:
        r = await resolve_recipient(s, f"{INS}@{pd.upper()}", settings)
        assert (r.kind, r.known, r.status, r.matricule) == ("patient", True, "active", INS)
        assert r.mailbox_id is not None and r.local
        r = await resolve_recipient(s, f"279035121518988@{pd}", settings)
        assert r.kind == "patient" and not r.known
        assert r.matricule_error == "INS key should be 89, got 88"
        assert r.error_french and r.ins_error is not None
        assert not r.mailbox_exists
        r = await resolve_recipient(s, f"1790351215189@{pd}", settings)
        assert r.matricule_error is not None and "15 characters" in r.matricule_error
        other = "180012a00100161"  # valid (Corsican, lower-case in the address), unknown
        r = await resolve_recipient(s, f"{other}@{pd}", settings)
        assert (r.kind, r.known, r.matricule_error) == ("patient", False, None)
        assert r.matricule == other.upper()
        r = await resolve_recipient(s, f"MC@{settings.domain}", settings)
        assert (r.kind, r.known, r.status) == ("professional", True, "active")
        r = await resolve_recipient(s, f"nobody@{settings.domain}", settings)
        assert (r.kind, r.known) == ("professional", False)
        r = await resolve_recipient(s, "dr@mss.remote.example", settings)
        assert (r.kind, r.trust_domain) == ("remote", "mss.remote.example")
        r = await resolve_recipient(s, "someone@gmail.example", settings)
        assert r.kind == "outside" and not r.local
        r = await resolve_recipient(s, "no-at-all", settings)
        assert r.kind == "invalid" and r.error
