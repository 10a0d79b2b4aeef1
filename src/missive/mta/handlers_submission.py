"""Submission listeners (STARTTLS and implicit TLS): authenticated professionals send (P1–P10).

Order of the checks, each refusal audited with its rule:

- connection: TLS first (P1; aiosmtpd's ``require_starttls`` answers ``530 5.7.0``); AUTH is
  offered only over TLS (:mod:`.auth`), MAIL before AUTH ``530 5.7.0`` (aiosmtpd's
  ``auth_required``, checked again here);
- MAIL: the account is still active (P3), it owns the envelope sender (P2), sender and client
  address rate limits (P10), SIZE (P8, in aiosmtpd);
- RCPT: at most ``max_recipients``; local mailbox, trust-space domain or refused (P4); patient
  addresses checked (P5); a patient sender never writes to a patient (P6);
- DATA: framing (P12), size (P8), ``From:``/``Sender:`` owned, no spoofing display names
  (P2), attachment types (P9), a patient's message replies to a professional who wrote to them
  or to their care team, not into a closed conversation (P6); then the delivery transaction,
  ``250`` only after its commit (P11). A professional's ``[FIN]`` subject or ``X-MSS-MES: FIN``
  closes the conversation in the same transaction.
"""

from __future__ import annotations

import logging
from email.message import Message

from aiosmtpd.smtp import SMTP, Envelope, Session

from missive.directory.patients import find_patient
from missive.directory.professionals import find_professional
from missive.directory.recipients import RecipientInfo, patient_reply_facts
from missive.errors import PolicyRefusal
from missive.mime.parts import PartInfo
from missive.mime.summary import MessageSummary
from missive.mta import codes
from missive.mta.auth import AuthMechanisms
from missive.mta.handlers import (
    BaseHandler,
    accept_recipient,
    cached_lookup,
    header_view,
    lookup_recipient,
    plan_for,
    rcpt_limit_reached,
    smtp_envelope,
    smtp_session,
)
from missive.mta.session import Principal, SmtpEnvelope, SmtpSession
from missive.policy import (
    Port,
    SenderKind,
    check_attachments,
    check_patient_reply,
    check_professional_can_send,
    check_recipient,
    check_sender_headers,
    check_sender_identity,
    check_submission_ready,
    closes_conversation,
    parse_address_header,
)
from missive.policy.codes import NOT_AUTHORISED, refuse

log = logging.getLogger(__name__)


def _sender_kind(principal: Principal | None) -> SenderKind:
    if principal is not None and principal.kind == "patient":
        return SenderKind.PATIENT
    return SenderKind.PROFESSIONAL


