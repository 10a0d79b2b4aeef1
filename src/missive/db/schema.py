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
