"""Shared fixtures: settings on a temporary data directory, and a ``core`` on each backend.

``core`` is parametrised over ``sqlite`` and ``postgres``. Each PostgreSQL test gets its own
schema in the ``test`` database (dropped afterwards), so parallel or repeated runs never collide.
When PostgreSQL is unreachable those cases skip and say why, unless
``MISSIVE_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), which turns that into a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from missive.config import Settings
from support import PG_BASE, make_settings, require_postgres


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test; dropped afterwards."""
    require_postgres()
    import asyncio

    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    dsn = PG_BASE.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_BASE}?search_path={schema}"
    finally:
        asyncio.run(run(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgres"])
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on SQLite or on a private PostgreSQL schema."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        return make_settings(tmp_path / "data", database_url=url)
    return make_settings(tmp_path / "data")


@pytest.fixture
async def core(backend_settings: Settings) -> AsyncIterator[Any]:
    """A ``Core`` with the master key, schema created, relay mailbox present."""
    from missive.db.schema import create_schema
    from missive.runtime import build_core

    backend_settings.data_dir.mkdir(parents=True, exist_ok=True)
    c = await build_core(backend_settings, with_master_key=True)
    await create_schema(c.db)
    await c.store.ensure_system_mailbox()
    try:
        yield c
    finally:
        await c.close()
