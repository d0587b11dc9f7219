"""POST /api/transcribe and POST /api/stt-token: speech-to-text for the avatar.

The browser records the visitor; the audio reaches the gateway (from the
page itself with its session's chatToken, accepted wherever the gateway has
avatar sessions, or through the company's server with an API key) and the
text goes on to /api/chat. Vendor keys never leave the gateway: for live
streaming the browser gets a short-lived vendor token instead.

Both routes are billable, so they are protected like the avatar token route
(``auth.key_or_chat_token``) and limited per session: the chatToken's
session, or for API-key callers the ``?sessionId=`` they name (else their
credential).

Audio arrives as ``multipart/form-data`` with a ``file`` field (what the
OpenAI-compatible endpoint takes) or as a raw ``audio/*`` body. Its size is
capped while reading (413), then it is decoded and its duration capped while
decoding (400, ``stt/audio.py``); parsing and decoding run off the event loop.
"""

from __future__ import annotations

import re
import time

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.auth import key_or_chat_token
from gateway.body import read_body
from gateway.errors import InternalError, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.fields import check_identifier, iso
from gateway.ratelimit import count_session, credential_key
from gateway.settings import Route, Settings
from gateway.stt.runtime import SttRuntime

log = structlog.get_logger("gateway.stt")

_NO_STORE = {"Cache-Control": "no-store"}
MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers on top of the audio itself
RAW_TYPES = ("video/webm", "video/mp4", "application/ogg", "application/octet-stream")
_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)
_PART_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)


def _runtime(request: Request) -> SttRuntime:
    runtime: SttRuntime | None = request.state.stt
    if runtime is None:
        raise InternalError("Speech-to-text is not configured")
    return runtime


async def _authorize(request: Request, route: Route) -> str:
    """Check the caller and count the request against the route's per-session limits."""
    settings: Settings = request.state.settings
    session_id = key_or_chat_token(request, settings.auth.api_keys)
    if session_id is None:
        named = request.query_params.get("sessionId")
        session_id = (
            check_identifier(named, "sessionId") if named is not None
            else "key:" + credential_key(request.headers.get("authorization"))
        )
    request.scope["state"]["session_id"] = session_id
    await count_session(request, route, session_id)
    return session_id


def form_file(body: bytes, content_type: str) -> bytes:
    """The ``file`` part of a ``multipart/form-data`` body (RFC 7578); other fields are ignored."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidRequest("Content-Type multipart/form-data has no boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    # Every part starts after "--boundary\r\n"; the body ends with "--boundary--".
    chunks = (b"\r\n" + body).split(b"\r\n" + delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise InvalidRequest("Malformed multipart body: no closing boundary")
    for chunk in chunks[1:-1]:
        headers, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise InvalidRequest("Malformed multipart body: a part has no header end")
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-disposition":
                found = _PART_NAME.search(value)
                if found is not None and found.group(1) == b"file":
                    return content
    raise InvalidRequest("Missing required field: file")


async def _audio_bytes(request: Request, max_bytes: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "multipart/form-data":
        data = form_file(await read_body(request, max_bytes + MULTIPART_OVERHEAD, what="Audio"), content_type)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"Audio exceeds the limit of {max_bytes} bytes")
        return data
    if media_type.startswith("audio/") or media_type in RAW_TYPES:
        return await read_body(request, max_bytes, what="Audio")
    shown = media_type or "none"
    raise UnsupportedMediaType(f"Content-Type must be multipart/form-data or audio/*, got {shown}")


async def transcribe(request: Request, route: Route) -> JSONResponse:
    settings: Settings = request.state.settings
    runtime = _runtime(request)
    session_id = await _authorize(request, route)
    audio = await runtime.decode(await _audio_bytes(request, settings.stt.max_bytes))
    started = time.perf_counter()
    transcript = await runtime.provider.transcribe(audio)
    event = {
        "session_id": session_id,
        "provider": runtime.provider.name,
        "audio_seconds": round(audio.seconds, 2),
        "container": audio.container,
        "codec": audio.codec,
        "chars": len(transcript.text),
        "stt_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    if settings.server.log_message_content:
        event["text"] = transcript.text
    log.info("stt_transcribed", **event)
    return JSONResponse({"text": transcript.text, "language": transcript.language}, headers=_NO_STORE)


async def stt_token(request: Request, route: Route) -> JSONResponse:
    settings: Settings = request.state.settings
    runtime = _runtime(request)
    session_id = await _authorize(request, route)
    token = await runtime.provider.stream_token(settings.stt.token_ttl)
    expires_at = time.time() + token.expires_in
    log.info("stt_token_minted", session_id=session_id, provider=runtime.provider.name,
             expires_in=token.expires_in)
    body = {"token": token.token, "provider": runtime.provider.name, "expiresIn": int(token.expires_in),
            "expiresAt": iso(expires_at)}
    return JSONResponse(body, headers=_NO_STORE)
