"""The IMAP session state machine: one ``do_<command>`` per command over the mailbox store.

States (RFC 3501 §3, RFC 9051 §3): not authenticated → authenticated → selected → logout. The
connection (:mod:`missive.imap.server`) parses a command with :mod:`missive.imap.parser` and
calls :meth:`Session.handle`; the session writes untagged responses and the tagged completion
through :class:`SessionIO`, and never touches sockets itself.

Implementation notes:

- The selected mailbox is mirrored in :class:`SelectedView` (sequence number → UID, flags).
  Changes made by other sessions, other fronts or other nodes arrive as wake-ups from
  ``core.events.watch(mailbox_id)``; at the end of each command the view is compared with the
  store and the differences are announced as ``EXISTS``, ``RECENT``, ``FETCH (FLAGS)`` and
  ``EXPUNGE`` (RFC 3501 §7.4.1: never ``EXPUNGE`` during FETCH, STORE or SEARCH, whose sequence
  numbers the client may be relying on; the UID forms are fine, RFC 9051 §7.5.1).
- ``\\Recent`` is session-level (it is not stored; RFC 9051 dropped it): messages that arrive
  while this session has the mailbox selected are recent for it.
- Reads of message content (``BODY[…]``, ``RFC822*``, ``BINARY``) are written to the audit log once
  per command, with UIDs and counts only (SPEC §7); deletions are audited by the store.
- Errors: a domain refusal is a tagged ``NO`` with a response code (RFC 5530); an unexpected
  exception is logged with its traceback and answered ``NO [SERVERBUG]``, never sent to the
  client, and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from missive.audit import log as audit
from missive.errors import NotFound
from missive.imap import encode, utf7
from missive.imap import parser as p
from missive.imap.auth import Authenticator, Principal
from missive.imap.cache import MailboxCache, SharedCaches
from missive.imap.fetch import (
    MimePart,
    bodystructure,
    envelope,
    header_part,
    parse_mime,
    partial,
    section_bytes,
)
from missive.imap.search import (
    Candidate,
    Context,
    HeaderColumn,
    column_query,
    header_fields,
    header_predicate,
    matches,
    needs_body,
    needs_content,
)
from missive.mailbox import views
from missive.mailbox.store import (
    MailboxClosed,
    MailboxSession,
    MessageInfo,
    QuotaExceeded,
    StoreError,
)

if TYPE_CHECKING:
    from cryptography import x509

    from missive.runtime import Core

__all__ = ["CAPABILITIES", "SelectedView", "Session", "SessionIO"]

log = logging.getLogger(__name__)

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
SPECIAL_USES = frozenset({"\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent",
                          "\\Trash"})
CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
                "UIDPLUS", "MOVE", "SPECIAL-USE", "UNSELECT", "CHILDREN", "CONDSTORE")
_FETCH_BATCH = 100
#: Messages whose kept ENVELOPE/BODYSTRUCTURE (``content.derived``) are read at once (a
#: multiple of _FETCH_BATCH: do_fetch reads them at the batches that start a group).
_DERIVED_BATCH = 1000
#: Untagged FETCH responses are buffered up to this size before being written.
_FLUSH_BYTES = 256 * 1024
READ_AHEAD = 64
AUDIT_DELAY = 1.0
_CONTENT_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "RFC822", "RFC822.HEADER",
                            "RFC822.TEXT", "BINARY", "BINARY.SIZE"})

_MESSAGE_COMMANDS = frozenset({"FETCH", "STORE", "SEARCH", "COPY", "MOVE"})

NOT_AUTH, AUTH, SELECTED, LOGOUT = "not authenticated", "authenticated", "selected", "logout"
_ANY = frozenset({NOT_AUTH, AUTH, SELECTED})
_AUTHED = frozenset({AUTH, SELECTED})
_SEL = frozenset({SELECTED})
_STATES: dict[str, frozenset[str]] = {
    "CAPABILITY": _ANY, "NOOP": _ANY, "LOGOUT": _ANY, "ID": _ANY,
    "STARTTLS": frozenset({NOT_AUTH}), "LOGIN": frozenset({NOT_AUTH}),
    "AUTHENTICATE": frozenset({NOT_AUTH}),
    "ENABLE": _AUTHED, "SELECT": _AUTHED, "EXAMINE": _AUTHED, "CREATE": _AUTHED,
    "DELETE": _AUTHED, "RENAME": _AUTHED, "SUBSCRIBE": _AUTHED, "UNSUBSCRIBE": _AUTHED,
    "LIST": _AUTHED, "LSUB": _AUTHED, "STATUS": _AUTHED, "APPEND": _AUTHED, "IDLE": _AUTHED,
    "NAMESPACE": _AUTHED,
    "CHECK": _SEL, "CLOSE": _SEL, "UNSELECT": _SEL, "EXPUNGE": _SEL, "UID EXPUNGE": _SEL,
    "SEARCH": _SEL, "FETCH": _SEL, "STORE": _SEL, "COPY": _SEL, "MOVE": _SEL,
}


class SessionIO(Protocol):
    """What the session needs from its connection."""

    tls: bool

    def send(self, data: bytes) -> None:
        """Queue ``data``; it is written at the next :meth:`flush`."""

    async def flush(self) -> None: ...

    async def read_line(self) -> bytes | None:
        """One line from the client (AUTHENTICATE continuation, IDLE ``DONE``); None at EOF."""

    async def start_tls(self) -> None: ...

    def peer_certificate(self) -> x509.Certificate | None: ...


class Refusal(Exception):  # a protocol answer, not a bug
    """A tagged NO or BAD decided inside a command handler."""

    def __init__(self, text: str, code: str | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status


@dataclass
class SelectedView:
    """The client's picture of the selected mailbox: sequence numbers, UIDs, flags."""

    name: str
    readonly: bool
    uidvalidity: int
    uids: list[int] = field(default_factory=list)
    infos: dict[int, MessageInfo] = field(default_factory=dict)
    recent: set[int] = field(default_factory=set)
    keywords: set[str] = field(default_factory=set)
    announced: set[str] = field(default_factory=set)
    modseq: int = 0  # the mailbox's highest modseq when this view was last brought up to date
    folder_id: int = 0  # the store's id of the folder (catch-up reads go by id, not by name)
    # SEARCH columns of header fields (search.HeaderColumn), valid for this list of messages.
    columns: dict[tuple[str, bool], HeaderColumn] = field(default_factory=dict)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def fill(self, infos: Sequence[MessageInfo]) -> None:
        """:meth:`add` of every message of a folder read at SELECT, in UID order, at once
        (the keywords looked at once per distinct flag set: a folder has few)."""
        self.columns.clear()
        self.uids.extend(m.uid for m in infos)
        self.infos.update((m.uid, m) for m in infos)
        for flags in {m.flags for m in infos}:
            self.keywords.update(f for f in flags if not f.startswith("\\"))

    def add(self, info: MessageInfo) -> None:
        self.columns.clear()
        self.uids.append(info.uid)
        self.infos[info.uid] = info
        self.keywords.update(f for f in info.flags if not f.startswith("\\"))

    def remove(self, uid: int) -> int | None:
        seq = self.seq_of(uid)
        if seq is not None:
            self.columns.clear()
            del self.uids[seq - 1]
            self.infos.pop(uid, None)
            self.recent.discard(uid)
        return seq

    def flags_of(self, uid: int) -> frozenset[str]:
        info = self.infos.get(uid)
        flags = info.flags if info else frozenset()
        return flags | {"\\Recent"} if uid in self.recent else flags


