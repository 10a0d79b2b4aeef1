"""Fixtures for the webmail tests: a core on SQLite and the app over ASGI.

Plain helpers live in ``webmail_support.py`` (test modules import them from there: several
directories have a ``conftest.py``, so ``from conftest import …`` is ambiguous).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from webmail_support import FakeOtp, make_core, web_settings

from missive.runtime import Core


@pytest.fixture
async def wcore(tmp_path: Path) -> AsyncIterator[Core]:
    core = await make_core(web_settings(tmp_path / "data"))
    try:
        yield core
    finally:
        await core.close()


@pytest.fixture
def otp() -> FakeOtp:
    return FakeOtp()


@pytest.fixture
async def client(wcore: Core, otp: FakeOtp) -> AsyncIterator[httpx.AsyncClient]:
    from missive.webmail.app import create_app

    app = create_app(wcore.settings, wcore, otp_sender=otp)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
        yield c
