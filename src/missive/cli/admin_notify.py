"""``missive admin notify list|show|retry``: the notification queue and its dead letters.

Registered by ``missive.cli.admin`` (optional family). Reads and changes only the notify
worker's ``notification_delivery`` rows (and counts ``notification_outbox`` rows); no master
key is needed. ``retry`` puts a dead (or skipped) notice back in the queue with a fresh attempt
budget and the *same* idempotency key, so a gateway that did receive an earlier attempt still
drops the duplicate; it is audited (``notify.retry``).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from missive.cli import common
from missive.errors import MissiveError

STATES = ("pending", "sent", "dead", "skipped")
COLUMNS = ["id", "channel", "state", "attempts", "count", "kind", "mailbox_id",
           "next_attempt_at", "last_error"]


def register(admin: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = admin.add_parser("notify", help="notification queue: list, show, retry dead letters")
    sub = p.add_subparsers(dest="notify_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="notices, newest first, with queue counts")
    ls.add_argument("--state", choices=STATES, help="only notices in this state")
    ls.add_argument("--mailbox", type=int, help="only notices of this mailbox id")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    common.add_json(ls)
    ls.set_defaults(func=list_command)
    show = sub.add_parser("show", help="one notice, by id or idempotency key")
    show.add_argument("notice", help="id or idempotency key (see `admin notify list`)")
    common.add_json(show)
    show.set_defaults(func=show_command)
    retry = sub.add_parser("retry", help="send a dead (or skipped) notice again, same key")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("notice", nargs="?", help="id or idempotency key")
    target.add_argument("--all-dead", action="store_true", help="every dead letter")
    common.add_json(retry)
    retry.set_defaults(func=retry_command)


@asynccontextmanager
async def _session(args: argparse.Namespace, *, write: bool) -> AsyncIterator[AsyncSession]:
    from missive.db.engine import Database

    settings = common.settings_from(args)
    common.require_initialised(settings)
    db = Database(settings.sqlalchemy_url)
    try:
        if write:
            async with db.write() as s:
                yield s
        else:
            async with db.read() as s:
                yield s
    except MissiveError as exc:
        raise common.CommandError(str(exc)) from None
    finally:
        await db.dispose()


def _human_list(data: dict[str, Any]) -> str:
    counts = data["counts"]
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts["deliveries"].items())) or "empty"
    waiting = counts["outbox"].get("pending", 0)
    rows = [{**r, "last_error": (r["last_error"] or "")[:50]} for r in data["notices"]]
    return (f"notices: {summary}; deliveries waiting for their coalescing window: {waiting}\n"
            + common.table(rows, COLUMNS))


async def list_command(args: argparse.Namespace) -> int:
    from missive.notify import queue

    if args.limit < 1:
        raise common.CommandError("--limit must be at least 1")
    async with _session(args, write=False) as s:
        rows = await queue.list_deliveries(s, state=args.state, mailbox_id=args.mailbox,
                                           limit=args.limit)
        data = {"counts": await queue.counts(s), "notices": [queue.view(r) for r in rows]}
    common.emit(data, as_json=args.json, human=_human_list)
    return 0


async def show_command(args: argparse.Namespace) -> int:
    from missive.notify import queue

    async with _session(args, write=False) as s:
        data = queue.view(await queue.get_delivery(s, args.notice))
    common.emit(data, as_json=args.json,
                human=lambda d: "\n".join(f"{k:<16} {v if v is not None else ''}"
                                          for k, v in d.items()))
    return 0


async def retry_command(args: argparse.Namespace) -> int:
    from missive.cli.admin import actor
    from missive.db.base import utcnow
    from missive.notify import queue

    async with _session(args, write=True) as s:
        if args.all_dead:
            rows = await queue.list_deliveries(s, state="dead", limit=1_000_000)
        else:
            row = await queue.get_delivery(s, args.notice)
            if row.state not in ("dead", "skipped"):
                raise common.CommandError(
                    f"notice {row.id} is {row.state}: only dead or skipped notices can be retried")
            rows = [row]
        changed = await queue.retry(s, rows, now=utcnow(), actor=actor())
        ids = [r.id for r in rows if r.state == "pending"]
    common.emit({"retried": changed, "ids": ids}, as_json=args.json,
                human=f"{changed} notice(s) queued again; the running worker sends them within "
                      "notify.poll_seconds")
    return 0
