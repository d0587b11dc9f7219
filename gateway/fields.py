"""Field formats the routes share: identifiers, message lists, timestamps.

Each rule lives here once so every route words the same mistake the same way
("Field 'sessionId' must be 1 to 128 characters of ...").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.body import json_type
from gateway.errors import InvalidRequest

MAX_ID_CHARS = 128
# Session ids, avatar and voice ids, request ids, idempotency keys: they end up in
# logs, storage keys and upstream bodies, so they are kept tame. fullmatch, never
# match with ^...$: "$" also matches before a trailing newline.
IDENTIFIER = re.compile(r"[A-Za-z0-9._:\-]+")
IDENTIFIER_CHARS = "letters, digits, '.', '_', ':' or '-'"


def is_identifier(value: str, max_chars: int = MAX_ID_CHARS) -> bool:
    return 0 < len(value) <= max_chars and IDENTIFIER.fullmatch(value) is not None


def identifier_rule(name: str, max_chars: int = MAX_ID_CHARS) -> str:
    return f"'{name}' must be 1 to {max_chars} characters of {IDENTIFIER_CHARS}"


def identifier(data: dict[str, Any], name: str, max_chars: int = MAX_ID_CHARS) -> str:
    """The required identifier field ``name`` of a request body, or 400 naming the rule."""
    if name not in data:
        raise InvalidRequest(f"Missing required field: {name}")
    return check_identifier(data[name], name, max_chars)


def check_identifier(value: Any, name: str, max_chars: int = MAX_ID_CHARS) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"Field '{name}' must be a string, got {json_type(value)}")
    if not is_identifier(value, max_chars):
        raise InvalidRequest(f"Field {identifier_rule(name, max_chars)}")
    return value


def message_list(
    value: Any, name: str, roles: Sequence[str], max_items: int, max_chars: int, shape: str = ""
) -> list[dict[str, str]]:
    """A list of ``{"role", "content"}`` messages (chat ``history``, a log's ``messages``),
    copied to exactly those two fields. ``shape`` is added to the "must be an object" message."""
    if not isinstance(value, list):
        raise InvalidRequest(f"Field '{name}' must be an array, got {json_type(value)}")
    if len(value) > max_items:
        raise InvalidRequest(f"Field '{name}' has {len(value)} entries; the limit is {max_items}")
    clean = []
    for index, entry in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(entry, dict):
            raise InvalidRequest(f"Field '{where}' must be an object{shape}, got {json_type(entry)}")
        role, content = entry.get("role"), entry.get("content")
        if not isinstance(role, str) or role not in roles:
            raise InvalidRequest(f"Field '{where}.role' must be {_one_of(roles)}")
        if not isinstance(content, str):
            raise InvalidRequest(f"Field '{where}.content' must be a string, got {json_type(content)}")
        if len(content) > max_chars:
            raise InvalidRequest(f"Field '{where}.content' is longer than {max_chars} characters")
        clean.append({"role": role, "content": content})
    return clean


def _one_of(choices: Sequence[str]) -> str:
    if len(choices) == 2:
        return f"'{choices[0]}' or '{choices[1]}'"
    return f"one of: {', '.join(choices)}"


def iso(timestamp: float, *, milliseconds: bool = False) -> str:
    """ISO-8601 UTC with a ``Z``, as the contract writes it: ``2024-01-01T12:00:00Z``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds" if milliseconds else "seconds").replace("+00:00", "Z")


def parse_iso(value: str) -> float:
    """An ISO-8601 date or time (UTC unless it says otherwise) as a timestamp; ValueError if not."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
