"""The YAML routing table: defaults, interpolation, overrides, and errors that name their key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.cli import main as cli_main
from gateway.config import load_settings, parse_settings
from gateway.errors import ConfigError
from gateway.settings import DEFAULT_CONFIG_PATH, Secret

MINIMAL = """
routes:
  - path: /api/chat
    handler: chat
    upstream: {url: "http://127.0.0.1:9000/api/chat"}
"""


def parse(text: str, **env: str):
    return parse_settings(textwrap.dedent(text), env=env)


def error_of(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, **env)
    return str(info.value)


def test_bundled_default_config_is_valid() -> None:
    settings = load_settings(DEFAULT_CONFIG_PATH, env={})
    chat = settings.route_for("chat")
    assert chat is not None and chat.upstream is not None
    assert chat.upstream.url == "http://127.0.0.1:9000/api/chat"
    assert [r.text for r in chat.rate_limits] == ["60/minute"]
    health = settings.route_for("health")
    assert health is not None and health.methods == ("GET",)
    assert [r.text for r in health.rate_limits] == ["100/minute"]
    assert settings.rate_limit.storage_url == "memory://"


def test_defaults_when_keys_are_omitted() -> None:
    settings = parse(MINIMAL)
    (chat,) = settings.routes
    assert chat.methods == ("POST",)
    assert chat.upstream is not None
    assert (chat.upstream.timeouts.connect, chat.upstream.timeouts.total) == (2.0, 30.0)
    assert chat.limits.max_message_chars == 4000
    assert chat.mapping.request == (("message", "$message"), ("sessionId", "$sessionId"), ("context", "$context"))
    assert settings.server.max_body_bytes == 65536


def test_chat_api_url_overrides_the_chat_upstream() -> None:
    settings = parse(MINIMAL, CHAT_API_URL="https://backend.internal/v2/chat")
    chat = settings.route_for("chat")
    assert chat is not None and chat.upstream is not None
    assert chat.upstream.url == "https://backend.internal/v2/chat"


def test_bad_chat_api_url_names_the_variable_without_credentials() -> None:
    message = error_of(MINIMAL, CHAT_API_URL="ftp://user:hunter2@backend/chat")
    assert message == "CHAT_API_URL (environment): 'ftp://***@backend/chat' is not an http(s) URL with a host"
    assert "hunter2" not in message


def test_environment_interpolation_with_defaults_and_escapes() -> None:
    settings = parse(
        """
        server: {log_level: "${LEVEL:-warning}"}
        routes:
          - path: /api/chat
            handler: chat
            upstream:
              url: "http://${HOST}:9000/api/chat"
              headers: {Authorization: "Bearer ${TOKEN}", X-Price: "$$5"}
        """,
        HOST="backend.local",
        TOKEN="s3cr3t",
    )
    assert settings.server.log_level == "warning"
    chat = settings.routes[0]
    assert chat.upstream is not None
    assert chat.upstream.url == "http://backend.local:9000/api/chat"
    assert chat.upstream.headers == {"Authorization": "Bearer s3cr3t", "X-Price": "$5"}
    assert "s3cr3t" not in repr(settings)
    assert isinstance(chat.upstream.headers["Authorization"], Secret)


def test_environment_value_cannot_inject_yaml_structure() -> None:
    # Interpolation runs after YAML parsing; a multi-line header value is refused outright.
    message = error_of(
        """
        routes:
          - path: /api/chat
            handler: chat
            upstream: {url: "http://127.0.0.1/api/chat", headers: {X-Team: "${TEAM}"}}
        """,
        TEAM="a\nevil: true",
    )
    assert message == "routes[0].upstream.headers.X-Team: value is not a single-line string"
    assert "evil" not in message


def test_rate_limit_forms() -> None:
    settings = parse(
        """
        routes:
          - path: /api/chat
            handler: chat
            upstream: {url: "http://127.0.0.1/api/chat"}
            rate_limit:
              - 10/second;60/minute
              - {limit: 100/hour, key: session}
          - path: /api/health
            handler: health
            rate_limit: "off"
        """
    )
    chat, health = settings.routes
    assert [(r.text, r.key, len(r.items)) for r in chat.rate_limits] == [
        ("10/second;60/minute", "ip", 2),
        ("100/hour", "session", 1),
    ]
    assert health.rate_limits == ()


ROUTE = """
routes:
  - path: /api/chat
    handler: chat
    upstream:
      url: "http://127.0.0.1/api/chat"
      {extra}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes: []\nbogus: 1", "bogus: unknown key (expected one of: server, client, rate_limit, health, storage, routes, avatar, auth, stt, metrics, console)"),
        ("server: {}", "<root>: missing required key 'routes'"),
        ("routes: {}", "routes: {} is not a list"),
        ("routes: [{handler: chat}]", "routes[0]: missing required key 'path'"),
        ("routes: [{path: api, handler: health}]", "routes[0].path: 'api' does not start with '/'"),
        (
            "routes: [{path: /x, handler: magic}]",
            "routes[0].handler: 'magic' is not one of: chat, token, health, conversations, session_end, transcribe, stt_token",
        ),
        ("routes: [{path: /x, handler: chat}]", "routes[0]: missing required key 'upstream' for a chat route"),
        (
            "routes: [{path: /h, handler: health}, {path: /h, handler: health}]",
            "routes[1].path: '/h' is declared twice",
        ),
        ("routes: [{path: /h, handler: health, methods: [FETCH]}]", "routes[0].methods[0]: 'FETCH' is not an HTTP method"),
        (
            "routes: [{path: /h, handler: health, rate_limit: lots}]",
            "routes[0].rate_limit: 'lots' is not a rate limit like '60/minute' or '10/second;60/minute'",
        ),
        (
            "routes: [{path: /h, handler: health, rate_limit: {limit: 5/minute, key: user}}]",
            "routes[0].rate_limit.key: 'user' is not one of: ip, credential, session",
        ),
        (
            "routes: [{path: /h, handler: health, upstream: {url: 'http://x'}}]",
            "routes[0].upstream: only chat routes take 'upstream'",
        ),
        ("server: {max_body_bytes: -1}\nroutes: []", "server.max_body_bytes: -1 is not a positive integer"),
        ("server: {log_format: xml}\nroutes: []", "server.log_format: 'xml' is not one of: auto, json, console"),
        ("client: {keepalive_expiry: soon}\nroutes: []", "client.keepalive_expiry: 'soon' is not a duration like '30s' or '500ms'"),
        ("health: {stt_url: 'not a url'}\nroutes: []", "health.stt_url: 'not a url' is not an http(s) URL with a host"),
        ("routes: [{path: /h, handler: health, x: 1}]", "routes[0].x: unknown key (expected one of: path, handler, methods, rate_limit, upstream, mapping, limits, fallback_response)"),
        ("routes: [\n  - a\n  b", "<string>: expected the node content, but found '-' at line 2, column 3"),
    ],
)
def test_errors_name_the_key_path_and_value(text: str, expected: str) -> None:
    assert error_of(text) == expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("timeouts: {total: abc}", "routes[0].upstream.timeouts.total: 'abc' is not a duration like '30s' or '500ms'"),
        ("timeouts: {connect: 0s}", "routes[0].upstream.timeouts.connect: '0s' is not a duration like '30s' or '500ms'"),
        ("timeouts: {connect: 5s, total: 1s}", "routes[0].upstream.timeouts: connect (5s) is longer than total (1s)"),
        ("headers: {'bad header': x}", "routes[0].upstream.headers.bad header: 'bad header' is not a valid header name"),
        ("retry: 3", "routes[0].upstream.retry: unknown key (expected one of: url, timeouts, headers, retries, breaker)"),
        ("timeouts: {idle: 40s}", "routes[0].upstream.timeouts: idle (40s) is longer than total (30s)"),
        ("timeouts: {first_byte: soon}", "routes[0].upstream.timeouts.first_byte: 'soon' is not a duration like '30s' or '500ms'"),
        ("retries: 11", "routes[0].upstream.retries.attempts: 11 is not a number of retries from 0 to 10"),
        ("retries: {attempts: 1, backoff: x}", "routes[0].upstream.retries.backoff: 'x' is not a duration like '30s' or '500ms'"),
        ("breaker: {failures: 0}", "routes[0].upstream.breaker.failures: 0 is not a positive integer"),
        ("breaker: {trip: 3}", "routes[0].upstream.breaker.trip: unknown key (expected one of: failures, cooldown)"),
    ],
)
def test_upstream_errors(extra: str, expected: str) -> None:
    assert error_of(ROUTE.format(extra=extra)) == expected


