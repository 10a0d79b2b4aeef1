"""Operations endpoint: Prometheus ``/metrics``, ``/healthz`` and ``/readyz`` (SPEC §7).

A separate loopback listener (``ops.port``, default 9108), not the patient-facing web front:
metrics describe the service (queue depths, certificate expiry, notification counters), never
content, but they are for the operator's scraper only. ``/healthz`` answers while the process
runs; ``/readyz`` answers 200 only when the database answers a query.

Written on ``asyncio.start_server`` (a dozen lines of HTTP/1.0) rather than
``prometheus_client.start_http_server``, which runs its own thread and cannot check the
database on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import text

if TYPE_CHECKING:
    from missive.runtime import Core

log = logging.getLogger(__name__)
_MAX_REQUEST = 8192


def registry_of(core: Core) -> CollectorRegistry:
    """The process's metrics registry (created on first use, shared by every front)."""
    registry = core.extras.get("metrics_registry")
    if not isinstance(registry, CollectorRegistry):
        registry = CollectorRegistry()
        core.extras["metrics_registry"] = registry
    return registry


class OpsFront:
    def __init__(self, core: Core, server: asyncio.Server, port: int) -> None:
        self.core = core
        self.server = server
        self.ports = {"ops": port}

    async def stop(self) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await self.server.wait_closed()


async def _ready(core: Core) -> bool:
    try:
        async with core.db.read() as s:
            await s.execute(text("SELECT 1"))
    except Exception:
        log.warning("readyz: database not reachable", exc_info=True)
        return False
    return True


async def start(core: Core) -> OpsFront:
    registry = registry_of(core)
    queue = Gauge("missive_queue_pending", "Rows waiting in a queue", ["queue"],
                  registry=registry)
    try:
        from missive.certs.metrics import register_metrics

        register_metrics(registry, core.settings)
    except Exception:
        log.warning("certificate metrics unavailable", exc_info=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        parts = head.split(b" ", 2)
        path = parts[1].decode("ascii", "replace") if len(parts) > 1 else ""
        status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
        if parts[0] != b"GET":
            status, body = "405 Method Not Allowed", b"GET only\n"
        elif path == "/healthz":
            status, body = "200 OK", b"ok\n"
        elif path == "/readyz":
            ok = await _ready(core)
            status, body = ("200 OK", b"ready\n") if ok else ("503 Service Unavailable",
                                                               b"database unavailable\n")
        elif path == "/metrics":
            with contextlib.suppress(Exception):
                for name, value in (await core.store.stats()).items():
                    if name.endswith("_pending"):
                        queue.labels(name.removesuffix("_pending")).set(value)
            status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(registry)
        writer.write(f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                     f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, core.settings.ops.bind, core.settings.ops.port,
                                        limit=_MAX_REQUEST)
    port = server.sockets[0].getsockname()[1]
    return OpsFront(core, server, port)
