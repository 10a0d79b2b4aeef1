"""Caregiver invitations (SPEC §5 delegates): the patient invites, the caregiver accepts.

The patient names the person, their e-mail (their future login), the rights (``read`` or
``read_reply``) and an optional end date; the invitation is a single-use link, valid
``INVITATION_DAYS``. When the notification e-mail relay is configured (``notify.smtp_relay``)
the link is sent to the caregiver's address (:func:`email_for`: plain French, the patient's
name, the link and its end date, nothing about any message or health matter) and also shown
to the patient; otherwise, or if the relay refuses it, the patient hands the link over (as
they would a key). The caregiver opens it,
creates their own account (name, mobile phone for the one-time codes, password) or, if they
already have one, accepts while logged in; the delegation is then created through
``directory.delegates.add_delegate`` (audited ``delegate.grant`` on the patient's mailbox).
Only the SHA-256 of the token is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from missive.db.base import utcnow
from missive.webmail.models import WebInvitation

INVITATION_DAYS = 7


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create(s: AsyncSession, *, patient_id: int, display_name: str, login_email: str,
                 rights: str, access_until: datetime | None) -> tuple[str, WebInvitation]:
    token = secrets.token_urlsafe(24)
    now = utcnow()
    row = WebInvitation(patient_id=patient_id, token_hash=_hash(token),
                        display_name=display_name, login_email=login_email.lower(),
                        rights=rights, access_until=access_until, created_at=now,
                        expires_at=now + timedelta(days=INVITATION_DAYS))
    s.add(row)
    await s.flush()
    return token, row


async def find(s: AsyncSession, token: str) -> WebInvitation | None:
    """The usable invitation of ``token`` (not expired, accepted or cancelled), if any."""
    if not token or len(token) > 100:
        return None
    row = (await s.execute(select(WebInvitation).where(
        WebInvitation.token_hash == _hash(token)))).scalar_one_or_none()
    if row is None or row.accepted_at or row.cancelled_at or row.expires_at <= utcnow():
        return None
    return row


async def pending_for(s: AsyncSession, patient_id: int) -> list[WebInvitation]:
    now = utcnow()
    rows = (await s.execute(select(WebInvitation).where(
        WebInvitation.patient_id == patient_id, WebInvitation.accepted_at.is_(None),
        WebInvitation.cancelled_at.is_(None)).order_by(WebInvitation.id))).scalars()
    return [r for r in rows if r.expires_at > now]


async def cancel(s: AsyncSession, patient_id: int, invitation_id: int) -> bool:
    row = await s.get(WebInvitation, invitation_id)
    if row is None or row.patient_id != patient_id or row.accepted_at or row.cancelled_at:
        return False
    row.cancelled_at = utcnow()
    return True


def email_text(*, caregiver: str, patient_name: str, link: str, can_reply: bool,
               expires: str, service: str = "Missive") -> str:
    """The invitation e-mail: short sentences, the link alone on its line, no health data."""
    what = "lire ses messages et y répondre" if can_reply else "lire ses messages"
    return (
        f"Bonjour {caregiver},\n\n"
        f"{patient_name} vous invite à {what} sur sa messagerie de santé {service}.\n\n"
        "Pour accepter, ouvrez ce lien :\n"
        f"{link}\n\n"
        f"Ce lien ne sert qu'une fois. Il est valable jusqu'au {expires}.\n"
        "Vous choisirez votre mot de passe. Un code vous sera envoyé à chaque connexion.\n\n"
        f"Vous ne connaissez pas {patient_name}, ou vous ne vous attendiez pas à ce message ? "
        "Ne faites rien : sans votre accord, aucun accès n'est créé.\n\n"
        "Ce message est envoyé automatiquement. Merci de ne pas y répondre.\n\n"
        f"{service}\n"
    )


def email_for(*, sender: str, domain: str, to: str, caregiver: str, patient_name: str,
              link: str, can_reply: bool, expires: str, service: str = "Missive") -> EmailMessage:
    """The RFC 5322 message, marked automatic (RFC 3834 §5) like the notices."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"{patient_name} vous invite sur sa messagerie {service}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(email_text(caregiver=caregiver, patient_name=patient_name, link=link,
                               can_reply=can_reply, expires=expires, service=service),
                    charset="utf-8", cte="quoted-printable")
    return msg