def test_resilience_settings_are_parsed() -> None:
    from gateway.settings import BreakerSettings, Retries, Timeouts

    text = ROUTE.format(extra="timeouts: {first_byte: 5s, idle: 2s, total: 20s}\n      retries: 1\n      breaker: off")
    upstream = parse_settings(text, env={}).routes[0].upstream
    assert upstream is not None
    assert upstream.timeouts == Timeouts(connect=2.0, total=20.0, first_byte=5.0, idle=2.0)
    assert upstream.retries == Retries(attempts=1) and upstream.breaker is None
    defaults = parse_settings(ROUTE.format(extra=""), env={}).routes[0].upstream
    assert defaults is not None and defaults.breaker == BreakerSettings() and defaults.retries == Retries()


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ("{request: {question: $msg}}", "routes[0].mapping.request.question: '$msg' is not one of: $message, $sessionId, $history, $context, $requestId, $stream"),
        ("{stream: {format: sse}}", "routes[0].mapping.stream: missing required key 'delta'"),
        ("{stream: {format: jsonl, delta: text}}", "routes[0].mapping.stream.format: 'jsonl' is not one of: sse, ndjson"),
        ("{stream: {format: sse, delta: 'a[0'}}", "routes[0].mapping.stream.delta: 'a[0' is not a JMESPath expression (Invalid jmespath expression at column 4)"),
        ("{request: {id: $sessionId}}", "routes[0].mapping.request: maps nothing from '$message'; the backend would never see the question"),
        ("{request: {'a..b': $message}}", "routes[0].mapping.request.a..b: 'a..b' is not a field path like 'answer' or 'data.answer'"),
        ("{request: {q: $message, q.text: $history}}", "routes[0].mapping.request.q: conflicts with 'q.text'; a field cannot be both a value and an object"),
        ("{response: {answer: data.answer}}", "routes[0].mapping.response.answer: unknown key (expected one of: response, sources, source_title, source_url)"),
    ],
)
def test_mapping_errors(mapping: str, expected: str) -> None:
    text = MINIMAL + f"    mapping: {mapping}\n"
    assert error_of(text) == expected


