"""Change notifications for mailbox watchers (IMAP IDLE, webmail), across processes.

Writers call :meth:`ChangeBus.notify_in_transaction` inside their write transaction (on
PostgreSQL this is ``pg_notify``, delivered to every node when the transaction commits, never
before) and :meth:`ChangeBus.publish` after the commit (this process's watchers). On PostgreSQL
:meth:`ChangeBus.start` opens one ``LISTEN`` connection per process that re-publishes other nodes'
changes locally. On SQLite (a single node) the local publish is enough, except for the SMTP
worker processes of ``mta.processes`` (``missive.mta.workers``): each sets :attr:`ChangeBus.relay`
to pass its publishes to the main process, which publishes them there. A watcher that receives a
wake-up re-reads the mailbox state; wake-ups carry no data, so duplicates are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
CHANNEL = "missive_mailbox"


class ChangeBus:
    def __init__(self) -> None:
        self._watchers: dict[int, set[asyncio.Event]] = defaultdict(set)
        self._listener: object | None = None
        self._pg = False
        #: Called with every published mailbox id (set by SMTP worker processes).
        self.relay: Callable[[int], None] | None = None

    @contextlib.asynccontextmanager
    async def watch(self, mailbox_id: int) -> AsyncIterator[asyncio.Event]:
        """An event set whenever ``mailbox_id`` changes; clear it after handling."""
        event = asyncio.Event()
        self._watchers[mailbox_id].add(event)
        try:
            yield event
        finally:
            self._watchers[mailbox_id].discard(event)
            if not self._watchers[mailbox_id]:
                del self._watchers[mailbox_id]

    def publish(self, mailbox_id: int) -> None:
        for event in list(self._watchers.get(mailbox_id, ())):
            event.set()
        if self.relay is not None:
            self.relay(mailbox_id)

    async def notify_in_transaction(self, session: AsyncSession, mailbox_ids: set[int]) -> None:
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            for mid in sorted(mailbox_ids):
                await session.execute(
                    text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": str(mid)}
                )

    def notify_sync(self, session: Session, mailbox_ids: set[int]) -> None:
        """:meth:`notify_in_transaction` for synchronous sessions (batch writers)."""
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            for mid in sorted(mailbox_ids):
                session.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": str(mid)})

    async def start(self, url: str) -> None:
        """Listen for other nodes' changes (PostgreSQL only; a no-op on SQLite)."""
        if not url.startswith("postgresql"):
            return
        import asyncpg

        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn)

        def _on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            with contextlib.suppress(ValueError):
                self.publish(int(payload))

        await conn.add_listener(CHANNEL, _on_notify)
        self._listener = conn
        self._pg = True

    async def stop(self) -> None:
        conn = self._listener
        self._listener = None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()  # type: ignore[attr-defined]
