"""Server-side web sessions (SPEC §5 security): signed cookie, idle and absolute expiry.

The cookie carries ``<token>.<signature>``: a 256-bit random token and an HMAC-SHA256 of it
under ``webmail.secret_key``; the ``web_session`` row is keyed by SHA-256(token). A forged or
altered cookie is rejected before any database access. Sessions expire after
``session_idle_minutes`` without a request and after ``session_max_hours`` in any case; the
token is rotated at each authentication step (no session fixation). "Log out everywhere"
deletes every row of the principal.

This is the only module (with :mod:`.codes`) that runs SQL on the webmail's own tables.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from missive.config import Settings
from missive.db.base import utcnow
from missive.webmail.models import WebSession

#: Requests within this window do not rewrite ``last_seen_at`` (one write per minute at most).
TOUCH_EVERY = timedelta(seconds=30)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionState:
    """What a request knows about its session (a detached copy of the row)."""

    id: str
    csrf_token: str
    stage: str
    principal_kind: str | None
    principal_id: int | None
    active_delegate_id: int | None
    otp_channel: str | None
    idle_expires_at: datetime
    expires_at: datetime

    @property
    def authenticated(self) -> bool:
        return self.stage == "active" and self.principal_id is not None


#: The columns :meth:`SessionStore.peek` reads (a Core statement: every page runs it).
_PEEK = select(*(WebSession.__table__.c[name] for name in (
    "id", "csrf_token", "stage", "principal_kind", "principal_id", "active_delegate_id",
    "otp_channel", "idle_expires_at", "expires_at", "last_seen_at"))).where(
    WebSession.__table__.c.id == bindparam("id"))


def _state(row: WebSession | Row[Any]) -> SessionState:
    return SessionState(row.id, row.csrf_token, row.stage, row.principal_kind, row.principal_id,
                        row.active_delegate_id, row.otp_channel, row.idle_expires_at,
                        row.expires_at)


class SessionSigner:
    """Signs and checks cookie values."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"missive-web-session\0" + secret.encode()).digest()

    def sign(self, token: str) -> str:
        mac = hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()
        return f"{token}.{mac}"

    def unsign(self, value: str) -> str | None:
        token, _, mac = value.partition(".")
        if not token or len(value) > 200:
            return None
        expected = hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()
        return token if hmac.compare_digest(mac, expected) else None

    def keyed(self, purpose: str, value: str) -> str:
        """A keyed hash for codes and throttle keys (never stored in clear)."""
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()


class SessionStore:
    """Create, load, upgrade and end sessions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signer = SessionSigner(settings.webmail.secret_key.get_secret_value())
        self.idle = timedelta(minutes=settings.webmail.session_idle_minutes)
        self.lifetime = timedelta(hours=settings.webmail.session_max_hours)

    async def create(self, s: AsyncSession) -> tuple[str, SessionState]:
        """A new anonymous session; returns (cookie value, state)."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        row = WebSession(id=_digest(token), csrf_token=secrets.token_urlsafe(32),
                         stage="anonymous", created_at=now, last_seen_at=now,
                         idle_expires_at=now + self.idle, expires_at=now + self.lifetime,
                         otp_attempts=0)
        s.add(row)
        await s.flush()
        return self.signer.sign(token), _state(row)

    def session_id(self, cookie: str | None) -> str | None:
        """The row id a cookie designates, if its signature is good (no database access)."""
        if not cookie:
            return None
        token = self.signer.unsign(cookie)
        return _digest(token) if token is not None else None

    def peek(self, s: Session, session_id: str) -> tuple[SessionState | None, bool]:
        """Read-only: (live state or None, whether the row needs a write — touch or delete).

        Most requests only read, so that the web front does not take SQLite's write lock (which
        the SMTP deliveries need) on every page view. Synchronous: every page calls it through
        ``Database.run_read``.
        """
        row = s.connection().execute(_PEEK, {"id": session_id}).first()
        if row is None:
            return None, False
        now = utcnow()
        if now >= row.idle_expires_at or now >= row.expires_at:
            return None, True
        return _state(row), now - row.last_seen_at >= TOUCH_EVERY

    async def touch(self, s: AsyncSession, session_id: str) -> SessionState | None:
        """Move the idle deadline (or delete an expired row); returns the live state."""
        row = await s.get(WebSession, session_id)
        if row is None:
            return None
        now = utcnow()
        if now >= row.idle_expires_at or now >= row.expires_at:
            await s.delete(row)
            return None
        row.last_seen_at = now
        row.idle_expires_at = min(now + self.idle, row.expires_at)
        return _state(row)

    async def rotate(self, s: AsyncSession, session_id: str, **changes: object) -> tuple[
            str, SessionState]:
        """Give the session a new token (and CSRF token) and apply ``changes``."""
        row = await s.get(WebSession, session_id)
        if row is None:
            raise LookupError("session vanished")
        token = secrets.token_urlsafe(32)
        new = WebSession(
            id=_digest(token), csrf_token=secrets.token_urlsafe(32), stage=row.stage,
            principal_kind=row.principal_kind, principal_id=row.principal_id,
            active_delegate_id=row.active_delegate_id, otp_hash=row.otp_hash,
            otp_channel=row.otp_channel, otp_expires_at=row.otp_expires_at,
            otp_attempts=row.otp_attempts, created_at=row.created_at, last_seen_at=utcnow(),
            idle_expires_at=row.idle_expires_at, expires_at=row.expires_at)
        for key, value in changes.items():
            setattr(new, key, value)
        await s.delete(row)
        await s.flush()
        s.add(new)
        await s.flush()
        return self.signer.sign(token), _state(new)

    async def row(self, s: AsyncSession, session_id: str) -> WebSession | None:
        return await s.get(WebSession, session_id)

    async def update(self, s: AsyncSession, session_id: str, **changes: object) -> None:
        row = await s.get(WebSession, session_id)
        if row is None:
            raise LookupError("session vanished")
        for key, value in changes.items():
            setattr(row, key, value)
        await s.flush()

    async def end(self, s: AsyncSession, session_id: str) -> None:
        await s.execute(delete(WebSession).where(WebSession.id == session_id))

    async def end_all(self, s: AsyncSession, kind: str, principal_id: int) -> list[str]:
        """Delete every session of a principal; returns their ids (to drop cached keys)."""
        ids = list((await s.execute(select(WebSession.id).where(
            WebSession.principal_kind == kind, WebSession.principal_id == principal_id)
        )).scalars())
        if ids:
            await s.execute(delete(WebSession).where(WebSession.id.in_(ids)))
        return ids

    async def purge_expired(self, s: AsyncSession) -> list[str]:
        now = utcnow()
        ids = list((await s.execute(select(WebSession.id).where(
            (WebSession.idle_expires_at <= now) | (WebSession.expires_at <= now))
        )).scalars())
        if ids:
            await s.execute(delete(WebSession).where(WebSession.id.in_(ids)))
        return ids