class SubmissionHandler(AuthMechanisms, BaseHandler):
    """Hooks of the submission listeners."""

    source = "submission"

    def extensions(self, session: SmtpSession) -> list[str]:
        out = super().extensions(session)
        if session.tls is not None or self.settings.mta.allow_plaintext_auth:
            mechanisms = ["PLAIN", "LOGIN"]
            if session.tls is not None and session.tls.peer_cert is not None:
                mechanisms.insert(0, "EXTERNAL")
            out.append("AUTH " + " ".join(mechanisms))
        return out

    async def _current_status(self, principal: Principal) -> str:
        key = f"status\x00{principal.kind}\x00{principal.login}"
        status = await cached_lookup(self.ctx, key, lambda: self._load_status(principal))
        assert isinstance(status, str)  # noqa: S101 - only statuses under status keys
        return status

    async def _load_status(self, principal: Principal) -> str:
        async with self.ctx.core.db.read() as s:
            if principal.kind == "professional":
                pro = await find_professional(s, principal.login)
                return pro.status if pro is not None else "suspended"
            matricule = principal.login.rpartition("@")[0].upper()
            patient = await find_patient(s, matricule)
            return patient.status if patient is not None else "closed"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        s = smtp_session(session)
        env = smtp_envelope(envelope)
        try:
            check_submission_ready(tls=s.tls is not None or self.settings.mta.allow_plaintext_auth,
                                   authenticated=s.principal is not None)
            principal = s.principal
            assert principal is not None  # noqa: S101 - checked just above
            status = await self._current_status(principal)
            if principal.kind == "professional":
                check_professional_can_send(status)
            elif status != "active":
                raise refuse(NOT_AUTHORISED, "This account may not send messages", "P3",
                             f"patient status {status}")
            # P2 on the envelope only: the header part is checked after DATA, so the From:
            # passed here is the envelope sender itself.
            check_sender_identity(principal.addresses, "" if address == "<>" else address,
                                  [("", address)])
        except PolicyRefusal as err:
            return await self.refuse(s, "mail", err)
        limits = self.ctx.limits
        if not limits.senders.take(principal.login):
            return await self.refuse_reply(s, "mail", codes.SENDER_RATE, "P10",
                                           "sender rate limit")
        if not limits.addresses.take(s.client_ip):
            return await self.refuse_reply(s, "mail", codes.ADDRESS_RATE, "P10",
                                           "client address rate limit")
        env.mail_from = address
        env.mail_options.extend(mail_options)
        env.dsn = s.pending_mail_dsn
        return codes.SENDER_OK

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        s = smtp_session(session)
        env = smtp_envelope(envelope)
        if rcpt_limit_reached(env, self.settings.mta.max_recipients):
            return await self.refuse_reply(s, "rcpt", codes.TOO_MANY_RECIPIENTS, "P10",
                                           "too many recipients")
        info, facts = await lookup_recipient(self.ctx, address, port=Port.SUBMISSION,
                                             sender_kind=_sender_kind(s.principal))
        try:
            decision = check_recipient(facts)
        except PolicyRefusal as err:
            return await self.refuse(s, "rcpt", err)
        plan = plan_for(info, address, decision.hold_until_activation)
        plan.dsn = s.pending_rcpt_dsn
        env.plans.append(plan)
        accept_recipient(env, address, rcpt_options)
        return codes.RECIPIENT_HELD if plan.held else codes.RECIPIENT_OK

    async def check_message(self, session: SmtpSession, envelope: SmtpEnvelope, raw: bytes,
                            summary: MessageSummary, parts: list[PartInfo],
                            msg: Message) -> None:
        principal = session.principal
        if principal is None:  # aiosmtpd refuses DATA before AUTH; belt and braces
            check_submission_ready(tls=session.tls is not None, authenticated=False)
            return
        headers = header_view(msg)
        check_sender_headers(principal.addresses, parse_address_header(headers.from_values),
                             parse_address_header(headers.sender_values) or None)
        check_attachments(parts, frozenset(self.settings.mta.attachment_allowlist))
        if principal.kind == "patient":
            await self._check_patient_message(principal, envelope, summary)

    async def _check_patient_message(self, principal: Principal, envelope: SmtpEnvelope,
                                     summary: MessageSummary) -> None:
        """P6 for each recipient of a patient's message (all must pass)."""
        references = [*summary.references]
        if summary.in_reply_to and summary.in_reply_to not in references:
            references.append(summary.in_reply_to)
        thread_root = summary.thread_root if references else None
        assert principal.patient_id is not None  # noqa: S101 - a patient principal
        for plan in envelope.plans:
            info = RecipientInfo(address=plan.address, kind=plan.kind,
                                 professional_id=plan.professional_id)
            async with self.ctx.core.db.read() as s:
                facts = await patient_reply_facts(
                    s, self.ctx.core.store, patient_id=principal.patient_id,
                    patient_mailbox_id=principal.mailbox_id, recipient=info,
                    references=references, thread_root=thread_root)
            check_patient_reply(facts)

    def close_conversation(self, session: SmtpSession, summary: MessageSummary) -> bool:
        principal = session.principal
        if principal is None or principal.kind != "professional":
            return False
        return closes_conversation(summary.subject, summary.mss.get("X-MSS-MES"))
