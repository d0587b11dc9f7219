"""Cross-origin requests from avatar frontends served from another origin (CORS).

Plain ASGI. Only the routes a browser calls (``HandlerSpec.cross_origin``: chat,
health, the conversation log, ending a session) answer cross-origin, and only to
the exact origins in ``server.cors_origins`` (none by default). The token route,
the admin API and ``/metrics`` never carry ``Access-Control-Allow-Origin``: a
browser script on another origin cannot read them, and their preflights are
refused (405 in the envelope, like any OPTIONS).

An allowed preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is
answered here, 204, without reaching the router or the rate limiter. Every
other request goes on as usual; when its ``Origin`` is allowed the response
names that origin (never ``*``: requests carry ``Authorization``) with
``Vary: Origin`` so caches keep answers for different origins apart.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOW_HEADERS = "authorization, content-type, idempotency-key, x-request-id"
EXPOSE_HEADERS = "x-request-id, ratelimit, ratelimit-policy, retry-after"
MAX_AGE = "600"


class CrossOriginMiddleware:
    def __init__(self, app: ASGIApp, origins: tuple[str, ...], routes: dict[str, tuple[str, ...]]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.routes = routes  # path -> methods, of the cross-origin routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.origins:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        methods = self.routes.get(scope["path"])
        if origin is None or methods is None or origin.lower() not in self.origins:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            await _preflight(send, origin, methods)
            return

        async def stamp(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["access-control-allow-origin"] = origin
                headers["access-control-expose-headers"] = EXPOSE_HEADERS
                headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, stamp)


async def _preflight(send: Send, origin: str, methods: tuple[str, ...]) -> None:
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", ", ".join(methods).encode()),
        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
        (b"access-control-max-age", MAX_AGE.encode()),
        (b"vary", b"Origin"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
