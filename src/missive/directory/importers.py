"""Bulk imports: patients and professionals from CSV, the trust space from the national whitelist.

CSV (columns in ``docs/administration.md``): UTF-8 (a BOM is accepted), a header row, comma or
semicolon separated (what French spreadsheets write). Every row is checked — fields, then
duplicates inside the file, then against the directory — before anything is written, and every
bad row is reported with its line number (the line where the record starts, the header being
line 1) and the reason. If any row is bad nothing is imported, unless ``skip_invalid`` is set,
in which case the good rows are; with ``dry_run`` the file is only checked. Everything happens
in the caller's transaction, so an error while writing (a concurrent insert of the same INS)
leaves the directory as it was.

Whitelist (``listeblanchemssante.xml``, SPEC §1): namespace
``https://listeblanche.mssante.fr/schema``, a root with ``DateDeGeneration`` (attribute or child
element), one ``Domaine`` per domain with ``Nom``, ``Description``, ``DNCertificatOperateur``,
``ResponsableContact``, ``SupportContact``, ``DateMAJ``. It is parsed with ``defusedxml``
(no entity expansion, no external entities: the file comes from outside). Domains are upserted
with ``source = "whitelist"``; their CA certificates are added separately (``trust add --ca``)
and kept across imports. Domains imported earlier and absent from the new list are reported,
and deleted only with ``prune``. The XML signature of the national list is not verified here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from missive.config import Settings
from missive.db.base import utcnow
from missive.directory import validate
from missive.directory.common import MailboxKeeper, audit
from missive.directory.errors import DirectoryError, InvalidField
from missive.directory.models import Patient, Professional, TrustDomain
from missive.directory.passwords import hash_password
from missive.directory.patients import insert_patient
from missive.directory.professionals import insert_professional, professional_by_address
from missive.directory.validate import PatientInput, ProfessionalInput

WHITELIST_NS = "https://listeblanche.mssante.fr/schema"

PATIENT_COLUMNS = {
    "ins": True,
    "oid": False,
    "family_name": True,
    "given_names": True,
    "birth_date": True,
    "sex": True,
    "birth_place": True,
    "phone": False,
    "email": False,
    "status": False,
    "notify_channel": False,
    "read_receipts": False,
}
PRO_COLUMNS = {
    "rpps": False,
    "adeli": False,
    "name": True,
    "profession": True,
    "specialty": False,
    "address": True,
    "mailbox_type": False,
    "status": False,
    "password": False,
}

#: Largest CSV or XML file accepted (bytes); a directory of a few hundred thousand rows fits.
MAX_CSV_BYTES = 200 * 1024 * 1024


class ImportFileError(DirectoryError):
    """The file as a whole cannot be read (encoding, header, XML syntax)."""


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "reason": self.reason}


@dataclass
class ImportReport:
    """What an import did. ``imported`` is 0 whenever ``errors`` is non-empty and the import
    was not asked to skip invalid rows."""

    rows: int = 0
    imported: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)
    skipped_invalid: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return bool(self.errors) and not self.skipped_invalid

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "invalid": len(self.errors),
            "rejected": self.rejected,
            "errors": [e.to_dict() for e in self.errors],
            "notes": self.notes,
        }


def _dry(report: ImportReport, dry_run: bool, count: int) -> bool:
    if dry_run:
        report.notes.append(f"dry run: {count} valid entr{'y' if count == 1 else 'ies'} "
                            "would be imported; nothing was written")
    return dry_run


# CSV -----------------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    if len(data) > MAX_CSV_BYTES:
        raise ImportFileError(f"file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"file is not UTF-8 (byte {exc.start}): save it as CSV UTF-8"
        ) from None


def _records(text: str, columns: dict[str, bool]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, {column: value})`` for each data row; checks the header first."""
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("file is empty: a header row is required") from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    names = [h.strip().lower() for h in header]
    unknown = [n for n in names if n not in columns]
    if unknown:
        raise ImportFileError(
            f"line 1: unknown column(s) {', '.join(repr(u) for u in unknown)}; "
            f"expected: {', '.join(columns)}"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ImportFileError(f"line 1: column(s) given twice: {', '.join(dupes)}")
    missing = [c for c, required in columns.items() if required and c not in names]
    if missing:
        raise ImportFileError(f"line 1: missing required column(s): {', '.join(missing)}")
    line = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFileError(f"line {line}: {exc}") from None
        start, line = line, reader.line_num + 1
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            yield start, {"__error__": f"has {len(row)} fields, the header has {len(names)}"}
            continue
        yield start, {n: v.strip() for n, v in zip(names, row, strict=True)}


_T = TypeVar("_T")


def _check_rows(
    text: str,
    columns: dict[str, bool],
    build: Callable[[dict[str, str]], _T],
    report: ImportReport,
) -> list[tuple[int, _T, dict[str, str]]]:
    good: list[tuple[int, _T, dict[str, str]]] = []
    for line, record in _records(text, columns):
        report.rows += 1
        if "__error__" in record:
            report.errors.append(RowError(line, record["__error__"]))
            continue
        try:
            good.append((line, build(record), record))
        except (InvalidField, ValueError) as exc:
            report.errors.append(RowError(line, str(exc)))
    return good


async def _existing(
    session: AsyncSession, column: InstrumentedAttribute[str], values: list[str]
) -> set[str]:
    """Which of ``values`` are already in ``column`` (queried in chunks: SQLite caps the
    number of bound parameters)."""
    found: set[str] = set()
    for i in range(0, len(values), 500):
        chunk = values[i : i + 500]
        found.update((await session.execute(select(column).where(column.in_(chunk)))).scalars())
    return found


async def import_patients_csv(
    session: AsyncSession,
    store: MailboxKeeper,
    settings: Settings,
    data: bytes,
    *,
    skip_invalid: bool = False,
    dry_run: bool = False,
    actor: str | None,
) -> ImportReport:
    """Import patients from CSV ``data`` (see the module docstring for the rules)."""
    report = ImportReport(skipped_invalid=skip_invalid)

    def build(r: dict[str, str]) -> PatientInput:
        return validate.patient_input(
            settings,
            ins=r["ins"],
            oid=r.get("oid"),
            family_name=r["family_name"],
            given_names=r["given_names"],
            birth_date_text=r["birth_date"],
            sex_text=r["sex"],
            birth_place_text=r["birth_place"],
            phone_text=r.get("phone"),
            email_text=r.get("email"),
            status=r.get("status"),
            notify=r.get("notify_channel"),
            read_receipts=r.get("read_receipts"),
        )

    rows = _check_rows(_decode(data), PATIENT_COLUMNS, build, report)
    seen: dict[str, int] = {}
    existing = await _existing(session, Patient.matricule, [p.matricule for _, p, _ in rows])
    accepted: list[PatientInput] = []
    for line, item, _raw in rows:
        if item.matricule in seen:
            report.errors.append(RowError(line, f"ins: {item.matricule} is already on line "
                                                f"{seen[item.matricule]}"))
            continue
        seen[item.matricule] = line
        report.notes.extend(f"line {line}: warning: {w}" for w in item.warnings)
        if item.matricule in existing:
            report.errors.append(RowError(line, f"ins: a patient with INS {item.matricule} "
                                                "already exists"))
            continue
        accepted.append(item)
    report.errors.sort(key=lambda e: e.line)
    if report.rejected or _dry(report, dry_run, len(accepted)):
        return report
    for item in accepted:
        await insert_patient(session, store, item, actor=actor)
        report.imported += 1
    await audit(session, "admin.patient.import", actor=actor,
                details={"imported": report.imported, "invalid": len(report.errors)})
    return report


async def import_professionals_csv(
    session: AsyncSession,
    store: MailboxKeeper,
    settings: Settings,
    data: bytes,
    *,
    skip_invalid: bool = False,
    dry_run: bool = False,
    actor: str | None,
) -> ImportReport:
    """Import professionals from CSV ``data``; an optional ``password`` column sets passwords."""
    report = ImportReport(skipped_invalid=skip_invalid)

    def build(r: dict[str, str]) -> ProfessionalInput:
        return validate.professional_input(
            settings,
            rpps=r.get("rpps"),
            adeli=r.get("adeli"),
            name=r["name"],
            profession=r["profession"],
            specialty=r.get("specialty"),
            address=r["address"],
            mailbox_type=r.get("mailbox_type"),
            status=r.get("status"),
        )

    rows = _check_rows(_decode(data), PRO_COLUMNS, build, report)
    ids: dict[str, int] = {}
    addresses: dict[str, int] = {}
    known_ids = await _existing(session, Professional.national_id,
                                [p.national_id for _, p, _ in rows])
    accepted: list[tuple[ProfessionalInput, str | None]] = []
    for line, item, raw in rows:
        if item.national_id in ids:
            report.errors.append(RowError(line, f"rpps: national id {item.national_id} is "
                                                f"already on line {ids[item.national_id]}"))
            continue
        if item.address in addresses:
            report.errors.append(RowError(line, f"address: {item.address} is already on line "
                                                f"{addresses[item.address]}"))
            continue
        ids[item.national_id] = line
        addresses[item.address] = line
        if item.national_id in known_ids:
            report.errors.append(RowError(line, f"rpps: a professional with national id "
                                                f"{item.national_id} already exists"))
            continue
        if await professional_by_address(session, item.address) is not None:
            report.errors.append(RowError(line, f"address: {item.address} is already in use"))
            continue
        password = raw.get("password") or None
        if password is not None and len(password) > 1024:
            report.errors.append(RowError(line, "password: at most 1024 characters"))
            continue
        accepted.append((item, password))
    report.errors.sort(key=lambda e: e.line)
    if report.rejected or _dry(report, dry_run, len(accepted)):
        return report
    for item, password in accepted:
        digest = await hash_password(settings, password) if password else None
        await insert_professional(session, store, settings, item, password=None,
                                  password_hash=digest, actor=actor)
        report.imported += 1
    await audit(session, "admin.pro.import", actor=actor,
                details={"imported": report.imported, "invalid": len(report.errors)})
    return report


# Whitelist XML -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhitelistDomain:
    domain: str
    description: str | None
    operator_dn: str | None
    responsible_contact: str | None
    support_contact: str | None
    updated: str | None


@dataclass
class Whitelist:
    generated: str | None
    domains: list[WhitelistDomain]
    errors: list[RowError]


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def _child_text(elem: Element, name: str) -> str | None:
    for child in elem:
        if _local(child.tag)[1] == name:
            value = (child.text or "").strip()
            return value or None
    return None


def parse_whitelist(data: bytes) -> Whitelist:
    """Parse ``listeblanchemssante.xml``; each bad ``Domaine`` becomes a :class:`RowError`
    whose ``line`` is the 1-based position of the ``Domaine`` in the file."""
    if len(data) > MAX_CSV_BYTES:
        raise ImportFileError(f"file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB")
    try:
        root = SafeET.fromstring(data)
    except DefusedXmlException as exc:
        raise ImportFileError(f"refused XML construct ({type(exc).__name__}): {exc}") from None
    except ParseError as exc:
        raise ImportFileError(f"not well-formed XML: {exc}") from None
    ns, _name = _local(root.tag)
    if ns not in (WHITELIST_NS, None):
        raise ImportFileError(f"root element is in namespace {ns!r}, expected {WHITELIST_NS!r}")
    generated = root.get("DateDeGeneration") or _child_text(root, "DateDeGeneration")
    domains: list[WhitelistDomain] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    position = 0
    for elem in root.iter():
        if _local(elem.tag)[1] != "Domaine":
            continue
        position += 1
        nom = _child_text(elem, "Nom")
        if nom is None:
            errors.append(RowError(position, "Domaine without Nom"))
            continue
        try:
            name = validate.domain(nom, "Nom")
            entry = WhitelistDomain(
                domain=name,
                description=validate.text("Description", _child_text(elem, "Description"),
                                          required=False, limit=1000) or None,
                operator_dn=validate.text("DNCertificatOperateur",
                                          _child_text(elem, "DNCertificatOperateur"),
                                          required=False, limit=1000) or None,
                responsible_contact=validate.text(
                    "ResponsableContact", _child_text(elem, "ResponsableContact"),
                    required=False, limit=320) or None,
                support_contact=validate.text(
                    "SupportContact", _child_text(elem, "SupportContact"),
                    required=False, limit=320) or None,
                updated=validate.text("DateMAJ", _child_text(elem, "DateMAJ"),
                                      required=False, limit=40) or None,
            )
        except InvalidField as exc:
            errors.append(RowError(position, f"Domaine {nom!r}: {exc}"))
            continue
        if name in seen:
            errors.append(RowError(position, f"Domaine {name} is already Domaine #{seen[name]}"))
            continue
        seen[name] = position
        domains.append(entry)
    if position == 0:
        raise ImportFileError("no Domaine element found: is this listeblanchemssante.xml?")
    return Whitelist(generated=generated, domains=domains, errors=errors)


async def import_whitelist(
    session: AsyncSession,
    data: bytes,
    *,
    skip_invalid: bool = False,
    prune: bool = False,
    dry_run: bool = False,
    actor: str | None,
) -> ImportReport:
    """Upsert the trust domains of a whitelist (see the module docstring)."""
    parsed = parse_whitelist(data)
    report = ImportReport(rows=len(parsed.domains) + len(parsed.errors),
                          errors=parsed.errors, skipped_invalid=skip_invalid)
    if parsed.generated:
        report.notes.append(f"list generated {parsed.generated}")
    if report.rejected or _dry(report, dry_run, len(parsed.domains)):
        return report
    existing = {
        d.domain: d for d in (await session.execute(select(TrustDomain))).scalars()
    }
    now = utcnow()
    listed = set()
    for item in parsed.domains:
        listed.add(item.domain)
        row = existing.get(item.domain)
        if row is None:
            row = TrustDomain(domain=item.domain, created_at=now)
            session.add(row)
            report.imported += 1
        else:
            report.updated += 1
        row.source = "whitelist"
        row.description = item.description
        row.operator_dn = item.operator_dn
        row.responsible_contact = item.responsible_contact
        row.support_contact = item.support_contact
        row.list_updated = item.updated
        row.updated_at = now
    absent = sorted(name for name, row in existing.items()
                    if row.source == "whitelist" and name not in listed)
    if absent:
        if prune:
            for name in absent:
                await session.delete(existing[name])
            report.notes.append(f"removed {len(absent)} domain(s) no longer listed: "
                                + ", ".join(absent))
        else:
            report.notes.append(f"{len(absent)} domain(s) imported earlier are no longer listed "
                                "(kept; use --prune to remove them): " + ", ".join(absent))
    await session.flush()
    await audit(session, "admin.trust.import", actor=actor,
                details={"added": report.imported, "updated": report.updated,
                         "pruned": len(absent) if prune else 0,
                         "generated": parsed.generated})
    return report
