"""Configuration: the YAML routing table parsed once into the frozen objects of ``settings.py``.

Every error names the key path and the offending value, the way Starlette's
``Config`` and uvicorn's ``Config`` do::

    routes[0].upstream.timeouts.total: 'abc' is not a duration like '30s' or '500ms'

String values may use ``${VAR}`` (required) and ``${VAR:-default}`` from the
environment; ``$$`` is a literal dollar. Interpolation happens after YAML
parsing, so an environment value can never change the structure of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from limits import parse_many

from gateway.errors import ConfigError
from gateway.mapping import Expression, check_url_template, compile_expression, compile_template
from gateway.settings import (
    AVATAR_PROVIDERS,
    CHAT_PATH,
    CHAT_URL_ENV,
    CLIENT_IP_HEADERS,
    CONFIG_ENV,
    CONSOLE_ENV,
    CONSOLE_SESSION_RATE_LIMIT,
    DATABASE_URL_ENV,
    DEFAULT_CONFIG_PATH,
    HANDLERS,
    LIVEAVATAR_MODES,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_STT_TOKEN_TTL,
    MIN_KEY_CHARS,
    MIN_SIGNING_SECRET_CHARS,
    RATE_LIMIT_KEYS,
    RATE_LIMIT_STORAGE_SCHEMES,
    STORAGE_ERROR_MODES,
    STREAM_FORMATS,
    STT_PROVIDERS,
    STT_STREAMING_PROVIDERS,
    AuthSettings,
    AvatarSettings,
    BreakerSettings,
    ChatLimits,
    ChatMapping,
    ClientSettings,
    ConsoleSettings,
    HealthSettings,
    MetricsSettings,
    RateLimitRule,
    RateLimitSettings,
    ResponseMapping,
    Retries,
    Route,
    Secret,
    SecretURL,
    ServerSettings,
    Settings,
    StorageSettings,
    StreamMapping,
    SttSettings,
    Timeouts,
    Upstream,
    redact_url,
)

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


# -- loading ----------------------------------------------------------------


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate a config file; raise ConfigError on any problem."""
    env = os.environ if env is None else env
    path = Path(path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    return parse_settings(text, env=env, source=str(path))


def parse_settings(text: str, env: Mapping[str, str] | None = None, source: str = "<string>") -> Settings:
    env = os.environ if env is None else env
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: {problem}{where}") from None
    if data is None:
        data = {}
    root = _Node(_apply_environment(_interpolate(data, "", env), env), "")
    return _settings(root, source)


class _FromEnvironment(str):
    """A value set by an environment override; errors name the variable, not a key path."""

    label: str


def _apply_environment(data: Any, env: Mapping[str, str]) -> Any:
    """The environment overrides, all in this one place. Like the file's ``${VAR}``s they
    replace values, never structure, and they win over what the file says:

    - ``CHAT_API_URL``: the upstream URL of the ``/api/chat`` route (the common
      deployment sets only this);
    - ``DATABASE_URL``: ``storage.url``;
    - ``GATEWAY_CONSOLE``: ``console.enabled`` (``1``/``true``/``on`` or ``0``/``false``/``off``).
    """

    def override(name: str) -> _FromEnvironment | None:
        if not env.get(name):
            return None
        value = _FromEnvironment(env[name])
        value.label = f"{name} (environment)"
        return value

    if not isinstance(data, dict):
        return data
    if (chat_url := override(CHAT_URL_ENV)) is not None and isinstance(data.get("routes"), list):
        for route in data["routes"]:
            if isinstance(route, dict) and route.get("path") == CHAT_PATH and isinstance(route.get("upstream"), dict):
                route["upstream"]["url"] = chat_url
    if (database_url := override(DATABASE_URL_ENV)) is not None:
        storage = data.get("storage")
        data["storage"] = {**(storage if isinstance(storage, dict) else {}), "url": database_url}
    if CONSOLE_ENV in env:  # set, even to "0" or "", wins over the file
        console = data.get("console")
        value = _FromEnvironment(env[CONSOLE_ENV])
        value.label = f"{CONSOLE_ENV} (environment)"
        data["console"] = {**(console if isinstance(console, dict) else {}), "enabled": value}
    return data


def _interpolate(value: Any, path: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, _join(path, str(k)), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name!r} is not set (use ${{{name}:-default}} for a default)")

    return _INTERPOLATION.sub(substitute, value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Node:
    """A YAML value with its key path, offering typed getters that fail with the path."""

    def __init__(self, value: Any, path: str) -> None:
        self.value = value
        self.path = path

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.path or '<root>'}: {problem}")

    def mapping(self, allowed: tuple[str, ...]) -> dict[str, _Node]:
        if not isinstance(self.value, dict):
            raise self.fail(f"{self.value!r} is not a mapping")
        out = {}
        for key, value in self.value.items():
            if key not in allowed:
                raise ConfigError(f"{_join(self.path, str(key))}: unknown key (expected one of: {', '.join(allowed)})")
            path = value.label if isinstance(value, _FromEnvironment) else _join(self.path, key)
            out[key] = _Node(value, path)
        return out

    def items(self) -> list[_Node]:
        if not isinstance(self.value, list):
            raise self.fail(f"{self.value!r} is not a list")
        return [_Node(v, f"{self.path}[{i}]") for i, v in enumerate(self.value)]

    def string(self, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(self.value, str) or not self.value:
            raise self.fail(f"{self.value!r} is not a non-empty string")
        if choices and self.value not in choices:
            raise self.fail(f"{self.value!r} is not one of: {', '.join(choices)}")
        return self.value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail(f"{self.value!r} is not a boolean (true or false)")
        return self.value

    def positive_int(self) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int) or self.value <= 0:
            raise self.fail(f"{self.value!r} is not a positive integer")
        return self.value

    def duration(self) -> float:
        value = self.value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        match = _DURATION.match(value) if isinstance(value, str) else None
        if not match or float(match.group(1)) <= 0:
            raise self.fail(f"{value!r} is not a duration like '30s' or '500ms'")
        return float(match.group(1)) * _DURATION_UNITS[match.group(2)]

    def url(self) -> str:
        text = self.string()
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(f"{redact_url(text)!r} is not an http(s) URL with a host")
        return text

def _get(nodes: dict[str, _Node], key: str, parse: Any, default: Any) -> Any:
    node = nodes.get(key)
    return default if node is None or node.value is None else parse(node)


def _settings(root: _Node, source: str) -> Settings:
    top = root.mapping(
        ("server", "client", "rate_limit", "health", "storage", "routes", "avatar", "auth", "stt", "metrics",
         "console")
    )
    if "routes" not in top:
        raise root.fail("missing required key 'routes'")
    routes = tuple(_route(node) for node in top["routes"].items())
    seen: set[str] = set()
    for index, route in enumerate(routes):
        if route.path in seen:
            raise ConfigError(f"routes[{index}].path: {route.path!r} is declared twice")
        seen.add(route.path)
    settings = Settings(
        routes=routes,
        server=_get(top, "server", _server, ServerSettings()),
        client=_get(top, "client", _client, ClientSettings()),
        rate_limit=_get(top, "rate_limit", _rate_limit_settings, RateLimitSettings()),
        health=_get(top, "health", _health, HealthSettings()),
        source=source,
        storage=_get(top, "storage", _storage, StorageSettings()),
        avatar=_get(top, "avatar", _avatar, AvatarSettings()),
        auth=_auth(top.get("auth"), top.get("storage")),
        console=_get(top, "console", _console, ConsoleSettings()),
        stt=_get(top, "stt", _stt, SttSettings()),
        metrics=_get(top, "metrics", _metrics, MetricsSettings()),
    )
    if settings.route_for("stt_token") and settings.stt.provider not in STT_STREAMING_PROVIDERS:
        index = next(i for i, r in enumerate(routes) if r.handler == "stt_token")
        raise ConfigError(
            f"routes[{index}].handler: 'stt_token' needs stt.provider {' or '.join(STT_STREAMING_PROVIDERS)} "
            f"(provider {settings.stt.provider!r} has no browser streaming tokens)"
        )
    if settings.avatar.production and settings.route_for("token") and not settings.auth.api_keys:
        raise ConfigError("auth.api_keys: required when avatar.production is true (set GATEWAY_API_KEYS)")
    return settings


def _server(node: _Node) -> ServerSettings:
    n = node.mapping(
        (
            "max_body_bytes", "body_timeout", "log_format", "log_level", "log_message_content", "trusted_proxies",
            "client_ip_header", "cors_origins", "drain_delay", "drain_timeout", "sse_ping_interval",
        )
    )
    d = ServerSettings()
    return ServerSettings(
        trusted_proxies=_get(n, "trusted_proxies", _trusted_proxies, d.trusted_proxies),
        client_ip_header=_get(n, "client_ip_header", lambda x: x.string(CLIENT_IP_HEADERS), d.client_ip_header),
        max_body_bytes=_get(n, "max_body_bytes", _Node.positive_int, d.max_body_bytes),
        body_timeout=_get(n, "body_timeout", _Node.duration, d.body_timeout),
        log_format=_get(n, "log_format", lambda x: x.string(LOG_FORMATS), d.log_format),
        log_level=_get(n, "log_level", lambda x: x.string(LOG_LEVELS), d.log_level),
        log_message_content=_get(n, "log_message_content", _Node.boolean, d.log_message_content),
        sse_ping_interval=_get(n, "sse_ping_interval", _Node.duration, d.sse_ping_interval),
        cors_origins=_get(n, "cors_origins", _origins, d.cors_origins),
        drain_delay=_get(n, "drain_delay", _non_negative_duration, d.drain_delay),
        drain_timeout=_get(n, "drain_timeout", _Node.duration, d.drain_timeout),
    )


def _non_negative_duration(node: _Node) -> float:
    return 0.0 if node.value in (0, "0", "0s", "0ms") else node.duration()


def _origins(node: _Node) -> tuple[str, ...]:
    """Exact origins (scheme://host[:port]) as browsers send them in ``Origin``; no wildcards."""
    values = node.value
    if isinstance(values, str):  # "https://a.example, https://b.example" from an environment variable
        values = [v.strip() for v in values.split(",") if v.strip()]
    if not isinstance(values, list):
        raise node.fail(f"{values!r} is not a list of origins")
    origins = []
    for index, value in enumerate(values):
        parts = urlsplit(value.rstrip("/")) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise ConfigError(f"{node.path}[{index}]: {value!r} is not an origin like 'https://www.example.com'")
        origins.append(value.rstrip("/").lower())
    return tuple(origins)


def _metrics(node: _Node) -> MetricsSettings:
    n = node.mapping(("enabled", "trusted_networks"))
    d = MetricsSettings()
    return MetricsSettings(
        enabled=_get(n, "enabled", _Node.boolean, d.enabled),
        trusted_networks=_get(n, "trusted_networks", _trusted_proxies, d.trusted_networks),
    )


def _client(node: _Node) -> ClientSettings:
    n = node.mapping(("max_connections", "keepalive_expiry", "max_response_bytes"))
    d = ClientSettings()
    return ClientSettings(
        max_connections=_get(n, "max_connections", _Node.positive_int, d.max_connections),
        keepalive_expiry=_get(n, "keepalive_expiry", _Node.duration, d.keepalive_expiry),
        max_response_bytes=_get(n, "max_response_bytes", _Node.positive_int, d.max_response_bytes),
    )


def _trusted_proxies(node: _Node) -> tuple[str, ...]:
    from gateway.proxies import parse_networks

    values = node.value
    if isinstance(values, str):  # "10.0.0.0/8, 127.0.0.1" from an environment variable
        values = [v for v in values.split(",") if v.strip()]
    if not isinstance(values, list):
        raise node.fail(f"{values!r} is not a list of IP addresses or networks")
    for index, value in enumerate(values):
        try:
            parse_networks([str(value)])
        except ValueError as exc:
            raise ConfigError(f"{node.path}[{index}]: {exc}") from None
    return tuple(str(v).strip() for v in values)


def _storage_url(node: _Node) -> str:
    text = node.string()
    scheme = urlsplit(text).scheme.removeprefix("async+")
    if scheme not in RATE_LIMIT_STORAGE_SCHEMES:
        raise node.fail(f"{redact_url(text)!r} is not a storage URL like memory:// or redis://host:6379/0")
    return SecretURL(text)


def _rate_limit_settings(node: _Node) -> RateLimitSettings:
    n = node.mapping(("storage", "on_storage_error", "storage_timeout"))
    d = RateLimitSettings()
    return RateLimitSettings(
        storage_url=_get(n, "storage", _storage_url, d.storage_url),
        on_storage_error=_get(n, "on_storage_error", lambda x: x.string(STORAGE_ERROR_MODES), d.on_storage_error),
        storage_timeout=_get(n, "storage_timeout", _Node.duration, d.storage_timeout),
    )


def _storage(node: _Node) -> StorageSettings:
    d = StorageSettings()
    n = node.mapping(
        ("url", "record_chat_turns", "turn_queue_size", "retention_days", "redact", "admin_keys", "pool_size",
         "timeout", "max_messages", "max_message_chars", "max_metadata_bytes")
    )
    redact = n["redact"].mapping(("emails", "phones")) if "redact" in n and n["redact"].value is not None else {}
    return StorageSettings(
        url=_get(n, "url", _database_url, d.url),
        record_chat_turns=_get(n, "record_chat_turns", _Node.boolean, d.record_chat_turns),
        turn_queue_size=_get(n, "turn_queue_size", _Node.positive_int, d.turn_queue_size),
        retention_days=_get(n, "retention_days", _Node.positive_int, d.retention_days),
        redact_emails=_get(redact, "emails", _Node.boolean, d.redact_emails),
        redact_phones=_get(redact, "phones", _Node.boolean, d.redact_phones),
        pool_size=_get(n, "pool_size", _Node.positive_int, d.pool_size),
        timeout=_get(n, "timeout", _Node.duration, d.timeout),
        max_messages=_get(n, "max_messages", _Node.positive_int, d.max_messages),
        max_message_chars=_get(n, "max_message_chars", _Node.positive_int, d.max_message_chars),
        max_metadata_bytes=_get(n, "max_metadata_bytes", _Node.positive_int, d.max_metadata_bytes),
    )


def _database_url(node: _Node) -> str:
    text = node.string()
    scheme = urlsplit(text).scheme
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise node.fail(f"{redact_url(text)!r} is not a database URL like sqlite:///data/gateway.db or postgresql://...")
    if scheme == "sqlite" and not text.startswith("sqlite:///"):
        raise node.fail(f"{text!r} is not a SQLite URL like sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return SecretURL(text)


def _health(node: _Node) -> HealthSettings:
    n = node.mapping(("probe_timeout", "cache", "stt_url", "avatar_url"))
    d = HealthSettings()
    return HealthSettings(
        probe_timeout=_get(n, "probe_timeout", _Node.duration, d.probe_timeout),
        cache_seconds=_get(n, "cache", _Node.duration, d.cache_seconds),
        stt_url=_get(n, "stt_url", _Node.url, None),
        avatar_url=_get(n, "avatar_url", _Node.url, None),
    )


def _route(node: _Node) -> Route:
    n = node.mapping(("path", "handler", "methods", "rate_limit", "upstream", "mapping", "limits", "fallback_response"))
    for required in ("path", "handler"):
        if required not in n:
            raise node.fail(f"missing required key {required!r}")
    path = n["path"].string()
    if not path.startswith("/"):
        raise n["path"].fail(f"{path!r} does not start with '/'")
    handler = n["handler"].string(tuple(HANDLERS))
    spec = HANDLERS[handler]
    methods = _get(n, "methods", _methods, spec.methods)
    rate_limits = _rate_limits(n.get("rate_limit"), spec.rate_limit, spec.limit_key)
    if handler != "chat":
        for key in ("upstream", "mapping", "limits", "fallback_response"):
            if key in n:
                raise n[key].fail(f"only chat routes take {key!r}")
        return Route(path=path, handler=handler, methods=methods, rate_limits=rate_limits)
    if "upstream" not in n:
        raise node.fail("missing required key 'upstream' for a chat route")
    upstream = _upstream(n["upstream"])
    return Route(
        path=path,
        handler=handler,
        methods=methods,
        rate_limits=rate_limits,
        upstream=upstream,
        mapping=_get(n, "mapping", _mapping, ChatMapping()),
        limits=_get(n, "limits", _chat_limits, ChatLimits()),
        fallback_response=_get(n, "fallback_response", _Node.string, None),
    )


def _methods(node: _Node) -> tuple[str, ...]:
    methods = []
    for item in node.items():
        method = item.string().upper()
        if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise item.fail(f"{item.value!r} is not an HTTP method")
        methods.append(method)
    if not methods:
        raise node.fail("[] is empty; list at least one method")
    return tuple(methods)


def _rate_limits(node: _Node | None, default: str, default_key: str = "ip") -> tuple[RateLimitRule, ...]:
    """``rate_limit`` is a string ('60/minute', '10/second;60/minute'), ``off``,
    a mapping ``{limit, key}``, or a list of those for several keys."""
    if node is None:
        return (_rate_limit_rule(_Node(default, "rate_limit"), default_key),)
    if node.value in ("off", False):
        return ()
    if isinstance(node.value, list):
        return tuple(_rate_limit_rule(item, default_key) for item in node.items())
    return (_rate_limit_rule(node, default_key),)


def _rate_limit_rule(node: _Node, default_key: str = "ip") -> RateLimitRule:
    key = default_key
    limit_node = node
    if isinstance(node.value, dict):
        n = node.mapping(("limit", "key"))
        if "limit" not in n:
            raise node.fail("missing required key 'limit'")
        limit_node = n["limit"]
        key = _get(n, "key", lambda x: x.string(RATE_LIMIT_KEYS), default_key)
    text = limit_node.string()
    try:
        items = tuple(parse_many(text))
    except ValueError:
        items = ()
    if not items:
        raise limit_node.fail(f"{text!r} is not a rate limit like '60/minute' or '10/second;60/minute'")
    return RateLimitRule(items=items, key=key, text=text)


def _timeouts(node: _Node, defaults: Timeouts) -> Timeouts:
    t = node.mapping(("connect", "first_byte", "idle", "total"))
    timeouts = Timeouts(
        connect=_get(t, "connect", _Node.duration, defaults.connect),
        total=_get(t, "total", _Node.duration, defaults.total),
        first_byte=_get(t, "first_byte", _Node.duration, defaults.first_byte),
        idle=_get(t, "idle", _Node.duration, defaults.idle),
    )
    for name in ("connect", "first_byte", "idle"):
        value = getattr(timeouts, name)
        if value is not None and value > timeouts.total:
            raise node.fail(f"{name} ({value:g}s) is longer than total ({timeouts.total:g}s)")
    return timeouts


def _retries(node: _Node) -> Retries:
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        node = _Node({"attempts": node.value}, node.path)
    n = node.mapping(("attempts", "backoff"))
    d = Retries()
    attempts = d.attempts
    if "attempts" in n:
        value = n["attempts"].value
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
            raise n["attempts"].fail(f"{value!r} is not a number of retries from 0 to 10")
        attempts = value
    return Retries(attempts=attempts, backoff=_get(n, "backoff", _Node.duration, d.backoff))


def _breaker(node: _Node) -> BreakerSettings | None:
    if node.value in ("off", False):
        return None
    n = node.mapping(("failures", "cooldown"))
    d = BreakerSettings()
    return BreakerSettings(
        failures=_get(n, "failures", _Node.positive_int, d.failures),
        cooldown=_get(n, "cooldown", _Node.duration, d.cooldown),
    )


def _upstream(node: _Node) -> Upstream:
    n = node.mapping(("url", "timeouts", "headers", "retries", "breaker"))
    if "url" not in n:
        raise node.fail("missing required key 'url'")
    timeouts = _timeouts(n["timeouts"], Timeouts()) if "timeouts" in n else Timeouts()
    headers: dict[str, Secret] = {}
    if "headers" in n and n["headers"].value is not None:
        if not isinstance(n["headers"].value, dict):
            raise n["headers"].fail(f"{n['headers'].value!r} is not a mapping")
        for name, value in n["headers"].value.items():
            path = _join(n["headers"].path, str(name))
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                raise ConfigError(f"{path}: {name!r} is not a valid header name")
            if not isinstance(value, (str, int)) or "\n" in str(value) or "\r" in str(value):
                # The value may be a credential: never echo it.
                raise ConfigError(f"{path}: value is not a single-line string")
            headers[name] = Secret(str(value))
    url = n["url"].url()
    check_url_template(url, n["url"].path)  # {sessionId} in the path (Dialogflow CX)
    return Upstream(
        url=url,
        timeouts=timeouts,
        headers=headers,
        retries=_get(n, "retries", _retries, Retries()),
        breaker=_get(n, "breaker", _breaker, BreakerSettings()),
    )


def _mapping(node: _Node) -> ChatMapping:
    """``mapping.request`` is the backend body as a template, ``mapping.response`` JMESPath
    expressions; the language is gateway/mapping.py's. Today's dotted-path mappings are
    templates and expressions already, so they keep working unchanged."""
    n = node.mapping(("request", "response", "stream"))
    default = ChatMapping()
    request, template = default.request, default.template
    if "request" in n:
        r = n["request"]
        template = compile_template(r.value, r.path)
        request = tuple(r.value.items())
    response = default.response
    if "response" in n:
        rn = n["response"].mapping(("response", "sources", "source_title", "source_url"))
        d = ResponseMapping()

        def expression(key: str, fallback: Expression | None) -> Expression | None:
            if key not in rn:
                return fallback
            if key == "sources" and rn[key].value is None:
                return None  # ``sources: null``: this backend never returns any
            return compile_expression(rn[key].value, rn[key].path)

        response = ResponseMapping(
            response=expression("response", d.response) or d.response,
            sources=expression("sources", d.sources),
            source_title=expression("source_title", d.source_title) or d.source_title,
            source_url=expression("source_url", d.source_url) or d.source_url,
        )
    stream = _get(n, "stream", _stream_mapping, None)
    return ChatMapping(request=request, response=response, stream=stream, template=template)


def _stream_mapping(node: _Node) -> StreamMapping:
    """``mapping.stream``: ``{format: sse|ndjson, delta: <expression>, sources?, done?}``."""
    n = node.mapping(("format", "delta", "sources", "done"))
    for required in ("format", "delta"):
        if required not in n:
            raise node.fail(f"missing required key {required!r}")
    fmt = n["format"].string(STREAM_FORMATS)
    done = compile_expression(n["done"].value, n["done"].path) if "done" in n else None
    if fmt == "ndjson" and done is None:
        done = compile_expression("done", _join(node.path, "done"))  # Ollama's last line
    return StreamMapping(
        format=fmt,
        delta=compile_expression(n["delta"].value, n["delta"].path),
        sources=compile_expression(n["sources"].value, n["sources"].path) if "sources" in n else None,
        done=done,
    )


def _chat_limits(node: _Node) -> ChatLimits:
    n = node.mapping(("max_message_chars", "max_history", "max_history_content_chars", "max_session_id_chars"))
    d = ChatLimits()
    return ChatLimits(
        max_message_chars=_get(n, "max_message_chars", _Node.positive_int, d.max_message_chars),
        max_history=_get(n, "max_history", _Node.positive_int, d.max_history),
        max_history_content_chars=_get(
            n, "max_history_content_chars", _Node.positive_int, d.max_history_content_chars
        ),
        max_session_id_chars=_get(n, "max_session_id_chars", _Node.positive_int, d.max_session_id_chars),
    )


def _auth(node: _Node | None, storage: _Node | None) -> AuthSettings:
    """``auth.api_keys`` and ``auth.admin_keys``. ``storage.admin_keys``, where admin
    keys lived before they joined the other credentials, is still read."""
    n = node.mapping(("api_keys", "admin_keys")) if node is not None and node.value is not None else {}
    admin = n.get("admin_keys")
    if storage is not None and isinstance(storage.value, dict) and "admin_keys" in storage.value:
        legacy = _Node(storage.value["admin_keys"], _join(storage.path, "admin_keys"))
        if admin is not None and admin.value not in (None, "") and legacy.value not in (None, ""):
            raise legacy.fail("admin keys are set in auth.admin_keys too; keep only auth.admin_keys")
        if admin is None or admin.value in (None, ""):
            admin = legacy
    return AuthSettings(api_keys=_keys(n.get("api_keys")), admin_keys=_keys(admin))


def _console(node: _Node) -> ConsoleSettings:
    n = node.mapping(("enabled", "session_rate_limit"))
    return ConsoleSettings(
        enabled=_get(n, "enabled", _switch, False),
        session_rate_limit=_rate_limits(n.get("session_rate_limit"), CONSOLE_SESSION_RATE_LIMIT),
    )


def _switch(node: _Node) -> bool:
    """A YAML boolean, or from the environment one of 1/true/yes/on, 0/false/no/off."""
    if isinstance(node.value, _FromEnvironment):
        if node.value.strip().lower() in _TRUE + _FALSE:
            return node.value.strip().lower() in _TRUE
        raise node.fail(f"{str(node.value)!r} is not a boolean (1/true/on or 0/false/off)")
    return node.boolean()


def _keys(node: _Node | None) -> tuple[Secret, ...]:
    """A list, or one comma-separated string (``${GATEWAY_API_KEYS}``), of keys of 16+ characters."""
    if node is None or node.value in (None, ""):
        return ()
    if isinstance(node.value, str):
        raw = [part.strip() for part in node.value.split(",")]
    elif isinstance(node.value, list):
        raw = []
        for item in node.items():
            if not isinstance(item.value, str):
                raise item.fail("is not a string")  # never echo what may be a key
            raw.append(item.value.strip())
    else:
        raise node.fail("is not a list or a comma-separated string of keys")
    keys = tuple(Secret(key) for key in raw if key)
    for index, key in enumerate(keys):
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"{node.path}[{index}]: key is shorter than {MIN_KEY_CHARS} characters")
    return keys


def _avatar(node: _Node) -> AvatarSettings:
    n = node.mapping(
        (
            "provider", "api_key", "base_url", "mode", "timeouts", "session_ttl", "max_concurrent_sessions",
            "avatars", "voices", "require_session_token", "signing_secret", "production", "session_store",
            "session_store_timeout", "reap_interval",
        )
    )
    d = AvatarSettings()
    provider = _get(n, "provider", lambda x: x.string(AVATAR_PROVIDERS), d.provider)
    api_key = _get(n, "api_key", _secret, None) or None
    if provider != "local" and api_key is None:
        raise ConfigError(f"avatar.api_key: required for provider {provider!r} (e.g. api_key: ${{LIVEAVATAR_API_KEY}})")
    timeouts = _timeouts(n["timeouts"], d.timeouts) if "timeouts" in n else d.timeouts
    cap = d.max_concurrent_sessions
    if "max_concurrent_sessions" in n:
        cap_node = n["max_concurrent_sessions"]
        off = cap_node.value is None or cap_node.value is False or cap_node.value == "off"
        cap = None if off else cap_node.positive_int()
    secret = _get(n, "signing_secret", _secret, None) or None
    if secret is not None and len(secret) < MIN_SIGNING_SECRET_CHARS:
        raise ConfigError(f"avatar.signing_secret: shorter than {MIN_SIGNING_SECRET_CHARS} characters")
    production = _get(n, "production", _Node.boolean, d.production)
    if production and secret is None:
        raise ConfigError(
            "avatar.signing_secret: required when avatar.production is true (set GATEWAY_SIGNING_SECRET)"
        )
    store = _get(n, "session_store", _Node.string, None)
    if store is not None and not store.startswith(("memory://", "redis://", "rediss://", "unix://")):
        raise n["session_store"].fail(f"{redact_url(store)!r} is not a memory:// or redis:// URL")
    return AvatarSettings(
        provider=provider,
        api_key=api_key,
        base_url=_get(n, "base_url", _Node.url, None),
        mode=_get(n, "mode", lambda x: x.string(LIVEAVATAR_MODES), d.mode),
        timeouts=timeouts,
        session_ttl=_get(n, "session_ttl", _Node.duration, d.session_ttl),
        max_concurrent_sessions=cap,
        avatars=_get(n, "avatars", _id_list, ()),
        voices=_get(n, "voices", _id_list, ()),
        require_session_token=_get(n, "require_session_token", _Node.boolean, d.require_session_token),
        signing_secret=secret,
        production=production,
        session_store=None if store is None else SecretURL(store),
        session_store_timeout=_get(n, "session_store_timeout", _Node.duration, d.session_store_timeout),
        reap_interval=_get(n, "reap_interval", _Node.duration, d.reap_interval),
    )


def _secret(node: _Node) -> Secret:
    # An empty value (``${VAR:-}``) means "not set"; the value itself is never echoed.
    if node.value is None or node.value == "":
        return Secret("")
    if not isinstance(node.value, str) or "\n" in node.value or "\r" in node.value:
        raise node.fail("is not a single-line string")
    return Secret(node.value)


def _id_list(node: _Node) -> tuple[str, ...]:
    return tuple(item.string() for item in node.items())


def _stt(node: _Node) -> SttSettings:
    n = node.mapping(
        (
            "provider", "api_key", "base_url", "streaming_url", "model", "language", "timeouts", "phrases",
            "phrases_file", "max_bytes", "max_seconds", "token_ttl", "concurrency", "max_queue",
        )
    )
    d = SttSettings()
    provider = _get(n, "provider", lambda x: x.string(STT_PROVIDERS), d.provider)
    api_key = _get(n, "api_key", _secret, None) or None
    base_url = _get(n, "base_url", _Node.url, None)
    # A self-hosted OpenAI-compatible server (base_url set) may need no key; the vendors always do.
    needs_key = provider in ("deepgram", "assemblyai") or (provider == "openai" and base_url is None)
    if needs_key and api_key is None:
        raise ConfigError(f"stt.api_key: required for provider {provider!r} (e.g. api_key: ${{STT_API_KEY}})")
    token_ttl = _get(n, "token_ttl", _Node.duration, d.token_ttl)
    if token_ttl > MAX_STT_TOKEN_TTL or token_ttl < 1:
        raise n["token_ttl"].fail(f"{n['token_ttl'].value!r} is not between 1s and {MAX_STT_TOKEN_TTL:g}s")
    language = _get(n, "language", _Node.string, d.language)
    if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?", language):
        raise n["language"].fail(f"{language!r} is not a language code like 'en' or 'en-US'")
    phrases_files: tuple[str, ...] = ()
    if "phrases_file" in n and n["phrases_file"].value not in (None, ""):  # "" = ${STT_PHRASES_FILE:-}
        f = n["phrases_file"]
        phrases_files = tuple(item.string() for item in f.items()) if isinstance(f.value, list) else (f.string(),)
    return SttSettings(
        provider=provider,
        api_key=api_key,
        base_url=base_url,
        streaming_url=_get(n, "streaming_url", _Node.url, None),
        model=_get(n, "model", _Node.string, None),
        language=language,
        timeouts=_timeouts(n["timeouts"], d.timeouts) if "timeouts" in n else d.timeouts,
        phrases=_get(n, "phrases", _id_list, ()),
        phrases_files=phrases_files,
        max_bytes=_get(n, "max_bytes", _Node.positive_int, d.max_bytes),
        max_seconds=_get(n, "max_seconds", _Node.duration, d.max_seconds),
        token_ttl=token_ttl,
        concurrency=_get(n, "concurrency", _Node.positive_int, d.concurrency),
        max_queue=_get(n, "max_queue", _Node.positive_int, d.max_queue),
    )
