"""The web front as ``missive serve`` runs it: uvicorn on the running loop, port 0, probes,
``run/ports.json``, housekeeping of expired sessions."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select, update
from webmail_support import make_core, web_settings  # type: ignore[import-not-found]

from missive.db.base import utcnow
from missive.runtime import serve
from missive.webmail.models import WebSession


async def test_serve_only_web_writes_ports_and_answers_probes(tmp_path: Path) -> None:
    core = await make_core(web_settings(tmp_path / "data", webmail={"port": 0}))
    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(core, only=["web"], ready=ready.set_result,
                                     stop_event=stop))
    try:
        ports = await asyncio.wait_for(ready, 30)
        on_disk = json.loads((core.settings.run_dir / "ports.json").read_text())
        assert on_disk["web"] == ports["web"] > 0
        base = f"http://127.0.0.1:{ports['web']}"
        async with httpx.AsyncClient() as c:
            assert (await c.get(base + "/healthz")).json() == {"status": "ok"}
            assert (await c.get(base + "/readyz")).status_code == 200
            login = await c.get(base + "/connexion")
            assert login.status_code == 200 and "server" not in login.headers
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await core.close()
    assert not (core.settings.run_dir / "ports.json").exists()


async def test_purge_deletes_expired_sessions_and_their_keys(tmp_path: Path) -> None:
    from missive.webmail.app import create_app
    from missive.webmail.server import purge_once

    core = await make_core(web_settings(tmp_path / "data"))
    try:
        app = create_app(core.settings, core)
        web = app.state.web
        async with core.db.write() as s:
            _cookie, old = await web.sessions.create(s)
            _cookie, live = await web.sessions.create(s)
            await s.execute(update(WebSession).where(WebSession.id == old.id).values(
                expires_at=utcnow() - timedelta(seconds=1)))
        mailbox_id = await core.store.ensure_system_mailbox()
        await web.vault.get(old.id, mailbox_id)
        await web.vault.get(live.id, mailbox_id)
        assert await purge_once(web) == 1
        assert len(web.vault) == 1
        async with core.db.read() as s:
            assert (await s.execute(select(func.count(WebSession.id)))).scalar_one() == 1
    finally:
        await core.close()
