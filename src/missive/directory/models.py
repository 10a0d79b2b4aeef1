"""Directory tables: patients, professionals, delegates, care teams, the trust space.

Layout (SPEC §1):

- ``patient``: one row per matricule INS (15 characters, uppercase, unique) with its OID, the
  *traits d'identité* (birth family name, first names, birth date, sex, INSEE birth place code),
  contact (mobile phone in E.164, e-mail), notification preferences and the status
  ``pending | active | opposed | closed``. ``mailbox_id`` points at the patient's encrypted
  mailbox (``mailbox.id``), created in the same transaction as the row. ``password_hash`` is set
  by the webmail at activation (Argon2id).
- ``professional``: one row per national identifier (``8`` + RPPS or ``0`` + ADELI, unique),
  with name, profession/specialty, the mailbox address (normalised, lower-case, unique), the
  mailbox type ``personal | organisational | applicative``, the status ``active | suspended``
  and an Argon2id password hash. ``professional_alias`` lists further addresses the
  professional owns (policy P2 accepts them as envelope/header senders).
- ``delegate``: a caregiver or legal guardian reading (and optionally replying) on behalf of a
  patient: either a professional of this server (``professional_id``) or an external person
  (``person_id`` → ``delegate_person``, who logs in to the webmail with a login e-mail and its
  own Argon2id password, and may act for several patients). Exactly one of the two is set. A
  delegation is in force while ``revoked_at`` is null and ``expires_at`` is null or future.
- ``care_team``: professionals a patient may write to first (policy P6).
- ``trust_domain`` / ``trust_ca``: operator domains of the trust space (P4, P7), each with the
  PEM CA certificates its MTAs chain to (SHA-256 fingerprint unique per domain) and the operator
  certificate's subject DN; rows imported from the national whitelist have ``source =
  "whitelist"``.

Invariants:

- Addresses and domains are stored normalised (lower-case, no trailing dot), so lookups are
  exact-match on an index.
- Status values are enforced by CHECK constraints on both SQLite and PostgreSQL.
- A patient in status ``closed`` has had its mailbox keys destroyed (crypto-shredding, C3); the
  status never leaves ``closed``.
- Directory rows are deleted only after the mailbox was closed (see ``service`` modules).

C7 note: ``care_team`` and ``delegate`` tie patients to professionals in clear; they are set up by
the operator or the patient (not derived from mail traffic), which is why they are kept readable
here; the record of who *wrote* to whom lives in the encrypted store.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from missive.db.base import Base, UTCDateTime, utcnow

PATIENT_STATUSES = ("pending", "active", "opposed", "closed")
PRO_STATUSES = ("active", "suspended")
MAILBOX_TYPES = ("personal", "organisational", "applicative")
NOTIFY_CHANNELS = ("sms", "email", "both", "none")
DELEGATE_RIGHTS = ("read", "read_reply")
SEXES = ("M", "F")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Patient(Base):
    __tablename__ = "patient"
    __table_args__ = (
        CheckConstraint(_in("status", PATIENT_STATUSES), name="status"),
        CheckConstraint(_in("notify_channel", NOTIFY_CHANNELS), name="notify_channel"),
        CheckConstraint(_in("sex", SEXES), name="sex"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matricule: Mapped[str] = mapped_column(String(15), unique=True)
    oid: Mapped[str] = mapped_column(String(64))
    family_name: Mapped[str] = mapped_column(String(200))
    given_names: Mapped[str] = mapped_column(String(200))
    birth_date: Mapped[date] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(1))
    birth_place: Mapped[str] = mapped_column(String(5))
    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    notify_channel: Mapped[str] = mapped_column(String(8), default="none")
    read_receipts: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id"), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Professional(Base):
    __tablename__ = "professional"
    __table_args__ = (
        CheckConstraint(_in("status", PRO_STATUSES), name="status"),
        CheckConstraint(_in("mailbox_type", MAILBOX_TYPES), name="mailbox_type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    national_id: Mapped[str] = mapped_column(String(12), unique=True)
    rpps: Mapped[str | None] = mapped_column(String(11), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    profession: Mapped[str] = mapped_column(String(200))
    specialty: Mapped[str | None] = mapped_column(String(200), nullable=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    mailbox_type: Mapped[str] = mapped_column(String(16), default="personal")
    status: Mapped[str] = mapped_column(String(10), default="active")
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ProfessionalAlias(Base):
    """A further address owned by a professional (P2), delivered to the same mailbox."""

    __tablename__ = "professional_alias"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    professional_id: Mapped[int] = mapped_column(
        ForeignKey("professional.id", ondelete="CASCADE"), index=True
    )
    address: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DelegatePerson(Base):
    """A caregiver or guardian who is not a professional: logs in to the webmail by e-mail."""

    __tablename__ = "delegate_person"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login_email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Delegate(Base):
    """One delegation: who may act for which patient, with which rights, until when."""

    __tablename__ = "delegate"
    __table_args__ = (
        CheckConstraint(_in("rights", DELEGATE_RIGHTS), name="rights"),
        CheckConstraint(
            "(professional_id IS NOT NULL AND person_id IS NULL) OR "
            "(professional_id IS NULL AND person_id IS NOT NULL)",
            name="one_kind",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), index=True
    )
    professional_id: Mapped[int | None] = mapped_column(
        ForeignKey("professional.id", ondelete="CASCADE"), nullable=True, index=True
    )
    person_id: Mapped[int | None] = mapped_column(
        ForeignKey("delegate_person.id", ondelete="CASCADE"), nullable=True, index=True
    )
    rights: Mapped[str] = mapped_column(String(10), default="read")
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def kind(self) -> str:
        return "professional" if self.professional_id is not None else "person"

    def in_force(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class CareTeam(Base):
    __tablename__ = "care_team"
    __table_args__ = (UniqueConstraint("patient_id", "professional_id", name="uq_care_team_pair"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), index=True
    )
    professional_id: Mapped[int] = mapped_column(
        ForeignKey("professional.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrustDomain(Base):
    __tablename__ = "trust_domain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    operator_dn: Mapped[str | None] = mapped_column(Text, nullable=True)
    responsible_contact: Mapped[str | None] = mapped_column(String(320), nullable=True)
    support_contact: Mapped[str | None] = mapped_column(String(320), nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="manual")
    list_updated: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TrustCa(Base):
    __tablename__ = "trust_ca"
    __table_args__ = (
        UniqueConstraint("domain_id", "fingerprint", name="uq_trust_ca_domain_fingerprint"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain_id: Mapped[int] = mapped_column(
        ForeignKey("trust_domain.id", ondelete="CASCADE"), index=True
    )
    pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(Text)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
