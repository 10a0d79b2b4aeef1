"""``missive audit verify``: check the hash chain of the audit log (SPEC §7)."""

from __future__ import annotations

import argparse

from missive.cli import common


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="audit log")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = asub.add_parser("verify", help="verify the hash chain; names the first bad entry")
    common.add_json(v)
    v.set_defaults(func=verify)


async def verify(args: argparse.Namespace) -> int:
    from missive.audit import log
    from missive.db.engine import Database

    settings = common.settings_from(args)
    common.require_initialised(settings)
    db = Database(settings.sqlalchemy_url)
    try:
        async with db.read() as s:
            result = await log.verify(s)
    finally:
        await db.dispose()
    if result.ok:
        common.emit(result.to_dict(), as_json=args.json,
                    human=f"audit chain intact: {result.entries} entries")
        return 0
    if args.json:
        common.emit(result.to_dict(), as_json=True)
    raise common.CommandError(f"audit chain broken at entry {result.first_bad_seq}: "
                              f"{result.problem}", exit_code=3)
