"""Prometheus metrics: the collectors, the per-request hooks, and ``GET /metrics``.

One home for metrics. The request path reports to it from where each fact is
known: ``middleware.py`` (its one clock: status, duration, requests in
flight, time before the handler), ``upstream.py`` (every outbound call:
latency and failures by upstream and kind), ``ratelimit.py`` (rejections by
route), ``conversations.py`` (the chat-turn queue), ``lifecycle.py``
(draining, reloads). Gauges that describe shared state (avatar sessions
open, storage health) are read when scraped.

Names follow Prometheus conventions (``_total``, ``_seconds``, base units).
Label values are bounded: route *templates* (``/api/admin/conversations/{conversation_id}``,
``unmatched`` for no route), never raw paths, session ids or client data;
upstreams are the gateway's own provider names.

Several uvicorn workers: ``avatar-gateway serve --workers N`` points
``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before the workers start,
so prometheus-client keeps each worker's values in a shared file and a scrape
answered by any worker sums them all (counters and histograms keep a dead
worker's values; live gauges drop them, ``mark_process_dead`` on exit).

Access: the client (as resolved behind trusted proxies, so nginx cannot
launder a public address into loopback) must be in ``metrics.trusted_networks``
(loopback by default) or present an admin key (``auth.admin_keys``); anyone
else gets 401. The token and admin routes' CORS rules apply: none.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from gateway.auth import require_admin_key
from gateway.health import CONNECTED
from gateway.proxies import IPNetwork, client_ip, parse_ip

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_QUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "gateway_requests_total", "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds", "Time to answer a request, by route template", ["route"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("gateway_requests_in_flight", "Requests being answered now", multiprocess_mode="livesum")
QUEUE_SECONDS = Histogram(
    "gateway_request_queue_seconds",
    "Time from a request's arrival (nginx's X-Request-Start from a trusted proxy, else the gateway's first "
    "middleware) until its handler runs: event-loop backlog, rate-limit checks",
    buckets=_QUEUE_BUCKETS,
)
UPSTREAM_SECONDS = Histogram(
    "gateway_upstream_request_duration_seconds", "Outbound calls that got an HTTP answer, by upstream",
    ["upstream"], buckets=_LATENCY_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Outbound calls that failed, by upstream and kind (timeout, connect_timeout, connect_refused, "
    "disconnected, malformed_http, invalid_body, http_5xx)",
    ["upstream", "kind"],
)
RATE_LIMITED = Counter(
    "gateway_ratelimit_rejections_total", "Requests refused 429 by a rate limit, by route", ["route"]
)
LIMITER_STORAGE_ERRORS = Counter(
    "gateway_ratelimit_storage_errors_total",
    "Rate-limit checks the storage could not answer, by what happened to the request (admitted, refused)",
    ["action"],
)
TURN_QUEUE = Gauge(
    "gateway_chat_turn_queue_depth", "Chat turns waiting to be written", multiprocess_mode="livesum"
)
TURNS_DROPPED = Counter("gateway_chat_turns_dropped_total", "Chat turns dropped because the queue was full")
TURNS_FAILED = Counter("gateway_chat_turns_failed_total", "Chat turns whose write to the store failed")
AVATAR_SESSIONS = Gauge(
    "gateway_avatar_sessions_open", "Live avatar sessions in the session store (read when scraped)",
    multiprocess_mode="mostrecent",
)
STORAGE_UP = Gauge(
    "gateway_storage_up", "1 when the conversation store answers, 0 when not (read when scraped; absent when "
    "no store is configured)", multiprocess_mode="mostrecent",
)
BREAKER_STATE = Gauge(
    "gateway_circuit_breaker_state", "Circuit breaker per upstream route: 0 closed, 1 half-open, 2 open "
    "(read when scraped)", ["upstream"], multiprocess_mode="livemax",
)
_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


def breaker_state(upstream: str, state: str) -> None:
    BREAKER_STATE.labels(upstream).set(_BREAKER_VALUES[state])

DRAINING = Gauge("gateway_draining", "1 while a worker drains for shutdown", multiprocess_mode="livemax")
CONFIG_RELOADS = Counter("gateway_config_reloads_total", "SIGHUP config reloads, by result", ["result"])

_UPSTREAM_NAME = re.compile(r"[^a-z0-9]+")
_upstream_labels: dict[str, str] = {}


def upstream_label(provider: str) -> str:
    """'Chat backend' -> 'chat_backend'. Providers are the gateway's own constants: bounded."""
    label = _upstream_labels.get(provider)
    if label is None:
        label = _upstream_labels[provider] = _UPSTREAM_NAME.sub("_", provider.lower()).strip("_")
    return label


