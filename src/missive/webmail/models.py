"""Webmail tables: server-side sessions, one-time codes, login throttling.

Layout:

- ``web_session``: one row per browser session. The primary key is the SHA-256 of the random
  token carried (HMAC-signed) in the cookie, so a copy of the database gives no usable cookie.
  ``principal_kind`` is ``patient`` (``principal_id`` = ``patient.id``) or ``person`` (an
  external caregiver, ``delegate_person.id``); it is null for an anonymous session, which only
  carries the CSRF token of the login forms. ``stage`` goes ``anonymous → otp → active``
  (password checked, then one-time code checked); the session token is rotated at each step
  (no session fixation). ``active_delegate_id`` is the delegation whose mailbox a caregiver is
  looking at (null: their own, if any). ``idle_expires_at`` moves with activity, ``expires_at``
  never does (absolute lifetime). The one-time code is kept only as a keyed hash.
- ``web_code``: out-of-band codes (activation letter, password reset) printed by the operator:
  keyed hash, purpose, expiry, use, attempts.
- ``web_invitation``: a patient's invitation to a caregiver; ``web_totp``: an authenticator
  app registered instead of SMS codes (see the classes).
- ``web_login_throttle``: failed logins per account key (a keyed hash of the login, so the
  table holds no identifiers) with the lockout end; shared by all nodes through the database.

Invariants: no secret, code or message content is stored in clear; the unwrapped mailbox private
key is never stored here (C6): it lives in process memory only (:mod:`missive.webmail.keys`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from missive.db.base import Base, UTCDateTime, utcnow


class WebSession(Base):
    __tablename__ = "web_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(10), default="anonymous")
    principal_kind: Mapped[str | None] = mapped_column(String(10), nullable=True)
    principal_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    active_delegate_id: Mapped[int | None] = mapped_column(
        ForeignKey("delegate.id", ondelete="SET NULL"), nullable=True
    )
    otp_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    otp_channel: Mapped[str | None] = mapped_column(String(8), nullable=True)
    otp_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    otp_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebCode(Base):
    __tablename__ = "web_code"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(12))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebLoginThrottle(Base):
    __tablename__ = "web_login_throttle"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebInvitation(Base):
    """A patient's invitation to a caregiver, accepted with the caregiver's own login.

    ``token_hash`` is the SHA-256 of the random token in the invitation link (single use,
    ``expires_at``). ``rights`` and ``access_until`` become the delegation's rights and expiry
    on acceptance (``delegate_id``). ``cancelled_at``: withdrawn by the patient before use.
    """

    __tablename__ = "web_invitation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    login_email: Mapped[str] = mapped_column(String(320))
    rights: Mapped[str] = mapped_column(String(10))
    access_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delegate_id: Mapped[int | None] = mapped_column(
        ForeignKey("delegate.id", ondelete="SET NULL"), nullable=True
    )


class WebTotp(Base):
    """A TOTP authenticator (RFC 6238) a principal registered as an alternative to SMS codes.

    The shared secret is wrapped with the master key (``mailbox.crypto.wrap_secret``, the key
    named by ``master_key_id``), never stored in clear. ``confirmed_at`` is set once the user
    typed a first valid code; ``last_step`` is the last accepted time step (a code is accepted
    once: RFC 6238 §5.2).
    """

    __tablename__ = "web_totp"
    __table_args__ = (UniqueConstraint("principal_kind", "principal_id",
                                       name="uq_web_totp_principal"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_kind: Mapped[str] = mapped_column(String(10))
    principal_id: Mapped[int] = mapped_column(Integer)
    wrapped_secret: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(64))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_step: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
