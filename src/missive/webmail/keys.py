"""Opened mailboxes per web session, in process memory only (SPEC C6).

A :class:`~missive.mailbox.store.MailboxSession` holds the unwrapped private key of a mailbox. The
vault keeps one per (web session, mailbox) and never writes it anywhere; the database only knows
that a session is authenticated. On another node, or after a restart, the first request of an
authenticated session re-opens the mailbox (the route has checked the principal's right to it
first). Logging out, expiry, revocation and account closure drop the entries.

The vault also keeps each session's recently rendered folder pages (decrypted subjects and
names, so under the same rules: memory only, per session, dropped with it). A page is reused
only for the same session, URL and viewer, while the mailbox's ``highest_modseq`` is the one it
was rendered at (every change to a message takes a new one, RFC 7162 §3.1) and for at most
:data:`PAGE_SECONDS` (directory names shown on it may change). Refreshing an inbox, or coming
back to it, then costs the session check and one indexed read instead of decrypting and
rendering the page again. Authorisation is checked before the cache is consulted.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from missive.mailbox.store import MailboxSession, MailboxStore

#: How long a rendered page may be reused at most (same as the directory-name cache).
PAGE_SECONDS = 60.0
#: Rendered pages kept per process (LRU; a page is ~12 KB).
PAGE_CAPACITY = 2_000


class KeyVault:
    """A bounded LRU map ``(session id, mailbox id) -> MailboxSession``."""

    def __init__(self, store: MailboxStore, capacity: int = 10_000) -> None:
        self.store = store
        self.capacity = capacity
        self._open: OrderedDict[tuple[str, int], MailboxSession] = OrderedDict()
        self._lock = asyncio.Lock()
        self._pages: OrderedDict[tuple[str, int, str], tuple[int, float, bytes]] = \
            OrderedDict()

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

    def page(self, session_id: str, mailbox_id: int, key: str, modseq: int) -> bytes | None:
        """A page this session rendered at ``modseq`` less than PAGE_SECONDS ago, if any."""
        found = self._pages.get((session_id, mailbox_id, key))
        if found is None or found[0] != modseq or time.monotonic() - found[1] > PAGE_SECONDS:
            return None
        self._pages.move_to_end((session_id, mailbox_id, key))
        return found[2]

    def keep_page(self, session_id: str, mailbox_id: int, key: str, modseq: int,
                  body: bytes) -> None:
        self._pages[(session_id, mailbox_id, key)] = (modseq, time.monotonic(), body)
        self._pages.move_to_end((session_id, mailbox_id, key))
        while len(self._pages) > PAGE_CAPACITY:
            self._pages.popitem(last=False)

    def drop_session(self, session_id: str) -> None:
        for key in [k for k in self._open if k[0] == session_id]:
            del self._open[key]
        for page in [k for k in self._pages if k[0] == session_id]:
            del self._pages[page]

    def drop_mailbox(self, mailbox_id: int) -> None:
        for key in [k for k in self._open if k[1] == mailbox_id]:
            del self._open[key]
        for page in [k for k in self._pages if k[1] == mailbox_id]:
            del self._pages[page]

    def __len__(self) -> int:
        return len(self._open)
