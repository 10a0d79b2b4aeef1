"""Master-key rotation (C4): re-wrap every mailbox KEK, never re-encrypt messages.

Crash safety, step by step:

1. the new key is written to ``master.key.new`` (0600, fsynced);
2. one key-store transaction re-wraps every mailbox KEK under the new key and records its id on
   each row;
3. one main-database transaction re-wraps the other secrets the master key wraps directly (the
   :class:`MasterWrapped` holders the caller passes: the webmail's authenticator secrets) and
   writes the audit entry;
4. ``master.key.new`` atomically replaces ``master.key``.

A crash after 1 leaves the old key current and a harmless spare file (the next rotation
overwrites it). A crash after 2 or 3 leaves rows naming the new key id: :func:`crypto.load_keyring`
loads both files and picks per row, and the next rotation (:func:`finish_pending`) re-wraps
whatever still names the old key, then completes step 4. After step 4 the old key is gone from
disk and opens nothing (every row was re-wrapped).

Holders, not imports: secrets of a front (``web_totp``) live in that front's tables, and the
core never imports a front (ARCHITECTURE.md). The wiring (``missive.runtime.master_wrapped``)
hands the holders in; a rotation without them would strand those secrets under a deleted key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from missive.audit import log as audit
from missive.db.engine import Database
from missive.errors import KeyStoreUnavailable
from missive.mailbox import crypto
from missive.mailbox.keystore import KeyStore


class MasterWrapped(Protocol):
    """Secrets in the main database wrapped directly by the master key, outside the key store.

    Each stored secret names the master key that wraps it (``master_key_id``), so a holder can
    unwrap with ``keys.master(row_key_id)`` and re-wrap under ``new``; re-wrapping a row already
    under ``new`` must be harmless (a resumed rotation does it again).
    """

    name: str

    async def rewrap(self, s: AsyncSession, keys: crypto.KeyRing,
                     new: crypto.MasterKey) -> int:
        """Re-wrap every secret under ``new``; the number re-wrapped."""

    async def uses_master(self, s: AsyncSession, key_id: str) -> bool:
        """Whether some secret is wrapped under ``key_id``."""


@dataclass(frozen=True)
class RotationResult:
    old_key_id: str
    new_key_id: str
    rewrapped: int
    #: Other secrets re-wrapped, by holder name (``{"web_totp": 2}``).
    others: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"old_key_id": self.old_key_id, "new_key_id": self.new_key_id,
                "rewrapped": self.rewrapped, "others": dict(self.others)}


async def rotate_master_key(db: Database, keystore: KeyStore, keys: crypto.KeyRing,
                            master_path: os.PathLike[str] | str, *,
                            holders: Sequence[MasterWrapped] = ()) -> RotationResult:
    """Rotate the file-held master key; ``keys`` must hold the current one.

    ``holders`` are the other secrets the master key wraps (see the module docstring).
    """
    path = Path(master_path)
    await finish_pending(db, keystore, keys, path, holders=holders)
    old = keys.master()
    new = crypto.MasterKey.generate()
    pending = path.with_name(path.name + ".new")
    crypto.write_key_file(pending, new.encode())
    count = await keystore.rewrap_all(new)
    async with db.write() as s:
        others = await _rewrap_holders(s, holders, keys, new)
        await audit.append(s, "keys.rotate", actor="operator",
                           details={"old": old.key_id, "new": new.key_id, "rewrapped": count,
                                    **_flat(others)})
    _install(pending, path)
    keys.masters = {new.key_id: new}
    keys.current_master_id = new.key_id
    return RotationResult(old.key_id, new.key_id, count, others)


async def _rewrap_holders(s: AsyncSession, holders: Sequence[MasterWrapped],
                          keys: crypto.KeyRing, new: crypto.MasterKey) -> dict[str, int]:
    return {h.name: await h.rewrap(s, keys, new) for h in holders}


def _flat(others: dict[str, int]) -> dict[str, str | int | bool | None]:
    """Audit details are flat: ``{"rewrapped_web_totp": 2}``."""
    return {f"rewrapped_{name}": n for name, n in others.items()}


def _install(pending: Path, path: Path) -> None:
    os.replace(pending, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def finish_pending(db: Database, keystore: KeyStore, keys: crypto.KeyRing, path: Path,
                         *, holders: Sequence[MasterWrapped] = ()) -> None:
    """Complete or discard a rotation a crash interrupted (see the module docstring).

    Nothing wrapped under the spare key: discard it. Something is: the crash came after step 2
    (or 3), so re-wrap everything under the spare key (rows already under it are re-wrapped
    again, harmlessly) and install it.
    """
    pending = path.with_name(path.name + ".new")
    if not pending.exists():
        return
    spare = crypto.MasterKey.decode(crypto.read_key_file(pending))
    used = await keystore.uses_master(spare.key_id)
    if not used and holders:
        async with db.read() as s:
            for holder in holders:
                used = used or await holder.uses_master(s, spare.key_id)
    if not used:
        pending.unlink()
        keys.masters.pop(spare.key_id, None)
        return
    keys.masters[spare.key_id] = spare
    await keystore.rewrap_all(spare)
    async with db.write() as s:
        others = await _rewrap_holders(s, holders, keys, spare)
        await audit.append(s, "keys.rotate.resume", actor="operator",
                           details={"new": spare.key_id, **_flat(others)})
    _install(pending, path)
    keys.masters[spare.key_id] = spare
    keys.current_master_id = spare.key_id


def require_file_key(keys: crypto.KeyRing, env_key_set: bool) -> None:
    if env_key_set:
        raise KeyStoreUnavailable(
            "the master key comes from MISSIVE_STORE__MASTER_KEY: rotate it in your secret "
            "store with a file-held key instead (see docs/encryption.md)"
        )
    keys.master()
