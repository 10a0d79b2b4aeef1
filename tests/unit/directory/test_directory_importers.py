"""CSV imports (all-or-nothing, every bad row reported by line) and the national whitelist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from missive.directory import importers, patients, professionals, trust
from missive.directory.importers import ImportFileError

PATIENT_HEADER = "ins,oid,family_name,given_names,birth_date,sex,birth_place,phone,email\n"


def _patient_row(ins: str, **cells: str) -> str:
    values = {"oid": "1.2.250.1.213.1.4.10", "family_name": "DUPONT", "given_names": "Marie",
              "birth_date": "1979-03-05", "sex": "F", "birth_place": "51215", "phone": "",
              "email": ""}
    values.update(cells)
    return ",".join([ins, *values.values()]) + "\n"


async def _import_patients(core: Any, data: str, **kw: Any) -> importers.ImportReport:
    async with core.db.write() as s:
        return await importers.import_patients_csv(s, core.store, core.settings, data.encode(),
                                                   actor="admin", **kw)


async def test_patient_import_all_good(core: Any, make_ins: Callable[..., str]) -> None:
    data = PATIENT_HEADER + "".join(_patient_row(make_ins(n)) for n in range(1, 6))
    report = await _import_patients(core, data)
    assert (report.rows, report.imported, report.errors) == (5, 5, [])
    async with core.db.read() as s:
        assert len(await patients.list_patients(s)) == 5


async def test_patient_import_reports_every_bad_row_and_imports_nothing(
    core: Any, make_ins: Callable[..., str]
) -> None:
    data = (
        PATIENT_HEADER
        + _patient_row(make_ins(1))                              # line 2 ok
        + _patient_row("279035121518988")                        # line 3 bad key
        + _patient_row(make_ins(3), sex="X")                     # line 4 bad sex
        + "\n"                                                   # line 5 blank, ignored
        + '"' + make_ins(6) + '",,"DU\nPONT",M,1979-03-05,F,51215,,\n'  # lines 6-7 bad
        + _patient_row(make_ins(1))                              # line 8 duplicate of line 2
        + "a,b\n"                                                # line 9 wrong field count
    )
    report = await _import_patients(core, data)
    assert report.rejected and report.imported == 0
    assert [(e.line, e.reason) for e in report.errors] == [
        (3, "ins: INS key should be 89, got 88"),
        (4, "sex: must be M or F, got 'X'"),
        (6, "family_name: must be a single line of printable characters"),
        (8, f"ins: {make_ins(1)} is already on line 2"),
        (9, "has 2 fields, the header has 9"),
    ]
    async with core.db.read() as s:
        assert await patients.list_patients(s) == []


async def test_patient_import_skip_invalid_keeps_good_rows(
    core: Any, make_ins: Callable[..., str]
) -> None:
    await _import_patients(core, PATIENT_HEADER + _patient_row(make_ins(1)))
    data = PATIENT_HEADER + _patient_row(make_ins(1)) + _patient_row(make_ins(2))
    report = await _import_patients(core, data, skip_invalid=True)
    assert report.imported == 1 and not report.rejected
    assert [e.line for e in report.errors] == [2]
    assert "already exists" in report.errors[0].reason


async def test_semicolon_bom_and_header_errors(core: Any, make_ins: Callable[..., str]) -> None:
    data = "\ufeff" + PATIENT_HEADER.replace(",", ";") + _patient_row(make_ins(1)).replace(",", ";")
    assert (await _import_patients(core, data)).imported == 1
    with pytest.raises(ImportFileError, match="unknown column"):
        await _import_patients(core, "ins,colour\n")
    with pytest.raises(ImportFileError, match="missing required column"):
        await _import_patients(core, "ins,oid\n")
    with pytest.raises(ImportFileError, match="empty"):
        await _import_patients(core, "")
    with pytest.raises(ImportFileError, match="UTF-8"):
        async with core.db.write() as s:
            await importers.import_patients_csv(s, core.store, core.settings,
                                                b"ins\n\xff\xfe", actor="admin")


async def test_professional_import(core: Any, make_rpps: Callable[[int], str]) -> None:
    d = core.settings.domain
    data = (
        "rpps,adeli,name,profession,specialty,address,mailbox_type,password\n"
        f"{make_rpps(1)},,Marie Curie,Médecin,Radiologie,mc@{d},,pw1\n"
        f",751234567,Jean Soin,Infirmier,,js@{d},organisational,\n"
        f"{make_rpps(3)},,Bad Domain,Médecin,,x@elsewhere.example,,\n"
        f"{make_rpps(4)},,Same Address,Médecin,,MC@{d},,\n"
    )
    async with core.db.write() as s:
        report = await importers.import_professionals_csv(s, core.store, core.settings,
                                                          data.encode(), actor="admin")
    assert report.rejected
    assert [e.line for e in report.errors] == [4, 5]
    assert "operator domain" in report.errors[0].reason
    assert f"mc@{d} is already on line 2" in report.errors[1].reason
    async with core.db.write() as s:
        report = await importers.import_professionals_csv(
            s, core.store, core.settings, data.encode(), actor="admin", skip_invalid=True)
        assert report.imported == 2
        ok = await professionals.authenticate_professional(s, f"mc@{d}", "pw1",
                                                           settings=core.settings)
        assert ok is not None and ok.specialty == "Radiologie"
        js = await professionals.get_professional(s, f"js@{d}")
        assert js.national_id == "0751234567" and js.password_hash is None


WHITELIST = """<?xml version="1.0" encoding="UTF-8"?>
<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema">
  <DateDeGeneration>2026-11-01T02:00:00</DateDeGeneration>
  <Domaine>
    <Nom>mssante.operateur-a.fr</Nom>
    <Description>Opérateur A</Description>
    <DNCertificatOperateur>CN=mta.operateur-a.fr,O=Operateur A,C=FR</DNCertificatOperateur>
    <ResponsableContact>rssi@operateur-a.fr</ResponsableContact>
    <SupportContact>support@operateur-a.fr</SupportContact>
    <DateMAJ>2025-06-01</DateMAJ>
  </Domaine>
  <Domaine>
    <Nom>{second}</Nom>
    <DateMAJ>2025-07-01</DateMAJ>
  </Domaine>
