"""Audit tables.

``audit_log`` rows form a hash chain: ``hash = SHA-256(prev_hash || canonical(entry))`` with
``seq`` contiguous from 1. ``audit_head`` (a single row, id 1) holds the last ``seq`` and ``hash``:
appending locks it (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite write transactions are
serialised), so that concurrent transactions cannot fork the chain, and truncating the tail is
detected because the head no longer matches the last row.

Invariant: no message content, subject or patient trait is ever written here. Where an entry ties a
professional to a patient (a delivery), the professional is recorded as a keyed hash (SPEC C7).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from missive.db.base import Base, UTCDateTime


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(320))
    mailbox_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_log_mailbox_seq", "mailbox_id", "seq"),)


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
