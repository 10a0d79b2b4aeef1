"""``missive admin patient``: patients (add, show, list, set-status, update, care-team, delete,
import)."""

from __future__ import annotations

import argparse
import sys

from missive.cli import common
from missive.cli.admin import (
    SubParsers,
    actor,
    add_parser,
    extend_family,
    key_values,
    open_core,
    read_file,
    report_import,
)
from missive.directory import delegates, patients, validate
from missive.directory import professionals as pros
from missive.directory.importers import import_patients_csv

COLUMNS = ["ins", "family_name", "given_names", "birth_date", "sex", "status"]
STATUSES = ["pending", "active", "opposed", "closed"]


def register(admin: SubParsers) -> None:
    p = admin.add_parser("patient", help="patients and their mailboxes")
    sub = p.add_subparsers(dest="patient_command", metavar="ACTION", required=True)

    a = add_parser(sub, "add", add, "create a patient and their mailbox")
    a.add_argument("--ins", required=True, help="15-character matricule INS (NIR/NIA + key)")
    a.add_argument("--oid", help="INS OID (default: the test OID in test mode, NIR otherwise)")
    a.add_argument("--family-name", required=True, help="birth family name")
    a.add_argument("--given-names", required=True, help="first names, space separated")
    a.add_argument("--birth-date", required=True, help="YYYY-MM-DD")
    a.add_argument("--sex", required=True, help="M or F")
    a.add_argument("--birth-place", required=True, help="INSEE code of the birth commune")
    a.add_argument("--phone", help="mobile phone for SMS notices (+33… or 06…)")
    a.add_argument("--email", help="personal e-mail for notices")
    a.add_argument("--status", choices=["pending", "active"], default="pending")
    a.add_argument("--notify", choices=["sms", "email", "both", "none"],
                   help="notification channel (default: what the contacts allow)")
    a.add_argument("--no-read-receipts", action="store_true",
                   help="never answer read-receipt requests for this patient")

    s = add_parser(sub, "show", show, "show one patient")
    s.add_argument("ins", metavar="INS")

    ls = add_parser(sub, "list", list_, "list patients")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--limit", type=int)

    st = add_parser(sub, "set-status", set_status,
                    "change the status; 'closed' destroys the mailbox keys (irreversible)")
    st.add_argument("ins", metavar="INS")
    st.add_argument("status", choices=STATUSES)

    up = add_parser(sub, "update", update, "change contacts and notification preferences")
    up.add_argument("ins", metavar="INS")
    up.add_argument("--phone", help="new mobile phone ('' to remove)")
    up.add_argument("--email", help="new e-mail ('' to remove)")
    up.add_argument("--notify", choices=["sms", "email", "both", "none"])
    up.add_argument("--read-receipts", choices=["yes", "no"])

    ct = sub.add_parser("care-team", help="professionals the patient may write to first (P6)")
    ctsub = ct.add_subparsers(dest="care_command", metavar="ACTION", required=True)
    ca = add_parser(ctsub, "add", care_add, "add a professional to the care team")
    ca.add_argument("ins", metavar="INS")
    ca.add_argument("pro", metavar="ADDRESS|RPPS")
    cr = add_parser(ctsub, "remove", care_remove, "remove a professional from the care team")
    cr.add_argument("ins", metavar="INS")
    cr.add_argument("pro", metavar="ADDRESS|RPPS")
    cl = add_parser(ctsub, "list", care_list, "list the care team")
    cl.add_argument("ins", metavar="INS")

    d = add_parser(sub, "delete", delete,
                   "delete a closed patient's record (frees the INS for a new account)")
    d.add_argument("ins", metavar="INS")

    im = add_parser(sub, "import", import_, "import patients from CSV (see "
                    "docs/administration.md); nothing is imported if a row is invalid")
    im.add_argument("file", metavar="FILE.csv")
    im.add_argument("--skip-invalid", action="store_true",
                    help="import the valid rows even if some are invalid")
    im.add_argument("--dry-run", action="store_true",
                    help="check the file and report, import nothing")
    extend_family(sub, "patient")


