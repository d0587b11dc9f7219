"""Translation between the public chat contract and a backend's JSON shape: the mapping language.

The mapping is data (``routes[].mapping`` in the YAML), compiled once when the
config loads, so a backend that wants ``{"model", "messages": [...]}`` and answers
``{"choices": [{"message": {"content": ...}}]}`` needs configuration, not code.

- **Request**: the backend body as a template. Keys are field paths (``query.text``
  builds nested objects, as the first, dotted-path-only mappings did); values are
  constants, canonical references (``$message``, ``$sessionId``, ``$history``,
  ``$context``, ``$context.<path>``, ``$requestId``), lists and objects of those,
  or ``{$conversation: {...}}``: the whole conversation as the backend's list of
  messages (optional system prompt first, the history in order, the new user
  message last unless `include_message: false`), with its own role names and
  message shape.
- **Response**: JMESPath expressions (https://jmespath.org/specification.html)
  pull the answer text and the sources out of whatever the backend returns. A
  plain path (``data.answer``, ``choices[0].message.content``) is walked directly,
  without the JMESPath interpreter: it is what most routes use and it runs on
  every chat.

Compile errors are ``ConfigError`` naming the key path; a backend answer the
expressions do not fit is ``ProviderError`` (502) naming the expression, never
the backend URL or a header.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jmespath
from jmespath.exceptions import JMESPathError, JMESPathTypeError

from gateway.body import json_type
from gateway.errors import ConfigError, ProviderError

if TYPE_CHECKING:  # config.py imports this module to compile mappings at load time
    from gateway.settings import ChatMapping, ResponseMapping

# Canonical values a request template can place into the backend's body.
REQUEST_SOURCES = ("$message", "$sessionId", "$history", "$context", "$requestId", "$stream")
# Inside ``$conversation.item``: the role (already renamed) and the text of one message.
ITEM_SOURCES = ("$role", "$content")
CONVERSATION = "$conversation"
CONVERSATION_KEYS = ("system", "item", "roles", "include_message")
CONTRACT_ROLES = ("user", "assistant", "system")
# Placeholders an upstream URL may carry (Dialogflow CX puts the session in the path).
URL_PLACEHOLDERS = ("{sessionId}", "{requestId}")

_SEGMENT = r"[A-Za-z_][A-Za-z0-9_\-]*"
FIELD_PATH = re.compile(rf"^{_SEGMENT}(\.{_SEGMENT})*$")
_CONTEXT_REF = re.compile(rf"^\$context\.({_SEGMENT}(\.{_SEGMENT})*)$")
_URL_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_FUNCTIONS = frozenset(jmespath.functions.Functions.FUNCTION_TABLE)
_JSON_TYPES = {"int": "number", "float": "number", "str": "string", "list": "array", "dict": "object",
               "NoneType": "null", "bool": "boolean", "null": "null"}
_MISSING: Any = object()  # a $context path that is absent: its key is left out of the body

_Item = tuple[str, str] | None  # (role, content) while building one conversation message
_Build = Callable[["ChatTurn", _Item], Any]


@dataclass(frozen=True)
class ChatTurn:
    """A validated client request in canonical form."""

    message: str
    session_id: str
    history: list[dict[str, str]]
    context: dict[str, Any]
    request_id: str
    stream: bool = False  # the backend is asked to stream (the client wants events, the route can stream)


# -- request: templates -------------------------------------------------------


class Template:
    """A compiled request template; ``build(turn)`` is the backend body."""

    __slots__ = ("_build",)

    def __init__(self, build: _Build) -> None:
        self._build = build

    def build(self, turn: ChatTurn) -> Any:
        return self._build(turn, None)


def compile_template(value: Any, path: str) -> Template:
    """Compile ``mapping.request`` (at key path ``path``); ``ConfigError`` names the key of any error."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{path}: {value!r} is not a non-empty mapping of backend field path to value")
    compiler = _TemplateCompiler()
    build = compiler.object(value, path, in_item=False)
    if not compiler.uses_message:
        raise ConfigError(f"{path}: maps nothing from '$message'; the backend would never see the question")
    return Template(build)


