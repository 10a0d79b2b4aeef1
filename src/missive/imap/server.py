"""IMAP listeners (SPEC §4): port 5143 with STARTTLS (RFC 3501 §6.2.1, RFC 8314 §3.3) and 5993 with
implicit TLS (RFC 8314 §3.2), one :class:`~missive.imap.session.Session` per connection.

Why our own server: pymap, the one Python IMAP server framework, was evaluated and is
unmaintained since 2024; it crashes on ordinary requests (FETCH ENVELOPE with several Sender
addresses, BINARY, mailbox names with a stray ``&``), lacks SPECIAL-USE, NAMESPACE, ENABLE and
CONDSTORE, and ran at 0.14× Dovecot's command rate. Its layering is kept: pure command parsers
(:mod:`.parser`), one handler per command (:mod:`.session`), storage behind the store API.

This module owns the octets on the wire: it reads a command line by line, and for each literal
announcement ``{n}`` (answered with a ``+`` continuation) or ``{n+}`` (RFC 7888) reads exactly
``n`` octets. Limits, all from :class:`missive.config.ImapSettings`:

- a literal larger than ``max_literal`` (``max_unauth_literal`` before authentication) is refused
  *before* it is read: ``BAD [TOOBIG]`` for a synchronising literal (the client never sends it);
  a non-synchronising one is read and discarded in bounded chunks, then refused (RFC 7888 §4);
- a line longer than ``max_line`` or a command larger than ``max_command`` (APPEND's message
  excepted) is refused with ``BAD`` and the rest of it discarded;
- connections per client address and sessions per user are capped (``* BYE`` / ``NO [LIMIT]``);
- a session silent for ``idle_timeout`` (``login_timeout`` before login) gets ``* BYE`` (RFC 9051
  §5.4: at least 30 minutes once authenticated);
- a failed authentication is answered after ``auth_failure_delay``.

Malformed input is answered ``BAD`` with a reason; a bug in a command handler is answered
``NO [SERVERBUG]``; neither ends the connection. Commands are never logged with their arguments
(passwords, mailbox names), and message content is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from missive.imap import parser as p
from missive.imap.auth import Authenticator, DirectoryAuthenticator, Principal
from missive.imap.cache import SharedCaches
from missive.imap.session import LOGOUT, Session

if TYPE_CHECKING:
    from cryptography import x509

    from missive.config import ImapSettings
    from missive.runtime import Core

__all__ = ["ImapFront", "ImapServer", "start"]

log = logging.getLogger(__name__)
_DISCARD_CHUNK = 64 * 1024


class _TooBig(Exception):
    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Connection:
    """One client connection: framing, TLS upgrade, limits (see the module docstring)."""

    def __init__(self, server: ImapServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, implicit_tls: bool) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.tls = implicit_tls
        self._out: list[bytes] = []
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else "local"
        self.session = Session(server.core, self, server.authenticator,
                               implicit_tls=implicit_tls, client_address=self.address,
                               on_login=self._on_login, caches=server.caches)
        self._user: str | None = None

    # --- SessionIO ----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self._out.append(data)

    async def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.writer.write(data)
        await self.writer.drain()

    async def read_line(self) -> bytes | None:
        try:
            line = await self._readline(self._timeout())
        except (_TooBig, asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            return None
        return line or None

    async def start_tls(self) -> None:
        ctx = self.server.ssl_context
        if ctx is None:
            raise ConnectionError("no TLS context")
        # RFC 3501 §6.2.1 / RFC 7817 §3: anything the client sent after STARTTLS in clear text
        # must not be taken as if it came over TLS (command injection, CVE-2011-0411 class).
        buffered = getattr(self.reader, "_buffer", None)
        if isinstance(buffered, bytearray) and buffered:
            buffered.clear()
        await self.writer.start_tls(ctx)
        self.tls = True

    def peer_certificate(self) -> x509.Certificate | None:
        from cryptography import x509

        obj = self.writer.get_extra_info("ssl_object")
        if obj is None:
            return None
        checker = self.server.peer_check
        if checker is not None:
            # Revocation after the handshake when the CRL could not be loaded into it.
            from missive.certs.errors import CertificateRevoked

            try:
                return checker(obj)
            except CertificateRevoked:
                log.warning("imap: client certificate refused after the handshake")
                return None
        der = obj.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der) if der else None

    # --- limits -------------------------------------------------------------------------------

    def _timeout(self) -> float:
        s = self.server.settings
        return float(s.idle_timeout if self.session.principal else s.login_timeout)

    async def _on_login(self, principal: Principal | None) -> None:
        if principal is None:
            await asyncio.sleep(self.server.settings.auth_failure_delay)
            return
        key = principal.login.lower()
        if self.server.users[key] >= self.server.settings.max_connections_per_user:
            from missive.imap.session import Refusal

            raise Refusal("too many sessions for this user", "LIMIT")
        self.server.users[key] += 1
        self._user = key

    # --- framing ------------------------------------------------------------------------------

    async def _readline(self, seconds: float) -> bytes:
        # asyncio.timeout, not wait_for: wait_for wraps every read in a new task (~10 µs of
        # CPU per command in Python 3.11, measured), for the same TimeoutError.
        try:
            async with asyncio.timeout(seconds):
                return await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            await self._discard_line()
            raise _TooBig("command line too long") from None

    async def _discard_line(self) -> None:
        while True:
            try:
                await self.reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as exc:
                await self.reader.readexactly(exc.consumed)

    async def read_command(self) -> bytes | None:
        """One whole command with its literals inlined; None at EOF."""
        settings = self.server.settings
        parts: list[bytes] = []
        total = 0
        while True:
            line = await self._readline(self._timeout())
            if not line:
                return None
            if not line.endswith(b"\r\n"):
                line = line[:-1] + b"\r\n" if line.endswith(b"\n") else line + b"\r\n"
            parts.append(line)
            total += len(line)
            m = p.LITERAL_RE.search(line)
            if m is None:
                if total > settings.max_command:
                    raise _TooBig("command too large")
                return b"".join(parts)
            size = int(m.group(1))
            sync = not m.group(2)
            if len(parts) == 1 and p.read_tag(line) is None:
                if not sync:
                    await self._discard(size)
                    await self._discard_rest()
                raise _TooBig("a command starts with a tag, a space and a command name")
            limit = settings.max_literal if self.session.principal else \
                settings.max_unauth_literal
            is_append = b"APPEND" in parts[0][:64].upper()
            if size > limit or (not is_append and total + size > settings.max_command):
                if not sync:
                    await self._discard(size)
                    await self._discard_rest()
                raise _TooBig(f"literal of {size} octets exceeds the {limit}-octet limit",
                              "TOOBIG")
            if sync:
                self.writer.write(b"+ Ready for literal data\r\n")
                await self.writer.drain()
            parts.append(await asyncio.wait_for(self.reader.readexactly(size), self._timeout()))
            total += size if not is_append else 0

    async def _discard(self, size: int) -> None:
        while size > 0:
            chunk = await self.reader.read(min(size, _DISCARD_CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", size)
            size -= len(chunk)

    async def _discard_rest(self) -> None:
        """After a refused non-synchronising literal: skip the rest of the command."""
        while True:
            line = await self._readline(self._timeout())
            m = p.LITERAL_RE.search(line)
            if not line or m is None:
                return
            if not m.group(2):
                return  # a synchronising literal: the client waits for "+", never sends it
            await self._discard(int(m.group(1)))

    async def run(self) -> None:
        self.send(self.session.greeting())
        await self.flush()
        while self.session.state != LOGOUT:
            try:
                raw = await self.read_command()
            except _TooBig as exc:
                code = f"[{exc.code}] " if exc.code else ""
                self.send(f"* BAD {code}{exc.reason}\r\n".encode())
                await self.flush()
                continue
            except TimeoutError:
                self.send(b"* BYE Autologout; idle for too long\r\n")
                await self.flush()
                return
            if raw is None:
                return
            try:
                cmd = p.parse_command(raw)
            except p.ParseError as exc:
                tag = exc.tag or "*"
                self.send(f"{tag} BAD {exc.reason}\r\n".encode("utf-8", "replace"))
                await self.flush()
                continue
            await self.session.handle(cmd)

    async def close(self) -> None:
        if self._user is not None:
            self.server.users[self._user] -= 1
            if self.server.users[self._user] <= 0:
                del self.server.users[self._user]
            self._user = None
        with contextlib.suppress(Exception):
            await self.session.close()
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass
class ImapServer:
    """The listeners and their shared limits."""

    core: Core
    authenticator: Authenticator
    ssl_context: ssl.SSLContext | None
    settings: ImapSettings
    peer_check: Callable[[Any], x509.Certificate | None] | None = None
    servers: list[asyncio.Server] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    users: Counter[str] = field(default_factory=Counter)
    addresses: Counter[str] = field(default_factory=Counter)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    connections: set[Connection] = field(default_factory=set)
    caches: SharedCaches = field(default_factory=SharedCaches)

    def _handler(self, implicit_tls: bool) -> Callable[
            [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.tasks.add(task)
            conn = Connection(self, reader, writer, implicit_tls=implicit_tls)
            self.connections.add(conn)
            over = self.addresses[conn.address] >= self.settings.max_connections_per_ip
            self.addresses[conn.address] += 1
            try:
                if over:
                    writer.write(b"* BYE too many connections from your address\r\n")
                    await writer.drain()
                    return
                await conn.run()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
                pass
            except asyncio.CancelledError:
                pass  # only stop() cancels, after closing the transport
            except Exception:  # never let one connection take the server down
                log.exception("imap: connection failed")
            finally:
                self.addresses[conn.address] -= 1
                if self.addresses[conn.address] <= 0:
                    del self.addresses[conn.address]
                await conn.close()
                self.connections.discard(conn)
                if task is not None:
                    self.tasks.discard(task)
        return handle

    async def start(self) -> None:
        s = self.settings
        limit = s.max_line
        plain = await asyncio.start_server(self._handler(False), s.bind, s.port, limit=limit)
        self.servers.append(plain)
        self.ports["imap"] = plain.sockets[0].getsockname()[1]
        if self.ssl_context is not None:
            tls = await asyncio.start_server(self._handler(True), s.bind, s.tls_port,
                                             ssl=self.ssl_context, limit=limit)
            self.servers.append(tls)
            self.ports["imaps"] = tls.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for srv in self.servers:
            srv.close()
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                conn.writer.write(b"* BYE server shutting down\r\n")
                conn.writer.transport.abort()
        if self.tasks:
            _done, pending = await asyncio.wait(list(self.tasks), timeout=5)
            for task in pending:
                task.cancel()
        for srv in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 5)
        self.servers.clear()


class ImapFront:
    """What :func:`missive.runtime.serve` keeps: the ports and a way to stop."""

    def __init__(self, server: ImapServer) -> None:
        self.server = server
        self.ports = server.ports

    async def stop(self) -> None:
        await self.server.stop()


async def start(core: Core, *, authenticator: Authenticator | None = None,
                ssl_context: ssl.SSLContext | None = None) -> ImapFront:
    """Start both listeners (registered in :data:`missive.runtime.FRONTS`)."""
    peer_check = None
    if ssl_context is None:
        from missive.certs.tls import server_tls

        tls = server_tls(core.settings, client_auth="optional")
        ssl_context, peer_check = tls.context, tls.check_peer
    server = ImapServer(core, authenticator or DirectoryAuthenticator(core), ssl_context,
                        core.settings.imap, peer_check=peer_check)
    await server.start()
    return ImapFront(server)
