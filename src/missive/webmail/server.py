"""Running the webmail inside ``missive serve`` (SPEC §7): uvicorn on the running event loop.

``start(core)`` builds the app, starts a uvicorn ``Server`` as a task of the current loop (so it
shares the process with the SMTP/IMAP fronts and the workers), waits until it listens, and
returns a :class:`WebFront` with ``ports = {"web": port}``. A configured port 0 picks a free
port; the real one is read back from the socket. uvicorn's own signal handling is disabled:
``runtime.serve`` owns SIGTERM/SIGINT and calls :meth:`WebFront.stop`. Access logs are off (no
URL of a patient's mailbox in logs). A housekeeping task deletes expired sessions every
``PURGE_SECONDS`` and drops their opened mailboxes from memory (C6), so that an unwrapped key
does not outlive its session even when the browser never comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn

from missive.runtime import Core
from missive.webmail.app import create_app
from missive.webmail.deps import Web

log = logging.getLogger(__name__)
PURGE_SECONDS = 60.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to ``runtime.serve``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def housekeeping(web: Web, every: float = PURGE_SECONDS) -> None:
    """Forever: purge expired sessions and forget their keys."""
    while True:
        await asyncio.sleep(every)
        try:
            await purge_once(web)
        except Exception:
            log.exception("web session purge failed")


async def purge_once(web: Web) -> int:
    async with web.core.db.write() as s:
        ended = await web.sessions.purge_expired(s)
    for sid in ended:
        web.vault.drop_session(sid)
    return len(ended)


class WebFront:
    def __init__(self, server: _Server, task: asyncio.Task[None], port: int,
                 janitor: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task
        self._janitor = janitor
        self.ports = {"web": port}

    async def stop(self) -> None:
        self._janitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._janitor
        self._server.should_exit = True
        try:
            await asyncio.wait_for(self._task, timeout=10)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def start(core: Core) -> WebFront:
    settings = core.settings
    otp = core.extras.get("webmail.otp_sender")  # harnesses and benchmarks may inject one
    app = create_app(settings, core, otp_sender=otp)  # type: ignore[arg-type]
    config = uvicorn.Config(app, host=settings.webmail.bind, port=settings.webmail.port,
                            log_config=None, access_log=False, lifespan="off",
                            server_header=False, proxy_headers=False)
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name="missive-web")
    while not server.started:
        if task.done():
            task.result()  # raises the startup error (port in use…)
            raise RuntimeError("the web front stopped during startup")
        await asyncio.sleep(0.02)
    port = settings.webmail.port
    for srv in server.servers:
        for sock in srv.sockets:
            port = int(sock.getsockname()[1])
            break
    log.info("webmail listening on %s:%s", settings.webmail.bind, port)
    janitor = asyncio.create_task(housekeeping(app.state.web), name="missive-web-purge")
    return WebFront(server, task, port, janitor)
