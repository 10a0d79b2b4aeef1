"""Argon2id password hashing for professionals, patients and delegates (SPEC §5, P3).

Parameters: RFC 9106 §4 "second recommended option" (``argon2.profiles.RFC_9106_LOW_MEMORY``:
t=3, m=64 MiB, p=4) in development and production; the cheapest parameters
(``profiles.CHEAPEST``) when ``settings.environment == "test"`` so that test suites stay fast.
Hashes are self-describing (PHC string), so a hash made with other parameters still verifies and
:func:`verify_password` says when it should be rehashed.

Verification runs in a worker thread (Argon2 is deliberately slow: it must not stall the event
loop of an SMTP or IMAP front). An unknown login is verified against a dummy hash made with the
same parameters, so that the time taken does not reveal whether an account exists.

Invariants: a password is never logged or stored in clear; an empty password is refused.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from missive.config import Settings

#: Longest password accepted: Argon2 takes any length, but a multi-megabyte "password" is a
#: denial-of-service attempt, not a credential.
MAX_PASSWORD_LENGTH = 1024


class PasswordError(ValueError):
    """A password cannot be used (empty, too long); the message says why."""


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    needs_rehash: bool = False


@functools.cache
def _hasher(test: bool) -> PasswordHasher:
    params = profiles.CHEAPEST if test else profiles.RFC_9106_LOW_MEMORY
    return PasswordHasher.from_parameters(params)


@functools.cache
def _dummy_hash(test: bool) -> str:
    # Built on first use (never at import time) with the same parameters as real hashes.
    return _hasher(test).hash("missive-dummy-password-never-matches")


def hasher_for(settings: Settings) -> PasswordHasher:
    return _hasher(settings.environment == "test")


def check_password_value(password: str) -> None:
    if not password:
        raise PasswordError("password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordError(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


def hash_password_sync(settings: Settings, password: str) -> str:
    check_password_value(password)
    return hasher_for(settings).hash(password)


async def hash_password(settings: Settings, password: str) -> str:
    """The Argon2id PHC string for ``password`` (computed off the event loop)."""
    check_password_value(password)
    return await asyncio.to_thread(hasher_for(settings).hash, password)


def _verify_sync(test: bool, stored: str | None, password: str) -> PasswordCheck:
    hasher = _hasher(test)
    if stored is None or not password or len(password) > MAX_PASSWORD_LENGTH:
        # Same work as a real check, whatever the outcome.
        try:
            hasher.verify(_dummy_hash(test), password or "-")
        except (VerificationError, InvalidHashError):
            pass
        return PasswordCheck(ok=False)
    try:
        hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return PasswordCheck(ok=False)
    return PasswordCheck(ok=True, needs_rehash=hasher.check_needs_rehash(stored))


async def verify_password(settings: Settings, stored: str | None, password: str) -> PasswordCheck:
    """Check ``password`` against ``stored`` (``None``: unknown account, always fails).

    ``needs_rehash`` is true when the password matched but was hashed with other parameters.
    """
    return await asyncio.to_thread(_verify_sync, settings.environment == "test", stored, password)
