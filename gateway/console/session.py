"""POST /console/session: the console opens its visitor's avatar session, as the company's page would.

In a real deployment the company's own server calls ``/api/get-access-token`` with its
API key and hands the visitor's browser the session's ``chatToken``; the browser then
calls ``/api/transcribe``, ``/api/chat`` and ``/api/sessions/end`` with it. The console
has no server of its own, so this route plays that server for it: it opens a session
through the same cost guard as the token route (the concurrent-session cap and the
maximum duration hold), rate limited per client IP (``console.session_rate_limit``,
through ``ratelimit.py``), and answers ``{sessionId, expiresAt, chatToken}``. Where the
provider is ``liveavatar`` it adds ``avatar: {provider, sessionToken, apiUrl}``: the
LiveAvatar session token the guard minted (scoped to this one session and short-lived:
what the vendor's web SDK starts the streaming avatar with in the browser) and the
vendor API it talks to (``avatar.base_url``). The vendor's API key never leaves the
gateway; other providers' tokens are not sent (the page has no SDK for them). It is mounted only when
``console.enabled`` is on and the gateway has avatar sessions (``Settings.uses_avatar``).

Same origin only: browsers say where a request comes from (``Sec-Fetch-Site``), and a
request another site's page makes is refused (403), so no other site can spend the
session cap through its visitors' browsers. The route sends no CORS headers either.
Clients that send no ``Sec-Fetch-Site`` (curl, old browsers) are admitted: they could
script the page itself anyway, and the IP limit and the session cap bound them.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.avatar.runtime import AvatarRuntime
from gateway.errors import Forbidden, InternalError
from gateway.fields import iso
from gateway.metrics import handler_started
from gateway.ratelimit import Endpoint, limited
from gateway.settings import AVATAR_BASE_URLS, AvatarSettings, Route, Settings
from gateway.signing import CHAT_AUDIENCE

log = structlog.get_logger("gateway.console")

SESSION_PATH = "/console/session"
# What the console's sessions are minted for when the gateway lists no avatars or voices.
CONSOLE_AVATAR = "console"
CONSOLE_VOICE = "console"

_NO_STORE = {"Cache-Control": "no-store"}


def console_avatar(settings: AvatarSettings) -> tuple[str, str]:
    """The avatar and voice the console asks for: the first of the allowlists when they
    are set (a vendor needs real ids), else placeholders the local provider signs as they are."""
    avatar = settings.avatars[0] if settings.avatars else CONSOLE_AVATAR
    voice = settings.voices[0] if settings.voices else CONSOLE_VOICE
    return avatar, voice


def vendor_api_url(settings: AvatarSettings) -> str:
    """The vendor API the provider calls, as the browser SDK wants it (no trailing slash)."""
    return (settings.base_url or AVATAR_BASE_URLS[settings.provider]).rstrip("/")


def require_same_origin(request: Request) -> None:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() != "same-origin":
        raise Forbidden(f"{SESSION_PATH} only answers the console's own pages (Sec-Fetch-Site: {site[:20]})")


async def open_session(request: Request) -> Response:
    handler_started(request.scope)  # rate limits passed: the end of the queue-time metric
    settings: Settings = request.state.settings
    runtime: AvatarRuntime | None = request.state.avatar
    if runtime is None:  # mounted only when the gateway has avatar sessions
        raise InternalError("Avatar sessions are not configured")
    avatar_id, voice_id = console_avatar(settings.avatar)
    minted = await runtime.guard.open(avatar_id, voice_id)
    request.scope["state"]["session_id"] = minted.session_id
    body: dict[str, object] = {
        "sessionId": minted.session_id,
        "expiresAt": iso(minted.expires_at),
        "chatToken": runtime.signer.issue(CHAT_AUDIENCE, minted.session_id, minted.expires_at),
    }
    if runtime.provider.name == "liveavatar":  # the page's SDK starts the streaming avatar with it
        body["avatar"] = {"provider": "liveavatar", "sessionToken": minted.token,
                          "apiUrl": vendor_api_url(settings.avatar)}
    log.info("console_session_opened", session_id=minted.session_id, provider=runtime.provider.name,
             expires_at=body["expiresAt"])
    return JSONResponse(body, headers=_NO_STORE)


def session_endpoint(settings: Settings) -> Endpoint:
    """``open_session`` behind the same-origin check, then the console's per-client limit
    (checked first, so another site's requests do not spend a visitor's budget)."""
    route = Route(SESSION_PATH, "console_session", ("POST",), rate_limits=settings.console.session_rate_limit)
    guarded = limited(route, open_session)

    async def endpoint(request: Request) -> Response:
        require_same_origin(request)
        return await guarded(request)

    return endpoint
