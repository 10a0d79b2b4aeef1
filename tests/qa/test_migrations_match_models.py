"""The Alembic migrations build exactly the schema the models declare (SPEC §7: "Storage
through SQLAlchemy 2 with Alembic migrations").

``missive init`` and ``serve`` migrate with :func:`missive.db.schema.upgrade`, while tests build
tables straight from the models (``create_schema``). If a component adds or changes a table
without a migration, production databases silently lack it: this test compares a database
migrated to the head revision with :func:`missive.db.schema.all_metadata` using Alembic's own
autogenerate comparison (with ``compare_type``, as ``migrations/env.py`` does), on SQLite and on
PostgreSQL. A failure lists each difference and says how to regenerate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Index, Table, inspect
from sqlalchemy.engine import Connection

from missive.db.engine import Database
from missive.db.schema import _alembic_config, all_metadata, upgrade

FIX = ("the models and the migrations differ: before the first release the lead regenerates "
       "the initial migration with scripts/regen-initial-migration.sh; afterwards, add a "
       "revision with `alembic revision --autogenerate`")


def describe(diff: Any) -> str:
    """One line per difference, naming the table, column or index."""
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(describe(d) for d in diff)
    op, *args = diff
    names = []
    for a in args:
        if isinstance(a, Table | Index):
            names.append(f"{type(a).__name__.lower()} {a.name}")
        elif isinstance(a, Column):
            names.append(f"column {a.table.name}.{a.name}")
        elif a is not None and not isinstance(a, dict):
            names.append(repr(a)[:120])
    return f"{op}: {', '.join(names)}"


async def compare(db: Database) -> list[Any]:
    """Alembic's differences between ``db`` and the models."""

    def run(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, all_metadata()))

    async with db.engine.connect() as conn:
        return await conn.run_sync(run)


def differences(db_url: str) -> tuple[str | None, list[str]]:
    import asyncio

    async def run() -> tuple[str | None, list[Any]]:
        db = Database(db_url)
        try:
            return await upgrade(db), await compare(db)
        finally:
            await db.dispose()

    revision, diffs = asyncio.run(run())
    return revision, [describe(d) for d in diffs]


def head() -> str | None:
    script = ScriptDirectory.from_config(_alembic_config())  # type: ignore[arg-type]
    heads = script.get_heads()
    assert len(heads) == 1, f"several migration heads {heads}: merge them"
    return heads[0]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"


def test_migrated_database_matches_models(db_url: str) -> None:
    revision, diffs = differences(db_url)
    assert revision == head()
    assert diffs == [], FIX + ":\n  " + "\n  ".join(diffs)


def test_every_model_table_is_created_by_the_migrations(tmp_path: Path) -> None:
    """The same check by table names only, so its message is short when a table is missing."""
    import asyncio

    async def tables() -> set[str]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}")
        try:
            await upgrade(db)
            async with db.engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await db.dispose()

    migrated = asyncio.run(tables()) - {"alembic_version"}
    declared = set(all_metadata().tables)
    assert declared, "no model table found"
    assert sorted(declared - migrated) == [], f"tables without a migration; {FIX}"
    assert sorted(migrated - declared) == [], f"tables no model declares any more; {FIX}"


def test_comparison_has_no_noise(tmp_path: Path) -> None:
    """Tables made straight from the models compare equal: a difference above is real."""
    import asyncio

    from missive.db.schema import create_schema

    async def run() -> list[Any]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'created.db'}")
        try:
            await create_schema(db)
            return await compare(db)
        finally:
            await db.dispose()

    assert [describe(d) for d in asyncio.run(run())] == []


def test_describe_names_what_differs() -> None:
    from sqlalchemy import Integer, MetaData, String

    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("x", String))
    assert describe(("add_table", table)) == "add_table: table t"
    assert describe(("remove_column", None, "t", table.c.x)) == "remove_column: 't', column t.x"
    assert "modify_type" in describe([("modify_type", None, "t", "x", {}, String(), Integer())])
