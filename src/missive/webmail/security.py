"""HTTP security headers and CSRF protection (SPEC §5 security).

- Every response gets a strict Content-Security-Policy (no inline script or style, nothing
  remote: ``default-src 'none'`` with only same-origin scripts — one static file that only
  enhances, the session warning —, styles, images and forms), frame denial
  (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), ``Referrer-Policy: no-referrer``,
  ``X-Content-Type-Options: nosniff``, a closed ``Permissions-Policy`` and, except for the
  static files, ``Cache-Control: no-store`` (mailbox pages must not stay in a shared or
  browser cache). HSTS is sent when cookies are Secure (the deployment is behind HTTPS).
- CSRF: every state-changing request (POST, PUT, PATCH, DELETE) must carry the session's token
  in the form field ``csrf`` (or the ``X-CSRF-Token`` header), compared in constant time; and
  when the browser sends ``Origin``, it must be our own. The check is an application-wide
  dependency, so a route cannot forget it.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityHeaders:
    """Pure ASGI middleware adding the headers above (a route may set its own CSP)."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                wanted = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                ]
                if not static:
                    wanted.append((b"cache-control", b"no-store"))
                    wanted.append((b"pragma", b"no-cache"))
                if self.hsts:
                    wanted.append((b"strict-transport-security", b"max-age=31536000"))
                headers.extend((k, v) for k, v in wanted if k not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class CsrfError(Exception):
    """A state-changing request without a valid token."""


async def csrf_protect(request: Request) -> None:
    """Application-wide dependency: refuse unsafe methods without the session's token."""
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        expected = f"{request.url.scheme}://{request.url.netloc}"
        if origin.rstrip("/") != expected:
            raise CsrfError("cross-origin request")
    state = getattr(request.state, "web_session", None)
    if state is None:
        raise CsrfError("no session")
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get("csrf")
        sent = value if isinstance(value, str) else None
    if not sent or not secrets.compare_digest(sent, state.csrf_token):
        raise CsrfError("bad token")
