"""The notify worker's table: one row per (coalesced notice, channel).

``notification_delivery`` rows are created in the same transaction that marks the mailbox's
``notification_outbox`` rows ``batched`` (or ``skipped``), so an outbox row is folded into
exactly one notice. Each row has its own ``idempotency_key``, ``<first outbox key>-<channel>``,
persisted before the first attempt: a worker killed after sending and before recording the
outcome resends under the same key, which the receiver uses to drop the duplicate.

States: ``pending`` (due at ``next_attempt_at``; a claimed row has ``next_attempt_at`` pushed
one lease ahead, so a crashed worker's row comes back by itself), ``sent``, ``dead`` (dead
letter after ``notify.max_attempts`` or a permanent refusal), ``skipped`` (the account was
opposed or closed before sending).

No column holds content, a contact address or a phone number: contacts are read from the
directory at sending time, so a changed preference or number is honoured by retries.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from missive.db.base import Base, UTCDateTime, utcnow

DELIVERY_STATES = ("pending", "sent", "dead", "skipped")
CHANNELS = ("sms", "email", "relay")


class NotificationDelivery(Base):
    __tablename__ = "notification_delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailbox.id", ondelete="CASCADE"), index=True
    )
    batch_key: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(8))
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="new")  # new | invitation
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_notify_delivery_state_next", "state", "next_attempt_at"),)