</ListeBlanche>
"""


async def test_whitelist_import_upserts_and_reports(
    core: Any, make_ca: Callable[..., bytes]
) -> None:
    async with core.db.write() as s:
        report = await importers.import_whitelist(
            s, WHITELIST.format(second="mss.hopital-b.fr").encode(), actor="admin")
        assert (report.imported, report.updated, report.errors) == (2, 0, [])
        assert "list generated 2026-11-01T02:00:00" in report.notes
        # A CA added by hand survives a re-import.
        await trust.add_trust_domain(s, "mss.hopital-b.fr", ca_data=make_ca("B"), actor="admin")
    async with core.db.write() as s:
        entry = await trust.get_trust_domain(s, "mssante.operateur-a.fr")
        assert entry.operator_dn == "CN=mta.operateur-a.fr,O=Operateur A,C=FR"
        assert entry.support_contact == "support@operateur-a.fr"
        assert entry.source == "whitelist"
        report = await importers.import_whitelist(
            s, WHITELIST.format(second="mss.hopital-b.fr").encode(), actor="admin")
        assert (report.imported, report.updated) == (0, 2)
        assert len(await trust.trusted_ca_pems(s, "mss.hopital-b.fr")) == 1
    async with core.db.write() as s:
        report = await importers.import_whitelist(
            s, WHITELIST.format(second="mss.clinique-c.fr").encode(), actor="admin")
        assert any("mss.hopital-b.fr" in n and "--prune" in n for n in report.notes)
        assert await trust.trust_domain_for(s, "mss.hopital-b.fr") is not None
        await importers.import_whitelist(
            s, WHITELIST.format(second="mss.clinique-c.fr").encode(), actor="admin", prune=True)
        assert await trust.trust_domain_for(s, "mss.hopital-b.fr") is None


async def test_whitelist_bad_domain_rejects_whole_list(core: Any) -> None:
    async with core.db.write() as s:
        report = await importers.import_whitelist(
            s, WHITELIST.format(second="not a domain").encode(), actor="admin")
        assert report.rejected and report.imported == 0
        assert report.errors[0].line == 2 and "Nom" in report.errors[0].reason
        assert await trust.list_trust_domains(s) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<ListeBlanche", "not well-formed"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "refused XML"),
        (b'<x xmlns="urn:other"><Domaine><Nom>a.fr</Nom></Domaine></x>', "namespace"),
        (b'<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema"/>', "no Domaine"),
    ],
)
def test_whitelist_file_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        importers.parse_whitelist(data)
