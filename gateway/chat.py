"""POST /api/chat: validate, translate, forward to the customer's backend, translate back."""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.body import json_type, read_json_object
from gateway.config import ChatLimits, Route
from gateway.errors import InvalidRequest, ProviderError
from gateway.mapping import ChatTurn, build_backend_body, parse_backend_answer
from gateway.storage.base import ChatTurnRecord
from gateway.tokens import authorize_chat, bind_chat_session
from gateway.upstream import post_json

log = structlog.get_logger("gateway.chat")

PROVIDER = "Chat backend"
ROLES = ("user", "assistant")
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:\-]+$")
_KNOWN_FIELDS = ("message", "sessionId", "history", "context")


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
    elif not isinstance(session_id, str):
        raise InvalidRequest(f"Field 'sessionId' must be a string, got {json_type(session_id)}")
    elif not (0 < len(session_id) <= limits.max_session_id_chars and _SESSION_ID.fullmatch(session_id)):
        raise InvalidRequest(
            f"Field 'sessionId' must be 1 to {limits.max_session_id_chars} characters "
            "of letters, digits, '.', '_', ':' or '-'"
        )

    history = _validate_history(data.get("history"), limits)

    context = data.get("context")
    if context is None:
        context = {}
    elif not isinstance(context, dict):
        raise InvalidRequest(f"Field 'context' must be an object, got {json_type(context)}")
    # Other client fields (locale, page, ...) travel to the backend in context.
    context = {**context, **{k: v for k, v in data.items() if k not in _KNOWN_FIELDS}, "history": history}
    return ChatTurn(message=message, session_id=session_id, history=history, context=context, request_id=request_id)


def _validate_history(history: Any, limits: ChatLimits) -> list[dict[str, str]]:
    if history is None:
        return []
    if not isinstance(history, list):
        raise InvalidRequest(f"Field 'history' must be an array, got {json_type(history)}")
    if len(history) > limits.max_history:
        raise InvalidRequest(f"Field 'history' has {len(history)} entries; the limit is {limits.max_history}")
    clean = []
    for index, entry in enumerate(history):
        where = f"history[{index}]"
        if not isinstance(entry, dict):
            raise InvalidRequest(f"Field '{where}' must be an object with 'role' and 'content', got {json_type(entry)}")
        role, content = entry.get("role"), entry.get("content")
        if role not in ROLES:
            raise InvalidRequest(f"Field '{where}.role' must be 'user' or 'assistant'")
        if not isinstance(content, str):
            raise InvalidRequest(f"Field '{where}.content' must be a string, got {json_type(content)}")
        if len(content) > limits.max_history_content_chars:
            limit = limits.max_history_content_chars
            raise InvalidRequest(f"Field '{where}.content' is longer than {limit} characters")
        clean.append({"role": role, "content": content})
    return clean


async def chat(request: Request, route: Route) -> JSONResponse:
    app_state = request.app.state
    state = request.scope["state"]
    session = authorize_chat(request)  # None unless avatar.require_session_token
    data = bind_chat_session(await read_json_object(request, app_state.settings.server.max_body_bytes), session)
    turn = validate_chat(data, route.limits, state["request_id"])
    state["session_id"] = turn.session_id
    await app_state.limiter_gate(request, route, session=turn.session_id)

    assert route.upstream is not None  # config guarantees it for chat routes
    body = build_backend_body(route.mapping, turn)
    elapsed: float | None = None
    try:
        answer, elapsed = await post_json(
            app_state.http,
            route.upstream,
            body,
            provider=PROVIDER,
            headers={"x-request-id": turn.request_id},
        )
        state["upstream_seconds"] = elapsed
        text, sources = parse_backend_answer(route.mapping, answer)
    except ProviderError as exc:
        _record(request, turn, None, [], None, 502, exc.code)
        if route.fallback_response is None:
            raise
        # A configured fallback keeps the avatar talking while the backend is down.
        log.warning("chat_fallback", reason=exc.message, session_id=turn.session_id)
        text, sources = route.fallback_response, []
    else:
        _record(request, turn, text, sources, elapsed, 200, None)
    if app_state.settings.server.log_message_content:
        log.info("chat_turn", session_id=turn.session_id, message=turn.message, response=text)
    return JSONResponse({"response": text, "sources": sources, "sessionId": turn.session_id})


def _record(
    request: Request,
    turn: ChatTurn,
    answer: str | None,
    sources: list[dict[str, str]],
    elapsed: float | None,
    status: int,
    error_code: str | None,
) -> None:
    """Hand the exchange to the write-behind recorder (never waits, never fails the chat)."""
    recorder = request.app.state.turns
    if recorder is None:
        return
    recorder.record(
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
