"""Request context: the request id and the access log.

Plain ASGI rather than ``BaseHTTPMiddleware`` (which Starlette's docs steer
away from): it wraps ``send`` to stamp ``X-Request-ID`` on the response and
to learn the status, and has the limiter's RateLimit headers stamped
(``ratelimit.stamp_headers``) in the same wrapper. It translates no exception: an error a handler let
escape reaches the one boundary in ``app.py`` (``exception_handlers``), and
is logged here as a 500 on its way out.

Its one clock also feeds the metrics (``metrics.RequestMetrics``, when
enabled): requests in flight, status, duration, time before the handler.
"""

from __future__ import annotations

import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.fields import is_identifier
from gateway.metrics import IN_FLIGHT, RequestMetrics
from gateway.proxies import scope_client_ip
from gateway.ratelimit import stamp_headers

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = REQUEST_ID_HEADER.encode()

log = structlog.get_logger("gateway.access")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        raw_id = request_id.encode("latin-1")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 0
        metrics = self.metrics
        if metrics is not None:
            state["arrived"] = metrics.arrival(scope, time.time())
            IN_FLIGHT.inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                stamp_headers(state, message)  # the RateLimit headers (gateway/ratelimit.py)
                message["headers"] = _with_request_id(message.get("headers") or [], raw_id)
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            status = status or 500  # answered by the boundary outside us (ServerErrorMiddleware)
            raise
        finally:
            duration = time.perf_counter() - started
            if metrics is not None:
                IN_FLIGHT.dec()
                metrics.finished(scope, status, duration)
            upstream = state.get("upstream_seconds")
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                client=_client(scope, receive),
                duration_ms=round(duration * 1000, 2),
                upstream_ms=None if upstream is None else round(upstream * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


def _client(scope: Scope, receive: Receive) -> str:
    # The same identity the limiter uses, also for requests it never saw (404s, unlimited routes).
    if "client_resolver" in scope["state"]:
        return scope_client_ip(scope, receive)
    return str((scope.get("client") or ("-",))[0])


def _with_request_id(headers: list[tuple[bytes, bytes]], value: bytes) -> list[tuple[bytes, bytes]]:
    # What MutableHeaders' __setitem__ does, on the raw list without building the object:
    # the first x-request-id replaced, any others dropped, else appended.
    for i, (name, _) in enumerate(headers):
        if name == _REQUEST_ID:
            return [*headers[:i], (_REQUEST_ID, value), *(h for h in headers[i + 1 :] if h[0] != _REQUEST_ID)]
    return [*headers, (_REQUEST_ID, value)]


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            # A client-supplied id is echoed into logs and to the backend: keep it tame.
            candidate: str = value.decode("latin-1")
            if is_identifier(candidate):
                return candidate
            break
    return uuid.uuid4().hex
