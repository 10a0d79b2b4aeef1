"""``missive admin delegates``: operator-side delegations (legal guardians, caregivers)."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, time, timedelta

from missive.cli import common
from missive.cli.admin import SubParsers, actor, add_parser, extend_family, open_core, read_password
from missive.directory import delegates

COLUMNS = ["id", "patient_ins", "kind", "login", "name", "phone", "rights", "expires_at",
           "in_force"]


def register(admin: SubParsers) -> None:
    p = admin.add_parser("delegates", help="who may read (and reply) on behalf of a patient")
    sub = p.add_subparsers(dest="delegates_command", metavar="ACTION", required=True)

    ls = add_parser(sub, "list", list_, "list delegations in force (or all with --all)")
    ls.add_argument("--patient", metavar="INS")
    ls.add_argument("--all", action="store_true", help="include revoked delegations")

    a = add_parser(sub, "add", add, "grant a delegation on a patient's mailbox")
    a.add_argument("--patient", metavar="INS", required=True)
    who = a.add_mutually_exclusive_group(required=True)
    who.add_argument("--pro", metavar="ADDRESS|RPPS", help="a professional of this server")
    who.add_argument("--email", metavar="LOGIN_EMAIL",
                     help="an external person, who logs in to the webmail with this e-mail")
    a.add_argument("--name", help="display name of the external person")
    a.add_argument("--rights", choices=["read", "read_reply"], default="read")
    a.add_argument("--expires", metavar="DATE",
                   help="YYYY-MM-DD (valid through that day, UTC) or an ISO date-time")
    a.add_argument("--password-stdin", action="store_true",
                   help="set the external person's password from standard input")
    a.add_argument("--phone", help="the external person's mobile phone (+33… or 06…) for "
                                   "their one-time login codes; without it, codes go by e-mail "
                                   "to the login address")

    u = add_parser(sub, "update", update,
                   "change an external delegate's phone (login codes) or name")
    u.add_argument("id", type=int, metavar="ID")
    u.add_argument("--phone", help="new mobile phone ('' to remove: codes then go by e-mail)")
    u.add_argument("--name", help="new display name")

    r = add_parser(sub, "revoke", revoke, "revoke a delegation")
    r.add_argument("id", type=int, metavar="ID")
    extend_family(sub, "delegates")


def parse_expiry(text: str | None) -> datetime | None:
    if not text:
        return None
    raw = text.strip()
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw) + timedelta(days=1), time(),
                                    tzinfo=UTC)
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise common.CommandError(f"--expires: {raw!r} is not YYYY-MM-DD or an ISO date-time")\
            from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def list_(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=False) as core, core.db.read() as s:
        rows = [v.to_dict() for v in await delegates.list_delegates(
            s, patient_ins=args.patient, include_revoked=args.all)]
    common.emit(rows, as_json=args.json, human=lambda r: common.table(r, COLUMNS))
    return 0


async def add(args: argparse.Namespace) -> int:
    if args.pro and (args.name or args.password_stdin or args.phone is not None):
        raise common.CommandError("--name, --phone and --password-stdin are for an external "
                                  "person (--email), not for --pro")
    expires = parse_expiry(args.expires)
    password = read_password(args)
    async with open_core(args, master_key=True) as core, core.db.write() as s:
        view = await delegates.add_delegate(
            s, core.store, core.settings, patient_ins=args.patient, professional=args.pro,
            login_email=args.email, display_name=args.name, rights=args.rights,
            expires_at=expires, password=password, phone=args.phone, actor=actor())
        data = view.to_dict()
    common.emit(data, as_json=args.json,
                human=f"delegation #{data['id']}: {data['login']} may {data['rights']} "
                      f"for patient {data['patient_ins']}"
                      + (f" until {data['expires_at']}" if data["expires_at"] else ""))
    return 0


async def update(args: argparse.Namespace) -> int:
    if args.phone is None and args.name is None:
        raise common.CommandError("nothing to change: give --phone and/or --name")
    async with open_core(args, master_key=False) as core, core.db.write() as s:
        data = (await delegates.update_delegate_person(
            s, args.id, actor=actor(), phone=args.phone, display_name=args.name)).to_dict()
    common.emit(data, as_json=args.json,
                human=f"delegation #{data['id']}: codes go "
                      + (f"by SMS to {data['phone']}" if data["phone"]
                         else f"by e-mail to {data['login']}"))
    return 0


async def revoke(args: argparse.Namespace) -> int:
    async with open_core(args, master_key=True) as core, core.db.write() as s:
        data = (await delegates.revoke_delegate(s, core.store, args.id, actor=actor())).to_dict()
    common.emit(data, as_json=args.json, human=f"delegation #{data['id']} revoked")
    return 0
