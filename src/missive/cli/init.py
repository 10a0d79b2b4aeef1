"""``missive init``: data directory, configuration, keys, database schema, CA and certificates.

Idempotent: running it again on an initialised directory checks and completes what is missing
(a lost certificate, a new migration) and never replaces keys — replacing the master key would
make every mailbox unreadable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tomllib
from typing import Any

from missive.cli import common
from missive.config import Settings, load_settings
from missive.errors import MissiveError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create or complete a data directory")
    p.add_argument("--domain", help="operator domain of professionals (default missive.localhost)")
    p.add_argument("--patient-domain", help="patient domain (default patient.DOMAIN)")
    p.add_argument("--test-mode", action="store_true",
                   help="accept only INS test/demo OIDs (interoperability and demo deployments)")
    common.add_json(p)
    p.set_defaults(func=run)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(settings_dir: os.PathLike[str] | str, values: dict[str, Any]) -> None:
    from pathlib import Path

    from missive.config import example_toml

    path = Path(settings_dir) / "missive.toml"
    lines = ["# Written by `missive init`. Keys below override the defaults; see the commented",
             "# example further down for every setting.", ""]
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {_toml_string(str(value))}")
    body = "\n".join(lines) + "\n\n" + "\n".join(
        "# " + line if line and not line.startswith("#") else line
        for line in example_toml().splitlines()) + "\n"
    path.write_text(body)


async def initialise(settings: Settings) -> dict[str, Any]:
    """Everything ``init`` does after the configuration exists; returns a report."""
    from missive.db.schema import upgrade
    from missive.mailbox import crypto
    from missive.runtime import build_core

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    settings.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.store.master_key is None:
        crypto.create_key_files(settings.master_key_path, settings.index_key_path)
    elif not settings.index_key_path.exists():
        crypto.create_key_files(settings.keys_dir / ".unused-master", settings.index_key_path)
        (settings.keys_dir / ".unused-master").unlink()
    core = await build_core(settings, with_master_key=True)
    try:
        revision = await upgrade(core.db)
        relay_id = await core.store.ensure_system_mailbox()
    finally:
        await core.close()
    report: dict[str, Any] = {
        "data_dir": str(settings.data_dir),
        "domain": settings.domain,
        "patient_domain": settings.patient_domain,
        "test_mode": settings.test_mode,
        "database": settings.sqlalchemy_url.split("@")[-1],
        "schema_revision": revision,
        "relay_mailbox": relay_id,
    }
    try:
        from missive.certs import ca
    except ModuleNotFoundError:
        report["certificates"] = "certs component not available"
    else:
        ca.ensure_initialised(settings)
        report["certificates"] = str(settings.certs_dir)
    return report


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    data_dir = Path(args.data_dir).expanduser().resolve()
    config_file = data_dir / "missive.toml"
    existing: dict[str, Any] = {}
    if config_file.exists():
        try:
            existing = tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise common.CommandError(f"{config_file} is not valid TOML: {exc}") from None
    wanted: dict[str, Any] = {}
    if args.domain:
        wanted["domain"] = args.domain.lower().rstrip(".")
    if args.patient_domain:
        wanted["patient_domain"] = args.patient_domain.lower().rstrip(".")
    if args.test_mode:
        wanted["test_mode"] = True
    for key, value in wanted.items():
        if key in existing and existing[key] != value:
            raise common.CommandError(
                f"{data_dir} is already initialised with {key} = {existing[key]!r}; "
                f"edit {config_file} to change it")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not config_file.exists():
        write_config(data_dir, {"domain": wanted.get("domain", "missive.localhost"), **wanted})
    try:
        settings = load_settings(data_dir)
    except MissiveError as exc:
        raise common.CommandError(str(exc)) from None
    report = asyncio.run(initialise(settings))
    common.emit(report, as_json=args.json, human=lambda r: "\n".join(
        [f"Initialised {r['data_dir']}"] + [f"  {k}: {v}" for k, v in r.items() if k != "data_dir"]
    ))
    return 0
