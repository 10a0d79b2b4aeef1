"""Tables of the encrypted store (SPEC §3), plus the two queues its delivery transaction feeds.

Layout:

- ``mailbox``: one per patient, professional mailbox or system role (the outbound ``relay``).
  Holds the public key in clear (C2) and the private key wrapped by a per-mailbox KEK that
  lives in the separate key store (``mailbox.keystore``, C3/C4), named by ``key_ref``.
  ``wrapped_private_key`` is NULL and the KEK destroyed once the mailbox is closed (C3).
  ``highest_modseq`` is the mailbox-wide modification sequence (RFC 7162 style, ready for
  CONDSTORE): every change to a message takes the next value.
- ``folder``: IMAP mailboxes of a mailbox. ``uidvalidity`` is fixed at creation; ``uidnext`` is
  incremented under the row lock of the delivering transaction, so UIDs are unique and strictly
  ascending in commit order (RFC 3501 §2.3.1.1).
- ``content``: one sealed message: ``sealed_key`` (the data key sealed to the mailbox with HPKE),
  ``key_cache`` (the same data key under the mailbox's cache key, once a session opened it),
  ``derived`` (IMAP ENVELOPE/BODYSTRUCTURE computed by a session, under that cache key),
  ``body`` and ``meta`` (AES-256-GCM under that data key). Several ``message`` rows (copies in
  other folders of the same mailbox) may share one content; it is deleted with its last message.
- ``message``: a message in a folder with its IMAP attributes (uid, flags, internal date, size,
  modseq). No subject, sender or name in clear (C1).
- ``correspondent`` / ``received_ref`` / ``conversation``: keyed hashes (index key, C7) of the
  relations P6 needs: "this professional wrote to this patient", "this Message-ID was received
  from that professional", "this conversation was closed with FIN".
- ``notification_outbox`` and ``relay_queue``: written in the delivery transaction (P11) and
  consumed by the ``notify`` and ``mta`` workers (``SKIP LOCKED`` on PostgreSQL). The relay
  queue holds messages sealed to the system ``relay`` mailbox key, never in clear.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from missive.db.base import Base, UTCDateTime, utcnow

MAILBOX_KINDS = ("patient", "professional", "system")


class Mailbox(Base):
    __tablename__ = "mailbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(32), unique=True)  # system roles only
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | closed
    suite: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_private_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_ref: Mapped[str | None] = mapped_column(String(32))  # the KEK's id in the key store
    highest_modseq: Mapped[int] = mapped_column(BigInteger, default=1)
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Folder(Base):
    __tablename__ = "folder"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    special_use: Mapped[str | None] = mapped_column(String(16))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("mailbox_id", "name", name="uq_folder_mailbox_name"),)


class DelegateKey(Base):
    """The mailbox private key wrapped for one delegation (C6: wrapped for the delegate, not
    shared). Its KEK lives in the key store like the owner's; revoking the delegation deletes
    this row and destroys that KEK, so an old backup of the row opens nothing either."""

    __tablename__ = "delegate_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"),
                                            index=True)
    grant_ref: Mapped[str] = mapped_column(String(64), unique=True)
    key_ref: Mapped[str] = mapped_column(String(32))
    wrapped_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Content(Base):
    __tablename__ = "content"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailbox.id", ondelete="CASCADE"), index=True
    )
    suite: Mapped[str] = mapped_column(String(64))
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    # The data key wrapped under the mailbox's cache key, written by the first session that
    # opens it (``crypto.wrap_cached_key``); NULL until then.
    key_cache: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Items computed from the message by a reading front (IMAP ENVELOPE, BODYSTRUCTURE),
    # sealed under the same cache key (``crypto.seal_derived``); NULL until computed.
    derived: Mapped[bytes | None] = mapped_column(LargeBinary)
    meta: Mapped[bytes] = mapped_column(LargeBinary)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(Base):
    __tablename__ = "message"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"))
    folder_id: Mapped[int] = mapped_column(ForeignKey("folder.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id"), index=True)
    flags: Mapped[str] = mapped_column(Text, default="")
    internal_date: Mapped[datetime] = mapped_column(UTCDateTime)
    size: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("folder_id", "uid", name="uq_message_folder_uid"),
        Index("ix_message_mailbox_modseq", "mailbox_id", "modseq"),
    )


class Correspondent(Base):
    """Keyed hash of (mailbox, sender address): that sender wrote to this mailbox (P6, C7)."""

    __tablename__ = "correspondent"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"))
    peer_hash: Mapped[str] = mapped_column(String(32))
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("mailbox_id", "peer_hash", name="uq_correspondent"),)


class ReceivedRef(Base):
    """Keyed hash of (mailbox, Message-ID, sender): a reply may reference it (P6, C7)."""

    __tablename__ = "received_ref"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"))
    ref_hash: Mapped[str] = mapped_column(String(32), index=True)


class Conversation(Base):
    """Keyed hash of a conversation root Message-ID; closed by FIN (P6)."""

    __tablename__ = "conversation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_hash: Mapped[str] = mapped_column(String(32), unique=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NotificationOutbox(Base):
    """A content-free event "mailbox N received a message", for the notify worker (SPEC §6)."""

    __tablename__ = "notification_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32), default="message.delivered")
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (Index("ix_outbox_state_next", "state", "next_attempt_at"),)


class RelayQueue(Base):
    """An outbound message for a trust-space domain, sealed to the system relay key."""

    __tablename__ = "relay_queue"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    suite: Mapped[str] = mapped_column(String(64))
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)  # sealed JSON: sender, rcpts, DSN
    body: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delay_notified: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (Index("ix_relay_state_next", "state", "next_attempt_at"),)
