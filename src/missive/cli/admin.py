"""``missive admin``: provisioning of the directory (SPEC §7 command-line contract).

``missive admin pro|patient|trust|delegates ACTION …``, every reporting action with ``--json``.
The families live in ``admin_pro``, ``admin_patient``, ``admin_trust`` and ``admin_delegates``;
other components add theirs through optional modules (``admin_keys``, ``admin_notify``,
``admin_queue``, ``admin_delegates_web``, ``admin_webmail``) exposing
``register(admin_subparsers)`` for a new family and/or ``register_<family>(family_subparsers)``
(``register_pro``, ``register_patient``, ``register_trust``, ``register_delegates``) to add
actions to one of ours.

Each action runs in one database transaction, audited in it (actor ``cli:<user>``); an error
rolls everything back and is printed as one sentence saying what to fix, with exit code 1
(2 for usage errors, from argparse).
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy.exc import DBAPIError, IntegrityError

from missive.cli import common
from missive.errors import MissiveError

if TYPE_CHECKING:
    from missive.directory.importers import ImportReport
    from missive.runtime import Core

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

#: Families registered here, in ``--help`` order.
FAMILIES = (
    "missive.cli.admin_pro",
    "missive.cli.admin_patient",
    "missive.cli.admin_trust",
    "missive.cli.admin_delegates",
)
#: Families other components contribute; absent ones are simply not offered.
OPTIONAL_FAMILIES = (
    "missive.cli.admin_keys",
    "missive.cli.admin_notify",
    "missive.cli.admin_queue",
    "missive.cli.admin_delegates_web",
    "missive.cli.admin_webmail",
)


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "admin",
        help="manage professionals, patients, the trust space, delegations",
        description="Directory administration. Every action that reports has --json.",
    )
    admin = p.add_subparsers(dest="admin_command", metavar="FAMILY", required=True)
    for name in FAMILIES:
        importlib.import_module(name).register(admin)
    for module in _optional_modules():
        hook = getattr(module, "register", None)
        if hook is not None:
            hook(admin)


def _optional_modules() -> list[ModuleType]:
    found = []
    for name in OPTIONAL_FAMILIES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
    return found


def extend_family(family: SubParsers, name: str) -> None:
    """Let optional modules add actions to a family: ``register_<name>(family_subparsers)``
    (e.g. ``admin_webmail.register_patient`` adds ``patient activation-code``)."""
    for module in _optional_modules():
        hook = getattr(module, f"register_{name}", None)
        if hook is not None:
            hook(family)


# Helpers shared by the admin_* modules ------------------------------------------------------


def actor() -> str:
    """Who is acting, for the audit log: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


@asynccontextmanager
async def open_core(args: argparse.Namespace, *, master_key: bool = True) -> AsyncIterator[Core]:
    """The core services for one command; directory errors become :class:`CommandError`."""
    from missive.runtime import build_core

    settings = common.settings_from(args)
    common.require_initialised(settings)
    try:
        core = await build_core(settings, with_master_key=master_key)
    except MissiveError as exc:
        raise common.CommandError(str(exc)) from None
    try:
        yield core
    except (MissiveError, ValueError) as exc:
        # DirectoryError, NotFound, InsError, RppsError, AddressError, PasswordError: each
        # message already says which field is wrong and why.
        raise common.CommandError(str(exc)) from None
    except IntegrityError as exc:
        # Another process created the same INS, RPPS or address between our check and our
        # insert: the transaction was rolled back, nothing changed.
        raise common.CommandError(
            f"a concurrent change conflicts with this one, nothing changed; run it again "
            f"({exc.orig})") from None
    except (OSError, DBAPIError) as exc:
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        raise common.CommandError(
            f"database error, nothing changed: {reason}. Check that the database "
            f"({_where(settings.sqlalchemy_url)}) is reachable") from None
    finally:
        await core.close()


def _where(url: str) -> str:
    """The database location without credentials."""
    return url.split("@", 1)[-1] if "@" in url else url.split("///", 1)[-1]


def read_password(args: argparse.Namespace, *, required: bool = False) -> str | None:
    """The password from stdin (``--password-stdin``: first line) or a terminal prompt."""
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise common.CommandError("--password-stdin: no password on standard input")
        return line
    if not required:
        return None
    if not sys.stdin.isatty():
        raise common.CommandError("give the password with --password-stdin (stdin is not a "
                                  "terminal)")
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Repeat it: "):
        raise common.CommandError("the two passwords differ; nothing changed")
    if not first:
        raise common.CommandError("the password must not be empty")
    return first


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise common.CommandError(f"cannot read {what} {path}: {exc.strerror}") from None


def key_values(data: dict[str, Any], order: Iterable[str] | None = None) -> str:
    """Human output of one record: ``key: value`` lines, aligned."""
    keys = list(order) if order is not None else list(data)
    width = max((len(k) for k in keys), default=0)
    lines = []
    for k in keys:
        value = data.get(k)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        elif value is None or value == "":
            value = "-"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        lines.append(f"{k.replace('_', ' ').ljust(width)}  {value}")
    return "\n".join(lines)


def report_import(
    args: argparse.Namespace, report: ImportReport, noun: str, *, unit: str = "line "
) -> int:
    """Print an import report; exit 1 when the file was rejected (nothing imported)."""
    data = report.to_dict()
    if args.json:
        common.emit(data, as_json=True)
    else:
        for err in report.errors:
            sys.stderr.write(f"{unit}{err.line}: {err.reason}\n")
        for note in report.notes:
            (sys.stderr if ": warning: " in note else sys.stdout).write(note + "\n")
    if report.rejected:
        if args.json:
            return 1
        raise common.CommandError(
            f"{len(report.errors)} invalid row(s) out of {report.rows}: nothing imported. "
            "Fix them, or run again with --skip-invalid to import the valid rows only"
        )
    if not args.json and not getattr(args, "dry_run", False):
        extra = f", {report.updated} updated" if report.updated else ""
        skipped = f", {len(report.errors)} invalid row(s) skipped" if report.errors else ""
        sys.stdout.write(f"{report.imported} {noun} imported{extra}{skipped}\n")
    return 0


def add_parser(
    family: SubParsers,
    name: str,
    func: Callable[[argparse.Namespace], Any],
    help_text: str,
    *,
    json: bool = True,
) -> argparse.ArgumentParser:
    p = family.add_parser(name, help=help_text, description=help_text)
    if json:
        common.add_json(p)
    p.set_defaults(func=func)
    return p