def test_missing_environment_variable_names_path_and_variable() -> None:
    message = error_of(
        """
        routes:
          - path: /api/chat
            handler: chat
            upstream: {url: "${BACKEND_URL}"}
        """
    )
    assert message == (
        "routes[0].upstream.url: environment variable 'BACKEND_URL' is not set "
        "(use ${BACKEND_URL:-default} for a default)"
    )


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file '.*missing.yaml': No such file or directory"):
        load_settings(tmp_path / "missing.yaml", env={})


def test_gateway_config_environment_variable_selects_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(MINIMAL.replace("9000", "9999"))
    settings = load_settings(env={"GATEWAY_CONFIG": str(path)})
    assert settings.source == str(path)
    assert settings.routes[0].upstream is not None and "9999" in settings.routes[0].upstream.url


def test_check_command_accepts_a_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", str(DEFAULT_CONFIG_PATH)]) == 0
    out = capsys.readouterr().out
    assert f"{DEFAULT_CONFIG_PATH}: OK" in out
    assert "/api/chat" in out and "60/minute per ip" in out


def test_check_command_rejects_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(ROUTE.format(extra="timeouts: {total: abc}"))
    assert cli_main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "config error: routes[0].upstream.timeouts.total: 'abc' is not a duration like '30s' or '500ms'"


def test_reprs_hide_every_credential() -> None:
    settings = parse(
        """
        rate_limit: {storage: "redis://:limiterpw@127.0.0.1:6379/0"}
        storage: {url: "postgresql://gw:databasepw@db/gateway", admin_keys: "adminkey-0123456789abcdef"}
        routes:
          - path: /api/chat
            handler: chat
            upstream: {url: "http://x/api/chat", headers: {Authorization: "Bearer backendtoken"}}
        """
    )
    text = repr(settings)
    for secret in ("limiterpw", "databasepw", "adminkey-0123456789abcdef", "backendtoken"):
        assert secret not in text
    assert "redis://***@127.0.0.1:6379/0" in text
    assert settings.rate_limit.storage_url == "redis://:limiterpw@127.0.0.1:6379/0"  # the value itself is intact
