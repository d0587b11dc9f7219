"""The application factory: ``uvicorn gateway.app:create_app --factory``.

One factory, everything passed in: routes come from the YAML routing table
(each route's handler named in ``config.HANDLERS``), shared clients (the
upstream client, the limiter, the conversation store, the avatar runtime,
health probes) open once in ``lifespan`` and reach handlers through
Starlette's lifespan state (``request.state``, typed by ``State``), and every
failure becomes the contract's envelope at one boundary, ``exception_handlers``.
See docs/architecture.md for the request path.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypedDict

import httpx
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute

from gateway import errors
from gateway.admin import admin_chart, admin_export, admin_get, admin_list, admin_stats
from gateway.avatar.runtime import AvatarRuntime, open_avatar
from gateway.config import load_settings
from gateway.console import console_routes
from gateway.conversations import Conversations, open_conversations
from gateway.cors import CrossOriginMiddleware
from gateway.health import CachedProbe
from gateway.logs import configure_logging
from gateway.metrics import RequestMetrics, handler_started, metrics_endpoint
from gateway.middleware import RequestContextMiddleware
from gateway.openapi import openapi_endpoint
from gateway.proxies import ClientResolver, parse_networks
from gateway.ratelimit import RateLimiter, limited
from gateway.settings import HANDLERS, Route, Settings
from gateway.signing import Signer
from gateway.stt.runtime import SttRuntime, open_stt
from gateway.upstream import UpstreamClient

log = structlog.get_logger("gateway")

Handler = Callable[[Request, Route], Awaitable[Response]]


class State(TypedDict):
    """What the lifespan hands every request (``request.state.<name>``)."""

    settings: Settings
    upstream: UpstreamClient
    limiter: RateLimiter
    client_resolver: ClientResolver
    probes: dict[str, CachedProbe]  # provider kind -> probe
    storage_probe: CachedProbe | None
    conversations: Conversations | None
    avatar: AvatarRuntime | None
    chat_signer: Signer | None  # set when /api/chat requires a chatToken
    stt: SttRuntime | None


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
    routes: list[BaseRoute] = [
        StarletteRoute(route.path, limited(route, _endpoint(_handler(route), route)), methods=list(route.methods))
        for route in settings.routes
    ]
    if settings.auth.admin_keys:  # the admin read API exists only when keys are configured
        routes.append(StarletteRoute("/api/admin/conversations", admin_list, methods=["GET"]))
        routes.append(StarletteRoute("/api/admin/conversations/{conversation_id}", admin_get, methods=["GET"]))
        routes.append(StarletteRoute("/api/admin/stats", admin_stats, methods=["GET"]))
        routes.append(StarletteRoute("/api/admin/export", admin_export, methods=["GET"]))
        routes.append(StarletteRoute("/api/admin/charts/activity", admin_chart, methods=["GET"]))
    if settings.console.enabled:  # the browser console (gateway/console/), off unless enabled
        routes.extend(console_routes(settings))
    trusted_proxies = parse_networks(settings.server.trusted_proxies)
    resolver = ClientResolver(trusted_proxies, settings.server.client_ip_header)
    request_metrics = None
    if settings.metrics.enabled:
        routes.append(StarletteRoute(
            "/metrics", metrics_endpoint(parse_networks(settings.metrics.trusted_networks)), methods=["GET"]
        ))
        request_metrics = RequestMetrics(trusted_proxies)
    routes.append(StarletteRoute("/openapi.json", openapi_endpoint(settings), methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        limiter = RateLimiter(settings.rate_limit)
        try:
            async with (
                UpstreamClient(settings.client, transport) as upstream,
                open_conversations(settings) as conversations,
                open_avatar(settings, upstream, clock, (settings.rate_limit.storage_url, limiter.redis)) as avatar,
                open_stt(settings, upstream) as stt,
            ):
                log.info("gateway_started", config=settings.source, routes=[r.path for r in settings.routes])
                yield State(
                    settings=settings,
                    upstream=upstream,
                    limiter=limiter,
                    client_resolver=resolver,
                    probes=_probes(settings, upstream, avatar, stt),
                    storage_probe=None if conversations is None else conversations.probe,
                    conversations=conversations,
                    avatar=avatar,
                    chat_signer=avatar.signer if avatar and settings.avatar.require_session_token else None,
                    stt=stt,
                )
        finally:
            await limiter.close()

    return Starlette(
        routes=routes,
        middleware=_middleware(settings, request_metrics),
        exception_handlers={
            errors.GatewayError: _gateway_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )


def _middleware(settings: Settings, request_metrics: RequestMetrics | None) -> list[Middleware]:
    stack = [Middleware(RequestContextMiddleware, request_metrics)]
    if settings.server.cors_origins:  # no origins, no layer: every request would only pass through it
        stack.append(Middleware(CrossOriginMiddleware, settings.server.cors_origins, {
            r.path: r.methods for r in settings.routes if HANDLERS[r.handler].cross_origin
        }))
    return stack


def _handler(route: Route) -> Handler:
    # config.HANDLERS names it; only the handlers a config uses are imported.
    module, _, name = HANDLERS[route.handler].endpoint.partition(":")
    handler: Handler = getattr(importlib.import_module(module), name)
    return handler


def _endpoint(handler: Handler, route: Route) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        handler_started(request.scope)  # rate limits passed: the end of the queue-time metric
        return await handler(request, route)

    return endpoint


def _probes(
    settings: Settings, upstream: UpstreamClient, avatar: AvatarRuntime | None, stt: SttRuntime | None = None
) -> dict[str, CachedProbe]:
    h = settings.health
    urls = {"stt": h.stt_url, "avatar": h.avatar_url}
    chat_route = settings.route_for("chat")
    if chat_route is not None and chat_route.upstream is not None:
        urls["llm"] = chat_route.upstream.url
    probes = {}
    for kind, url in urls.items():
        if url:
            probes[kind] = CachedProbe(_url_probe(upstream, url, h.probe_timeout), h.cache_seconds)
    if avatar is not None and "avatar" not in probes:
        probes["avatar"] = avatar.probe(h)
    if stt is not None and "stt" not in probes:
        probes["stt"] = stt.probe(h)
    return probes


def _url_probe(upstream: UpstreamClient, url: str, timeout: float) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await upstream.probe(url, timeout)

    return probe


# -- the error boundary: everything a client is told about a failure ------------------


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.GatewayError)
    if exc.status_code >= 500:
        log.warning("request_failed", code=exc.code, reason=exc.message, detail=exc.detail)
    return errors.error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method) in the envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: errors.GatewayError = errors.NotFound(f"No route for {request.url.path}")
    elif exc.status_code == 405:
        error = errors.MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}")
    else:
        error = _HTTP_ERRORS.get(exc.status_code, errors.InvalidRequest)(str(exc.detail))
    return errors.error_response(error, exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: 500 with a reference the operator finds in the log, never the exception."""
    request_id = request.scope.get("state", {}).get("request_id", "-")
    log.error("unhandled_exception", request_id=request_id, method=request.method, path=request.url.path,
              exc_info=exc)
    error = errors.InternalError(f"Internal error; reference {request_id}")
    return errors.error_response(error, {"X-Request-ID": request_id})
