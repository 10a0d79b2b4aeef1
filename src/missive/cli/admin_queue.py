"""``missive admin queue list|retry|purge``: the outbound relay queue (SPEC §4 "Outbound relay").

Registered by ``missive.cli.admin`` as an optional family (``register(admin_subparsers)``).
Operators and harnesses use it to see what waits for which trust-space domain, to make waiting
entries due now (after fixing a peer or a route) and to delete finished entries.

Implementation notes:
- Everything goes through the queue helpers of :mod:`missive.mta.relay` (``list_queue``,
  ``retry_now``, ``purge_done``); this module issues no SQL of its own.
- No master key is needed and none is loaded: the queue rows are sealed to the relay mailbox and
  are never opened here. What is shown (id, domain, state, attempts, size, dates, last error) is
  what the queue keeps in clear; envelope addresses and content are sealed and never printed.
- ``retry`` only touches ``pending`` entries (an entry being sent is protected by its lease, a
  finished one is done); ``retry_now`` writes the ``relay.retry_now`` audit entry. ``purge``
  deletes ``sent``/``failed`` entries whose last change is older than the given age (their
  outcome stays in the audit log) and records ``relay.purge`` with the count and the age.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from missive.cli import common
from missive.errors import MissiveError

if TYPE_CHECKING:
    from missive.config import Settings
    from missive.db.engine import Database

#: Queue states, in the order an entry goes through them (see :mod:`missive.mta.relay`).
STATES = ("pending", "sending", "sent", "failed")
COLUMNS = ["id", "domain", "state", "attempts", "size", "created_at", "next_attempt_at",
           "last_error"]
#: Longest ``last_error`` shown in the human table (``--json`` gives it whole).
ERROR_WIDTH = 60


def register(admin: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = admin.add_parser(
        "queue",
        help="outbound relay queue: list, retry now, purge finished entries",
        description="The outbound relay queue (messages waiting for trust-space peers).",
    )
    sub = p.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="queue entries, oldest first",
                        description="Queue entries, oldest first. Addresses and content are "
                                    "sealed and never shown.")
    ls.add_argument("--state", action="append", choices=STATES, metavar="STATE",
                    help=f"only entries in this state (repeatable; one of {', '.join(STATES)})")
    ls.add_argument("--domain", help="only entries for this destination domain")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    common.add_json(ls)
    ls.set_defaults(func=list_command)

    retry = sub.add_parser("retry", help="make waiting (pending) entries due now",
                           description="Make one waiting entry, or all of them, due now; the "
                                       "running relay takes them at its next poll.")
    retry.add_argument("id", nargs="?", type=int, metavar="ID",
                       help="queue entry id (default: every pending entry)")
    common.add_json(retry)
    retry.set_defaults(func=retry_command)

    purge = sub.add_parser("purge", help="delete finished (sent/failed) entries",
                           description="Delete sent and failed entries older than DAYS; their "
                                       "outcome stays in the audit log.")
    purge.add_argument("--older-than", type=float, metavar="DAYS", dest="older_than",
                       help="age in days of the last change (default: mta.relay_keep_days)")
    common.add_json(purge)
    purge.set_defaults(func=purge_command)


@asynccontextmanager
async def _database(args: argparse.Namespace) -> AsyncIterator[tuple[Settings, Database]]:
    from missive.db.engine import Database

    settings = common.settings_from(args)
    common.require_initialised(settings)
    db = Database(settings.sqlalchemy_url)
    try:
        yield settings, db
    except MissiveError as exc:
        raise common.CommandError(str(exc)) from None
    finally:
        await db.dispose()


def _human_list(data: dict[str, Any]) -> str:
    rows = [{**e, "last_error": (e["last_error"] or "")[:ERROR_WIDTH]} for e in data["entries"]]
    return f"{data['count']} entr{'y' if data['count'] == 1 else 'ies'}\n" + common.table(
        rows, COLUMNS)


async def list_command(args: argparse.Namespace) -> int:
    from missive.mta.relay import list_queue

    if args.limit < 1:
        raise common.CommandError("--limit must be at least 1")
    async with _database(args) as (_settings, db):
        entries = await list_queue(db, states=args.state, domain=args.domain, limit=args.limit)
    data = {"count": len(entries), "entries": [e.to_dict() for e in entries]}
    common.emit(data, as_json=args.json, human=_human_list)
    return 0


async def retry_command(args: argparse.Namespace) -> int:
    from missive.mta.relay import retry_now

    if args.id is not None and args.id < 1:
        raise common.CommandError("ID must be a positive queue entry id "
                                  "(see `missive admin queue list`)")
    async with _database(args) as (_settings, db):
        count = await retry_now(db, args.id)
    if args.id is not None and count == 0:
        raise common.CommandError(
            f"no pending queue entry with id {args.id}: it is being sent, finished, or absent "
            "(see `missive admin queue list --state pending`)")
    common.emit({"retried": count, "id": args.id}, as_json=args.json,
                human=f"{count} entr{'y' if count == 1 else 'ies'} due now; the running relay "
                      "sends them at its next poll")
    return 0


async def purge_command(args: argparse.Namespace) -> int:
    from missive.audit import log as audit
    from missive.cli.admin import actor
    from missive.db.base import utcnow
    from missive.mta.relay import purge_done

    async with _database(args) as (settings, db):
        days = settings.mta.relay_keep_days if args.older_than is None else args.older_than
        if not days >= 0:  # also refuses NaN
            raise common.CommandError("--older-than must be a number of days, 0 or more")
        try:
            cutoff = utcnow() - timedelta(days=days)
        except OverflowError:
            raise common.CommandError(f"--older-than {days:g}: too many days") from None
        count = await purge_done(db, cutoff)
        if count:
            async with db.write() as s:
                await audit.append(s, "relay.purge", actor=actor(),
                                   details={"entries": count, "older_than_days": f"{days:g}"})
    common.emit({"purged": count, "older_than_days": days, "cutoff": cutoff},
                as_json=args.json,
                human=f"{count} finished entr{'y' if count == 1 else 'ies'} older than "
                      f"{days:g} day(s) deleted")
    return 0