class Session:
    """One IMAP connection's state. Create per connection; call :meth:`greeting`, then
    :meth:`handle` for each parsed command until :attr:`state` is ``LOGOUT``."""

    def __init__(self, core: Core, io: SessionIO, authenticator: Authenticator, *,
                 implicit_tls: bool, client_address: str = "?",
                 on_login: Callable[[Principal | None], Awaitable[None]] | None = None,
                 caches: SharedCaches | None = None) -> None:
        self.core = core
        self.io = io
        self.authenticator = authenticator
        self.implicit_tls = implicit_tls
        self.client_address = client_address
        self.state = NOT_AUTH
        self.principal: Principal | None = None
        self.mbox: MailboxSession | None = None
        self.view: SelectedView | None = None
        self.enabled: set[str] = set()
        self._stack = contextlib.AsyncExitStack()
        self._changed: asyncio.Event | None = None
        self._pending = False
        self.on_login = on_login
        # Shared with this front's other sessions of the same mailbox (missive.imap.cache).
        self.caches = caches if caches is not None else SharedCaches()
        self._shared: MailboxCache | None = None
        self._last_miss: int | None = None
        self._reads: dict[int, list[int]] = {}
        self._audit_task: asyncio.Future[None] | None = None

    # --- plumbing -----------------------------------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = list(CAPABILITIES)
        if self.state == NOT_AUTH:
            if self.io.tls:
                caps.append("AUTH=PLAIN")
                # Only offered with a client certificate in hand: clients such as mbsync pick
                # the first mechanism they know, and EXTERNAL without a certificate must fail.
                if self.io.peer_certificate() is not None:
                    caps.append("AUTH=EXTERNAL")
            else:
                caps += ["STARTTLS", "LOGINDISABLED"]
        return caps

    def greeting(self) -> bytes:
        return b"* OK [CAPABILITY " + " ".join(self.capabilities()).encode() + \
            b"] Missive IMAP ready\r\n"

    def untagged(self, line: bytes | str) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.io.send(b"* " + data + b"\r\n")

    def _modseq_part(self, info: MessageInfo) -> bytes:
        """`` MODSEQ (n)`` in FETCH responses once CONDSTORE is enabled (RFC 7162 §3.1.4)."""
        return b" MODSEQ (%d)" % info.modseq if "CONDSTORE" in self.enabled else b""

    def _announce_keywords(self, view: SelectedView) -> None:
        """RFC 3501 §7.2.6: a new keyword in use changes the FLAGS list: say so."""
        if view.keywords != view.announced:
            view.announced = set(view.keywords)
            flags = " ".join([*SYSTEM_FLAGS, *sorted(view.keywords)])
            self.untagged(f"FLAGS ({flags})")
            if not view.readonly:
                self.untagged(f"OK [PERMANENTFLAGS ({flags} \\*)] flags permitted")

    def _tagged(self, tag: str, status: str, text: str, code: str | None = None) -> None:
        code_part = f"[{code}] " if code else ""
        self.io.send(f"{tag} {status} {code_part}{text}\r\n".encode("utf-8", "replace"))

    async def close(self) -> None:
        task, self._audit_task = self._audit_task, None
        if task is not None:
            task.cancel()
        try:
            await self.flush_reads()
        except Exception:
            log.exception("imap: could not write the read audit entries at logout")
        await self._stack.aclose()
        self.mbox = None
        self._shared = None
        self.view = None

    async def handle(self, cmd: p.Command) -> None:
        """Run one command and write its responses (tagged completion last)."""
        allowed = _STATES.get(cmd.name, _ANY)
        if self.state not in allowed:
            self._tagged(cmd.tag, "BAD", f"{cmd.name} is not allowed in the {self.state} state")
            await self.io.flush()
            return
        handler = getattr(self, "do_" + cmd.name.lower().replace(" ", "_"))
        try:
            if self.state == SELECTED and cmd.name in _MESSAGE_COMMANDS:
                # Catch up first, as Dovecot does: a message delivered since the last command
                # is announced (EXISTS) and answered within this command rather than left out
                # of, say, UID FETCH n:* until the next one (RFC 9051 §7.4.1, §7.5.1).
                await self.sync(expunges=not _hides_expunge(cmd))
            result = await handler(cmd)
        except Refusal as r:
            self._tagged(cmd.tag, r.status, r.text, r.code)
        except NotFound as exc:
            self._tagged(cmd.tag, "NO", str(exc) or "no such mailbox", "NONEXISTENT")
        except QuotaExceeded as exc:
            self._tagged(cmd.tag, "NO", str(exc), "OVERQUOTA")
        except MailboxClosed:
            self.untagged("BYE this mailbox has been closed")
            self.state = LOGOUT
        except StoreError as exc:
            code = "ALREADYEXISTS" if "exists" in str(exc) else "CANNOT"
            self._tagged(cmd.tag, "NO", str(exc), code)
        except Exception:  # any bug: logged, never shown, session goes on
            log.exception("imap: %s failed", cmd.name)
            self._tagged(cmd.tag, "NO", "internal server error", "SERVERBUG")
        else:
            if self.state == SELECTED and cmd.name not in ("CLOSE", "UNSELECT", "LOGOUT"):
                await self.sync(expunges=not _hides_expunge(cmd))
            if result is not None:
                code, text = result
                self._tagged(cmd.tag, "OK", text, code)
            if cmd.name == "LOGOUT":
                await self.close()
        await self.io.flush()

    # --- pending changes ----------------------------------------------------------------------

    async def sync(self, *, expunges: bool, force: bool = False) -> None:
        """Announce what changed in the selected mailbox since the client last heard."""
        view, mbox = self.view, self.mbox
        if view is None or mbox is None:
            return
        changed = self._changed
        if not (force or self._pending or (changed is not None and changed.is_set())):
            return
        if changed is not None:
            changed.clear()
        self._pending = False
        highest, changes, uids = await views.view_changes(
            mbox, view.folder_id, view.modseq, len(view.uids), view.uids[-1] if view.uids else 0)
        if highest <= view.modseq:
            return
        present = set(uids) if uids is not None else None  # None: nothing was expunged
        gone = [u for u in view.uids if u not in present] if present is not None else []
        if gone and not expunges:
            # Keep view.modseq so that the next sync looks again and reports them.
            self._pending = True
        else:
            view.modseq = highest
            for uid in gone:
                seq = view.remove(uid)
                if seq is not None:
                    self.untagged(b"%d EXPUNGE" % seq)
        last = view.uids[-1] if view.uids else 0
        new: list[MessageInfo] = []
        for now in changes:
            if now.uid > last:
                new.append(now)
                continue
            before = view.infos.get(now.uid)
            if before is None:
                continue
            view.infos[now.uid] = now
            if now.flags != before.flags:
                view.keywords.update(f for f in now.flags if not f.startswith("\\"))
                self.untagged(b"%d FETCH (UID %d FLAGS %s%s)" % (
                    view.seq_of(now.uid) or 0, now.uid, encode.flag_list(view.flags_of(now.uid)),
                    self._modseq_part(now)))
        self._announce_keywords(view)
        if new:
            for m in new:
                view.add(m)
                view.recent.add(m.uid)
            self.untagged(b"%d EXISTS" % len(view.uids))
            self.untagged(b"%d RECENT" % len(view.recent))

    def _own_change(self, view: SelectedView, changed: Sequence[MessageInfo]) -> None:
        """After this session's own flag change, already applied to the view: when it took the
        modseq right after the view's (nobody else changed the mailbox in between; every
        change takes the next one), the view is current up to it, and the catch-up that our
        own wake-up triggers costs one read instead of three."""
        if changed and not self._pending and all(
                m.modseq == view.modseq + 1 for m in changed):
            view.modseq += 1

    # --- any state ----------------------------------------------------------------------------

    async def do_capability(self, cmd: p.Command) -> tuple[str | None, str]:
        self.untagged("CAPABILITY " + " ".join(self.capabilities()))
        return None, "CAPABILITY completed"

    async def do_noop(self, cmd: p.Command) -> tuple[str | None, str]:
        return None, "NOOP completed"

    async def do_check(self, cmd: p.Command) -> tuple[str | None, str]:
        return None, "CHECK completed"

    async def do_logout(self, cmd: p.Command) -> tuple[str | None, str]:
        self.untagged("BYE Missive IMAP logging out")
        self.state = LOGOUT
        return None, "LOGOUT completed"

    async def do_id(self, cmd: p.Command) -> tuple[str | None, str]:
        self.untagged('ID ("name" "Missive" "vendor" "Missive")')
        return None, "ID completed"

    # --- not authenticated --------------------------------------------------------------------

    async def do_starttls(self, cmd: p.Command) -> tuple[str | None, str] | None:
        if self.io.tls:
            raise Refusal("TLS is already active", status="BAD")
        self._tagged(cmd.tag, "OK", "Begin TLS negotiation now")
        await self.io.flush()
        await self.io.start_tls()
        return None

    async def do_login(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Login)  # noqa: S101
        if not self.io.tls:
            raise Refusal("LOGIN is disabled before STARTTLS", "PRIVACYREQUIRED")
        principal = await self.authenticator.password(cmd.user, cmd.password)
        return await self._login(principal)

    async def do_authenticate(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Authenticate)  # noqa: S101
        if not self.io.tls:
            raise Refusal("authentication requires TLS: use STARTTLS", "PRIVACYREQUIRED")
        if cmd.mechanism not in ("PLAIN", "EXTERNAL"):
            raise Refusal(f"mechanism {cmd.mechanism[:20]} is not supported", "CANNOT")
        response = cmd.initial
        if response is None:
            self.io.send(b"+ \r\n")
            await self.io.flush()
            line = await self.io.read_line()
            if line is None:
                raise Refusal("connection closed during authentication", status="BAD")
            response = line.strip().decode("ascii", "replace")
        if response == "*":
            raise Refusal("authentication cancelled", status="BAD")
        try:
            data = b"" if response == "=" else base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            raise Refusal("invalid base64 in the SASL response", status="BAD") from None
        if cmd.mechanism == "PLAIN":
            parts = data.split(b"\0")
            if len(parts) != 3:
                raise Refusal("PLAIN expects authzid NUL authcid NUL password", status="BAD")
            authzid, authcid, password = (x.decode("utf-8", "replace") for x in parts)
            if authzid and authzid.lower() != authcid.lower():
                raise Refusal("acting for another user is not allowed", "AUTHORIZATIONFAILED")
            principal = await self.authenticator.password(authcid, password)
        else:
            cert = self.io.peer_certificate()
            if cert is None:
                raise Refusal("EXTERNAL needs a TLS client certificate", "AUTHENTICATIONFAILED")
            principal = await self.authenticator.certificate(
                cert, data.decode("utf-8", "replace") or None)
        return await self._login(principal)

    async def _login(self, principal: Principal | None) -> tuple[str | None, str]:
        if principal is None:
            if self.on_login is not None:
                await self.on_login(None)
            raise Refusal("invalid credentials", "AUTHENTICATIONFAILED")
        if self.on_login is not None:
            await self.on_login(principal)
        mailbox_id = principal.mailbox_id
        shared = await self.caches.acquire(mailbox_id,
                                           lambda: self.core.store.open(mailbox_id))
        self._stack.callback(self.caches.release, shared)
        self._shared = shared
        self.mbox = shared.mbox
        self.principal = principal
        self._changed = await self._stack.enter_async_context(
            self.core.events.watch(principal.mailbox_id))
        self.state = AUTH
        return "CAPABILITY " + " ".join(self.capabilities()), "authenticated"

    # --- authenticated ------------------------------------------------------------------------

    def _mbox(self) -> MailboxSession:
        if self.mbox is None:
            raise Refusal("not authenticated", status="BAD")
        return self.mbox

    def _cached(self) -> MailboxCache:
        if self._shared is None:
            raise Refusal("not authenticated", status="BAD")
        return self._shared

    async def do_enable(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Enable)  # noqa: S101
        # RFC 5161 §3.1: list only what was enabled by this command and is supported.
        newly = [c for c in dict.fromkeys(cmd.capabilities)
                 if c == "CONDSTORE" and c not in self.enabled]
        self.enabled.update(newly)
        self.untagged(" ".join(["ENABLED", *newly]))
        return None, "ENABLE completed"

    async def do_namespace(self, cmd: p.Command) -> tuple[str | None, str]:
        self.untagged('NAMESPACE (("" "/")) NIL NIL')
        return None, "NAMESPACE completed"

    async def do_select(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Select)  # noqa: S101
        mbox = self._mbox()
        self.view = None
        self.state = AUTH
        try:
            folder = await mbox.folder(cmd.mailbox)
        except NotFound:
            raise Refusal("no such mailbox", "NONEXISTENT") from None
        if self._changed is not None:
            self._changed.clear()
        # The highest modseq and the list in one read: a later change is seen by the next sync.
        highest, infos = await views.folder_messages(mbox, folder.id)
        view = SelectedView(folder.name, cmd.name == "EXAMINE", folder.uidvalidity,
                            modseq=highest, folder_id=folder.id)
        view.fill(infos)
        view.announced = set(view.keywords)
        self.view = view
        self.state = SELECTED
        flags = " ".join([*SYSTEM_FLAGS, *sorted(view.keywords)])
        self.untagged(f"FLAGS ({flags})")
        if view.readonly:
            self.untagged("OK [PERMANENTFLAGS ()] read-only")
        else:
            self.untagged(f"OK [PERMANENTFLAGS ({flags} \\*)] flags permitted")
        self.untagged(b"%d EXISTS" % len(view.uids))
        self.untagged(b"0 RECENT")
        unseen = next((i + 1 for i, u in enumerate(view.uids)
                       if "\\Seen" not in view.infos[u].flags), None)
        if unseen is not None:
            self.untagged(f"OK [UNSEEN {unseen}] first unseen")
        self.untagged(f"OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid")
        self.untagged(f"OK [UIDNEXT {folder.uidnext}] predicted next UID")
        if cmd.condstore:
            self.enabled.add("CONDSTORE")
        self.untagged(f"OK [HIGHESTMODSEQ {highest}] highest modseq")
        return ("READ-ONLY" if view.readonly else "READ-WRITE"), f"{cmd.name} completed"

    do_examine = do_select

    async def do_create(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Create)  # noqa: S101
        mbox = self._mbox()
        name = cmd.mailbox.rstrip("/")
        if not name or name.upper() == "INBOX":
            raise Refusal("that mailbox already exists", "ALREADYEXISTS")
        if any(not part for part in name.split("/")):
            raise Refusal("empty hierarchy level in the mailbox name", "CANNOT")
        uses = [u for u in cmd.special_use]
        for use in uses:
            if use.capitalize() not in SPECIAL_USES and use not in SPECIAL_USES:
                raise Refusal(f"unknown special use {use[:20]}", "USEATTR")
        if len(uses) > 1:
            raise Refusal("one special use per mailbox", "USEATTR")
        existing = {f.name for f in await mbox.folders()}
        if name in existing:
            raise Refusal("that mailbox already exists", "ALREADYEXISTS")
        levels = name.split("/")
        for i in range(1, len(levels)):
            parent = "/".join(levels[:i])
            if parent not in existing and parent.upper() != "INBOX":
                await mbox.create_folder(parent)
        special = "\\" + uses[0].lstrip("\\").capitalize() if uses else None
        await mbox.create_folder(name, special_use=special)
        return None, "CREATE completed"

    async def do_delete(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.MailboxCmd)  # noqa: S101
        if cmd.mailbox == "INBOX":
            raise Refusal("INBOX cannot be deleted", "CANNOT")
        await self._mbox().delete_folder(cmd.mailbox)
        if self.view is not None and self.view.name == cmd.mailbox:
            self.view = None
            self.state = AUTH
        return None, "DELETE completed"

    async def do_rename(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Rename)  # noqa: S101
        mbox = self._mbox()
        await mbox.folder(cmd.old)
        await mbox.rename_folder(cmd.old, cmd.new.rstrip("/"))
        return None, "RENAME completed"

    async def do_subscribe(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.MailboxCmd)  # noqa: S101
        await self._mbox().set_subscribed(cmd.mailbox, cmd.name == "SUBSCRIBE")
        return None, f"{cmd.name} completed"

    do_unsubscribe = do_subscribe

    async def do_list(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.ListCmd)  # noqa: S101
        mbox = self._mbox()
        lsub = cmd.name == "LSUB"
        if cmd.patterns == ("",) and not lsub:
            # RFC 3501 §6.3.8: the hierarchy delimiter and the root of the reference.
            self.untagged('LIST (\\Noselect) "/" ""')
            return None, "LIST completed"
        folders = await mbox.folders()
        by_name = {f.name: f for f in folders}
        names = set(by_name)
        for name in list(names):
            levels = name.split("/")
            names.update("/".join(levels[:i]) for i in range(1, len(levels)))
        subscribed_only = lsub or "SUBSCRIBED" in cmd.select_opts
        special_only = "SPECIAL-USE" in cmd.select_opts
        regexes = [_pattern(cmd.reference + pat) for pat in cmd.patterns]
        for name in sorted(names, key=lambda n: (n != "INBOX", n)):
            if not any(rx.fullmatch(name) or (name.startswith("INBOX") and rx.fullmatch(
                    name) is None and _inbox_match(rx, name)) for rx in regexes):
                continue
            info = by_name.get(name)
            if subscribed_only and (info is None or not info.subscribed):
                continue
            if special_only and (info is None or not info.special_use):
                continue
            attrs: list[str] = []
            if info is None:
                attrs.append("\\Noselect" if lsub else "\\NonExistent")
            has_children = any(n.startswith(name + "/") for n in names)
            if not lsub:
                attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
                if info is not None and info.special_use:
                    attrs.append(info.special_use)
                if "SUBSCRIBED" in cmd.select_opts and info is not None and info.subscribed:
                    attrs.append("\\Subscribed")
            self.untagged(b"%s (%s) \"/\" %s" % (cmd.name.encode(), " ".join(attrs).encode(),
                                                encode.astring(utf7.encode(name))))
        return None, f"{cmd.name} completed"

    do_lsub = do_list

    async def do_status(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Status)  # noqa: S101
        if "HIGHESTMODSEQ" in cmd.items:
            self.enabled.add("CONDSTORE")
        st = await self._mbox().status(cmd.mailbox)
        values = {"MESSAGES": st.messages, "RECENT": 0, "UIDNEXT": st.uidnext,
                  "UIDVALIDITY": st.uidvalidity, "UNSEEN": st.unseen,
                  "HIGHESTMODSEQ": st.highest_modseq, "SIZE": st.size, "DELETED": 0}
        if "DELETED" in cmd.items:
            infos = await self._mbox().messages(cmd.mailbox)
            values["DELETED"] = sum(1 for m in infos if "\\Deleted" in m.flags)
        if self.view is not None and self.view.name == st.name:
            values["RECENT"] = len(self.view.recent)
        items = " ".join(f"{i} {values[i]}" for i in cmd.items)
        self.untagged(b"STATUS %s (%s)" % (encode.astring(utf7.encode(st.name)), items.encode()))
        return None, "STATUS completed"

    async def do_append(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Append)  # noqa: S101
        mbox = self._mbox()
        try:
            folder = await mbox.folder(cmd.mailbox)
        except NotFound:
            raise Refusal("no such mailbox", "TRYCREATE") from None
        if not cmd.message:
            raise Refusal("empty message", "CANNOT")
        flags = _clean_flags(cmd.flags)
        validity, uid = await mbox.append(folder.name, cmd.message, flags, cmd.date)
        if self.view is not None and self.view.name == folder.name:
            self._pending = True
        return f"APPENDUID {validity} {uid}", "APPEND completed"

    async def do_idle(self, cmd: p.Command) -> tuple[str | None, str] | None:
        """RFC 2177: report changes as they happen until the client sends ``DONE``."""
        self.io.send(b"+ idling\r\n")
        await self.io.flush()
        reader = asyncio.ensure_future(self.io.read_line())
        try:
            while True:
                waiters: set[asyncio.Future[object]] = {reader}  # type: ignore[arg-type]
                waker = None
                if self._changed is not None and self.state == SELECTED:
                    waker = asyncio.ensure_future(self._changed.wait())
                    waiters.add(waker)  # type: ignore[arg-type]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if waker is not None and not waker.done():
                        waker.cancel()
                if reader.done():
                    line = reader.result()
                    if line is None:  # autologout (RFC 9051 §5.4) or the client went away
                        self.untagged("BYE autologout; idle for too long")
                        self.state = LOGOUT
                        return None
                    if line.strip().upper() != b"DONE":
                        raise Refusal("expected DONE to end IDLE", status="BAD")
                    return None, "IDLE terminated"
                await self.sync(expunges=True)
                await self.io.flush()
        finally:
            if not reader.done():
                reader.cancel()

    # --- selected -----------------------------------------------------------------------------

    def _view(self) -> SelectedView:
        if self.view is None:
            raise Refusal("no mailbox selected", status="BAD")
        return self.view

    def _writable(self) -> SelectedView:
        view = self._view()
        if view.readonly:
            raise Refusal("mailbox is read-only (EXAMINE)", "READ-ONLY")
        return view

    def _targets(self, seqset: p.SeqSet, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) of the messages a set designates, ascending."""
        view = self._view()
        if uid:
            largest = view.uids[-1] if view.uids else 0
            out: list[int] = []
            for lo, hi in seqset.ranges:
                a = largest if lo == 0 else lo
                b = largest if hi == 0 else hi
                a, b = min(a, b), max(a, b)
                i = bisect.bisect_left(view.uids, a)
                j = bisect.bisect_right(view.uids, b)
                out.extend(range(i, j))
            return [(i + 1, view.uids[i]) for i in sorted(set(out))]
        members = seqset.resolve(len(view.uids))
        if any(r[0] > len(view.uids) or r[1] > len(view.uids) for r in seqset.ranges):
            raise Refusal("message sequence number out of range", status="BAD")
        return [(n, view.uids[n - 1]) for n in members]

    async def do_close(self, cmd: p.Command) -> tuple[str | None, str]:
        view = self._view()
        if not view.readonly:
            await self._mbox().expunge(view.name)
        self.view = None
        self.state = AUTH
        return None, "CLOSE completed"

    async def do_unselect(self, cmd: p.Command) -> tuple[str | None, str]:
        self.view = None
        self.state = AUTH
        return None, "UNSELECT completed"

    async def do_expunge(self, cmd: p.Command) -> tuple[str | None, str]:
        view = self._writable()
        uids = None
        if isinstance(cmd, p.UidExpunge):
            uids = [u for _, u in self._targets(cmd.seqset, True)]
        removed = await self._mbox().expunge(view.name, uids)
        for uid in removed:
            seq = view.remove(uid)
            if seq is not None:
                self.untagged(b"%d EXPUNGE" % seq)
        return None, "EXPUNGE completed"

    do_uid_expunge = do_expunge

    async def do_store(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Store)  # noqa: S101
        view = self._writable()
        targets = self._targets(cmd.seqset, cmd.uid)
        flags = _clean_flags(cmd.flags)
        modified: list[int] = []
        if cmd.unchangedsince is not None:
            # RFC 7162 §3.1.3: messages changed since the client's modseq are left alone.
            self.enabled.add("CONDSTORE")
            current = {m.uid: m for m in await self._mbox().messages(
                view.name, [u for _, u in targets])}
            kept = []
            for seq, uid in targets:
                info = current.get(uid)
                if info is not None and info.modseq > cmd.unchangedsince:
                    modified.append(uid if cmd.uid else seq)
                else:
                    kept.append((seq, uid))
            targets = kept
        changed_uids: set[int] = set()
        if targets:
            changed = await self._mbox().store_flags(view.name, [u for _, u in targets], flags,
                                                     cmd.mode)  # type: ignore[arg-type]
            for info in changed:
                if info.uid in view.infos:
                    view.infos[info.uid] = info
                    changed_uids.add(info.uid)
                    view.keywords.update(f for f in info.flags if not f.startswith("\\"))
            self._own_change(view, changed)
        self._announce_keywords(view)
        for seq, uid in targets:
            if uid not in view.infos or (cmd.silent and (
                    "CONDSTORE" not in self.enabled or uid not in changed_uids)):
                continue
            uid_part = b"UID %d " % uid if cmd.uid else b""
            flags_part = b"" if cmd.silent else b"FLAGS " + encode.flag_list(view.flags_of(uid))
            modseq = self._modseq_part(view.infos[uid])
            if cmd.silent:
                modseq = modseq.lstrip()
            self.untagged(b"%d FETCH (%s%s%s)" % (seq, uid_part, flags_part, modseq))
        if modified:
            return f"MODIFIED {_uid_set(modified)}", "conditional STORE failed for some"
        return None, "STORE completed"

    async def do_copy(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Copy)  # noqa: S101
        view = self._writable() if cmd.name == "MOVE" else self._view()
        mbox = self._mbox()
        try:
            dest = await mbox.folder(cmd.mailbox)
        except NotFound:
            raise Refusal("no such mailbox", "TRYCREATE") from None
        targets = self._targets(cmd.seqset, cmd.uid)
        if not targets:
            return None, f"{cmd.name} completed (no messages)"
        uids = [u for _, u in targets]
        if cmd.name == "MOVE":
            validity, pairs = await mbox.move(view.name, uids, dest.name)
        else:
            validity, pairs = await mbox.copy(view.name, uids, dest.name)
        code = None
        if pairs:
            src = _uid_set([a for a, _ in pairs])
            dst = _uid_set([b for _, b in pairs])
            code = f"COPYUID {validity} {src} {dst}"
        if cmd.name == "MOVE":
            if code:
                self.untagged(f"OK [{code}] moved")
            for src_uid, _ in pairs:
                seq = view.remove(src_uid)
                if seq is not None:
                    self.untagged(b"%d EXPUNGE" % seq)
            return None, "MOVE completed"
        if dest.name == view.name:
            self._pending = True
        return code, "COPY completed"

    do_move = do_copy

    async def do_search(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Search)  # noqa: S101
        view = self._view()
        if cmd.charset not in (None, "UTF-8", "US-ASCII"):
            raise Refusal(f"charset {cmd.charset[:20]} is not supported", "BADCHARSET UTF-8")
        ctx = Context(len(view.uids), view.uids[-1] if view.uids else 0,
                      frozenset(view.recent))
        content = needs_content(cmd.key)
        body = needs_body(cmd.key)
        shared = self._cached()
        heads = shared.heads
        found: list[int] = []
        validity, infos, flags_of, key = view.uidvalidity, view.infos, view.flags_of, cmd.key
        by_header = header_predicate(key) if content and not body else None
        query = column_query(key) if by_header is not None else None
        column = self._column(view, query[0], query[1]) if query is not None else None
        if column is not None and query is not None:
            found = [view.uids[i] if cmd.uid else i + 1 for i in column.find(query[2])]
        for start in range(0, len(view.uids) if column is None else 0, _FETCH_BATCH):
            batch = view.uids[start:start + _FETCH_BATCH]
            wanted = {u for u in batch if body or (validity, u) not in heads} \
                if content else set()
            raws = await self._bodies(view, sorted(wanted), read_ahead=False) if wanted else {}
            for seq, uid in enumerate(batch, start + 1):
                info = infos.get(uid)
                if info is None or (uid in wanted and uid not in raws):
                    continue
                head = heads.get((validity, uid)) if content else None
                if content and head is None:
                    head = header_fields(raws[uid])
                    shared.keep_head((validity, uid), head)
                if by_header is not None:
                    if by_header(head):  # type: ignore[arg-type]
                        found.append(uid if cmd.uid else seq)
                    continue
                c = Candidate(seq, info, None, raws.get(uid), head, flags_of=flags_of)
                if matches(key, c, ctx):
                    found.append(uid if cmd.uid else seq)
        if cmd.returns is not None:
            parts = [f'(TAG "{cmd.tag}")'] + (["UID"] if cmd.uid else [])
            opts = cmd.returns or ("ALL",)
            if "MIN" in opts and found:
                parts.append(f"MIN {found[0]}")
            if "MAX" in opts and found:
                parts.append(f"MAX {found[-1]}")
            if "ALL" in opts and found:
                parts.append(f"ALL {_uid_set(found)}")
            if "COUNT" in opts:
                parts.append(f"COUNT {len(found)}")
            self.untagged("ESEARCH " + " ".join(parts))
        else:
            tail = ""
            if _uses_modseq(cmd.key):
                self.enabled.add("CONDSTORE")
                if found:
                    # RFC 7162 §3.1.5: the highest mod-sequence of the messages found.
                    uids = found if cmd.uid else [view.uids[n - 1] for n in found]
                    tail = f" (MODSEQ {max(view.infos[u].modseq for u in uids)})"
            self.untagged("SEARCH" + "".join(f" {n}" for n in found) + tail)
        return None, "SEARCH completed"

    def _column(self, view: SelectedView, name: str, with_raw: bool) -> HeaderColumn | None:
        """The view's column of header field ``name`` for SEARCH, built from the shared header
        cache when every message's fields are there (else None: the search reads them)."""
        column = view.columns.get((name, with_raw))
        if column is None:
            heads = self._cached().heads
            found = [heads.get((view.uidvalidity, u)) for u in view.uids]
            if any(h is None for h in found):
                return None
            column = HeaderColumn([h for h in found if h is not None], name, with_raw)
            view.columns[(name, with_raw)] = column
        return column

    async def do_fetch(self, cmd: p.Command) -> tuple[str | None, str]:
        assert isinstance(cmd, p.Fetch)  # noqa: S101
        view = self._view()
        mbox = self._mbox()
        targets = self._targets(cmd.seqset, cmd.uid)
        if cmd.changedsince is not None or any(a.name == "MODSEQ" for a in cmd.attrs):
            self.enabled.add("CONDSTORE")
        if cmd.changedsince is not None:
            since = cmd.changedsince
            targets = [(n, u) for n, u in targets
                       if u in view.infos and view.infos[u].modseq > since]
            if not any(a.name == "MODSEQ" for a in cmd.attrs):
                cmd = p.Fetch(cmd.tag, cmd.name, cmd.seqset, (*cmd.attrs, p.FetchAttr("MODSEQ")),
                              cmd.uid, cmd.changedsince)
        need_raw = any(a.name in _CONTENT_ITEMS or (a.name == "BODY") for a in cmd.attrs)
        sets_seen = not view.readonly and any(
            a.name in ("RFC822", "RFC822.TEXT") or (
                a.name in ("BODY", "BINARY") and a.section is not None and not a.peek)
            for a in cmd.attrs)
        reads_content = any(
            a.name in ("RFC822", "RFC822.TEXT", "BINARY") or (
                a.name == "BODY" and a.section is not None) for a in cmd.attrs)
        seen_now: set[int] = set()
        if sets_seen:
            unseen = [u for _, u in targets
                      if u in view.infos and "\\Seen" not in view.infos[u].flags]
            if unseen:
                now_seen = await mbox.store_flags(view.name, unseen, ["\\Seen"], "add")
                for changed in now_seen:
                    view.infos[changed.uid] = changed
                    seen_now.add(changed.uid)
                self._own_change(view, now_seen)
        read_uids: list[int] = []
        has_flags = any(a.name == "FLAGS" for a in cmd.attrs)
        add_modseq = "CONDSTORE" in self.enabled and not any(a.name == "MODSEQ"
                                                              for a in cmd.attrs)
        send = self.io.send
        pending = 0
        derivable = need_raw and all(_meta_key(a) is not None for a in cmd.attrs
                                     if a.name in _CONTENT_ITEMS or a.name == "BODY")
        meta_keys = _raw_keys(cmd)
        for start in range(0, len(targets), _FETCH_BATCH):
            batch = targets[start:start + _FETCH_BATCH]
            if derivable and start % _DERIVED_BATCH == 0:
                # ENVELOPE/BODYSTRUCTURE computed by an earlier session, kept sealed by the
                # store: served without decrypting and parsing the messages again.
                await self._load_derived(view, [
                    u for _, u in targets[start:start + _DERIVED_BATCH]
                    if self._needs_raw(meta_keys, view, u)])
            wanted = [u for _, u in batch
                      if self._needs_raw(meta_keys, view, u)] if need_raw else []
            raws = await self._bodies(view, wanted) if wanted else {}
            lines: list[bytes] = []
            for seq, uid in batch:
                info = view.infos.get(uid)
                if info is None or (uid in wanted and uid not in raws):
                    continue
                items = self._fetch_items(cmd, view, info, raws.get(uid))
                if uid in seen_now and not has_flags:
                    items.append(_flags_item(view.flags_of(uid)))
                if add_modseq and (has_flags or uid in seen_now):
                    items.append(b"MODSEQ (%d)" % info.modseq)
                lines.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(items)))
                if reads_content:
                    read_uids.append(uid)
            data = b"".join(lines)
            send(data)
            pending += len(data)
            if pending >= _FLUSH_BYTES:
                # Large answers go out as they are built; smaller ones leave with the tagged
                # completion, in one write (one TLS record run, one system call).
                await self.io.flush()
                pending = 0
        if read_uids:
            self._audit_read(view.uidvalidity, read_uids)
        return None, "FETCH completed"

    async def _bodies(self, view: SelectedView, uids: list[int], *,
                      read_ahead: bool = True) -> dict[int, bytes]:
        """Decrypted messages, through a small read-ahead cache.

        Clients that synchronise (mbsync, offlineimap, Thunderbird) fetch bodies one or a few
        at a time in UID order; each store round trip costs far more than decrypting, so a
        sequential miss also reads the next :data:`READ_AHEAD` messages of the view in the
        same query.
        The cache (:class:`missive.imap.cache.MailboxCache`, shared by this mailbox's sessions)
        holds at most :data:`~missive.imap.cache.BODY_CACHE_BYTES`, in memory only (C6), and
        is keyed by UIDVALIDITY and UID, whose content never changes (RFC 3501 §2.3.1.1).
        """
        shared = self._cached()
        out: dict[int, bytes] = {}
        if not uids:
            return out
        missing: list[int] = []
        for uid in uids:
            raw = shared.body((view.uidvalidity, uid))
            if raw is None:
                missing.append(uid)
            else:
                out[uid] = raw
        if not missing:
            return out
        wanted = list(missing)
        # Read ahead only for a sequential reader (this miss follows the previous one), so a
        # client jumping around the mailbox does not pay for messages it never asks for.
        sequential = self._last_miss is not None and bisect.bisect_right(
            view.uids, self._last_miss) == bisect.bisect_left(view.uids, missing[0])
        if read_ahead and sequential and len(missing) < READ_AHEAD:
            i = bisect.bisect_right(view.uids, missing[-1])
            for uid in view.uids[i:i + READ_AHEAD - len(missing)]:
                if (view.uidvalidity, uid) not in shared.bodies:
                    wanted.append(uid)
        self._last_miss = max(wanted)
        got = await self._mbox().fetch_many(view.name, wanted)
        for uid, raw in got.items():
            if uid in missing:
                out[uid] = raw
            shared.keep_body((view.uidvalidity, uid), raw)
        return out

    async def _load_derived(self, view: SelectedView, uids: list[int]) -> None:
        """Put the items the store kept for these messages (``MailboxSession.derived_items``)
        into the mailbox's shared cache: in one read of a UID range when they fill most of
        it (``FETCH 1:* (ENVELOPE)``), else by content id."""
        infos = [view.infos[u] for u in uids if u in view.infos]
        if not infos:
            return
        mbox = self._mbox()
        first, last = infos[0].uid, infos[-1].uid
        span = bisect.bisect_right(view.uids, last) - bisect.bisect_left(view.uids, first)
        if span <= 2 * len(infos):
            kept = await mbox.derived_range(view.folder_id, first, last)
        else:
            kept = await mbox.derived_items([i.content_id for i in infos])
        shared = self._cached()
        validity = view.uidvalidity
        for info in infos:
            items = kept.get(info.content_id)
            if items:
                for key, item in items.items():
                    if key in _META_KEYS:
                        shared.keep_meta((validity, info.uid, key), item)

    def _keep_derived(self, view: SelectedView, info: MessageInfo) -> None:
        """Hand every cacheable item known for this message to the store to keep sealed."""
        meta = self._cached().meta
        items = {key: item for key in _META_KEYS
                 if (item := meta.get((view.uidvalidity, info.uid, key))) is not None}
        if items:
            self._mbox().keep_derived(info.content_id, items)

    def _fetch_items(self, cmd: p.Fetch, view: SelectedView, info: MessageInfo,
                     raw: bytes | None) -> list[bytes]:
        items: list[bytes] = []
        tree: MimePart | None = None
        computed = False
        meta = self._cached().meta
        for a in cmd.attrs:
            name = a.name
            if name == "UID":
                items.append(b"UID %d" % info.uid)
            elif name == "FLAGS":
                items.append(_flags_item(view.flags_of(info.uid)))
            elif name == "INTERNALDATE":
                items.append(b"INTERNALDATE " + encode.datetime_text(info.internal_date))
            elif name == "RFC822.SIZE":
                items.append(b"RFC822.SIZE %d" % info.size)
            elif name == "MODSEQ":
                items.append(b"MODSEQ (%d)" % info.modseq)
            elif (key := _meta_key(a)) is not None and (
                    cached := meta.get((view.uidvalidity, info.uid, key))) is not None:
                items.append(cached)
            elif raw is None:
                continue
            elif name == "RFC822":
                items.append(b"RFC822 " + encode.literal(raw))
            elif name == "BODY" and a.section is not None and not a.section.parts \
                    and a.section.text is None:
                # BODY[]: the message's octets as stored, no MIME tree needed (RFC 3501 §6.4.5).
                label = b"BODY[]<%d> " % a.partial[0] if a.partial else b"BODY[] "
                items.append(label + encode.literal(partial(raw, a.partial)))
            elif name == "ENVELOPE" and tree is None:
                # The envelope needs the top-level header fields only, not the MIME tree.
                item = b"ENVELOPE " + envelope(header_part(raw))
                self._cached().keep_meta((view.uidvalidity, info.uid, "ENVELOPE"), item)
                computed = True
                items.append(item)
            else:
                if tree is None:
                    tree = parse_mime(raw)
                item = _content_item(a, tree, raw)
                if key is not None:
                    self._cached().keep_meta((view.uidvalidity, info.uid, key), item)
                    computed = True
                items.append(item)
        if computed:
            self._keep_derived(view, info)
        return items

    def _needs_raw(self, keys: tuple[str, ...] | None, view: SelectedView, uid: int) -> bool:
        """Whether answering a FETCH whose content items are ``keys`` (:func:`_raw_keys`) needs
        message ``uid`` itself: ENVELOPE and BODYSTRUCTURE already computed are served without
        decrypting."""
        if keys is None:
            return True
        meta = self._cached().meta
        validity = view.uidvalidity
        for key in keys:
            if (validity, uid, key) not in meta:
                return True
        return False

    def _audit_read(self, uidvalidity: int, uids: Sequence[int]) -> None:
        """Note content reads; they are written within :data:`AUDIT_DELAY` seconds, one entry
        per folder, and at the latest when the session ends.

        One audit write per FETCH would cost more than the FETCH itself (the audit chain
        serialises writers), so reads are coalesced; the entry names the folder by its
        UIDVALIDITY and the messages by UID, never by content or folder name (SPEC §7).
        """
        self._reads.setdefault(uidvalidity, []).extend(uids)
        if self._audit_task is None:
            self._audit_task = asyncio.ensure_future(self._flush_reads_later())

    async def _flush_reads_later(self) -> None:
        await asyncio.sleep(AUDIT_DELAY)
        self._audit_task = None
        try:
            await self.flush_reads()
        except Exception:  # logged; the reads stay noted for the next flush
            log.exception("imap: could not write the read audit entries")

    async def flush_reads(self) -> None:
        reads, self._reads = self._reads, {}
        if not reads or self.mbox is None:
            return
        principal = self.principal
        actor = self.core.store.actor_hash(principal.login) if principal else None
        entries = [audit.Entry("message.read", actor, self.mbox.mailbox_id, "ok", None,
                               {"front": "imap", "uidvalidity": validity, "count": len(uids),
                                "uids": _uid_set(uids)})
                   for validity, uids in reads.items()]
        try:
            # Through the store's group-committed writer: with many sessions reading, their
            # entries share transactions with each other and with flag changes.
            await self.core.store.writer.run(
                lambda s: audit.append_many_sync(s, entries))
        except Exception:
            for validity, uids in reads.items():
                self._reads.setdefault(validity, []).extend(uids)
            raise


