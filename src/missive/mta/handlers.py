"""What the submission and MX fronts share: the front context, EHLO, errors, DATA, delivery.

aiosmtpd's state machine (``SMTP.smtp_<VERB>``) calls the handler hooks ``handle_<VERB>``.
:class:`BaseHandler` implements the hooks both roles share; :mod:`.handlers_submission` and
:mod:`.handlers_mx` add MAIL and RCPT, and what each checks after DATA.

Implementation notes:

- A hook that returns a reply replaces aiosmtpd's default action, so ``handle_MAIL`` and
  ``handle_RCPT`` record the sender and recipients on the envelope themselves on success.
- Every refusal (a :class:`PolicyRefusal`, or a framing/limit reply) is written to the audit log
  with its rule and cause, never with content (:meth:`BaseHandler.audit_refusal`).
- P11: ``250`` after DATA is sent only once :meth:`Delivery.commit` returned; any exception
  there is logged and answered ``451 4.3.0`` (the client keeps the message and retries).
- Nothing here logs message content, subjects or AUTH data. Addresses appear only in audit
  entries about refusals (rule, listener, stage) and in debug logs.
"""

from __future__ import annotations

import asyncio
import email.header
import email.policy
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import TYPE_CHECKING, Literal

from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509

from missive.audit import log as audit
from missive.certs.tls import ServerTLS
from missive.config import Settings
from missive.directory.recipients import RecipientInfo, recipient_facts, resolve_recipient
from missive.errors import PolicyRefusal
from missive.mime.analysis import analyze_parsed
from missive.mime.parts import PartInfo
from missive.mime.summary import MessageSummary
from missive.mta import codes, dsn
from missive.mta.framing import BareLineEnding, has_bare_line_ending
from missive.mta.limits import Limits
from missive.mta.received import received_header
from missive.mta.session import RecipientPlan, SmtpEnvelope, SmtpSession
from missive.policy import Port, RecipientFacts, SenderKind, check_size

if TYPE_CHECKING:
    from missive.runtime import Core

log = logging.getLogger(__name__)
RecipientPlanKind = Literal["professional", "patient"]


@dataclass
class FrontContext:
    """What every listener of one SMTP front shares."""

    core: Core
    limits: Limits
    tls: dict[str, ServerTLS] = field(default_factory=dict)
    #: CRLs we hold (our CA's and ``certs.crl_files``), refreshed with the trust space.
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    #: Directory lookups under way, by cache key (see :func:`cached_lookup`).
    inflight: dict[str, asyncio.Task[object]] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.core.settings


async def cached_lookup(ctx: FrontContext, key: str,
                        load: Callable[[], Awaitable[object]]) -> object:
    """A directory answer from the front's TTL cache, else from ``load()``, then cached.

    When the cache is on (``mta.directory_cache_seconds`` > 0), concurrent misses for one key
    share a single lookup (ten sessions writing to the same patient when its entry expires
    ask the directory once, not ten times). The lookup runs as its own task, so a caller that
    goes away does not cancel it for the others; its error reaches every caller.
    """
    cache = ctx.limits.directory
    found = cache.get(key)
    if found is not None:
        return found
    if cache.ttl <= 0:
        return await load()
    task = ctx.inflight.get(key)
    if task is None:
        async def run() -> object:
            value = await load()
            cache.put(key, value)
            return value

        task = asyncio.ensure_future(run())
        ctx.inflight[key] = task
        task.add_done_callback(lambda _: ctx.inflight.pop(key, None))
    return await asyncio.shield(task)


@dataclass(frozen=True)
class HeaderView:
    """The header fields the fronts decide on (decoded, RFC 2047)."""

    from_values: list[str]
    sender_values: list[str]


def header_view(msg: Message) -> HeaderView:
    """``From:`` and ``Sender:`` values with RFC 2047 words decoded; never raises.

    Read from the message's one parse (:func:`missive.mime.analysis.analyze_parsed`), as the
    ``compat32`` policy gives them: every policy stores a field's raw value the same way
    (``header_source_parse``: the first line's value left-stripped, continuation lines kept,
    the line end removed), and ``compat32``'s ``header_fetch_parse`` of that raw value is what
    a separate ``compat32`` parse of the header block returned. Only these two fields are
    decoded (the policy checks display names for spoofing, so they must be read as a mail
    client shows them). ``tests/unit/mta/test_header_view.py`` compares the result with that
    second parse on generated messages.
    """
    try:
        froms: list[str] = []
        senders: list[str] = []
        for name, value in msg.raw_items():
            key = name.lower()
            if key == "from":
                froms.append(_decoded(_COMPAT32.header_fetch_parse(name, value)))
            elif key == "sender":
                senders.append(_decoded(_COMPAT32.header_fetch_parse(name, value)))
        return HeaderView(froms, senders)
    except Exception:  # noqa: BLE001 - a broken header is refused by P2, not a crash
        return HeaderView([], [])


_COMPAT32 = email.policy.compat32


