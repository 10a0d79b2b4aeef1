"""``missive admin trust``: the trust space (add, show, list, delete, import)."""

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
    report_import,
)
from missive.directory import trust
from missive.directory.importers import import_whitelist


def register(admin: SubParsers) -> None:
    p = admin.add_parser("trust", help="operator domains allowed to exchange mail with us")
    sub = p.add_subparsers(dest="trust_command", metavar="ACTION", required=True)

    a = add_parser(sub, "add", add, "add a domain (or update it) with its CA certificate(s)")
    a.add_argument("domain", metavar="DOMAIN")
    a.add_argument("--ca", metavar="FILE", help="PEM file with the CA certificate(s) its MTAs "
                   "chain to (may be given again later to add more)")
    a.add_argument("--operator-dn", metavar="DN", help="subject DN of the operator certificate")
    a.add_argument("--description")

    s = add_parser(sub, "show", show, "show a trust domain and its CAs")
    s.add_argument("domain", metavar="DOMAIN")

    add_parser(sub, "list", list_, "list the trust space")

    d = add_parser(sub, "delete", delete,
                   "remove a domain (mail from/to it is refused afterwards), or one of its CAs")
    d.add_argument("domain", metavar="DOMAIN")
    d.add_argument("--ca-fingerprint", metavar="SHA256",
                   help="remove only the CA with this SHA-256 fingerprint")

    im = add_parser(sub, "import", import_,
                    "import the national whitelist (listeblanchemssante.xml)")
    im.add_argument("file", metavar="listeblanche.xml")
    im.add_argument("--skip-invalid", action="store_true",
                    help="import the valid domains even if some are invalid")
    im.add_argument("--dry-run", action="store_true",
                    help="check the file and report, import nothing")
    im.add_argument("--prune", action="store_true",
                    help="remove domains imported earlier that the new list no longer has")
    extend_family(sub, "trust")


async def add(args: argparse.Namespace) -> int:
    ca_data = read_file(args.ca, "CA file") if args.ca else None
    async with open_core(args, master_key=False) as core, core.db.write() as s:
        entry, added = await trust.add_trust_domain(
            s, args.domain, ca_data=ca_data, operator_dn=args.operator_dn,
            description=args.description, actor=actor())
        view = trust.trust_view(entry, await trust.cas_of(s, entry.id))
    view["cas_added"] = [c.fingerprint for c in added]
    common.emit(view, as_json=args.json,
                human=f"{view['domain']} in the trust space; {len(added)} CA(s) added, "
                      f"{len(view['cas'])} in total")
    return 0


def _human(view: dict[str, object]) -> str:
    shown = dict(view)
    cas = view.get("cas") or []
    assert isinstance(cas, list)  # noqa: S101 (built by trust_view)
    shown["cas"] = [f"{c['fingerprint'][:16]}… {c['subject']} (until {c['not_after'][:10]}"
                    f"{', EXPIRED' if c['expired'] else ''})" for c in cas]
    return key_values(shown)


async def show(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.read() as s:
        entry = await trust.get_trust_domain(s, args.domain)
        view = trust.trust_view(entry, await trust.cas_of(s, entry.id))
    common.emit(view, as_json=args.json, human=_human)
    return 0


async def list_(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.read() as s:
        rows = []
        for entry in await trust.list_trust_domains(s):
            view = trust.trust_view(entry, await trust.cas_of(s, entry.id))
            view["ca_count"] = len(view["cas"])
            rows.append(view)
    common.emit(rows, as_json=args.json, human=lambda r: common.table(
        r, ["domain", "source", "ca_count", "operator_dn", "description"]))
    return 0


async def delete(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.write() as s:
        await trust.delete_trust_domain(s, args.domain, fingerprint=args.ca_fingerprint,
                                        actor=actor())
    what = f"CA {args.ca_fingerprint} of {args.domain}" if args.ca_fingerprint else args.domain
    common.emit({"deleted": what}, as_json=args.json, human=f"removed {what}")
    return 0


async def import_(args: argparse.Namespace) -> int:
    data = read_file(args.file, "whitelist")
    async with open_core(args, master_key=False) as core, core.db.write() as s:
        report = await import_whitelist(s, data, skip_invalid=args.skip_invalid,
                                        prune=args.prune, dry_run=args.dry_run,
                                        actor=actor())
    return report_import(args, report, "domain(s)", unit="Domaine #")
