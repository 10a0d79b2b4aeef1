"""Liveness and readiness probes (SPEC §7): no session, no content."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from missive.webmail.deps import WebDep

router = APIRouter()


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(web: WebDep) -> JSONResponse:
    try:
        async with web.core.db.read() as s:
            await s.execute(text("SELECT 1"))
        web.core.keys.master()
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as 503
        return JSONResponse({"status": "unavailable", "reason": type(exc).__name__},
                            status_code=503)
    return JSONResponse({"status": "ready"})