class _TemplateCompiler:
    def __init__(self) -> None:
        self.uses_message = False

    def value(self, value: Any, path: str, in_item: bool) -> _Build:
        if isinstance(value, str) and value.startswith("$"):
            return self.reference(value, path, in_item)
        if isinstance(value, dict):
            if CONVERSATION in value:
                if len(value) != 1:
                    raise ConfigError(f"{path}: {CONVERSATION!r} must be the only key of its mapping")
                return self.conversation(value[CONVERSATION], _join(path, CONVERSATION), in_item)
            return self.object(value, path, in_item)
        if isinstance(value, list):
            return self.array(value, path, in_item)
        if value is None or isinstance(value, (str, int, float, bool)):
            return lambda turn, item: value
        raise ConfigError(f"{path}: {value!r} is not a JSON value")

    def reference(self, text: str, path: str, in_item: bool) -> _Build:
        if text == "$message":
            self.uses_message = True
            return lambda turn, item: turn.message
        if text == "$sessionId":
            return lambda turn, item: turn.session_id
        if text == "$history":
            return lambda turn, item: turn.history
        if text == "$context":
            return lambda turn, item: turn.context
        if text == "$requestId":
            return lambda turn, item: turn.request_id
        if text == "$stream":
            return lambda turn, item: turn.stream
        if in_item and text == "$role":
            return lambda turn, item: item[0]  # type: ignore[index]
        if in_item and text == "$content":
            return lambda turn, item: item[1]  # type: ignore[index]
        if match := _CONTEXT_REF.match(text):
            keys = tuple(match.group(1).split("."))
            return lambda turn, item: _lookup(turn.context, keys)
        allowed = REQUEST_SOURCES + (ITEM_SOURCES if in_item else ())
        if text in ITEM_SOURCES:
            raise ConfigError(f"{path}: {text!r} is only known inside {CONVERSATION}.item")
        raise ConfigError(f"{path}: {text!r} is not one of: {', '.join(allowed)}")

    def object(self, value: dict[Any, Any], path: str, in_item: bool) -> _Build:
        targets = []
        for key in value:
            key_path = _join(path, str(key))
            if not isinstance(key, str) or not FIELD_PATH.fullmatch(key):
                raise ConfigError(f"{key_path}: {key!r} is not a field path like 'answer' or 'data.answer'")
            targets.append(key)
        for target in targets:
            clash = next((other for other in targets if other.startswith(target + ".")), None)
            if clash is not None:
                raise ConfigError(
                    f"{_join(path, target)}: conflicts with {clash!r}; a field cannot be both a value and an object"
                )
        # Dotted keys build nested objects: {a.b: 1, a.c: 2} is {a: {b: 1, c: 2}}.
        tree: dict[str, Any] = {}
        for target in targets:
            *parents, leaf = target.split(".")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = self.value(value[target], _join(path, target), in_item)
        return _object_builder(tree)

    def array(self, value: list[Any], path: str, in_item: bool) -> _Build:
        parts = tuple(self.value(v, f"{path}[{i}]", in_item) for i, v in enumerate(value))

        def build(turn: ChatTurn, item: _Item) -> list[Any]:
            return [v for v in (part(turn, item) for part in parts) if v is not _MISSING]

        return build

    def conversation(self, spec: Any, path: str, in_item: bool) -> _Build:
        if in_item:
            raise ConfigError(f"{path}: a conversation cannot be nested inside a conversation item")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: {spec!r} is not a mapping with keys: {', '.join(CONVERSATION_KEYS)}")
        for key in spec:
            if key not in CONVERSATION_KEYS:
                raise ConfigError(
                    f"{_join(path, str(key))}: unknown key (expected one of: {', '.join(CONVERSATION_KEYS)})"
                )
        roles = {role: role for role in CONTRACT_ROLES}
        if spec.get("roles") is not None:
            roles_path = _join(path, "roles")
            if not isinstance(spec["roles"], dict):
                raise ConfigError(f"{roles_path}: {spec['roles']!r} is not a mapping of contract role to backend role")
            for role, name in spec["roles"].items():
                if role not in CONTRACT_ROLES:
                    raise ConfigError(
                        f"{_join(roles_path, str(role))}: unknown role (expected one of: {', '.join(CONTRACT_ROLES)})"
                    )
                if not isinstance(name, str) or not name:
                    raise ConfigError(f"{_join(roles_path, role)}: {name!r} is not a non-empty string")
                roles[role] = name
        item_spec = spec.get("item")
        if item_spec is None:
            item_spec = {"role": "$role", "content": "$content"}
        elif not isinstance(item_spec, dict) or not item_spec:
            raise ConfigError(f"{_join(path, 'item')}: {item_spec!r} is not a mapping (one message's shape)")
        make_item = self.object(item_spec, _join(path, "item"), in_item=True)
        system = None if spec.get("system") is None else self.value(spec["system"], _join(path, "system"), False)
        include_message = spec.get("include_message", True)
        if not isinstance(include_message, bool):
            raise ConfigError(f"{_join(path, 'include_message')}: {include_message!r} is not true or false")
        # Some backends take the history and the new message apart (LangChain's chat_history + input).
        self.uses_message = self.uses_message or include_message
        user, system_role = roles["user"], roles["system"]

        def build(turn: ChatTurn, item: _Item) -> list[Any]:
            messages = []
            if system is not None:
                prompt = system(turn, None)
                if prompt is not _MISSING and prompt:
                    messages.append(make_item(turn, (system_role, prompt)))
            for entry in turn.history:
                messages.append(make_item(turn, (roles[entry["role"]], entry["content"])))
            if include_message:
                messages.append(make_item(turn, (user, turn.message)))
            return messages

        return build


