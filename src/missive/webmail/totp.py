"""Authenticator apps (TOTP, RFC 6238 over HOTP, RFC 4226) as an alternative to SMS codes.

Parameters are the ones every authenticator app supports: HMAC-SHA1, 6 digits, 30-second
steps (RFC 6238 §4, §5.2), a 160-bit secret (RFC 4226 §4 R6) shown in base32 and as an
``otpauth://`` URI. A code is accepted for the current step and one step either side (clock
drift, RFC 6238 §5.2), and never twice (``last_step``). The secret is wrapped with the master
key in ``web_totp``; this module holds the only SQL on that table, including the re-wrapping a
master-key rotation asks for (:data:`SECRETS`, handed to ``mailbox.keys.rotate_master_key`` by
``missive.runtime.master_wrapped``: the core never imports the webmail).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from urllib.parse import quote

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from missive.db.base import utcnow
from missive.mailbox import crypto
from missive.webmail.models import WebTotp

STEP = 30
DIGITS = 6
WINDOW = 1
ISSUER = "Missive"


def hotp(secret: bytes, counter: int) -> str:
    """RFC 4226 §5.3: dynamic truncation of HMAC-SHA1(secret, counter)."""
    mac = hmac.new(secret, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**DIGITS:0{DIGITS}d}"


def step_of(now: float) -> int:
    return int(now // STEP)


def matching_step(secret: bytes, code: str, now: float, last_step: int) -> int | None:
    """The time step ``code`` is valid for (within the window, after ``last_step``)."""
    code = "".join(ch for ch in code if ch.isdigit())
    if len(code) != DIGITS:
        return None
    current = step_of(now)
    for step in range(current - WINDOW, current + WINDOW + 1):
        if step > last_step and hmac.compare_digest(hotp(secret, step), code):
            return step
    return None


def b32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")


def grouped(secret: bytes) -> str:
    text = b32(secret)
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))


def uri(secret: bytes, label: str) -> str:
    return (f"otpauth://totp/{quote(ISSUER)}:{quote(label)}?secret={b32(secret)}"
            f"&issuer={quote(ISSUER)}&algorithm=SHA1&digits={DIGITS}&period={STEP}")


def _context(kind: str, principal_id: int) -> bytes:
    return f"web-totp/{kind}/{principal_id}".encode()


async def find(s: AsyncSession, kind: str, principal_id: int) -> WebTotp | None:
    return (await s.execute(select(WebTotp).where(
        WebTotp.principal_kind == kind, WebTotp.principal_id == principal_id))
    ).scalar_one_or_none()


async def begin(s: AsyncSession, keys: crypto.KeyRing, kind: str, principal_id: int) -> bytes:
    """A new (unconfirmed) secret for the principal, replacing any earlier one."""
    await s.execute(delete(WebTotp).where(WebTotp.principal_kind == kind,
                                          WebTotp.principal_id == principal_id))
    secret = secrets.token_bytes(20)
    master = keys.master()
    s.add(WebTotp(principal_kind=kind, principal_id=principal_id,
                  wrapped_secret=crypto.wrap_secret(master, secret, _context(kind, principal_id)),
                  master_key_id=master.key_id, last_step=0, created_at=utcnow()))
    await s.flush()
    return secret


def secret_of(keys: crypto.KeyRing, row: WebTotp) -> bytes:
    return crypto.unwrap_secret(keys.master(row.master_key_id), row.wrapped_secret,
                                _context(row.principal_kind, row.principal_id))


async def check(s: AsyncSession, keys: crypto.KeyRing, row: WebTotp, code: str,
                now: float | None = None) -> bool:
    """Accept ``code`` once; confirms a pending registration."""
    step = matching_step(secret_of(keys, row), code, time.time() if now is None else now,
                         row.last_step)
    if step is None:
        return False
    row.last_step = step
    if row.confirmed_at is None:
        row.confirmed_at = utcnow()
    await s.flush()
    return True


async def remove(s: AsyncSession, kind: str, principal_id: int) -> None:
    await s.execute(delete(WebTotp).where(WebTotp.principal_kind == kind,
                                          WebTotp.principal_id == principal_id))


class TotpSecrets:
    """The ``web_totp`` secrets as a :class:`missive.mailbox.keys.MasterWrapped` holder (C4)."""

    name = "web_totp"

    async def rewrap(self, s: AsyncSession, keys: crypto.KeyRing,
                     new: crypto.MasterKey) -> int:
        count = 0
        for row in (await s.execute(select(WebTotp).order_by(WebTotp.id))).scalars():
            secret = secret_of(keys, row)
            row.wrapped_secret = crypto.wrap_secret(
                new, secret, _context(row.principal_kind, row.principal_id))
            row.master_key_id = new.key_id
            count += 1
        await s.flush()
        return count

    async def uses_master(self, s: AsyncSession, key_id: str) -> bool:
        found = (await s.execute(select(WebTotp.id).where(
            WebTotp.master_key_id == key_id).limit(1))).scalar()
        return found is not None


#: What ``missive.runtime.MASTER_WRAPPED`` names.
SECRETS = TotpSecrets()
