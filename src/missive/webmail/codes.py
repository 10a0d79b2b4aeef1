"""One-time codes and login throttling (SPEC §5 login, activation; P10-style lockout).

- Activation and reset codes stand for the letter or SMS an operator sends: 12 characters from
  an alphabet without look-alikes (no 0/O, 1/I/L), shown in groups of four, about 60 bits;
  valid ``activation_code_days``; single use; kept as a keyed hash; 10 wrong tries on one
  patient's code burn it.
- Login one-time codes are 6 digits, valid ``otp_minutes``, bound to one session, at most
  ``otp_max_attempts`` tries.
- Throttle: per client address (``PER_ADDRESS_FACTOR`` times more failures allowed, so a
  household or a care home behind one address is not locked by one person's mistakes) and per
  account. After ``login_max_failures`` failures on one account, the account is locked for
  ``lockout_seconds``, doubling with each further failure up to ``lockout_max_seconds``; a
  success resets it. The lockout is always temporary, so an attacker cannot lock a patient out
  for good (P10).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from missive.config import Settings
from missive.db.base import utcnow
from missive.webmail.models import WebCode, WebLoginThrottle
from missive.webmail.sessions import SessionSigner

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 12
MAX_CODE_ATTEMPTS = 10
#: A client address may fail this many times more than one account before it is slowed down.
PER_ADDRESS_FACTOR = 10
PURPOSES = ("activation", "reset")


def normalise_code(text: str) -> str:
    """Uppercase, without the spaces or dashes people type between groups."""
    return "".join(ch for ch in text.upper() if ch.isascii() and ch.isalnum())[:64]


def format_code(code: str) -> str:
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: datetime

    @property
    def display(self) -> str:
        return format_code(self.code)


async def issue_code(s: AsyncSession, settings: Settings, patient_id: int,
                     purpose: str) -> IssuedCode:
    """A new code for ``patient_id``; earlier unused codes of that purpose are withdrawn."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
    signer = SessionSigner(settings.webmail.secret_key.get_secret_value())
    now = utcnow()
    await s.execute(update(WebCode).where(
        WebCode.patient_id == patient_id, WebCode.purpose == purpose,
        WebCode.used_at.is_(None)).values(used_at=now))
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    expires = now + timedelta(days=settings.webmail.activation_code_days)
    s.add(WebCode(patient_id=patient_id, purpose=purpose,
                  code_hash=signer.keyed("code", f"{purpose}:{code}"), attempts=0,
                  created_at=now, expires_at=expires))
    await s.flush()
    return IssuedCode(code, expires)


async def consume_code(s: AsyncSession, signer: SessionSigner, patient_id: int, purpose: str,
                       text: str) -> bool:
    """Check and burn a code for ``patient_id``. Wrong tries count against its live code."""
    now = utcnow()
    live = (await s.execute(select(WebCode).where(
        WebCode.patient_id == patient_id, WebCode.purpose == purpose,
        WebCode.used_at.is_(None), WebCode.expires_at > now))).scalars().all()
    wanted = signer.keyed("code", f"{purpose}:{normalise_code(text)}")
    for row in live:
        if secrets.compare_digest(row.code_hash, wanted):
            row.used_at = now
            await s.flush()
            return True
    for row in live:
        row.attempts += 1
        if row.attempts >= MAX_CODE_ATTEMPTS:
            row.used_at = now
    await s.flush()
    return False


def new_otp() -> str:
    return f"{secrets.randbelow(10**6):06d}"


# --- throttle ---------------------------------------------------------------------------------

async def locked_until(s: AsyncSession, key: str) -> datetime | None:
    row = await s.get(WebLoginThrottle, key)
    if row is None or row.locked_until is None or row.locked_until <= utcnow():
        return None
    return row.locked_until


async def record_failure(s: AsyncSession, settings: Settings, key: str, *,
                         max_failures: int | None = None) -> datetime | None:
    """Count a failure; returns the lockout end if the key is now locked."""
    web = settings.webmail
    limit = max_failures or web.login_max_failures
    row = await s.get(WebLoginThrottle, key)
    now = utcnow()
    if row is None:
        row = WebLoginThrottle(key=key, failures=0, updated_at=now)
        s.add(row)
    row.failures += 1
    row.updated_at = now
    if row.failures >= limit:
        excess = row.failures - limit
        seconds = min(web.lockout_seconds * (2 ** min(excess, 20)), web.lockout_max_seconds)
        row.locked_until = now + timedelta(seconds=seconds)
    await s.flush()
    return row.locked_until if row.locked_until and row.locked_until > now else None


async def record_success(s: AsyncSession, key: str) -> None:
    row = await s.get(WebLoginThrottle, key)
    if row is not None:
        await s.delete(row)
