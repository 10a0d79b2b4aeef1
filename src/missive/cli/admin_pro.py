"""``missive admin pro``: professionals (add, show, list, set-status, passwd, alias, delete,
import)."""

from __future__ import annotations

import argparse

from missive.cli import common
from missive.cli.admin import (
    SubParsers,
    actor,
    add_parser,
    extend_family,
    key_values,
    open_core,
    read_file,
    read_password,
    report_import,
)
from missive.directory import professionals as pros
from missive.directory.importers import import_professionals_csv

COLUMNS = ["address", "national_id", "name", "profession", "mailbox_type", "status"]


def register(admin: SubParsers) -> None:
    p = admin.add_parser("pro", help="health professionals and their mailboxes")
    sub = p.add_subparsers(dest="pro_command", metavar="ACTION", required=True)

    a = add_parser(sub, "add", add, "create a professional and their mailbox")
    ident = a.add_mutually_exclusive_group(required=True)
    ident.add_argument("--rpps", help="11-digit RPPS number (national id 8+RPPS)")
    ident.add_argument("--adeli", help="9-digit ADELI number (national id 0+ADELI)")
    a.add_argument("--name", required=True, help="display name, e.g. \"Marie Curie\"")
    a.add_argument("--profession", required=True, help="e.g. Médecin, Infirmier")
    a.add_argument("--specialty", help="e.g. Radiologie")
    a.add_argument("--address", required=True, help="mailbox address in the operator domain")
    a.add_argument("--mailbox-type", choices=["personal", "organisational", "applicative"],
                   default="personal")
    a.add_argument("--status", choices=["active", "suspended"], default="active")
    a.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input")

    s = add_parser(sub, "show", show, "show one professional")
    s.add_argument("ref", metavar="ADDRESS|RPPS|NATIONAL_ID")

    ls = add_parser(sub, "list", list_, "list professionals")
    ls.add_argument("--status", choices=["active", "suspended"])
    ls.add_argument("--search", help="part of the name, address or national id")
    ls.add_argument("--limit", type=int)

    st = add_parser(sub, "set-status", set_status,
                    "activate or suspend (a suspended professional cannot log in)")
    st.add_argument("ref", metavar="ADDRESS|RPPS|NATIONAL_ID")
    st.add_argument("status", choices=["active", "suspended"])

    pw = add_parser(sub, "passwd", passwd, "set a professional's password")
    pw.add_argument("ref", metavar="ADDRESS|RPPS|NATIONAL_ID")
    pw.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of standard input")

    al = sub.add_parser("alias", help="further addresses of a professional")
    alsub = al.add_subparsers(dest="alias_command", metavar="ACTION", required=True)
    aa = add_parser(alsub, "add", alias_add, "add an address owned by the professional")
    aa.add_argument("ref", metavar="ADDRESS|RPPS|NATIONAL_ID")
    aa.add_argument("alias", metavar="ALIAS")
    ar = add_parser(alsub, "remove", alias_remove, "remove an alias")
    ar.add_argument("alias", metavar="ALIAS")

    d = add_parser(sub, "delete", delete,
                   "delete a suspended professional; destroys the mailbox keys (irreversible)")
    d.add_argument("ref", metavar="ADDRESS|RPPS|NATIONAL_ID")

    im = add_parser(sub, "import", import_, "import professionals from CSV (see "
                    "docs/administration.md); nothing is imported if a row is invalid")
    im.add_argument("file", metavar="FILE.csv")
    im.add_argument("--skip-invalid", action="store_true",
                    help="import the valid rows even if some are invalid")
    im.add_argument("--dry-run", action="store_true",
                    help="check the file and report, import nothing")
    extend_family(sub, "pro")


async def add(args: argparse.Namespace) -> int:
    password = read_password(args)
    async with open_core(args) as core, core.db.write() as s:
        pro = await pros.add_professional(
            s, core.store, core.settings, actor=actor(), password=password,
            rpps=args.rpps, adeli=args.adeli, name=args.name, profession=args.profession,
            specialty=args.specialty, address=args.address, mailbox_type=args.mailbox_type,
            status=args.status)
        view = pros.professional_view(pro)
    common.emit(view, as_json=args.json,
                human=f"professional {view['address']} created ({view['national_id']}, "
                      f"{view['status']}{', password set' if password else ', no password'})")
    return 0


async def show(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.read() as s:
        pro = await pros.get_professional(s, args.ref)
        view = pros.professional_view(pro, await pros.aliases_of(s, pro.id))
    common.emit(view, as_json=args.json, human=key_values)
    return 0


async def list_(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.read() as s:
        rows = [pros.professional_view(p) for p in await pros.list_professionals(
            s, status=args.status, search=args.search, limit=args.limit)]
    common.emit(rows, as_json=args.json, human=lambda r: common.table(r, COLUMNS))
    return 0


async def set_status(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        pro = await pros.set_professional_status(s, args.ref, args.status, actor=actor())
        view = pros.professional_view(pro)
    common.emit(view, as_json=args.json, human=f"{view['address']} is {view['status']}")
    return 0


async def passwd(args: argparse.Namespace) -> int:
    password = read_password(args, required=True)
    assert password is not None  # noqa: S101 (required=True)
    async with open_core(args) as core, core.db.write() as s:
        pro = await pros.set_professional_password(s, core.settings, args.ref, password,
                                                   actor=actor())
        view = pros.professional_view(pro)
    common.emit(view, as_json=args.json, human=f"password of {view['address']} changed")
    return 0


async def alias_add(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        alias = await pros.add_alias(s, core.settings, args.ref, args.alias, actor=actor())
        data = {"alias": alias.address, "professional_id": alias.professional_id}
    common.emit(data, as_json=args.json, human=f"alias {data['alias']} added")
    return 0


async def alias_remove(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        await pros.remove_alias(s, args.alias, actor=actor())
    common.emit({"removed": args.alias}, as_json=args.json, human=f"alias {args.alias} removed")
    return 0


async def delete(args: argparse.Namespace) -> int:
    async with open_core(args) as core, core.db.write() as s:
        pro = await pros.get_professional(s, args.ref)
        address = pro.address
        await pros.delete_professional(s, core.store, args.ref, actor=actor())
    common.emit({"deleted": address}, as_json=args.json,
                human=f"professional {address} deleted; mailbox keys destroyed")
    return 0


async def import_(args: argparse.Namespace) -> int:
    data = read_file(args.file, "CSV file")
    async with open_core(args) as core, core.db.write() as s:
        report = await import_professionals_csv(
            s, core.store, core.settings, data, skip_invalid=args.skip_invalid,
            dry_run=args.dry_run, actor=actor())
    return report_import(args, report, "professional(s)")
