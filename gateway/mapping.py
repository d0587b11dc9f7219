"""Translation between the public chat contract and a backend's JSON shape.

The mapping is data (``routes[].mapping`` in the YAML), so a backend whose
fields are called ``question``/``answer``/``citations``, or nested a level
deep, needs configuration, not code. Field paths are dotted (``data.answer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.body import json_type
from gateway.config import ChatMapping
from gateway.errors import ProviderError

_MISSING = object()


@dataclass(frozen=True)
class ChatTurn:
    """A validated client request in canonical form."""

    message: str
    session_id: str
    history: list[dict[str, str]]
    context: dict[str, Any]
    request_id: str


def build_backend_body(mapping: ChatMapping, turn: ChatTurn) -> dict[str, Any]:
    sources = {
        "$message": turn.message,
        "$sessionId": turn.session_id,
        "$history": turn.history,
        "$context": turn.context,
        "$requestId": turn.request_id,
    }
    body: dict[str, Any] = {}
    for target, source in mapping.request:
        _set_path(body, target, sources[source])
    return body


def parse_backend_answer(mapping: ChatMapping, answer: Any) -> tuple[str, list[dict[str, str]]]:
    """Pull ``(response, sources)`` out of a backend answer, or raise ProviderError.

    The messages name the configured field path but never the backend URL.
    """
    m = mapping.response
    if not isinstance(answer, dict):
        raise ProviderError(f"Chat backend answered with a JSON {json_type(answer)}, expected an object")
    text = _get_path(answer, m.response)
    if not isinstance(text, str):
        found = "nothing" if text is _MISSING else f"a {json_type(text)}"
        raise ProviderError(f"Chat backend answer has {found} at '{m.response}', expected a string")
    raw_sources = _get_path(answer, m.sources)
    if raw_sources is _MISSING or raw_sources is None:
        return text, []
    if not isinstance(raw_sources, list):
        raise ProviderError(f"Chat backend answer has a {json_type(raw_sources)} at '{m.sources}', expected an array")
    sources = []
    for index, item in enumerate(raw_sources):
        title = _get_path(item, m.source_title) if isinstance(item, dict) else _MISSING
        url = _get_path(item, m.source_url) if isinstance(item, dict) else _MISSING
        if not isinstance(title, str) or not isinstance(url, str):
            raise ProviderError(
                f"Chat backend answer '{m.sources}[{index}]' must have string fields "
                f"'{m.source_title}' and '{m.source_url}'"
            )
        sources.append({"title": title, "url": url})
    return text, sources


def _get_path(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value
