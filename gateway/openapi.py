"""The API described: an OpenAPI 3.1 document built from the settings, served at ``GET /openapi.json``.

Built, not hand-kept, so it cannot drift from what a deployment serves: the
paths come from the routing table (each route's ``handler`` names its
operation in ``_OPERATIONS``), the validation limits from the same settings
the handlers enforce (``maxLength`` of ``message`` is the route's
``limits.max_message_chars``), the additive routes (admin API, ``/metrics``)
appear exactly when the app mounts them. A handler with no operation here is
left out of the document, and ``tests/test_openapi.py``, which compares the
document with the routes of the built app, fails until it is described.

The copy kept in the repository, ``docs/openapi.json``, is this document for the
bundled config (with admin keys set, so the admin API is in it); regenerate it
with ``python -m gateway.openapi > docs/openapi.json`` (a test checks it is current).

Every error response is the contract's envelope (``#/components/schemas/Error``).
The streaming variant of chat (``Accept: text/event-stream``) is the same 200
answer as Server-Sent Events, described beside the JSON one.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

import gateway
from gateway.config import load_settings
from gateway.fields import MAX_ID_CHARS
from gateway.settings import Route, Settings

Operation = dict[str, Any]
IDENTIFIER_PATTERN = "^[A-Za-z0-9._:-]+$"
_ERRORS = {
    400: ("INVALID_REQUEST", "Malformed request: bad JSON, a missing or mistyped field (the message names it)"),
    401: ("UNAUTHORIZED", "Missing or invalid credential"),
    404: ("NOT_FOUND", "No such resource"),
    408: ("REQUEST_TIMEOUT", "The body did not arrive whole within server.body_timeout"),
    413: ("PAYLOAD_TOO_LARGE", "Body larger than server.max_body_bytes"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Content-Type is not application/json"),
    422: ("IDEMPOTENCY_KEY_REUSED", "Idempotency-Key reused with a different body"),
    429: ("RATE_LIMITED", "Over a rate limit; Retry-After says when to retry"),
    500: ("INTERNAL_ERROR", "A bug; the message carries a reference to the log"),
    502: ("PROVIDER_ERROR", "The chat backend or avatar vendor failed"),
    503: ("SERVICE_UNAVAILABLE", "A dependency of the gateway (limiter storage, database) is unavailable"),
}
_BODY_ERRORS = (400, 408, 413, 415)
_METHOD = "METHOD_NOT_ALLOWED"  # a wrong method on a described path; Allow lists the right ones


def _error(status: int) -> dict[str, Any]:
    return {"$ref": f"#/components/responses/E{status}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _identifier(max_chars: int = MAX_ID_CHARS) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": IDENTIFIER_PATTERN}


def _messages(roles: list[str], max_items: int, max_chars: int, min_items: int = 0) -> dict[str, Any]:
    return {
        "type": "array", "minItems": min_items, "maxItems": max_items,
        "items": {
            "type": "object", "required": ["role", "content"],
            "properties": {"role": {"enum": roles}, "content": {"type": "string", "maxLength": max_chars}},
        },
    }


def _operation(summary: str, responses: dict[int, Any], *, body: dict[str, Any] | None = None,
               errors: tuple[int, ...] = (), secured: bool = False, **extra: Any) -> Operation:
    operation: Operation = {"summary": summary, **extra}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    if secured:
        operation["security"] = [{"bearer": []}]
    all_responses = {str(status): response for status, response in responses.items()}
    for status in sorted({*errors, 500}):
        all_responses.setdefault(str(status), _error(status))
    operation["responses"] = all_responses
    return operation


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _chat(route: Route, settings: Settings) -> Operation:
    limits = route.limits
    body = {
        "type": "object", "required": ["message"],
        "description": "Other fields (locale, page, ...) travel to the backend in `context`.",
        "properties": {
            "message": {"type": "string", "minLength": 1, "maxLength": limits.max_message_chars,
                        # not only whitespace, as Python's str.isspace() sees it (it counts \x1c-\x1f, \x85)
                        "pattern": r"[^\s\x1c-\x1f\x85]"},
            # null is the same as absent for the optional fields
            "sessionId": {**_identifier(limits.max_session_id_chars), "type": ["string", "null"]},
            "history": {**_messages(["user", "assistant"], limits.max_history, limits.max_history_content_chars),
                        "type": ["array", "null"]},
            "context": {"type": ["object", "null"]},
        },
    }
    token = settings.avatar.require_session_token
    answer = _ok(_ref("ChatResponse"), "The answer (with `fallback: true` and `X-Gateway-Fallback: true` when it "
                 "is the configured fallback)")
    answer["content"]["text/event-stream"] = {
        "schema": {"type": "string"},
        "description": "With `Accept: text/event-stream`: Server-Sent Events `delta` ({text}), `sources` "
                       "({sources}, once), then `done` (the ChatResponse object) or `error` (the envelope); "
                       "`: ping` comments while the backend is silent.",
    }
    return _operation(
        "Send a user message, get the AI answer (forwarded to the customer's backend)",
        {200: answer},
        body=body, errors=(*_BODY_ERRORS, *((401,) if token else ()), 429, 502, 503), secured=token,
        parameters=[{"name": "Accept", "in": "header", "required": False, "schema": {"type": "string"},
                     "description": "text/event-stream for the streaming variant; anything else: JSON"}],
    )


def _token(route: Route, settings: Settings) -> Operation:
    body = {"type": "object", "required": ["avatarId", "voiceId"],
            "properties": {"avatarId": _identifier(), "voiceId": _identifier()}}
    return _operation("Mint an avatar streaming session token (server-side callers only)",
                      {200: _ok(_ref("TokenResponse"))}, body=body,
                      errors=(*_BODY_ERRORS, 401, 429, 502, 503), secured=True)


def _session_end(route: Route, settings: Settings) -> Operation:
    body = {"type": "object", "properties": {"sessionId": _identifier()},
            "description": "Needed only with a server API key; a chatToken names its own session."}
    operation = _operation(
        "End an avatar session early (its chatToken, or an API key and a sessionId)",
        {200: _ok({"type": "object", "required": ["success", "sessionId", "ended"],
                   "properties": {"success": {"const": True}, "sessionId": {"type": "string"},
                                  "ended": {"type": "boolean"}}})},
        body=body, errors=(*_BODY_ERRORS, 401, 429, 502, 503), secured=True,
    )
    operation["requestBody"]["required"] = False
    return operation


def _health(route: Route, settings: Settings) -> Operation:
    return _operation(
        "Service and provider health",
        {200: _ok(_ref("Health"), "ok or degraded"),
         503: _ok({"anyOf": [_ref("Health"), _ref("Error")]},
                  "down (chat backend unreachable), draining (shutting down), or the limiter is unavailable")},
        errors=(429,),
    )


def _conversations(route: Route, settings: Settings) -> Operation:
    s = settings.storage
    body = {
        "type": "object", "required": ["sessionId", "messages"],
        "properties": {
            "sessionId": _identifier(),
            "messages": _messages(["user", "assistant", "system"], s.max_messages, s.max_message_chars, 1),
            "metadata": {"type": ["object", "null"], "description": f"At most {s.max_metadata_bytes} bytes as JSON",
                         "properties": {"duration": {"type": "number", "minimum": 0}, "source": {"type": "string"}}},
        },
    }
    return _operation(
        "Store a conversation transcript (acknowledged after it is committed)",
        {200: _ok({"type": "object", "required": ["success", "conversationId"],
                   "properties": {"success": {"const": True}, "conversationId": {"type": "string"}}})},
        body=body, errors=(*_BODY_ERRORS, 422, 429, 503),
        parameters=[{"name": "Idempotency-Key", "in": "header", "required": False, "schema": _identifier()}],
    )


_SESSION_PARAMETER = {
    "name": "sessionId", "in": "query", "required": False, "schema": _identifier(),
    "description": "API-key callers: the session to count the request against (a chatToken names its own).",
}


def _transcribe(route: Route, settings: Settings) -> Operation:
    audio = {"type": "string", "format": "binary", "maxLength": settings.stt.max_bytes}
    operation = _operation(
        f"Speech to text: audio (WAV, WebM/Opus, Ogg/Opus, ...; at most {settings.stt.max_seconds:g} s) in, text out",
        {200: _ok({"type": "object", "required": ["text", "language"],
                   "properties": {"text": {"type": "string"}, "language": {"type": "string"}}})},
        errors=(*_BODY_ERRORS, 401, 429, 502, 503), secured=True, parameters=[_SESSION_PARAMETER],
    )
    operation["requestBody"] = {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": audio}}},
        "audio/*": {"schema": audio},
    }}
    return operation


def _stt_token(route: Route, settings: Settings) -> Operation:
    return _operation(
        "A short-lived vendor token for streaming audio from the browser straight to the STT vendor",
        {200: _ok({"type": "object", "required": ["token", "provider", "expiresIn", "expiresAt"],
                   "properties": {"token": {"type": "string"}, "provider": {"type": "string"},
                                  "expiresIn": {"type": "integer"},
                                  "expiresAt": {"type": "string", "format": "date-time"}}})},
        errors=(401, 429, 502, 503), secured=True, parameters=[_SESSION_PARAMETER],
    )


# handler name (config.HANDLERS) -> its operation; a handler missing here is missing from the document.
_OPERATIONS: dict[str, Callable[[Route, Settings], Operation]] = {
    "chat": _chat,
    "token": _token,
    "session_end": _session_end,
    "health": _health,
    "conversations": _conversations,
    "transcribe": _transcribe,
    "stt_token": _stt_token,
}


# An RFC 3339 date-time (all parse), or empty for no bound.
_PERIOD_BOUND = {"type": "string", "anyOf": [{"format": "date-time"}, {"maxLength": 0}]}


def _admin_paths() -> dict[str, Any]:
    query = [
        {"name": "sessionId", "in": "query", "description": "Only conversations of this session",
         "schema": {"type": "string"}},
        # ISO-8601 dates or times (Python's fromisoformat: 2026-11-01, 2026-11-01T10:00, ...Z);
        # described as RFC 3339 date-times, which all parse.
        {"name": "from", "in": "query", "schema": _PERIOD_BOUND},
        {"name": "to", "in": "query", "schema": _PERIOD_BOUND},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
        {"name": "cursor", "in": "query", "description": "Opaque: only a nextCursor this API issued",
         "schema": {"type": "string"}},
    ]
    query.insert(1, {"name": "q", "in": "query", "description": "Only conversations whose text contains this",
                     "schema": {"type": "string"}})
    period = [query[2], query[3]]
    top = {"name": "top", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
    stats = {"type": "object", "required": ["days", "conversations", "turns"],
             "properties": {"days": {"type": "array"}, "conversations": {"type": "integer"},
                            "turns": {"type": "integer"}, "backendErrors": {"type": "integer"},
                            "latencyMs": {"type": "object"}, "topQuestions": {"type": "array"},
                            "topSources": {"type": "array"}, "conversationMinutes": {"type": "number"}}}
    export = [
        {"name": "kind", "in": "query", "schema": {"enum": ["conversations", "turns"]}},
        {"name": "format", "in": "query", "schema": {"enum": ["jsonl", "csv"]}},
        *period,
    ]
    page = {"type": "object", "required": ["conversations", "nextCursor"],
            "properties": {"conversations": {"type": "array", "items": _ref("Conversation")},
                           "nextCursor": {"type": ["string", "null"]}}}
    return {
        "/api/admin/conversations": {"get": _operation(
            "List stored conversations, newest first (admin key)", {200: _ok(page)},
            errors=(400, 401, 503), secured=True, parameters=query)},
        "/api/admin/conversations/{conversation_id}": {"get": _operation(
            "One stored conversation with its messages (admin key)", {200: _ok(_ref("Conversation"))},
            errors=(401, 404, 503), secured=True,
            parameters=[{"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/api/admin/stats": {"get": _operation(
            "Counts, latency percentiles, failures, top questions and sources (admin key)", {200: _ok(stats)},
            errors=(400, 401, 503), secured=True, parameters=[*period, top])},
        "/api/admin/export": {"get": _operation(
            "Conversations or chat turns as a JSON Lines or CSV download (admin key)",
            {200: {"description": "The export", "content": {
                "application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}}}},
            errors=(400, 401, 503), secured=True, parameters=export)},
        "/api/admin/charts/activity": {"get": _operation(
            "Conversations and chat turns per day, as SVG (admin key)",
            {200: {"description": "An SVG chart", "content": {"image/svg+xml": {"schema": {"type": "string"}}}}},
            errors=(400, 401, 503), secured=True, parameters=period)},
    }


def _components(settings: Settings) -> dict[str, Any]:
    provider = {"enum": ["connected", "disconnected", "not_configured"]}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "required": ["code", "message"], "additionalProperties": False,
                "properties": {"code": {"enum": sorted({code for code, _ in _ERRORS.values()} | {_METHOD})},
                               "message": {"type": "string"}},
            }},
        },
        "Source": {"type": "object", "required": ["title", "url"],
                   "properties": {"title": {"type": "string"}, "url": {"type": "string"}}},
        "ChatResponse": {"type": "object", "required": ["response", "sources", "sessionId"],
                         "properties": {"response": {"type": "string"},
                                        "sources": {"type": "array", "items": _ref("Source")},
                                        "sessionId": {"type": "string"},
                                        "fallback": {"const": True}}},
        "TokenResponse": {"type": "object", "required": ["token", "sessionId", "expiresAt"],
                          "properties": {"token": {"type": "string"}, "sessionId": {"type": "string"},
                                         "expiresAt": {"type": "string", "format": "date-time"},
                                         "chatToken": {"type": "string"}}},
        "Health": {"type": "object", "required": ["status", "timestamp", "providers"],
                   "properties": {"status": {"enum": ["ok", "degraded", "down", "draining"]},
                                  "timestamp": {"type": "string", "format": "date-time"},
                                  "providers": {"type": "object", "additionalProperties": provider,
                                                "required": ["llm", "stt", "avatar"]},
                                  "storage": provider,
                                  "breakers": {"type": "object", "description": "Circuit breaker per chat route",
                                               "additionalProperties": {"enum": ["closed", "half_open", "open"]}}}},
        "Conversation": {"type": "object", "required": ["conversationId", "sessionId", "createdAt", "messageCount"],
                         "properties": {"conversationId": {"type": "string"}, "sessionId": {"type": "string"},
                                        "createdAt": {"type": "string", "format": "date-time"},
                                        "messageCount": {"type": "integer"}, "metadata": {"type": "object"},
                                        "messages": {"type": "array"}}},
    }
    responses = {
        f"E{status}": {"description": f"{code}: {meaning}", "content": _json(_ref("Error"))}
        for status, (code, meaning) in _ERRORS.items()
    }
    return {"schemas": schemas, "responses": responses,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}


def build_document(settings: Settings) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in settings.routes:
        describe = _OPERATIONS.get(route.handler)
        if describe is None:
            continue  # undescribed: tests/test_openapi.py reports it
        operation = describe(route, settings)
        paths[route.path] = {method.lower(): operation for method in route.methods}
    if settings.auth.admin_keys:
        paths.update(_admin_paths())
    if settings.metrics.enabled:
        paths["/metrics"] = {"get": _operation(
            "Prometheus metrics (trusted networks, or an admin key)",
            {200: {"description": "Prometheus text exposition format",
                   "content": {"text/plain": {"schema": {"type": "string"}}}}},
            errors=(401,))}
    paths["/openapi.json"] = {"get": _operation("This document", {200: _ok({"type": "object"})})}
    return {
        "openapi": "3.1.0",
        "info": {"title": "SmarterAvatar Gateway", "version": gateway.__version__,
                 "description": "The SmarterAvatar integration API (CONTRACT.md) and the gateway's additive routes. "
                                "Every error is {\"error\": {\"code\", \"message\"}}."},
        "paths": paths,
        "components": _components(settings),
    }


def openapi_endpoint(settings: Settings) -> Callable[[Request], Any]:
    document = build_document(settings)  # built once per app: settings are frozen

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse(document)

    return endpoint


# The kept copy documents the admin API too, which exists only when admin keys are set.
DOCUMENTATION_ENV = {"GATEWAY_ADMIN_KEYS": "documentation-only-admin-key"}


def main() -> None:
    """Print the document for a config (default: the bundled one), admin API included:
    ``python -m gateway.openapi [FILE] > docs/openapi.json``."""
    settings = load_settings(sys.argv[1] if len(sys.argv) > 1 else None, env={**os.environ, **DOCUMENTATION_ENV})
    print(json.dumps(build_document(settings), indent=2))


if __name__ == "__main__":
    main()
