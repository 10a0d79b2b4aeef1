"""The MX listener: mail from other operators of the trust space, for local recipients (P7).

- TLS is required before MAIL (``530 5.7.0``, RFC 3207 §4); the handshake asks for a client
  certificate (``client_auth="optional"``, so that a peer without one gets a readable SMTP
  refusal rather than a failed handshake) and verifies it against our CA, the extra CAs and
  every CA of the trust space, with the CRLs we hold.
- At MAIL, the sender domain must be in the trust space, and the client certificate must chain
  to a CA registered *for that domain* (:func:`missive.certs.identity.verify_chain`) and, when
  the domain has a registered operator DN, have that subject DN. A null reverse-path (DSNs and
  MDNs from the peer) is accepted when the certificate matches some trust-space domain.
- At RCPT, only local recipients (``550 5.7.1``: never relayed onwards), with the P5 checks on
  patient addresses.
- After DATA: framing (P12), size (P8), attachment types (P9), then the delivery transaction
  (P11). There is no AUTH on this listener.
"""

from __future__ import annotations

import logging
from email.message import Message

from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509

from missive.certs import identity
from missive.certs.errors import CertError
from missive.directory.trust import cas_of, list_trust_domains, trust_domain_for
from missive.errors import PolicyRefusal
from missive.mime.parts import PartInfo
from missive.mime.summary import MessageSummary
from missive.mta import codes
from missive.mta.handlers import (
    BaseHandler,
    accept_recipient,
    lookup_recipient,
    plan_for,
    rcpt_limit_reached,
    smtp_envelope,
    smtp_session,
)
from missive.mta.session import SmtpEnvelope, SmtpSession
from missive.policy import Port, SenderKind, check_attachments, check_mx_peer, check_recipient

log = logging.getLogger(__name__)


class MxHandler(BaseHandler):
    """Hooks of the MX listener."""

    source = "mx"

    def _matches(self, cert: x509.Certificate, pems: list[str], operator_dn: str | None) -> bool:
        if not pems:
            return False
        try:
            identity.verify_chain(cert, "".join(pems).encode("ascii"),
                                  crls=self._crls())
        except (CertError, ValueError):
            return False
        if operator_dn:
            return identity.dn_matches(cert.subject, operator_dn)
        return True

    def _crls(self) -> list[x509.CertificateRevocationList]:
        return self.ctx.crls

    async def _peer_domain(self, cert: x509.Certificate | None,
                           sender_domain: str | None) -> tuple[bool, str | None]:
        """(sender domain trusted, matching trust domain or None) for this certificate."""
        async with self.ctx.core.db.read() as s:
            if sender_domain is not None:
                entry = await trust_domain_for(s, sender_domain)
                if entry is None:
                    return False, None
                if cert is None:
                    return True, None
                pems = [ca.pem for ca in await cas_of(s, entry.id)]
                return True, entry.domain if self._matches(cert, pems, entry.operator_dn) else None
            if cert is None:
                return False, None
            for entry in await list_trust_domains(s):
                pems = [ca.pem for ca in await cas_of(s, entry.id)]
                if self._matches(cert, pems, entry.operator_dn):
                    return True, entry.domain
        return False, None

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        s = smtp_session(session)
        env = smtp_envelope(envelope)
        cert = s.tls.peer_cert if s.tls is not None and not s.revoked else None
        domain = None if address == "<>" else address.rpartition("@")[2].lower()
        trusted, matched = await self._peer_domain(cert, domain)
        try:
            check_mx_peer(tls=s.tls is not None, client_cert_verified=cert is not None,
                          sender_domain_trusted=trusted, cert_matches_domain=matched is not None)
        except PolicyRefusal as err:
            return await self.refuse(s, "mail", err)
        if not self.ctx.limits.addresses.take(s.client_ip):
            return await self.refuse_reply(s, "mail", codes.ADDRESS_RATE, "P10",
                                           "client address rate limit")
        s.peer_domain = matched
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
        info, facts = await lookup_recipient(self.ctx, address, port=Port.MX,
                                             sender_kind=SenderKind.OPERATOR)
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
        check_attachments(parts, frozenset(self.settings.mta.attachment_allowlist))

    def delivery_actor(self, session: SmtpSession) -> str | None:
        return f"operator:{session.peer_domain}" if session.peer_domain else "operator"
