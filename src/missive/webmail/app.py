"""The patient webmail application (SPEC §5): ``create_app(settings, core) -> FastAPI``.

Server-rendered (Jinja2), usable without JavaScript; one stylesheet in ``static/``; no inline
script or style (the CSP forbids them). Routers, one per resource, live in ``routes/``. Nothing
is built at import time: tests and ``webmail.server`` build their own app.

Implementation notes: the session is loaded and the CSRF token checked by application-wide
dependencies (``deps.load_session`` then ``security.csrf_protect``) before any route runs; the
unwrapped mailbox keys live in the app's :class:`~missive.webmail.keys.KeyVault` only. Request
logging (uvicorn's access log) is off: URLs carry folder names and UIDs only, but even those are
not needed in logs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from missive.config import Settings
from missive.errors import NotFound
from missive.runtime import Core
from missive.webmail.deps import AccessRevoked, LoginRequired, Web, current_session, load_session
from missive.webmail.keys import KeyVault
from missive.webmail.otp import ChannelOtpSender, OtpSender
from missive.webmail.security import CsrfError, SecurityHeaders, csrf_protect
from missive.webmail.sessions import SessionStore

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.autoescape = True
    # Templates ship with the package: no stat() of every template file on every render.
    env.auto_reload = False
    env.filters["taille"] = human_size
    return templates


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} octets"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} Ko".replace(".", ",")
    return f"{n / 1024 / 1024:.1f} Mo".replace(".", ",")


def page(request: Request, name: str, context: dict[str, Any] | None = None, *,
         status_code: int = 200) -> HTMLResponse:
    """Render a template with the CSRF token and the session in the context."""
    web: Web = request.app.state.web
    state = current_session(request)
    ctx: dict[str, Any] = {"csrf": state.csrf_token if state else "", "session": state}
    ctx.update(context or {})
    response: HTMLResponse = web.templates.TemplateResponse(request, name, ctx,
                                                            status_code=status_code)
    return response


def create_app(settings: Settings, core: Core, *, otp_sender: OtpSender | None = None) -> FastAPI:
    """Build the webmail for ``core``. ``otp_sender`` defaults to the ``[notify]`` channels."""
    from missive.webmail.routes import account, auth, compose, delegates, health, mailbox

    app = FastAPI(title="Missive", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(load_session), Depends(csrf_protect)])
    app.state.web = Web(settings=settings, core=core, sessions=SessionStore(settings),
                        vault=KeyVault(core.store), templates=_templates(),
                        otp=otp_sender or ChannelOtpSender(settings))
    app.add_middleware(SecurityHeaders, hsts=settings.webmail.secure_cookies)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for router in (health.router, auth.router, compose.router, mailbox.router,
                   account.router, delegates.router):
        app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/connexion", status_code=303)

    @app.exception_handler(AccessRevoked)
    async def _revoked(request: Request, exc: AccessRevoked) -> Response:
        return page(request, "error.html", {
            "title": "Accès refusé",
            "text": "Cet accès n'est plus autorisé : il a pu être retiré par la personne "
                    "concernée, ou le compte a été fermé. Reconnectez-vous si besoin."},
            status_code=403)

    @app.exception_handler(CsrfError)
    async def _csrf(request: Request, exc: CsrfError) -> Response:
        return page(request, "error.html", {
            "title": "Formulaire expiré",
            "text": "Ce formulaire n'est plus valable (la page est peut-être restée ouverte "
                    "trop longtemps). Revenez en arrière, rechargez la page, puis recommencez."},
            status_code=403)

    @app.exception_handler(NotFound)
    async def _missing(request: Request, exc: NotFound) -> Response:
        return _not_found(request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _not_found(request)
        return page(request, "error.html", {"title": "Erreur", "text": str(exc.detail)},
                    status_code=exc.status_code)

    return app


def _not_found(request: Request) -> Response:
    return page(request, "error.html", {
        "title": "Page introuvable",
        "text": "Cette page n'existe pas, ou ce message n'est pas dans votre messagerie."},
        status_code=404)
