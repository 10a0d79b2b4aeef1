"""Alembic environment for Missive.

Used two ways: programmatically by :func:`missive.db.schema.upgrade` (a live connection is passed
in ``config.attributes["connection"]``), and by developers through ``alembic`` with the
repository's ``alembic.ini`` to autogenerate a revision against ``MISSIVE_DATABASE_URL`` (or a
scratch SQLite file).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

from missive.db.schema import all_metadata

config = context.config
target_metadata = all_metadata()


def _configure(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite ALTER TABLE goes through table copies
        compare_type=True,
    )


connection = config.attributes.get("connection")
if connection is not None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()
else:
    url = os.environ.get("MISSIVE_SYNC_DATABASE_URL", "sqlite:///./migration-scratch.db")
    engine = create_engine(url)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
