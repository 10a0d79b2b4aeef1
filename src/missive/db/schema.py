"""The whole schema: importing every component's models, creating and migrating it.

``create_schema`` builds the tables straight from the models (tests); ``upgrade`` runs the Alembic
migrations (``missive init`` and ``serve``); ``tests/qa`` checks both agree.
"""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

from missive.db.base import Base
from missive.db.engine import Database

#: Every module that declares tables. A component's models are optional until it exists.
MODEL_MODULES = (
    "missive.mailbox.models",
    "missive.audit.models",
    "missive.directory.models",
    "missive.notify.models",
    "missive.mta.models",
    "missive.webmail.models",
    "missive.imap.models",
)


def all_metadata() -> MetaData:
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return Base.metadata


async def create_schema(db: Database) -> None:
    metadata = all_metadata()
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


def _alembic_config() -> object:
    from pathlib import Path

    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return cfg


async def upgrade(db: Database) -> str | None:
    """Migrate the database to the newest revision; returns that revision id."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = _alembic_config()

    def _run(sync_conn: object) -> str | None:
        cfg.attributes["connection"] = sync_conn  # type: ignore[attr-defined]
        command.upgrade(cfg, "head")  # type: ignore[arg-type]
        return MigrationContext.configure(sync_conn).get_current_revision()  # type: ignore[arg-type]

    async with db.engine.begin() as conn:
        return await conn.run_sync(_run)
