"""POST /api/get-access-token and POST /api/sessions/end.

The token route is for server-side callers only: it requires one of the
configured API keys (``auth.api_keys``), sends no CORS headers (a browser
page cannot read it cross-origin), is rate limited per credential, and the
vendor key never leaves the gateway. Tokens are answered with
``Cache-Control: no-store`` and never logged.

The answer also carries ``chatToken``, a gateway-signed JWT (audience
``chat``) for the same sessionId and expiry: the visitor's browser sends it to
/api/transcribe and /api/sessions/end, and to /api/chat, which requires it
when ``avatar.require_session_token`` is on (see ``auth.py``).
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.auth import bearer, chat_token_session, key_matches, require_api_key
from gateway.avatar.runtime import AvatarRuntime
from gateway.body import read_json_object
from gateway.errors import InternalError, InvalidRequest
from gateway.fields import identifier, iso
from gateway.settings import AvatarSettings, Route, Settings
from gateway.signing import CHAT_AUDIENCE

log = structlog.get_logger("gateway.tokens")

_NO_STORE = {"Cache-Control": "no-store"}


def _runtime(request: Request) -> AvatarRuntime:
    runtime: AvatarRuntime | None = request.state.avatar
    if runtime is None:
        raise InternalError("Avatar sessions are not configured")
    return runtime


def _allowed(data: dict[str, Any], name: str, allowed: tuple[str, ...], kind: str) -> str:
    value = identifier(data, name)
    if allowed and value not in allowed:
        raise InvalidRequest(f"Field '{name}': {kind} {value!r} is not allowed on this gateway")
    return value


def validate_token_request(data: dict[str, Any], settings: AvatarSettings) -> tuple[str, str]:
    return (
        _allowed(data, "avatarId", settings.avatars, "avatar"),
        _allowed(data, "voiceId", settings.voices, "voice"),
    )


async def get_access_token(request: Request, route: Route) -> JSONResponse:
    settings: Settings = request.state.settings
    require_api_key(request, settings.auth.api_keys)
    data = await read_json_object(request, settings.server.max_body_bytes)
    avatar_id, voice_id = validate_token_request(data, settings.avatar)
    runtime = _runtime(request)
    minted = await runtime.guard.open(avatar_id, voice_id)
    request.scope["state"]["session_id"] = minted.session_id
    body = {"token": minted.token, "sessionId": minted.session_id, "expiresAt": iso(minted.expires_at),
            "chatToken": runtime.signer.issue(CHAT_AUDIENCE, minted.session_id, minted.expires_at)}
    log.info(
        "avatar_session_minted",
        session_id=minted.session_id,
        provider=runtime.provider.name,
        avatar_id=avatar_id,
        voice_id=voice_id,
        expires_at=body["expiresAt"],
    )
    return JSONResponse(body, headers=_NO_STORE)


async def end_session(request: Request, route: Route) -> JSONResponse:
    """End a session early and free its slot. Authorized by the session's own
    chatToken (no body needed), or by a server API key with ``{"sessionId"}``."""
    settings: Settings = request.state.settings
    runtime = _runtime(request)
    credential = bearer(request, "chatToken")
    if key_matches(credential, settings.auth.api_keys):
        data = await read_json_object(request, settings.server.max_body_bytes)
        session_id = identifier(data, "sessionId")
    else:
        session_id = chat_token_session(runtime.signer, credential)
    request.scope["state"]["session_id"] = session_id
    ended = await runtime.guard.end(session_id)
    return JSONResponse({"success": True, "sessionId": session_id, "ended": ended}, headers=_NO_STORE)
