"""POST /api/chat: validate, translate, forward to the customer's backend, translate back.

The path of a chat turn: credentials (``auth``: a chatToken when sessions are
required), the body (``body``), validation (here), the per-session limit
(``ratelimit``), the backend body (``mapping``), the call (``upstream``), the
answer (``mapping``), the turn recorded write-behind (``conversations``).
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.auth import authorize_chat, bind_chat_session
from gateway.body import json_type, read_json_object
from gateway.config import ChatLimits, Route, Settings
from gateway.errors import InvalidRequest, ProviderError
from gateway.fields import check_identifier, message_list
from gateway.mapping import ChatTurn, backend_url, build_backend_body, parse_backend_answer
from gateway.ratelimit import count_session
from gateway.storage.base import ChatTurnRecord
from gateway.upstream import decode_json

log = structlog.get_logger("gateway.chat")

PROVIDER = "Chat backend"
ROLES = ("user", "assistant")
_KNOWN_FIELDS = ("message", "sessionId", "history", "context")
# On a fallback answer (route.fallback_response), so a page can tell the visitor.
FALLBACK_HEADER = "Gateway-Fallback"


def validate_chat(data: dict[str, Any], limits: ChatLimits, request_id: str) -> ChatTurn:
    """Check a client's chat body against the contract; raise InvalidRequest naming the field."""
    if "message" not in data:
        raise InvalidRequest("Missing required field: message")
    message = data["message"]
    if not isinstance(message, str):
        raise InvalidRequest(f"Field 'message' must be a string, got {json_type(message)}")
    if not message.strip():
        raise InvalidRequest("Field 'message' must not be empty")
    if len(message) > limits.max_message_chars:
        raise InvalidRequest(f"Field 'message' is longer than {limits.max_message_chars} characters")

    session_id = data.get("sessionId")
    if session_id is None:
        session_id = str(uuid.uuid4())
    else:
        check_identifier(session_id, "sessionId", limits.max_session_id_chars)

    history = data.get("history")
    if history is None:
        history = []
    else:
        history = message_list(
            history, "history", ROLES, limits.max_history, limits.max_history_content_chars,
            shape=" with 'role' and 'content'",
        )

    context = data.get("context")
    if context is None:
        context = {}
    elif not isinstance(context, dict):
        raise InvalidRequest(f"Field 'context' must be an object, got {json_type(context)}")
    # Other client fields (locale, page, ...) travel to the backend in context.
    context = {**context, **{k: v for k, v in data.items() if k not in _KNOWN_FIELDS}, "history": history}
    return ChatTurn(message=message, session_id=session_id, history=history, context=context, request_id=request_id)


async def chat(request: Request, route: Route) -> JSONResponse:
    settings: Settings = request.state.settings
    state = request.scope["state"]
    session = authorize_chat(request, request.state.chat_signer)  # None unless avatar.require_session_token
    data = bind_chat_session(await read_json_object(request, settings.server.max_body_bytes), session)
    turn = validate_chat(data, route.limits, state["request_id"])
    state["session_id"] = turn.session_id
    await count_session(request, route, turn.session_id)

    assert route.upstream is not None  # config guarantees it for chat routes
    upstream = route.upstream
    elapsed: float | None = None
    try:
        answer = await request.state.upstream.request(
            "POST",
            backend_url(upstream.url, turn),
            provider=PROVIDER,
            timeouts=upstream.timeouts,
            json_body=build_backend_body(route.mapping, turn),
            headers={**upstream.headers, "x-request-id": turn.request_id},
        )
        elapsed = state["upstream_seconds"] = answer.elapsed
        if not answer.ok:
            raise ProviderError(f"{PROVIDER} answered HTTP {answer.status}")
        text, sources = parse_backend_answer(route.mapping, decode_json(answer, PROVIDER))
    except ProviderError as exc:
        _record(request, turn, None, [], elapsed, 502, exc.code)
        if route.fallback_response is None:
            raise
        # A configured fallback keeps the avatar talking while the backend is down.
        log.warning("chat_fallback", reason=exc.message, session_id=turn.session_id)
        text, sources = route.fallback_response, []
        headers = {FALLBACK_HEADER: "backend-unavailable"}  # the body is the contract's; this says why
    else:
        headers = {}
        _record(request, turn, text, sources, elapsed, 200, None)
    if settings.server.log_message_content:
        log.info("chat_turn", session_id=turn.session_id, message=turn.message, response=text)
    return JSONResponse({"response": text, "sources": sources, "sessionId": turn.session_id}, headers=headers)


def _record(
    request: Request,
    turn: ChatTurn,
    answer: str | None,
    sources: list[dict[str, str]],
    elapsed: float | None,
    status: int,
    error_code: str | None,
) -> None:
    conversations = request.state.conversations
    if conversations is None:
        return
    conversations.record_turn(
        ChatTurnRecord(
            session_id=turn.session_id,
            request_id=turn.request_id,
            message=turn.message,
            answer=answer,
            sources=sources,
            upstream_ms=None if elapsed is None else round(elapsed * 1000, 2),
            status=status,
            error_code=error_code,
        )
    )