_FLAGS_ITEMS: dict[frozenset[str], bytes] = {}


def _flags_item(flags: frozenset[str]) -> bytes:
    """``FLAGS (…)`` for a flag set, built once per distinct set (a folder has few)."""
    item = _FLAGS_ITEMS.get(flags)
    if item is None:
        item = b"FLAGS " + encode.flag_list(flags)
        if len(_FLAGS_ITEMS) < 4096:
            _FLAGS_ITEMS[flags] = item
    return item


#: The keys :func:`_meta_key` gives.
_META_KEYS = ("ENVELOPE", "BODYSTRUCTURE", "BODY")


def _raw_keys(cmd: p.Fetch) -> tuple[str, ...] | None:
    """The cacheable items (:func:`_meta_key`) among ``cmd``'s items that need the message;
    None when one of them is not cacheable (the message is always needed)."""
    keys: list[str] = []
    for a in cmd.attrs:
        if a.name in _CONTENT_ITEMS or a.name == "BODY":
            key = _meta_key(a)
            if key is None:
                return None
            keys.append(key)
    return tuple(keys)


def _meta_key(a: p.FetchAttr) -> str | None:
    """Items computed from the message that are small and never change (cacheable)."""
    if a.name in ("ENVELOPE", "BODYSTRUCTURE"):
        return a.name
    if a.name == "BODY" and a.section is None:
        return "BODY"
    return None


