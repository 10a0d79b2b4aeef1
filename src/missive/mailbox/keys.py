"""Master-key rotation (C4): re-wrap every mailbox KEK, never re-encrypt messages.

Crash safety, step by step:

1. the new key is written to ``master.key.new`` (0600, fsynced);
2. one key-store transaction re-wraps every mailbox KEK under the new key and records its id on
   each row;
3. ``master.key.new`` atomically replaces ``master.key``.

A crash after 1 leaves the old key current and a harmless spare file (the next rotation
overwrites it). A crash after 2 leaves rows naming the new key id: :func:`crypto.load_keyring`
loads both files and picks per row, and the next rotation or :func:`finish_pending` completes
step 3. After step 3 the old key is gone from disk and opens no key (the rows were re-wrapped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from missive.audit import log as audit
from missive.db.engine import Database
from missive.errors import KeyStoreUnavailable
from missive.mailbox import crypto
from missive.mailbox.keystore import KeyStore


@dataclass(frozen=True)
class RotationResult:
    old_key_id: str
    new_key_id: str
    rewrapped: int

    def to_dict(self) -> dict[str, object]:
        return {"old_key_id": self.old_key_id, "new_key_id": self.new_key_id,
                "rewrapped": self.rewrapped}


async def rotate_master_key(db: Database, keystore: KeyStore, keys: crypto.KeyRing,
                            master_path: os.PathLike[str] | str) -> RotationResult:
    """Rotate the file-held master key; ``keys`` must hold the current one."""
    path = Path(master_path)
    await finish_pending(keystore, keys, path)
    old = keys.master()
    new = crypto.MasterKey.generate()
    pending = path.with_name(path.name + ".new")
    crypto.write_key_file(pending, new.encode())
    count = await keystore.rewrap_all(new)
    async with db.write() as s:
        await audit.append(s, "keys.rotate", actor="operator",
                           details={"old": old.key_id, "new": new.key_id, "rewrapped": count})
    _install(pending, path)
    keys.masters = {new.key_id: new}
    keys.current_master_id = new.key_id
    return RotationResult(old.key_id, new.key_id, count)


def _install(pending: Path, path: Path) -> None:
    os.replace(pending, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def finish_pending(keystore: KeyStore, keys: crypto.KeyRing, path: Path) -> None:
    """Complete or discard a rotation a crash interrupted (see the module docstring)."""
    pending = path.with_name(path.name + ".new")
    if not pending.exists():
        return
    spare = crypto.MasterKey.decode(crypto.read_key_file(pending))
    if not await keystore.uses_master(spare.key_id):
        pending.unlink()
        keys.masters.pop(spare.key_id, None)
        return
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
