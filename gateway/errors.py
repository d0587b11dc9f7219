"""The gateway's exception tree and the contract's error envelope.

    GatewayError                    any failure a client is told about
    ├── InvalidRequest              400 INVALID_REQUEST   (the contract's)
    ├── Unauthorized                401 UNAUTHORIZED      (the contract's)
    ├── NotFound                    404 NOT_FOUND
    ├── MethodNotAllowed            405 METHOD_NOT_ALLOWED
    ├── RequestTimeout              408 REQUEST_TIMEOUT
    ├── PayloadTooLarge             413 PAYLOAD_TOO_LARGE
    ├── UnsupportedMediaType        415 UNSUPPORTED_MEDIA_TYPE
    ├── RateLimited                 429 RATE_LIMITED      (the contract's)
    ├── InternalError               500 INTERNAL_ERROR    (the contract's)
    ├── ProviderError               502 PROVIDER_ERROR    (the contract's)
    └── ServiceUnavailable          503 SERVICE_UNAVAILABLE
    ConfigError                     a bad config file; never reaches a client

The contract names five codes. For the cases it does not name we keep the
HTTP status precise and give each its own code, so the five contract codes
always mean exactly what the contract's table says (INVALID_REQUEST is always
400). Every response, whatever went wrong, has the one envelope
``{"error": {"code": ..., "message": ...}}``; this module builds it.
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

    def __init__(self, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class InvalidRequest(GatewayError):
    status_code, code = 400, "INVALID_REQUEST"


class Unauthorized(GatewayError):
    status_code, code = 401, "UNAUTHORIZED"


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


class RateLimited(GatewayError):
    status_code, code = 429, "RATE_LIMITED"


class InternalError(GatewayError):
    status_code, code = 500, "INTERNAL_ERROR"


class ProviderError(GatewayError):
    status_code, code = 502, "PROVIDER_ERROR"


class ServiceUnavailable(GatewayError):
    status_code, code = 503, "SERVICE_UNAVAILABLE"


def envelope(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode()


def error_response(exc: GatewayError) -> Response:
    return Response(
        envelope(exc.code, exc.message),
        status_code=exc.status_code,
        headers=exc.headers,
        media_type="application/json",
    )