def _content_item(a: p.FetchAttr, tree: MimePart, raw: bytes) -> bytes:
    name = a.name
    if name == "ENVELOPE":
        return b"ENVELOPE " + envelope(tree)
    if name == "BODYSTRUCTURE":
        return b"BODYSTRUCTURE " + bodystructure(tree, extended=True)
    if name == "BODY" and a.section is None:
        return b"BODY " + bodystructure(tree, extended=False)
    if name == "RFC822.HEADER":
        return b"RFC822.HEADER " + encode.literal(tree.header)
    if name == "RFC822.TEXT":
        return b"RFC822.TEXT " + encode.literal(tree.body)
    section = a.section or p.Section()
    if name in ("BINARY", "BINARY.SIZE"):
        data = _binary(tree, section)
        label = f"{name}[{section.spec()}]".encode()
        if name == "BINARY.SIZE":
            return label + b" %d" % (len(data) if data is not None else 0)
        if data is None:
            return label + b" NIL"
        if a.partial:
            label += b"<%d>" % a.partial[0]
        return label + b" " + (b"~" + encode.literal(partial(data, a.partial))
                               if b"\0" in data else encode.literal(partial(data, a.partial)))
    data = section_bytes(tree, raw, section)
    label = f"BODY[{section.spec()}]".encode()
    if a.partial:
        label += b"<%d>" % a.partial[0]
    if data is None:
        return label + b" NIL"
    return label + b" " + encode.literal(partial(data, a.partial))


