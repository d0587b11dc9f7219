"""Request context: request id, the access log, and the last-resort error guard.

Plain ASGI rather than ``BaseHTTPMiddleware`` (which Starlette's docs steer
away from): it wraps ``send`` to stamp ``X-Request-ID`` on the response and
to learn the status, and it catches anything a handler let escape, answering
500 INTERNAL_ERROR in the envelope. The traceback goes to the log with the
request id, never to the client.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import envelope

REQUEST_ID_HEADER = "x-request-id"
# A client-supplied id is echoed into logs and to the backend: keep it tame.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

log = structlog.get_logger("gateway.access")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled_exception", method=scope["method"], path=scope["path"])
            if status == 0:
                status = 500
                body = envelope("INTERNAL_ERROR", f"Internal error; reference {request_id}")
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            upstream = state.get("upstream_seconds")
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                client=state.get("client_ip") or (scope.get("client") or ("-",))[0],
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                upstream_ms=None if upstream is None else round(upstream * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex
