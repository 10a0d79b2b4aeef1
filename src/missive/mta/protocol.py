"""aiosmtpd's ``SMTP`` protocol with the few changes Missive needs; its state machine stays.

What :class:`MissiveSMTP` changes, and why:

- **Framing (P12)**: the per-connection reader refuses command lines that do not end with CRLF
  (:mod:`.framing`); data with bare CR/LF is refused by the handler after the end of data.
- **DATA read in blocks**: ``smtp_DATA`` is aiosmtpd's, but reads the data with
  :class:`~.framing.DataParser` (end marker found with ``bytes.find``, one ``split`` per block
  for the line-length check, dot-unstuffing with ``bytes.replace``) instead of one
  ``readuntil`` per line; same replies, limits and content (fuzzed against aiosmtpd's loop).
- **Replies**: every reply gets an RFC 3463 enhanced status code (:func:`codes.enhance`), and
  5xx syntax/sequence errors are counted: at ``mta.max_errors`` the session is closed with
  ``421 4.7.0``.
- **DSN (RFC 3461)**: ``RET``/``ENVID`` on MAIL and ``NOTIFY``/``ORCPT`` on RCPT are taken out
  of the command line before aiosmtpd parses it (:mod:`.params`), and handed to the handler
  through the session.
- **Limits (P10)**: connections per client address and in total (``421``), the command timeout
  (aiosmtpd's idle timer, RFC 5321 §4.5.3.2.7) and a separate, longer timer for the whole
  DATA phase (§4.5.3.2.6); a timeout is answered ``421 4.4.2`` before closing.
- **TLS facts**: after the handshake (implicit TLS or STARTTLS) the session records version,
  cipher and the verified client certificate, which is checked against the CRLs we hold when
  OpenSSL could not check it during the handshake (:meth:`ServerTLS.check_peer`).
- **Paths**: ``_getaddr`` (the MAIL/RCPT path parser) takes the common ``<local@domain>``
  shape with a regular expression (:func:`simple_path`), giving what aiosmtpd's
  ``email._header_value_parser`` walk gives for it; anything else goes to aiosmtpd's.
- **Pipelined replies (RFC 2920 §3.2)**: a reply to MAIL or RCPT is held, not written, while
  the client's next command is already buffered (the next read will not wait for the
  client), and goes out with the next reply in one write: ``MAIL``/``RCPT``/``DATA`` sent in
  one group are answered ``250``/``250``/``354`` in one TLS record and one send, not three.
  Any other reply, and any reply when no further line is buffered, flushes what is held
  first, so the server never waits for input with replies unsent (RFC 2920 §3.2: "the
  server … MUST flush its output buffer before blocking on input").
- **Idle timer**: moved lazily (:meth:`MissiveSMTP._reset_timeout`): same deadlines, one
  timer scheduled per message instead of five.
- ``command_size_limits`` is made per connection (aiosmtpd keeps it on the class, so every
  EHLO anywhere grew the shared MAIL limit); MAIL gets room for SIZE, BODY, SMTPUTF8, RET and
  ENVID, RCPT for NOTIFY and ORCPT (RFC 3461 §4: ORCPT may be 500 octets).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP

from missive.certs.errors import CertificateRevoked
from missive.certs.tls import ServerTLS
from missive.mta import codes
from missive.mta.framing import DataParser, DataState, StrictStreamReader, make_strict
from missive.mta.handlers import BaseHandler
from missive.mta.params import (
    MAIL_DSN,
    RCPT_DSN,
    MailDsn,
    ParamError,
    RcptDsn,
    parse_mail_dsn,
    parse_rcpt_dsn,
    split_dsn,
)
from missive.mta.session import SmtpEnvelope, SmtpSession, TlsInfo

log = logging.getLogger(__name__)

_COMMAND_LIMIT = 512  # RFC 5321 §4.5.3.1.4
_MAIL_LIMIT = _COMMAND_LIMIT + 26 + 16 + 10 + 10 + 106  # SIZE, BODY, SMTPUTF8, RET, ENVID
_RCPT_LIMIT = _COMMAND_LIMIT + 30 + 506  # NOTIFY, ORCPT
_COUNTED_ERRORS = frozenset({500, 501, 502, 503, 504, 555})
_AUDITED = {
    codes.BARE_LINE_ENDING_COMMAND: ("P12", "bare CR or LF in a command line"),
    codes.DATA_LINE_TOO_LONG: ("P12", "line over 1000 octets in the data"),
    codes.COMMAND_TOO_LONG: ("P12", "command line over 512 octets"),
    codes.MESSAGE_TOO_BIG: ("P8", "message over the size limit"),
    # Refused by aiosmtpd's own checks (require_starttls, auth_required) before any hook.
    "530 5.7.0 Must issue a STARTTLS command first": ("P1", "command before STARTTLS"),
    "530 5.7.0 Authentication required": ("P1", "command before AUTH"),
    codes.AUTH_ENCRYPTION_REQUIRED: ("P1", "AUTH before TLS"),
}


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 §3.2.3 atext, ASCII only
#: ``<dot-atom@ldh-labels>`` then the blanks before the parameters (RFC 5321 §4.1.2 Path).
_SIMPLE_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*")


def simple_path(arg: str) -> tuple[str, str] | None:
    """``(address, rest)`` of a path of the common shape ``<dot-atom@domain>``, else None.

    For such a path, this is what aiosmtpd's ``_getaddr`` returns (it runs the RFC 5322
    header parser, ``get_angle_addr``, and builds a class on every call: a sizeable share of
    each MAIL and RCPT); quoted local parts, comments, source routes, address literals and
    non-ASCII addresses are left to it.
    """
    found = _SIMPLE_PATH.match(arg)
    if found is None or arg.startswith("(", found.end()):
        return None
    return found.group(1), arg[found.end():]


class MissiveSMTP(SMTP):
    """One SMTP connection on a Missive listener."""

    def __init__(self, handler: BaseHandler, *, listener: str, server_tls: ServerTLS | None,
                 data_timeout: float, max_errors: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.command_size_limits = collections.defaultdict(
            lambda: _COMMAND_LIMIT, {"MAIL": _MAIL_LIMIT, "RCPT": _RCPT_LIMIT})
        self.missive_handler = handler
        self.listener = listener
        self.server_tls = server_tls
        self.data_timeout = data_timeout
        self.max_errors = max_errors
        self._counted_address: str | None = None
        #: Replies held while the client's next pipelined command is buffered (see above).
        self._held: list[bytes] = []
        self._pipelined = False
        self._deadline = 0.0

    # --- state objects ------------------------------------------------------------------------

    def _create_session(self) -> SmtpSession:
        session = SmtpSession(self.loop)
        session.listener = self.listener
        return session

    def _create_envelope(self) -> SmtpEnvelope:
        return SmtpEnvelope()

    def smtp_session(self) -> SmtpSession:
        # A method, not a property: aiosmtpd runs inspect.getmembers() on the protocol.
        assert isinstance(self.session, SmtpSession)  # noqa: S101
        return self.session

    # --- connection ---------------------------------------------------------------------------

    def _cb_client_connected(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        make_strict(reader)
        super()._cb_client_connected(reader, writer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        session = self.smtp_session()
        ssl_object = transport.get_extra_info("ssl_object")
        session.tls = TlsInfo.of(ssl_object)
        if ssl_object is not None and self.server_tls is not None:
            try:
                self.server_tls.check_peer(ssl_object)
            except CertificateRevoked:
                session.revoked = True
                log.warning("smtp: revoked client certificate presented",
                            extra={"session": session.id, "listener": self.listener})

    async def _handle_client(self) -> None:
        session = self.smtp_session()
        limits = self.missive_handler.ctx.limits
        refused = limits.connections.open(session.client_ip)
        if refused is not None:
            reply = codes.TOO_MANY_CONNECTIONS if refused == "address" else codes.SERVER_BUSY
            await self.missive_handler.audit_refusal(
                session, "connect", reply, rule="P10", cause=f"connection limit ({refused})")
            self._writer.write(reply.encode("ascii") + b"\r\n")
            if self.transport is not None:
                self.transport.close()
            return
        self._counted_address = session.client_ip
        await super()._handle_client()

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted_address is not None:
            self.missive_handler.ctx.limits.connections.close(self._counted_address)
            self._counted_address = None
        super().connection_lost(error)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer, moved lazily: the new deadline is recorded and the armed
        timer kept when it fires no later (it then re-arms itself for what is left, see
        :meth:`_timer_due`); a timer is replaced only when the deadline comes earlier. aiosmtpd
        cancels and schedules a timer at every command line and around DATA (five per
        pipelined message), and cancelled timers stay in the loop's heap until purged; the
        deadlines, and so the timeouts, are the same."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled() and handle.when() <= deadline:
            return
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(deadline, self._timer_due)

    def _timer_due(self) -> None:
        if self.loop.time() < self._deadline:  # moved on since this timer was armed
            self._timeout_handle = self.loop.call_at(self._deadline, self._timer_due)
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(b"".join(self._held) + codes.TIMEOUT.encode("ascii") + b"\r\n")
        self._held.clear()
        super()._timeout_cb()

    # --- replies ------------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if not (self._in_ehlo and text.startswith("250")):
            text = codes.enhance(text)
        await self._reply(text, hold=self._pipelined)
        session = self.smtp_session()
        audited = _AUDITED.get(text)
        if audited is not None:
            await self.missive_handler.audit_refusal(session, "framing", text,
                                                     rule=audited[0], cause=audited[1])
        if codes.reply_code(text) in _COUNTED_ERRORS:
            session.errors += 1
            if session.errors >= self.max_errors and self.transport is not None:
                await self._reply(codes.TOO_MANY_ERRORS)
                self.transport.close()

    async def _reply(self, text: str, *, hold: bool = False) -> None:
        """aiosmtpd's ``SMTP.push`` (same bytes), with the replies to pipelined MAIL/RCPT
        held while the next command is buffered (module docstring)."""
        response = text.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") + b"\r\n"
        reader = self._reader
        if hold and isinstance(reader, StrictStreamReader) and reader.has_line():
            self._held.append(response)
            return
        if self._held:
            response = b"".join(self._held) + response
            self._held.clear()
        self._writer.write(response)
        await self._writer.drain()

    _in_ehlo = False

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_ehlo = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False
            # aiosmtpd adds room for SIZE and SMTPUTF8 at every EHLO; ours is already there.
            self.command_size_limits["MAIL"] = _MAIL_LIMIT

    # --- paths --------------------------------------------------------------------------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        simple = simple_path(arg) if arg else None
        if simple is None:
            return super()._getaddr(arg)
        address, rest = simple
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    # --- DSN parameters -----------------------------------------------------------------------

    async def smtp_MAIL(self, arg: str | None) -> None:
        session = self.smtp_session()
        try:
            rest, found = split_dsn(arg, MAIL_DSN)
            session.pending_mail_dsn = parse_mail_dsn(found) if found else MailDsn()
        except ParamError as err:
            await self.push(err.reply)
            return
        self._pipelined = True
        try:
            await super().smtp_MAIL(rest)
        finally:
            self._pipelined = False

    async def smtp_RCPT(self, arg: str | None) -> None:
        session = self.smtp_session()
        try:
            rest, found = split_dsn(arg, RCPT_DSN)
            session.pending_rcpt_dsn = parse_rcpt_dsn(found) if found else RcptDsn()
        except ParamError as err:
            await self.push(err.reply)
            return
        self._pipelined = True
        try:
            await super().smtp_RCPT(rest)
        finally:
            self._pipelined = False

    # --- DATA ---------------------------------------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        self._reset_timeout(self.data_timeout)
        try:
            await self._data(arg)
        finally:
            if self.transport is not None:
                self._reset_timeout()

    async def _data(self, arg: str) -> None:
        """aiosmtpd 1.4's ``SMTP.smtp_DATA``, step for step, except that the data is read in
        blocks by :class:`~.framing.DataParser` instead of one ``readuntil`` per line (the
        line loop was the front's largest cost after TLS; see :mod:`.framing`). Checks,
        replies, limits, the ``original_content``/``content`` given to the hook and the
        state after DATA are aiosmtpd's."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None  # noqa: S101 - set by aiosmtpd
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        parser = DataParser(self.data_size_limit, self.line_length_limit)
        reader = self._reader
        assert isinstance(reader, StrictStreamReader)  # noqa: S101 - made so at connection
        try:
            await reader.read_data(parser)
        except asyncio.CancelledError:
            # The connection was lost during DATA (aiosmtpd: eof_received cancels us).
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        if parser.state is DataState.TOO_LONG:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()
            return
        if parser.state is DataState.TOO_MUCH:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        original_content = parser.content()
        content: str | bytes = original_content
        if self._decode_data:
            if self.enable_SMTPUTF8:
                content = original_content.decode("utf-8", errors="surrogateescape")
            else:
                try:
                    content = original_content.decode("ascii", errors="strict")
                except UnicodeDecodeError:
                    await self.push("500 Error: strict ASCII mode")
                    return
        self.envelope.content = content
        self.envelope.original_content = original_content
        status: object = MISSING
        if "DATA" in self._handle_hooks:
            status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else str(status))
