"""The embedded default provider: the gateway signs its own short-lived token.

The token is a JWT (HS256, audience ``avatar``) carrying ``sid``/``sub`` (the
sessionId), ``avatarId``, ``voiceId``, ``iat``, ``exp`` and a unique ``jti``.
Whatever serves the avatar media verifies it with the same secret. There is
nothing to stop at a vendor: a local session ends when its token expires.
"""

from __future__ import annotations

import uuid

from gateway.avatar.base import Clock, MintedSession
from gateway.signing import AVATAR_AUDIENCE, Signer


class LocalProvider:
    name = "local"
    can_stop = False

    def __init__(self, signer: Signer, clock: Clock) -> None:
        self._signer = signer
        self._clock = clock

    async def create_session(self, avatar_id: str, voice_id: str, duration: float) -> MintedSession:
        session_id = str(uuid.uuid4())
        expires_at = float(int(self._clock() + duration))
        token = self._signer.issue(AVATAR_AUDIENCE, session_id, expires_at, avatarId=avatar_id, voiceId=voice_id)
        return MintedSession(session_id=session_id, token=token, expires_at=expires_at)

    async def stop_session(self, session_id: str, reason: str) -> None:
        return None

    async def probe(self) -> bool:
        return True
