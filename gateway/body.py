"""Reading a JSON request body safely: content type, size limit, parse errors."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from gateway.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """Return the body as a JSON object, or raise the matching GatewayError.

    The size limit is enforced while reading: a declared Content-Length over
    the limit is refused before a byte is read, and a chunked body is cut off
    as soon as it passes the limit, so a huge body is never buffered whole.
    """
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    structured_json = media_type.startswith("application/") and media_type.endswith("+json")
    is_json = media_type == "application/json" or structured_json
    if not is_json:
        shown = media_type or "none"
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {shown}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"Request body exceeds the limit of {max_bytes} bytes")
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"Request body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidRequest("Client disconnected before sending the whole body") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("Request body is empty; expected a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except _NonStandardJSON as exc:
        raise InvalidRequest(f"Malformed JSON: {exc.args[0]} is not a JSON value") from None
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InvalidRequest("Malformed JSON: nesting is too deep") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"Request body must be a JSON object, got {json_type(data)}")
    return data


class _NonStandardJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and neither do we.
    raise _NonStandardJSON(name)


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
