"""Group commit for mailbox changes (flags, copy/move, expunge) made by opened sessions.

Why: on SQLite a write transaction holds the database's single write lock from ``BEGIN
IMMEDIATE`` to the end of its commit's fsync. Run as an ``AsyncSession`` every statement is a
round trip between the event loop and a driver thread, so under load one IMAP ``STORE`` held the
lock for tens of milliseconds and ten clients queued behind each other (measured: ``BEGIN
IMMEDIATE`` waited 270 ms on average in bench/imap.py's mixed workload). Here each change is a
plain function of a *synchronous* session; the changes that arrive while a transaction is being
written are run together in the next one, each inside its own SAVEPOINT (a failing change is
rolled back alone and its caller gets the exception), and the whole batch pays one commit and
one fsync. On SQLite the transaction runs in the same single writer thread as the delivery
group commit (``Database.run_write``), so writers of one process never contend for the lock; on
PostgreSQL it runs through ``AsyncSession.run_sync``.

A caller's change is durable when :meth:`WriteBatcher.run` returns, as with a transaction of its
own; the functions must do nothing but database work (side effects such as publishing a
change to watchers belong after ``run`` returns).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from missive.db.engine import Database

T = TypeVar("T")

#: Changes per transaction at most (a SAVEPOINT each).
MAX_BATCH = 64


class WriteBatcher:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[tuple[Callable[[Session], Any], asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in the next batched write transaction; its result once durable."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        # shield: a caller that gives up must not cancel a transaction other callers share.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                outcomes = await self.db.run_write(functools.partial(_run_batch, batch=batch))
            except Exception as exc:  # noqa: BLE001 - the commit failed: every caller hears it
                for _fn, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_fn, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)


def _run_batch(s: Session, batch: list[tuple[Callable[[Session], Any], asyncio.Future[Any]]]
               ) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    for fn, _future in batch:
        try:
            with s.begin_nested():
                outcomes.append((True, fn(s)))
        except Exception as exc:  # noqa: BLE001 - handed to that change's caller
            outcomes.append((False, exc))
    return outcomes
