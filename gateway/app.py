"""The application factory: ``uvicorn gateway.app:create_app --factory``.

One factory, everything passed in: routes come from the YAML routing table,
shared clients (the upstream HTTP client, the limiter storage, health
probes) open once in ``lifespan`` and reach handlers through ``app.state``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from gateway import errors
from gateway.avatar.runtime import open_avatar
from gateway.chat import chat
from gateway.config import Route, Settings, load_settings
from gateway.conversations import TurnRecorder, admin_get, admin_list, log_conversation
from gateway.health import CachedProbe, health, http_probe
from gateway.logs import configure_logging
from gateway.middleware import RequestContextMiddleware
from gateway.proxies import ClientResolver, client_ip, parse_networks
from gateway.ratelimit import RateLimiter, credential_key
from gateway.storage import StorageUnavailable, open_store
from gateway.tokens import end_session, get_access_token
from gateway.upstream import create_client

log = structlog.get_logger("gateway")

Handler = Callable[[Request, Route], Awaitable[Response]]


async def _health(request: Request, route: Route) -> Response:
    return await health(request)


HANDLERS: dict[str, Handler] = {
    "chat": chat,
    "health": _health,
    "conversations": log_conversation,
    "token": get_access_token,
    "session_end": end_session,
}

_HTTP_ERRORS: dict[int, type[errors.GatewayError]] = {
    400: errors.InvalidRequest,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] | None = None,
) -> Starlette:
    """Build the gateway. With no settings, loads ``GATEWAY_CONFIG`` (or the
    bundled ``config/gateway.yaml``). ``transport`` replaces the upstream
    transport and ``clock`` the wall clock of avatar sessions, for tests."""
    settings = settings or load_settings()
    configure_logging(settings.server)
    routes = []
    for route in settings.routes:
        if route.handler not in HANDLERS:
            raise errors.ConfigError(f"{route.path}: handler {route.handler!r} is not available in this build")
        endpoint = _endpoint(HANDLERS[route.handler], route)
        routes.append(StarletteRoute(route.path, endpoint, methods=list(route.methods)))
    if settings.storage.admin_keys:  # the admin read API exists only when keys are configured
        routes.append(StarletteRoute("/api/admin/conversations", admin_list, methods=["GET"]))
        routes.append(StarletteRoute("/api/admin/conversations/{conversation_id}", admin_get, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            create_client(settings.client, transport) as http,
            storage_lifespan(app, settings),
            open_avatar(settings, http, clock) as avatar,
        ):
            app.state.http = http
            app.state.limiter = RateLimiter(settings.rate_limit)
            app.state.probes = _probes(settings, http)
            app.state.avatar = avatar
            if avatar is not None and "avatar" not in app.state.probes:
                app.state.probes["avatar"] = avatar.probe(settings.health)
            log.info("gateway_started", config=settings.source, routes=[r.path for r in settings.routes])
            try:
                yield
            finally:
                await app.state.limiter.close()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers={errors.GatewayError: _gateway_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.client_resolver = ClientResolver(
        parse_networks(settings.server.trusted_proxies), settings.server.client_ip_header
    )
    app.state.limiter_gate = limiter_gate
    return app


def uses_storage(settings: Settings) -> bool:
    return bool(
        settings.route_for("conversations") or settings.storage.record_chat_turns or settings.storage.admin_keys
    )


@contextlib.asynccontextmanager
async def storage_lifespan(app: Starlette, settings: Settings) -> AsyncIterator[None]:
    """Open the store (retrying in the background while the database is down: the gateway
    still starts and chats), run the chat-turn recorder, flush and close on shutdown."""
    app.state.store = None
    app.state.turns = None
    app.state.storage_probe = None
    if not uses_storage(settings):
        yield
        return
    store = open_store(settings.storage.url, settings.storage.pool_size)
    recorder = TurnRecorder(store, settings.storage)

    async def probe() -> bool:
        return app.state.store is not None and await store.ping()

    app.state.storage_probe = CachedProbe(probe, settings.health.cache_seconds)

    async def connect() -> None:
        delay = 1.0
        while True:
            try:
                await store.open()
            except (StorageUnavailable, OSError) as exc:
                log.error("storage_unavailable", store=store.kind, reason=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            app.state.store = store
            if settings.storage.record_chat_turns:
                recorder.start()
                app.state.turns = recorder
            log.info("storage_ready", store=store.kind)
            return

    connecting = asyncio.create_task(connect())
    await asyncio.wait({connecting}, timeout=3)  # normally ready before the first request
    try:
        yield
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        if app.state.turns is not None:
            await recorder.close()
        if app.state.store is not None:
            await store.close()


def _endpoint(handler: Handler, route: Route) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        await limiter_gate(request, route)
        response = await handler(request, route)
        decision = request.scope["state"].get("ratelimit")
        if decision is not None:
            response.headers.update(decision.headers())
        return response

    return endpoint


async def limiter_gate(request: Request, route: Route, session: str | None = None) -> None:
    """Count this request against the route's limits whose key is known now.

    Called once before the handler (ip, credential) and again by handlers
    that learn a sessionId from the body; each rule is counted exactly once.
    """
    state = request.scope["state"]
    if session is None:
        keys = {"ip": client_ip(request), "credential": credential_key(request.headers.get("authorization"))}
    else:
        keys = {"session": session}
    decision = await request.app.state.limiter.check(route.path, route.rate_limits, keys)
    if decision is not None:
        previous = state.get("ratelimit")
        if previous is None or decision.remaining < previous.remaining:
            state["ratelimit"] = decision


def _probes(settings: Settings, http: httpx.AsyncClient) -> dict[str, CachedProbe]:
    h = settings.health
    urls: dict[str, Any] = {"stt": h.stt_url, "avatar": h.avatar_url}
    chat_route = settings.route_for("chat")
    if chat_route is not None and chat_route.upstream is not None:
        urls["llm"] = chat_route.upstream.url
    return {
        kind: CachedProbe(http_probe(http, url, h.probe_timeout), h.cache_seconds)
        for kind, url in urls.items()
        if url
    }


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.GatewayError)
    if exc.status_code >= 500:
        log.warning("request_failed", code=exc.code, reason=exc.message)
    return errors.error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: errors.GatewayError = errors.NotFound(f"No route for {request.url.path}")
    elif exc.status_code == 405:
        error = errors.MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}")
    else:
        kind = _HTTP_ERRORS.get(exc.status_code, errors.InvalidRequest)
        error = kind(str(exc.detail))
    error.headers.update(exc.headers or {})
    return errors.error_response(error)