def observe_upstream(provider: str, seconds: float, status: int) -> None:
    label = upstream_label(provider)
    UPSTREAM_SECONDS.labels(label).observe(seconds)
    if status >= 500:
        UPSTREAM_ERRORS.labels(label, "http_5xx").inc()


def upstream_failed(provider: str, kind: str) -> None:
    UPSTREAM_ERRORS.labels(upstream_label(provider), kind).inc()


def route_template(scope: Scope) -> str:
    """The matched route's path template (Starlette puts the route in the scope), else ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """What ``RequestContextMiddleware`` reports per request; it owns the one clock.

    ``arrival`` is a wall-clock time: nginx's ``X-Request-Start: t=<seconds.millis>``
    when the peer is a trusted proxy, so the queue measure includes the time the
    request waited for the event loop, else the moment the middleware saw it."""

    def __init__(self, trusted: tuple[IPNetwork, ...]) -> None:
        self.trusted = trusted
        self._children: dict[tuple[str, str, int], Any] = {}
        self._durations: Scope = {}

    def arrival(self, scope: Scope, now: float) -> float:
        for name, value in scope["headers"]:
            if name == b"x-request-start":
                client = scope.get("client")
                peer = parse_ip(client[0]) if client else None
                if peer is None or not any(peer in network for network in self.trusted):
                    return now
                try:
                    started = float(value.decode("latin-1").strip().removeprefix("t="))
                except ValueError:
                    return now
                # A plausible recent time only: clocks differ, headers lie.
                return started if 0 <= now - started < 60 else now
        return now

    def finished(self, scope: Scope, status: int, seconds: float) -> None:
        route = route_template(scope)
        key = (route, scope["method"], status)
        counter = self._children.get(key)
        if counter is None:  # label lookups cost more than the increment: keep the children
            counter = self._children[key] = REQUESTS.labels(route, scope["method"], str(status))
        counter.inc()
        duration = self._durations.get(route)
        if duration is None:
            duration = self._durations[route] = REQUEST_SECONDS.labels(route)
        duration.observe(seconds)
        state = scope.get("state") or {}
        arrived, handler_started = state.get("arrived"), state.get("handler_started")
        if arrived is not None and handler_started is not None:
            QUEUE_SECONDS.observe(max(0.0, handler_started - arrived))


def handler_started(scope: Scope) -> None:
    """Called by the app as a route's handler begins (after routing and rate limits)."""
    state = scope.get("state")
    if state is not None and "arrived" in state:
        state["handler_started"] = time.time()


# -- exposition ---------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess() -> str:
    """Before several workers start: an empty directory for their values, the one in
    ``PROMETHEUS_MULTIPROC_DIR`` (emptied: stale files would add a previous run's counts)
    or a new temporary one, removed at exit. Workers inherit the variable."""
    path = multiprocess_dir()
    if path is None:
        path = tempfile.mkdtemp(prefix="avatar-gateway-metrics-")
        atexit.register(shutil.rmtree, path, True)
        os.environ[MULTIPROC_ENV] = path
    else:
        os.makedirs(path, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()
    return path


def process_exited() -> None:
    """Drop this worker's live gauges from a multi-worker scrape (its counters stay)."""
    if multiprocess_dir():
        _multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def render() -> bytes:
    if multiprocess_dir():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def metrics_endpoint(trusted: tuple[IPNetwork, ...]) -> Callable[[Request], Awaitable[Response]]:
    """``GET /metrics`` for clients in ``trusted`` (resolved behind proxies) or with an admin key."""

    async def endpoint(request: Request) -> Response:
        address = parse_ip(client_ip(request))
        if address is None or not any(address in network for network in trusted):
            require_admin_key(request, request.state.settings.auth.admin_keys)
        await _refresh_gauges(request)
        return Response(render(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    return endpoint


async def _refresh_gauges(request: Request) -> None:
    for name, breaker in request.state.upstream.breakers.items():  # route paths: a bounded set
        breaker_state(name, breaker.state)  # open turns half-open with time, not with an event
    conversations = request.state.conversations
    if conversations is not None:
        STORAGE_UP.set(1 if await conversations.probe.status() == CONNECTED else 0)
    avatar = request.state.avatar
    if avatar is not None:
        with contextlib.suppress(Exception):  # the session store is down; the scrape still answers
            AVATAR_SESSIONS.set(await avatar.store.live(avatar.guard.clock()))