def _decoded(value: object) -> str:
    text = str(value)
    if "=?" not in text:
        return " ".join(text.split())
    return " ".join(str(email.header.make_header(email.header.decode_header(text))).split())


def smtp_session(session: Session | None) -> SmtpSession:
    assert isinstance(session, SmtpSession)  # noqa: S101 - our protocol creates them
    return session


def smtp_envelope(envelope: Envelope | None) -> SmtpEnvelope:
    assert isinstance(envelope, SmtpEnvelope)  # noqa: S101 - our protocol creates them
    return envelope


class BaseHandler:
    """Hooks common to the submission and MX listeners."""

    #: ``source`` of the deliveries (the store's audit entries) and name in logs.
    source = "smtp"

    def __init__(self, ctx: FrontContext) -> None:
        self.ctx = ctx
        self._background: set[asyncio.Task[None]] = set()

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    def background_tasks(self) -> list[asyncio.Task[None]]:
        """Success DSNs still being written (awaited by :meth:`SmtpFront.stop`)."""
        return list(self._background)

    # --- EHLO ------------------------------------------------------------------------------

    def extensions(self, session: SmtpSession) -> list[str]:
        """Extra EHLO keywords (besides SIZE, 8BITMIME, SMTPUTF8, STARTTLS from aiosmtpd)."""
        return ["PIPELINING", "ENHANCEDSTATUSCODES", "DSN"]

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        s = smtp_session(session)
        s.host_name = hostname
        first, *rest = responses
        kept = [r for r in rest if not r[4:].upper().startswith(("AUTH", "HELP"))]
        lines = [first, *kept, *(f"250-{e}" for e in self.extensions(s))]
        last = lines.pop()
        return [*lines, "250 " + last[4:]]

    # --- errors ----------------------------------------------------------------------------

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, BareLineEnding):
            return codes.BARE_LINE_ENDING_COMMAND
        if isinstance(error, ValueError) and "limit" in str(error).lower():
            # asyncio's readline() over the line limit, during an AUTH exchange.
            return codes.AUTH_LINE_TOO_LONG
        log.error("smtp: unexpected error in the session", exc_info=error)
        return codes.LOCAL_ERROR

    async def audit_refusal(self, session: SmtpSession, stage: str, reply: str, *,
                            rule: str, cause: str, actor: str | None = None) -> None:
        """Append one audit entry for a refusal: rule and cause, never content."""
        who = actor
        if who is None and session.principal is not None:
            who = session.principal.login
        try:
            async with self.ctx.core.db.write() as s:
                await audit.append(
                    s, "smtp.refuse", actor=who, outcome="refused",
                    reason=f"{rule}: {cause}"[:500],
                    details={"listener": session.listener, "stage": stage,
                             "reply": reply[:3], "client": session.client_ip,
                             "session": session.id},
                )
        except Exception:
            log.exception("smtp: could not audit a refusal (%s %s)", rule, stage)

    async def refuse(self, session: SmtpSession, stage: str, err: PolicyRefusal) -> str:
        reply = codes.refusal(err)
        await self.audit_refusal(session, stage, reply, rule=err.rule, cause=err.cause)
        return reply

    async def refuse_reply(self, session: SmtpSession, stage: str, reply: str, rule: str,
                           cause: str) -> str:
        await self.audit_refusal(session, stage, reply, rule=rule, cause=cause)
        return reply

    # --- DATA -------------------------------------------------------------------------------

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        s = smtp_session(session)
        env = smtp_envelope(envelope)
        raw = env.original_content or b""
        if has_bare_line_ending(raw):
            return await self.refuse_reply(s, "data", codes.BARE_LINE_ENDING_DATA, "P12",
                                           "bare CR or LF in the message data")
        try:
            check_size(len(raw), self.settings.mta.max_message_size)
            # One parse for the summary (sealed with the message, P6) and the parts (P9).
            msg, summary, parts = analyze_parsed(raw)
            await self.check_message(s, env, raw, summary, parts, msg)
        except PolicyRefusal as err:
            return await self.refuse(s, "data", err)
        return await self.deliver(s, env, raw, summary)

    async def check_message(self, session: SmtpSession, envelope: SmtpEnvelope, raw: bytes,
                            summary: MessageSummary, parts: list[PartInfo],
                            msg: Message) -> None:
        """Role-specific checks after DATA; raise :class:`PolicyRefusal` to refuse.

        ``msg``, ``summary`` and ``parts`` are :func:`missive.mime.analysis.analyze_parsed` of
        ``raw`` (read other header fields from ``msg``, e.g. :func:`header_view`)."""

    def close_conversation(self, session: SmtpSession, summary: MessageSummary) -> bool:
        return False

    def delivery_actor(self, session: SmtpSession) -> str | None:
        return session.principal.login if session.principal is not None else None

    async def deliver(self, session: SmtpSession, envelope: SmtpEnvelope, raw: bytes,
                      summary: MessageSummary) -> str:
        """Prepend ``Received:``, commit the delivery transaction, then (only then) 250."""
        queue_id = secrets.token_hex(8)
        rcpts = [p.address for p in envelope.plans]
        trace = received_header(
            helo=session.host_name or "unknown", client_ip=session.client_ip,
            hostname=self.settings.mta.hostname, queue_id=queue_id, tls=session.tls,
            esmtp=bool(session.extended_smtp), authenticated=session.principal is not None,
            utf8=bool(envelope.smtp_utf8), recipients=rcpts,
        )
        sender = envelope.mail_from or ""
        delivery = self.ctx.core.store.delivery(
            sender="" if sender == "<>" else sender, source=self.source,
            actor=self.delivery_actor(session))
        delivery.ret = envelope.dsn.ret
        delivery.envid = envelope.dsn.envid
        delivery.close_conversation = self.close_conversation(session, summary)
        for plan in envelope.plans:
            if plan.kind == "remote":
                delivery.add_remote(plan.address, notify=plan.dsn.notify, orcpt=plan.dsn.orcpt)
            elif plan.mailbox_id is not None:
                delivery.add_local(plan.mailbox_id)
        try:
            await delivery.commit(trace + raw, summary=summary)
        except Exception:
            log.exception("smtp: delivery failed, answered 451",
                          extra={"session": session.id, "queue_id": queue_id})
            return codes.LOCAL_ERROR
        log.info("smtp: message accepted", extra={
            "session": session.id, "queue_id": queue_id, "listener": session.listener,
            "size": len(raw), "recipients": len(rcpts)})
        delivered = [p for p in envelope.plans
                     if p.kind != "remote" and "SUCCESS" in p.dsn.notify]
        if delivered and sender not in ("", "<>"):
            task = asyncio.create_task(self._success_dsn(
                sender, delivered, trace + raw, envelope.dsn.ret, envelope.dsn.envid))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return codes.accepted(queue_id)

    async def _success_dsn(self, sender: str, delivered: list[RecipientPlan], raw: bytes,
                           ret: str | None, envid: str | None) -> None:
        """RFC 3461 §5.2.2: a "delivered" DSN for recipients that asked NOTIFY=SUCCESS.

        Sent after the 250 (the message itself is already durable), to the sender's local
        mailbox or, for a sender of another trust-space operator, through the relay queue
        (null reverse path, so it can never cause another report). Best effort: a failure is
        logged; the original delivery is not affected.
        """
        settings = self.settings
        try:
            now = datetime.now(UTC)
            reports = [dsn.RecipientReport(address=p.address, action="delivered",
                                           status="2.0.0", orcpt=p.dsn.orcpt,
                                           last_attempt=now) for p in delivered]
            report = dsn.build_dsn(reports, original=raw, to=sender,
                                   reporting_mta=settings.mta.hostname,
                                   postmaster=f"mailer-daemon@{settings.domain}", now=now,
                                   ret=ret, envid=envid, arrival=now)
            async with self.ctx.core.db.read() as s:
                info = await resolve_recipient(s, sender, settings)
            delivery = self.ctx.core.store.delivery(sender="", source="dsn", actor="smtp")
            if info.local and info.mailbox_id is not None:
                delivery.add_local(info.mailbox_id)
            elif info.kind == "remote":
                delivery.add_remote(info.address, notify=["NEVER"])
            else:
                return
            await delivery.commit(report)
        except Exception:
            log.exception("smtp: could not send a success DSN")