def _object_builder(tree: dict[str, Any]) -> _Build:
    fields = tuple((key, sub if callable(sub) else _object_builder(sub)) for key, sub in tree.items())

    def build(turn: ChatTurn, item: _Item) -> dict[str, Any]:
        out = {}
        for key, part in fields:
            value = part(turn, item)
            if value is not _MISSING:
                out[key] = value
        return out

    return build


def _lookup(data: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def check_url_template(url: str, path: str) -> None:
    """An upstream URL may carry ``{sessionId}`` / ``{requestId}``; anything else in braces is an error."""
    for placeholder in _URL_PLACEHOLDER.findall(url):
        if placeholder not in URL_PLACEHOLDERS:
            expected = ", ".join(URL_PLACEHOLDERS)
            raise ConfigError(f"{path}: {placeholder} is not a URL placeholder (expected: {expected})")


def backend_url(url: str, turn: ChatTurn) -> str:
    """The upstream URL with its placeholders filled in, each value one percent-encoded path segment."""
    if "{" not in url:
        return url
    return url.replace("{sessionId}", quote(turn.session_id, safe="")).replace(
        "{requestId}", quote(turn.request_id, safe="")
    )


# -- response: expressions ------------------------------------------------------


class Expression:
    """A compiled JMESPath expression. Plain paths (fields and list indexes) are
    walked directly: same result as the interpreter, a fraction of its cost."""

    __slots__ = ("_parsed", "_steps", "object_root", "text")

    def __init__(self, text: str, source: str | None = None) -> None:
        self.text = text  # as configured, for messages
        parsed = jmespath.compile(source or text)
        steps = self._steps = _plain_steps(parsed.parsed)
        self._parsed = parsed
        # A path that starts with a field can only match inside an object.
        self.object_root = steps is not None and bool(steps) and isinstance(steps[0], str)

    def search(self, data: Any) -> Any:
        steps = self._steps
        if steps is None:
            return self._parsed.search(data)
        for step in steps:
            if isinstance(step, str):
                if type(data) is not dict:
                    return None
                data = data.get(step)
            else:
                if type(data) is not list:
                    return None
                try:
                    data = data[step]
                except IndexError:
                    return None
        return data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def compile_expression(text: Any, path: str) -> Expression:
    """Compile one response expression; ``ConfigError`` names the key path and the problem."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{path}: {text!r} is not a non-empty string (a JMESPath expression)")
    source = text
    if FIELD_PATH.fullmatch(text) and "-" in text:
        # Dotted paths of the first mapping format allowed '-' in names; JMESPath wants those quoted.
        source = ".".join(f'"{part}"' if "-" in part else part for part in text.split("."))
    try:
        expression = Expression(text, source)
    except JMESPathError as exc:
        reason = getattr(exc, "msg", None) or getattr(exc, "message", None) or "invalid syntax"
        where = getattr(exc, "lex_position", None)
        if where is None:
            where = getattr(exc, "lexer_position", None)
        at = f" at column {where + 1}" if isinstance(where, int) else ""
        raise ConfigError(f"{path}: {text!r} is not a JMESPath expression ({reason}{at})") from None
    unknown = _unknown_functions(expression._parsed.parsed)
    if unknown:
        raise ConfigError(f"{path}: {text!r} calls {unknown}(), which is not a JMESPath function")
    return expression


def _unknown_functions(node: dict[str, Any]) -> str | None:
    if node.get("type") == "function_expression" and node["value"] not in _FUNCTIONS:
        return str(node["value"])
    for child in node.get("children", ()):
        if isinstance(child, dict) and (name := _unknown_functions(child)):
            return name
    return None


def _plain_steps(node: dict[str, Any]) -> tuple[str | int, ...] | None:
    """``a.b[0].c`` as ("a", "b", 0, "c"); None when the expression is anything richer."""
    kind = node["type"]
    if kind == "field":
        return (node["value"],)
    if kind == "subexpression":
        steps: tuple[str | int, ...] = ()
        for child in node["children"]:
            part = _plain_steps(child)
            if part is None:
                return None
            steps += part
        return steps
    if kind == "index_expression":
        left, index = node["children"]
        if index["type"] != "index":
            return None
        base = () if left["type"] == "identity" else _plain_steps(left)
        return None if base is None else (*base, index["value"])
    return None


# -- the two directions, per chat ----------------------------------------------


def build_backend_body(mapping: ChatMapping, turn: ChatTurn) -> Any:
    """The backend's request body for one chat turn."""
    template = mapping.template
    assert template is not None  # ChatMapping compiles one in __post_init__
    return template.build(turn)


def parse_backend_answer(mapping: ChatMapping, answer: Any) -> tuple[str, list[dict[str, str]]]:
    """Pull ``(response, sources)`` out of a backend answer, or raise ProviderError.

    The messages name the configured expression but never the backend URL.
    """
    m = mapping.response
    text = _search(m.response, answer)
    if not isinstance(text, str):
        if text is None and m.response.object_root and not isinstance(answer, dict):
            raise ProviderError(f"Chat backend answered with a JSON {json_type(answer)}, expected an object")
        found = "nothing" if text is None else _a(json_type(text))
        hint = ""
        if isinstance(text, list) and all(isinstance(part, str) for part in text):
            hint = f"; to join text parts use join(' ', {m.response.text})"
        raise ProviderError(f"Chat backend answer has {found} at '{m.response.text}', expected a string{hint}")
    if m.sources is None:
        return text, []
    return text, _sources(m, m.sources, answer) or []


@dataclass(frozen=True)
class StreamChunk:
    """What one chunk of a streamed answer carries, after the route's ``mapping.stream``."""

    delta: str  # "" when the chunk carries no text (a role-only or final chunk)
    sources: list[dict[str, str]] | None
    done: bool


def parse_stream_chunk(mapping: ChatMapping, chunk: Any) -> StreamChunk:
    """Apply ``mapping.stream`` to one decoded chunk, or raise ProviderError naming the expression."""
    s = mapping.stream
    assert s is not None  # only streaming routes read chunks
    delta = _search(s.delta, chunk)
    if delta is None:
        delta = ""
    elif not isinstance(delta, str):
        found = _a(json_type(delta))
        raise ProviderError(f"Chat backend stream chunk has {found} at '{s.delta.text}', expected a string")
    sources = None if s.sources is None else _sources(mapping.response, s.sources, chunk)
    done = s.done is not None and _search(s.done, chunk) is True
    return StreamChunk(delta, sources, done)


def _sources(m: ResponseMapping, expression: Expression, answer: Any) -> list[dict[str, str]] | None:
    raw_sources = _search(expression, answer)
    if raw_sources is None:
        return None
    if not isinstance(raw_sources, list):
        raise ProviderError(
            f"Chat backend answer has {_a(json_type(raw_sources))} at '{expression.text}', expected an array"
        )
    sources = []
    for index, item in enumerate(raw_sources):
        title = _search(m.source_title, item) if isinstance(item, dict) else None
        url = _search(m.source_url, item) if isinstance(item, dict) else None
        if not isinstance(title, str) or not isinstance(url, str):
            raise ProviderError(
                f"Chat backend answer '{expression.text}[{index}]' must have string fields "
                f"'{m.source_title.text}' and '{m.source_url.text}'"
            )
        sources.append({"title": title, "url": url})
    return sources


def _search(expression: Expression, data: Any) -> Any:
    try:
        return expression.search(data)
    except JMESPathTypeError as exc:
        expected = ", ".join(exc.expected_types) if isinstance(exc.expected_types, (list, tuple)) else "?"
        raise ProviderError(
            f"Chat backend answer does not fit '{expression.text}': {exc.function_name}() got "
            f"{_a(_JSON_TYPES.get(str(exc.actual_type), str(exc.actual_type)))}, expected {expected}"
        ) from None
    except (JMESPathError, TypeError, ValueError):
        raise ProviderError(f"Chat backend answer does not fit '{expression.text}'") from None


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

