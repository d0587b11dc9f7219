"""POST /api/chat: validate, translate, forward to the customer's backend, translate back.

The path of a chat turn: credentials (``auth``: a chatToken when sessions are
required), the body (``body``), validation (here), the per-session limit
(``ratelimit``), the backend's circuit breaker (``breaker``), the backend body
(``mapping``), the call (``upstream``), the answer (``mapping``), the turn
recorded write-behind (``conversations``).

A client that sends ``Accept: text/event-stream`` gets the answer as events
(``streaming``): deltas as the backend produces them when the route's
``mapping.stream`` says how to read its stream, else the whole answer as one
delta. Failures before the stream begins are the normal error response; after,
an ``error`` event (or, if nothing was said yet, the fallback answer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.auth import authorize_chat, bind_chat_session
from gateway.body import json_type, read_json_object
from gateway.breaker import CircuitBreaker
from gateway.errors import CircuitOpen, InvalidRequest, ProviderError, UpstreamFailed
from gateway.fields import check_identifier, message_list
from gateway.mapping import ChatTurn, backend_url, build_backend_body, parse_backend_answer, parse_stream_chunk
from gateway.ratelimit import count_session
from gateway.settings import ChatLimits, Route, Settings
from gateway.storage.base import ChatTurnRecord
from gateway.streaming import END, EventStream, backend_items, event, wants_event_stream
from gateway.upstream import decode_json

log = structlog.get_logger("gateway.chat")

PROVIDER = "Chat backend"
ROLES = ("user", "assistant")
_KNOWN_FIELDS = ("message", "sessionId", "history", "context")
# Marks a fallback answer (with ``"fallback": true`` in the body / the done event).
FALLBACK_HEADER = "X-Gateway-Fallback"
STREAM_ACCEPT = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}
END_MARKERS = {"sse": "data: [DONE]", "ndjson": "a last line that is done"}


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


async def chat(request: Request, route: Route) -> Response:
    settings: Settings = request.state.settings
    state = request.scope["state"]
    session = authorize_chat(request, request.state.chat_signer)  # None unless avatar.require_session_token
    data = bind_chat_session(await read_json_object(request, settings.server.max_body_bytes), session)
    turn = validate_chat(data, route.limits, state["request_id"])
    state["session_id"] = turn.session_id
    await count_session(request, route, turn.session_id)

    assert route.upstream is not None  # config guarantees it for chat routes
    breaker = request.state.upstream.breaker(route.path, route.upstream.breaker, PROVIDER)
    if wants_event_stream(request):
        # The backend streams too if the route says how to read it ($stream in its template).
        turn = dataclasses.replace(turn, stream=route.mapping.stream is not None)
        call: contextlib.AbstractContextManager[Any] | CircuitOpen
        try:
            call = _admit(breaker)
        except CircuitOpen as exc:
            if route.fallback_response is None:
                raise  # the stream has not begun: the normal error response
            call = exc
        return EventStream(_events(request, route, turn, call), settings.server.sse_ping_interval)

    elapsed: float | None = None
    fallback = False
    try:
        with _admit(breaker):
            text, sources, elapsed = await _whole_answer(request, route, turn)
        state["upstream_seconds"] = elapsed
    except ProviderError as exc:
        _record(request, turn, None, [], elapsed, 502, exc.code)
        if route.fallback_response is None:
            raise
        text, sources, fallback = _fallback(route, turn, exc), [], True
    else:
        _record(request, turn, text, sources, elapsed, 200, None)
    if settings.server.log_message_content:
        log.info("chat_turn", session_id=turn.session_id, message=turn.message, response=text)
    return JSONResponse(_answer(text, sources, turn, fallback), headers={FALLBACK_HEADER: "true"} if fallback else None)


def _answer(text: str, sources: list[dict[str, str]], turn: ChatTurn, fallback: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"response": text, "sources": sources, "sessionId": turn.session_id}
    if fallback:
        body["fallback"] = True  # additive: present only on a fallback answer
    return body


def _admit(breaker: CircuitBreaker | None) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext() if breaker is None else breaker.admit()


def _fallback(route: Route, turn: ChatTurn, exc: ProviderError) -> str:
    # A configured fallback keeps the avatar talking while the backend is down.
    log.warning("chat_fallback", reason=exc.message, session_id=turn.session_id)
    assert route.fallback_response is not None
    return route.fallback_response


def _exchange(route: Route, turn: ChatTurn) -> dict[str, Any]:
    """What every call to the chat backend carries, streaming or not."""
    upstream = route.upstream
    assert upstream is not None
    return {
        "provider": PROVIDER,
        "timeouts": upstream.timeouts,
        "json_body": build_backend_body(route.mapping, turn),
        "headers": {**upstream.headers, "x-request-id": turn.request_id},
        "retries": upstream.retries,
    }


async def _whole_answer(request: Request, route: Route, turn: ChatTurn) -> tuple[str, list[dict[str, str]], float]:
    upstream = route.upstream
    assert upstream is not None
    answer = await request.state.upstream.request("POST", backend_url(upstream.url, turn), **_exchange(route, turn))
    _check_status(answer.status, answer.headers)
    text, sources = parse_backend_answer(route.mapping, decode_json(answer, PROVIDER))
    return text, sources, answer.elapsed


def _check_status(status: int, headers: Mapping[str, str]) -> None:
    if 200 <= status < 300:
        return
    message = f"{PROVIDER} answered HTTP {status}"
    retry_after = headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        message += f" (Retry-After: {retry_after}s)"
    # A 5xx (or 429) says the backend is in trouble: it counts against its breaker; a 4xx is our request.
    raise (UpstreamFailed if status >= 500 or status == 429 else ProviderError)(message)


async def _events(
    request: Request, route: Route, turn: ChatTurn, call: contextlib.AbstractContextManager[Any] | CircuitOpen
) -> AsyncGenerator[bytes, None]:
    """The event stream of one chat turn: deltas as the backend sends them, sources once,
    then ``done`` (the non-streaming answer's object), or ``error``, or the fallback."""
    started = time.perf_counter()
    parts: list[str] = []
    sources: list[dict[str, str]] = []
    try:
        if isinstance(call, CircuitOpen):
            raise call
        with call:
            async for kind, value in _backend_events(request, route, turn):
                if kind == "delta":
                    parts.append(value)
                    yield event("delta", {"text": value})
                else:
                    sources = value
                    yield event("sources", {"sources": value})
    except ProviderError as exc:
        elapsed = time.perf_counter() - started
        request.scope["state"]["upstream_seconds"] = elapsed
        _record(request, turn, "".join(parts) or None, sources, elapsed, 502, exc.code)
        if parts or route.fallback_response is None:
            log.warning("request_failed", code=exc.code, reason=exc.message, streamed_chars=sum(map(len, parts)))
            yield event("error", {"error": {"code": exc.code, "message": exc.message}})
            return
        text = _fallback(route, turn, exc)
        yield event("delta", {"text": text})
        yield event("done", _answer(text, [], turn, fallback=True))
        return
    text = "".join(parts)
    elapsed = time.perf_counter() - started
    request.scope["state"]["upstream_seconds"] = elapsed
    _record(request, turn, text, sources, elapsed, 200, None)
    if request.state.settings.server.log_message_content:
        log.info("chat_turn", session_id=turn.session_id, message=turn.message, response=text)
    yield event("done", _answer(text, sources, turn, fallback=False))


async def _backend_events(request: Request, route: Route, turn: ChatTurn) -> AsyncIterator[tuple[str, Any]]:
    """("delta", text) as the backend produces it and ("sources", [...]) once, when known."""
    if not turn.stream:  # a backend that does not stream: the whole answer is one delta
        text, sources, _ = await _whole_answer(request, route, turn)
        yield "delta", text
        if sources:
            yield "sources", sources
        return
    upstream, stream = route.upstream, route.mapping.stream
    assert upstream is not None and stream is not None
    sent_sources = False
    async with request.state.upstream.stream(
        "POST", backend_url(upstream.url, turn), **_exchange(route, turn), accept=STREAM_ACCEPT[stream.format]
    ) as answer:
        _check_status(answer.status, answer.headers)
        async for item in backend_items(stream.format, answer, PROVIDER):
            if item is END:
                return
            chunk = parse_stream_chunk(route.mapping, item)
            if chunk.delta:
                yield "delta", chunk.delta
            if chunk.sources and not sent_sources:
                sent_sources = True
                yield "sources", chunk.sources
            if chunk.done:
                return
    raise UpstreamFailed(f"{PROVIDER} stream ended before its end marker ({END_MARKERS[stream.format]})")


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