def _binary(tree: MimePart, section: p.Section) -> bytes | None:
    """RFC 3516 BINARY: the part's content with its transfer encoding removed."""
    import quopri

    data = section_bytes(tree, tree.raw, section)
    if data is None:
        return None
    from missive.imap.fetch import locate

    part = locate(tree, section.parts) if section.parts else tree
    cte = "7bit" if part is None else \
        str(part.fields.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    try:
        if cte == "base64":
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", data) + b"==")
        if cte == "quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return data
    return data


def _uses_modseq(key: p.SearchKey) -> bool:
    return key.op == "MODSEQ" or any(isinstance(a, p.SearchKey) and _uses_modseq(a)
                                     for a in key.args)


def _hides_expunge(cmd: p.Command) -> bool:
    """RFC 3501 §7.4.1: no EXPUNGE responses during FETCH, STORE, SEARCH (non-UID)."""
    return cmd.name in ("FETCH", "STORE", "SEARCH") and not getattr(cmd, "uid", False)


def _clean_flags(flags: Sequence[str]) -> list[str]:
    out = []
    for f in flags:
        if f.startswith("\\"):
            canon = next((s for s in SYSTEM_FLAGS if s.lower() == f.lower()), None)
            if canon is None:
                raise Refusal(f"unknown system flag {f[:20]}", status="BAD")
            out.append(canon)
        else:
            out.append(f)
    return out


def _uid_set(nums: list[int]) -> str:
    """Compact ascending numbers into a sequence set (``1:3,7``)."""
    nums = sorted(nums)
    out: list[str] = []
    start = prev = nums[0]
    for n in nums[1:]:
        if n == prev + 1:
            prev = n
            continue
        out.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = n
    out.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(out)


def _pattern(pattern: str) -> re.Pattern[str]:
    rx = "".join(".*" if ch == "*" else "[^/]*" if ch == "%" else re.escape(ch)
                 for ch in pattern)
    return re.compile(rx, re.DOTALL)


def _inbox_match(rx: re.Pattern[str], name: str) -> bool:
    # INBOX is case-insensitive (RFC 3501 §5.1): "inbox" and "Inbox/x" patterns find it.
    pattern = rx.pattern
    if pattern[:5].upper() == "INBOX":
        return re.fullmatch("INBOX" + pattern[5:], name, re.DOTALL) is not None
    return False