async def add(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        data = validate.patient_input(
            core.settings, ins=args.ins, oid=args.oid,
            family_name=args.family_name, given_names=args.given_names,
            birth_date_text=args.birth_date, sex_text=args.sex,
            birth_place_text=args.birth_place, phone_text=args.phone, email_text=args.email,
            status=args.status, notify=args.notify, read_receipts=not args.no_read_receipts)
        patient = await patients.insert_patient(s, core.store, data, actor=actor())
        view = patients.patient_view(patient, core.settings)
    view["warnings"] = list(data.warnings)
    for warning in data.warnings:
        sys.stderr.write(f"missive: warning: {warning}\n")
    common.emit(view, as_json=args.json,
                human=f"patient {view['ins']} created ({view['status']}); "
                      f"address {view['address']}")
    return 0


async def show(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.read() as s:
        patient = await patients.get_patient(s, args.ins)
        view = patients.patient_view(patient, core.settings)
        view["care_team"] = [p.address for p in await delegates.care_team(s, patient.id)]
        view["delegates"] = [d.to_dict() for d in await delegates.list_delegates(
            s, patient_ins=patient.matricule)]
    def human(v: dict[str, object]) -> str:
        shown = dict(v)
        shown["delegates"] = [f"#{d['id']} {d['login']} ({d['rights']})"
                              for d in view["delegates"]]
        return key_values(shown)
    common.emit(view, as_json=args.json, human=human)
    return 0


async def list_(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.read() as s:
        rows = [patients.patient_view(p, core.settings)
                for p in await patients.list_patients(s, status=args.status, limit=args.limit)]
    common.emit(rows, as_json=args.json, human=lambda r: common.table(r, COLUMNS))
    return 0


async def set_status(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        patient = await patients.set_patient_status(s, core.store, args.ins, args.status,
                                                    actor=actor())
        view = patients.patient_view(patient, core.settings)
    extra = "; mailbox keys destroyed" if view["status"] == "closed" else ""
    common.emit(view, as_json=args.json, human=f"patient {view['ins']} is {view['status']}{extra}")
    return 0


async def update(args: argparse.Namespace) -> int:
    receipts = None if args.read_receipts is None else args.read_receipts == "yes"
    async with open_core(args) as core, core.db.write() as s:
        patient = await patients.update_patient_contact(
            s, args.ins, actor=actor(), phone=args.phone, email=args.email,
            notify_channel=args.notify, read_receipts=receipts)
        view = patients.patient_view(patient, core.settings)
    common.emit(view, as_json=args.json, human=key_values)
    return 0


async def care_add(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        await delegates.add_to_care_team(s, args.ins, args.pro, actor=actor())
        pro = await pros.get_professional(s, args.pro)
    common.emit({"ins": args.ins, "added": pro.address}, as_json=args.json,
                human=f"{pro.address} added to the care team")
    return 0


async def care_remove(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        await delegates.remove_from_care_team(s, args.ins, args.pro, actor=actor())
    common.emit({"ins": args.ins, "removed": args.pro}, as_json=args.json,
                human=f"{args.pro} removed from the care team")
    return 0


async def care_list(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.read() as s:
        patient = await patients.get_patient(s, args.ins)
        rows = [pros.professional_view(p) for p in await delegates.care_team(s, patient.id)]
    common.emit(rows, as_json=args.json,
                human=lambda r: common.table(r, ["address", "name", "profession", "status"]))
    return 0


async def delete(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        await patients.delete_patient(s, args.ins, actor=actor())
    common.emit({"deleted": args.ins.strip()}, as_json=args.json,
                human=f"patient {args.ins.strip()} deleted")
    return 0


async def import_(args: argparse.Namespace) -> int:
    data = read_file(args.file, "CSV file")
    async with open_core(args) as core, core.db.write() as s:
        report = await import_patients_csv(
            s, core.store, core.settings, data, skip_invalid=args.skip_invalid,
            dry_run=args.dry_run, actor=actor())
    return report_import(args, report, "patient(s)")
