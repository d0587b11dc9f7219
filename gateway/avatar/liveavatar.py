"""HeyGen LiveAvatar (``api.liveavatar.com``): the current API.

``POST /v1/sessions/token`` with ``X-API-KEY`` creates a session and answers
``{"code": 1000, "data": {"session_id", "session_token"}}`` (100 in older documents); the gateway asks
for ``max_session_duration`` = its session TTL and computes ``expiresAt``
from that, since no expiry is returned. ``POST /v1/sessions/stop`` ends a
session early (the cost guard calls it). The health probe is
``GET /v1/users/credits``: authenticated and free.
"""

from __future__ import annotations

from typing import Any

from gateway.avatar.base import Clock, MintedSession, VendorClient, nonempty_string
from gateway.errors import ProviderError

# The vendor's success code: 1000 (FACTS "Avatar vendors, updated"; the vendor's own web SDK
# checks for it); 100 as the earlier documentation had it is still accepted.
SUCCESS = (1000, 100)


class LiveAvatarProvider:
    name = "liveavatar"
    can_stop = True

    def __init__(self, vendor: VendorClient, clock: Clock, mode: str = "FULL") -> None:
        self._vendor = vendor
        self._clock = clock
        self._mode = mode

    async def create_session(self, avatar_id: str, voice_id: str, duration: float) -> MintedSession:
        started = self._clock()
        answer = await self._vendor.call(
            "POST",
            "/v1/sessions/token",
            {
                "mode": self._mode,
                "avatar_id": avatar_id,
                "avatar_persona": {"voice_id": voice_id},
                "max_session_duration": int(duration),
            },
        )
        data = self._data(answer)
        if not isinstance(data, dict):
            raise self._vendor.malformed("no 'data' object")
        session_id, token = data.get("session_id"), data.get("session_token")
        if not isinstance(session_id, str) or not nonempty_string(session_id):
            raise self._vendor.malformed("no 'data.session_id' string")
        if not isinstance(token, str) or not nonempty_string(token):
            raise self._vendor.malformed("no 'data.session_token' string")
        return MintedSession(session_id=session_id, token=token, expires_at=float(int(started + duration)))

    async def stop_session(self, session_id: str, reason: str) -> None:
        self._data(await self._vendor.call("POST", "/v1/sessions/stop", {"session_id": session_id, "reason": reason}))

    async def probe(self) -> bool:
        try:
            self._data(await self._vendor.call("GET", "/v1/users/credits"))
        except ProviderError:
            return False
        return True

    def _data(self, answer: Any) -> Any:
        if not isinstance(answer, dict):
            raise self._vendor.malformed("not a JSON object")
        code = answer.get("code")
        if code not in SUCCESS:
            shown = code if isinstance(code, int) else "missing"
            raise ProviderError(f"{self._vendor.label} refused the request (code {shown})")
        return answer.get("data")
