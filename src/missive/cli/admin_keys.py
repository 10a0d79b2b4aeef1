"""``missive admin keys rotate|show``: master-key rotation (C4)."""

from __future__ import annotations

import argparse

from missive.cli import common
from missive.errors import MissiveError


def register(admin: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = admin.add_parser("keys", help="master key")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    r = ksub.add_parser("rotate", help="new master key; re-wraps mailbox keys and other "
                                        "wrapped secrets, not messages")
    common.add_json(r)
    r.set_defaults(func=rotate)


async def rotate(args: argparse.Namespace) -> int:
    from missive.mailbox.keys import require_file_key, rotate_master_key
    from missive.runtime import build_core, master_wrapped

    settings = common.settings_from(args)
    common.require_initialised(settings)
    try:
        core = await build_core(settings, with_master_key=True)
    except MissiveError as exc:
        raise common.CommandError(str(exc)) from None
    try:
        require_file_key(core.keys, settings.store.master_key is not None)
        assert core.keystore is not None  # noqa: S101 - built with the master key
        result = await rotate_master_key(core.db, core.keystore, core.keys,
                                         settings.master_key_path, holders=master_wrapped())
    except MissiveError as exc:
        raise common.CommandError(f"rotation failed, nothing changed: {exc}") from None
    finally:
        await core.close()
    common.emit(result.to_dict(), as_json=args.json,
                human=f"master key rotated ({result.old_key_id} -> {result.new_key_id}); "
                      f"{result.rewrapped} mailbox keys re-wrapped"
                      + "".join(f", {n} {name} secrets re-wrapped"
                                for name, n in result.others.items()))
    return 0
