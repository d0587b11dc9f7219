"""POST /api/get-access-token, POST /api/sessions/end, and chat scoping.

The token route is for server-side callers only: it requires one of the
configured API keys (``auth.api_keys``), sends no CORS headers (a browser
page cannot read it cross-origin), is rate limited per credential, and the
vendor key never leaves the gateway. Tokens are answered with
``Cache-Control: no-store`` and never logged.

With ``avatar.require_session_token`` the answer also carries ``chatToken``,
a gateway-signed JWT (audience ``chat``) for the same sessionId and expiry;
/api/chat then requires it (``authorize_chat``) and pins the body's
sessionId to it, so a stranger cannot use a public chat route and one
visitor cannot write into another's session.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.auth import bearer, key_matches, require_api_key, unauthorized
from gateway.avatar.runtime import AvatarRuntime
from gateway.avatar.signing import CHAT_AUDIENCE, InvalidToken
from gateway.body import json_type, read_json_object
from gateway.config import AvatarSettings, Route
from gateway.errors import InternalError, InvalidRequest

log = structlog.get_logger("gateway.tokens")

MAX_ID_CHARS = 128
_ID = re.compile(r"[A-Za-z0-9._:\-]+")
_NO_STORE = {"Cache-Control": "no-store"}


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _runtime(request: Request) -> AvatarRuntime:
    runtime: AvatarRuntime | None = getattr(request.app.state, "avatar", None)
    if runtime is None:
        raise InternalError("Avatar sessions are not configured")
    return runtime


def _identifier(data: dict[str, Any], name: str, allowed: tuple[str, ...], kind: str) -> str:
    if name not in data:
        raise InvalidRequest(f"Missing required field: {name}")
    value = data[name]
    if not isinstance(value, str):
        raise InvalidRequest(f"Field '{name}' must be a string, got {json_type(value)}")
    if not (0 < len(value) <= MAX_ID_CHARS and _ID.fullmatch(value)):
        raise InvalidRequest(
            f"Field '{name}' must be 1 to {MAX_ID_CHARS} characters of letters, digits, '.', '_', ':' or '-'"
        )
    if allowed and value not in allowed:
        raise InvalidRequest(f"Field '{name}': {kind} {value!r} is not allowed on this gateway")
    return value


def validate_token_request(data: dict[str, Any], settings: AvatarSettings) -> tuple[str, str]:
    return (
        _identifier(data, "avatarId", settings.avatars, "avatar"),
        _identifier(data, "voiceId", settings.voices, "voice"),
    )


async def get_access_token(request: Request, route: Route) -> JSONResponse:
    settings = request.app.state.settings
    require_api_key(request, settings.auth.api_keys)
    data = await read_json_object(request, settings.server.max_body_bytes)
    avatar_id, voice_id = validate_token_request(data, settings.avatar)
    runtime = _runtime(request)
    minted = await runtime.guard.open(avatar_id, voice_id)
    request.scope["state"]["session_id"] = minted.session_id
    body = {"token": minted.token, "sessionId": minted.session_id, "expiresAt": iso(minted.expires_at)}
    if settings.avatar.require_session_token:
        body["chatToken"] = runtime.signer.issue(CHAT_AUDIENCE, minted.session_id, minted.expires_at)
    log.info(
        "avatar_session_minted",
        session_id=minted.session_id,
        provider=runtime.provider.name,
        avatar_id=avatar_id,
        voice_id=voice_id,
        expires_at=body["expiresAt"],
    )
    return JSONResponse(body, headers=_NO_STORE)


def _chat_session(request: Request, runtime: AvatarRuntime, credential: str) -> str:
    try:
        claims = runtime.signer.verify(credential, CHAT_AUDIENCE)
    except InvalidToken as exc:
        reason = "has expired" if str(exc) == "expired" else "is not valid"
        raise unauthorized(f"Chat token {reason}", invalid=True) from None
    return str(claims["sid"])


def authorize_chat(request: Request) -> str | None:
    """For /api/chat: None when chat tokens are not required, else the sessionId
    of the request's valid chatToken (401 when missing, invalid or expired)."""
    if not request.app.state.settings.avatar.require_session_token:
        return None
    credential = bearer(request, "chatToken")
    session_id = _chat_session(request, _runtime(request), credential)
    request.scope["state"]["session_id"] = session_id
    return session_id


def bind_chat_session(data: dict[str, Any], session_id: str | None) -> dict[str, Any]:
    """Pin the chat body to the token's session: absent sessionId becomes the
    token's, a different one is refused (401)."""
    if session_id is None:
        return data
    if "sessionId" not in data or data["sessionId"] is None:
        return {**data, "sessionId": session_id}
    if data["sessionId"] != session_id:
        raise unauthorized("Field 'sessionId' does not match the session of the chat token", invalid=True)
    return data


async def end_session(request: Request, route: Route) -> JSONResponse:
    """End a session early and free its slot. Authorized by the session's own
    chatToken (no body needed), or by a server API key with ``{"sessionId"}``."""
    settings = request.app.state.settings
    runtime = _runtime(request)
    credential = bearer(request, "chatToken")
    if key_matches(credential, settings.auth.api_keys):
        data = await read_json_object(request, settings.server.max_body_bytes)
        session_id = _identifier(data, "sessionId", (), "session")
    else:
        session_id = _chat_session(request, runtime, credential)
    request.scope["state"]["session_id"] = session_id
    ended = await runtime.guard.end(session_id)
    return JSONResponse({"success": True, "sessionId": session_id, "ended": ended}, headers=_NO_STORE)
