"""The browser console: the playground at ``/console/`` and the dashboard at ``/console/analytics``.

Static pages (HTML, CSS, JavaScript modules in ``static/``, no build step) that use
only the gateway's own routes: the playground the public ones a visitor's browser may
call anyway (chat, health, conversation log, transcription, ending a session) plus
``POST /console/session`` (``session.py``), which opens the visitor's avatar session as
the company's own server would; the dashboard the admin API with the admin key the user
types in. The console is mounted
only when ``console.enabled`` is true (``GATEWAY_CONSOLE=1``; scripts/demo sets it),
and everything under it is served with a strict Content-Security-Policy: scripts,
styles and connections from this origin only, no inline script or style, no framing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console.session import SESSION_PATH, session_endpoint
from gateway.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()"),
]
DEFAULT_CACHE_CONTROL = (b"cache-control", b"no-cache")  # unless the response sets its own (no-store)


class SecurityHeaders:
    """Adds the console's security headers to every response under it (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                if not any(k.lower() == b"cache-control" for k, _ in kept):
                    kept.append(DEFAULT_CACHE_CONTROL)
                message = {**message, "headers": kept + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _page(name: str) -> Callable[[Request], Awaitable[FileResponse]]:
    path = STATIC / name

    async def page(request: Request) -> FileResponse:
        return FileResponse(path, media_type="text/html; charset=utf-8")

    return page


def console_routes(settings: Settings) -> list[BaseRoute]:
    """The console under ``/console`` (``/console`` itself redirects to ``/console/``);
    ``POST /console/session`` (``session.py``) only where the gateway has avatar sessions."""
    routes: list[BaseRoute] = [
        Route("/", _page("index.html"), methods=["GET", "HEAD"]),
        Route("/analytics", _page("analytics.html"), methods=["GET", "HEAD"]),
        Mount("/assets", StaticFiles(directory=STATIC / "assets")),
    ]
    if settings.uses_avatar:
        routes.append(Route(SESSION_PATH.removeprefix("/console"), session_endpoint(settings), methods=["POST"]))
    return [Mount("/console", app=SecurityHeaders(Router(routes=routes)))]
