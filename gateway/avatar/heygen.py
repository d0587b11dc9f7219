"""Legacy HeyGen Streaming Avatar (``api.heygen.com``), for customers still on it.

``POST /v1/streaming.create_token`` with ``x-api-key`` and body ``{}`` answers
``{"error": null, "data": {"token": ...}}``. The token is not bound to a
session yet (the browser SDK creates the session with it), so the gateway
issues the sessionId itself and cannot stop the session: it is counted by
the cost guard until its TTL passes. HeyGen announced this API's sunset in
favour of LiveAvatar. The health probe is ``GET /v2/user/remaining_quota``.
"""

from __future__ import annotations

import uuid

from gateway.avatar.base import Clock, MintedSession, VendorClient, nonempty_string
from gateway.errors import ProviderError


class HeyGenProvider:
    name = "heygen"
    can_stop = False

    def __init__(self, vendor: VendorClient, clock: Clock) -> None:
        self._vendor = vendor
        self._clock = clock

    async def create_session(self, avatar_id: str, voice_id: str, duration: float) -> MintedSession:
        started = self._clock()
        answer = await self._vendor.call("POST", "/v1/streaming.create_token", {})
        if not isinstance(answer, dict):
            raise self._vendor.malformed("not a JSON object")
        if answer.get("error"):
            raise ProviderError(f"{self._vendor.label} refused the request")
        data = answer.get("data")
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not nonempty_string(token):
            raise self._vendor.malformed("no 'data.token' string")
        return MintedSession(session_id=str(uuid.uuid4()), token=token, expires_at=float(int(started + duration)))

    async def stop_session(self, session_id: str, reason: str) -> None:
        return None

    async def probe(self) -> bool:
        try:
            await self._vendor.call("GET", "/v2/user/remaining_quota")
        except ProviderError:
            return False
        return True
