"""Per-mailbox caches shared by the IMAP sessions of one mailbox, in memory only.

Why: clients open several connections to the same mailbox (Thunderbird keeps one per folder
plus one for IDLE, mbsync and offlineimap reconnect at every run, phones keep a push
connection). Without sharing, each new session opens every message's data key again (one HPKE
decapsulation, RFC 9180, ~0.2 ms) and re-parses every message to answer ``FETCH 1:*
(ENVELOPE)`` or a header ``SEARCH``, so N connections cost N times the cryptography.

Invariants (SPEC C1, C6):

- Everything here lives in the memory of the IMAP front process; nothing is written to disk
  by this module. (The ENVELOPE and BODYSTRUCTURE items a session computes are also handed to
  the store, which keeps them sealed under the mailbox's cache key, ``content.derived``, for
  the sessions of later logins: see ``Session._keep_derived`` and ``mailbox.crypto``.)
- A :class:`MailboxCache` exists only while at least one *authenticated* session of that
  mailbox holds it (:meth:`SharedCaches.acquire` after authentication, released at logout or
  disconnection); when the last session lets go, the opened :class:`MailboxSession` (and with it
  the mailbox's private key and data keys) and every cached item are dropped.
- Items are keyed by (UIDVALIDITY, UID), whose content never changes (RFC 3501 §2.3.1.1,
  RFC 9051 §2.3.1.1), so a cached item is never stale; flags are never cached here.
- Caches of different mailboxes are separate objects: a session only ever reaches the cache of
  the mailbox it authenticated for.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from missive.imap.search import HeaderFields
from missive.mailbox.store import MailboxSession

__all__ = ["BODY_CACHE_BYTES", "META_CACHE_ITEMS", "MailboxCache", "SharedCaches"]

#: Decrypted messages kept per mailbox (read-ahead for synchronising clients).
BODY_CACHE_BYTES = 8 * 1024 * 1024
#: Computed ENVELOPE/BODYSTRUCTURE/BODY responses and header-field tuples kept per mailbox
#: (each a few hundred bytes: a few tens of MB at most).
META_CACHE_ITEMS = 50_000


@dataclass(eq=False)
class MailboxCache:
    """The opened mailbox and what was computed from its messages, for its sessions."""

    mailbox_id: int
    mbox: MailboxSession
    bodies: OrderedDict[tuple[int, int], bytes] = field(default_factory=OrderedDict)
    body_bytes: int = 0
    meta: OrderedDict[tuple[int, int, str], bytes] = field(default_factory=OrderedDict)
    heads: OrderedDict[tuple[int, int], HeaderFields] = field(default_factory=OrderedDict)
    sessions: int = 0

    def body(self, key: tuple[int, int]) -> bytes | None:
        raw = self.bodies.get(key)
        if raw is not None:
            self.bodies.move_to_end(key)
        return raw

    def keep_body(self, key: tuple[int, int], raw: bytes) -> None:
        if len(raw) > BODY_CACHE_BYTES // 8 or key in self.bodies:
            return
        self.bodies[key] = raw
        self.body_bytes += len(raw)
        while self.body_bytes > BODY_CACHE_BYTES and self.bodies:
            _key, old = self.bodies.popitem(last=False)
            self.body_bytes -= len(old)

    def keep_meta(self, key: tuple[int, int, str], item: bytes) -> None:
        self.meta[key] = item
        if len(self.meta) > META_CACHE_ITEMS:
            self.meta.popitem(last=False)

    def keep_head(self, key: tuple[int, int], head: HeaderFields) -> None:
        self.heads[key] = head
        if len(self.heads) > META_CACHE_ITEMS:
            self.heads.popitem(last=False)

    def clear(self) -> None:
        self.bodies.clear()
        self.body_bytes = 0
        self.meta.clear()
        self.heads.clear()


class SharedCaches:
    """The front's registry: one :class:`MailboxCache` per mailbox with an authenticated
    session, reference-counted by sessions (see the module docstring)."""

    def __init__(self) -> None:
        self._open: dict[int, MailboxCache] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, mailbox_id: object) -> bool:
        return mailbox_id in self._open

    async def acquire(self, mailbox_id: int,
                      open_mailbox: Callable[[], Awaitable[MailboxSession]]) -> MailboxCache:
        """The mailbox's cache, opening the mailbox (``open_mailbox``) for its first session.
        Call only after the session authenticated for ``mailbox_id``; pair with
        :meth:`release`."""
        lock = self._locks.setdefault(mailbox_id, asyncio.Lock())
        async with lock:
            cache = self._open.get(mailbox_id)
            if cache is None:
                cache = MailboxCache(mailbox_id, await open_mailbox())
                self._open[mailbox_id] = cache
            cache.sessions += 1
        return cache

    def release(self, cache: MailboxCache) -> None:
        """One session let go; the last one drops the opened mailbox and every cached item."""
        cache.sessions -= 1
        if cache.sessions <= 0:
            if self._open.get(cache.mailbox_id) is cache:
                del self._open[cache.mailbox_id]
                lock = self._locks.get(cache.mailbox_id)
                if lock is not None and not lock.locked():
                    del self._locks[cache.mailbox_id]
            cache.clear()
