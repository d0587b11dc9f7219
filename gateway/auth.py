"""Every credential the gateway checks, in one place.

Three kinds, all sent as ``Authorization: Bearer <credential>``:

- **server API keys** (``auth.api_keys``): the token route's callers, and
  the server-side way to end a session;
- **admin keys** (``auth.admin_keys``): the admin read API;
- **chatTokens**: gateway-signed JWTs (audience ``chat``) minted with every
  avatar session (the token route, the console's session route). A chatToken
  proves a session this gateway minted, whatever the chat settings, so the
  routes a visitor's browser calls with its own credential (speech-to-text,
  ending the session) accept one whenever the gateway has an avatar runtime
  (``session_signer``). /api/chat requires one only when
  ``avatar.require_session_token`` is on, and then pins the body's sessionId
  to it, so a stranger cannot use a public chat route and one visitor cannot
  write into another's session.

Keys: several may be configured at once so they can be rotated (add the new
one, move callers over, remove the old one). Every configured key is
compared, each through ``hmac.compare_digest`` on SHA-256 digests (equal
lengths, so the comparison time says nothing about a key's length or
prefix), and the loop never exits early, so timing does not reveal which key
matched or how many exist. Failures answer 401 with a ``WWW-Authenticate``
challenge (RFC 6750).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from gateway.errors import InvalidToken, Unauthorized
from gateway.signing import CHAT_AUDIENCE, Signer

REALM = "smarteravatar-gateway"
ADMIN_REALM = "admin"


def unauthorized(message: str, *, invalid: bool = False, realm: str = REALM) -> Unauthorized:
    challenge = f'Bearer realm="{realm}"' + (', error="invalid_token"' if invalid else "")
    return Unauthorized(message, headers={"WWW-Authenticate": challenge})


def bearer(request: Request, what: str = "key") -> str:
    """The bearer credential of the request, or 401 naming what is expected."""
    header = request.headers.get("authorization")
    if header is None or not header.strip():
        raise unauthorized(f"Missing Authorization header; expected 'Authorization: Bearer <{what}>'")
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise unauthorized(f"Authorization header must be 'Bearer <{what}>'", invalid=True)
    return credential


def key_matches(candidate: str, keys: Sequence[str]) -> bool:
    digest = hashlib.sha256(candidate.encode()).digest()
    matched = False
    for key in keys:
        # No short-circuit: every key is compared whatever the outcome.
        matched |= hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest())
    return matched


def require_api_key(request: Request, keys: Sequence[str]) -> None:
    """401 unless the request carries one of ``keys`` (none configured: always 401)."""
    if not key_matches(bearer(request), keys):
        raise unauthorized("Invalid API key", invalid=True)


def require_admin_key(request: Request, keys: Sequence[str]) -> None:
    """401 unless the request carries one of the admin ``keys``."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.strip().partition(" ")
    if scheme.lower() == "bearer" and presented.strip() and key_matches(presented.strip(), keys):
        return
    message = "Missing or invalid admin credential" if header else "Missing Authorization: Bearer <admin key>"
    raise unauthorized(message, realm=ADMIN_REALM)


def chat_token_session(signer: Signer, credential: str) -> str:
    """The sessionId a valid chatToken is scoped to; 401 saying why it is not valid."""
    try:
        claims = signer.verify(credential, CHAT_AUDIENCE)
    except InvalidToken as exc:
        reason = "has expired" if exc.detail == "expired" else "is not valid"
        raise unauthorized(f"Chat token {reason}", invalid=True) from None
    return str(claims["sid"])


def authorize_chat(request: Request, signer: Signer | None) -> str | None:
    """For /api/chat: None when chat tokens are not required (``signer`` is None),
    else the sessionId of the request's valid chatToken (401 when missing, invalid or expired)."""
    if signer is None:
        return None
    return chat_token_session(signer, bearer(request, "chatToken"))


def session_signer(request: Request) -> Signer | None:
    """The signer that verifies chatTokens on the routes other than /api/chat: the avatar
    runtime's, whenever the gateway has one (None: no avatar sessions, so no chatToken
    can be valid). Unlike ``request.state.chat_signer`` it does not depend on
    ``avatar.require_session_token``: that switch says whether *chat* demands a token,
    not whether a token the gateway signed is proof of a session it minted."""
    avatar = request.state.avatar
    if avatar is None:
        return None
    signer: Signer = avatar.signer
    return signer


def key_or_chat_token(request: Request, keys: Sequence[str]) -> str | None:
    """For billable routes a browser may call (speech-to-text): a server API key (None:
    the caller names its own session), or, where the gateway has avatar sessions
    (``session_signer``), a valid chatToken (its sessionId). 401 otherwise, as on the
    token route."""
    signer = session_signer(request)
    credential = bearer(request, "key" if signer is None else "key or chatToken")
    if key_matches(credential, keys):
        return None
    if signer is None:
        raise unauthorized("Invalid API key", invalid=True)
    return chat_token_session(signer, credential)


def bind_chat_session(data: dict[str, Any], session_id: str | None) -> dict[str, Any]:
    """Pin a chat body to its token's session: an absent sessionId becomes the
    token's, a different one is refused (401)."""
    if session_id is None:
        return data
    if "sessionId" not in data or data["sessionId"] is None:
        return {**data, "sessionId": session_id}
    if data["sessionId"] != session_id:
        raise unauthorized("Field 'sessionId' does not match the session of the chat token", invalid=True)
    return data
