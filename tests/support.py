"""Helpers shared by test modules (importable as ``support``: ``tests`` is on ``pythonpath``).

Fixtures live in ``conftest.py``; plain functions that test modules import live here, because
several directories have a ``conftest.py`` and ``from conftest import …`` would pick whichever
was imported last.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from missive.config import Settings, load_settings
from missive.mailbox import crypto

PG_HOST = os.environ.get("MISSIVE_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MISSIVE_TEST_PG_PORT", "5432"))
PG_BASE = os.environ.get(
    "MISSIVE_TEST_PG_URL", f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/test"
)


def postgres_available() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip (or fail under CI) when PostgreSQL is not reachable."""
    if postgres_available():
        return
    message = f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}"
    if os.environ.get("MISSIVE_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " and MISSIVE_REQUIRE_POSTGRES=1")
    pytest.skip(message)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Test settings: development-safe values, keys created, nothing listening yet."""
    base: dict[str, Any] = {
        "environment": "test",
        "domain": "test.missive.localhost",
        "test_mode": True,
    }
    base.update(overrides)
    settings = load_settings(data_dir, **base)
    crypto.create_key_files(settings.master_key_path, settings.index_key_path)
    return settings
