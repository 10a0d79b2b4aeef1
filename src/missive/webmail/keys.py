"""Opened mailboxes per web session, in process memory only (SPEC C6).

A :class:`~missive.mailbox.store.MailboxSession` holds the unwrapped private key of a mailbox. The
vault keeps one per (web session, mailbox) and never writes it anywhere; the database only knows
that a session is authenticated. On another node, or after a restart, the first request of an
authenticated session re-opens the mailbox (the route has checked the principal's right to it
first). Logging out, expiry, revocation and account closure drop the entries.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from missive.mailbox.store import MailboxSession, MailboxStore


class KeyVault:
    """A bounded LRU map ``(session id, mailbox id) -> MailboxSession``."""

    def __init__(self, store: MailboxStore, capacity: int = 10_000) -> None:
        self.store = store
        self.capacity = capacity
        self._open: OrderedDict[tuple[str, int], MailboxSession] = OrderedDict()
        self._lock = asyncio.Lock()

    async def get(self, session_id: str, mailbox_id: int,
                  grant_ref: str | None = None) -> MailboxSession:
        """The opened mailbox for this session; the caller checked authorisation.

        A caregiver's session (``grant_ref`` set) opens the mailbox with the key wrapped for
        that delegation, never the owner's (C6): once revoked, nothing opens it.
        """
        key = (session_id, mailbox_id)
        found = self._open.get(key)
        if found is not None:
            self._open.move_to_end(key)
            return found
        async with self._lock:
            found = self._open.get(key)
            if found is None:
                found = (await self.store.open_as_delegate(mailbox_id, grant_ref)
                         if grant_ref is not None else await self.store.open(mailbox_id))
                self._open[key] = found
                while len(self._open) > self.capacity:
                    self._open.popitem(last=False)
        return found

    def drop_session(self, session_id: str) -> None:
        for key in [k for k in self._open if k[0] == session_id]:
            del self._open[key]

    def drop_mailbox(self, mailbox_id: int) -> None:
        for key in [k for k in self._open if k[1] == mailbox_id]:
            del self._open[key]

    def __len__(self) -> int:
        return len(self._open)
