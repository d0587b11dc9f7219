"""The gateway's one exception tree and the contract's error envelope.

    GatewayError                    any failure a client is told about
    ├── InvalidRequest              400 INVALID_REQUEST   (the contract's)
    ├── Unauthorized                401 UNAUTHORIZED      (the contract's)
    │   └── InvalidToken                a gateway-signed token failed verification
    ├── Forbidden                   403 FORBIDDEN         (a console route called from another site)
    ├── NotFound                    404 NOT_FOUND
    ├── MethodNotAllowed            405 METHOD_NOT_ALLOWED
    ├── RequestTimeout              408 REQUEST_TIMEOUT
    ├── PayloadTooLarge             413 PAYLOAD_TOO_LARGE
    ├── UnsupportedMediaType        415 UNSUPPORTED_MEDIA_TYPE
    ├── IdempotencyKeyReused        422 IDEMPOTENCY_KEY_REUSED
    ├── RateLimited                 429 RATE_LIMITED      (the contract's)
    ├── InternalError               500 INTERNAL_ERROR    (the contract's)
    ├── ProviderError               502 PROVIDER_ERROR    (the contract's): a backend or vendor failed
    │   ├── UpstreamFailed              unreachable, timed out, cut off, HTTP 5xx: counts against its breaker
    │   └── CircuitOpen                 not called: its circuit breaker is open
    └── ServiceUnavailable          503 SERVICE_UNAVAILABLE
        ├── StorageUnavailable          the conversation database
        │   └── DatabaseNotFound            (analytics commands) no database where the URL points
        ├── SessionStoreUnavailable     the avatar session store
        └── LimiterUnavailable          the rate limiter's storage
    ConfigError                     a bad config file; never reaches a client

The contract names five codes. For the cases it does not name we keep the
HTTP status precise and give each its own code, so the five contract codes
always mean exactly what the contract's table says (INVALID_REQUEST is always
400). Every response, whatever went wrong, has the one envelope
``{"error": {"code": ..., "message": ...}}``; this module builds it, and
``app.py`` installs the one boundary (``exception_handlers``) that uses it.

``message`` is what the client reads; ``detail`` is an optional internal
reason (a driver's exception name, say) that goes to the log only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response


class ConfigError(Exception):
    """The configuration is invalid; the message names the key path and value."""


class GatewayError(Exception):
    status_code = 500
    code = "INTERNAL_ERROR"
    default_message = "Internal error"

    def __init__(
        self, message: str | None = None, headers: Mapping[str, str] | None = None, *, detail: str | None = None
    ) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.headers = dict(headers or {})
        self.detail = detail


class InvalidRequest(GatewayError):
    status_code, code = 400, "INVALID_REQUEST"


class Unauthorized(GatewayError):
    status_code, code = 401, "UNAUTHORIZED"


class InvalidToken(Unauthorized):
    """``detail`` says why (expired, bad signature, ...), never the token."""


class Forbidden(GatewayError):
    status_code, code = 403, "FORBIDDEN"


class NotFound(GatewayError):
    status_code, code = 404, "NOT_FOUND"


class MethodNotAllowed(GatewayError):
    status_code, code = 405, "METHOD_NOT_ALLOWED"


class RequestTimeout(GatewayError):
    status_code, code = 408, "REQUEST_TIMEOUT"


class PayloadTooLarge(GatewayError):
    status_code, code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(GatewayError):
    status_code, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class IdempotencyKeyReused(GatewayError):
    status_code, code = 422, "IDEMPOTENCY_KEY_REUSED"
    default_message = "Idempotency-Key was already used with a different body"


class RateLimited(GatewayError):
    status_code, code = 429, "RATE_LIMITED"


class InternalError(GatewayError):
    status_code, code = 500, "INTERNAL_ERROR"


class ProviderError(GatewayError):
    status_code, code = 502, "PROVIDER_ERROR"


class UpstreamFailed(ProviderError):
    """The upstream could not be reached, timed out, broke the connection or answered 5xx:
    a failure that counts against its circuit breaker (an answer of the wrong shape does not)."""


class CircuitOpen(ProviderError):
    """The upstream's circuit breaker is open: failed fast, without calling it."""


class ServiceUnavailable(GatewayError):
    status_code, code = 503, "SERVICE_UNAVAILABLE"


class StorageUnavailable(ServiceUnavailable):
    default_message = "Conversation storage is unavailable; try again shortly"


class DatabaseNotFound(StorageUnavailable):
    """A store opened with ``create=False`` found no gateway database at ``path``."""

    def __init__(self, path: object, detail: str | None = None) -> None:
        super().__init__(detail=detail or f"no database at {path}")
        self.path = path


class SessionStoreUnavailable(ServiceUnavailable):
    default_message = "Avatar session store is unavailable; try again shortly"


class LimiterUnavailable(ServiceUnavailable):
    default_message = "Rate limiter is unavailable; try again shortly"


def envelope(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode()


def error_response(exc: GatewayError, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        envelope(exc.code, exc.message),
        status_code=exc.status_code,
        headers={**exc.headers, **(headers or {})},
        media_type="application/json",
    )
