"""Gateway-signed JWTs (PyJWT, HS256): local avatar tokens and chatTokens.

Shared by the local avatar provider (which issues avatar tokens) and
``auth.py`` (which verifies chatTokens); it imports no avatar provider.

Each kind has its own audience (``avatar`` for the local provider's token,
``chat`` for chatTokens), so a token minted for one use is refused for the
other. A failed check raises ``InvalidToken`` whose ``detail`` says why (never
the token). Expiry is checked against the injected clock rather than PyJWT's own
``time.time()``, so tests move time without sleeping; PyJWT still verifies
the signature, the algorithm, the issuer, the audience and required claims.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt

from gateway.errors import InvalidToken

ISSUER = "smarteravatar-gateway"
ALGORITHM = "HS256"
AVATAR_AUDIENCE = "avatar"
CHAT_AUDIENCE = "chat"
_REQUIRED = ["exp", "iat", "jti", "sid", "sub", "iss", "aud"]


def ephemeral_secret() -> str:
    return secrets.token_urlsafe(48)


class Signer:
    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._key = secret.encode()
        self._clock = clock

    def __repr__(self) -> str:
        return "Signer(key='**********')"

    def issue(self, audience: str, session_id: str, expires_at: float, **claims: Any) -> str:
        now = int(self._clock())
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "sub": session_id,
            "sid": session_id,
            "iat": now,
            "exp": int(expires_at),
            "jti": str(uuid.uuid4()),
            **claims,
        }
        return jwt.encode(payload, self._key, algorithm=ALGORITHM)

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=ISSUER,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "require": _REQUIRED},
            )
        except jwt.InvalidAudienceError:
            raise InvalidToken("Token is not valid", detail="issued for another use") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("Token is not valid", detail="bad signature") from None
        except jwt.PyJWTError:
            raise InvalidToken("Token is not valid", detail="malformed") from None
        if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("sid"), str):
            raise InvalidToken("Token is not valid", detail="malformed")
        if claims["exp"] <= self._clock():
            raise InvalidToken("Token is not valid", detail="expired")
        return claims
