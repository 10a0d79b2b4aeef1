"""Public pages without a session: liveness and readiness probes (SPEC §7), help and the
accessibility statement."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from missive.webmail.deps import WebDep

router = APIRouter()


@router.get("/aide")
async def help_page(request: Request) -> Response:
    """Plain-language help and the accessibility statement (public)."""
    from missive.webmail.app import page

    return page(request, "help.html", {"title": "Aide et accessibilité"})


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