def rcpt_limit_reached(envelope: SmtpEnvelope, limit: int) -> bool:
    return limit > 0 and len(envelope.rcpt_tos) >= limit


def accept_recipient(envelope: SmtpEnvelope, address: str, options: Sequence[str]) -> None:
    envelope.rcpt_tos.append(address)
    envelope.rcpt_options.extend(options)


async def lookup_recipient(ctx: FrontContext, address: str, *, port: Port,
                           sender_kind: SenderKind) -> tuple[RecipientInfo, RecipientFacts]:
    """Directory facts about one RCPT address, in the shape :func:`check_recipient` takes.

    Answers are reused for ``mta.directory_cache_seconds`` (see :func:`cached_lookup`).
    """
    async def load() -> object:
        async with ctx.core.db.read() as s:
            return await resolve_recipient(s, address, ctx.settings)

    info = await cached_lookup(ctx, "rcpt\x00" + address.lower(), load)
    assert isinstance(info, RecipientInfo)  # noqa: S101 - only RecipientInfo under rcpt keys
    return info, recipient_facts(info, port=port, sender_kind=sender_kind)


def plan_for(info: RecipientInfo, address: str, held: bool) -> RecipientPlan:
    """The delivery plan of an accepted recipient."""
    if info.kind == "remote":
        return RecipientPlan(address=address, kind="remote", mailbox_id=None)
    kind: RecipientPlanKind = "patient" if info.kind == "patient" else "professional"
    return RecipientPlan(address=address, kind=kind, mailbox_id=info.mailbox_id,
                         professional_id=info.professional_id, patient_id=info.patient_id,
                         held=held)
