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

Where the avatar provider is ``liveavatar`` the playground shows the vendor's streaming
avatar through its web SDK (vendored in ``static/vendor/``, served from this origin) and
``connect-src`` alone is widened (``console_csp``): to the LiveAvatar API origin (from
``avatar.base_url``; the SDK starts the session there) and to LiveKit Cloud, where the
session's media room lives (``wss:`` for signalling, ``https:`` for its region lookup).
The media itself arrives over WebRTC as a MediaStream, which ``media-src`` does not govern.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console.session import SESSION_PATH, session_endpoint, vendor_api_url
from gateway.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"

# Where LiveAvatar's SDK joins the session's media room: LiveAvatar hands out LiveKit Cloud
# rooms (wss://<project>.livekit.cloud); livekit-client also asks https://<project>.livekit.cloud
# for its regions.
LIVEKIT_ORIGINS = ("wss://*.livekit.cloud", "https://*.livekit.cloud")


def _policy(connect: tuple[str, ...] = ()) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "media-src 'self' blob: mediastream:",
            " ".join(["connect-src 'self'", *connect]),
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


CONTENT_SECURITY_POLICY = _policy()


def avatar_origins(settings: Settings) -> tuple[str, ...]:
    """The origins the page's avatar SDK connects to: none unless LiveAvatar is the provider."""
    if not settings.uses_avatar or settings.avatar.provider != "liveavatar":
        return ()
    parts = urlsplit(vendor_api_url(settings.avatar))
    return (f"{parts.scheme}://{parts.netloc}", *LIVEKIT_ORIGINS)


def console_csp(settings: Settings) -> str:
    """The console's Content-Security-Policy: ``CONTENT_SECURITY_POLICY``, with ``connect-src``
    widened to ``avatar_origins`` where LiveAvatar is configured."""
    return _policy(avatar_origins(settings))


def security_headers(csp: str = CONTENT_SECURITY_POLICY) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()"),
    ]


SECURITY_HEADERS = security_headers()
DEFAULT_CACHE_CONTROL = (b"cache-control", b"no-cache")  # unless the response sets its own (no-store)


class SecurityHeaders:
    """Adds the console's security headers to every response under it (errors included)."""

    def __init__(self, app: ASGIApp, csp: str = CONTENT_SECURITY_POLICY) -> None:
        self.app = app
        self.headers = security_headers(csp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self.headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                if not any(k.lower() == b"cache-control" for k, _ in kept):
                    kept.append(DEFAULT_CACHE_CONTROL)
                message = {**message, "headers": kept + self.headers}
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
        Mount("/vendor", StaticFiles(directory=STATIC / "vendor")),
    ]
    if settings.uses_avatar:
        routes.append(Route(SESSION_PATH.removeprefix("/console"), session_endpoint(settings), methods=["POST"]))
    return [Mount("/console", app=SecurityHeaders(Router(routes=routes), console_csp(settings)))]
