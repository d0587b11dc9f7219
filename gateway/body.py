"""Reading a JSON request body safely: content type, size limit, read deadline, parse errors.

Valid JSON is not always representable. RFC 8259 (sections 6 and 8.2) leaves
numbers beyond a double and lone surrogate escapes (``"\\udc00"``) to the
implementation; Python parses them into ``inf`` and into a ``str`` that cannot
be encoded, and an integer of more than 4,300 digits stops ``int()`` altogether
(CVE-2020-10735). Each would surface later, far from the client's mistake: a
500, ``Infinity`` (not JSON) sent to the backend or stored, a row that breaks
every read. So the one reader of request bodies refuses them with a 400 naming
the field. The common path stays cheap: the parser's number hooks only raise a
flag, and the parsed value is walked (to find the field) only when a flag is
up or the raw bytes hold something that can decode to a surrogate.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from typing import Any

from starlette.requests import ClientDisconnect, Request

from gateway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

# A \uD800-\uDFFF escape, or a surrogate encoded as UTF-8 bytes (which json.loads decodes
# with 'surrogatepass'). Surrogate pairs match too; the walk tells them apart. Two patterns,
# not one alternation: each is then a fast literal scan.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_SURROGATE_UTF8 = re.compile(rb"\xed[\xa0-\xbf]")
# Shorter integers are far inside a double and int()'s digit limit: converted directly.
_SAFE_INT_CHARS = 300
_NAME_CHARS = 64  # client-chosen key names in messages are cut to this


async def read_json_object(request: Request, max_bytes: int, timeout: float | None = None) -> dict[str, Any]:
    """Return the body as a JSON object, or raise the matching GatewayError.

    The size limit is enforced while reading: a declared Content-Length over
    the limit is refused before a byte is read, and a chunked body is cut off
    as soon as it passes the limit, so a huge body is never buffered whole.
    The whole body must arrive within ``timeout`` seconds (default: the
    ``server.body_timeout`` setting), so a client trickling it byte by byte
    holds a connection and a task for that long at most.
    """
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    structured_json = media_type.startswith("application/") and media_type.endswith("+json")
    is_json = media_type == "application/json" or structured_json
    if not is_json:
        shown = media_type or "none"
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {shown}")
    raw = await read_body(request, max_bytes, timeout)
    if not raw.strip():
        raise InvalidRequest("Request body is empty; expected a JSON object")
    data, suspect = _loads(raw)
    if not isinstance(data, dict):
        raise InvalidRequest(f"Request body must be a JSON object, got {json_type(data)}")
    if suspect:
        problem = unrepresentable(data)
        if problem is not None:
            raise InvalidRequest(problem)
    return data


async def read_body(
    request: Request, max_bytes: int, timeout: float | None = None, what: str = "Request body"
) -> bytes:
    """The raw body, at most ``max_bytes`` (a declared Content-Length over it is refused before
    reading; a chunked body is cut off once past it), all of it within ``timeout`` seconds
    (default ``server.body_timeout``). ``what`` names the body in the 413 message."""
    too_large = f"{what} exceeds the limit of {max_bytes} bytes"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(too_large)
    if timeout is None:
        timeout = float(request.state.settings.server.body_timeout)
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(too_large)
                chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidRequest("Client disconnected before sending the whole body") from None
    except TimeoutError:
        # Connection: close, or the server would keep reading the rest of the trickle.
        raise RequestTimeout(
            f"Request body was not received within {timeout:g}s", headers={"connection": "close"}
        ) from None
    return b"".join(chunks)


class _Flags(threading.local):
    out_of_range = False


_flags = _Flags()


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e999: a double cannot hold it
        _flags.out_of_range = True
    return value


def _parse_int(text: str) -> int | float:
    if len(text) < _SAFE_INT_CHARS:
        return int(text)
    value = float(text)  # float() has no digit limit: inf for anything past a double
    if math.isinf(value):
        _flags.out_of_range = True
        return value
    return int(text)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and neither do we.
    raise _NonStandardJSON(name)


# Built once (``json.loads`` with hooks builds a decoder and its scanner per call); the hooks
# raise a per-thread flag, reset before each parse.
_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant)


def _loads(raw: bytes) -> tuple[Any, bool]:
    """Parse; also say whether the value may hold something unrepresentable (then walk it)."""
    _flags.out_of_range = False
    try:
        # What json.loads does with bytes: detect UTF-8/16/32, decode, parse.
        data = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except _NonStandardJSON as exc:
        raise InvalidRequest(f"Malformed JSON: {exc.args[0]} is not a JSON value") from None
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InvalidRequest("Malformed JSON: nesting is too deep") from None
    not_utf8 = raw[:1] in (b"\xfe", b"\xff") or b"\x00" in raw[:4]
    surrogates = _SURROGATE_ESCAPE.search(raw) is not None or _SURROGATE_UTF8.search(raw) is not None
    return data, _flags.out_of_range or not_utf8 or surrogates


def unrepresentable(value: dict[str, Any]) -> str | None:
    """The first value, in document order, that is out of a double's range or holds a lone
    surrogate, as an error message naming its field (``history[0].content``); None if none."""
    # Iterative: a body nested as deep as json.loads allows must not overflow the stack here.
    stack: list[tuple[str, str | None, Any]] = []
    stack.extend([(_field(None, key), key, item) for key, item in value.items()][::-1])
    while stack:
        path, key, item = stack.pop()
        if key is not None and (bad := _lone_surrogate(key)) is not None:
            return f"Field '{path}' has a name that contains a lone surrogate {bad}, which is not valid Unicode"
        if isinstance(item, str):
            if (bad := _lone_surrogate(item)) is not None:
                return f"Field '{path}' contains a lone surrogate {bad}, which is not valid Unicode"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"Field '{path}' is a number too large for a 64-bit float"
        elif isinstance(item, dict):
            stack.extend([(_field(path, k), k, v) for k, v in item.items()][::-1])
        elif isinstance(item, list):
            stack.extend([(f"{path}[{i}]", None, v) for i, v in enumerate(item)][::-1])
    return None


def _lone_surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(text[exc.start]):04x}"
    return None


def _field(parent: str | None, key: str) -> str:
    name = key.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(name) > _NAME_CHARS:
        name = name[:_NAME_CHARS] + "..."
    return name if parent is None else f"{parent}.{name}"


class _NonStandardJSON(ValueError):
    pass


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
