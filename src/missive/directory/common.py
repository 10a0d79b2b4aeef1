"""What the directory services share: the mailbox-store collaborator and the audit hook.

The directory does not seal or open mail; it only asks the mailbox store to create a mailbox (key
pair, default folders) when a patient or professional is created, and to crypto-shred it when an
account is closed (C3) — both inside the caller's transaction, so a directory row and its
mailbox exist together or not at all. :class:`MailboxKeeper` is the part of
:class:`missive.mailbox.store.MailboxStore` the directory needs.
"""

from __future__ import annotations

from typing import Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from missive.audit import log as audit_log

MailboxKind = Literal["patient", "professional", "system"]


class MailboxKeeper(Protocol):
    async def create_mailbox(
        self, session: AsyncSession, *, kind: MailboxKind, label: str | None = None
    ) -> int: ...

    async def close_mailbox(self, session: AsyncSession, mailbox_id: int) -> None: ...


async def audit(
    session: AsyncSession,
    action: str,
    *,
    actor: str | None,
    mailbox_id: int | None = None,
    outcome: str = "ok",
    reason: str | None = None,
    details: dict[str, str | int | bool | None] | None = None,
) -> None:
    """An audit entry in the caller's transaction (SPEC §7: every admin change is audited)."""
    await audit_log.append(
        session,
        action,
        actor=actor,
        mailbox_id=mailbox_id,
        outcome=outcome,
        reason=reason,
        details=details,
    )
