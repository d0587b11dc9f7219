"""Server credentials: ``Authorization: Bearer <key>`` checked in constant time.

Several keys may be configured at once so they can be rotated (add the new
one, move callers over, remove the old one). Every configured key is compared,
each through ``hmac.compare_digest`` on SHA-256 digests (equal lengths, so the
comparison time says nothing about a key's length or prefix), and the loop
never exits early, so timing does not reveal which key matched or how many
exist. Failures answer 401 with a ``WWW-Authenticate`` challenge (RFC 6750).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.requests import Request

from gateway.errors import Unauthorized

REALM = "smarteravatar-gateway"


def unauthorized(message: str, *, invalid: bool = False) -> Unauthorized:
    challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")
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
